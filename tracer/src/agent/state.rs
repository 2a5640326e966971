//! What the agent traces and why: its selectors, the processes they matched, and how both
//! change as processes start, fork, exec, listen and exit, and as operators enable and disable.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tracer_common::{
    Counter, SOCK_FLAG_PREEXISTING, SockInfo, USER_GEN_BIT, WATCH_EXEC, WATCH_LISTEN,
};

use super::selectors::{self, ChildKind};
use crate::kubernetes::Kubernetes;
use crate::{
    capture::{self, Capture, SocketId},
    control::{
        Request, Response, Selector,
        protocol::{AgentStatus, ProcessStatus, SelectorStatus, StatusReport},
    },
    export::Exporter,
    pipeline::{Pipeline, ProcessChange},
    process::ProcessMeta,
};

mod pods;

/// How often traced processes are looked up in /proc (in case an exit event was lost) and
/// cgroup selectors look for processes moved into their cgroup.
const RESCAN_EVERY: Duration = Duration::from_secs(2);

struct SelectorEntry {
    selector: Selector,
    service_name: Option<String>,
    /// Cgroup selectors: the cgroup in the kernel's spelling.
    cgroup: Option<String>,
}

struct Traced {
    meta: Arc<ProcessMeta>,
    /// The selector it belongs to; children share their parent's.
    selector: Selector,
    /// How it came to be traced, for status: "pid 12", "exe nginx", "child of pid 12".
    origin: String,
    /// The service name its selector asked for; children keep it across their exec.
    service_name: Option<String>,
    spans: u64,
    export_drops: u64,
}

pub struct Agent {
    pub capture: Capture,
    pub pipeline: Pipeline,
    pub exporter: Exporter,
    /// Pod metadata, and what pod selectors match against (off outside Kubernetes).
    pub kubernetes: Kubernetes,
    host: String,
    export_summary: String,
    cgroup_root: Option<PathBuf>,
    selectors: Vec<SelectorEntry>,
    traced: HashMap<u32, Traced>,
    next_user_gen: u64,
    started: Instant,
    rescanned: Instant,
    /// Traced pids already gone from /proc at the last rescan.
    missing: HashSet<u32>,
}

impl Agent {
    pub fn new(
        capture: Capture,
        pipeline: Pipeline,
        exporter: Exporter,
        kubernetes: Kubernetes,
        host: String,
        export_summary: String,
    ) -> Self {
        Self {
            capture,
            pipeline,
            exporter,
            kubernetes,
            host,
            export_summary,
            cgroup_root: capture::cgroup2_root(),
            selectors: Vec::new(),
            traced: HashMap::new(),
            next_user_gen: 1,
            started: Instant::now(),
            rescanned: Instant::now(),
            missing: HashSet::new(),
        }
    }

    pub fn traced_count(&self) -> usize {
        self.traced.len()
    }

    /// "nginx (pid 12, service web), ..." for logs.
    pub fn describe(&self) -> String {
        let mut list: Vec<String> = self
            .traced
            .values()
            .map(|t| {
                format!(
                    "{} (pid {}, service {})",
                    t.meta.executable_name, t.meta.pid, t.meta.service_name
                )
            })
            .collect();
        list.sort();
        list.join(", ")
    }

    pub fn handle(&mut self, request: Request) -> Response {
        let result = match request {
            Request::Enable {
                selector,
                service_name,
            } => self.add_selector(selector, service_name),
            Request::Disable { selector } => self.remove_selector(&selector),
            Request::Status => return Response::Status(Box::new(self.status())),
        };
        match result {
            Ok(message) => {
                tracing::info!("{message}");
                Response::Ok { message }
            }
            Err(e) => Response::Error {
                message: format!("{e:#}"),
            },
        }
    }

