//! `cargo xtask fuzz [--seconds N] [TARGET]`: runs the cargo-fuzz targets of `fuzz/`, each for
//! N seconds, and fails on the first crash, naming the input that caused it.
//!
//! Each run reads three corpus directories: `fuzz/corpus/<target>` (what earlier runs grew,
//! where new inputs go), `fuzz/seeds/<target>` (derived from the real captures on every run,
//! see `seeds`), and `fuzz/regressions/<target>` (inputs that once crashed, kept in git: they
//! are all replayed first, so a fixed bug that comes back fails at once).

use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context, Result, bail};

use crate::{cmd, seeds};

/// Every fuzz target (`fuzz/Cargo.toml`'s binaries).
pub const TARGETS: [&str; 6] = [
    "http1",
    "http2",
    "hpack",
    "grpc",
    "trace_context",
    "pipeline",
];

/// cargo-fuzz version known to work here (with the nightly toolchain; no llvm-tools needed
/// unless for `cargo fuzz coverage`).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Longest time one input may take before libFuzzer calls it a hang (its default is 20 min).
const INPUT_TIMEOUT_S: u32 = 10;

/// What one target's run did.
pub struct Outcome {
    pub runs: u64,
    pub seconds: f64,
}

/// Installs cargo-fuzz if missing, writes the seeds, builds every target, then runs `only` (or
/// all of them) for `seconds` each. Fails on the first crash.
pub fn run(seconds: u32, only: Option<&str>) -> Result<Vec<Outcome>> {
    let targets: Vec<&'static str> = match only {
        Some(name) => vec![
            *TARGETS
                .iter()
                .find(|t| **t == name)
                .with_context(|| format!("no fuzz target {name}; targets: {TARGETS:?}"))?,
        ],
        None => TARGETS.to_vec(),
    };
    cargo_fuzz()?;
    let root = cmd::root();
    let fuzz = root.join("fuzz");
    let counts = seeds::write(&root.join("tests/data/captures"), &fuzz.join("seeds"))?;
    eprintln!("xtask: fuzz seeds from real captures: {counts:?}");
    let started = Instant::now();
    cmd::run_with(fuzz_command("build").args(only))?;
    eprintln!(
        "xtask: fuzz targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let mut outcomes = Vec::new();
    for target in targets {
        let outcome = run_target(&fuzz, target, seconds)?;
        eprintln!(
            "xtask: fuzz {target}: {} runs in {:.0} s, no crash",
            outcome.runs, outcome.seconds
        );
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// `cargo +nightly fuzz SUBCOMMAND` in `fuzz/`, with the build settings every call shares (a
/// run with other settings would rebuild): cargo-fuzz's defaults, release with debug
/// assertions and overflow checks, AddressSanitizer.
fn fuzz_command(subcommand: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(["+nightly", "fuzz", subcommand, "--fuzz-dir"])
        .arg(cmd::root().join("fuzz"));
    cmd
}

fn run_target(fuzz: &Path, target: &'static str, seconds: u32) -> Result<Outcome> {
    let corpus = fuzz.join("corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    let mut command = fuzz_command("run");
    command
        .arg(target)
        .arg(&corpus)
        .arg(fuzz.join("seeds").join(target));
    let regressions = fuzz.join("regressions").join(target);
    if regressions.is_dir() {
        command.arg(&regressions);
    }
    command.args([
        "--".to_string(),
        format!("-max_total_time={seconds}"),
        format!("-timeout={INPUT_TIMEOUT_S}"),
        "-print_final_stats=1".to_string(),
    ]);
    let started = Instant::now();
    let output = command
        .current_dir(cmd::root())
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    let log = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        for line in tail.into_iter().rev() {
            eprintln!("{line}");
        }
        let input = log
            .lines()
            .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()))
            .unwrap_or("(not written: see the output above)");
        bail!(
            "fuzz target {target} failed ({}): input {input}\n\
             reproduce: cargo +nightly fuzz run --fuzz-dir fuzz {target} {input}\n\
             once fixed, keep it: see fuzz/README.md",
            output.status
        );
    }
    Ok(Outcome {
        runs: final_stat(&log, "stat::number_of_executed_units").unwrap_or(0),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A `-print_final_stats` value: `stat::name:   123`.
fn final_stat(log: &str, name: &str) -> Option<u64> {
    log.lines().find_map(|l| {
        l.strip_prefix(name)?
            .trim_start_matches(':')
            .trim()
            .parse()
            .ok()
    })
}

/// cargo-fuzz, installed once (it builds on stable; the targets need nightly).
fn cargo_fuzz() -> Result<()> {
    if cmd::output("cargo", &["fuzz", "--version"]).is_some() {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    cmd::run(
        "cargo",
        &[
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_stats() {
        let log = "#1234\tDONE   cov: 10\nstat::number_of_executed_units: 98765\n\
                   stat::average_exec_per_sec:     3292\n";
        assert_eq!(
            final_stat(log, "stat::number_of_executed_units"),
            Some(98765)
        );
        assert_eq!(final_stat(log, "stat::average_exec_per_sec"), Some(3292));
        assert_eq!(final_stat(log, "stat::missing"), None);
    }
}
