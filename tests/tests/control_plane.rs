//! The control plane end to end: a running agent, the `tracer` CLI against its control socket,
//! real Python services, curl, and a real OTLP receiver.

use std::{
    io::Write,
    os::unix::{
        fs::PermissionsExt,
        process::{CommandExt, ExitStatusExt},
    },
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use tracer_e2e::{
    AttrValue, OtlpReceiver,
    harness::{
        Agent, Proc, Service, TempDir, agent_binary, curl, free_port, is_root, port_from, root,
        run_args,
    },
    keep_alive::KeepAlive,
    observe::metric,
};

fn services_script() -> String {
    root()
        .join("tests/fixtures/http_services.py")
        .display()
        .to_string()
}

/// The kernel's count of data events so far, from the agent's self-metrics.
fn data_events(agent: &Agent) -> Result<u64> {
    let text = agent.metrics()?;
    metric(&text, "tracer_kernel_events_total", &[("kind", "data")])
        .with_context(|| format!("no data events counter in\n{text}"))
}

/// An idle agent (no selector) exporting to `receiver`.
fn idle_agent(receiver: &OtlpReceiver) -> Result<Agent> {
    Agent::start(&run_args(&[], receiver), &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_by_pid_status_and_disable() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    let receiver = OtlpReceiver::start_grpc().await?;
    let agent = idle_agent(&receiver)?;
    // The control socket is root-only.
    let mode = std::fs::metadata(&agent.socket)?.permissions().mode();
    ensure!(
        mode & 0o777 == 0o600,
        "control socket mode {:o}",
        mode & 0o777
    );

    let backend = Service::start(&["backend"])?;
    let pid = backend.proc.pid();
    let out = agent.cli_ok(&[
        "enable",
        "--pid",
        &pid.to_string(),
        "--service-name",
        "inventory",
    ])?;
    ensure!(
        out.contains(&format!("tracing pid {pid} as service inventory")),
        "{out}"
    );

    // Kept open across the disable below: its socket entry is the kernel's.
    let mut kept = KeepAlive::connect(("127.0.0.1", backend.port))?;
    ensure!(kept.get("/inventory/1")?);
    let spans = receiver.wait_for_spans(1, Duration::from_secs(15)).await?;
    ensure!(spans[0].service_name == "inventory", "{:#?}", spans[0]);
    ensure!(spans[0].pid() == pid as i64);

    let status = agent.cli_ok(&["status"])?;
    let row = status
        .lines()
        .find(|l| l.trim_start().starts_with(&pid.to_string()))
        .with_context(|| format!("no row for {pid}: {status}"))?;
    ensure!(
        row.contains("inventory") && row.contains(&format!("pid {pid}")),
        "{row}"
    );
    let json: serde_json::Value = serde_json::from_str(&agent.cli_ok(&["status", "--json"])?)?;
    let process = &json["processes"][0];
    ensure!(
        process["pid"] == pid && process["service_name"] == "inventory",
        "{json}"
    );
    ensure!(process["spans"].as_u64() >= Some(1), "{json}");
    ensure!(json["agent"]["kernel_lost"] == 0, "{json}");

    let out = agent.cli_ok(&["disable", "--pid", &pid.to_string()])?;
    ensure!(out.contains("stopped tracing pid"), "{out}");
    // The server may be inside a read it began while traced: this request ends it, and that
    // read's exit still reports.
    ensure!(kept.get("/inventory/2")?);
    let data_events_after_disable = data_events(&agent)?;
    ensure!(curl(&backend.url("/inventory/3"), &[])? == 200);
    ensure!(kept.get("/inventory/4")?);
    // Longer than the settle window and the export delay together.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let spans = receiver.spans();
    ensure!(spans.len() == 1, "no span after disable: {spans:#?}");
    // Nor any capture: the kernel takes a socket's entry as the sign that its process is
    // traced, so disabling must have removed the backend's entries.
    let data_events_now = data_events(&agent)?;
    ensure!(
        data_events_now == data_events_after_disable,
        "the kernel still captured after disable: data events {data_events_after_disable} -> \
         {data_events_now}"
    );
    let status = agent.cli_ok(&["status"])?;
    ensure!(status.contains("no process is traced"), "{status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_traces_a_command_from_its_first_request_and_passes_its_exit_through() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    let receiver = OtlpReceiver::start_http().await?;
    let agent = idle_agent(&receiver)?;
    let mut exec = Command::new(agent_binary()?);
    exec.args(["exec", "--service-name", "exec-backend", "--control-socket"])
        .arg(&agent.socket)
        .args(["--", "python3", &services_script(), "backend"])
        .stdout(Stdio::piped());
    let mut exec = exec.spawn()?;
    let port = port_from(exec.stdout.take().unwrap())?;
    // The very first request the program ever serves is traced.
    ensure!(curl(&format!("http://127.0.0.1:{port}/first/1"), &[])? == 200);
    let spans = receiver.wait_for_spans(1, Duration::from_secs(15)).await?;
    ensure!(spans[0].service_name == "exec-backend", "{:#?}", spans[0]);
    ensure!(
        spans[0].attr("url.path").and_then(AttrValue::as_str) == Some("/first/1"),
        "{:#?}",
        spans[0]
    );
    // SIGTERM to `tracer exec` reaches the command; the command's death is exec's.
    Command::new("kill")
        .args(["-TERM", &exec.id().to_string()])
        .status()?;
    let status = exec.wait()?;
    ensure!(
        status.signal() == Some(libc_sigterm()),
        "exec ended with {status:?}"
    );

    // Exit codes pass through.
    let status = agent.cli(&["exec", "--", "sh", "-c", "exit 7"])?.status;
    ensure!(status.code() == Some(7), "{status:?}");
    Ok(())
}

fn libc_sigterm() -> i32 {
    15
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_without_an_agent_runs_one_for_the_command() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    let receiver = OtlpReceiver::start_grpc().await?;
    let dir = TempDir::new("noagent")?;
    let socket = dir.path().join("nobody-here.sock");
    let script = "import urllib.request, http.server, threading, sys\n\
        class H(http.server.BaseHTTPRequestHandler):\n\
        \x20   def do_GET(self):\n\
        \x20       self.send_response(204); self.end_headers()\n\
        \x20   def log_message(self, *a): pass\n\
        s = http.server.HTTPServer(('127.0.0.1', 0), H)\n\
        threading.Thread(target=s.handle_request).start()\n\
        urllib.request.urlopen(f'http://127.0.0.1:{s.server_address[1]}/solo').read()\n";
    let out = Command::new(agent_binary()?)
        .args(["exec", "--service-name", "solo", "--control-socket"])
        .arg(&socket)
        .args([
            "--otlp-endpoint",
            &receiver.endpoint(),
            "--otlp-protocol",
            "grpc",
        ])
        .args(["--", "python3", "-c", script])
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The private agent flushed on the way out: both ends of the call are there already.
    let spans = receiver.wait_for_spans(2, Duration::from_secs(10)).await?;
    ensure!(spans.iter().all(|s| s.service_name == "solo"), "{spans:#?}");
    ensure!(spans.iter().any(|s| s.kind == 2) && spans.iter().any(|s| s.kind == 3));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exe_selector_picks_up_a_process_started_later() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    let receiver = OtlpReceiver::start_grpc().await?;
    let agent = idle_agent(&receiver)?;
    // A name of our own for the interpreter (process names hold 15 bytes).
    let dir = TempDir::new("exe")?;
    let name = format!("tre2e{}", std::process::id() % 100_000);
    let exe = dir.path().join(&name);
    std::os::unix::fs::symlink(which_python()?, &exe)?;

    let out = agent.cli_ok(&["enable", "--exe", &name, "--service-name", "late"])?;
    ensure!(out.contains("no running process matches"), "{out}");
    let mut child = Command::new(&exe)
        .args([&services_script(), "backend"])
        .stdout(Stdio::piped())
        .spawn()?;
    let port = port_from(child.stdout.take().unwrap())?;
    let child = Proc::adopt(child);
    ensure!(curl(&format!("http://127.0.0.1:{port}/late/1"), &[])? == 200);
    let spans = receiver.wait_for_spans(1, Duration::from_secs(15)).await?;
    ensure!(
        spans[0].service_name == "late" && spans[0].pid() == child.pid() as i64,
        "{:#?}",
        spans[0]
    );
    let json: serde_json::Value = serde_json::from_str(&agent.cli_ok(&["status", "--json"])?)?;
    ensure!(json["selectors"][0]["processes"] == 1, "{json}");
    ensure!(
        json["processes"][0]["selector"] == format!("exe {name}"),
        "{json}"
    );
    Ok(())
}

fn which_python() -> Result<std::path::PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, os; print(os.path.realpath(sys.executable))",
        ])
        .output()?;
    Ok(String::from_utf8(out.stdout)?.trim().into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_selector_picks_up_the_process_that_starts_listening() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    let receiver = OtlpReceiver::start_http().await?;
    let agent = idle_agent(&receiver)?;
    let port = free_port()?;
    let out = agent.cli_ok(&["enable", "--port", &port.to_string()])?;
    ensure!(out.contains("stays enabled"), "{out}");
    let service = Service::start(&["backend", "--port", &port.to_string()])?;
    // The agent hears of the listen() and enables the process; give it a moment to settle.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let json: serde_json::Value = serde_json::from_str(&agent.cli_ok(&["status", "--json"])?)?;
        if json["processes"].as_array().is_some_and(|p| !p.is_empty()) {
            ensure!(json["processes"][0]["pid"] == service.proc.pid(), "{json}");
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "not picked up: {json}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(curl(&service.url("/port/1"), &[])? == 200);
    let spans = receiver.wait_for_spans(1, Duration::from_secs(15)).await?;
    ensure!(
        spans[0].pid() == service.proc.pid() as i64,
        "{:#?}",
        spans[0]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_of_a_traced_process_is_traced() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    let receiver = OtlpReceiver::start_grpc().await?;
    let agent = idle_agent(&receiver)?;
    // A shell that starts the server as its child once told to (`; true` keeps sh from
    // exec'ing python in its own place).
    let mut parent = Command::new("sh")
        .args([
            "-c",
            &format!("read go; python3 {} backend; true", services_script()),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let sh = parent.id();
    agent.cli_ok(&[
        "enable",
        "--pid",
        &sh.to_string(),
        "--service-name",
        "family",
    ])?;
    parent.stdin.take().unwrap().write_all(b"go\n")?;
    let port = port_from(parent.stdout.take().unwrap())?;
    // Killing the group takes the server (the shell's child) down with the shell.
    let parent = Proc::adopt_group(parent);
    ensure!(curl(&format!("http://127.0.0.1:{port}/child/1"), &[])? == 200);
    let spans = receiver.wait_for_spans(1, Duration::from_secs(15)).await?;
    ensure!(spans[0].service_name == "family", "{:#?}", spans[0]);
    ensure!(
        spans[0].pid() != sh as i64,
        "the child served it, not the shell"
    );
    let status = agent.cli_ok(&["status"])?;
    ensure!(status.contains(&format!("child of pid {sh}")), "{status}");
    drop(parent);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_errors_are_one_clear_line() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    let receiver = OtlpReceiver::start_grpc().await?;
    let agent = idle_agent(&receiver)?;
    let one_line = |out: std::process::Output, expected: &str| -> Result<()> {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        ensure!(!out.status.success(), "must fail: {stderr}");
        ensure!(
            stderr.lines().count() == 1 && stderr.contains(expected),
            "{expected:?} in: {stderr}"
        );
        Ok(())
    };
    one_line(
        agent.cli(&["enable", "--pid", "99999999"])?,
        "error: pid 99999999 not found: check it with `ps -p 99999999`",
    )?;
    one_line(
        agent.cli(&["disable", "--exe", "never-enabled"])?,
        "error: nothing is enabled for exe never-enabled",
    )?;
    one_line(
        agent.cli(&["enable", "--cgroup", "/no/such/cgroup"])?,
        "error: cgroup /no/such/cgroup not found",
    )?;
    // Non-root callers: the CLI refuses, and the socket itself does not let them in.
    let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    let out = Command::new("setpriv")
        .args(nobody)
        .arg(agent_binary()?)
        .args(["status", "--control-socket"])
        .arg(&agent.socket)
        .output()?;
    one_line(out, "error: tracer status must run as root")?;
    // curl exits 7 when it cannot connect: as nobody it cannot, as root it can.
    let connect = |prefix: &[&str]| -> Result<Option<i32>> {
        let mut cmd = Command::new(prefix.first().copied().unwrap_or("curl"));
        if !prefix.is_empty() {
            cmd.args(&prefix[1..]).arg("curl");
        }
        let socket = agent.socket.display().to_string();
        Ok(cmd
            .args([
                "-s",
                "--max-time",
                "5",
                "--unix-socket",
                &socket,
                "http://agent/",
            ])
            .status()?
            .code())
    };
    let mut as_nobody = vec!["setpriv"];
    as_nobody.extend(nobody);
    ensure!(connect(&as_nobody)? == Some(7), "nobody must not connect");
    ensure!(connect(&[])? != Some(7), "root connects");
    // No agent behind a socket path.
    let out = Command::new(agent_binary()?)
        .args(["status", "--control-socket", "/nonexistent/tracer.sock"])
        .output()?;
    one_line(out, "error: no tracer agent is running")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_per_socket_and_stale_sockets_are_replaced() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    let receiver = OtlpReceiver::start_grpc().await?;
    let agent = idle_agent(&receiver)?;
    let second = Command::new(agent_binary()?)
        .arg("run")
        .arg("--control-socket")
        .arg(&agent.socket)
        .output()?;
    let stderr = String::from_utf8_lossy(&second.stderr);
    ensure!(
        !second.status.success() && stderr.contains("another tracer agent is running"),
        "{stderr}"
    );

    // A socket file left by a dead agent does not stop a new one.
    let dir = TempDir::new("stale")?;
    let stale = dir.path().join("tracer.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale)?);
    ensure!(stale.exists());
    let args = vec![
        "run".to_string(),
        "--control-socket".into(),
        stale.display().to_string(),
    ];
    let mut fresh = Agent::start(&args, &[])?;
    ensure!(fresh.cli_ok(&["status"])?.contains("no process is traced"));
    ensure!(fresh.stop()?.success());
    ensure!(!stale.exists(), "the agent removes its socket on exit");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_holds_selectors_and_export_settings() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    let receiver = OtlpReceiver::start_grpc().await?;
    let backend = Service::start(&["backend"])?;
    let dir = TempDir::new("config")?;
    let config = dir.path().join("tracer.yaml");
    std::fs::write(
        &config,
        format!(
            "export:\n  otlp_endpoint: {}\n  otlp_protocol: grpc\nselect:\n  - pid: {}\n    service_name: from-config\n",
            receiver.endpoint(),
            backend.proc.pid()
        ),
    )?;
    let args = vec![
        "run".to_string(),
        "--config".into(),
        config.display().to_string(),
    ];
    let _agent = Agent::start(&args, &[])?;
    ensure!(curl(&backend.url("/configured"), &[])? == 200);
    let spans = receiver.wait_for_spans(1, Duration::from_secs(15)).await?;
    ensure!(spans[0].service_name == "from-config", "{:#?}", spans[0]);

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[export]\notlp_endpoint = \"http://x\"\nprotocol = \"grpc\"\n",
    )?;
    let out = Command::new(agent_binary()?)
        .args(["run", "--config"])
        .arg(&bad)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && stderr.lines().count() == 1
            && stderr.contains("bad.toml, line 3")
            && stderr.contains("unknown field `protocol`"),
        "{stderr}"
    );
    Ok(())
}