    /// Starts tracing what `selector` matches now, and (except for a pid) what it will match.
    pub fn add_selector(
        &mut self,
        selector: Selector,
        service_name: Option<String>,
    ) -> Result<String> {
        if self.selectors.iter().any(|s| s.selector == selector) {
            bail!(
                "{selector} is enabled already (see `tracer status`); disable it first to change it"
            );
        }
        if let Some(name) = &service_name
            && name.trim().is_empty()
        {
            bail!("the service name is empty");
        }
        let cgroup = match &selector {
            Selector::Cgroup(path) => {
                let root = self
                    .cgroup_root
                    .as_deref()
                    .context("no cgroup v2 hierarchy is mounted: cgroup selectors need one")?;
                Some(selectors::cgroup_path(root, path)?)
            }
            Selector::Exe(name) if name.is_empty() => bail!("the exe name is empty"),
            Selector::Port(0) => bail!("port 0 is not a port"),
            Selector::Namespace(ns) if ns.trim().is_empty() => bail!("the namespace is empty"),
            s if s.is_pod_selector() => {
                self.kubernetes.require()?;
                None
            }
            _ => None,
        };
        let pids = match &selector {
            Selector::Pid(pid) => {
                check_pid(*pid)?;
                if let Some(t) = self.traced.get(pid) {
                    bail!(
                        "pid {pid} is traced already (by {}, as service {})",
                        t.origin,
                        t.meta.service_name
                    );
                }
                vec![*pid]
            }
            Selector::Exe(name) => selectors::processes_with_exe(name),
            Selector::Port(port) => selectors::processes_listening_on(*port),
            Selector::Cgroup(_) => selectors::processes_in_cgroup(
                self.cgroup_root.as_deref().unwrap_or_else(|| "/".as_ref()),
                cgroup.as_deref().unwrap_or("/"),
            ),
            Selector::Namespace(_) | Selector::PodLabel(_) | Selector::PodAnnotation(_) => {
                let pods: Vec<_> = self.kubernetes.pods.pods().cloned().collect();
                self.processes_in_pods(&selector, &pods, &selectors::processes_in_containers())
            }
        };
        let origin = selector.to_string();
        let mut traced = Vec::new();
        for pid in pids {
            if self.traced.contains_key(&pid) {
                continue;
            }
            match self.trace(pid, &selector, service_name.clone(), origin.clone()) {
                Ok(()) => traced.push(pid),
                Err(e) if matches!(selector, Selector::Pid(_)) => return Err(e),
                // A process that vanished between the scan and now is not an error.
                Err(e) => tracing::debug!("{selector}: pid {pid}: {e:#}"),
            }
        }
        self.selectors.push(SelectorEntry {
            selector: selector.clone(),
            service_name: service_name.clone(),
            cgroup,
        });
        self.sync_kernel_selectors()?;
        let named = service_name
            .map(|n| format!(" as service {n}"))
            .unwrap_or_default();
        Ok(match (&selector, traced.len()) {
            (Selector::Pid(pid), _) => format!("tracing pid {pid}{named}"),
            (s, 0) if s.is_pod_selector() && !self.kubernetes.pods.is_synced() => format!(
                "enabled {selector}; the pod list has not arrived yet: matching pods are \
                 traced as it does"
            ),
            (_, 0) => format!(
                "no running process matches {selector}; the selector stays enabled and will \
                 trace matching processes as they appear"
            ),
            (_, n) => format!(
                "tracing {n} process(es) matching {selector}{named}: pids {}; the selector \
                 stays enabled for new ones",
                list(&traced)
            ),
        })
    }

    /// Stops tracing what `selector` traced (children included) and forgets the selector.
    pub fn remove_selector(&mut self, selector: &Selector) -> Result<String> {
        let known = self.selectors.iter().any(|s| &s.selector == selector);
        let pids: Vec<u32> = self
            .traced
            .iter()
            .filter(|(pid, t)| {
                &t.selector == selector || matches!(selector, Selector::Pid(p) if p == *pid)
            })
            .map(|(pid, _)| *pid)
            .collect();
        if !known && pids.is_empty() {
            bail!("nothing is enabled for {selector} (see `tracer status`)");
        }
        for pid in &pids {
            self.untrace(*pid);
        }
        self.selectors.retain(|s| &s.selector != selector);
        self.sync_kernel_selectors()?;
        Ok(format!(
            "stopped tracing {selector}: {} process(es){}",
            pids.len(),
            if pids.is_empty() {
                String::new()
            } else {
                format!(" (pids {})", list(&pids))
            }
        ))
    }

    /// Turns capture on for `pid` and adopts the sockets it already has open.
    fn trace(
        &mut self,
        pid: u32,
        selector: &Selector,
        service_name: Option<String>,
        origin: String,
    ) -> Result<()> {
        check_pid(pid)?;
        let meta = Arc::new(self.describe_process(pid, service_name.as_deref())?);
        self.pipeline.add_process(meta.clone());
        // Enable first: sockets opened from now on are learnt by the kernel itself, and the
        // scan below never overwrites those (see Capture::track_socket).
        self.capture.enable(pid)?;
        // Exited before the kernel's entry existed? Then no exit event will remove it: a stale
        // entry would trace whatever process reuses the pid.
        let alive = procfs::process::Process::new(pid as i32)
            .and_then(|p| p.stat())
            .is_ok_and(|s| s.starttime == meta.start_ticks);
        if !alive {
            self.capture.disable(pid);
            self.pipeline.remove_process(pid);
            bail!("process {pid} exited as tracing was enabled");
        }
        self.adopt_sockets(pid)?;
        self.traced.insert(
            pid,
            Traced {
                meta,
                selector: selector.clone(),
                origin,
                service_name,
                spans: 0,
                export_drops: 0,
            },
        );
        Ok(())
    }

