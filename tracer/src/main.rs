use std::process::ExitCode;

use clap::Parser;
use tracer::{
    agent::{self, RunOptions},
    capture::CaptureConfig,
    cli::{Cli, Command},
    export::ExportArgs,
    stitch::StitchConfig,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Run(args) => {
            let options = RunOptions {
                targets: args.pids,
                export: ExportArgs {
                    otlp_endpoint: args.otlp_endpoint,
                    otlp_protocol: args.otlp_protocol,
                    output: args.output,
                },
                capture: CaptureConfig {
                    capture_bytes: args.capture_bytes,
                    ring_bytes: args.ring_buffer_mib << 20,
                },
                stitch: StitchConfig::default(),
            };
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(agent::run(options)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: what happened and what to do; no backtrace for user errors.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
