//! The server side of injection: when a traced process reads the head of an HTTP/1 request,
//! decide the ids of its server span and keep them for the thread.
//!
//! The head is searched with `bpf_loop` (see `loops`), from the tail-called program
//! `inject_syscall_exit`.

use aya_ebpf::helpers::generated::bpf_ktime_get_ns;
use tracer_common::{IDS_SERVER, MAX_CAPTURE_BYTES, TraceIds};

use super::{MAX_CONTEXT_AGE_NS, THREAD_CONTEXT, ThreadContext, random_bytes, root_flags};
use crate::{
    loops::{self, LoopBody, Step},
    maps::Scratch,
};

/// Bytes of a request head searched for `traceparent` (a header past them is not seen).
const SCAN: u64 = 4096;
const MASK: u64 = MAX_CAPTURE_BYTES as u64 - 1;
const NAME: &[u8; 12] = b"traceparent:";
/// A version-00 value: `00-<32 hex>-<16 hex>-<2 hex>`.
const VALUE_LEN: u64 = 55;

/// Whether the payload starts like an HTTP/1 request line: an upper-case method token and a
/// space (and not the HTTP/2 preface, `PRI * HTTP/2.0`).
#[inline(always)]
pub fn looks_like_request(scratch: &Scratch) -> bool {
    if scratch.event.captured_len < 16 || scratch.payload[..4] == *b"PRI " {
        return false;
    }
    let mut i = 0;
    while i < 8 {
        let b = scratch.payload[i];
        if b == b' ' {
            return i >= 3;
        }
        if !b.is_ascii_uppercase() {
            return false;
        }
        i += 1;
    }
    false
}

/// The server span's ids for the request head in the scratch, remembered as the thread's
/// context: continued from one valid incoming `traceparent`, else a new trace.
#[inline(always)]
pub fn decide(scratch: &Scratch, id: u64) -> TraceIds {
    let captured = (scratch.event.captured_len as u64).min(MAX_CAPTURE_BYTES as u64);
    let mut search = HeadSearch {
        scratch,
        limit: if captured < SCAN { captured } else { SCAN },
        count: 0,
        value: 0,
    };
    loops::run(SCAN as u32, &mut search);
    let span_id = random_bytes::<8>();
    let parsed = if search.count == 1 {
        parse(scratch, search.value, captured)
    } else {
        None
    };
    let ids = match parsed {
        // Exactly one valid header: continue the caller's trace.
        Some((trace_id, parent_id, flags)) => TraceIds {
            trace_id,
            span_id,
            parent_id,
            flags,
            kind: IDS_SERVER,
            _pad: [0; 6],
        },
        // None, several, or invalid: a new trace (W3C: ignore what is not valid).
        None => {
            let trace_id = random_bytes::<16>();
            TraceIds {
                trace_id,
                span_id,
                parent_id: [0; 8],
                flags: root_flags(&trace_id),
                kind: IDS_SERVER,
                _pad: [0; 6],
            }
        }
    };
    let header = scratch.event.header;
    let now = unsafe { bpf_ktime_get_ns() };
    // Another request of this thread still unanswered (answers remove the context)?
    let ambiguous = match unsafe { THREAD_CONTEXT.get(&id) } {
        Some(previous) if now.saturating_sub(previous.since_ns) <= MAX_CONTEXT_AGE_NS => {
            previous.ambiguous != 0
                || previous.server_fd != header.fd
                || previous.server_gen != header.conn_gen
        }
        _ => false,
    };
    let context = ThreadContext {
        trace_id: ids.trace_id,
        span_id: ids.span_id,
        flags: ids.flags,
        ambiguous: ambiguous as u8,
        _pad: [0; 2],
        server_fd: header.fd,
        server_gen: header.conn_gen,
        since_ns: now,
    };
    let _ = THREAD_CONTEXT.insert(&id, &context, 0);
    ids
}

/// The search for `traceparent` headers in a head: how many, and where the last one's value
/// starts. Stops at the blank line that ends the head.
struct HeadSearch<'a> {
    scratch: &'a Scratch,
    limit: u64,
    count: u64,
    value: u64,
}

impl LoopBody for HeadSearch<'_> {
    fn step(&mut self, i: u64) -> Step {
        if i + 2 + NAME.len() as u64 > self.limit {
            return Step::Stop;
        }
        if byte(self.scratch, i) != b'\n' {
            return Step::Continue;
        }
        if byte(self.scratch, i + 1) == b'\r' {
            return Step::Stop; // the blank line: the head ends here
        }
        if name_at(self.scratch, i + 1) {
            self.count += 1;
            self.value = i + 1 + NAME.len() as u64;
        }
        Step::Continue
    }
}

#[inline(always)]
fn byte(scratch: &Scratch, at: u64) -> u8 {
    scratch.payload[(at & MASK) as usize]
}

/// `traceparent:` at `at`, in any letter case.
#[inline(always)]
fn name_at(scratch: &Scratch, at: u64) -> bool {
    let mut k = 0;
    while k < NAME.len() {
        if byte(scratch, at + k as u64).to_ascii_lowercase() != NAME[k] {
            return false;
        }
        k += 1;
    }
    true
}

/// A version-00 (or later) traceparent value at `at` (after optional spaces): trace id,
/// parent id, flags. Strict as W3C Trace Context level 1: lower-case hex, no all-zero ids,
/// version ff invalid, version 00 exactly 55 characters.
#[inline(always)]
fn parse(scratch: &Scratch, at: u64, captured: u64) -> Option<([u8; 16], [u8; 8], u8)> {
    let mut at = at;
    let mut k = 0;
    while k < 4 && (byte(scratch, at) == b' ' || byte(scratch, at) == b'\t') {
        at += 1;
        k += 1;
    }
    if at + VALUE_LEN + 1 > captured {
        return None;
    }
    let version = hex_byte(scratch, at)?;
    if version == 0xff
        || byte(scratch, at + 2) != b'-'
        || byte(scratch, at + 35) != b'-'
        || byte(scratch, at + 52) != b'-'
    {
        return None;
    }
    let after = byte(scratch, at + VALUE_LEN);
    let ends = after == b'\r' || after == b' ' || after == b'\t';
    if !(ends || (version > 0 && after == b'-')) {
        return None;
    }
    let trace_id: [u8; 16] = hex_bytes(scratch, at + 3)?;
    let parent_id: [u8; 8] = hex_bytes(scratch, at + 36)?;
    let flags = hex_byte(scratch, at + 53)?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    // A later version keeps only the sampled flag (W3C level 1, 3.3.2).
    Some((
        trace_id,
        parent_id,
        if version == 0 { flags } else { flags & 1 },
    ))
}

#[inline(always)]
fn hex_bytes<const N: usize>(scratch: &Scratch, at: u64) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = hex_byte(scratch, at + 2 * i as u64)?;
        i += 1;
    }
    Some(out)
}

#[inline(always)]
fn hex_byte(scratch: &Scratch, at: u64) -> Option<u8> {
    Some(nibble(byte(scratch, at))? << 4 | nibble(byte(scratch, at + 1))?)
}

/// Lower-case hex only (W3C).
#[inline(always)]
fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}
