//! Data syscalls on traced sockets: at exit, when the byte count is known, copy the first
//! `CAPTURE_BYTES` of payload into one ring-buffer record.
//!
//! Sends remember their arguments at enter (`enter`, then `exit`): their span starts when the
//! request's write begins. Receives have no enter program (`receive_exit`): they read their
//! arguments from the registers the syscall saved, which halves the program runs of a
//! server's request read and of every read syscall on the host (BENCHMARKS.md, section 11).

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns, bpf_probe_read_user,
        bpf_task_pt_regs,
    },
    programs::TracePointContext,
};
use core::{ffi::c_void, mem::size_of};
use tracer_common::{
    Counter, DATA_FLAG_IOVEC_LIMIT, DATA_FLAG_LOST_BEFORE, DATA_FLAG_READ_FAULT, DataEvent,
    EventHeader, EventKind, FrameHint, MAX_CAPTURE_BYTES, MAX_FRAME_HINTS, MAX_IOVECS, MAX_MMSG,
    RING_WAKEUP_BYTES, SOCK_FLAG_ACCEPTED, SOCK_FLAG_HTTP2, SOCK_FLAG_LOST, SockInfo, SockKey,
    Syscall, TraceIds,
};

use crate::maps::{
    EVENTS, InFlight, Layout, SCRATCH, SOCKETS, Scratch, capture_bytes, count, may_be_enabled,
    may_trace, start_call, take_call,
};
use crate::{http2, inject};

const MSG_PEEK: u64 = 2;
const MAX: u64 = MAX_CAPTURE_BYTES as u64;

// x86_64 / aarch64 user ABI.
const MSGHDR_IOV: u64 = 16;
const MSGHDR_IOVLEN: u64 = 24;
const MMSGHDR_SIZE: u64 = 64;
const MMSGHDR_LEN: u64 = 56;
const IOVEC_SIZE: u64 = 16;

/// Syscall argument `n` of a `syscalls:sys_enter_*` record (at offset 16 + 8n). Read in
/// place: the verifier allows aligned loads from a tracepoint's record, which saves a
/// helper call per argument.
#[inline(always)]
pub fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    unsafe { *(ctx.as_ptr() as *const u64).add(2 + n) }
}

/// The return value in a `syscalls:sys_exit_*` record (offset 16).
#[inline(always)]
pub fn ret(ctx: &TracePointContext) -> i64 {
    unsafe { *(ctx.as_ptr() as *const i64).add(2) }
}

/// Enter of a send syscall: `fd` is argument 0; `ptr`/`len` are arguments 1 and 2.
#[inline(always)]
pub fn enter(ctx: &TracePointContext, syscall: Syscall, layout: Layout) {
    let id = unsafe { bpf_get_current_pid_tgid() };
    let tgid = (id >> 32) as u32;
    // The socket's entry is the gate, without `ENABLED_PROCESSES`' lookup (about a quarter
    // of a traced enter's run time: BENCHMARKS.md, section 9): entries are made only for
    // enabled processes, and every removal of a process that may own some removes them too
    // (the agent's `disable`). Untraced processes stop at their mark.
    if !may_trace(tgid) {
        return;
    }
    let fd = arg(ctx, 0) as i32;
    let Some(sock) = SOCKETS.get_ptr(SockKey { tgid, fd }) else {
        return;
    };
    let (ptr, len) = match layout {
        // sendfile64(out_fd, in_fd, offset, count): no user buffer.
        Layout::None => (0, arg(ctx, 3)),
        _ => (arg(ctx, 1), arg(ctx, 2)),
    };
    let ts_enter = unsafe { bpf_ktime_get_ns() };
    start_call(id, call_on(sock, fd, syscall, layout, (ptr, len), ts_enter));
}

