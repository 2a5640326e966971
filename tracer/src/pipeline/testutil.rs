//! Capture events and pipelines for the data-path tests (`pipeline/tests.rs`, `props/`, and
//! HTTP/2's pipeline tests).

use std::{net::SocketAddr, sync::Arc};

use tracer_common::{Direction, Syscall};

use super::Pipeline;
use crate::{
    capture::{CaptureEvent, DataRecord, OpenRecord, SocketId},
    process::ProcessMeta,
    sampling::Sampler,
    stitch::StitchConfig,
};

/// Process `pid`, serving as `svc<pid>`.
pub fn process(pid: u32) -> Arc<ProcessMeta> {
    crate::export::testutil::process(pid, &format!("svc{pid}"))
}

/// A pipeline with the default configuration tracing `pids`.
pub fn pipeline(pids: &[u32]) -> Pipeline {
    let mut p = Pipeline::new(StitchConfig::default(), Sampler::default());
    for pid in pids {
        p.add_process(process(*pid));
    }
    p
}

pub fn sock(tgid: u32, fd: i32, conn_gen: u64) -> SocketId {
    SocketId { tgid, fd, conn_gen }
}

pub fn addr(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

/// `socket` accepted (or connected) at `local` from (to) `peer`.
pub fn open(socket: SocketId, accepted: bool, local: &str, peer: &str) -> CaptureEvent<'static> {
    CaptureEvent::Open(OpenRecord {
        socket,
        tid: 1,
        ts_ns: 1,
        peer: addr(peer),
        local: addr(local),
        listen_fd: None,
        accepted,
    })
}

/// `bytes` moved by one syscall of thread `tid` between `t` and `t + 5` (ns).
pub fn data(
    socket: SocketId,
    tid: u32,
    t: u64,
    dir: Direction,
    bytes: &[u8],
) -> CaptureEvent<'static> {
    CaptureEvent::Data(DataRecord {
        socket,
        tid,
        enter_ns: t,
        exit_ns: t + 5,
        direction: dir,
        syscall: match dir {
            Direction::Ingress => Syscall::Recvfrom,
            Direction::Egress => Syscall::Sendto,
        },
        total_len: bytes.len() as u64,
        payload: bytes.to_vec().into(),
        runs: Vec::new(),
        flags: 0,
        ids: None,
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
