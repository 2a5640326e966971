//! HTTP/2 frame walking. A syscall carries many frames; the agent only gets the first
//! `CAPTURE_BYTES`, so the headers of frames further on (the END_STREAM of a large response,
//! gRPC trailers after a large message) would be lost, and with them the stream's framing.
//! For sockets that started with the HTTP/2 preface, the kernel follows the frame headers
//! through the whole buffer (each header says where the next one is, also across syscalls) and
//! hands over the headers past the captured prefix, with the payload of small header blocks.
//!
//! One frame per program run: `h2_frame_step` reads a frame and tail-calls itself for the
//! next, up to `MAX_WALK` frames. A loop over frames inside one program costs the verifier
//! too much (each frame's branches multiply its states); one step is verified once.

use aya_ebpf::{
    helpers::generated::bpf_probe_read_user,
    macros::map,
    maps::{HashMap, ProgramArray},
    programs::TracePointContext,
};
use core::ffi::c_void;
use tracer_common::{
    Counter, FRAME_HINT_PAYLOAD, FrameHint, HTTP2_PREFACE, MAX_FRAME_HINTS, SOCK_FLAG_HTTP2,
    SockKey,
};

use crate::data::{IOVEC_BATCH, load_iovecs};
use crate::maps::{InFlight, SCRATCH, SOCKETS, Scratch, count};

/// Frames looked at per syscall (hints or not): the tail-call chain is at most 33 long.
const MAX_WALK: u64 = 32;
const HEADER: u64 = 9;
const HEADERS: u8 = 1;
const CONTINUATION: u8 = 9;

/// Where the next frame header is, per socket and direction.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FrameWalk {
    pub conn_gen: u64,
    /// Offset of the next frame header counted from the start of the next syscall, by
    /// direction (ingress, egress).
    pub next: [u64; 2],
}

// The agent frees these entries as opaque `[u64; 3]` values.
const _: () = assert!(size_of::<FrameWalk>() == 24);

#[map(name = "FRAME_WALKS")]
pub static FRAME_WALKS: HashMap<SockKey, FrameWalk> = HashMap::with_max_entries(16384, 0);

/// Programs reached by tail call, put there by the agent's loader.
#[map(name = "TAIL_CALLS")]
pub static TAIL_CALLS: ProgramArray = ProgramArray::with_max_entries(2, 0);
/// `TAIL_CALLS` slot of `h2_frame_step`.
pub const FRAME_STEP: u32 = 0;
/// `TAIL_CALLS` slot of `inject_syscall_exit` (traceparent injection).
pub const INJECT_EXIT: u32 = 1;

/// The walk of the current syscall, carried from one step to the next in the per-CPU scratch.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WalkState {
    pub key: SockKey,
    pub conn_gen: u64,
    pub dir: u64,
    pub total: u64,
    pub captured: u64,
    /// 0: `ptr` is a buffer; 1: the iovecs are in `Scratch::iovecs`.
    pub iovecs: u64,
    pub ptr: u64,
    /// The next frame header's offset in the syscall.
    pub off: u64,
    pub hints: u64,
    pub steps: u64,
}

