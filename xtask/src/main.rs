//! Project tasks: `cargo xtask <setup|build|demo|test|fuzz|bench>`. Each installs what is missing first,
//! so a fresh machine needs nothing but these commands.

mod bench;
mod cmd;
mod demo;
mod fuzz;
mod seeds;
mod setup;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "tracer project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (nightly rust-src, bpf-linker, tracefs, tools).
    Setup,
    /// Build the agent: target/release/tracer (installs only the build tools).
    Build,
    /// Trace two bundled demo services and show their traces in the terminal.
    Demo,
    /// Run every test, unit and end-to-end (needs root: it loads eBPF programs).
    Test {
        /// Only tests whose name contains this (and no fuzzing).
        filter: Option<String>,
    },
    /// Measure what tracing costs (nginx untraced and traced, the pipeline) into BENCHMARKS.md.
    Bench {
        /// Passed to the live benchmark: --rounds N, --seconds S, --rates A,B, --fixed-seconds S.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the fuzz targets (fuzz/), each for a while; fails on a crash.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
        /// Only this target.
        target: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run(),
        Task::Build => setup::build_tools().and_then(|()| build_release()),
        Task::Demo => setup::run()
            .and_then(|()| build_release())
            .and_then(|()| demo::run()),
        Task::Test { filter } => setup::run().and_then(|()| test::run(filter.as_deref())),
        Task::Bench { args } => setup::run()
            .and_then(|()| setup::bench_tools())
            .and_then(|()| bench::run(&args)),
        Task::Fuzz { seconds, target } => setup::build_tools()
            .and_then(|()| fuzz::run(seconds, target.as_deref()))
            .map(drop),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

/// The agent as users run it.
pub fn build_release() -> anyhow::Result<()> {
    cmd::cargo(&["build", "--release", "--package", "tracer"])?;
    eprintln!(
        "xtask: agent built: {}",
        cmd::root().join("target/release/tracer").display()
    );
    Ok(())
}
