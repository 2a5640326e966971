//! Wire types shared by the kernel programs (`tracer-ebpf`) and the agent (`tracer`).
//!
//! Everything here is `#[repr(C)]` and checked for size at compile time: the kernel writes these
//! bytes into maps and the ring buffer, and userspace reads them back. Enumerations travel as plain
//! integers (a byte from the kernel is never trusted to be a valid Rust enum); each enum has a
//! checked `from_*` conversion.
#![no_std]

use core::mem::size_of;

/// Hard upper bound on payload bytes captured per syscall. The runtime limit (`CAPTURE_BYTES`) is
/// at most this. The kernel gathers payload in a per-CPU scratch buffer of twice this size (so the
/// verifier can bound a variable offset plus a variable length), and a per-CPU map value may not
/// exceed 32 KiB.
pub const MAX_CAPTURE_BYTES: usize = 8192;
/// Default payload capture per syscall: large enough for real request heads with cookies.
pub const DEFAULT_CAPTURE_BYTES: u32 = 4096;
/// At most this many iovecs are gathered per `readv`/`writev`/`sendmsg`/`recvmsg` call; payload
/// in later iovecs is accounted in `total_len` but not captured (counted as `IovecLimit`).
pub const MAX_IOVECS: u32 = 64;
/// At most this many messages are reported per `sendmmsg`/`recvmmsg` call.
pub const MAX_MMSG: u32 = 4;
/// Bytes of a peer `sockaddr` copied from connect/accept (sizeof(struct sockaddr_in6)).
pub const SOCKADDR_BYTES: usize = 28;
/// A data event wakes the agent only when it brings the ring's unread bytes to this. The agent
/// flushes on such a wake-up too (`BUSY_FLUSH` in the agent), and its pipeline benchmark
/// replays both.
pub const RING_WAKEUP_BYTES: u64 = 256 * 1024;

/// Names of the maps and globals, as the kernel object spells them.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const ENABLED_PROCESSES: &str = "ENABLED_PROCESSES";
    pub const SOCKETS: &str = "SOCKETS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const EXE_SELECTORS: &str = "EXE_SELECTORS";
    pub const WATCH: &str = "WATCH";
    pub const FRAME_WALKS: &str = "FRAME_WALKS";
    pub const PID_MARKS: &str = "PID_MARKS";
    pub const GLOBAL_CAPTURE_BYTES: &str = "CAPTURE_BYTES";
    pub const GLOBAL_AGENT_TGID: &str = "AGENT_TGID";
    pub const GLOBAL_FORK_CHILD_PID_OFFSET: &str = "FORK_CHILD_PID_OFFSET";
}

/// What a ring-buffer record is. Every record starts with an [`EventHeader`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// [`DataEvent`] followed by `captured_len` payload bytes.
    Data = 1,
    /// [`ConnEvent`]: a successful (or in-progress) `connect`.
    Connect = 2,
    /// [`ConnEvent`]: a socket returned by `accept`/`accept4`.
    Accept = 3,
    /// Bare header: a traced socket fd was closed.
    Close = 4,
    /// Bare header: a traced process exited (its thread-group leader did).
    ProcessExit = 5,
    /// [`ProcessEvent`]: a traced process forked; the child (`pid`) is traced already.
    Fork = 6,
    /// [`ProcessEvent`]: a process called exec (traced, matched by an exe selector, or any
    /// process while `WATCH_EXEC` is on).
    Exec = 7,
    /// Bare header: a process called listen() on `fd` (only while `WATCH_LISTEN` is on).
    Listen = 8,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Data,
            2 => Self::Connect,
            3 => Self::Accept,
            4 => Self::Close,
            5 => Self::ProcessExit,
            6 => Self::Fork,
            7 => Self::Exec,
            8 => Self::Listen,
            _ => return None,
        })
    }
}

/// Which way the bytes went, seen from the traced process.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The process received the bytes (read, recv*).
    Ingress = 0,
    /// The process sent the bytes (write, send*).
    Egress = 1,
}

impl Direction {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Ingress),
            1 => Some(Self::Egress),
            _ => None,
        }
    }
}

/// The syscall that moved the bytes.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syscall {
    Read = 0,
    Write = 1,
    Readv = 2,
    Writev = 3,
    Recvfrom = 4,
    Sendto = 5,
    Recvmsg = 6,
    Sendmsg = 7,
    Recvmmsg = 8,
    Sendmmsg = 9,
    /// sendfile: the payload never passes through user memory, so only its size is reported.
    Sendfile = 10,
}

