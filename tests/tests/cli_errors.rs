//! User errors give one line on stderr that says what to do, a non-zero exit, no panic.

use std::process::{Command, Output};

use anyhow::{Result, ensure};
use tracer_e2e::harness::{agent_binary, is_root};

fn run(prefix: &[&str], args: &[&str]) -> Result<Output> {
    let bin = agent_binary()?;
    let mut cmd = match prefix.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    Ok(cmd.args(args).env_remove("RUST_BACKTRACE").output()?)
}

fn one_line_error(out: &Output, expected: &str) -> Result<()> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    ensure!(!out.status.success(), "must fail: {stderr}");
    ensure!(lines.len() == 1, "one line, got: {stderr}");
    ensure!(lines[0].starts_with("error: "), "error prefix: {stderr}");
    ensure!(lines[0].contains(expected), "{expected:?} in: {stderr}");
    ensure!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
    Ok(())
}

#[test]
fn a_missing_pid_is_named_with_what_to_do() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    // pid_max is at most 2^22: this pid cannot exist.
    let out = run(&[], &["run", "--pid", "99999999"])?;
    one_line_error(
        &out,
        "pid 99999999 not found: check it with `ps -p 99999999`",
    )
}

#[test]
fn a_non_root_user_is_refused() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    let me = std::process::id().to_string();
    let out = run(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        &["run", "--pid", &me],
    )?;
    one_line_error(
        &out,
        "tracer must run as root (it loads eBPF programs): run it with sudo",
    )
}

#[test]
fn bad_flags_are_reported_by_the_parser() -> Result<()> {
    let out = run(&[], &["run", "--pid", "12=", "--ring-buffer-mib", "3"])?;
    ensure!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(stderr.contains("empty service name"), "{stderr}");
    Ok(())
}
