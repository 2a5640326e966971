//! Which processes a selector means, read from /proc and the cgroup filesystem.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use anyhow::{Result, bail};

use crate::kubernetes::cgroup::{self, Container};
use procfs::{
    net::TcpState,
    process::{FDTarget, Process, all_processes},
};

/// Whether `pid`'s executable file name, or its process name, is `name` (a process name is at
/// most 15 bytes: longer names compare on their first 15).
pub fn exe_matches(pid: u32, name: &str) -> bool {
    let Ok(process) = Process::new(pid as i32) else {
        return false;
    };
    let exe_name = process
        .exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    if exe_name.as_deref() == Some(name) {
        return true;
    }
    let comm = process.stat().map(|s| s.comm).unwrap_or_default();
    !comm.is_empty() && comm.as_bytes() == &name.as_bytes()[..name.len().min(15)]
}

/// Live processes (not threads), but never the agent itself.
fn processes() -> impl Iterator<Item = Process> {
    let me = std::process::id() as i32;
    all_processes()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(move |p| p.pid != me)
}

pub fn processes_with_exe(name: &str) -> Vec<u32> {
    processes()
        .map(|p| p.pid as u32)
        .filter(|pid| exe_matches(*pid, name))
        .collect()
}

/// The TCP port a listening socket `fd` of `pid` is bound to.
pub fn listening_port(pid: u32, fd: i32) -> Option<u16> {
    let process = Process::new(pid as i32).ok()?;
    let FDTarget::Socket(inode) = process.fd_from_fd(fd).ok()?.target else {
        return None;
    };
    let tcp = process.tcp().unwrap_or_default();
    let tcp6 = process.tcp6().unwrap_or_default();
    tcp.into_iter()
        .chain(tcp6)
        .find(|e| e.inode == inode && e.state == TcpState::Listen)
        .map(|e| e.local_address.port())
}

/// Processes with a socket listening on TCP `port`, in any network namespace.
pub fn processes_listening_on(port: u16) -> Vec<u32> {
    // The listening sockets on that port, one table read per network namespace.
    let mut namespaces = HashSet::new();
    let mut inodes = HashSet::new();
    for process in processes() {
        let Ok(ns) = std::fs::read_link(format!("/proc/{}/ns/net", process.pid)) else {
            continue;
        };
        if !namespaces.insert(ns) {
            continue;
        }
        let tcp = process.tcp().unwrap_or_default();
        let tcp6 = process.tcp6().unwrap_or_default();
        inodes.extend(
            tcp.into_iter()
                .chain(tcp6)
                .filter(|e| e.state == TcpState::Listen && e.local_address.port() == port)
                .map(|e| e.inode),
        );
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    processes()
        .filter(|p| {
            p.fd().is_ok_and(|mut fds| {
                fds.any(|fd| {
                    matches!(fd, Ok(fd) if matches!(fd.target, FDTarget::Socket(i) if inodes.contains(&i)))
                })
            })
        })
        .map(|p| p.pid as u32)
        .collect()
}

/// A cgroup as the selector gives it (a path on the cgroup v2 mount, or the cgroup's own path
/// such as `/system.slice/app.service`), in the kernel's spelling: relative to the hierarchy's
/// root, starting with `/`. Errors when the cgroup does not exist.
pub fn cgroup_path(root: &Path, given: &str) -> Result<String> {
    let given_path = Path::new(given);
    let relative = given_path
        .strip_prefix(root)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| {
            given_path
                .strip_prefix("/")
                .unwrap_or(given_path)
                .to_path_buf()
        });
    let dir = root.join(&relative);
    if !dir.join("cgroup.procs").is_file() {
        bail!(
            "cgroup {given} not found (no {}): give a cgroup v2 path such as \
             /system.slice/app.service",
            dir.display()
        );
    }
    Ok(format!("/{}", relative.display()).replace("//", "/"))
}