    /// A process's identity from /proc, in its pod when the pod is known.
    fn describe_process(&self, pid: u32, service_name: Option<&str>) -> Result<ProcessMeta> {
        let meta = ProcessMeta::from_proc(pid, service_name, &self.host)?;
        let pod = self.kubernetes.context(meta.container.as_ref());
        Ok(meta.in_pod(pod))
    }

    fn adopt_sockets(&mut self, pid: u32) -> Result<()> {
        for socket in capture::discover::open_sockets(pid)? {
            let conn_gen = USER_GEN_BIT | self.next_user_gen;
            self.next_user_gen += 1;
            let info = SockInfo {
                conn_gen,
                flags: SOCK_FLAG_PREEXISTING,
                _pad: 0,
            };
            if self.capture.track_socket(pid, socket.fd, info)? {
                let id = SocketId {
                    tgid: pid,
                    fd: socket.fd,
                    conn_gen,
                };
                self.pipeline.adopt_socket(id, socket.inode);
            }
        }
        Ok(())
    }

    /// Stops capture for `pid` at once; its open requests are discarded, not reported.
    fn untrace(&mut self, pid: u32) {
        self.capture.disable(pid);
        self.pipeline.remove_process(pid);
        self.traced.remove(&pid);
    }

    /// Reacts to what the kernel reported about processes.
    pub fn apply_process_changes(&mut self) {
        for change in self.pipeline.take_process_changes() {
            match change {
                ProcessChange::Exited(pid) => self.exited(pid),
                ProcessChange::Forked { parent, child } => self.forked(parent, child),
                ProcessChange::Exec {
                    tgid,
                    traced,
                    exe_match,
                } => self.exec(tgid, traced, exe_match),
                ProcessChange::Listen { tgid, fd } => self.listened(tgid, fd),
            }
        }
    }

    fn exited(&mut self, pid: u32) {
        if let Some(t) = self.traced.remove(&pid) {
            // Children come and go by the thousand: only selected processes are worth a line.
            if t.origin.starts_with("child of") {
                tracing::debug!("process {pid} ({}) exited", t.meta.executable_name);
            } else {
                tracing::info!("process {pid} ({}) exited", t.meta.executable_name);
            }
            self.pipeline.process_exited(pid);
            self.capture.disable(pid);
            // A pid selector has nothing left to select.
            self.selectors.retain(|s| s.selector != Selector::Pid(pid));
        }
    }

    fn forked(&mut self, parent: u32, child: u32) {
        let Some(p) = self.traced.get(&parent) else {
            // No longer traced (disabled meanwhile): neither is the child, nor any socket it
            // opened since the fork.
            self.capture.disable(child);
            self.pipeline.remove_process(child);
            return;
        };
        let (selector, service_name) = (p.selector.clone(), p.service_name.clone());
        let origin = format!("child of pid {parent}");
        let alive = match selectors::child_kind(child) {
            ChildKind::Thread => {
                // The kernel's entry for it is not a process.
                self.capture.unmark_thread(child);
                self.pipeline.remove_process(child);
                return;
            }
            ChildKind::Process => true,
            // Exited already (a short-lived process, or a thread): its exit is next in the
            // ring, and ends this entry.
            ChildKind::Gone => false,
        };
        // The kernel enabled the child at fork; it may exit any moment from now, so nothing
        // read from /proc below is required. A fork copies its parent: that identity serves
        // until /proc tells more (or if it never can).
        let meta = alive
            .then(|| self.describe_process(child, service_name.as_deref()).ok())
            .flatten()
            .unwrap_or_else(|| p.meta.forked_as(child, &self.host));
        let meta = Arc::new(meta);
        self.pipeline.add_process(meta.clone());
        self.traced.insert(
            child,
            Traced {
                meta,
                selector,
                origin,
                service_name,
                spans: 0,
                export_drops: 0,
            },
        );
        // Sockets it inherited from its parent.
        if alive && let Err(e) = self.adopt_sockets(child) {
            tracing::debug!("sockets of child {child} of {parent}: {e:#}");
        }
    }

