//! traceparent injection (opt-in: the agent sets `INJECT_TRACEPARENT` at load time).
//!
//! - `server`: when a traced process reads an HTTP/1 request, the kernel decides the server
//!   span's ids (continued from a valid incoming `traceparent`, else a new trace) and keeps
//!   them per thread, until that thread writes on the server socket (its response).
//! - `client`: an `sk_msg` program on the client sockets of traced processes inserts one
//!   `traceparent` line into an outgoing HTTP/1 request written by a thread that is serving a
//!   request, and leaves the client span's ids for the syscall's exit tracepoint to report.
//! - Client sockets enter `INJECT_SOCKETS` when they connect (see `register_*`).

pub mod client;
pub mod exit;
pub mod server;

use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::bpf_sock_ops,
    helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    macros::map,
    maps::{LruHashMap, PerCpuArray, SockHash},
    programs::SockOpsContext,
};
use tracer_common::{SockKey, TraceIds};

/// Set by the agent (`--inject-traceparent`); zero: nothing here runs.
#[unsafe(no_mangle)]
static INJECT_TRACEPARENT: u32 = 0;

#[inline(always)]
pub fn enabled() -> bool {
    unsafe { core::ptr::read_volatile(&INJECT_TRACEPARENT) != 0 }
}

/// The agent's root sampler as a threshold (see `inject_names::GLOBAL_SAMPLE_BELOW`).
#[unsafe(no_mangle)]
static INJECT_SAMPLE_BELOW: u64 = u64::MAX;

/// W3C trace-flags for a trace the kernel starts: sampled as the agent's sampler will decide.
#[inline(always)]
pub fn root_flags(trace_id: &[u8; 16]) -> u8 {
    let mut low = 0u64;
    let mut i = 9;
    while i < 16 {
        low = (low << 8) | trace_id[i] as u64;
        i += 1;
    }
    (low < unsafe { core::ptr::read_volatile(&INJECT_SAMPLE_BELOW) }) as u8
}

/// The request a thread is serving: the parent of the calls it makes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ThreadContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
    /// Non-zero: the thread had another request in flight when it read this one (an event
    /// loop): its calls cannot be told apart, so none gets a traceparent.
    pub ambiguous: u8,
    pub _pad: [u8; 2],
    /// The server socket the request came on (its response ends the context).
    pub server_fd: i32,
    pub server_gen: u64,
    pub since_ns: u64,
}

/// A context older than this is not a parent any more (a request that never got answered).
pub const MAX_CONTEXT_AGE_NS: u64 = 60_000_000_000;

#[map(name = "THREAD_CONTEXT")]
pub static THREAD_CONTEXT: LruHashMap<u64, ThreadContext> = LruHashMap::with_max_entries(16384, 0);

/// The ids `client` inserted during a syscall, for that syscall's exit to report.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Injected {
    pub ids: TraceIds,
    pub at_ns: u64,
}

#[map(name = "INJECTED")]
pub static INJECTED: LruHashMap<u64, Injected> = LruHashMap::with_max_entries(4096, 0);

/// Client sockets of traced processes, whose outgoing messages `client` sees.
#[map(name = "INJECT_SOCKETS")]
pub static INJECT_SOCKETS: SockHash<SockKey> = SockHash::with_max_entries(65536, 0);

/// A TCP connection as sock_ops and sk_msg both describe it (the kernel's field encodings,
/// used as they come).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnTuple {
    pub family: u32,
    pub local_port: u32,
    pub remote_port: u32,
    pub local_ip: [u32; 4],
    pub remote_ip: [u32; 4],
}

/// Where a client connection's outgoing bytes are: injection happens only at request starts.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Framing {
    /// Body bytes of the current request still to come.
    pub remaining: u64,
    /// Non-zero once the framing could not be followed: no more injection on this connection.
    pub stopped: u32,
    pub _pad: u32,
}

#[map(name = "INJECT_FRAMING")]
pub static INJECT_FRAMING: LruHashMap<ConnTuple, Framing> = LruHashMap::with_max_entries(65536, 0);

/// A connect by a traced process on this CPU, waiting for its sock_ops callbacks.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnectIntent {
    pub key: SockKey,
    pub ts: u64,
}

#[map(name = "CONNECT_INTENT")]
pub static CONNECT_INTENT: PerCpuArray<ConnectIntent> = PerCpuArray::with_max_entries(1, 0);

