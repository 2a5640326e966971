//! Maps and load-time globals of the capture object.

use aya_ebpf::bindings::BPF_F_MMAPABLE;
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use tracer_common::{
    Comm, Counter, DataEvent, MAX_CAPTURE_BYTES, PIDS_PER_MARK_ELEMENT, ProcessInfo,
    SOCKADDR_BYTES, SockInfo, SockKey,
};

/// Payload bytes captured per syscall; set by the agent at load time (at most
/// `MAX_CAPTURE_BYTES`).
#[unsafe(no_mangle)]
static CAPTURE_BYTES: u32 = tracer_common::DEFAULT_CAPTURE_BYTES;

/// The agent's own tgid: never traced, whatever the maps say.
#[unsafe(no_mangle)]
static AGENT_TGID: u32 = 0;

/// Offset of `child_pid` in a `sched:sched_process_fork` record. Its layout changed across
/// kernel versions; the agent reads it from the tracepoint's format file.
#[unsafe(no_mangle)]
static FORK_CHILD_PID_OFFSET: u32 = 20;

#[inline(always)]
pub fn fork_child_pid_offset() -> usize {
    unsafe { core::ptr::read_volatile(&FORK_CHILD_PID_OFFSET) as usize }
}

#[inline(always)]
pub fn capture_bytes() -> u64 {
    // Volatile: the value is patched into the object after compilation.
    let v = unsafe { core::ptr::read_volatile(&CAPTURE_BYTES) } as u64;
    if v > MAX_CAPTURE_BYTES as u64 {
        MAX_CAPTURE_BYTES as u64
    } else {
        v
    }
}

#[inline(always)]
pub fn agent_tgid() -> u32 {
    unsafe { core::ptr::read_volatile(&AGENT_TGID) }
}

/// Records for the agent. The agent sizes it at load time.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Processes (tgid) the agent enabled.
#[map(name = "ENABLED_PROCESSES")]
pub static ENABLED_PROCESSES: HashMap<u32, ProcessInfo> = HashMap::with_max_entries(8192, 0);

/// One byte per pid, non-zero when the pid may be in `ENABLED_PROCESSES`: every syscall
/// entry on the host asks, and the hash lookup was about 30 of the 110 ns an untraced entry
/// took (BENCHMARKS.md, section 8). A stale mark only costs that lookup; a missing one
/// would lose a process, so a mark is set before its entry is inserted. Bytes, not bits:
/// the kernel (fork, exec, exit) and the agent (which writes through a mapping of one page)
/// store whole bytes, so neither can undo the other's write. The agent sizes it from
/// pid_max; pids beyond it take the lookup.
#[map(name = "PID_MARKS")]
pub static PID_MARKS: Array<[u8; PIDS_PER_MARK_ELEMENT as usize]> =
    Array::with_max_entries(32768 / PIDS_PER_MARK_ELEMENT, BPF_F_MMAPABLE);

/// Process names (comm) that enable a process at exec: the exe selectors' names.
#[map(name = "EXE_SELECTORS")]
pub static EXE_SELECTORS: HashMap<Comm, u32> = HashMap::with_max_entries(256, 0);

/// Which events of untraced processes the agent wants: `tracer_common::WATCH_*` bits.
#[map(name = "WATCH")]
pub static WATCH: Array<u32> = Array::with_max_entries(1, 0);

#[inline(always)]
pub fn watching(bit: u32) -> bool {
    WATCH.get(0).is_some_and(|w| w & bit != 0)
}

/// Socket fds of enabled processes. Only these produce data events, so pipes, eventfds and
/// files never do. A plain hash (not LRU): a full map is counted, never silently evicted.
#[map(name = "SOCKETS")]
pub static SOCKETS: HashMap<SockKey, SockInfo> = HashMap::with_max_entries(65536, 0);

/// Slots of `IN_FLIGHT`: a power of two.
const IN_FLIGHT_SLOTS: u32 = 32768;

/// Arguments of a syscall between its enter and exit tracepoints: one slot per thread, at
/// its tid modulo the size, tagged with its pid_tgid. An array, not a hash map: its lookup is
/// inlined by the verifier, where a hash insert and delete (with the LRU's locks) were about
/// half the cost of each traced syscall, and every exit program of every process on the host
/// paid a hash lookup. Two threads whose tids share a slot, both inside a traced socket
/// syscall at once: the later one takes the slot, and the earlier one's event is lost,
/// counted as `ArgsMapFull`. A thread killed inside a syscall leaves its slot tagged until
/// the slot is reused; that reuse is counted too.
#[map(name = "IN_FLIGHT")]
pub static IN_FLIGHT: Array<InFlight> = Array::with_max_entries(IN_FLIGHT_SLOTS, 0);

/// Remembers `call` for the exit of the syscall thread `id` (pid_tgid) is entering.
#[inline(always)]
pub fn start_call(id: u64, call: InFlight) {
    let Some(slot) = IN_FLIGHT.get_ptr_mut(id as u32 & (IN_FLIGHT_SLOTS - 1)) else {
        return;
    };
    unsafe {
        if (*slot).id != 0 && (*slot).id != id {
            count(Counter::ArgsMapFull);
        }
        // Field by field, `_pad` left out: a whole-struct store zeroes it through a call of
        // the BPF target's memset, a byte loop. The map created it zero, and nothing writes it.
        let slot = &mut *slot;
        slot.id = id;
        slot.ts_enter = call.ts_enter;
        slot.conn_gen = call.conn_gen;
        slot.ptr = call.ptr;
        slot.len = call.len;
        slot.fd = call.fd;
        slot.syscall = call.syscall;
        slot.layout = call.layout;
        slot.lost = call.lost;
        slot.http2 = call.http2;
        slot.accepted = call.accepted;
    }
}