    fn exec(&mut self, tgid: u32, traced: bool, exe_match: bool) {
        if traced && let Some(t) = self.traced.get(&tgid) {
            // A new program in a traced process: its identity changes, its selector does not.
            if let Ok(meta) = self.describe_process(tgid, t.service_name.as_deref()) {
                let meta = Arc::new(meta);
                self.pipeline.add_process(meta.clone());
                if let Some(t) = self.traced.get_mut(&tgid) {
                    t.meta = meta;
                }
            }
            return;
        }
        // Its pod, looked up once and only when a pod selector may want it.
        let pod = self
            .selectors
            .iter()
            .any(|s| s.selector.is_pod_selector())
            .then(|| {
                let container = crate::kubernetes::cgroup::container_of(tgid);
                self.kubernetes.context(container.as_ref())
            })
            .flatten();
        let matched = self.selectors.iter().find_map(|s| {
            let hit = match &s.selector {
                Selector::Exe(name) => selectors::exe_matches(tgid, name),
                Selector::Cgroup(_) => s
                    .cgroup
                    .as_deref()
                    .is_some_and(|cg| selectors::in_cgroup(tgid, cg)),
                selector if selector.is_pod_selector() => {
                    pod.as_ref().is_some_and(|p| p.pod.matches(selector))
                }
                _ => false,
            };
            hit.then(|| (s.selector.clone(), s.service_name.clone()))
        });
        match matched {
            Some((selector, service_name)) => {
                let origin = selector.to_string();
                if let Err(e) = self.trace(tgid, &selector, service_name, origin) {
                    tracing::debug!("exec of {tgid}: {e:#}");
                }
            }
            None if exe_match => {
                // The kernel matched a process name no selector confirms (a stale entry); it
                // may have opened sockets since its exec.
                self.capture.disable(tgid);
                self.pipeline.remove_process(tgid);
            }
            None => {}
        }
    }

    fn listened(&mut self, tgid: u32, fd: i32) {
        if self.traced.contains_key(&tgid) {
            return;
        }
        let Some(port) = selectors::listening_port(tgid, fd) else {
            return;
        };
        let matched = self.selectors.iter().find_map(|s| {
            (s.selector == Selector::Port(port))
                .then(|| (s.selector.clone(), s.service_name.clone()))
        });
        if let Some((selector, service_name)) = matched {
            let origin = selector.to_string();
            match self.trace(tgid, &selector, service_name, origin) {
                Ok(()) => tracing::info!("tracing pid {tgid}: it listens on port {port}"),
                Err(e) => tracing::debug!("listener {tgid}: {e:#}"),
            }
        }
    }

    /// The kernel's share of the selectors: names to enable at exec, events to report.
    fn sync_kernel_selectors(&mut self) -> Result<()> {
        let names: Vec<String> = self
            .selectors
            .iter()
            .filter_map(|s| match &s.selector {
                Selector::Exe(name) => Some(name.clone()),
                _ => None,
            })
            .collect();
        self.capture.set_exe_selectors(&names)?;
        let mut watch = 0;
        for s in &self.selectors {
            watch |= match s.selector {
                // A pod's processes are found as they exec, as well as when the pod appears.
                Selector::Exe(_)
                | Selector::Cgroup(_)
                | Selector::Namespace(_)
                | Selector::PodLabel(_)
                | Selector::PodAnnotation(_) => WATCH_EXEC,
                Selector::Port(_) => WATCH_LISTEN,
                Selector::Pid(_) => 0,
            };
        }
        self.capture.set_watch(watch)
    }

    /// Spans out, and the slower housekeeping.
    pub fn tick(&mut self) {
        for span in self.pipeline.ready_spans(false) {
            self.submit(span);
        }
        if self.rescanned.elapsed() >= RESCAN_EVERY {
            self.rescanned = Instant::now();
            self.rescan();
        }
    }

    fn submit(&mut self, span: crate::span::Span) {
        let pid = span.process.pid;
        let delivered = self.exporter.submit(span);
        if let Some(t) = self.traced.get_mut(&pid) {
            t.spans += 1;
            if !delivered {
                t.export_drops += 1;
            }
        }
    }

