//! Which fds of a traced process are sockets: learnt from connect and accept, forgotten at close
//! and process exit. Each learnt socket gets a generation (the kernel time it appeared) so the
//! agent never mixes two connections that reused one fd number.

use aya_ebpf::{
    helpers::generated::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use core::ffi::c_void;
use tracer_common::{
    ConnEvent, Counter, EventHeader, EventKind, SOCKADDR_BYTES, SockInfo, SockKey,
};

use crate::{
    data::{arg, read_user_u32, ret},
    maps::{ENABLED_PROCESSES, EVENTS, IN_FLIGHT, InFlight, Layout, SOCKETS, count, is_enabled},
};

const EINPROGRESS: i64 = 115;

/// connect(fd, addr, addrlen) and accept*(fd, addr, addrlen_ptr): remember the arguments.
#[inline(always)]
pub fn enter(ctx: &TracePointContext, layout: Layout) {
    let id = unsafe { bpf_get_current_pid_tgid() };
    if !is_enabled((id >> 32) as u32) {
        return;
    }
    let call = InFlight {
        ts_enter: unsafe { bpf_ktime_get_ns() },
        conn_gen: 0,
        ptr: arg(ctx, 1),
        len: arg(ctx, 2),
        fd: arg(ctx, 0) as i32,
        syscall: 0,
        layout,
        _pad: [0; 2],
    };
    if IN_FLIGHT.insert(id, call, 0).is_err() {
        count(Counter::ArgsMapFull);
    }
}

/// Exit of connect/accept: track the socket and tell the agent.
#[inline(always)]
pub fn exit(ctx: &TracePointContext) {
    let id = unsafe { bpf_get_current_pid_tgid() };
    let Some(call) = IN_FLIGHT.get_ptr(id) else {
        return;
    };
    let call = unsafe { *call };
    let _ = IN_FLIGHT.remove(id);
    let rc = ret(ctx);
    let (kind, fd, listen_fd, addr_len) = match call.layout {
        Layout::Connect if rc == 0 || rc == -EINPROGRESS => {
            (EventKind::Connect, call.fd, -1, call.len)
        }
        Layout::Accept if rc >= 0 => {
            // The kernel wrote the peer address length back through the pointer.
            let len = if call.len != 0 {
                read_user_u32(call.len) as u64
            } else {
                0
            };
            (EventKind::Accept, rc as i32, call.fd, len)
        }
        _ => return,
    };
    let tgid = (id >> 32) as u32;
    let now = unsafe { bpf_ktime_get_ns() };
    let info = SockInfo {
        conn_gen: now,
        flags: 0,
        _pad: 0,
    };
    if SOCKETS.insert(SockKey { tgid, fd }, info, 0).is_err() {
        count(Counter::SocketMapFull);
        warn!(
            ctx,
            "SOCKETS map full: pid {} fd {} is not traced", tgid, fd
        );
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<ConnEvent>(0) else {
        count(Counter::RingFull);
        return;
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).header = EventHeader {
            kind: kind as u32,
            tgid,
            tid: id as u32,
            fd,
            ts_ns: now,
            conn_gen: now,
        };
        (*ev).listen_fd = listen_fd;
        (*ev).result = rc.min(0) as i32;
        (*ev).peer_addr = [0; SOCKADDR_BYTES];
        let len = if addr_len > SOCKADDR_BYTES as u64 {
            SOCKADDR_BYTES as u64
        } else {
            addr_len
        };
        let mut copied = 0;
        if call.ptr != 0
            && len > 0
            && bpf_probe_read_user(
                (*ev).peer_addr.as_mut_ptr() as *mut c_void,
                len as u32,
                call.ptr as *const c_void,
            ) == 0
        {
            copied = len as u32;
        }
        (*ev).peer_addr_len = copied;
    }
    entry.submit(0);
    count(Counter::ControlEvents);
}

/// close(fd): at enter, before the fd number can be reused.
#[inline(always)]
pub fn close(ctx: &TracePointContext) {
    let id = unsafe { bpf_get_current_pid_tgid() };
    let tgid = (id >> 32) as u32;
    if !is_enabled(tgid) {
        return;
    }
    let fd = arg(ctx, 0) as i32;
    let key = SockKey { tgid, fd };
    let Some(info) = SOCKETS.get_ptr(key) else {
        return;
    };
    let conn_gen = unsafe { (*info).conn_gen };
    let _ = SOCKETS.remove(key);
    emit_header(EventKind::Close, id, fd, conn_gen);
}

/// sched_process_exit: runs for every exiting thread; the leader's exit ends the process.
#[inline(always)]
pub fn process_exit() {
    let id = unsafe { bpf_get_current_pid_tgid() };
    let tgid = (id >> 32) as u32;
    if tgid != id as u32 || !is_enabled(tgid) {
        return;
    }
    // Stop capture now; the agent frees this process's SOCKETS entries when it reads the event.
    let _ = ENABLED_PROCESSES.remove(tgid);
    emit_header(EventKind::ProcessExit, id, -1, 0);
}

#[inline(always)]
fn emit_header(kind: EventKind, id: u64, fd: i32, conn_gen: u64) {
    let Some(mut entry) = EVENTS.reserve::<EventHeader>(0) else {
        count(Counter::RingFull);
        return;
    };
    entry.write(EventHeader {
        kind: kind as u32,
        tgid: (id >> 32) as u32,
        tid: id as u32,
        fd,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        conn_gen,
    });
    entry.submit(0);
    count(Counter::ControlEvents);
}