/// Starts walking this syscall's frames, if the socket speaks HTTP/2 (or this syscall is its
/// preface). Does not return when it walks: the last step emits the record. Returns when there
/// is nothing to walk (the caller then emits the record itself).
#[inline(always)]
pub fn start(
    ctx: &TracePointContext,
    scratch: &mut Scratch,
    key: SockKey,
    call: &InFlight,
    dir: usize,
    total: u64,
    captured: u64,
    source: Source,
) {
    let dir = (dir & 1) as u64;
    let off = if call.http2 == 0 {
        if !starts_with_preface(scratch, captured) {
            return;
        }
        // The preface opens the connection: this direction's frames follow it, the other
        // direction's start at its next syscall.
        let mut next = [0u64; 2];
        next[dir as usize] = HTTP2_PREFACE.len() as u64;
        let state = FrameWalk {
            conn_gen: call.conn_gen,
            next,
        };
        if FRAME_WALKS.insert(key, state, 0).is_err() {
            count(Counter::FrameWalkLost);
            return;
        }
        mark_http2(key, call.conn_gen);
        HTTP2_PREFACE.len() as u64
    } else {
        match FRAME_WALKS.get_ptr(key) {
            Some(state) if unsafe { (*state).conn_gen } == call.conn_gen => unsafe {
                (*state).next[dir as usize]
            },
            _ => return,
        }
    };
    let (iovecs, ptr) = match source {
        Source::Buffer(ptr) => (0, ptr),
        Source::Iovec(iov, iovlen) => {
            if !load_iovecs(scratch, iov, iovlen) {
                stop(key);
                return;
            }
            (1, 0)
        }
        Source::None => {
            // sendfile on an HTTP/2 socket: no user buffer to read headers from.
            stop(key);
            return;
        }
    };
    scratch.walk = WalkState {
        key,
        conn_gen: call.conn_gen,
        dir,
        total,
        captured,
        iovecs,
        ptr,
        off,
        hints: 0,
        steps: 0,
    };
    if off >= total {
        // The frame in progress goes on past this syscall.
        set_next(key, dir, off - total);
        return;
    }
    unsafe {
        let _ = TAIL_CALLS.tail_call(ctx, FRAME_STEP);
    }
    // The step program is not installed: no hints for this syscall.
}

/// Where the syscall's bytes are in user memory.
#[derive(Clone, Copy)]
pub enum Source {
    Buffer(u64),
    /// An iovec array and its length.
    Iovec(u64, u64),
    /// No user buffer (sendfile).
    None,
}

/// One frame of the walk; then the next step, or the record.
#[inline(always)]
pub fn step(ctx: &TracePointContext) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let scratch = unsafe { &mut *scratch };
    let w = scratch.walk;
    let captured = if w.captured > tracer_common::MAX_CAPTURE_BYTES as u64 {
        tracer_common::MAX_CAPTURE_BYTES as u64
    } else {
        w.captured
    };
    let hints = w.hints & (MAX_FRAME_HINTS as u64 - 1);
    let slot = unsafe {
        scratch
            .payload
            .as_mut_ptr()
            .add(captured as usize + hints as usize * size_of::<FrameHint>())
    };
    if !read(scratch, &w, w.off, unsafe { slot.add(HINT_HEADER) }, HEADER) {
        finish_lost(scratch, &w);
        return;
    }
    let header = unsafe { core::ptr::read_unaligned(slot.add(HINT_HEADER) as *const [u8; 9]) };
    let length = ((header[0] as u64) << 16) | ((header[1] as u64) << 8) | header[2] as u64;
    let mut kept = w.hints;
    if w.off + HEADER > captured {
        // Past the prefix (or straddling it): the agent needs this header.
        if w.hints >= MAX_FRAME_HINTS as u64 {
            finish_lost(scratch, &w);
            return;
        }
        let small_block = (header[3] == HEADERS || header[3] == CONTINUATION)
            && length <= FRAME_HINT_PAYLOAD as u64
            && w.off + HEADER + length <= w.total;
        let payload_len = if small_block
            && read(
                scratch,
                &w,
                w.off + HEADER,
                unsafe { slot.add(HINT_PAYLOAD) },
                length,
            ) {
            length as u8
        } else {
            0
        };
        unsafe {
            core::ptr::write_unaligned(slot.add(HINT_OFFSET) as *mut u32, w.off as u32);
            core::ptr::write_unaligned(slot.add(HINT_PAYLOAD_LEN), payload_len);
        }
        kept += 1;
    }
    let off = w.off + HEADER + length;
    scratch.walk.off = off;
    scratch.walk.hints = kept;
    scratch.walk.steps = w.steps + 1;
    if off + HEADER <= w.total {
        if w.steps + 1 < MAX_WALK {
            unsafe {
                let _ = TAIL_CALLS.tail_call(ctx, FRAME_STEP);
            }
        }
        // Too many frames in one syscall (or the chain is over): lost from here.
        let w = scratch.walk;
        finish_lost(scratch, &w);
        return;
    }
    if off < w.total {
        // A header split across two syscalls: lost from here.
        let w = scratch.walk;
        finish_lost(scratch, &w);
        return;
    }
    set_next(w.key, w.dir, off - w.total);
    scratch.event.hint_count = kept as u8;
    crate::data::output(scratch);
}

