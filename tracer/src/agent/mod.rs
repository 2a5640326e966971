//! `tracer run`: the agent. Loads the capture programs, serves the control socket, applies
//! selectors, runs the pipeline on the ring buffer and exports spans until SIGINT/SIGTERM; on
//! the way out it flushes what is pending and detaches everything.

mod control_server;
pub mod metrics;
mod report;
mod selectors;
mod state;
mod ticker;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    capture::{self, Capture, CaptureConfig},
    clock,
    control::Selector,
    export::{ExportArgs, ExportConfig, Exporter},
    kubernetes,
    pipeline::Pipeline,
    sampling::Sampler,
    stitch::StitchConfig,
};
use control_server::ControlSocket;
use report::DropReporter;
use state::Agent;
use ticker::Ticker;

pub struct RunOptions {
    /// What to trace from the start (more can be enabled through the control socket).
    pub selectors: Vec<(Selector, Option<String>)>,
    pub control_socket: PathBuf,
    pub export: ExportArgs,
    pub capture: CaptureConfig,
    pub stitch: StitchConfig,
    /// Raw ring records are also written here (`capture::record`).
    pub record_events: Option<PathBuf>,
    /// Where to serve Prometheus metrics (`GET /metrics`); None: nowhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// How often pending spans are flushed and health is checked.
/// Also how often the ring is read without a wake-up: the kernel wakes the agent for data
/// events only when `tracer_common::RING_WAKEUP_BYTES` wait, so at low rates this bounds
/// their delay. Spans wait a settle window of 500 ms anyway, so they go out 500 to 750 ms
/// after they were seen. Each tick is a cache-cold wake-up with a ring read and a flush: at
/// 1k req/s the agent took 60.0 ms of CPU per 10k requests with 100 ms ticks and 44.9 with
/// 250 ms ticks, medians of 3 (BENCHMARKS.md, section 11). Busy, the agent flushes more
/// often: see `BUSY_FLUSH`.
pub const TICK: Duration = Duration::from_millis(250);
/// When the ring wakes the agent (`RING_WAKEUP_BYTES` of events wait), it also flushes if
/// the last flush is this old. A flush hands its spans to the export queues at once, and at
/// saturation a tick's worth (250 ms at the 63k-81k req/s traced then: 16k-20k spans)
/// overflowed their 8,192 places: half the spans were dropped. Flushing on wake-ups after 100 ms still dropped 18k-47k per
/// 5 s round, after 50 ms 3k-16k; 100 ms ticks alone dropped 0-11k (BENCHMARKS.md,
/// section 11).
pub const BUSY_FLUSH: Duration = Duration::from_millis(50);
/// Ring records processed before yielding to the other tasks.
const BATCH: usize = 4096;
/// Time allowed to deliver pending spans at shutdown.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

pub async fn run(options: RunOptions) -> Result<()> {
    capture::preflight()?;
    let env = |key: &str| std::env::var(key).ok();
    let export_config = ExportConfig::resolve(&options.export, &env)?;
    let sampler = Sampler::from_env(
        env("OTEL_TRACES_SAMPLER").as_deref(),
        env("OTEL_TRACES_SAMPLER_ARG").as_deref(),
    )?;
    // Before loading anything: a missing pid or a second agent means refusing to start,
    // not half-starting.
    for (selector, _) in &options.selectors {
        if let Selector::Pid(pid) = selector {
            state::check_pid(*pid)?;
        }
    }
    let mut control = ControlSocket::bind(&options.control_socket)?;
    let metrics_listener = match options.metrics_addr {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };

    let capture_config = options.capture;
    let (mut capture, ring) = Capture::load(capture_config, sampler.root_threshold())?;
    // Loading parsed the kernel's BTF (~25 MB of heap, freed since). The allocator would keep
    // those pages resident for the agent's whole life: return them now.
    unsafe { libmimalloc_sys::mi_collect(true) };
    if capture_config.inject_traceparent {
        tracing::info!(
            "traceparent injection on: outgoing HTTP/1 requests of traced processes get a \
             traceparent header while they serve a request"
        );
    }
    if let Some(logger) = capture.take_logger() {
        tokio::spawn(forward_kernel_logs(logger));
    }
    let export_summary = export_config.summary();
    tracing::info!("{export_summary}");
    let (kubernetes, mut pod_events) = kubernetes::watch::start(&env).await;
    // In a pod, the hostname is the pod's: the node's name is the host's.
    let host = std::env::var(kubernetes::watch::NODE_NAME_VAR)
        .ok()
        .filter(|_| kubernetes.is_on())
        .unwrap_or_else(host_name);
    let exporter = Exporter::start(export_config, host.clone())?;
    let pipeline = Pipeline::new(options.stitch, sampler);
    let mut agent = Agent::new(
        capture,
        pipeline,
        exporter,
        kubernetes,
        host,
        export_summary,
    );
    for (selector, service_name) in options.selectors {
        let message = agent.add_selector(selector, service_name)?;
        tracing::info!("{message}");
    }
    let (calls, mut requests) = mpsc::channel(64);
    if let Some(listener) = metrics_listener {
        tracing::info!("metrics: http://{}/metrics", listener.local_addr()?);
        tokio::spawn(metrics::serve(listener, calls.clone()));
    }
    control.serve(calls)?;
    tracing::info!(
        "ready: tracing {} process(es){}; control socket {}",
        agent.traced_count(),
        match agent.traced_count() {
            0 => String::new(),
            _ => format!(": {}", agent.describe()),
        },
        control.path().display()
    );

    let mut recorder = options
        .record_events
        .as_deref()
        .map(capture::record::Recorder::create)
        .transpose()?;
    let mut ring = watch(ring).context("watching the capture ring buffer")?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut ticker = Ticker::new(TICK).context("creating the agent's tick timer")?;
    let mut reports = DropReporter::new();
    let mut flushed = Instant::now();
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let n = read_ring(guard.get_inner_mut(), &mut agent, recorder.as_mut(), BATCH)?;
                if n < BATCH {
                    guard.clear_ready();
                } else {
                    // More is waiting: let the exporter and the control socket run first (they
                    // share this thread), or a busy ring would starve them and fill the
                    // export queue.
                    drop(guard);
                    tokio::task::yield_now().await;
                }
                if flushed.elapsed() >= BUSY_FLUSH {
                    flushed = Instant::now();
                    agent.tick();
                }
            }
            tick = ticker.tick() => {
                tick.context("waiting for the agent's tick")?;
                read_ring(ring.get_mut(), &mut agent, recorder.as_mut(), BATCH)?;
                agent.tick();
                flushed = Instant::now();
                reports.maybe_report(&agent.capture);
            }
            Some((request, reply)) = requests.recv() => {
                let _ = reply.send(agent.handle(request));
            }
            Some(event) = next_pod_event(&mut pod_events) => {
                agent.on_pod_event(event);
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }

