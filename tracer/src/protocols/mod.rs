//! Stage 3: protocol parsing. Turns a connection's two byte streams into requests and responses.
//!
//! Every protocol implements [`ProtocolParser`] (after Pixie's parser contract): parse one frame
//! from the front of a stream (complete / needs more / invalid), find the next frame boundary
//! after garbage, and pair request frames with response frames. [`drive`] runs that loop the
//! same way for all of them; [`Parser`] dispatches over the protocols (as DeepFlow does with an
//! enum). Adding a protocol means one new module and one new variant.

pub mod http;
pub mod http1;
pub mod http2;
pub mod stream;

pub use stream::{SegTime, StreamBuffer};
use tracer_common::Direction;

use crate::span::{Attribute, CompactString, Role, TraceContext};

/// Outcome of parsing at the front of a stream.
#[derive(Debug)]
pub enum Parse<F> {
    /// A whole frame; its bytes have been consumed.
    Frame(F),
    /// The frame at the front is not complete yet; call again when more bytes arrive.
    NeedMore,
    /// The bytes at the front are not a frame of this protocol (garbage, a head cut by the
    /// capture, a malformed length). Nothing was consumed; the caller resynchronises.
    Invalid,
}

/// A request whose head has been parsed: the start of a span.
#[derive(Clone, Debug)]
pub struct Request {
    /// Identifies the request on its connection (HTTP/1: sequence number; HTTP/2: stream id).
    pub stream_id: u64,
    /// The syscall that carried the request's first byte.
    pub first: SegTime,
    /// Span name, low cardinality: `"GET /users/{id}"`.
    pub name: CompactString,
    /// Semantic-convention attributes read from the request (no credentials, no bodies).
    pub attributes: Vec<Attribute>,
    /// The W3C trace context the request carries, if valid (`protocols::http::trace_context`).
    pub context: Option<TraceContext>,
    /// Hash of the request line: equal on the two ends of one connection, used to link the
    /// client span of one traced process to the server span of another.
    pub fingerprint: u64,
}

/// A request's response is complete: the end of its span.
#[derive(Clone, Debug)]
pub struct Response {
    pub stream_id: u64,
    /// The syscall that carried the response's last byte.
    pub last: SegTime,
    pub attributes: Vec<Attribute>,
    /// `Some(description)` when the exchange failed by the protocol's rules for this role.
    pub error: Option<String>,
}

/// What the parsing stage tells the stitching stage.
#[derive(Clone, Debug)]
pub enum L7Event {
    Request(Request),
    Response(Response),
    /// The request will get no response (the connection closed, or the protocol gave up on it).
    Abandoned {
        stream_id: u64,
        at: SegTime,
        reason: &'static str,
    },
}

/// Counters of what parsing skipped: nothing is dropped silently.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseStats {
    /// Times the parser lost sync and searched for the next frame.
    pub resyncs: u64,
    /// Bytes skipped while resynchronising.
    pub skipped_bytes: u64,
    /// Frames whose head was larger than the buffering limit.
    pub oversized: u64,
    /// Requests reported without a method or a path: their header block could not be read
    /// whole (HTTP/2 joined mid-stream, or cut by the capture). They are named `HTTP`.
    pub unnamed_requests: u64,
    /// Header fields whose name or value could not be decoded (HPACK history missing).
    pub unknown_fields: u64,
    /// Header blocks cut by the capture or by the size limit, or malformed.
    pub damaged_header_blocks: u64,
    /// Streams abandoned because too many were open at once.
    pub streams_evicted: u64,
    /// Header blocks that could not be told to be a request (joined mid-stream) or that
    /// contradicted the direction of the connection.
    pub unidentified_blocks: u64,
}

/// The contract every protocol implements. One parser instance serves one connection (both
/// directions); it knows the connection's role from construction.
pub trait ProtocolParser {
    type Frame;

    /// Parses one frame from the front of `stream` (bytes moving in `dir`), consuming its bytes.
    /// A parser may keep state between calls (e.g. while counting a long body through gaps).
    fn parse_frame(&mut self, dir: Direction, stream: &mut StreamBuffer) -> Parse<Self::Frame>;

