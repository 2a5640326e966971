//! The client side of injection: an `sk_msg` program on the client sockets of traced processes.
//! For an outgoing HTTP/1 request written by a thread that is serving a request, it inserts
//! `traceparent: 00-<trace id>-<new span id>-<flags>` right after the request line.
//!
//! It never corrupts traffic: it only acts at a request start (it follows Content-Length
//! bodies to know where the next request starts, and stops for good on a connection whose
//! framing it cannot follow: chunked bodies, pipelined requests, heads split across writes or
//! longer than it looks at), only when the whole head is in view, and never when the request
//! carries a `traceparent` already. Bytes that are not a request line (HTTP/2, TLS) are left
//! alone, and connections opened before injection was on are not in its socket map at all.

use core::{ffi::c_void, ptr::read_volatile};

use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_msg_pull_data, bpf_probe_read_kernel,
    },
    macros::map,
    maps::PerCpuArray,
    programs::SkMsgContext,
};
use tracer_common::{Counter, IDS_CLIENT, TraceIds};

use super::{
    ConnTuple, Framing, INJECT_FRAMING, INJECTED, Injected, MAX_CONTEXT_AGE_NS, THREAD_CONTEXT,
    conn_tuple, enabled, random_bytes,
};
use crate::{
    loops::{self, LoopBody, Step},
    maps::{count, is_enabled},
};

/// Bytes of a request looked at for its head; a longer head stops injection on the connection.
const HEAD_MAX: u64 = 2048;
const HEAD_MASK: u64 = HEAD_MAX - 1;
/// `traceparent: 00-` + 32 + `-` + 16 + `-` + 2 + CRLF.
const LINE: usize = 70;
const NO_VALUE: u64 = u64::MAX;

/// Scratch of the sk_msg program: a copy of the head (parsed there with masked offsets, which
/// the verifier follows far more cheaply than packet pointers), what the scan found, and the
/// line to insert.
#[repr(C)]
pub struct MsgScratch {
    head: [u8; HEAD_MAX as usize],
    /// Offset just after the request line's CRLF (0: not found).
    line_end: u64,
    /// Offset just after the blank line that ends the head (0: not found).
    head_end: u64,
    /// Offset of the Content-Length value (NO_VALUE: none).
    content_length_at: u64,
    /// Non-zero: a Transfer-Encoding header (chunked or not: its framing is not followed).
    transfer_encoding: u64,
    /// Non-zero: the request carries a traceparent already.
    traceparent: u64,
    /// Bytes of the head in `head`.
    len: u64,
    line: [u8; LINE + 2],
}

#[map(name = "MSG_SCRATCH")]
static MSG_SCRATCH: PerCpuArray<MsgScratch> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn on_message(ctx: &SkMsgContext) {
    if !enabled() {
        return;
    }
    let id = unsafe { bpf_get_current_pid_tgid() };
    if !is_enabled((id >> 32) as u32) {
        return;
    }
    let tuple = tuple_of(ctx);
    let Some(framing) = INJECT_FRAMING.get_ptr_mut(&tuple) else {
        return;
    };
    let framing = unsafe { &mut *framing };
    if framing.stopped != 0 {
        return;
    }
    let size = ctx.size() as u64;
    if framing.remaining > 0 {
        if size <= framing.remaining {
            framing.remaining -= size;
        } else {
            // The next request starts inside this message: not followed.
            stop(framing);
        }
        return;
    }
    let Some(scratch) = MSG_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let scratch = unsafe { &mut *scratch };
    // A request starts here: its whole head must be in view.
    let want = if size < HEAD_MAX { size } else { HEAD_MAX };
    if !copy_head(ctx, scratch, want) {
        stop(framing);
        return;
    }
    if !scan_head(scratch, want) || !starts_request(scratch, want) {
        // Not an HTTP/1 request head we can see whole: leave this connection alone.
        stop(framing);
        return;
    }
    let body = if scratch.content_length_at != NO_VALUE {
        match content_length(scratch, scratch.content_length_at) {
            Some(n) => n,
            None => {
                stop(framing);
                return;
            }
        }
    } else {
        0
    };
    let in_this_message = size - scratch.head_end;
    if in_this_message > body {
        // Another request follows in the same message (pipelining): not followed.
        stop(framing);
        return;
    }
    framing.remaining = body - in_this_message;
    let chunked = scratch.transfer_encoding != 0;
    if scratch.traceparent != 0 {
        count(Counter::InjectAlreadyPresent);
    } else {
        insert(ctx, scratch, id, scratch.line_end);
    }
    if chunked {
        // Where this body ends is not followed: no more injection on this connection.
        stop(framing);
    }
}