impl Syscall {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Read,
            1 => Self::Write,
            2 => Self::Readv,
            3 => Self::Writev,
            4 => Self::Recvfrom,
            5 => Self::Sendto,
            6 => Self::Recvmsg,
            7 => Self::Sendmsg,
            8 => Self::Recvmmsg,
            9 => Self::Sendmmsg,
            10 => Self::Sendfile,
            _ => return None,
        })
    }

    pub const fn direction(self) -> Direction {
        match self {
            Self::Read | Self::Readv | Self::Recvfrom | Self::Recvmsg | Self::Recvmmsg => {
                Direction::Ingress
            }
            Self::Write
            | Self::Writev
            | Self::Sendto
            | Self::Sendmsg
            | Self::Sendmmsg
            | Self::Sendfile => Direction::Egress,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Readv => "readv",
            Self::Writev => "writev",
            Self::Recvfrom => "recvfrom",
            Self::Sendto => "sendto",
            Self::Recvmsg => "recvmsg",
            Self::Sendmsg => "sendmsg",
            Self::Recvmmsg => "recvmmsg",
            Self::Sendmmsg => "sendmmsg",
            Self::Sendfile => "sendfile",
        }
    }
}

/// Common prefix of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// An [`EventKind`].
    pub kind: u32,
    /// Process (thread group) id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    pub fd: i32,
    /// CLOCK_MONOTONIC nanoseconds at syscall exit (at entry for `Close`).
    pub ts_ns: u64,
    /// Connection generation of (tgid, fd): tells apart two sockets that reused one fd number.
    pub conn_gen: u64,
}

/// Bytes moved by one syscall on a traced socket; `captured_len` payload bytes follow.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DataEvent {
    pub header: EventHeader,
    /// CLOCK_MONOTONIC nanoseconds at syscall entry; for receives (which have no enter
    /// program) the exit's time, as in the header.
    pub ts_enter_ns: u64,
    /// Bytes the syscall actually moved (its return value, or `msg_len` for *mmsg).
    pub total_len: u64,
    /// Payload bytes that follow; less than `total_len` when the capture was cut.
    pub captured_len: u32,
    /// A [`Syscall`].
    pub syscall: u8,
    /// A [`Direction`].
    pub direction: u8,
    /// `DATA_FLAG_*` bits.
    pub flags: u8,
    /// [`FrameHint`]s that follow the payload (HTTP/2 sockets only).
    pub hint_count: u8,
    /// Trace ids the kernel decided or inserted in this syscall (traceparent injection).
    pub ids: TraceIds,
}

/// Trace ids decided in the kernel when traceparent injection is on, so that the spans the
/// agent exports carry exactly the ids that went over the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The parent span's id (all zero: none).
    pub parent_id: [u8; 8],
    /// W3C trace-flags.
    pub flags: u8,
    /// `IDS_*`: what these ids are.
    pub kind: u8,
    pub _pad: [u8; 6],
}

/// No ids in this event.
pub const IDS_NONE: u8 = 0;
/// The server span of the request whose head this read carries: continued from the request's
/// `traceparent` (`parent_id` is its parent-id) or a new trace (`parent_id` all zero).
pub const IDS_SERVER: u8 = 1;
/// The client span of the request this write carries: the kernel inserted a `traceparent`
/// header with these ids (`parent_id` is the thread's server span).
pub const IDS_CLIENT: u8 = 2;

/// Names of the injection maps and globals.
pub mod inject_names {
    pub const GLOBAL_INJECT: &str = "INJECT_TRACEPARENT";
    /// Traces the kernel starts are sampled when the low 56 bits of their id (big-endian)
    /// are below this (the agent's root sampler, as a threshold).
    pub const GLOBAL_SAMPLE_BELOW: &str = "INJECT_SAMPLE_BELOW";
    pub const SOCKETS: &str = "INJECT_SOCKETS";
    pub const FRAMING: &str = "INJECT_FRAMING";
    pub const THREAD_CONTEXT: &str = "THREAD_CONTEXT";
}

/// An HTTP/2 frame that starts past the captured prefix of a syscall, found by the kernel
/// walking the frame headers of the whole buffer: the agent keeps the stream's framing with it
/// instead of losing it in the uncaptured bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrameHint {
    /// Where the frame header starts, from the syscall's first byte.
    pub offset: u32,
    /// The 9-byte frame header.
    pub header: [u8; 9],
    /// Payload bytes that follow in `payload` (HEADERS and CONTINUATION frames, so trailers
    /// and the header table stay readable).
    pub payload_len: u8,
    pub _pad: [u8; 2],
    pub payload: [u8; FRAME_HINT_PAYLOAD],
}

