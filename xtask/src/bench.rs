//! `cargo xtask bench`: the pipeline benchmark (criterion), then nginx untraced and traced
//! under load (tests/src/bin/bench), written to BENCHMARKS.md. Not a test: nothing in
//! `cargo xtask test` depends on speed.

use anyhow::{Result, bail};

use crate::cmd;

/// `extra` goes to the live benchmark (`--rounds N`, `--seconds S`, `--rates A,B`, ...).
pub fn run(extra: &[String]) -> Result<()> {
    if !cmd::is_root() {
        bail!("the benchmarks load eBPF programs: run `sudo -E cargo xtask bench`");
    }
    let root = cmd::root();
    cmd::cargo(&["bench", "--package", "tracer", "--bench", "pipeline"])?;
    cmd::cargo(&[
        "build",
        "--release",
        "--package",
        "tracer",
        "--package",
        "tracer-e2e",
        "--bin",
        "tracer",
        "--bin",
        "bench",
    ])?;
    let criterion = root.join("target/criterion");
    let out = root.join("BENCHMARKS.md");
    cmd::run_with(
        std::process::Command::new(root.join("target/release/bench"))
            .arg("--out")
            .arg(&out)
            .arg("--criterion")
            .arg(&criterion)
            .args(extra)
            .env("TRACER_BIN", root.join("target/release/tracer"))
            .current_dir(&root),
    )?;
    eprintln!("xtask: wrote {}", out.display());
    Ok(())
}
