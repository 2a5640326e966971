//! Which fds of a traced process are sockets: learnt from connect and accept, forgotten at close
//! and process exit. Each learnt socket gets a generation (the kernel time it appeared) so the
//! agent never mixes two connections that reused one fd number.

use aya_ebpf::{
    helpers::generated::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    programs::{SockOpsContext, TracePointContext},
};
use aya_log_ebpf::warn;
use core::ffi::c_void;
use tracer_common::{
    ConnEvent, Counter, EventHeader, EventKind, SOCK_FLAG_ACCEPTED, SOCK_FLAG_HTTP2,
    SOCKADDR_BYTES, SockInfo, SockKey,
};

use crate::{
    data::{arg, read_user_u32, ret},
    http2::FRAME_WALKS,
    maps::{
        CONNECT_HANDOFF, EVENTS, InFlight, Layout, SOCKETS, count, is_enabled, may_trace,
        start_call, take_call,
    },
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
        id: 0,
        ts_enter: unsafe { bpf_ktime_get_ns() },
        conn_gen: 0,
        ptr: arg(ctx, 1),
        len: arg(ctx, 2),
        fd: arg(ctx, 0) as i32,
        syscall: 0,
        layout,
        lost: 0,
        http2: 0,
        accepted: 0,
        _pad: [0; 7],
    };
    start_call(id, call);
    if layout == Layout::Connect && crate::inject::enabled() {
        crate::inject::note_connect(SockKey {
            tgid: (id >> 32) as u32,
            fd: call.fd,
        });
    }
}

/// Exit of connect/accept: track the socket and tell the agent. A thread can already be
/// blocked in accept when tracing is enabled: its enter was never seen, but the new fd is the
/// return value, so the socket is still tracked (without the peer address, which the agent
/// then reads from /proc).
#[inline(always)]
pub fn exit(ctx: &TracePointContext, layout: Layout) {
    let id = unsafe { bpf_get_current_pid_tgid() };
    let call = match take_call(id) {
        Some(call) => call,
        None if layout == Layout::Accept && is_enabled((id >> 32) as u32) => InFlight {
            id,
            ts_enter: 0,
            conn_gen: 0,
            ptr: 0,
            len: 0,
            fd: -1,
            syscall: 0,
            layout,
            lost: 0,
            http2: 0,
            accepted: 0,
            _pad: [0; 7],
        },
        None => return,
    };
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
        flags: if kind == EventKind::Accept {
            SOCK_FLAG_ACCEPTED
        } else {
            0
        },
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
        (*ev).local_addr = [0; SOCKADDR_BYTES];
        (*ev).local_addr_len = 0;
        if kind == EventKind::Connect
            && copied >= 4
            && let Some(handoff) = CONNECT_HANDOFF.get_ptr(0)
        {
            // Only if the sock_ops program ran inside this very connect: during the syscall,
            // and towards the port the process asked for.
            let peer_port = u16::from_be_bytes([(*ev).peer_addr[2], (*ev).peer_addr[3]]);
            if (*handoff).ts >= call.ts_enter && (*handoff).remote_port == peer_port {
                (*ev).local_addr = (*handoff).local;
                (*ev).local_addr_len = (*handoff).local_len;
            }
        }
    }
    entry.submit(0);
    count(Counter::ControlEvents);
}

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

/// sock_ops TCP_CONNECT_CB: runs inside connect(), once the kernel picked the local port.
/// Leaves the local address for this CPU's connect exit tracepoint (the agent cannot read it
/// from /proc reliably: a short connection is often closed before the agent looks).
#[inline(always)]
pub fn record_connect(ctx: &SockOpsContext) {
    let Some(slot) = CONNECT_HANDOFF.get_ptr_mut(0) else {
        return;
    };
    let family = ctx.family();
    let mut local = [0u8; SOCKADDR_BYTES];
    let port = (ctx.local_port() as u16).to_be_bytes();
    local[0..2].copy_from_slice(&(family as u16).to_ne_bytes());
    local[2..4].copy_from_slice(&port);
    let len = match family {
        AF_INET => {
            local[4..8].copy_from_slice(&ctx.local_ip4().to_ne_bytes());
            16
        }
        AF_INET6 => {
            let ip6 = ctx.local_ip6();
            local[8..12].copy_from_slice(&ip6[0].to_ne_bytes());
            local[12..16].copy_from_slice(&ip6[1].to_ne_bytes());
            local[16..20].copy_from_slice(&ip6[2].to_ne_bytes());
            local[20..24].copy_from_slice(&ip6[3].to_ne_bytes());
            SOCKADDR_BYTES as u32
        }
        _ => return,
    };
    unsafe {
        (*slot).ts = bpf_ktime_get_ns();
        (*slot).local = local;
        (*slot).local_len = len;
        // The kernel hands remote_port over in network order in the upper 16 bits.
        (*slot).remote_port = u16::from_be((ctx.remote_port() >> 16) as u16);
    }
}

/// close(fd): at enter, before the fd number can be reused.
#[inline(always)]
pub fn close(ctx: &TracePointContext) {
    let id = unsafe { bpf_get_current_pid_tgid() };
    let tgid = (id >> 32) as u32;
    // The socket's entry is the gate, as for data syscalls (`data::enter`).
    if !may_trace(tgid) {
        return;
    }
    let fd = arg(ctx, 0) as i32;
    let key = SockKey { tgid, fd };
    let Some(info) = SOCKETS.get_ptr(key) else {
        return;
    };
    let (conn_gen, flags) = unsafe { ((*info).conn_gen, (*info).flags) };
    let _ = SOCKETS.remove(key);
    if flags & SOCK_FLAG_HTTP2 != 0 {
        let _ = FRAME_WALKS.remove(key);
    }
    emit_header(EventKind::Close, id, fd, conn_gen);
}

#[inline(always)]
pub fn emit_header(kind: EventKind, id: u64, fd: i32, conn_gen: u64) {
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
