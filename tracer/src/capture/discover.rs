//! Sockets a process already had open when tracing was enabled: the kernel only learns sockets
//! from connect/accept, so the rest come from /proc/PID/fd.

use anyhow::{Context, Result};
use procfs::process::{FDTarget, Process};

/// An open socket fd and its inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenSocket {
    pub fd: i32,
    pub inode: u64,
}

/// The socket fds `pid` has open now.
pub fn open_sockets(pid: u32) -> Result<Vec<OpenSocket>> {
    let process = Process::new(pid as i32).with_context(|| format!("process {pid} not found"))?;
    let fds = process
        .fd()
        .with_context(|| format!("listing /proc/{pid}/fd"))?;
    Ok(fds
        .filter_map(Result::ok)
        .filter_map(|fd| match fd.target {
            FDTarget::Socket(inode) => Some(OpenSocket { fd: fd.fd, inode }),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn finds_this_process_sockets_and_nothing_else() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        let found = open_sockets(std::process::id()).unwrap();
        assert!(found.iter().any(|s| s.fd == listener.as_raw_fd()));
        assert!(!found.iter().any(|s| s.fd == file.as_raw_fd()));
    }
}