/// Connections between TCP_CONNECT_CB (process context: who) and ACTIVE_ESTABLISHED_CB (when
/// a socket may enter a sockhash).
#[map(name = "PENDING_INJECT")]
pub static PENDING_INJECT: LruHashMap<ConnTuple, SockKey> = LruHashMap::with_max_entries(4096, 0);

/// A connect intent older than this was not for the socket at hand.
const INTENT_MAX_AGE_NS: u64 = 10_000_000;

/// sys_enter_connect of a traced process: its connect's sock_ops callbacks follow on this CPU.
#[inline(always)]
pub fn note_connect(key: SockKey) {
    if let Some(slot) = CONNECT_INTENT.get_ptr_mut(0) {
        unsafe {
            (*slot).key = key;
            (*slot).ts = bpf_ktime_get_ns();
        }
    }
}

/// sock_ops TCP_CONNECT_CB (inside connect): remember which traced socket this tuple is.
#[inline(always)]
pub fn register_connecting(ctx: &SockOpsContext) {
    let Some(slot) = CONNECT_INTENT.get_ptr_mut(0) else {
        return;
    };
    let intent = unsafe { *slot };
    let now = unsafe { bpf_ktime_get_ns() };
    if intent.ts == 0 || now.saturating_sub(intent.ts) > INTENT_MAX_AGE_NS {
        return;
    }
    unsafe { (*slot).ts = 0 };
    let _ = PENDING_INJECT.insert(tuple_of(ctx), intent.key, 0);
}

/// sock_ops ACTIVE_ESTABLISHED_CB: the connection is up; its socket may enter the sockhash.
#[inline(always)]
pub fn register_established(ctx: &SockOpsContext) {
    let tuple = tuple_of(ctx);
    let Some(key) = (unsafe { PENDING_INJECT.get(tuple) }).copied() else {
        return;
    };
    let _ = PENDING_INJECT.remove(tuple);
    let mut key = key;
    let ops = unsafe { &mut *(ctx.ops as *mut bpf_sock_ops) };
    if INJECT_SOCKETS.update(&mut key, ops, 0).is_ok() {
        let framing = Framing {
            remaining: 0,
            stopped: 0,
            _pad: 0,
        };
        let _ = INJECT_FRAMING.insert(tuple, framing, 0);
    }
}

#[inline(always)]
fn tuple_of(ctx: &SockOpsContext) -> ConnTuple {
    let ops = ctx.ops;
    // Every field is read at a constant offset from the context pointer, in its own volatile
    // load: the verifier refuses a context access through a derived pointer, which is what the
    // compiler makes of array fields and of loads it merges across branches.
    unsafe {
        conn_tuple(
            read_volatile(&raw const (*ops).family),
            read_volatile(&raw const (*ops).local_port),
            read_volatile(&raw const (*ops).remote_port),
            [
                read_volatile(&raw const (*ops).local_ip4),
                read_volatile(&raw const (*ops).local_ip6[0]),
                read_volatile(&raw const (*ops).local_ip6[1]),
                read_volatile(&raw const (*ops).local_ip6[2]),
                read_volatile(&raw const (*ops).local_ip6[3]),
            ],
            [
                read_volatile(&raw const (*ops).remote_ip4),
                read_volatile(&raw const (*ops).remote_ip6[0]),
                read_volatile(&raw const (*ops).remote_ip6[1]),
                read_volatile(&raw const (*ops).remote_ip6[2]),
                read_volatile(&raw const (*ops).remote_ip6[3]),
            ],
        )
    }
}

/// A tuple from the context's fields: `[ip4, ip6...]` per side.
#[inline(always)]
pub fn conn_tuple(
    family: u32,
    local_port: u32,
    remote_port: u32,
    local: [u32; 5],
    remote: [u32; 5],
) -> ConnTuple {
    let v4 = family == 2;
    ConnTuple {
        family,
        local_port,
        remote_port,
        local_ip: if v4 {
            [local[0], 0, 0, 0]
        } else {
            [local[1], local[2], local[3], local[4]]
        },
        remote_ip: if v4 {
            [remote[0], 0, 0, 0]
        } else {
            [remote[1], remote[2], remote[3], remote[4]]
        },
    }
}

/// Random non-zero ids.
#[inline(always)]
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        let word = unsafe { bpf_get_prandom_u32() }.to_ne_bytes();
        let mut j = 0;
        while j < 4 && i + j < N {
            out[i + j] = word[j];
            j += 1;
        }
        i += 4;
    }
    if out == [0u8; N] {
        out[N - 1] = 1;
    }
    out
}
