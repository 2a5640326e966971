//! `tracer run`: loads the capture programs, enables the chosen processes, runs the pipeline on
//! the ring buffer, and exports spans until SIGINT/SIGTERM (or until every traced process has
//! exited). On the way out it flushes what is pending and detaches everything.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};
use tracer_common::{Counter, SOCK_FLAG_PREEXISTING, SockInfo, USER_GEN_BIT};

use crate::{
    capture::{self, Capture, CaptureConfig, SocketId},
    cli::Target,
    export::{ExportArgs, ExportConfig, Exporter},
    pipeline::Pipeline,
    process::ProcessMeta,
    sampling::Sampler,
    stitch::StitchConfig,
};

pub struct RunOptions {
    pub targets: Vec<Target>,
    pub export: ExportArgs,
    pub capture: CaptureConfig,
    pub stitch: StitchConfig,
}

/// How often pending spans are flushed and health is checked.
const TICK: Duration = Duration::from_millis(100);
/// How often traced processes are looked up in /proc, in case their exit event was lost.
const LIVENESS_EVERY: Duration = Duration::from_secs(2);
/// How often kernel drop counters are compared and reported.
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// Ring records processed before yielding to the other tasks.
const BATCH: usize = 4096;
/// Time allowed to deliver pending spans at shutdown.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

pub async fn run(options: RunOptions) -> Result<()> {
    capture::preflight()?;
    if options.targets.is_empty() {
        bail!("nothing to trace: give at least one --pid");
    }
    let host = host_name();
    let env = |key: &str| std::env::var(key).ok();
    let export_config = ExportConfig::resolve(&options.export, &env)?;
    let sampler = Sampler::from_env(
        env("OTEL_TRACES_SAMPLER").as_deref(),
        env("OTEL_TRACES_SAMPLER_ARG").as_deref(),
    )?;
    let mut targets = Vec::new();
    for target in &options.targets {
        let pid = target.pid;
        if pid == std::process::id() {
            bail!("pid {pid} is the tracer itself; it never traces itself");
        }
        let meta = ProcessMeta::from_proc(pid, target.service_name.as_deref(), &host)
            .with_context(|| format!("pid {pid} not found: check it with `ps -p {pid}`"))?;
        targets.push(Arc::new(meta));
    }

    let started = Instant::now();
    let (mut capture, ring) = Capture::load(options.capture)?;
    tracing::debug!("capture programs loaded in {:?}", started.elapsed());
    if let Some(logger) = capture.take_logger() {
        tokio::spawn(forward_kernel_logs(logger));
    }
    tracing::info!("{}", export_config.summary());
    let exporter = Exporter::start(export_config, host)?;
    let mut pipeline = Pipeline::new(options.stitch, sampler);
    let user_gen = AtomicU64::new(1);
    let mut traced: HashMap<u32, Arc<ProcessMeta>> = HashMap::new();
    for meta in targets {
        enable(&mut capture, &mut pipeline, &user_gen, &meta)?;
        traced.insert(meta.pid, meta);
    }
    tracing::info!(
        "tracing {} process(es): {}",
        traced.len(),
        describe(&traced)
    );

    let mut ring = watch(ring).context("watching the capture ring buffer")?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut ticker = tokio::time::interval(TICK);
    let mut reports = DropReporter::new();
    let mut liveness_checked = Instant::now();
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let events = guard.get_inner_mut();
                let mut n = 0;
                while n < BATCH && let Some(record) = events.next() {
                    pipeline.on_record(&record);
                    n += 1;
                }
                if n < BATCH {
                    guard.clear_ready();
                }
            }
            _ = ticker.tick() => {
                let mut exited = pipeline.take_exited();
                if liveness_checked.elapsed() >= LIVENESS_EVERY {
                    liveness_checked = Instant::now();
                    exited.extend(dead(&traced));
                }
                for pid in exited {
                    if let Some(meta) = traced.remove(&pid) {
                        tracing::info!("process {pid} ({}) exited", meta.executable_name);
                        pipeline.forget_process(pid);
                        capture.disable(pid);
                    }
                }
                for span in pipeline.ready_spans(false) {
                    exporter.submit(span);
                }
                reports.maybe_report(&capture);
                if traced.is_empty() {
                    tracing::info!("every traced process has exited; stopping");
                    break;
                }
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }

    // Shutdown: take what the kernel already reported, end every open exchange, export.
    {
        let events = ring.get_mut();
        while let Some(record) = events.next() {
            pipeline.on_record(&record);
        }
    }
    for pid in traced.keys().copied().collect::<Vec<_>>() {
        pipeline.forget_process(pid);
    }
    for span in pipeline.ready_spans(true) {
        exporter.submit(span);
    }
    reports.final_report(&capture, &pipeline);
    drop(ring);
    drop(capture); // detaches every program before waiting on the network
    exporter.shutdown(SHUTDOWN_FLUSH).await;
    Ok(())
}

