//! Stage 1: capture. Kernel programs report the socket syscalls of enabled processes into a
//! ring buffer; this stage loads them, controls which processes and sockets they watch, and
//! decodes their records.

pub mod discover;
pub mod events;
pub mod loader;

use std::path::Path;

use anyhow::{Result, bail};
pub use events::{CaptureEvent, DataRecord, OpenRecord, SocketId, decode};
pub use loader::{Capture, CaptureConfig};

const TRACEFS_ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Checks what the capture programs need before loading them, with an error that says what
/// to do.
pub fn preflight() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("tracer must run as root (it loads eBPF programs): run it with sudo");
    }
    let syscalls = TRACEFS_ROOTS
        .iter()
        .any(|root| Path::new(root).join("events/syscalls").is_dir());
    if !syscalls {
        bail!(
            "tracefs is not mounted (no /sys/kernel/tracing/events/syscalls): \
             run `mount -t tracefs tracefs /sys/kernel/tracing`"
        );
    }
    Ok(())
}
