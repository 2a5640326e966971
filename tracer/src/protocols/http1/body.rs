//! Reading message bodies: skipping them, not keeping them. Lengths are counted through capture
//! gaps, so a large body costs no memory and does not desynchronise the stream.
//!
//! Chunked bodies need their chunk-size lines. When one is not captured (it sits in a gap) or is
//! malformed, the framing is lost and the body is read in [`Body::Lost`] mode: it ends at a
//! captured terminating chunk (`0\r\n\r\n` ending a syscall's bytes, or followed by the next
//! message), at a syscall whose bytes start the next message, or when the connection closes.
//! Every syscall read in that mode is dropped whole, so the mode costs no memory either.

use super::head::Framing;
use super::start_line::Looks;
use crate::protocols::stream::{SegTime, StreamBuffer};

/// A chunk-size line (with extensions) longer than this is treated as lost framing.
const MAX_CHUNK_LINE: usize = 4096;
/// A trailer section longer than this is treated as lost framing.
const MAX_TRAILERS: usize = 16 * 1024;

/// Recognises the start of the next message on the stream (requests or responses).
pub type StartsMessage = fn(&[u8]) -> Looks;

/// Where the reader is in the body of the current message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Body {
    /// No body is being read: the next bytes are a head.
    #[default]
    Idle,
    /// This many more bytes (Content-Length).
    Length(u64),
    Chunked(Chunk),
    /// Everything until the connection closes.
    UntilClose,
    /// Chunked framing was lost; see the module documentation.
    Lost,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many more bytes of chunk data.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
}

/// Whether the body is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    Done,
    NeedMore,
}

impl Body {
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::NoBody | Framing::Switch | Framing::Length(0) => Body::Idle,
            Framing::Length(n) => Body::Length(n),
            Framing::Chunked => Body::Chunked(Chunk::Size),
            Framing::UntilClose => Body::UntilClose,
        }
    }

    /// Reads (and drops) body bytes from the front of `stream`. `last` becomes the timing of the
    /// syscall that held the last byte consumed.
    pub fn read(
        &mut self,
        stream: &mut StreamBuffer,
        last: &mut SegTime,
        starts: StartsMessage,
    ) -> Progress {
        loop {
            match *self {
                Body::Idle => return Progress::Done,
                Body::Length(left) => {
                    let left = count(stream, left, last);
                    *self = if left == 0 {
                        Body::Idle
                    } else {
                        Body::Length(left)
                    };
                    if left > 0 {
                        return Progress::NeedMore;
                    }
                }
                Body::UntilClose => {
                    count(stream, u64::MAX, last);
                    return Progress::NeedMore;
                }
                Body::Chunked(chunk) => {
                    if !self.step_chunked(chunk, stream, last) {
                        return Progress::NeedMore;
                    }
                }
                Body::Lost => return self.read_lost(stream, last, starts),
            }
        }
    }

    /// One step of chunked decoding; false when it has to wait for more bytes.
    fn step_chunked(
        &mut self,
        chunk: Chunk,
        stream: &mut StreamBuffer,
        last: &mut SegTime,
    ) -> bool {
        let (bytes, cut) = stream.head();
        let next = match chunk {
            Chunk::Size => {
                if bytes.is_empty() {
                    // Nothing captured here: a size line in a gap means the framing is lost.
                    if !cut {
                        return false;
                    }
                    Body::Lost
                } else {
                    match httparse::parse_chunk_size(bytes) {
                        Ok(httparse::Status::Complete((len, size))) => {
                            note(last, stream.consume(len as u64));
                            Body::Chunked(if size == 0 {
                                Chunk::Trailers
                            } else {
                                Chunk::Data(size)
                            })
                        }
                        Ok(httparse::Status::Partial) if !cut && bytes.len() <= MAX_CHUNK_LINE => {
                            return false;
                        }
                        _ => Body::Lost,
                    }
                }
            }
            Chunk::Data(left) => match count(stream, left, last) {
                0 => Body::Chunked(Chunk::DataEnd),
                left => {
                    *self = Body::Chunked(Chunk::Data(left));
                    return false;
                }
            },
            Chunk::DataEnd => {
                let crlf = match bytes {
                    [b'\r', b'\n', ..] => 2,
                    [b'\n', ..] => 1,
                    // Not captured: the CRLF is in the gap; count it.
                    [] | [b'\r'] if cut => 2,
                    [] | [b'\r'] => return false,
                    _ => 0,
                };
                if crlf == 0 {
                    Body::Lost
                } else {
                    note(last, stream.consume(crlf));
                    Body::Chunked(Chunk::Size)
                }
            }
            Chunk::Trailers => {
                let captured = bytes.len();
                if let Some(end) = trailers_end(bytes) {
                    note(last, stream.consume(end as u64));
                    Body::Idle
                } else if cut {
                    // The end of the trailer section was not captured; it is in this syscall.
                    note(last, stream.consume(captured as u64));
                    *last = stream.front_time().unwrap_or(*last);
                    stream.skip_piece();
                    Body::Idle
                } else if captured > MAX_TRAILERS {
                    Body::Lost
                } else {
                    return false;
                }
            }
        };
        *self = next;
        true
    }

    /// Body of unknown framing: drop whole syscalls until the body visibly ends.
    fn read_lost(
        &mut self,
        stream: &mut StreamBuffer,
        last: &mut SegTime,
        starts: StartsMessage,
    ) -> Progress {
        while let Some((captured, gap)) = stream.front_piece() {
            if stream.at_piece_start() {
                let (run, cut) = stream.head();
                match starts(run) {
                    Looks::Yes => {
                        *self = Body::Idle;
                        return Progress::Done;
                    }
                    // A syscall with only the first bytes of a start line: wait for the rest.
                    Looks::Maybe if !cut => return Progress::NeedMore,
                    _ => {}
                }
            }
            if let Some(end) = find_terminator(captured, gap == 0, starts) {
                note(last, stream.consume(end as u64));
                *self = Body::Idle;
                return Progress::Done;
            }
            *last = stream.front_time().unwrap_or(*last);
            stream.skip_piece();
        }
        Progress::NeedMore
    }
}

