//! A traced round: a fresh agent on the nginx worker, and what it cost.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tracer_e2e::{
    OtlpReceiver,
    harness::{Agent, run_args},
    nginx::Nginx,
    observe::{KernelObjects, memory_kib, metric_sum},
};

use crate::load::Load;

/// What a traced round measured.
#[derive(Clone, Debug, Default)]
pub struct Traced {
    pub load: Load,
    /// Agent CPU time (user and system, every thread) from the load's start until every
    /// span was exported (or no more came for a second).
    pub cpu_ms: f64,
    /// Peak RSS while starting (loading the kernel programs), then from the load's start
    /// until the spans were exported.
    pub startup_peak_rss_kib: u64,
    pub peak_rss_kib: u64,
    /// Run time and runs of the agent's kernel programs during the load (0 unless `kernel_stats`).
    pub kernel_ns: u64,
    pub kernel_runs: u64,
    /// Spans the receiver got.
    pub spans: u64,
    /// Loss the agent counted: kernel events lost, spans dropped before export, requests
    /// abandoned (seen, but never answered within the agent's limits).
    pub kernel_lost: u64,
    pub spans_dropped: u64,
    pub abandoned: u64,
}

/// Starts an agent tracing the nginx worker, runs `load`, waits for the spans, stops the agent.
/// With `kernel_stats`, the kernel's BPF run-time statistics are on during the load (they cost
/// a little per program run, so the saturation rounds leave them off).
pub fn measure(
    nginx: &Nginx,
    receiver: &OtlpReceiver,
    kernel_stats: bool,
    load: impl FnOnce() -> Result<Load>,
) -> Result<Traced> {
    receiver.clear();
    let before = KernelObjects::now();
    let mut agent = Agent::start(
        &run_args(&[format!("{}=nginx", nginx.pid())], receiver),
        &[],
    )?;
    let pid = agent.proc.pid();
    let (_, startup_peak_rss_kib) = memory_kib(pid)?;
    // Resets the peak (VmHWM) to the current RSS: what follows is the peak under load.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").context("resetting VmHWM")?;
    let programs = KernelObjects::since(&before).programs;
    let stats = kernel_stats
        .then(|| aya::sys::enable_stats(aya::sys::Stats::RunTime))
        .transpose()
        .context("enabling the kernel's BPF statistics")?;
    let (cpu0, kernel0) = (cpu_ns(pid)?, program_stats(&programs));
    let load = load()?;
    let kernel1 = program_stats(&programs);
    drop(stats);
    // Every answered request (200 or not) is one server span, as the report counts them:
    // wait for them, or until none came for a second (some were dropped, and counted).
    let expected = (load.requests + load.errors) as usize;
    let (mut seen, mut moved) = (receiver.span_count(), Instant::now());
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen < expected && moved.elapsed() < Duration::from_secs(1) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        let now = receiver.span_count();
        if now != seen {
            (seen, moved) = (now, Instant::now());
        }
    }
    let cpu1 = cpu_ns(pid)?;
    let metrics = agent.metrics()?;
    let (_, peak_rss_kib) = memory_kib(pid)?;
    let traced = Traced {
        cpu_ms: (cpu1 - cpu0) as f64 / 1e6,
        startup_peak_rss_kib,
        peak_rss_kib,
        kernel_ns: kernel1.0 - kernel0.0,
        kernel_runs: kernel1.1 - kernel0.1,
        spans: receiver.span_count() as u64,
        kernel_lost: metric_sum(&metrics, "tracer_kernel_drops_total"),
        spans_dropped: metric_sum(&metrics, "tracer_spans_dropped_total")
            + metric_sum(&metrics, "tracer_spans_evicted_total"),
        abandoned: metric_sum(&metrics, "tracer_requests_abandoned_total"),
        load,
    };
    agent.stop()?;
    receiver.clear();
    Ok(traced)
}

/// CPU time of every thread of `pid`, in ns (the first field of each task's schedstat). The
/// agent's threads live as long as it does, so none is missed by exiting in between.
fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(&path) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// Summed run time (ns) and run count of `programs`.
fn program_stats(programs: &HashSet<u32>) -> (u64, u64) {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| programs.contains(&p.id()))
        .fold((0, 0), |(ns, runs), p| {
            (ns + p.run_time().as_nanos() as u64, runs + p.run_count())
        })
}