// Field offsets of a `FrameHint` (written byte-wise: slots sit at any alignment).
const HINT_OFFSET: usize = 0;
const HINT_HEADER: usize = 4;
const HINT_PAYLOAD_LEN: usize = 13;
const HINT_PAYLOAD: usize = 16;

/// The walk stops for this socket; the record goes out with the hints found so far.
#[inline(always)]
fn finish_lost(scratch: &mut Scratch, w: &WalkState) {
    stop(w.key);
    scratch.event.hint_count = (w.hints & (MAX_FRAME_HINTS as u64 - 1)) as u8;
    crate::data::output(scratch);
}

#[inline(always)]
fn set_next(key: SockKey, dir: u64, next: u64) {
    if let Some(state) = FRAME_WALKS.get_ptr_mut(key) {
        unsafe { (*state).next[(dir & 1) as usize] = next };
    }
}

/// Stops walking this socket: the agent resynchronises it by itself.
#[inline(always)]
fn stop(key: SockKey) {
    let _ = FRAME_WALKS.remove(key);
    count(Counter::FrameWalkLost);
}

#[inline(always)]
fn starts_with_preface(scratch: &Scratch, captured: u64) -> bool {
    if captured < HTTP2_PREFACE.len() as u64 {
        return false;
    }
    let word = |i: usize| unsafe {
        core::ptr::read_unaligned(scratch.payload.as_ptr().add(i * 8) as *const u64)
    };
    let expected = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&HTTP2_PREFACE[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(w)
    };
    word(0) == expected(0) && word(1) == expected(1) && word(2) == expected(2)
}

#[inline(always)]
fn mark_http2(key: SockKey, conn_gen: u64) {
    if let Some(info) = SOCKETS.get_ptr_mut(key) {
        unsafe {
            if (*info).conn_gen == conn_gen {
                (*info).flags |= SOCK_FLAG_HTTP2;
            }
        }
    }
}

/// Copies `len` (at most 73) bytes at offset `off` of the syscall's buffer to `dst`.
#[inline(always)]
fn read(scratch: &mut Scratch, w: &WalkState, off: u64, dst: *mut u8, len: u64) -> bool {
    let len = if len > HEADER + FRAME_HINT_PAYLOAD as u64 {
        HEADER + FRAME_HINT_PAYLOAD as u64
    } else {
        len
    };
    if len == 0 {
        return true;
    }
    if w.iovecs == 0 {
        return unsafe {
            bpf_probe_read_user(
                dst as *mut c_void,
                len as u32,
                (w.ptr + off) as *const c_void,
            ) == 0
        };
    }
    read_iovecs(scratch, off, dst, len)
}

/// `read` for an iovec buffer: the bytes may span two (or more) iovecs. Fixed trip count
/// with no early exit (iterations past the bytes do nothing), and every loop-carried value
/// through the scratch map: the verifier then walks one state per iovec (see data::gather).
#[inline(always)]
fn read_iovecs(scratch: &mut Scratch, off: u64, dst: *mut u8, len: u64) -> bool {
    let count = scratch.iovec_count;
    let mut skip = off;
    let mut done: u64 = 0;
    let mut j: u64 = 0;
    while j < IOVEC_BATCH {
        let [base, iov_len] = scratch.iovecs[(j & (IOVEC_BATCH - 1)) as usize];
        let iov_len = if j < count { iov_len } else { 0 };
        let (next_skip, want) = if skip >= iov_len {
            (skip - iov_len, 0)
        } else {
            let avail = iov_len - skip;
            let left = len.saturating_sub(done);
            (0, if avail < left { avail } else { left })
        };
        let from = base + skip;
        let launder = &raw mut scratch.walk_launder;
        unsafe { core::ptr::write_volatile(launder, [done, want, next_skip, from]) };
        let [d, w, s, f] = unsafe { core::ptr::read_volatile(launder) };
        let (d, w) = (d & 127, w & 127);
        if w > 0
            && unsafe {
                bpf_probe_read_user(
                    dst.add(d as usize) as *mut c_void,
                    w as u32,
                    f as *const c_void,
                )
            } != 0
        {
            return false;
        }
        done = d + w;
        skip = s;
        j += 1;
    }
    done >= len
}