/// Consumes up to `left` bytes, captured or not; returns how many are still to come.
fn count(stream: &mut StreamBuffer, left: u64, last: &mut SegTime) -> u64 {
    let take = left.min(stream.len());
    if take > 0 {
        note(last, stream.consume(take));
    }
    left - take
}

fn note(last: &mut SegTime, time: Option<SegTime>) {
    if let Some(time) = time {
        *last = time;
    }
}

/// End of a trailer section (after the last chunk): the offset just past its empty line.
fn trailers_end(bytes: &[u8]) -> Option<usize> {
    match bytes {
        [b'\r', b'\n', ..] => return Some(2),
        [b'\n', ..] => return Some(1),
        _ => {}
    }
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Offset just past a terminating chunk `0\r\n\r\n` in one syscall's captured bytes, when it
/// surely ends the body: at a line start, and either ending a fully captured syscall or followed
/// by the next message.
fn find_terminator(captured: &[u8], whole: bool, starts: StartsMessage) -> Option<usize> {
    const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
    let mut from = 0;
    while let Some(pos) = captured[from..]
        .windows(LAST_CHUNK.len())
        .position(|w| w == LAST_CHUNK)
    {
        let at = from + pos;
        let end = at + LAST_CHUNK.len();
        let line_start = at == 0 || captured[at - 1] == b'\n';
        let ends_body = if end == captured.len() {
            whole
        } else {
            starts(&captured[end..]) != Looks::No
        };
        if line_start && ends_body {
            return Some(end);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::start_line::status_line;
    use super::*;

    fn t(n: u64) -> SegTime {
        SegTime {
            enter_ns: n,
            exit_ns: n + 1,
            tid: 1,
            ids: None,
        }
    }

    /// Reads a body pushed as `(captured, total)` syscalls, one syscall at a time.
    fn read_all(body: Body, pieces: &[(&[u8], u64)]) -> (Body, Progress, SegTime, StreamBuffer) {
        let mut body = body;
        let mut stream = StreamBuffer::new();
        let mut last = t(0);
        let mut progress = Progress::NeedMore;
        for (i, (captured, total)) in pieces.iter().enumerate() {
            stream.push(captured, *total, t(i as u64 + 1));
            progress = body.read(&mut stream, &mut last, status_line);
            if progress == Progress::Done {
                break;
            }
        }
        (body, progress, last, stream)
    }

    #[test]
    fn length_is_counted_through_gaps() {
        let (body, progress, last, stream) =
            read_all(Body::Length(10_000), &[(b"abc", 6_000), (b"", 4_000)]);
        assert_eq!((body, progress, last), (Body::Idle, Progress::Done, t(2)));
        assert!(stream.is_empty());
        let (body, progress, _, _) = read_all(Body::Length(10), &[(b"abc", 3)]);
        assert_eq!((body, progress), (Body::Length(7), Progress::NeedMore));
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let data: &[u8] =
            b"4;name=value\r\nWiki\r\n5\r\npedia\r\n0\r\nExpires: never\r\n\r\nHTTP/1.1";
        let (body, progress, last, stream) =
            read_all(Body::Chunked(Chunk::Size), &[(data, data.len() as u64)]);
        assert_eq!((body, progress, last), (Body::Idle, Progress::Done, t(1)));
        assert_eq!(stream.head().0, b"HTTP/1.1");
    }

    #[test]
    fn chunked_split_at_every_byte() {
        let data: &[u8] = b"a\r\n0123456789\r\n1; x=\"y\"\r\nz\r\n0\r\n\r\n";
        for split in 1..data.len() {
            let (a, b) = data.split_at(split);
            let (body, progress, last, stream) = read_all(
                Body::Chunked(Chunk::Size),
                &[(a, a.len() as u64), (b, b.len() as u64)],
            );
            assert_eq!(
                (body, progress, last),
                (Body::Idle, Progress::Done, t(2)),
                "split at {split}"
            );
            assert!(stream.is_empty());
        }
    }

    #[test]
    fn chunk_data_and_its_crlf_in_a_gap_keep_the_framing() {
        // One write per chunk, each captured only in part.
        let (body, progress, last, _) = read_all(
            Body::Chunked(Chunk::Size),
            &[
                (b"2000\r\nxxxx", 6 + 0x2000 + 2),
                (b"2000\r\nyy", 6 + 0x2000 + 2),
                (b"0\r\n\r\n", 5),
            ],
        );
        assert_eq!((body, progress, last), (Body::Idle, Progress::Done, t(3)));
    }

    #[test]
    fn size_line_in_a_gap_loses_the_framing_until_a_captured_terminator() {
        let (body, progress, _, _) = read_all(
            Body::Chunked(Chunk::Size),
            // One write holding several chunks: the second size line is not captured.
            &[(b"10\r\n0123456789abcdef\r\n", 50_000), (b"more body", 9)],
        );
        assert_eq!((body, progress), (Body::Lost, Progress::NeedMore));
        let (body, progress, last, stream) = read_all(
            Body::Chunked(Chunk::Size),
            &[
                (b"10\r\n0123456789abcdef\r\n", 50_000),
                (b"tail\r\n0\r\n\r\n", 11),
            ],
        );
        assert_eq!((body, progress, last), (Body::Idle, Progress::Done, t(2)));
        assert!(stream.is_empty());
    }

    #[test]
    fn lost_framing_ends_where_the_next_message_starts() {
        let (body, progress, last, stream) = read_all(
            Body::Chunked(Chunk::Size),
            &[
                (b"zz-not-hex\r\n", 100),
                (b"junk", 9_000),
                (b"HTTP/1.1 200 OK\r\n", 17),
            ],
        );
        assert_eq!((body, progress, last), (Body::Idle, Progress::Done, t(2)));
        assert_eq!(stream.head().0, b"HTTP/1.1 200 OK\r\n");
        // The next response coalesced after a captured terminator.
        let (body, progress, _, stream) = read_all(
            Body::Lost,
            &[(b"x\r\n0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", 37)],
        );
        assert_eq!((body, progress), (Body::Idle, Progress::Done));
        assert_eq!(stream.head().0, b"HTTP/1.1 204 No Content\r\n\r\n");
    }

    #[test]
    fn lost_framing_ignores_terminators_inside_lines_or_before_gaps() {
        let (body, _, _, _) = read_all(
            Body::Lost,
            &[(b"abc0\r\n\r\n", 8), (b"x\r\n0\r\n\r\n", 500)],
        );
        assert_eq!(body, Body::Lost);
    }

    #[test]
    fn trailers_in_a_gap_end_with_their_syscall() {
        let (body, progress, last, stream) = read_all(
            Body::Chunked(Chunk::Size),
            &[(b"0\r\nX-Trailer: a", 3_000), (b"HTTP/1.1", 8)],
        );
        assert_eq!((body, progress, last), (Body::Idle, Progress::Done, t(1)));
        // Done within the first syscall, which is dropped whole.
        assert!(stream.is_empty());
    }

    #[test]
    fn until_close_drops_everything() {
        let (body, progress, last, stream) =
            read_all(Body::UntilClose, &[(b"abc", 3), (b"d", 1_000)]);
        assert_eq!(
            (body, progress, last),
            (Body::UntilClose, Progress::NeedMore, t(2))
        );
        assert!(stream.is_empty());
    }
}
