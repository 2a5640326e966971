//! Data syscalls on traced sockets: remember the arguments at enter, and at exit (when the byte
//! count is known) copy the first `CAPTURE_BYTES` of payload into one ring-buffer record.

use aya_ebpf::{
    helpers::generated::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    programs::TracePointContext,
};
use core::{ffi::c_void, mem::size_of};
use tracer_common::{
    Counter, DATA_FLAG_IOVEC_LIMIT, DATA_FLAG_READ_FAULT, DataEvent, EventHeader, EventKind,
    MAX_CAPTURE_BYTES, MAX_IOVECS, MAX_MMSG, SockKey, Syscall,
};

use crate::maps::{
    EVENTS, IN_FLIGHT, InFlight, Layout, SCRATCH, SOCKETS, capture_bytes, count, is_enabled,
};

const MSG_PEEK: u64 = 2;
const MAX: u64 = MAX_CAPTURE_BYTES as u64;

// x86_64 / aarch64 user ABI.
const MSGHDR_IOV: u64 = 16;
const MSGHDR_IOVLEN: u64 = 24;
const MMSGHDR_SIZE: u64 = 64;
const MMSGHDR_LEN: u64 = 56;
const IOVEC_SIZE: u64 = 16;

/// Offset of syscall argument `n` in a `syscalls:sys_enter_*` record.
#[inline(always)]
pub fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    unsafe { ctx.read_at::<u64>(16 + 8 * n) }.unwrap_or(0)
}

/// The return value in a `syscalls:sys_exit_*` record.
#[inline(always)]
pub fn ret(ctx: &TracePointContext) -> i64 {
    unsafe { ctx.read_at::<i64>(16) }.unwrap_or(-1)
}

/// Enter of a data syscall: `fd` is argument 0; `ptr`/`len` are arguments 1 and 2.
/// `flags_arg`, when given, is the argument holding recv flags (MSG_PEEK reads are skipped:
/// the same bytes will be read again).
#[inline(always)]
pub fn enter(ctx: &TracePointContext, syscall: Syscall, layout: Layout, flags_arg: Option<usize>) {
    let id = unsafe { bpf_get_current_pid_tgid() };
    let tgid = (id >> 32) as u32;
    if !is_enabled(tgid) {
        return;
    }
    let fd = arg(ctx, 0) as i32;
    let Some(sock) = SOCKETS.get_ptr(SockKey { tgid, fd }) else {
        return;
    };
    if let Some(n) = flags_arg
        && arg(ctx, n) & MSG_PEEK != 0
    {
        return;
    }
    let (ptr, len) = match layout {
        // sendfile64(out_fd, in_fd, offset, count): no user buffer.
        Layout::None => (0, arg(ctx, 3)),
        _ => (arg(ctx, 1), arg(ctx, 2)),
    };
    let call = InFlight {
        ts_enter: unsafe { bpf_ktime_get_ns() },
        conn_gen: unsafe { (*sock).conn_gen },
        ptr,
        len,
        fd,
        syscall: syscall as u8,
        layout,
        _pad: [0; 2],
    };
    if IN_FLIGHT.insert(id, call, 0).is_err() {
        count(Counter::ArgsMapFull);
    }
}

/// Exit of a data syscall: emit what moved.
#[inline(always)]
pub fn exit(ctx: &TracePointContext) {
    let id = unsafe { bpf_get_current_pid_tgid() };
    let Some(call) = IN_FLIGHT.get_ptr(id) else {
        return;
    };
    let call = unsafe { *call };
    let _ = IN_FLIGHT.remove(id);
    let ret = ret(ctx);
    if ret <= 0 {
        return;
    }
    let ts_exit = unsafe { bpf_ktime_get_ns() };
    let ret = ret as u64;
    match call.layout {
        Layout::Buffer => emit(id, &call, ts_exit, ret, Payload::Buffer(call.ptr)),
        Layout::Iovec => emit(id, &call, ts_exit, ret, Payload::Iovec(call.ptr, call.len)),
        Layout::Msghdr => {
            let (iov, iovlen) = read_msghdr(call.ptr);
            emit(id, &call, ts_exit, ret, Payload::Iovec(iov, iovlen));
        }
        Layout::None => emit(id, &call, ts_exit, ret, Payload::None),
        Layout::Mmsghdr => emit_mmsg(id, &call, ts_exit, ret),
        Layout::Connect | Layout::Accept => {}
    }
}

/// sendmmsg/recvmmsg return how many messages moved; each carries its own `msg_len`.
#[inline(always)]
fn emit_mmsg(id: u64, call: &InFlight, ts_exit: u64, messages: u64) {
    let mut i: u64 = 0;
    while i < MAX_MMSG as u64 && i < messages {
        let hdr = call.ptr + i * MMSGHDR_SIZE;
        let len = read_user_u32(hdr + MMSGHDR_LEN) as u64;
        if len > 0 {
            let (iov, iovlen) = read_msghdr(hdr);
            emit(id, call, ts_exit, len, Payload::Iovec(iov, iovlen));
        }
        i += 1;
    }
    if messages > MAX_MMSG as u64 {
        count(Counter::MmsgLimit);
    }
}