    /// Offset in `bytes` of the next plausible frame start for `dir`, after garbage.
    fn find_boundary(&self, dir: Direction, bytes: &[u8]) -> Option<usize>;

    /// Pairs a parsed frame with its counterpart and reports requests and responses.
    fn pair(&mut self, dir: Direction, frame: Self::Frame, out: &mut Vec<L7Event>);

    /// The connection closed at `at`: finish frames that end with the connection (a response
    /// without a length) and abandon requests that got no response.
    fn close(&mut self, at: SegTime, out: &mut Vec<L7Event>);
}

/// Frames whose head has not completed after this many buffered bytes are dropped.
pub const MAX_BUFFERED: usize = 64 * 1024;

/// Runs `parser` over everything `stream` holds: frames out, garbage skipped and counted.
pub fn drive<P: ProtocolParser>(
    parser: &mut P,
    dir: Direction,
    stream: &mut StreamBuffer,
    out: &mut Vec<L7Event>,
    stats: &mut ParseStats,
) {
    while !stream.is_empty() {
        match parser.parse_frame(dir, stream) {
            Parse::Frame(frame) => parser.pair(dir, frame, out),
            Parse::NeedMore if stream.buffered() <= MAX_BUFFERED => break,
            Parse::NeedMore => {
                stats.oversized += 1;
                resync(parser, dir, stream, stats);
            }
            Parse::Invalid => resync(parser, dir, stream, stats),
        }
    }
}

fn resync<P: ProtocolParser>(
    parser: &mut P,
    dir: Direction,
    stream: &mut StreamBuffer,
    stats: &mut ParseStats,
) {
    let (bytes, _) = stream.head();
    // Offset 0 is the frame that just failed: look after it.
    let skip = match bytes
        .get(1..)
        .and_then(|rest| parser.find_boundary(dir, rest))
    {
        Some(offset) => stream.consume(offset as u64 + 1).map(|_| offset as u64 + 1),
        None if bytes.is_empty() => Some(stream.skip_piece()),
        None => {
            let n = bytes.len() as u64;
            stream.consume(n).map(|_| n)
        }
    };
    stats.resyncs += 1;
    stats.skipped_bytes = stats.skipped_bytes.saturating_add(skip.unwrap_or(0));
}

/// The protocols the tracer understands, dispatched by enum.
pub enum Parser {
    Http1(http1::Http1Parser),
    /// Boxed: its two HPACK contexts make it much larger than the other variants.
    Http2(Box<http2::Http2Parser>),
}

impl Parser {
    /// Recognises a protocol from the first bytes seen on a connection in direction `dir`.
    /// Returns the parser and the traced process's role on the connection.
    pub fn detect(dir: Direction, bytes: &[u8]) -> Option<(Parser, Role)> {
        if let Some(role) = http1::detect(dir, bytes) {
            return Some((Parser::Http1(http1::Http1Parser::new(role)), role));
        }
        http2::detect(dir, bytes).map(|(parser, role)| (Parser::Http2(Box::new(parser)), role))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Parser::Http1(_) => "http/1.1",
            Parser::Http2(_) => "http/2",
        }
    }

    pub fn feed(
        &mut self,
        dir: Direction,
        stream: &mut StreamBuffer,
        out: &mut Vec<L7Event>,
        stats: &mut ParseStats,
    ) {
        match self {
            Parser::Http1(p) => {
                drive(p, dir, stream, out, stats);
                // `Upgrade: h2c` answered by 101: HTTP/2 from the byte after the 101 (and, in
                // the other direction, from the client preface on, parsed when that stream is
                // fed next).
                if let Some(handoff) = p.take_h2c_handoff() {
                    *self =
                        Parser::Http2(Box::new(http2::Http2Parser::upgraded(p.role(), handoff)));
                    self.feed(dir, stream, out, stats);
                }
            }
            Parser::Http2(p) => {
                drive(p.as_mut(), dir, stream, out, stats);
                p.take_stats(stats);
            }
        }
    }

    pub fn close(&mut self, at: SegTime, out: &mut Vec<L7Event>) {
        match self {
            Parser::Http1(p) => p.close(at, out),
            Parser::Http2(p) => p.close(at, out),
        }
    }
}