/// Processes in the cgroup (kernel spelling) and its sub-cgroups.
pub fn processes_in_cgroup(root: &Path, cgroup: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = vec![root.join(cgroup.trim_start_matches('/'))];
    let me = std::process::id();
    while let Some(dir) = dirs.pop() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(
                procs
                    .lines()
                    .filter_map(|l| l.trim().parse::<u32>().ok())
                    .filter(|pid| *pid != me),
            );
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            dirs.extend(
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    out
}

/// Whether `pid` is in the cgroup (kernel spelling) or one below it.
pub fn in_cgroup(pid: u32, cgroup: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return false;
    };
    // The v2 hierarchy's line is "0::<path>".
    text.lines()
        .filter_map(|l| l.strip_prefix("0::"))
        .any(|path| is_within(path, cgroup))
}

fn is_within(path: &str, cgroup: &str) -> bool {
    let cgroup = cgroup.trim_end_matches('/');
    cgroup.is_empty()
        || path == cgroup
        || path
            .strip_prefix(cgroup)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// What a task the kernel saw created is, by /proc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildKind {
    Process,
    Thread,
    /// Exited before /proc could be read.
    Gone,
}

pub fn child_kind(pid: u32) -> ChildKind {
    match Process::new(pid as i32).and_then(|p| p.status()) {
        Ok(s) if s.tgid == pid as i32 => ChildKind::Process,
        Ok(_) => ChildKind::Thread,
        Err(_) => ChildKind::Gone,
    }
}

/// Every process that runs in a container, with its container (from /proc/PID/cgroup).
pub fn processes_in_containers() -> Vec<(u32, Container)> {
    processes()
        .filter_map(|p| Some((p.pid as u32, cgroup::container_of(p.pid as u32)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_test_by_exe_and_not_by_other_names() {
        let me = std::process::id();
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap();
        assert!(exe_matches(me, name));
        assert!(!exe_matches(me, "definitely-not-this"));
        // The agent never selects itself.
        assert!(!processes_with_exe(name).contains(&me));
    }

    #[test]
    fn finds_the_listener_of_a_port_and_its_fd() {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(
            listening_port(std::process::id(), listener.as_raw_fd()),
            Some(port)
        );
        assert_eq!(listening_port(std::process::id(), 0), None);
    }

    #[test]
    fn cgroup_paths_nest_by_whole_components() {
        assert!(is_within("/system.slice/app.service", "/system.slice"));
        assert!(is_within("/system.slice", "/system.slice/"));
        assert!(!is_within("/system.slice2/x", "/system.slice"));
        assert!(is_within("/anything", "/"));
    }

    #[test]
    fn cgroup_paths_are_checked_and_normalised() {
        let root = std::env::temp_dir().join(format!("tracer-cg-{}", std::process::id()));
        std::fs::create_dir_all(root.join("app/web")).unwrap();
        std::fs::write(root.join("app/cgroup.procs"), "1\n2\n").unwrap();
        std::fs::write(root.join("app/web/cgroup.procs"), "3\n").unwrap();
        assert_eq!(cgroup_path(&root, "/app").unwrap(), "/app");
        let absolute = root.join("app").display().to_string();
        assert_eq!(cgroup_path(&root, &absolute).unwrap(), "/app");
        assert!(
            cgroup_path(&root, "/nope")
                .unwrap_err()
                .to_string()
                .contains("not found")
        );
        let mut pids = processes_in_cgroup(&root, "/app");
        pids.sort();
        assert_eq!(pids, vec![1, 2, 3]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn tells_processes_threads_and_gone_tasks_apart() {
        assert_eq!(child_kind(std::process::id()), ChildKind::Process);
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            tid_tx.send(unsafe { libc::gettid() } as u32).unwrap();
            done_rx.recv().unwrap();
        });
        let tid = tid_rx.recv().unwrap();
        assert_eq!(child_kind(tid), ChildKind::Thread, "thread {tid}");
        done_tx.send(()).unwrap();
        thread.join().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(child_kind(pid), ChildKind::Gone, "reaped child {pid}");
    }
}
