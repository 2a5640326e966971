//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "tracer",
    version,
    about = "eBPF distributed tracer: HTTP spans from unmodified processes, exported over OTLP"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace processes in the foreground until interrupted (or until they all exit).
    Run(RunArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Process to trace (repeat for several).
    #[arg(long = "pid", value_name = "PID", required = true)]
    pub pids: Vec<u32>,

    /// OTLP collector base URL, like OTEL_EXPORTER_OTLP_ENDPOINT (http/protobuf appends
    /// /v1/traces). Without one, traces are printed to the terminal.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// OTLP transport: grpc or http/protobuf.
    #[arg(long, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<String>,

    /// Also append every batch as an OTLP-JSON line to FILE.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Payload bytes captured per syscall (request heads must fit).
    #[arg(long, value_name = "BYTES", default_value_t = tracer_common::DEFAULT_CAPTURE_BYTES,
          value_parser = clap::value_parser!(u32).range(64..=tracer_common::MAX_CAPTURE_BYTES as i64))]
    pub capture_bytes: u32,

    /// Kernel ring buffer size in MiB (a power of two).
    #[arg(long, value_name = "MIB", default_value_t = 8,
          value_parser = parse_ring_mib)]
    pub ring_buffer_mib: u32,
}

fn parse_ring_mib(s: &str) -> Result<u32, String> {
    let mib: u32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(1..=1024).contains(&mib) || !mib.is_power_of_two() {
        return Err(format!(
            "{mib} MiB: expected a power of two between 1 and 1024"
        ));
    }
    Ok(mib)
}