    // Shutdown: take what the kernel already reported, end every open exchange, export.
    read_ring(ring.get_mut(), &mut agent, recorder.as_mut(), usize::MAX)?;
    if let Some(mut recorder) = recorder {
        recorder.flush()?;
    }
    drop(ring);
    agent.shutdown(SHUTDOWN_FLUSH).await;
    drop(control); // removes the socket file
    Ok(())
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// The next pod event, or never when the Kubernetes layer is off (or its watch ended).
async fn next_pod_event(
    events: &mut Option<mpsc::Receiver<kubernetes::PodEvent>>,
) -> Option<kubernetes::PodEvent> {
    match events {
        Some(rx) => match rx.recv().await {
            Some(event) => Some(event),
            None => {
                *events = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// Takes up to `limit` records from the ring into the pipeline (and the recording), then
/// acts on the process changes they carried; how many.
fn read_ring(
    events: &mut capture::ring::EventRing,
    agent: &mut Agent,
    mut recorder: Option<&mut capture::record::Recorder>,
    limit: usize,
) -> Result<usize> {
    // One clock read per batch, not per record: a batch takes milliseconds, and the time
    // only measures each span's settle window (500 ms).
    let now = clock::monotonic_ns();
    let n = events.read(limit, |record| {
        if let Some(recorder) = recorder.as_mut() {
            recorder.record(record)?;
        }
        agent.pipeline.on_record(record, now);
        Ok(())
    })?;
    agent.apply_process_changes();
    Ok(n)
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
