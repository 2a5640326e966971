//! Loads the capture object and attaches every program it declares (`tracer_ebpf::
//! CAPTURE_PROGRAMS`), then gives typed access to the maps the agent drives.
//!
//! Nothing is pinned: every program, link and map lives in file descriptors this process owns,
//! so when the agent exits, or is killed, the kernel detaches and frees all of it.

use std::collections::BTreeSet;

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, ProgramArray, SockHash},
    programs::{CgroupAttachMode, SkMsg, SockOps, TracePoint},
};
use tracer_common::{Comm, Counter, ProcessInfo, SockInfo, SockKey, inject_names, names};

use super::{marks::PidMarks, ring::EventRing, tracefs};
use tracer_ebpf::{Attach, CAPTURE_PROGRAMS};

/// The compiled kernel programs (built by build.rs through aya-build).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

const BPF_NOEXIST: u64 = 1;

#[derive(Clone, Copy, Debug)]
pub struct CaptureConfig {
    /// Payload bytes captured per syscall (at most `tracer_common::MAX_CAPTURE_BYTES`).
    pub capture_bytes: u32,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Insert `traceparent` into outgoing HTTP/1 requests of traced processes (loads the
    /// `sk_msg` program; off: nothing of injection runs).
    pub inject_traceparent: bool,
}

/// The loaded, attached capture programs and the maps the agent controls.
pub struct Capture {
    /// Owns programs and links: dropping it detaches everything.
    _ebpf: Ebpf,
    enabled: HashMap<MapData, u32, ProcessInfo>,
    pid_marks: PidMarks,
    exe_selectors: HashMap<MapData, Comm, u32>,
    watch: Array<MapData, u32>,
    /// HTTP/2 frame-walk state per socket (values opaque here: only freed).
    frame_walks: HashMap<MapData, SockKey, [u64; 3]>,
    sockets: HashMap<MapData, SockKey, SockInfo>,
    /// Client sockets the injection program sees (present with injection on).
    inject_sockets: Option<SockHash<MapData, SockKey>>,
    counters: PerCpuArray<MapData, u64>,
    /// Kernel log records (aya-log), drained by the agent.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

impl Capture {
    /// Loads and attaches the programs; returns the capture handle and the event ring buffer.
    /// Traces the kernel starts (injection) are sampled when the low 56 bits of their id are
    /// below `sample_below` (`Sampler::root_threshold`).
    pub fn load(config: CaptureConfig, sample_below: u64) -> Result<(Self, EventRing)> {
        let agent = std::process::id();
        let fork_child = tracefs::field_offset("sched", "sched_process_fork", "child_pid")
            .context("reading the sched_process_fork tracepoint format")?;
        let inject = u32::from(config.inject_traceparent);
        let mut ebpf = EbpfLoader::new()
            .override_global(names::GLOBAL_CAPTURE_BYTES, &config.capture_bytes, true)
            .override_global(names::GLOBAL_AGENT_TGID, &agent, true)
            .override_global(names::GLOBAL_FORK_CHILD_PID_OFFSET, &fork_child, true)
            .override_global(inject_names::GLOBAL_INJECT, &inject, true)
            .override_global(inject_names::GLOBAL_SAMPLE_BELOW, &sample_below, true)
            .map_max_entries(names::EVENTS, config.ring_bytes)
            .map_max_entries(names::PID_MARKS, PidMarks::elements())
            .load(OBJECT)
            .context("loading the capture object into the kernel")?;
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(e) => {
                tracing::debug!("kernel log records unavailable: {e}");
                None
            }
        };
        check_declarations(&ebpf)?;
        for spec in CAPTURE_PROGRAMS {
            if matches!(spec.attach, Attach::SkMsg { .. }) && !config.inject_traceparent {
                continue;
            }
            let attached = attach(&mut ebpf, spec.program, spec.attach)?;
            if !attached && config.inject_traceparent {
                bail!(
                    "--inject-traceparent needs {} attached to the cgroup v2 root (see above)",
                    spec.program
                );
            }
        }
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("map {name} missing from the object"))
        };
        let events = EventRing::new(take(&mut ebpf, names::EVENTS)?)?;
        let enabled = HashMap::try_from(take(&mut ebpf, names::ENABLED_PROCESSES)?)?;
        let pid_marks = PidMarks::new(take(&mut ebpf, names::PID_MARKS)?)?;
        let exe_selectors = HashMap::try_from(take(&mut ebpf, names::EXE_SELECTORS)?)?;
        let watch = Array::try_from(take(&mut ebpf, names::WATCH)?)?;
        let frame_walks = HashMap::try_from(take(&mut ebpf, names::FRAME_WALKS)?)?;
        let sockets = HashMap::try_from(take(&mut ebpf, names::SOCKETS)?)?;
        let counters = PerCpuArray::try_from(take(&mut ebpf, names::COUNTERS)?)?;
        let inject_sockets = if config.inject_traceparent {
            Some(SockHash::try_from(take(&mut ebpf, inject_names::SOCKETS)?)?)
        } else {
            None
        };
        Ok((
            Self {
                _ebpf: ebpf,
                enabled,
                pid_marks,
                exe_selectors,
                watch,
                frame_walks,
                sockets,
                inject_sockets,
                counters,
                logger,
            },
            events,
        ))
    }

    /// Starts capture for `tgid`.
    pub fn enable(&mut self, tgid: u32) -> Result<()> {
        self.pid_marks.mark(tgid)?;
        self.enabled
            .insert(tgid, ProcessInfo { flags: 0 }, 0)
            .with_context(|| format!("enabling capture for pid {tgid}"))
    }

    /// Removes the entry the kernel made at fork for thread `tid`, as if it were a process.
    /// Sockets are keyed by process, so none can be keyed by a thread's id: no socket scan
    /// (threads come and go by the thousand). Anything that may own sockets
    /// goes through [`Capture::disable`]: the kernel's data programs take a socket's entry
    /// as the sign that its process is traced.
    pub fn unmark_thread(&mut self, tid: u32) {
        let _ = self.enabled.remove(&tid);
    }

    /// Stops capture for `tgid` and forgets its sockets.
    pub fn disable(&mut self, tgid: u32) {
        let _ = self.enabled.remove(&tgid);
        self.forget_sockets_of(tgid);
    }

    /// Tracks a socket found in /proc. Never replaces an entry the kernel made meanwhile
    /// (a connect/accept racing the scan): the kernel's generation wins.
    pub fn track_socket(&mut self, tgid: u32, fd: i32, info: SockInfo) -> Result<bool> {
        match self.sockets.insert(SockKey { tgid, fd }, info, BPF_NOEXIST) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EEXIST) =>
            {
                Ok(false)
            }
            Err(e) => Err(e).with_context(|| format!("tracking socket fd {fd} of pid {tgid}")),
        }
    }

    /// Frees the SOCKETS entries of a process (after it exited or was disabled).
    pub fn forget_sockets_of(&mut self, tgid: u32) {
        let keys: Vec<SockKey> = self
            .sockets
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.tgid == tgid)
            .collect();
        for key in &keys {
            let _ = self.sockets.remove(key);
            let _ = self.frame_walks.remove(key);
        }
        // Its client sockets leave the injection program's sight (a closed socket leaves the
        // sockhash by itself; a disabled process's open ones must be taken out).
        if let Some(inject_sockets) = self.inject_sockets.as_mut() {
            let keys: Vec<SockKey> = inject_sockets
                .keys()
                .filter_map(Result::ok)
                .filter(|k| k.tgid == tgid)
                .collect();
            for key in &keys {
                let _ = inject_sockets.remove(key);
            }
        }
    }

    /// Process names the kernel enables at exec (exe selectors), as comm keys.
    pub fn set_exe_selectors(&mut self, names: &[String]) -> Result<()> {
        let wanted: Vec<Comm> = names.iter().map(|n| comm(n)).collect();
        let present: Vec<Comm> = self.exe_selectors.keys().filter_map(Result::ok).collect();
        for key in present.iter().filter(|k| !wanted.contains(k)) {
            let _ = self.exe_selectors.remove(key);
        }
        for key in wanted.iter().filter(|k| !present.contains(k)) {
            self.exe_selectors
                .insert(key, 1, 0)
                .context("adding an exe selector to the kernel")?;
        }
        Ok(())
    }

    /// Which events of untraced processes the kernel reports (`tracer_common::WATCH_*`).
    pub fn set_watch(&mut self, bits: u32) -> Result<()> {
        self.watch
            .set(0, bits, 0)
            .context("updating the kernel watch flags")
    }

    /// Tgids the kernel currently captures.
    pub fn enabled_processes(&self) -> Vec<u32> {
        self.enabled.keys().filter_map(Result::ok).collect()
    }

    /// Number of tracked sockets (for status and leak checks).
    pub fn socket_count(&self) -> usize {
        self.sockets.keys().count()
    }

    /// Kernel counters summed over CPUs, indexed like `Counter::ALL`.
    pub fn counters(&self) -> [u64; Counter::COUNT as usize] {
        let mut totals = [0u64; Counter::COUNT as usize];
        for (i, total) in totals.iter_mut().enumerate() {
            if let Ok(per_cpu) = self.counters.get(&(i as u32), 0) {
                *total = per_cpu.iter().sum();
            }
        }
        totals
    }

    /// The kernel log ring, for the agent to poll.
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
    }
}