    /// Exits whose event was lost (a full ring buffer), and processes moved into a cgroup.
    fn rescan(&mut self) {
        let gone: HashSet<u32> = self
            .traced
            .values()
            .filter(|t| {
                procfs::process::Process::new(t.meta.pid as i32)
                    .and_then(|p| p.stat())
                    .map(|stat| stat.starttime != t.meta.start_ticks)
                    .unwrap_or(true)
            })
            .map(|t| t.meta.pid)
            .collect();
        // A process gone from /proc may still have events in the ring (its last response,
        // its exit): only one still traced a whole rescan later lost its exit event.
        let lost_exits: Vec<u32> = gone.intersection(&self.missing).copied().collect();
        for pid in lost_exits {
            self.exited(pid);
        }
        self.missing = gone.difference(&self.missing).copied().collect();
        let Some(root) = self.cgroup_root.clone() else {
            return;
        };
        let cgroups: Vec<(Selector, Option<String>, String)> = self
            .selectors
            .iter()
            .filter_map(|s| {
                Some((
                    s.selector.clone(),
                    s.service_name.clone(),
                    s.cgroup.clone()?,
                ))
            })
            .collect();
        for (selector, service_name, cgroup) in cgroups {
            for pid in selectors::processes_in_cgroup(&root, &cgroup) {
                if !self.traced.contains_key(&pid) {
                    let origin = selector.to_string();
                    let _ = self.trace(pid, &selector, service_name.clone(), origin);
                }
            }
        }
    }

    pub fn status(&self) -> StatusReport {
        let kernel = self.capture.counters();
        let export = self.exporter.stats();
        let pipeline = self.pipeline.stats();
        let mut processes: Vec<ProcessStatus> = self
            .traced
            .values()
            .map(|t| ProcessStatus {
                pid: t.meta.pid,
                executable: t.meta.executable_name.clone(),
                service_name: t.meta.service_name.clone(),
                selector: t.origin.clone(),
                pod: t.meta.pod.as_ref().map(|p| {
                    let container = p.container_name.as_deref().unwrap_or("?");
                    format!("{}/{}/{container}", p.pod.namespace, p.pod.name)
                }),
                spans: t.spans,
                drops: t.export_drops + self.pipeline.lost_for(t.meta.pid),
            })
            .collect();
        processes.sort_by_key(|p| p.pid);
        let selectors = self
            .selectors
            .iter()
            .map(|s| SelectorStatus {
                selector: s.selector.clone(),
                service_name: s.service_name.clone(),
                processes: self
                    .traced
                    .values()
                    .filter(|t| t.selector == s.selector)
                    .count(),
            })
            .collect();
        StatusReport {
            agent: AgentStatus {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                uptime_seconds: self.started.elapsed().as_secs(),
                export: self.export_summary.clone(),
                kubernetes: self.kubernetes.summary(),
                kernel: Counter::ALL
                    .iter()
                    .map(|c| (c.name().to_string(), kernel[*c as usize]))
                    .collect(),
                kernel_lost: Counter::ALL
                    .iter()
                    .filter(|c| c.is_drop())
                    .map(|c| kernel[*c as usize])
                    .sum(),
                spans_exported: export.exported,
                spans_dropped: export.dropped_queue_full + export.dropped_export_failed,
                export_errors: export.export_errors,
                export_queue: export.queue_depth,
                export_queue_capacity: export.sinks.iter().map(|s| s.queue_capacity).sum(),
                abandoned_requests: pipeline.stitch.abandoned,
            },
            metrics: super::metrics::collect(&super::metrics::Sources {
                kernel: &kernel,
                pipeline: &pipeline,
                tables: self.pipeline.tables(),
                export: &export,
                traced_processes: processes.len(),
                kernel_processes: self.capture.enabled_processes().len(),
                kernel_sockets: self.capture.socket_count(),
                uptime_seconds: self.started.elapsed().as_secs(),
            }),
            processes,
            selectors,
        }
    }

    /// Ends everything still open, exports it, and lets the exporter deliver within `flush`.
    pub async fn shutdown(mut self, flush: Duration) {
        let pids: Vec<u32> = self.traced.keys().copied().collect();
        for pid in pids {
            self.pipeline.process_exited(pid);
        }
        for span in self.pipeline.ready_spans(true) {
            self.submit(span);
        }
        super::report::final_report(&self.capture, &self.pipeline);
        let Agent {
            capture, exporter, ..
        } = self;
        drop(capture); // detaches every program before waiting on the network
        exporter.shutdown(flush).await;
    }
}

/// A pid the agent may trace: it exists and is not the agent.
pub fn check_pid(pid: u32) -> Result<()> {
    if pid == std::process::id() {
        bail!("pid {pid} is the tracer itself; it never traces itself");
    }
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        bail!("pid {pid} not found: check it with `ps -p {pid}`");
    }
    Ok(())
}

fn list(pids: &[u32]) -> String {
    let mut pids = pids.to_vec();
    pids.sort_unstable();
    pids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
