//! Randomised properties of the whole userspace data path (connections, parsers, stitching,
//! sampling), fed with capture events as the kernel reports them. Seeded and bounded, so they
//! are deterministic and fast:
//! - `splits`: any split of valid conversations into syscalls, with capture cuts that only
//!   hide bytes the parsers count but never read, gives the same spans;
//! - `bad_input`: bad bytes give no span and no panic, and the process's next connection is
//!   traced exactly.

mod bad_input;
mod splits;

use std::net::SocketAddr;

use bytes::Bytes;
use tracer_common::{Direction, Syscall};

pub(super) use super::testutil::pipeline;
use crate::{
    capture::{CaptureEvent, DataRecord, OpenRecord, SocketId},
    span::{Span, Value},
};

use crate::test_rng::Rng;

fn open(
    socket: SocketId,
    accepted: bool,
    local: &str,
    peer: &str,
    ts_ns: u64,
) -> CaptureEvent<'static> {
    let addr = |s: &str| s.parse::<SocketAddr>().ok();
    CaptureEvent::Open(OpenRecord {
        socket,
        tid: 1,
        ts_ns,
        peer: addr(peer),
        local: addr(local),
        listen_fd: None,
        accepted,
    })
}

/// One syscall of thread `tid` that moved `total` bytes, of which `captured` (and `runs`, past
/// the captured prefix) reached the agent.
fn io(
    socket: SocketId,
    tid: u32,
    (enter_ns, exit_ns): (u64, u64),
    direction: Direction,
    captured: &[u8],
    total: u64,
    runs: Vec<(u64, Bytes)>,
) -> CaptureEvent<'static> {
    CaptureEvent::Data(DataRecord {
        socket,
        tid,
        enter_ns,
        exit_ns,
        direction,
        syscall: match direction {
            Direction::Ingress => Syscall::Recvfrom,
            Direction::Egress => Syscall::Sendto,
        },
        total_len: total,
        payload: captured.to_vec().into(),
        runs,
        flags: 0,
        ids: None,
    })
}

/// A span reduced to what must not change between two runs of the same traffic: everything
/// but its random ids, and its parent named by what the parent is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Shape {
    start: u64,
    end: u64,
    pid: u32,
    kind: String,
    name: String,
    error: Option<String>,
    attributes: Vec<String>,
    /// `pid kind name` of the parent span, or `remote <id>` for a caller's, or "".
    parent: String,
    /// In the same trace as its parent (or the caller's trace).
    parent_trace: bool,
}

/// The spans as shapes, in a stable order.
fn shapes(spans: &[Span]) -> Vec<Shape> {
    let mut out: Vec<Shape> = spans
        .iter()
        .map(|s| {
            let parent = s
                .parent_span_id
                .map(|id| match spans.iter().find(|p| p.span_id == id) {
                    Some(p) => (
                        format!("{} {:?} {}", p.process.pid, p.kind, p.name),
                        p.trace_id == s.trace_id,
                    ),
                    None => (format!("remote {}", hex(&id)), true),
                });
            let (parent, parent_trace) = parent.unwrap_or_default();
            Shape {
                start: s.start_mono_ns,
                end: s.end_mono_ns,
                pid: s.process.pid,
                kind: format!("{:?}", s.kind),
                name: s.name.to_string(),
                error: s.error.clone(),
                attributes: s
                    .attributes
                    .iter()
                    .map(|a| match &a.value {
                        Value::Str(v) => format!("{}={v}", a.key),
                        Value::Int(v) => format!("{}={v}", a.key),
                        Value::Bool(v) => format!("{}={v}", a.key),
                    })
                    .collect(),
                parent,
                parent_trace,
            }
        })
        .collect();
    out.sort();
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