enum Payload {
    Buffer(u64),
    Iovec(u64, u64),
    None,
}

#[inline(always)]
fn emit(id: u64, call: &InFlight, ts_exit: u64, total: u64, payload: Payload) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let scratch = unsafe { &mut *scratch };
    let limit = if total < capture_bytes() {
        total
    } else {
        capture_bytes()
    };
    let base = scratch.payload.as_mut_ptr();
    let (mut captured, mut flags) = match payload {
        Payload::Buffer(ptr) => {
            if copy_user(base, 0, ptr, limit) {
                (limit, 0)
            } else {
                (0, DATA_FLAG_READ_FAULT)
            }
        }
        Payload::Iovec(iov, iovlen) => gather(base, iov, iovlen, limit),
        Payload::None => (0, 0),
    };
    if flags & DATA_FLAG_READ_FAULT != 0 {
        count(Counter::ReadFault);
    }
    if flags & DATA_FLAG_IOVEC_LIMIT != 0 {
        count(Counter::IovecLimit);
    }
    if total > capture_bytes() && !matches!(payload, Payload::None) {
        count(Counter::Truncated);
    }
    if captured > MAX {
        captured = MAX;
        flags |= DATA_FLAG_READ_FAULT;
    }
    let syscall = call.syscall;
    scratch.event = DataEvent {
        header: EventHeader {
            kind: EventKind::Data as u32,
            tgid: (id >> 32) as u32,
            tid: id as u32,
            fd: call.fd,
            ts_ns: ts_exit,
            conn_gen: call.conn_gen,
        },
        ts_enter_ns: call.ts_enter,
        total_len: total,
        captured_len: captured as u32,
        syscall,
        direction: direction_of(syscall),
        flags,
        _pad: 0,
    };
    let len = size_of::<DataEvent>() + captured as usize;
    let record = unsafe { core::slice::from_raw_parts(scratch as *const _ as *const u8, len) };
    if EVENTS.output::<[u8]>(record, 0).is_ok() {
        count(Counter::DataEvents);
    } else {
        count(Counter::RingFull);
    }
}

#[inline(always)]
fn direction_of(syscall: u8) -> u8 {
    match Syscall::from_u8(syscall) {
        Some(s) => s.direction() as u8,
        None => 0,
    }
}

/// Copy the first `limit` bytes spread over `iovlen` iovecs at user address `iov`.
/// Returns (bytes captured, DATA_FLAG_* bits).
#[inline(always)]
fn gather(base: *mut u8, iov: u64, iovlen: u64, limit: u64) -> (u64, u8) {
    let mut off: u64 = 0;
    let mut i: u64 = 0;
    while i < MAX_IOVECS as u64 {
        if i >= iovlen || off >= limit {
            return (off, 0);
        }
        let entry = iov + i * IOVEC_SIZE;
        let Some(src) = read_user_u64(entry) else {
            return (off, DATA_FLAG_READ_FAULT);
        };
        let Some(len) = read_user_u64(entry + 8) else {
            return (off, DATA_FLAG_READ_FAULT);
        };
        let want = if len < limit - off { len } else { limit - off };
        if !copy_user(base, off, src, want) {
            return (off, DATA_FLAG_READ_FAULT);
        }
        off += want;
        i += 1;
    }
    if off < limit && i < iovlen {
        (off, DATA_FLAG_IOVEC_LIMIT)
    } else {
        (off, 0)
    }
}

/// Copy `len` user bytes from `src` to `base + off`. `off < MAX` and `len <= MAX` always hold
/// here; the masks and clamps restate that for the verifier (and must stay u64, see PLATFORM.md).
#[inline(always)]
fn copy_user(base: *mut u8, off: u64, src: u64, len: u64) -> bool {
    let off = off & (MAX - 1);
    let len = if len > MAX { MAX } else { len };
    if len == 0 {
        return true;
    }
    let rc = unsafe {
        bpf_probe_read_user(
            base.add(off as usize) as *mut c_void,
            len as u32,
            src as *const c_void,
        )
    };
    rc == 0
}

#[inline(always)]
fn read_msghdr(msg: u64) -> (u64, u64) {
    let iov = read_user_u64(msg + MSGHDR_IOV).unwrap_or(0);
    let iovlen = read_user_u64(msg + MSGHDR_IOVLEN).unwrap_or(0);
    (iov, iovlen)
}

#[inline(always)]
fn read_user_u64(addr: u64) -> Option<u64> {
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(addr as *const u64) }.ok()
}

#[inline(always)]
pub fn read_user_u32(addr: u64) -> u32 {
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(addr as *const u32) }.unwrap_or(0)
}
