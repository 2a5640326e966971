//! What tracing costs, measured side by side (`cargo xtask bench` runs this, then writes
//! BENCHMARKS.md, with the pipeline benchmark's criterion results).
//!
//! nginx (one worker, keep-alive, a tiny response) under load, untraced and traced in
//! alternating rounds: at saturation with wrk, and at fixed rates with an open-loop generator.
//! Traced rounds start a fresh agent exporting to a real OTLP receiver, and measure its CPU
//! time (every thread's, from schedstat) and peak RSS, the kernel programs' run time (the
//! kernel's own BPF statistics), and whether every request became exactly one span.
//!
//!     TRACER_BIN=target/release/tracer bench [--out BENCHMARKS.md] [--criterion target/criterion]
//!         [--rounds N] [--seconds S] [--rates 1000,10000] [--fixed-seconds S]

mod agent;
mod load;
mod report;

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Result, ensure};
use tracer_e2e::{OtlpReceiver, harness::is_root, nginx::Nginx};

use crate::{agent::Traced, load::Load};

/// wrk's connections at saturation.
const CONNECTIONS: u32 = 16;

struct Options {
    out: PathBuf,
    criterion: Option<PathBuf>,
    rounds: u32,
    seconds: u32,
    rates: Vec<u32>,
    fixed_seconds: u32,
}

fn options() -> Result<Options> {
    let mut o = Options {
        out: "BENCHMARKS.md".into(),
        criterion: None,
        rounds: 5,
        seconds: 5,
        rates: vec![1_000, 10_000],
        fixed_seconds: 10,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--out" => o.out = value.into(),
            "--criterion" => o.criterion = Some(value.into()),
            "--rounds" => o.rounds = value.parse()?,
            "--seconds" => o.seconds = value.parse()?,
            "--fixed-seconds" => o.fixed_seconds = value.parse()?,
            "--rates" => o.rates = value.split(',').map(str::parse).collect::<Result<_, _>>()?,
            _ => anyhow::bail!("unknown option {flag}"),
        }
    }
    Ok(o)
}

/// One fixed rate, untraced then traced.
pub struct Round {
    pub rate: u32,
    pub untraced: Load,
    pub traced: Traced,
}

fn main() -> Result<()> {
    ensure!(
        is_root(),
        "the benchmarks load eBPF programs: run them as root"
    );
    let o = options()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let receiver = runtime.block_on(OtlpReceiver::start_grpc())?;
    receiver.count_only();
    // One process, keep-alive for the whole run, a 3-byte answer.
    let nginx = Nginx::start(
        "keepalive_requests 1000000; keepalive_timeout 60s;",
        "location / { return 200 \"ok\\n\"; }",
        |_| Ok(()),
    )?;
    let url = format!("http://127.0.0.1:{}/", nginx.port);
    let addr: SocketAddr = ([127, 0, 0, 1], nginx.port).into();

    // Warm nginx and the page cache up.
    load::wrk(&url, CONNECTIONS, 2)?;

    let mut saturation = Vec::new();
    for round in 1..=o.rounds {
        let untraced = load::wrk(&url, CONNECTIONS, o.seconds)?;
        let traced = agent::measure(&nginx, &receiver, false, || {
            load::wrk(&url, CONNECTIONS, o.seconds)
        })?;
        eprintln!(
            "bench: saturation round {round}: untraced {:.0} req/s, traced {:.0} req/s ({:.3})",
            untraced.rate(),
            traced.load.rate(),
            traced.load.rate() / untraced.rate()
        );
        saturation.push((untraced, traced));
    }

    let mut fixed = Vec::new();
    for &rate in &o.rates {
        let total = u64::from(rate) * u64::from(o.fixed_seconds);
        let connections = (rate / 1_000).clamp(2, 8);
        let untraced = load::fixed_rate(addr, "bench", rate, total, connections)?;
        let traced = agent::measure(&nginx, &receiver, true, || {
            load::fixed_rate(addr, "bench", rate, total, connections)
        })?;
        eprintln!(
            "bench: {rate} req/s: p50 {:.0} -> {:.0} us; kernel {:.0} ns/request; agent {:.1} ms \
             CPU per 10k, {} KiB peak; {} spans for {} requests",
            untraced.p50_us,
            traced.load.p50_us,
            traced.kernel_ns as f64 / traced.load.requests.max(1) as f64,
            traced.cpu_ms * 10_000.0 / traced.load.requests.max(1) as f64,
            traced.peak_rss_kib,
            traced.spans,
            traced.load.requests
        );
        fixed.push(Round {
            rate,
            untraced,
            traced,
        });
    }
    drop(nginx);

    let pipeline = match &o.criterion {
        Some(dir) => report::pipeline_results(dir)?,
        None => Vec::new(),
    };
    report::write(
        &o.out,
        &report::Report {
            saturation: &saturation,
            fixed: &fixed,
            pipeline: &pipeline,
            seconds: o.seconds,
            connections: CONNECTIONS,
        },
    )?;
    eprintln!("bench: wrote {}", o.out.display());
    Ok(())
}
