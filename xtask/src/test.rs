//! Every test, unit and end-to-end, then a short run of every fuzz target. The end-to-end tests
//! load the real kernel programs and trace real processes, so this runs as root (CI does).

use anyhow::{Result, bail};

use crate::{cmd, fuzz};

/// Release optimisations with overflow checks and debug assertions on: the agent under test
/// is fast like the shipped one but panics on arithmetic bugs instead of hiding them.
const PROFILE: &str = "ci";

/// Seconds each fuzz target runs: replays the regressions and the seeds, then a little more.
/// Six targets keep the step near a minute once built (longer runs: `cargo xtask fuzz`).
const FUZZ_SECONDS: u32 = 8;

pub fn run(filter: Option<&str>) -> Result<()> {
    if !cmd::is_root() {
        bail!("the tests load eBPF programs: run `sudo -E cargo xtask test`");
    }
    cmd::cargo(&["build", "--profile", PROFILE, "--package", "tracer"])?;
    let agent = cmd::root().join("target").join(PROFILE).join("tracer");
    let mut args = vec!["test", "--profile", PROFILE];
    if let Some(filter) = filter {
        args.push(filter);
    }
    cmd::run_with(
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(&args)
            .env("TRACER_BIN", &agent),
    )?;
    if filter.is_none() {
        let outcomes = fuzz::run(FUZZ_SECONDS, None)?;
        // A crash fails above; here every target ran clean.
        println!("fuzz: {} passed, 0 failed", outcomes.len());
    }
    Ok(())
}
