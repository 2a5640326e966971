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
    /// Process to trace, optionally with the service name its spans carry (default: the
    /// executable's name). Repeat for several: --pid 1234=frontend --pid 5678=backend
    #[arg(long = "pid", value_name = "PID[=SERVICE]", required = true, value_parser = parse_target)]
    pub pids: Vec<Target>,

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

/// A process to trace and the service name to give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub pid: u32,
    pub service_name: Option<String>,
}

fn parse_target(s: &str) -> Result<Target, String> {
    let (pid, name) = match s.split_once('=') {
        Some((pid, name)) => (pid, Some(name)),
        None => (s, None),
    };
    let pid = pid
        .trim()
        .parse()
        .map_err(|_| format!("{pid:?} is not a process id"))?;
    let service_name = match name.map(str::trim) {
        Some("") => return Err("empty service name after '='".into()),
        other => other.map(String::from),
    };
    Ok(Target { pid, service_name })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_take_an_optional_service_name() {
        assert_eq!(
            parse_target("42"),
            Ok(Target {
                pid: 42,
                service_name: None
            })
        );
        assert_eq!(
            parse_target("42=checkout"),
            Ok(Target {
                pid: 42,
                service_name: Some("checkout".into())
            })
        );
        assert!(parse_target("x").is_err());
        assert!(parse_target("42=").is_err());
    }

    #[test]
    fn ring_size_must_be_a_power_of_two() {
        assert_eq!(parse_ring_mib("16"), Ok(16));
        assert!(parse_ring_mib("12").is_err());
        assert!(parse_ring_mib("0").is_err());
    }
}