/// The call thread `id` entered, if its slot still holds it; frees the slot.
#[inline(always)]
pub fn take_call(id: u64) -> Option<InFlight> {
    let slot = IN_FLIGHT.get_ptr_mut(id as u32 & (IN_FLIGHT_SLOTS - 1))?;
    unsafe {
        // The tag first, so that other threads' exits (every syscall on the host) stop at
        // one load; then the copy, tested again: a colliding thread may have taken the slot
        // in between.
        if (*slot).id != id {
            return None;
        }
        let call = *slot;
        if call.id != id {
            return None;
        }
        (*slot).id = 0;
        Some(call)
    }
}

/// Per-CPU counters, indexed by `tracer_common::Counter`.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Where a data event is assembled before it is copied to the ring buffer. The payload is
/// three times the capture bound so that a copy the verifier sees as (offset < MAX) +
/// (length < 2*MAX) stays in bounds (see `data::gather`).
#[repr(C)]
pub struct Scratch {
    pub event: DataEvent,
    pub payload: [u8; 3 * MAX_CAPTURE_BYTES],
    /// Loop-carried values of `data::gather` and `http2::walk`, stored here to hide them
    /// from the verifier.
    pub launder: [u64; 2],
    /// Loop-carried values of `http2::read_iovecs` (nested in the walk's own loop).
    pub walk_launder: [u64; 4],
    /// Iovecs (base, length) of the syscall being captured, from `data::load_iovecs`: a
    /// batch of `data::gather`'s, then the start of the array for the HTTP/2 frame walk.
    pub iovecs: [[u64; 2]; crate::data::IOVEC_BATCH as usize],
    pub iovec_count: u64,
    /// The HTTP/2 frame walk in progress, from one tail call to the next.
    pub walk: crate::http2::WalkState,
    /// Non-zero: the syscall whose event is in `event` was on an accepted socket (handed to
    /// the traceparent injection's tail call).
    pub accepted: u64,
}

/// The addresses of the last TCP connect on this CPU, written by the sock_ops program inside
/// connect() and read by that connect's exit tracepoint (same task, same CPU).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnectHandoff {
    /// CLOCK_MONOTONIC ns when written.
    pub ts: u64,
    /// Local address as a `struct sockaddr_in`/`sockaddr_in6`.
    pub local: [u8; SOCKADDR_BYTES],
    pub local_len: u32,
    /// Remote port (host order), to check the handoff belongs to this connect.
    pub remote_port: u16,
    pub _pad: [u8; 6],
}

#[map(name = "CONNECT_HANDOFF")]
pub static CONNECT_HANDOFF: PerCpuArray<ConnectHandoff> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SCRATCH")]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// How the syscall's payload is laid out in user memory.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `ptr` is a buffer of `len` bytes.
    Buffer = 0,
    /// `ptr` is a `struct iovec[len]`.
    Iovec = 1,
    /// `ptr` is a `struct msghdr`.
    Msghdr = 2,
    /// `ptr` is a `struct mmsghdr[len]`.
    Mmsghdr = 3,
    /// No user buffer (sendfile): only the size is reported.
    None = 4,
    /// connect: `ptr` is the peer sockaddr, `len` its length.
    Connect = 5,
    /// accept: `ptr` is the sockaddr buffer, `len` a pointer to its length.
    Accept = 6,
}

/// A syscall between enter and exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct InFlight {
    /// The thread's pid_tgid (0: the slot is free). Set by `start_call`.
    pub id: u64,
    pub ts_enter: u64,
    pub conn_gen: u64,
    pub ptr: u64,
    pub len: u64,
    pub fd: i32,
    pub syscall: u8,
    pub layout: Layout,
    /// The socket had lost data when this syscall began (`SOCK_FLAG_LOST`).
    pub lost: u8,
    /// The socket speaks HTTP/2 (`SOCK_FLAG_HTTP2`): its frames are walked.
    pub http2: u8,
    /// The socket came from accept() (`SOCK_FLAG_ACCEPTED`): the process is its server.
    pub accepted: u8,
    pub _pad: [u8; 7],
}

#[inline(always)]
pub fn count(counter: Counter) {
    add(counter, 1);
}

#[inline(always)]
pub fn add(counter: Counter, n: u64) {
    if let Some(v) = COUNTERS.get_ptr_mut(counter as u32) {
        // Per-CPU slot: no other CPU writes it (no atomic add on this target).
        unsafe { *v += n };
    }
}

/// Whether `tgid` is traced.
#[inline(always)]
pub fn is_enabled(tgid: u32) -> bool {
    may_trace(tgid) && ENABLED_PROCESSES.get_ptr(tgid).is_some()
}

/// False when `tgid` is surely not traced: a pid without its mark (the test that stops
/// untraced processes, so it goes first), or the agent.
#[inline(always)]
pub fn may_trace(tgid: u32) -> bool {
    may_be_enabled(tgid) && tgid != agent_tgid()
}

/// False only when `pid` is surely not in `ENABLED_PROCESSES` (see `PID_MARKS`).
#[inline(always)]
pub fn may_be_enabled(pid: u32) -> bool {
    match PID_MARKS.get(pid / PIDS_PER_MARK_ELEMENT) {
        Some(marks) => marks[(pid % PIDS_PER_MARK_ELEMENT) as usize] != 0,
        None => true,
    }
}

/// Sets or clears `pid`'s mark (a pid beyond the array has none).
#[inline(always)]
pub fn set_mark(pid: u32, on: bool) {
    if let Some(marks) = PID_MARKS.get_ptr_mut(pid / PIDS_PER_MARK_ELEMENT) {
        unsafe { (*marks)[(pid % PIDS_PER_MARK_ELEMENT) as usize] = on as u8 };
    }
}
