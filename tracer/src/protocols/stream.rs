//! One direction of a connection as a byte stream, rebuilt from syscall captures.
//!
//! The kernel reports, per syscall, how many bytes moved (`total`) and the first few of them
//! (`captured`). The stream keeps the captured bytes and remembers the uncaptured remainder of
//! each syscall as a *gap*: parsers read heads from captured bytes and count bodies through gaps,
//! so a body larger than the capture neither desynchronises the stream nor costs memory.

use std::collections::VecDeque;

use bytes::{Buf, BytesMut};
use tracer_common::TraceIds;

/// When, and by which thread, one syscall moved its bytes; and the trace ids the kernel
/// decided in it (traceparent injection), which the request it starts must carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegTime {
    /// CLOCK_MONOTONIC ns at syscall entry.
    pub enter_ns: u64,
    /// CLOCK_MONOTONIC ns at syscall exit.
    pub exit_ns: u64,
    pub tid: u32,
    pub ids: Option<TraceIds>,
}

/// The bytes of one syscall: `captured` bytes held in the buffer, then `gap` bytes not captured.
#[derive(Clone, Copy, Debug)]
struct Piece {
    captured: usize,
    gap: u64,
    time: SegTime,
    /// The piece begins a syscall (a syscall is one piece, or several when the kernel handed
    /// over bytes from past the captured prefix).
    syscall_start: bool,
}

impl Piece {
    fn len(&self) -> u64 {
        self.captured as u64 + self.gap
    }
}

#[derive(Default, Debug)]
pub struct StreamBuffer {
    /// Captured bytes from the read position on.
    data: BytesMut,
    /// Syscall pieces from the one holding the read position on.
    pieces: VecDeque<Piece>,
    /// Logical bytes of `pieces[0]` already consumed.
    front_used: u64,
}