/// Payload bytes carried by a [`FrameHint`].
pub const FRAME_HINT_PAYLOAD: usize = 64;
/// At most this many frame hints per syscall; past them the kernel stops walking that socket
/// (the agent then resynchronises by itself).
pub const MAX_FRAME_HINTS: u32 = 16;
/// The HTTP/2 client connection preface.
pub const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reading the payload from user memory failed; the captured bytes are incomplete.
pub const DATA_FLAG_READ_FAULT: u8 = 1;
/// More iovecs than [`MAX_IOVECS`]: payload past them was not captured.
pub const DATA_FLAG_IOVEC_LIMIT: u8 = 2;
/// Data of this socket was lost (ring buffer full) before this event: the stream has a hole
/// of unknown size, so the agent must resynchronise the connection.
pub const DATA_FLAG_LOST_BEFORE: u8 = 4;

/// A socket a traced process connected or accepted.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnEvent {
    pub header: EventHeader,
    /// The peer's `struct sockaddr` as the process passed (connect) or received (accept) it.
    pub peer_addr: [u8; SOCKADDR_BYTES],
    /// Valid bytes in `peer_addr` (0 when the process passed no address buffer).
    pub peer_addr_len: u32,
    /// connect: the local `struct sockaddr` (the ephemeral port), handed over by the sock_ops
    /// program that runs inside connect(); accept: unset (the agent knows the listener's).
    pub local_addr: [u8; SOCKADDR_BYTES],
    /// Valid bytes in `local_addr` (0 when unknown).
    pub local_addr_len: u32,
    /// accept: the listening socket's fd; connect: -1.
    pub listen_fd: i32,
    /// connect: 0 or -EINPROGRESS; accept: 0.
    pub result: i32,
}

/// A process lifecycle event: fork (header.tgid is the parent, `pid` the child) or exec
/// (`pid` is the process).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessEvent {
    pub header: EventHeader,
    pub pid: u32,
    /// `PROC_FLAG_*` bits.
    pub flags: u32,
}

/// Exec: the process was traced before the exec.
pub const PROC_FLAG_TRACED: u32 = 1;
/// Exec: the kernel enabled the process because its name is in `EXE_SELECTORS`.
pub const PROC_FLAG_EXE_MATCH: u32 = 2;

/// Bits of the `WATCH` map's single value: which untraced-process events the agent wants.
/// Report every exec (exe and cgroup selectors need to look at new programs).
pub const WATCH_EXEC: u32 = 1;
/// Report every listen() (port selectors).
pub const WATCH_LISTEN: u32 = 2;

/// Key of the `EXE_SELECTORS` map: a process name as the kernel keeps it (comm: at most 15
/// bytes, NUL-padded).
pub type Comm = [u8; 16];

/// Key of the `SOCKETS` map: a socket fd of a traced process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockKey {
    pub tgid: u32,
    pub fd: i32,
}

/// Value of the `SOCKETS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockInfo {
    /// Generation: kernel timestamp at connect/accept, or an agent-assigned number (with
    /// [`USER_GEN_BIT`] set) for sockets found in /proc when tracing was enabled.
    pub conn_gen: u64,
    /// `SOCK_FLAG_*` bits.
    pub flags: u32,
    pub _pad: u32,
}

/// Generations the agent assigns carry this bit, so they never equal a kernel timestamp.
pub const USER_GEN_BIT: u64 = 1 << 63;
/// The socket was found in /proc after it was set up: the agent joined its stream mid-way.
pub const SOCK_FLAG_PREEXISTING: u32 = 1;
/// An event of this socket was lost; the next data event carries `DATA_FLAG_LOST_BEFORE`.
pub const SOCK_FLAG_LOST: u32 = 2;
/// The kernel saw the HTTP/2 preface on this socket and walks its frame headers.
pub const SOCK_FLAG_HTTP2: u32 = 4;
/// The socket came from accept(): the traced process is its server.
pub const SOCK_FLAG_ACCEPTED: u32 = 8;

/// Pids per element of the `PID_MARKS` array: one byte each, so that the kernel and the
/// agent write their own bytes without a read-modify-write (no atomic OR on the BPF target).
pub const PIDS_PER_MARK_ELEMENT: u32 = 8;

/// Value of the `ENABLED_PROCESSES` map (key: tgid).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// `PROC_FLAG_*`-style origin bits: `PROCESS_INHERITED` or `PROCESS_EXE_MATCH`.
    pub flags: u32,
}

/// Enabled by the kernel at fork: the parent was traced.
pub const PROCESS_INHERITED: u32 = 1;
/// Enabled by the kernel at exec: an exe selector matched.
pub const PROCESS_EXE_MATCH: u32 = 2;