/// Loads one declared program and attaches it where its declaration says. False: an optional
/// attachment the host does not allow (logged).
fn attach(ebpf: &mut Ebpf, name: &str, attach: Attach) -> Result<bool> {
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the object"))?;
    match attach {
        Attach::Tracepoint {
            category,
            name: tracepoint,
        } => {
            let program: &mut TracePoint = program
                .try_into()
                .with_context(|| format!("program {name} is not a tracepoint"))?;
            program
                .load()
                .with_context(|| format!("the kernel refused program {name}"))?;
            program
                .attach(category, tracepoint)
                .with_context(|| format!("attaching {name} to {category}:{tracepoint}"))?;
        }
        Attach::TailCall { map, index } => {
            let program: &mut TracePoint = program
                .try_into()
                .with_context(|| format!("program {name} is not a tracepoint"))?;
            program
                .load()
                .with_context(|| format!("the kernel refused program {name}"))?;
            let fd = program.fd()?.try_clone()?;
            let slots = ebpf
                .map_mut(map)
                .ok_or_else(|| anyhow!("map {map} missing from the object"))?;
            ProgramArray::try_from(slots)?
                .set(index, &fd, 0)
                .with_context(|| format!("installing {name} in {map}[{index}]"))?;
        }
        Attach::CgroupSockOps => {
            let program: &mut SockOps = program
                .try_into()
                .with_context(|| format!("program {name} is not a sock_ops program"))?;
            program
                .load()
                .with_context(|| format!("the kernel refused program {name}"))?;
            // Optional: without it, client sockets' local addresses come from /proc only.
            let Some(root) = cgroup2_root() else {
                tracing::warn!("no cgroup v2 hierarchy mounted: {name} not attached");
                return Ok(false);
            };
            let attached = std::fs::File::open(&root)
                .map_err(anyhow::Error::from)
                .and_then(|dir| {
                    // aya attaches through a BPF link (kernel >= 5.7), which always runs
                    // alongside other programs (e.g. a CNI's) and takes no flags: any mode
                    // but Single is EINVAL there.
                    Ok(program.attach(dir, CgroupAttachMode::Single)?)
                });
            if let Err(e) = attached {
                tracing::warn!("{name} not attached to {}: {e:#}", root.display());
                return Ok(false);
            }
        }
        Attach::SkMsg { map } => {
            let program: &mut SkMsg = program
                .try_into()
                .with_context(|| format!("program {name} is not an sk_msg program"))?;
            program
                .load()
                .with_context(|| format!("the kernel refused program {name}"))?;
            let sockets = ebpf
                .map(map)
                .ok_or_else(|| anyhow!("map {map} missing from the object"))?;
            let sockets: SockHash<&MapData, SockKey> = SockHash::try_from(sockets)?;
            let fd = sockets.fd().try_clone()?;
            let program: &mut SkMsg = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing"))?
                .try_into()?;
            program
                .attach(&fd)
                .with_context(|| format!("attaching {name} to {map}"))?;
        }
    }
    Ok(true)
}

