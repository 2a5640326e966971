//! Real processes for end-to-end tests: the agent binary, the bundled Python services, curl.
//! Every child is killed when its handle drops; every wait is bounded.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// Workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// The agent under test: `TRACER_BIN`, set by `cargo xtask test`.
pub fn agent_binary() -> Result<PathBuf> {
    let path = std::env::var_os("TRACER_BIN")
        .map(PathBuf::from)
        .context("TRACER_BIN is not set: run the end-to-end tests with `cargo xtask test`")?;
    if !path.is_file() {
        bail!("TRACER_BIN={} does not exist", path.display());
    }
    Ok(path)
}

/// A child process killed (and reaped) on drop.
pub struct Proc {
    child: Child,
    /// Kill its whole process group (it leads one), so its own children go too.
    group: bool,
}

impl Proc {
    /// Takes charge of a child started elsewhere (killed on drop like the others).
    pub fn adopt(child: Child) -> Self {
        Self {
            child,
            group: false,
        }
    }

    /// A child started with `process_group(0)`: on drop its whole group is killed.
    pub fn adopt_group(child: Child) -> Self {
        Self { child, group: true }
    }

    pub fn spawn(cmd: &mut Command) -> Result<Self> {
        let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        Ok(Self::adopt(child))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. libc's SIGTERM = 15) and waits up to `timeout` for the exit.
    pub fn stop(&mut self, signal: i32, timeout: Duration) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args([format!("-{signal}"), pid])
            .status()
            .context("running kill")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "process {} did not exit within {timeout:?}",
                    self.child.id()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.group {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bundled Python service (tests/fixtures/http_services.py) and the port it listens on.
pub struct Service {
    pub proc: Proc,
    pub port: u16,
}

impl Service {
    /// tests/fixtures/http_services.py with `args`.
    pub fn start(args: &[&str]) -> Result<Self> {
        Self::start_script(&root().join("tests/fixtures/http_services.py"), args)
    }

    /// A Python script that prints "listening on PORT" once it serves.
    pub fn start_script(script: &std::path::Path, args: &[&str]) -> Result<Self> {
        Self::start_command(Command::new("python3").arg(script).args(args))
    }

    /// A command that prints "listening on PORT" once it serves (e.g. a service started
    /// through setpriv as another user).
    pub fn start_command(cmd: &mut Command) -> Result<Self> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the service")?;
        let stdout = child.stdout.take().context("service stdout")?;
        let proc = Proc::adopt(child);
        let port = port_from(stdout)?;
        Ok(Self { proc, port })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// A directory of its own under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tracer-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The agent, with its stderr collected (and echoed) for assertions and diagnosis.
pub struct Agent {
    pub proc: Proc,
    log: Arc<Mutex<Vec<String>>>,
    /// Its control socket (in a directory of its own: tests run agents side by side).
    pub socket: PathBuf,
    _dir: TempDir,
}

impl Agent {
    /// Starts `tracer <args>` and waits until it reports that tracing has begun. `run` gets
    /// a control socket of its own unless `args` name one.
    pub fn start(args: &[String], envs: &[(&str, &str)]) -> Result<Self> {
        Self::start_wrapped(&[], args, envs)
    }

    /// Like `start`, with the agent run through `wrapper` (a program and its arguments, e.g.
    /// setpriv restricting its capabilities).
    pub fn start_wrapped(wrapper: &[&str], args: &[String], envs: &[(&str, &str)]) -> Result<Self> {
        let dir = TempDir::new("agent")?;
        let mut args = args.to_vec();
        let socket = match args.iter().position(|a| a == "--control-socket") {
            Some(i) => PathBuf::from(&args[i + 1]),
            None => {
                let socket = dir.path().join("tracer.sock");
                args.extend(["--control-socket".into(), socket.display().to_string()]);
                socket
            }
        };
        let mut cmd = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut cmd = Command::new(program);
                cmd.args(wrapper_args).arg(agent_binary()?);
                cmd
            }
            None => Command::new(agent_binary()?),
        };
        cmd.args(&args)
            .stderr(Stdio::piped())
            .stdout(Stdio::piped());
        // Only the variables a test sets reach the agent's OTLP and Kubernetes configuration
        // (a developer's KUBECONFIG would turn the Kubernetes layer on).
        for (key, _) in std::env::vars() {
            if key.starts_with("OTEL_")
                || ["KUBECONFIG", "KUBERNETES_SERVICE_HOST", "K8S_NODE_NAME"]
                    .contains(&key.as_str())
            {
                cmd.env_remove(key);
            }
        }
        cmd.envs(envs.iter().copied());
        let mut child = cmd.spawn().context("starting the agent")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        for stream in [
            Box::new(child.stderr.take().context("agent stderr")?) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().context("agent stdout")?),
        ] {
            let log = log.clone();
            let ready_tx = ready_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("[agent] {line}");
                    if line.contains("ready: tracing ") {
                        let _ = ready_tx.send(());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let mut agent = Self {
            proc: Proc::adopt(child),
            log,
            socket,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                return Ok(agent);
            }
            if let Some(status) = agent.proc.child.try_wait()? {
                bail!(
                    "agent exited before tracing ({status}): {}",
                    agent.log().join("\n")
                );
            }
            if Instant::now() > deadline {
                bail!("agent not tracing after 60 s: {}", agent.log().join("\n"));
            }
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Runs `tracer <args> --control-socket <this agent's>` and returns its output.
    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        Ok(Command::new(agent_binary()?)
            .args(args)
            .arg("--control-socket")
            .arg(&self.socket)
            .output()?)
    }

    /// The agent's self-metrics (`tracer status --metrics`), OpenMetrics text.
    pub fn metrics(&self) -> Result<String> {
        self.cli_ok(&["status", "--metrics"])
    }

    /// Like `cli`, but the command must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.cli(args)?;
        if !out.status.success() {
            bail!(
                "tracer {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// SIGTERM, and the exit status once it has flushed and exited.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        self.proc.stop(15, Duration::from_secs(20))
    }
}

/// Reads the "listening on PORT" line a service prints first (within 20 s: grpcio takes
/// seconds to import on a loaded machine).
pub fn port_from(stdout: impl std::io::Read + Send + 'static) -> Result<u16> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .context("the service did not report its port within 20 s")?;
    line.trim()
        .strip_prefix("listening on ")
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("unexpected service output {line:?}"))
}

/// A port nothing listens on right now (the OS picked it; it is free again once returned).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on port {port} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `tracer run` arguments that trace `targets` (`PID[=SERVICE]`) and export to `receiver`.
pub fn run_args(targets: &[String], receiver: &crate::OtlpReceiver) -> Vec<String> {
    let mut args = vec!["run".to_string()];
    for target in targets {
        args.extend(["--pid".to_string(), target.clone()]);
    }
    let protocol = match receiver.protocol() {
        crate::Protocol::Grpc => "grpc",
        crate::Protocol::Http => "http/protobuf",
    };
    args.extend([
        "--otlp-endpoint".to_string(),
        receiver.endpoint(),
        "--otlp-protocol".to_string(),
        protocol.to_string(),
    ]);
    args
}

/// `curl -s` with extra arguments; returns the HTTP status code.
pub fn curl(url: &str, extra: &[&str]) -> Result<u16> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(extra)
        .arg(url)
        .output()
        .context("running curl")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .with_context(|| {
            format!(
                "curl {url} gave no status: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// What every end-to-end test needs first: root, since they load eBPF programs, and a TLS
/// crypto provider for the HTTP clients they build. reqwest panics without a provider, and
/// installing it in one test of a file works only when that test happens to run first.
pub fn e2e_preconditions() -> Result<()> {
    anyhow::ensure!(
        is_root(),
        "end-to-end tests load eBPF programs: run `cargo xtask test` as root"
    );
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    Ok(())
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
