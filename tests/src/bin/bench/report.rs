//! BENCHMARKS.md: the machine, a table per benchmark, the targets. Everything below the
//! history marker is kept from the previous file (before/after figures of optimisations).

use std::{fmt::Write, path::Path, process::Command};

use anyhow::{Context, Result};

use crate::{Round, agent::Traced, load::Load};

pub const HISTORY_MARKER: &str = "<!-- Kept across runs: edit below. -->";

/// Throughput of one criterion benchmark of the pipeline.
pub struct PipelineResult {
    pub name: String,
    pub per_second: f64,
}

pub struct Report<'a> {
    pub saturation: &'a [(Load, Traced)],
    pub fixed: &'a [Round],
    pub pipeline: &'a [PipelineResult],
    pub seconds: u32,
    pub connections: u32,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn shell(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text).trim().to_string()
        })
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default()
}

pub fn write(path: &Path, r: &Report) -> Result<()> {
    let history = std::fs::read_to_string(path)
        .ok()
        .and_then(|old| old.split_once(HISTORY_MARKER).map(|(_, h)| h.to_string()))
        .unwrap_or_else(|| "\n## History\n\nBefore/after figures of optimisations.\n".into());
    let mut s = String::new();
    let w = &mut s;
    writeln!(w, "# Benchmarks\n")?;
    writeln!(
        w,
        "Written by `cargo xtask bench`; every figure above the History section was measured by its last run.\n"
    )?;
    writeln!(w, "| | |\n|---|---|")?;
    writeln!(
        w,
        "| date | {} |",
        shell("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    )?;
    writeln!(
        w,
        "| machine | {}, {} CPUs, {} |",
        cpu_model(),
        shell("nproc", &[]),
        mem_total()
    )?;
    writeln!(w, "| kernel | {} |", shell("uname", &["-r"]))?;
    writeln!(
        w,
        "| tracer | {} ({}) |",
        shell(&tracer_bin(), &["--version"]),
        shell("git", &["rev-parse", "--short", "HEAD"])
    )?;
    writeln!(
        w,
        "| nginx | {} (one worker, keep-alive, a 3-byte `return 200`) |",
        tracer_e2e::nginx::Nginx::version()
    )?;
    writeln!(
        w,
        "| load | {}; the fixed-rate generator of `tests/src/bin/bench/load.rs` |",
        shell("sh", &["-c", "wrk -v 2>&1 | head -1"])
    )?;
    writeln!(w)?;

    let ratios: Vec<f64> = r
        .saturation
        .iter()
        .map(|(u, t)| t.load.rate() / u.rate())
        .collect();
    writeln!(w, "## Overhead at saturation\n")?;
    writeln!(
        w,
        "wrk, one thread, {} connections, {} s per round; untraced and traced rounds alternate. \
         Traced rounds start a fresh agent exporting over OTLP/gRPC to a receiver on the same \
         machine. Both share the machine's CPUs with nginx and wrk. wrk does not count the \
         requests in flight when it stops (up to one per connection), which have spans.\n",
        r.connections, r.seconds
    )?;
    writeln!(
        w,
        "| round | untraced req/s | traced req/s | ratio | p50 untraced → traced (µs) | p99 untraced → traced (µs) | spans / requests | counted loss |"
    )?;
    writeln!(w, "|---|---|---|---|---|---|---|---|")?;
    for (i, ((u, t), ratio)) in r.saturation.iter().zip(&ratios).enumerate() {
        writeln!(
            w,
            "| {} | {:.0} | {:.0} | {:.3} | {:.0} → {:.0} | {:.0} → {:.0} | {} / {} | {} |",
            i + 1,
            u.rate(),
            t.load.rate(),
            ratio,
            u.p50_us,
            t.load.p50_us,
            u.p99_us,
            t.load.p99_us,
            t.spans,
            t.load.requests,
            loss(t)
        )?;
    }
    let added = |f: fn(&Load) -> f64| {
        median(
            r.saturation
                .iter()
                .map(|(u, t)| f(&t.load) - f(u))
                .collect(),
        )
    };
    writeln!(
        w,
        "\nMedian throughput ratio traced/untraced: **{:.3}**; median added latency p50 {:+.0} µs, p99 {:+.0} µs.\n",
        median(ratios.clone()),
        added(|l| l.p50_us),
        added(|l| l.p99_us)
    )?;

    writeln!(w, "## At fixed rates\n")?;
    writeln!(
        w,
        "Open-loop load on keep-alive connections, untraced then traced. The kernel's BPF \
         run-time statistics are on during traced rounds: kernel ns per request is the run \
         time of all the agent's programs (every syscall they saw, the load generator's \
         included) divided by the requests. Agent CPU counts every thread from the load's \
         start until the last span was exported.\n"
    )?;
    writeln!(
        w,
        "| rate (req/s) | answered (late sends, non-200) untraced / traced | p50 untraced → traced (µs) | p99 untraced → traced (µs) | kernel ns / request | program runs / request | agent CPU ms / 10k requests | agent peak RSS under load (startup) MiB | spans − answered | counted loss |"
    )?;
    writeln!(w, "|---|---|---|---|---|---|---|---|---|---|")?;
    for round in r.fixed {
        let (u, t) = (&round.untraced, &round.traced);
        let n = t.load.requests.max(1) as f64;
        writeln!(
            w,
            "| {} | {} / {} | {:.0} → {:.0} | {:.0} → {:.0} | {:.0} | {:.1} | {:.1} | {:.1} ({:.1}) | {:+} | {} |",
            round.rate,
            answered(u),
            answered(&t.load),
            u.p50_us,
            t.load.p50_us,
            u.p99_us,
            t.load.p99_us,
            t.kernel_ns as f64 / n,
            t.kernel_runs as f64 / n,
            t.cpu_ms * 10_000.0 / n,
            t.peak_rss_kib as f64 / 1024.0,
            t.startup_peak_rss_kib as f64 / 1024.0,
            t.spans as i64 - (t.load.requests + t.load.errors) as i64,
            loss(t)
        )?;
    }
    writeln!(w)?;

    writeln!(w, "## Pipeline throughput (one core)\n")?;
    writeln!(
        w,
        "criterion (`cargo bench -p tracer --bench pipeline`): recorded capture events \
         (`tests/data/captures/http1_nginx.rec`, nginx under wrk) replayed through decoding, \
         connections, HTTP/1 parsing, stitching and sampling, then OTLP protobuf encoding. \
         The replay runs on the recording's clock and flushes when the agent would: on its \
         250 ms tick, and on a ring wake-up (a quarter MiB of records, about every 53 ms of \
         this recording) 50 ms or more after the last flush; `all` encodes each flush's \
         spans.\n"
    )?;
    writeln!(w, "| stage | HTTP/1 transactions per second |\n|---|---|")?;
    for p in r.pipeline {
        writeln!(w, "| {} | {:.0} |", p.name, p.per_second)?;
    }
    writeln!(w)?;

    writeln!(w, "## Targets\n")?;
    writeln!(w, "| target | measured | met |\n|---|---|---|")?;
    let mut target = |name: &str, measured: String, met: bool| {
        writeln!(
            w,
            "| {name} | {measured} | {} |",
            if met { "yes" } else { "**no**" }
        )
    };
    let ratio = median(ratios);
    target(
        "throughput ratio ≥ 0.97 at saturation",
        format!("{ratio:.3}"),
        ratio >= 0.97,
    )?;
    for round in r.fixed {
        let t = &round.traced;
        let n = t.load.requests.max(1) as f64;
        let ns = t.kernel_ns as f64 / n;
        target(
            &format!("kernel ≤ 300 ns / request ({} req/s)", round.rate),
            format!("{ns:.0} ns"),
            ns <= 300.0,
        )?;
        let cpu = t.cpu_ms * 10_000.0 / n;
        target(
            &format!("agent CPU ≤ 20 ms / 10k requests ({} req/s)", round.rate),
            format!("{cpu:.1} ms"),
            cpu <= 20.0,
        )?;
        let rss = t.peak_rss_kib as f64 / 1024.0;
        target(
            &format!("agent peak RSS under load ≤ 32 MB ({} req/s)", round.rate),
            format!("{rss:.1} MiB"),
            rss * 1.048_576 <= 32.0,
        )?;
        target(
            &format!("one span per request ({} req/s)", round.rate),
            format!(
                "{} spans, {} answered",
                t.spans,
                t.load.requests + t.load.errors
            ),
            t.spans == t.load.requests + t.load.errors,
        )?;
    }
    if let Some(p) = r.pipeline.iter().find(|p| p.name.starts_with("all")) {
        target(
            "pipeline ≥ 500k HTTP/1 transactions / s / core",
            format!("{:.0}", p.per_second),
            p.per_second >= 500_000.0,
        )?;
    }
    writeln!(w, "\n{HISTORY_MARKER}{history}")?;
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

/// Requests answered, with the late sends and non-200 answers among them.
fn answered(l: &Load) -> String {
    format!("{} ({}, {})", l.requests + l.errors, l.late, l.errors)
}

fn loss(t: &Traced) -> String {
    format!(
        "kernel {}, dropped {}, abandoned {}",
        t.kernel_lost, t.spans_dropped, t.abandoned
    )
}

fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(String::new(), |kib| {
            format!("{} GiB RAM", kib / 1024 / 1024)
        })
}

fn tracer_bin() -> String {
    std::env::var("TRACER_BIN").unwrap_or_else(|_| "tracer".into())
}

/// Reads criterion's results under `dir` (target/criterion) for the pipeline group: each
/// benchmark's mean time per iteration and its throughput in elements (transactions).
pub fn pipeline_results(dir: &Path) -> Result<Vec<PipelineResult>> {
    let group = dir.join("pipeline");
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&group)
        .with_context(|| format!("reading {}", group.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("new/estimates.json").is_file())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let estimates: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path.join("new/estimates.json"))?)?;
        let benchmark: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path.join("new/benchmark.json"))?)?;
        let mean_ns = estimates["mean"]["point_estimate"]
            .as_f64()
            .context("mean")?;
        let elements = benchmark["throughput"]["Elements"]
            .as_f64()
            .context("throughput")?;
        out.push(PipelineResult {
            name: benchmark["function_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            per_second: elements / (mean_ns / 1e9),
        });
    }
    Ok(out)
}
