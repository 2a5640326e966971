//! The agent's side of `PID_MARKS`, the kernel's one-byte-per-pid filter in front of
//! `ENABLED_PROCESSES` (tracer-ebpf maps.rs says why it exists).
//!
//! The agent sets a pid's mark before enabling it. It writes the byte through a shared
//! mapping of the one page that holds it: a map update would rewrite the whole element, and
//! could undo a mark the kernel set meanwhile in the same element (at a fork or an exec).
//! Mapping just that page, and only while writing, also keeps the array out of the agent's
//! RSS: at the largest pid_max it is 4 MiB.

use std::os::fd::{AsFd, AsRawFd};

use anyhow::{Context, Result, bail};
use aya::maps::{Map, MapData};
use tracer_common::PIDS_PER_MARK_ELEMENT;

use super::mapping::{Mapping, page_size};

/// pid_max when /proc does not say: the largest the kernel allows on 64-bit.
const PID_MAX_LIMIT: u32 = 4 << 20;

pub struct PidMarks {
    map: MapData,
    /// Pids below this have a byte.
    pids: u32,
}

impl PidMarks {
    /// Elements of the array for this host's pid_max (the map's size at load).
    pub fn elements() -> u32 {
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(PID_MAX_LIMIT);
        pid_max
            .clamp(1, PID_MAX_LIMIT)
            .div_ceil(PIDS_PER_MARK_ELEMENT)
    }

    pub fn new(map: Map) -> Result<Self> {
        let Map::Array(map) = map else {
            bail!("PID_MARKS is not an array");
        };
        let elements = map.info()?.max_entries();
        Ok(Self {
            map,
            pids: elements.saturating_mul(PIDS_PER_MARK_ELEMENT),
        })
    }

    /// Marks `pid` as possibly enabled. Pids beyond the array need no mark: the kernel looks
    /// them up in `ENABLED_PROCESSES` anyway.
    pub fn mark(&self, pid: u32) -> Result<()> {
        if pid >= self.pids {
            return Ok(());
        }
        let page = page_size();
        let offset = pid as usize / page * page;
        let fd = self.map.fd().as_fd().as_raw_fd();
        // The array's bytes start at offset 0 of a BPF_F_MMAPABLE map's mapping; the kernel
        // bounds the page. Unmapped when `mapping` drops.
        let mapping = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, offset)
            .with_context(|| format!("mapping the pid marks of pid {pid}"))?;
        // SAFETY: `pid - offset` < the page's length, and the mapping is alive.
        unsafe { std::ptr::write_volatile(mapping.ptr.as_ptr().add(pid as usize - offset), 1) };
        Ok(())
    }
}