/// A data syscall on the socket whose `SOCKETS` entry is `sock`, with the connection and
/// flags the entry holds now. `id` is left 0: `start_call` tags the slot, and `capture`
/// takes the thread's id apart.
#[inline(always)]
fn call_on(
    sock: *const SockInfo,
    fd: i32,
    syscall: Syscall,
    layout: Layout,
    (ptr, len): (u64, u64),
    ts_enter: u64,
) -> InFlight {
    let (conn_gen, sock_flags) = unsafe { ((*sock).conn_gen, (*sock).flags) };
    InFlight {
        id: 0,
        ts_enter,
        conn_gen,
        ptr,
        len,
        fd,
        syscall: syscall as u8,
        layout,
        lost: (sock_flags & SOCK_FLAG_LOST != 0) as u8,
        http2: (sock_flags & SOCK_FLAG_HTTP2 != 0) as u8,
        accepted: (sock_flags & SOCK_FLAG_ACCEPTED != 0) as u8,
        _pad: [0; 7],
    }
}

/// Exit of a receive syscall (there is no enter program): the arguments come from the saved
/// registers, the socket's state from `SOCKETS` now. What `enter` would have remembered and
/// this cannot know is the time the call began; a read's data arrives at its end, so the
/// exit's time stands for both.
#[inline(always)]
pub fn receive_exit(
    ctx: &TracePointContext,
    syscall: Syscall,
    layout: Layout,
    flags_arg: Option<usize>,
) {
    let id = unsafe { bpf_get_current_pid_tgid() };
    let tgid = (id >> 32) as u32;
    if !may_trace(tgid) {
        return;
    }
    let ret = ret(ctx);
    if ret <= 0 {
        return;
    }
    let args = exit_args();
    let fd = args[0] as i32;
    let Some(sock) = SOCKETS.get_ptr(SockKey { tgid, fd }) else {
        return;
    };
    if let Some(n) = flags_arg
        && args[n] & MSG_PEEK != 0
    {
        return;
    }
    let ts_exit = unsafe { bpf_ktime_get_ns() };
    let call = call_on(sock, fd, syscall, layout, (args[1], args[2]), ts_exit);
    capture(ctx, id, &call, ts_exit, ret as u64, layout);
}

/// Arguments 0 to 3 of the syscall the current task is leaving, from the user registers the
/// syscall entry saved (`struct pt_regs`, at the top of the task's kernel stack). A syscall
/// returns into them unchanged, and the data syscalls do not write them. The loads go
/// through the kernel's BTF type of `pt_regs`; the verifier checks each offset against it.
#[inline(always)]
fn exit_args() -> [u64; 4] {
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u64;
    // x86_64: di, si, dx, r10 (the syscall ABI's fourth register; rcx holds the return
    // address). Offsets in u64s: `struct pt_regs` of arch/x86/include/asm/ptrace.h.
    #[cfg(bpf_target_arch = "x86_64")]
    const ARGS: [usize; 4] = [14, 13, 12, 7];
    // aarch64: x0 now holds the return value; the syscall entry kept it in `orig_x0`, after
    // regs[31], sp, pc and pstate. (Only x86_64 is built and tested here.)
    #[cfg(bpf_target_arch = "aarch64")]
    const ARGS: [usize; 4] = [34, 1, 2, 3];
    #[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
    compile_error!("the receive programs read x86_64 or aarch64 syscall registers only");
    unsafe {
        [
            *regs.add(ARGS[0]),
            *regs.add(ARGS[1]),
            *regs.add(ARGS[2]),
            *regs.add(ARGS[3]),
        ]
    }
}

/// Exit of a send syscall: emit what moved. `layout` is a constant per exit program, so each
/// program carries only its own payload walk (one program with all of them is too large for
/// the verifier).
#[inline(always)]
pub fn exit(ctx: &TracePointContext, layout: Layout) {
    let id = unsafe { bpf_get_current_pid_tgid() };
    // The mark first: the enter just read the same byte, so it is in the cache, where the
    // thread's `IN_FLIGHT` slot (in a 1.8 MB array) often is not. Untraced processes stop
    // here. The mark goes away when the process's leader thread exits; a syscall another
    // thread has in flight then loses its event, as its enter would have been refused.
    if !may_be_enabled((id >> 32) as u32) {
        return;
    }
    let Some(call) = take_call(id) else {
        return;
    };
    let ret = ret(ctx);
    if ret <= 0 || call.layout != layout {
        return;
    }
    let ts_exit = unsafe { bpf_ktime_get_ns() };
    capture(ctx, id, &call, ts_exit, ret as u64, layout);
}

