//! `tracer exec -- CMD ARGS...`: runs CMD traced from its first instruction.
//!
//! No race: between fork and exec, the child itself asks the agent to trace its pid and waits
//! for the answer; only then does it exec. (This process is single-threaded here, so the child
//! may talk to the socket before exec.) With no agent running, one is started for this command
//! alone and stopped (flushing its spans) when the command ends. The command's exit status,
//! or the signal that killed it, becomes this process's; signals sent to this process are
//! passed on to the command.

use std::{
    os::unix::process::{CommandExt, ExitStatusExt},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::atomic::{AtomicI32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{ExecArgs, require_root};
use crate::control::{self, Request, Response, Selector, client};

/// The command's pid, for the signal handler.
static CHILD: AtomicI32 = AtomicI32::new(0);

const AGENT_START_TIMEOUT: Duration = Duration::from_secs(60);
const AGENT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub fn exec(args: ExecArgs) -> Result<ExitCode> {
    require_root("exec")?;
    let mut socket = control::socket_path(args.socket.control_socket.clone());
    let mut private_agent = None;
    if !client::agent_running(&socket) {
        let (agent, path) = start_private_agent(&args)?;
        private_agent = Some(agent);
        socket = path;
    }
    let result = run_traced(&args, &socket);
    if let Some(agent) = private_agent {
        stop(agent);
        let _ = std::fs::remove_dir_all(socket.parent().unwrap_or(Path::new("/nonexistent")));
    }
    result
}

fn run_traced(args: &ExecArgs, socket: &Path) -> Result<ExitCode> {
    let (program, rest) = args.command.split_first().context("no command given")?;
    let mut command = Command::new(program);
    command.args(rest);
    let request_socket = socket.to_path_buf();
    let service_name = args.service_name.clone();
    // SAFETY: runs in the child between fork and exec. This process has a single thread
    // (no runtime, no helper threads), so allocating and doing blocking I/O there is sound.
    unsafe {
        command.pre_exec(move || {
            let request = Request::Enable {
                selector: Selector::Pid(std::process::id()),
                service_name: service_name.clone(),
            };
            match client::send(&request_socket, &request) {
                Ok(Response::Ok { .. }) => Ok(()),
                Ok(Response::Error { message }) => Err(std::io::Error::other(message)),
                Ok(Response::Status(_)) => Err(std::io::Error::other("unexpected answer")),
                Err(e) => Err(std::io::Error::other(format!("{e:#}"))),
            }
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {program} traced"))?;
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    forward_signals();
    let status = child.wait().context("waiting for the command")?;
    CHILD.store(0, Ordering::SeqCst);
    if let Some(signal) = status.signal() {
        // Die of the same signal, so our parent sees what the command did.
        // SAFETY: plain signal calls on this process.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
        return Ok(ExitCode::from(128u8.wrapping_add(signal as u8)));
    }
    Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
}

extern "C" fn pass_on(signal: libc::c_int) {
    let child = CHILD.load(Ordering::SeqCst);
    if child > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(child, signal) };
    }
}

fn forward_signals() {
    // Keyboard signals reach the command directly when it runs in the terminal's foreground
    // process group with us; passing them on too would deliver them twice.
    // SAFETY: plain libc queries and signal dispositions on this process.
    let foreground = unsafe { libc::isatty(0) == 1 && libc::tcgetpgrp(0) == libc::getpgrp() };
    for signal in [
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
    ] {
        let keyboard = matches!(signal, libc::SIGINT | libc::SIGQUIT);
        let handler = if keyboard && foreground {
            libc::SIG_IGN
        } else {
            pass_on as *const () as libc::sighandler_t
        };
        unsafe { libc::signal(signal, handler) };
    }
}

/// An agent for this command alone, with its own control socket in a private directory.
fn start_private_agent(args: &ExecArgs) -> Result<(Child, PathBuf)> {
    let dir = std::env::temp_dir().join(format!("tracer-exec-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("tracer.sock");
    let mut agent = Command::new(std::env::current_exe()?);
    agent.arg("run").arg("--control-socket").arg(&socket);
    if let Some(endpoint) = &args.export.otlp_endpoint {
        agent.args(["--otlp-endpoint", endpoint]);
    }
    if let Some(protocol) = &args.export.otlp_protocol {
        agent.args(["--otlp-protocol", protocol]);
    }
    if let Some(output) = &args.export.output {
        agent.arg("--output").arg(output);
    }
    if std::env::var_os("RUST_LOG").is_none() {
        agent.env("RUST_LOG", "warn");
    }
    let mut child = agent
        .stdin(Stdio::null())
        .spawn()
        .context("starting an agent for this command")?;
    let deadline = Instant::now() + AGENT_START_TIMEOUT;
    while !client::agent_running(&socket) {
        if let Some(status) = child.try_wait()? {
            bail!("the agent started for this command exited ({status})");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the agent started for this command did not come up within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, socket))
}

/// SIGTERM, so the agent flushes its spans, then wait for it.
fn stop(mut agent: Child) {
    // SAFETY: kill on our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + AGENT_STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = agent.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = agent.kill();
    let _ = agent.wait();
}