/// Where the root of the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or
/// /sys/fs/cgroup/unified on hybrid hosts).
pub fn cgroup2_root() -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    cgroup2_root_in(&mounts, &|dir| !dir.join("cgroup.type").exists())
}

/// The hierarchy's root among the cgroup2 mounts of `mountinfo`. In a container with its own
/// cgroup namespace (Kubernetes without `privileged`), the runtime mounts the container's own
/// cgroup with root "/", and the node's root, bind-mounted from the host, shows as "/../..":
/// so the mount whose directory is the hierarchy's root wins (`is_hierarchy_root`: the kernel
/// gives every cgroup but the root a `cgroup.type` file), then one whose root is "/".
fn cgroup2_root_in(
    mountinfo: &str,
    is_hierarchy_root: &dyn Fn(&std::path::Path) -> bool,
) -> Option<std::path::PathBuf> {
    let mounts: Vec<(&str, std::path::PathBuf)> = mountinfo
        .lines()
        .filter_map(|line| {
            // "<id> <parent> <dev> <root> <mount point> <options> ... - <fstype> <source> ..."
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mut fields = left.split_whitespace().skip(3);
            let (root, point) = (fields.next()?, fields.next()?);
            (fstype == "cgroup2").then(|| (root, point.into()))
        })
        .collect();
    let by_directory = mounts.iter().find(|(_, point)| is_hierarchy_root(point));
    by_directory
        .or_else(|| mounts.iter().find(|(root, _)| *root == "/"))
        .map(|(_, point)| point.clone())
}