/// Per-CPU counters in the `COUNTERS` map, by index. Every drop has its own cause.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Data events submitted to the ring buffer.
    DataEvents = 0,
    /// Connect/accept/close/exit events submitted.
    ControlEvents = 1,
    /// Events lost because the ring buffer was full.
    RingFull = 2,
    /// Payload reads from user memory that failed.
    ReadFault = 3,
    /// Sockets not tracked because the SOCKETS map was full.
    SocketMapFull = 4,
    /// Syscalls not captured because another thread's call took their argument slot (two
    /// threads whose tids are equal modulo the slot count, in traced socket calls at once);
    /// also a slot reused after a thread died inside a call. The name is kept from when the
    /// slots were a hash map.
    ArgsMapFull = 5,
    /// Syscalls whose payload exceeded the capture limit (the total length is still reported).
    Truncated = 6,
    /// Syscalls with more iovecs than were gathered.
    IovecLimit = 7,
    /// sendmmsg/recvmmsg messages past MAX_MMSG that were not reported.
    MmsgLimit = 8,
    /// Processes not traced because ENABLED_PROCESSES was full (fork or exe match).
    ProcessMapFull = 9,
    /// HTTP/2 sockets whose frame walk stopped (too many frames in one syscall, a header cut
    /// at a syscall's end, or the walk map full); the agent resynchronises them by itself.
    FrameWalkLost = 10,
    /// traceparent headers inserted into outgoing HTTP/1 requests.
    Injected = 11,
    /// Outgoing requests left untouched because they carried a traceparent already.
    InjectAlreadyPresent = 12,
    /// Connections on which injection stopped: framing the kernel cannot follow (chunked or
    /// pipelined requests, a head split across writes or longer than it looks at).
    InjectStopped = 13,
    /// Outgoing requests left without a traceparent because their thread had several
    /// requests in flight at once (an event loop): which one a call belongs to is unknown.
    InjectAmbiguous = 14,
}

impl Counter {
    pub const COUNT: u32 = 15;
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Self::DataEvents,
        Self::ControlEvents,
        Self::RingFull,
        Self::ReadFault,
        Self::SocketMapFull,
        Self::ArgsMapFull,
        Self::Truncated,
        Self::IovecLimit,
        Self::MmsgLimit,
        Self::ProcessMapFull,
        Self::FrameWalkLost,
        Self::Injected,
        Self::InjectAlreadyPresent,
        Self::InjectStopped,
        Self::InjectAmbiguous,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::DataEvents => "data_events",
            Self::ControlEvents => "control_events",
            Self::RingFull => "ring_full",
            Self::ReadFault => "read_fault",
            Self::SocketMapFull => "socket_map_full",
            Self::ArgsMapFull => "args_map_full",
            Self::Truncated => "truncated",
            Self::IovecLimit => "iovec_limit",
            Self::MmsgLimit => "mmsg_limit",
            Self::ProcessMapFull => "process_map_full",
            Self::FrameWalkLost => "frame_walk_lost",
            Self::Injected => "injected",
            Self::InjectAlreadyPresent => "inject_already_present",
            Self::InjectStopped => "inject_stopped",
            Self::InjectAmbiguous => "inject_ambiguous",
        }
    }

    /// Whether this counter is a loss of data (as opposed to a volume or a partial capture).
    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Self::RingFull
                | Self::SocketMapFull
                | Self::ArgsMapFull
                | Self::MmsgLimit
                | Self::ProcessMapFull
        )
    }
}

// The kernel and the agent must agree on these layouts byte for byte.
const _: () = assert!(size_of::<EventHeader>() == 32);
const _: () = assert!(size_of::<DataEvent>() == 96);
const _: () = assert!(size_of::<TraceIds>() == 40);
// The kernel zeroes a data event's ids in 8-byte words.
const _: () = assert!(core::mem::offset_of!(DataEvent, ids) % 8 == 0);
const _: () = assert!(size_of::<ConnEvent>() == 104);
const _: () = assert!(size_of::<SockKey>() == 8);
const _: () = assert!(size_of::<SockInfo>() == 16);
const _: () = assert!(size_of::<ProcessInfo>() == 4);
const _: () = assert!(size_of::<ProcessEvent>() == 40);
const _: () = assert!(size_of::<FrameHint>() == 80);
const _: () = assert!(MAX_CAPTURE_BYTES.is_power_of_two());
const _: () = assert!(DEFAULT_CAPTURE_BYTES as usize <= MAX_CAPTURE_BYTES);
const _: () = assert!(Counter::ALL.len() == Counter::COUNT as usize);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data, #[repr(C)], no padding the kernel could leave uninitialised
    // (explicit `_pad` fields), every bit pattern valid.
    unsafe impl aya::Pod for super::SockKey {}
    unsafe impl aya::Pod for super::SockInfo {}
    unsafe impl aya::Pod for super::ProcessInfo {}
}
