//! The agent's end of the control socket: root-only, one request per connection, answered by
//! the agent's main loop (which owns all tracing state).

use std::{
    io::ErrorKind,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream, unix::OwnedReadHalf},
    sync::{mpsc, oneshot},
};

use crate::control::{Request, Response};

/// A request and where its answer goes.
pub type Call = (Request, oneshot::Sender<Response>);

/// Longest request line read (requests are a few hundred bytes).
const MAX_REQUEST: u64 = 64 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound socket; its file is removed when this is dropped.
pub struct ControlSocket {
    path: PathBuf,
    listener: Option<std::os::unix::net::UnixListener>,
}

impl ControlSocket {
    /// Binds `path`, mode 0600. A stale socket (no agent behind it) is replaced; a live one
    /// means another agent runs, and this one refuses to start.
    pub fn bind(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    bail!(
                        "another tracer agent is running (it answers on {}): stop it first, or \
                         give this one another --control-socket",
                        path.display()
                    );
                }
                std::fs::remove_file(path)
                    .with_context(|| format!("removing the stale socket {}", path.display()))?;
            }
            Ok(_) => bail!(
                "{} exists and is not a socket: remove it or choose another --control-socket",
                path.display()
            ),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
        }
        // Created 0600 from the start (umask), so no other user can connect in between.
        // SAFETY: umask has no preconditions; it is restored right after.
        let old = unsafe { libc::umask(0o177) };
        let bound = std::os::unix::net::UnixListener::bind(path);
        unsafe { libc::umask(old) };
        let listener =
            bound.with_context(|| format!("binding the control socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            path: path.to_path_buf(),
            listener: Some(listener),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves requests until the agent stops: each is passed to `calls` and answered.
    pub fn serve(&mut self, calls: mpsc::Sender<Call>) -> Result<()> {
        let listener = UnixListener::from_std(self.listener.take().context("served twice")?)?;
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(answer(stream, calls.clone()));
                    }
                    Err(e) => {
                        tracing::warn!("control socket: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(())
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn answer(stream: UnixStream, calls: mpsc::Sender<Call>) {
    let (reader, mut writer) = stream.into_split();
    let response = match read_request(reader).await {
        Ok(request) => {
            let (reply, answer) = oneshot::channel();
            if calls.send((request, reply)).await.is_err() {
                return; // the agent is stopping
            }
            match answer.await {
                Ok(response) => response,
                Err(_) => return,
            }
        }
        Err(message) => Response::Error { message },
    };
    let mut line = serde_json::to_vec(&response).unwrap_or_default();
    line.push(b'\n');
    let _ = writer.write_all(&line).await;
}

/// The caller must be root (the socket is 0600 already; this also covers a socket file whose
/// mode was changed), and the request one well-formed line.
async fn read_request(stream: OwnedReadHalf) -> Result<Request, String> {
    match stream.as_ref().peer_cred() {
        Ok(cred) if cred.uid() == 0 => {}
        Ok(cred) => {
            return Err(format!(
                "permission denied: uid {} is not root; the control socket is root-only",
                cred.uid()
            ));
        }
        Err(e) => return Err(format!("cannot check the caller's credentials: {e}")),
    }
    let mut line = String::new();
    let mut reader = BufReader::new(stream.take(MAX_REQUEST));
    let read = reader.read_line(&mut line);
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("reading the request: {e}")),
        Err(_) => return Err("no request within 10 s".into()),
    }
    serde_json::from_str(&line).map_err(|e| format!("malformed control request: {e}"))
}