/// A process name as the kernel's comm holds it: at most 15 bytes, NUL-padded.
pub fn comm(name: &str) -> Comm {
    let mut out = [0u8; 16];
    let bytes = name.as_bytes();
    let n = bytes.len().min(15);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

/// The object's programs and the declaration table must match exactly: a program nobody
/// attaches, or a declaration with no program, is a build mistake to catch at start-up.
fn check_declarations(ebpf: &Ebpf) -> Result<()> {
    let in_object: BTreeSet<&str> = ebpf.programs().map(|(name, _)| name).collect();
    let declared: BTreeSet<&str> = CAPTURE_PROGRAMS.iter().map(|p| p.program).collect();
    if in_object != declared {
        bail!(
            "capture object and declarations disagree: undeclared {:?}, missing {:?}",
            in_object.difference(&declared).collect::<Vec<_>>(),
            declared.difference(&in_object).collect::<Vec<_>>()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// /proc/self/mountinfo of an agent in a Kubernetes pod with its own cgroup namespace: the
    /// runtime's mount of the container's own cgroup (root "/"), and the node's hierarchy
    /// bind-mounted from the host (hostPath), which the namespace shows as "/../../..".
    const IN_A_POD: &str = "\
1510 1500 0:29 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate
1520 1500 0:29 /../../.. /host/cgroup ro,relatime master:9 - cgroup2 cgroup2 rw,nsdelegate
1530 1500 0:12 / /sys/kernel/tracing ro,relatime master:6 - tracefs tracefs rw\n";

    #[test]
    fn the_hierarchy_root_wins_over_a_namespaced_mount() {
        let is_root = |dir: &Path| dir == Path::new("/host/cgroup");
        let root = cgroup2_root_in(IN_A_POD, &is_root);
        assert_eq!(root.as_deref(), Some(Path::new("/host/cgroup")));
        // Hybrid host: cgroup v1 controllers, v2 at /sys/fs/cgroup/unified.
        let hybrid = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let root = cgroup2_root_in(hybrid, &|dir| dir.ends_with("unified"));
        assert_eq!(root.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn without_a_visible_root_the_mount_with_root_slash_is_used() {
        // As before: a container's own cgroup (root "/") when nothing better is mounted.
        let own = "1510 1500 0:29 / /sys/fs/cgroup ro - cgroup2 cgroup rw\n";
        let root = cgroup2_root_in(own, &|_| false);
        assert_eq!(root.as_deref(), Some(Path::new("/sys/fs/cgroup")));
        let elsewhere = "1520 1500 0:29 /../.. /host/cgroup ro - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_root_in(elsewhere, &|_| false), None);
        assert_eq!(cgroup2_root_in("", &|_| true), None);
    }

    #[test]
    fn this_hosts_cgroup2_root_has_no_cgroup_type_file() {
        // The rule the real detection relies on, checked on this machine's hierarchy.
        if let Some(root) = cgroup2_root() {
            assert!(!root.join("cgroup.type").exists());
            assert!(root.join("cgroup.procs").exists(), "{}", root.display());
        }
    }
}