#[inline(always)]
fn stop(framing: &mut Framing) {
    framing.stopped = 1;
    count(Counter::InjectStopped);
}

/// Copies the message's first `len` bytes (made linear first if they are not) to the scratch.
#[inline(always)]
fn copy_head(ctx: &SkMsgContext, scratch: &mut MsgScratch, len: u64) -> bool {
    if ((ctx.data_end() - ctx.data()) as u64) < len
        && unsafe { bpf_msg_pull_data(ctx.msg, 0, len as u32, 0) } != 0
    {
        return false;
    }
    let len = len & (HEAD_MAX * 2 - 1);
    if len == 0 || len > HEAD_MAX || ((ctx.data_end() - ctx.data()) as u64) < len {
        return false;
    }
    unsafe {
        bpf_probe_read_kernel(
            scratch.head.as_mut_ptr() as *mut c_void,
            len as u32,
            ctx.data() as *const c_void,
        ) == 0
    }
}

/// Inserts the line if the thread serves a request, and leaves the ids for the syscall's exit.
#[inline(always)]
fn insert(ctx: &SkMsgContext, scratch: &mut MsgScratch, id: u64, at: u64) {
    let Some(serving) = (unsafe { THREAD_CONTEXT.get(&id) }).copied() else {
        return;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    if now.saturating_sub(serving.since_ns) > MAX_CONTEXT_AGE_NS {
        return;
    }
    if serving.ambiguous != 0 {
        count(Counter::InjectAmbiguous);
        return;
    }
    let span_id = random_bytes::<8>();
    build_line(
        &mut scratch.line,
        &serving.trace_id,
        &span_id,
        serving.flags,
    );
    let at = at as u32;
    if ctx.push_data(at, LINE as u32, 0).is_err()
        || unsafe { bpf_msg_pull_data(ctx.msg, at, at + LINE as u32, 0) } != 0
    {
        return;
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + LINE > end {
        return;
    }
    let mut k = 0;
    while k < LINE {
        unsafe { *((data + k) as *mut u8) = scratch.line[k] };
        k += 1;
    }
    let ids = TraceIds {
        trace_id: serving.trace_id,
        span_id,
        parent_id: serving.span_id,
        flags: serving.flags,
        kind: IDS_CLIENT,
        _pad: [0; 6],
    };
    let _ = INJECTED.insert(&id, &Injected { ids, at_ns: now }, 0);
    count(Counter::Injected);
}

/// `traceparent: 00-<trace>-<span>-<flags>\r\n`
#[inline(always)]
fn build_line(line: &mut [u8; LINE + 2], trace: &[u8; 16], span: &[u8; 8], flags: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let prefix = b"traceparent: 00-";
    let mut i = 0;
    while i < prefix.len() {
        line[i] = prefix[i];
        i += 1;
    }
    let mut at = prefix.len();
    let mut j = 0;
    while j < 16 {
        line[at] = HEX[(trace[j] >> 4) as usize];
        line[at + 1] = HEX[(trace[j] & 15) as usize];
        at += 2;
        j += 1;
    }
    line[at] = b'-';
    at += 1;
    j = 0;
    while j < 8 {
        line[at] = HEX[(span[j] >> 4) as usize];
        line[at + 1] = HEX[(span[j] & 15) as usize];
        at += 2;
        j += 1;
    }
    line[at] = b'-';
    line[at + 1] = HEX[(flags >> 4) as usize];
    line[at + 2] = HEX[(flags & 15) as usize];
    line[at + 3] = b'\r';
    line[at + 4] = b'\n';
}

#[inline(always)]
fn byte(scratch: &MsgScratch, at: u64) -> u8 {
    scratch.head[(at & HEAD_MASK) as usize]
}

/// The head's landmarks, into the scratch. False if the head does not end within `len`.
#[inline(always)]
fn scan_head(scratch: &mut MsgScratch, len: u64) -> bool {
    scratch.line_end = 0;
    scratch.head_end = 0;
    scratch.content_length_at = NO_VALUE;
    scratch.transfer_encoding = 0;
    scratch.traceparent = 0;
    scratch.len = len;
    loops::run(HEAD_MAX as u32, scratch);
    scratch.head_end != 0
}

impl LoopBody for MsgScratch {
    /// One byte of the head scan: landmarks start after a line feed.
    fn step(&mut self, i: u64) -> Step {
        if i + 3 > self.len {
            return Step::Stop;
        }
        if byte(self, i) != b'\n' {
            return Step::Continue;
        }
        if self.line_end == 0 {
            self.line_end = i + 1;
        }
        if byte(self, i + 1) == b'\r' && byte(self, i + 2) == b'\n' {
            self.head_end = i + 3;
            return Step::Stop;
        }
        if header_is(self, i + 1, self.len, b"traceparent:") {
            self.traceparent = 1;
        } else if header_is(self, i + 1, self.len, b"content-length:") {
            self.content_length_at = i + 1 + 15;
        } else if header_is(self, i + 1, self.len, b"transfer-encoding:") {
            self.transfer_encoding = 1;
        }
        Step::Continue
    }
}

/// `name` (lower case) at `at`, in any letter case.
#[inline(always)]
fn header_is<const N: usize>(scratch: &MsgScratch, at: u64, len: u64, name: &[u8; N]) -> bool {
    if at + N as u64 > len {
        return false;
    }
    let mut k = 0;
    while k < N {
        if byte(scratch, at + k as u64).to_ascii_lowercase() != name[k] {
            return false;
        }
        k += 1;
    }
    true
}

/// The head starts with `METHOD SP ... HTTP/1.x CRLF`.
#[inline(always)]
fn starts_request(scratch: &MsgScratch, len: u64) -> bool {
    if len < 16 {
        return false;
    }
    let mut i = 0;
    while i < 8 {
        let b = scratch.head[i];
        if b == b' ' {
            return i >= 3 && http1_line(scratch);
        }
        if !b.is_ascii_uppercase() {
            return false;
        }
        i += 1;
    }
    false
}

/// The request line (ending at the scratch's `line_end`) ends with ` HTTP/1.x\r\n`.
#[inline(always)]
fn http1_line(scratch: &MsgScratch) -> bool {
    let line_end = scratch.line_end;
    if !(11..=HEAD_MAX).contains(&line_end) {
        return false;
    }
    let from = line_end - 11;
    let expected = b" HTTP/1.";
    let mut k = 0;
    while k < expected.len() {
        if byte(scratch, from + k as u64) != expected[k] {
            return false;
        }
        k += 1;
    }
    byte(scratch, from + 9) == b'\r' && byte(scratch, from + 10) == b'\n'
}

/// The decimal Content-Length value at `at` (after optional spaces); None if malformed.
#[inline(always)]
fn content_length(scratch: &MsgScratch, at: u64) -> Option<u64> {
    let mut p = at;
    let mut k = 0;
    while k < 4 && byte(scratch, p) == b' ' {
        p += 1;
        k += 1;
    }
    let mut value: u64 = 0;
    let mut digits = 0;
    while digits < 19 {
        let b = byte(scratch, p);
        if !b.is_ascii_digit() {
            break;
        }
        value = value * 10 + (b - b'0') as u64;
        p += 1;
        digits += 1;
    }
    (digits > 0).then_some(value)
}

/// The message's connection, read field by field (see `inject::tuple_of`).
#[inline(always)]
fn tuple_of(ctx: &SkMsgContext) -> ConnTuple {
    let md = ctx.msg;
    unsafe {
        conn_tuple(
            read_volatile(&raw const (*md).family),
            read_volatile(&raw const (*md).local_port),
            read_volatile(&raw const (*md).remote_port),
            [
                read_volatile(&raw const (*md).local_ip4),
                read_volatile(&raw const (*md).local_ip6[0]),
                read_volatile(&raw const (*md).local_ip6[1]),
                read_volatile(&raw const (*md).local_ip6[2]),
                read_volatile(&raw const (*md).local_ip6[3]),
            ],
            [
                read_volatile(&raw const (*md).remote_ip4),
                read_volatile(&raw const (*md).remote_ip6[0]),
                read_volatile(&raw const (*md).remote_ip6[1]),
                read_volatile(&raw const (*md).remote_ip6[2]),
                read_volatile(&raw const (*md).remote_ip6[3]),
            ],
        )
    }
}
