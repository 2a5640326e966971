//! Stage 1: capture. Kernel programs report the socket syscalls of enabled processes into a
//! ring buffer; this stage loads them, controls which processes and sockets they watch, and
//! decodes their records.

pub mod discover;
pub mod events;
pub mod loader;
mod mapping;
mod marks;
pub mod record;
pub mod ring;
mod tracefs;

use std::path::Path;

use anyhow::{Result, bail};
pub use events::{CaptureEvent, DataRecord, OpenRecord, SocketId, decode};
pub use loader::{Capture, CaptureConfig, cgroup2_root};

const TRACEFS_ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Checks what the capture programs need before loading them, with an error that says what
/// to do.
pub fn preflight() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("tracer must run as root (it loads eBPF programs): run it with sudo");
    }
    check_tracefs(&TRACEFS_ROOTS.map(Path::new))
}

/// The syscall tracepoints are visible under one of `roots`.
fn check_tracefs(roots: &[&Path]) -> Result<()> {
    if !roots
        .iter()
        .any(|root| root.join("events/syscalls").is_dir())
    {
        bail!(
            "tracefs is not mounted (no /sys/kernel/tracing/events/syscalls): \
             run `mount -t tracefs tracefs /sys/kernel/tracing`"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracefs_must_show_the_syscall_events() {
        let dir = std::env::temp_dir().join(format!("tracer-tracefs-{}", std::process::id()));
        let err = check_tracefs(&[&dir]).unwrap_err().to_string();
        assert!(err.contains("mount -t tracefs"), "{err}");
        std::fs::create_dir_all(dir.join("events/syscalls")).unwrap();
        assert!(check_tracefs(&[Path::new("/nonexistent"), &dir]).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
