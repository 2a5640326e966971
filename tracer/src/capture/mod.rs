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

use anyhow::{Context, Result, anyhow, bail};
pub use events::{CaptureEvent, DataRecord, OpenRecord, SocketId, decode};
pub use loader::{Capture, CaptureConfig, cgroup2_root};

const TRACEFS_ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The oldest kernel with every helper the capture programs call: the receive programs read
/// their arguments through `bpf_task_pt_regs` (5.15), on the task `bpf_get_current_task_btf`
/// gives, which needs the kernel's BTF.
const MIN_KERNEL: (u8, u8) = (5, 15);
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Checks what the capture programs need before loading them, with an error that says what
/// to do.
pub fn preflight() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("tracer must run as root (it loads eBPF programs): run it with sudo");
    }
    check_tracefs(&TRACEFS_ROOTS.map(Path::new))?;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("reading the kernel release (/proc/sys/kernel/osrelease)")?;
    check_kernel(release.trim(), Path::new(KERNEL_BTF))
}

/// The kernel `release` is new enough, and has its BTF at `btf`.
fn check_kernel(release: &str, btf: &Path) -> Result<()> {
    let version = procfs::KernelVersion::from_str(release)
        .map_err(|e| anyhow!("kernel release {release:?}: {e}"))?;
    if (version.major, version.minor) < MIN_KERNEL {
        bail!(
            "kernel {release} is too old: the capture programs need Linux {}.{} or newer",
            MIN_KERNEL.0,
            MIN_KERNEL.1
        );
    }
    if !btf.exists() {
        bail!(
            "the kernel has no BTF ({}): the capture programs need a kernel built with \
             CONFIG_DEBUG_INFO_BTF",
            btf.display()
        );
    }
    Ok(())
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

    #[test]
    fn the_kernel_must_be_5_15_with_btf() {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let err = check_kernel("5.10.0-28-amd64", here)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("5.10.0-28-amd64 is too old") && err.contains("5.15"),
            "{err}"
        );
        assert!(check_kernel("5.15.0", here).is_ok());
        assert!(check_kernel("6.18.44-fc-v669", here).is_ok());
        let err = check_kernel("6.1.0", Path::new("/nonexistent/vmlinux"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
        assert!(check_kernel("not a release", here).is_err());
    }
}
