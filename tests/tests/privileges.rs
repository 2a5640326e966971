//! The agent with only the capabilities the DaemonSet grants (read from its manifest), as
//! root without the rest, traces a service that runs as another user: what the deployment
//! grants is enough on this kernel, and each capability is needed.

use std::{process::Command, time::Duration};

use anyhow::{Context, Result, ensure};
use tracer_e2e::{
    AttrValue, OtlpReceiver, ReceivedSpan,
    harness::{Agent, Service, TempDir, curl, is_root, root, run_args},
};

/// The `capabilities.add` list of deploy/kubernetes/30-daemonset.yaml.
fn daemonset_capabilities() -> Result<Vec<String>> {
    let manifest = std::fs::read_to_string(root().join("deploy/kubernetes/30-daemonset.yaml"))?;
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("add: ["))
        .context("no capabilities.add list in the DaemonSet")?;
    Ok(line
        .split('"')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect())
}

/// Capability numbers (linux/capability.h) of the names the manifest uses.
fn capability_bit(name: &str) -> Option<u32> {
    Some(match name {
        "DAC_READ_SEARCH" => 2,
        "NET_ADMIN" => 12,
        "SYS_PTRACE" => 19,
        "SYS_RESOURCE" => 24,
        "PERFMON" => 38,
        "BPF" => 39,
        _ => return None,
    })
}

fn effective_capabilities(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .context("no CapEff")?;
    Ok(u64::from_str_radix(hex.trim(), 16)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemonsets_capabilities_are_enough_and_each_is_needed() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    let capabilities = daemonset_capabilities()?;
    ensure!(
        capabilities
            == [
                "BPF",
                "PERFMON",
                "NET_ADMIN",
                "SYS_PTRACE",
                "DAC_READ_SEARCH"
            ],
        "{capabilities:?}"
    );
    let mut expected = 0u64;
    for name in &capabilities {
        expected |= 1 << capability_bit(name).with_context(|| format!("unknown {name}"))?;
    }

    // A service as user nobody: its /proc/PID/fd is not root's to read without capabilities.
    // The system's Python and a copy of the script under /tmp: nobody may not be able to
    // read a checkout or a Python installed under /root.
    let dir = TempDir::new("nobody")?;
    for file in ["http_services.py", "quiet_http.py"] {
        std::fs::copy(
            root().join("tests/fixtures").join(file),
            dir.path().join(file),
        )?;
    }
    let script = dir.path().join("http_services.py");
    let service = Service::start_command(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["/usr/bin/python3", script.to_str().unwrap(), "backend"]),
    )?;
    let pid = service.proc.pid();

    let receiver = OtlpReceiver::start_grpc().await?;
    let agent = agent_with(&capabilities, &receiver)?;
    let granted = effective_capabilities(agent.proc.pid())?;
    ensure!(
        granted == expected,
        "the agent runs with capabilities {granted:#x}, expected {expected:#x}"
    );
    let out = agent.cli_ok(&["enable", "--pid", &pid.to_string()])?;
    ensure!(out.contains(&format!("tracing pid {pid}")), "{out}");
    let span = one_span(&service, &receiver).await?;
    ensure!(
        span.resource_attr("process.pid")
            .and_then(AttrValue::as_int)
            == Some(pid as i64),
        "{span:#?}"
    );
    // From /proc/PID/exe: needs ptrace access to another user's process.
    ensure!(executable_path(&span).is_some(), "{span:#?}");
    // Every program attached: the sock_ops program too (a warning says otherwise).
    let log = agent.log();
    ensure!(!log.iter().any(|l| l.contains("not attached")), "{log:#?}");
    drop(agent);

    // And none of them is superfluous.
    for missing in &capabilities {
        let fewer: Vec<String> = capabilities
            .iter()
            .filter(|c| c != &missing)
            .cloned()
            .collect();
        let receiver = OtlpReceiver::start_grpc().await?;
        let agent = match agent_with(&fewer, &receiver) {
            Err(e) => {
                // BPF, PERFMON, NET_ADMIN: the kernel refuses the programs.
                let e = format!("{e:#}");
                ensure!(
                    e.contains("Operation not permitted"),
                    "without {missing}: {e}"
                );
                continue;
            }
            Ok(agent) => agent,
        };
        let out = agent.cli(&["enable", "--pid", &pid.to_string()])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if missing == "DAC_READ_SEARCH" {
            // nobody's /proc/PID/fd is closed to root without it.
            ensure!(
                stderr.contains(&format!("listing /proc/{pid}/fd")),
                "{stderr}"
            );
            continue;
        }
        ensure!(out.status.success(), "without {missing}: {stderr}");
        let span = one_span(&service, &receiver).await?;
        ensure!(
            missing == "SYS_PTRACE" && executable_path(&span).is_none(),
            "without {missing} everything worked: {span:#?}"
        );
    }
    Ok(())
}

/// The agent as uid 0 with only `capabilities` (the bounding set caps what root gets at
/// exec) and no way to gain more (allowPrivilegeEscalation: false).
fn agent_with(capabilities: &[String], receiver: &OtlpReceiver) -> Result<Agent> {
    let bounding: Vec<String> = capabilities
        .iter()
        .map(|c| format!("+{}", c.to_lowercase()))
        .collect();
    let bounding = format!("-all,{}", bounding.join(","));
    let wrapper = [
        "setpriv",
        "--bounding-set",
        &bounding,
        "--no-new-privs",
        "--",
    ];
    Agent::start_wrapped(&wrapper, &run_args(&[], receiver), &[])
}

async fn one_span(service: &Service, receiver: &OtlpReceiver) -> Result<ReceivedSpan> {
    ensure!(curl(&service.url("/inventory/1"), &[])? == 200);
    let spans = receiver.wait_for_spans(1, Duration::from_secs(15)).await?;
    Ok(spans[0].clone())
}

fn executable_path(span: &ReceivedSpan) -> Option<&str> {
    span.resource_attr("process.executable.path")
        .and_then(AttrValue::as_str)
}