/// Turns capture on for a process and adopts the sockets it already has open.
fn enable(
    capture: &mut Capture,
    pipeline: &mut Pipeline,
    user_gen: &AtomicU64,
    meta: &Arc<ProcessMeta>,
) -> Result<()> {
    let pid = meta.pid;
    pipeline.stitcher().add_process(meta.clone());
    // Enable first: sockets opened from now on are learnt by the kernel itself, and the scan
    // below never overwrites those (see Capture::track_socket).
    capture.enable(pid)?;
    for socket in capture::discover::open_sockets(pid)? {
        let conn_gen = USER_GEN_BIT | user_gen.fetch_add(1, Ordering::Relaxed);
        let info = SockInfo {
            conn_gen,
            flags: SOCK_FLAG_PREEXISTING,
            _pad: 0,
        };
        if capture.track_socket(pid, socket.fd, info)? {
            let id = SocketId {
                tgid: pid,
                fd: socket.fd,
                conn_gen,
            };
            pipeline.adopt_socket(id, socket.inode);
        }
    }
    Ok(())
}

/// Traced processes that are gone, or whose pid now belongs to another process (a missed exit
/// event: the ring buffer was full).
fn dead(traced: &HashMap<u32, Arc<ProcessMeta>>) -> Vec<u32> {
    traced
        .values()
        .filter(|meta| {
            procfs::process::Process::new(meta.pid as i32)
                .and_then(|p| p.stat())
                .map(|stat| stat.starttime != meta.start_ticks)
                .unwrap_or(true)
        })
        .map(|meta| meta.pid)
        .collect()
}

fn describe(traced: &HashMap<u32, Arc<ProcessMeta>>) -> String {
    let mut list: Vec<String> = traced
        .values()
        .map(|m| {
            format!(
                "{} (pid {}, service {})",
                m.executable_name, m.pid, m.service_name
            )
        })
        .collect();
    list.sort();
    list.join(", ")
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Registers a BPF ring buffer's fd with the runtime.
fn watch<T: std::os::fd::AsRawFd>(inner: T) -> Result<AsyncFd<T>> {
    // SAFETY: ring buffers own their map fd for their whole life and always return that fd.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Forwards the kernel programs' aya-log records to the agent's log.
async fn forward_kernel_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    let Ok(mut fd) = watch(logger) else {
        return;
    };
    while let Ok(mut guard) = fd.readable_mut().await {
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

/// Reports losses once per interval: never a line per event, never silent.
struct DropReporter {
    last: Instant,
    kernel: [u64; Counter::COUNT as usize],
}

impl DropReporter {
    fn new() -> Self {
        Self {
            last: Instant::now(),
            kernel: [0; Counter::COUNT as usize],
        }
    }

    fn maybe_report(&mut self, capture: &Capture) {
        if self.last.elapsed() < REPORT_EVERY {
            return;
        }
        self.last = Instant::now();
        let now = capture.counters();
        let lost: Vec<String> = Counter::ALL
            .iter()
            .filter(|c| c.is_drop())
            .filter_map(|c| {
                let delta = now[*c as usize] - self.kernel[*c as usize];
                (delta > 0).then(|| format!("{}={delta}", c.name()))
            })
            .collect();
        if !lost.is_empty() {
            tracing::warn!(
                "kernel capture lost events in the last {}s: {}",
                REPORT_EVERY.as_secs(),
                lost.join(" ")
            );
        }
        self.kernel = now;
    }

    fn final_report(&self, capture: &Capture, pipeline: &Pipeline) {
        let kernel = capture.counters();
        let counters: Vec<String> = Counter::ALL
            .iter()
            .map(|c| format!("{}={}", c.name(), kernel[*c as usize]))
            .collect();
        let stats = pipeline.stats();
        tracing::info!(
            "capture: {}; spans finished={} abandoned={} peer_links={} thread_links={} \
             sampled_out={}; connections opened={} unknown_protocol={} lost_resyncs={}; \
             parse resyncs={} skipped_bytes={}",
            counters.join(" "),
            stats.stitch.spans_finished,
            stats.stitch.abandoned,
            stats.stitch.peer_links,
            stats.stitch.thread_links,
            stats.sampled_out,
            stats.connections.opened,
            stats.connections.unknown_protocol,
            stats.connections.lost_resyncs,
            stats.connections.parse.resyncs,
            stats.connections.parse.skipped_bytes,
        );
    }
}
