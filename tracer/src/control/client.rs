//! The CLI's side: one synchronous request to the agent. Synchronous on purpose: `tracer exec`
//! sends its request from the child between fork and exec, where no runtime may run.

use std::{
    io::{BufRead, BufReader, ErrorKind, Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::protocol::{Request, Response};

/// Longest time to wait for the agent's answer (enabling reads /proc; it is quick).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest answer accepted (a status report with many processes fits easily).
pub const MAX_LINE: u64 = 16 << 20;

/// Sends `request` to the agent behind `socket` and returns its answer.
pub fn send(socket: &Path, request: &Request) -> Result<Response> {
    let stream = connect(socket)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let mut writer = &stream;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    writer
        .write_all(&line)
        .with_context(|| format!("sending to the agent at {}", socket.display()))?;
    let mut answer = String::new();
    BufReader::new((&stream).take(MAX_LINE))
        .read_line(&mut answer)
        .with_context(|| format!("waiting for the agent at {}", socket.display()))?;
    if answer.is_empty() {
        bail!(
            "the agent at {} closed the connection without answering",
            socket.display()
        );
    }
    serde_json::from_str(&answer).context("the agent's answer is not a control response")
}

/// Whether an agent answers on `socket`.
pub fn agent_running(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

fn connect(socket: &Path) -> Result<UnixStream> {
    UnixStream::connect(socket).map_err(|e| match e.kind() {
        ErrorKind::NotFound | ErrorKind::ConnectionRefused => anyhow::anyhow!(
            "no tracer agent is running (nothing answers on {}): start one with `tracer run`, \
             or point --control-socket / TRACER_SOCKET at it",
            socket.display()
        ),
        ErrorKind::PermissionDenied => anyhow::anyhow!(
            "permission denied on {}: the control socket is root-only; use sudo",
            socket.display()
        ),
        _ => anyhow::anyhow!("connecting to the agent at {}: {e}", socket.display()),
    })
}
