//! `cargo xtask demo`: two bundled services (a frontend that calls a backend twice), traced
//! by the freshly built agent, a few requests, and the traces printed as waterfalls.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::cmd;

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a fixture service and reads the port it chose.
fn start_service(args: &[&str]) -> Result<(Service, u16)> {
    let script = cmd::root().join("tests/fixtures/http_services.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting python3 (is it installed?)")?;
    let stdout = child.stdout.take().context("service stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let port = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("service {args:?} did not start: {line:?}"))?;
    Ok((Service(child), port))
}

pub fn run() -> Result<()> {
    if !cmd::is_root() {
        bail!("the demo loads eBPF programs: run `sudo -E cargo xtask demo`");
    }
    let (backend, backend_port) = start_service(&["backend"])?;
    let backend_url = format!("http://127.0.0.1:{backend_port}");
    let (frontend, frontend_port) =
        start_service(&["frontend", "--backend", &backend_url, "--keep-alive"])?;

    let agent_bin = cmd::root().join("target/release/tracer");
    let (frontend_pid, backend_pid) = (frontend.0.id().to_string(), backend.0.id().to_string());
    eprintln!(
        "xtask: tracing the demo frontend (pid {frontend_pid}) and backend (pid {backend_pid})"
    );
    // A control socket of its own: the demo must not collide with an agent already running.
    let socket = std::env::temp_dir().join(format!("tracer-demo-{}.sock", std::process::id()));
    let mut agent = Command::new(&agent_bin)
        .arg("run")
        .arg("--control-socket")
        .arg(&socket)
        .args(["--pid", &format!("{frontend_pid}=frontend")])
        .args(["--pid", &format!("{backend_pid}=backend")])
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", agent_bin.display()))?;
    wait_until_tracing(&mut agent)?;

    let base = format!("http://127.0.0.1:{frontend_port}");
    let requests: [(&str, &[&str]); 3] = [
        ("/checkout/42", &[]),
        (
            "/checkout/7",
            &[
                "-H",
                "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ],
        ),
        ("/fail", &[]),
    ];
    for (path, extra) in requests {
        let url = format!("{base}{path}");
        eprintln!("xtask: curl {} {url}", extra.join(" "));
        let mut args = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}\n"];
        args.extend_from_slice(extra);
        args.push(&url);
        cmd::run("curl", &args)?;
    }
    // Spans are decided half a second after they start; the waterfall prints a trace after a
    // second of quiet. Then stop the agent: it flushes whatever is left.
    std::thread::sleep(Duration::from_millis(2500));
    cmd::run("kill", &["-INT", &agent.id().to_string()])?;
    let status = agent.wait()?;
    drop(frontend);
    drop(backend);
    if !status.success() {
        bail!("the agent exited with {status}");
    }
    eprintln!(
        "\nxtask: above, one waterfall per trace: each line is a span (service, span name, \
         duration) with a bar on the trace's time axis; SERVER spans of the frontend contain \
         the CLIENT calls it made, which contain the backend's SERVER spans. `✗` marks errors."
    );
    Ok(())
}

/// Waits for the agent's "tracing N process(es)" line, passing its log through.
fn wait_until_tracing(agent: &mut Child) -> Result<()> {
    let stderr = agent.stderr.take().context("agent stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if line.contains("tracing ") {
                let _ = tx.send(());
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if rx.recv_timeout(Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(status) = agent.try_wait()? {
            bail!("the agent exited before tracing started ({status})");
        }
    }
    bail!("the agent did not start tracing within 60 s")
}
