//! Tracepoint record layouts, read from tracefs: a few fields moved between kernel versions,
//! and the kernel programs are told where they are instead of assuming.

use std::path::Path;

use anyhow::{Context, Result};

use super::TRACEFS_ROOTS;

/// The byte offset of `field` in records of tracepoint `category:event`.
pub fn field_offset(category: &str, event: &str, field: &str) -> Result<u32> {
    let format = TRACEFS_ROOTS
        .iter()
        .map(|root| {
            Path::new(root)
                .join("events")
                .join(category)
                .join(event)
                .join("format")
        })
        .find_map(|path| std::fs::read_to_string(path).ok())
        .with_context(|| format!("no tracefs format for {category}:{event}"))?;
    offset_in(&format, field).with_context(|| format!("no field {field} in {category}:{event}"))
}

/// Finds `field:<type> <field>;\toffset:<n>;` in a format description.
fn offset_in(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (declaration, rest) = decl.split_once(';')?;
        // The name is the declaration's last word, without an array suffix.
        let name = declaration.split_whitespace().last()?.split('[').next()?;
        if name != field {
            return None;
        }
        rest.trim()
            .strip_prefix("offset:")?
            .split(';')
            .next()?
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_offsets_in_old_and_new_fork_layouts() {
        let new = "\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\
                   \tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\
                   \tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\
                   \tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
        let old = "\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
                   \tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
                   \tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\
                   \tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";
        assert_eq!(offset_in(new, "child_pid"), Some(20));
        assert_eq!(offset_in(old, "child_pid"), Some(44));
        assert_eq!(offset_in(old, "child_comm"), Some(28));
        assert_eq!(offset_in(old, "nope"), None);
    }

    #[test]
    fn reads_this_kernel_fork_format() {
        if Path::new("/sys/kernel/tracing/events/sched").is_dir() {
            assert!(field_offset("sched", "sched_process_fork", "child_pid").is_ok());
        }
    }
}