/// Emits the `ret` bytes `call` moved.
#[inline(always)]
fn capture(
    ctx: &TracePointContext,
    id: u64,
    call: &InFlight,
    ts_exit: u64,
    ret: u64,
    layout: Layout,
) {
    match layout {
        Layout::Buffer => emit(ctx, id, call, ts_exit, ret, Payload::Buffer(call.ptr), true),
        Layout::Iovec => {
            let payload = Payload::Iovec(call.ptr, call.len);
            emit(ctx, id, call, ts_exit, ret, payload, true);
        }
        Layout::Msghdr => {
            let (iov, iovlen) = read_msghdr(call.ptr);
            emit(
                ctx,
                id,
                call,
                ts_exit,
                ret,
                Payload::Iovec(iov, iovlen),
                true,
            );
        }
        Layout::None => emit(ctx, id, call, ts_exit, ret, Payload::None, true),
        Layout::Mmsghdr => emit_mmsg(ctx, id, call, ts_exit, ret),
        Layout::Connect | Layout::Accept => {}
    }
}

/// sendmmsg/recvmmsg return how many messages moved; each carries its own `msg_len`.
#[inline(always)]
fn emit_mmsg(ctx: &TracePointContext, id: u64, call: &InFlight, ts_exit: u64, messages: u64) {
    let mut i: u64 = 0;
    while i < MAX_MMSG as u64 && i < messages {
        let hdr = call.ptr + i * MMSGHDR_SIZE;
        let len = read_user_u32(hdr + MMSGHDR_LEN) as u64;
        if len > 0 {
            let (iov, iovlen) = read_msghdr(hdr);
            // No frame walk: its tail call would not come back for the next message (and
            // HTTP/2 does not travel over sendmmsg).
            emit(
                ctx,
                id,
                call,
                ts_exit,
                len,
                Payload::Iovec(iov, iovlen),
                false,
            );
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

/// Builds the data event in the scratch (header, then payload), lets the HTTP/2 frame walk
/// add its hints (it then emits the record itself), or emits it.
#[inline(always)]
fn emit(
    ctx: &TracePointContext,
    id: u64,
    call: &InFlight,
    ts_exit: u64,
    total: u64,
    payload: Payload,
    walk: bool,
) {
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
    let (captured, flags) = match payload {
        Payload::Buffer(ptr) => {
            if copy_user(base, ptr, limit) {
                (limit, 0)
            } else {
                (0, DATA_FLAG_READ_FAULT)
            }
        }
        Payload::Iovec(iov, iovlen) => gather(scratch, iov, iovlen, limit),
        Payload::None => (0, 0),
    };
    // The copy can end in many ways (one per iovec); without this, each of those verifier
    // states would check everything below separately.
    unsafe { core::ptr::write_volatile(&raw mut scratch.launder, [captured, flags as u64]) };
    let [c, f] = unsafe { core::ptr::read_volatile(&raw const scratch.launder) };
    let (mut captured, mut flags) = (c, f as u8);
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
    if call.lost != 0 {
        flags |= DATA_FLAG_LOST_BEFORE;
    }
    let syscall = call.syscall;
    let direction = direction_of(syscall);
    // Field by field, for the same reason as `start_call`: a whole `DataEvent` store zeroed
    // its 41 trailing bytes in a byte loop.
    let event = &mut scratch.event;
    event.header = EventHeader {
        kind: EventKind::Data as u32,
        tgid: (id >> 32) as u32,
        tid: id as u32,
        fd: call.fd,
        ts_ns: ts_exit,
        conn_gen: call.conn_gen,
    };
    event.ts_enter_ns = call.ts_enter;
    event.total_len = total;
    event.captured_len = captured as u32;
    event.syscall = syscall;
    event.direction = direction;
    event.flags = flags;
    event.hint_count = 0;
    clear_ids(&raw mut event.ids);
    // HTTP/2 sockets (or a first syscall that may be the preface): walk the frames.
    if walk && (call.http2 != 0 || (captured >= 24 && scratch.payload[0] == b'P')) {
        let key = SockKey {
            tgid: (id >> 32) as u32,
            fd: call.fd,
        };
        let source = match payload {
            Payload::Buffer(ptr) => http2::Source::Buffer(ptr),
            Payload::Iovec(iov, iovlen) => http2::Source::Iovec(iov, iovlen),
            Payload::None => http2::Source::None,
        };
        http2::start(
            ctx,
            scratch,
            key,
            call,
            direction as usize,
            total,
            captured,
            source,
        );
        // Not the preface after all (or no step program): an HTTP/1 or unknown event.
    }
    if inject::enabled() {
        scratch.accepted = call.accepted as u64;
        unsafe {
            let _ = http2::TAIL_CALLS.tail_call(ctx, http2::INJECT_EXIT);
        }
        // The injection program is not installed: the event goes out without ids.
    }
    output(scratch);
}

/// Zeroes `ids` in five 8-byte stores (volatile, so that they stay stores and do not become
/// a memset call again). `DataEvent` places `ids` 8-aligned, and the scratch is 8-aligned.
#[inline(always)]
fn clear_ids(ids: *mut TraceIds) {
    const WORDS: usize = size_of::<TraceIds>() / 8;
    let words = ids as *mut u64;
    let mut i = 0;
    while i < WORDS {
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
        i += 1;
    }
}

/// Sends the data event assembled in the scratch: header, captured payload, frame hints.
#[inline(always)]
pub fn output(scratch: &mut Scratch) {
    let captured = scratch.event.captured_len as usize & (2 * MAX_CAPTURE_BYTES - 1);
    let captured = if captured > MAX_CAPTURE_BYTES {
        MAX_CAPTURE_BYTES
    } else {
        captured
    };
    let hints = scratch.event.hint_count as usize & (2 * MAX_FRAME_HINTS as usize - 1);
    let len = size_of::<DataEvent>() + captured + hints * size_of::<FrameHint>();
    let record = unsafe { core::slice::from_raw_parts(scratch as *const _ as *const u8, len) };
    let header = scratch.event.header;
    let key = SockKey {
        tgid: header.tgid,
        fd: header.fd,
    };
    let lost_before = scratch.event.flags & DATA_FLAG_LOST_BEFORE != 0;
    if EVENTS
        .output::<[u8]>(record, wakeup_flag(len as u64))
        .is_ok()
    {
        count(Counter::DataEvents);
        if lost_before {
            set_lost(key, header.conn_gen, false);
        }
    } else {
        count(Counter::RingFull);
        set_lost(key, header.conn_gen, true);
    }
}

/// A data event wakes the agent only when it brings the unread data to `RING_WAKEUP_BYTES`:
/// a wake-up per syscall (an irq_work, and the agent's reactor) was most of the exit
/// programs' cost. The agent also reads the ring on its tick (`TICK` in the agent), which
/// covers two CPUs crossing the mark at once without either seeing it. Other events use the
/// ring's default: they wake the agent only if it had read everything before them.

#[inline(always)]
fn wakeup_flag(len: u64) -> u64 {
    let unread = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    if unread < RING_WAKEUP_BYTES && unread + len >= RING_WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Marks (or clears) the socket's lost-data flag, if the fd still holds the same connection.
#[inline(always)]
fn set_lost(key: SockKey, conn_gen: u64, lost: bool) {
    if let Some(info) = SOCKETS.get_ptr_mut(key) {
        unsafe {
            if (*info).conn_gen == conn_gen {
                if lost {
                    (*info).flags |= SOCK_FLAG_LOST;
                } else {
                    (*info).flags &= !SOCK_FLAG_LOST;
                }
            }
        }
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
///
/// Verifier cost: each iteration's min() forks two verifier states, and forked states never
/// merge, so a plain loop doubles its work per iovec. Storing the loop-carried offset and the
/// copy length in the scratch map and reading them back (map memory is opaque to the verifier)
/// makes both forks identical, so the verifier walks one state per iovec. The masks then
/// restate the bounds: offset < MAX, length < 2*MAX, inside the 3*MAX scratch payload.
///
/// The `struct iovec`s themselves come `IOVEC_BATCH` at a time into the scratch
/// (`load_iovecs`): a writev of a response's head and body makes three helper calls
/// instead of four.
#[inline(always)]
fn gather(scratch: *mut Scratch, iov: u64, iovlen: u64, limit: u64) -> (u64, u8) {
    let launder = unsafe { &raw mut (*scratch).launder };
    let base = unsafe { (*scratch).payload.as_mut_ptr() };
    let mut off: u64 = 0;
    let mut flags: u8 = 0;
    let mut i: u64 = 0;
    while i < MAX_IOVECS as u64 {
        if i >= iovlen || off >= limit {
            break;
        }
        // `iovlen - i` >= 1 here: a false return is a fault.
        let in_batch = i & (IOVEC_BATCH - 1);
        if in_batch == 0 && !load_iovecs(unsafe { &mut *scratch }, iov + i * IOVEC_SIZE, iovlen - i)
        {
            flags = DATA_FLAG_READ_FAULT;
            break;
        }
        let [src, len] = unsafe { (*scratch).iovecs[in_batch as usize] };
        let want = if len < limit - off { len } else { limit - off };
        unsafe {
            core::ptr::write_volatile(launder, [off, want]);
        }
        let [o, w] = unsafe { core::ptr::read_volatile(launder) };
        let (o, w) = (o & (MAX - 1), w & (2 * MAX - 1));
        if w > 0 {
            let rc = unsafe {
                bpf_probe_read_user(
                    base.add(o as usize) as *mut c_void,
                    w as u32,
                    src as *const c_void,
                )
            };
            if rc != 0 {
                flags = DATA_FLAG_READ_FAULT;
                break;
            }
        }
        off = o + w;
        i += 1;
    }
    if flags == 0 && off < limit && i < iovlen {
        flags = DATA_FLAG_IOVEC_LIMIT;
    }
    (off, flags)
}

/// `struct iovec`s read per helper call into the scratch (`load_iovecs`): `gather` reads the
/// array batch by batch; the HTTP/2 frame walk sees into the first batch only.
pub const IOVEC_BATCH: u64 = 16;
// `gather` and the frame walk index a batch with a mask.
const _: () = assert!(IOVEC_BATCH.is_power_of_two());

/// Copies up to `IOVEC_BATCH` of the `left` iovecs at user address `iov` into the
/// scratch's `iovecs` (and their number into `iovec_count`): `gather`'s batches, and the
/// HTTP/2 frame walk's whole array. False when there are none or the read faults.
#[inline(always)]
pub fn load_iovecs(scratch: &mut Scratch, iov: u64, left: u64) -> bool {
    let n = if left < IOVEC_BATCH {
        left
    } else {
        IOVEC_BATCH
    };
    let bytes = n * IOVEC_SIZE;
    if bytes == 0 {
        return false;
    }
    // Restated for the verifier.
    let bytes = if bytes > IOVEC_BATCH * IOVEC_SIZE {
        IOVEC_BATCH * IOVEC_SIZE
    } else {
        bytes
    };
    scratch.iovec_count = n;
    unsafe {
        bpf_probe_read_user(
            scratch.iovecs.as_mut_ptr() as *mut c_void,
            bytes as u32,
            iov as *const c_void,
        ) == 0
    }
}

/// Copy `len` user bytes from `src` to the start of the payload (`len <= MAX`; the clamp,
/// kept u64, restates it for the verifier: see PLATFORM.md).
#[inline(always)]
fn copy_user(base: *mut u8, src: u64, len: u64) -> bool {
    let len = if len > MAX { MAX } else { len };
    if len == 0 {
        return true;
    }
    let rc = unsafe { bpf_probe_read_user(base as *mut c_void, len as u32, src as *const c_void) };
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
