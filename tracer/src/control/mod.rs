//! The control plane: how the CLI (`tracer enable|disable|status|exec`) talks to a running
//! agent. One request per connection on a root-only Unix socket, as one JSON line each way.

pub mod client;
pub mod protocol;

use std::path::PathBuf;

pub use protocol::{KeyValue, Request, Response, Selector};

/// Where the agent listens unless told otherwise (`--control-socket`, `TRACER_SOCKET`).
pub const DEFAULT_SOCKET: &str = "/run/tracer/tracer.sock";

/// The control socket path: the flag, else `TRACER_SOCKET`, else the default.
pub fn socket_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("TRACER_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}