impl StreamBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one syscall's bytes: `captured` is a prefix of the `total` bytes it moved.
    pub fn push(&mut self, captured: &[u8], total: u64, time: SegTime) {
        self.push_runs::<&[u8]>(captured, &[], total, time);
    }

    /// Appends one syscall's bytes: the captured `prefix`, and further captured `runs` as
    /// (offset from the syscall's start, bytes), in increasing offsets. Runs overlapping the
    /// prefix, each other or the end are clipped (they are the same bytes).
    pub fn push_runs<B: AsRef<[u8]>>(
        &mut self,
        prefix: &[u8],
        runs: &[(u64, B)],
        total: u64,
        time: SegTime,
    ) {
        let total = total.max(prefix.len() as u64);
        if total == 0 {
            return;
        }
        self.data.extend_from_slice(prefix);
        let mut piece = Piece {
            captured: prefix.len(),
            gap: 0,
            time,
            syscall_start: true,
        };
        let mut at = prefix.len() as u64;
        for (offset, bytes) in runs {
            let (offset, bytes) = (*offset, bytes.as_ref());
            if offset >= total || offset + bytes.len() as u64 <= at {
                continue;
            }
            let start = offset.max(at);
            let skip = (start - offset) as usize;
            let end = (offset + bytes.len() as u64).min(total);
            piece.gap = start - at;
            self.pieces.push_back(piece);
            self.data
                .extend_from_slice(&bytes[skip..skip + (end - start) as usize]);
            piece = Piece {
                captured: (end - start) as usize,
                gap: 0,
                time,
                syscall_start: false,
            };
            at = end;
        }
        piece.gap = total - at;
        self.pieces.push_back(piece);
    }

    /// Logical bytes available (captured and not).
    pub fn len(&self) -> u64 {
        self.pieces.iter().map(Piece::len).sum::<u64>() - self.front_used
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Captured bytes held (what this buffer costs in memory).
    pub fn buffered(&self) -> usize {
        self.data.len()
    }

    /// The captured bytes from the read position up to the first gap, and whether a gap follows
    /// them (false: they run to the end of what arrived so far). Empty with `true` when the read
    /// position is inside a gap.
    pub fn head(&self) -> (&[u8], bool) {
        let mut run = 0usize;
        let mut used = self.front_used;
        for piece in &self.pieces {
            let captured_left = (piece.captured as u64).saturating_sub(used) as usize;
            run += captured_left;
            if piece.gap > 0 {
                return (&self.data[..run], true);
            }
            used = 0;
        }
        (&self.data[..run], false)
    }

    /// The rest of the syscall holding the read position: the captured bytes of the current
    /// piece, and how many more bytes the syscall holds after them.
    /// `None` when nothing is buffered.
    pub fn front_piece(&self) -> Option<(&[u8], u64)> {
        let front = self.pieces.front()?;
        let captured_left = (front.captured as u64).saturating_sub(self.front_used);
        let rest_of_syscall: u64 =
            self.syscall_pieces().map(Piece::len).sum::<u64>() - self.front_used - captured_left;
        Some((&self.data[..captured_left as usize], rest_of_syscall))
    }

    /// The pieces of the syscall holding the read position.
    fn syscall_pieces(&self) -> impl Iterator<Item = &Piece> {
        self.pieces
            .iter()
            .enumerate()
            .take_while(|(i, p)| *i == 0 || !p.syscall_start)
            .map(|(_, p)| p)
    }

    /// Timing of the syscall holding the next byte.
    pub fn front_time(&self) -> Option<SegTime> {
        self.pieces.front().map(|p| p.time)
    }

    /// Whether the next byte is the first byte of a syscall (frames usually start there).
    pub fn at_piece_start(&self) -> bool {
        self.front_used == 0 && self.pieces.front().is_some_and(|p| p.syscall_start)
    }

    /// Consumes `n` logical bytes (or all there are). Returns the timing of the syscall that
    /// held the last consumed byte.
    pub fn consume(&mut self, mut n: u64) -> Option<SegTime> {
        let mut last = None;
        while n > 0 {
            let Some(front) = self.pieces.front() else {
                break;
            };
            let front = *front;
            let left = front.len() - self.front_used;
            let take = left.min(n);
            // Captured bytes of the front piece lie before its gap.
            let captured_left = (front.captured as u64).saturating_sub(self.front_used);
            let drop = captured_left.min(take) as usize;
            self.data.advance(drop);
            self.front_used += take;
            n -= take;
            last = Some(front.time);
            if self.front_used == front.len() {
                self.pieces.pop_front();
                self.front_used = 0;
            }
        }
        last
    }

    /// Drops everything up to the next syscall boundary (the rest of the current syscall).
    pub fn skip_piece(&mut self) -> u64 {
        let left = self.syscall_pieces().map(Piece::len).sum::<u64>() - self.front_used;
        self.consume(left);
        left
    }

    /// Drops everything.
    pub fn clear(&mut self) -> u64 {
        let n = self.len();
        self.data.clear();
        self.pieces.clear();
        self.front_used = 0;
        n
    }

    /// Timing of the last syscall pushed.
    pub fn back_time(&self) -> Option<SegTime> {
        self.pieces.back().map(|p| p.time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u64) -> SegTime {
        SegTime {
            enter_ns: n,
            exit_ns: n + 1,
            tid: 7,
            ids: None,
        }
    }

    #[test]
    fn head_spans_pieces_until_a_gap() {
        let mut s = StreamBuffer::new();
        s.push(b"GET / HT", 8, t(1));
        s.push(b"TP/1.1\r\n", 20, t(2));
        s.push(b"next", 4, t(3));
        assert_eq!(s.head(), (&b"GET / HTTP/1.1\r\n"[..], true));
        assert_eq!(s.len(), 32);
        // Consume into the gap of the second piece: the head is empty, a gap follows.
        assert_eq!(s.consume(20), Some(t(2)));
        assert_eq!(s.head(), (&b""[..], true));
        assert_eq!(s.consume(8), Some(t(2)));
        assert!(s.at_piece_start());
        assert_eq!(s.head(), (&b"next"[..], false));
        assert_eq!(s.front_time(), Some(t(3)));
    }

    #[test]
    fn consume_reports_the_piece_of_the_last_byte_and_frees_memory() {
        let mut s = StreamBuffer::new();
        s.push(b"abc", 3, t(1));
        s.push(b"de", 1000, t(2));
        assert_eq!(s.consume(2), Some(t(1)));
        assert_eq!(s.head(), (&b"cde"[..], true));
        assert_eq!(s.consume(500), Some(t(2)));
        assert_eq!(s.buffered(), 0);
        assert_eq!(s.len(), 501);
        assert_eq!(s.consume(10_000), Some(t(2)));
        assert!(s.is_empty());
        assert_eq!(s.consume(1), None);
    }

    #[test]
    fn front_piece_is_the_rest_of_one_syscall() {
        let mut s = StreamBuffer::new();
        assert_eq!(s.front_piece(), None);
        s.push(b"abcd", 10, t(1));
        s.push(b"ef", 2, t(2));
        assert_eq!(s.front_piece(), Some((&b"abcd"[..], 6)));
        s.consume(2);
        assert_eq!(s.front_piece(), Some((&b"cd"[..], 6)));
        s.consume(5);
        assert_eq!(s.front_piece(), Some((&b""[..], 3)));
        s.consume(3);
        assert_eq!(s.front_piece(), Some((&b"ef"[..], 0)));
    }

    #[test]
    fn runs_past_the_prefix_are_captured_bytes_between_gaps() {
        let mut s = StreamBuffer::new();
        // 100 bytes moved; 4 captured at the start, 3 at 10, 5 at 20 (overlapping the next
        // run by 1), 2 at 24, and one run past the end that is dropped.
        let runs: [(u64, &[u8]); 4] = [(10, b"xyz"), (20, b"12345"), (24, b"56"), (200, b"!")];
        s.push_runs(b"abcd", &runs, 100, t(1));
        s.push(b"next", 4, t(2));
        assert_eq!(s.len(), 104);
        assert_eq!(s.head(), (&b"abcd"[..], true));
        assert_eq!(s.front_piece(), Some((&b"abcd"[..], 96)));
        assert_eq!(s.consume(10), Some(t(1)));
        assert!(!s.at_piece_start(), "a run is not the start of a syscall");
        assert_eq!(s.head(), (&b"xyz"[..], true));
        assert_eq!(s.consume(10), Some(t(1)));
        assert_eq!(s.head(), (&b"123456"[..], true));
        // The current piece only; `head` joins the adjacent run.
        assert_eq!(s.front_piece(), Some((&b"12345"[..], 75)));
        // The rest of the syscall goes in one skip.
        assert_eq!(s.skip_piece(), 80);
        assert!(s.at_piece_start());
        assert_eq!(s.head(), (&b"next"[..], false));
        assert_eq!(s.buffered(), 4);
    }

    #[test]
    fn skip_piece_drops_to_the_next_syscall() {
        let mut s = StreamBuffer::new();
        s.push(b"garbage", 7, t(1));
        s.push(b"GET", 3, t(2));
        s.consume(2);
        assert_eq!(s.skip_piece(), 5);
        assert_eq!(s.head(), (&b"GET"[..], false));
    }
}
