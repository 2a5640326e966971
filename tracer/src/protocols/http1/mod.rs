//! HTTP/1.0 and HTTP/1.1 (RFC 9112) over one connection.
//!
//! Requests travel one way and responses the other; which way depends on the traced process's
//! [`Role`]. A request is reported as soon as its head is parsed (its body is skipped
//! afterwards); a response is reported when its last byte has been read, and is paired with the
//! oldest request still waiting (HTTP/1 answers in order, pipelined or not).
//!
//! Decisions for the cases the protocol leaves open to an observer:
//! - A message whose start line is valid but whose head cannot be read (cut by the capture,
//!   malformed header, invalid length) is not reported, but it keeps its place in the queue: an
//!   unreadable request holds a placeholder that swallows its response, and an unreadable
//!   response reports its request as abandoned. Later exchanges stay correctly paired.
//! - Interim responses (100 Continue, 102, 103) are skipped; the final response pairs.
//! - 101 Switching Protocols, and a 2xx answer to CONNECT, complete their exchange and end
//!   HTTP/1 on the connection: nothing more is parsed or reported for it (requests still queued
//!   are abandoned), and its bytes are dropped as they arrive.
//! - Except a 101 to HTTP/2 (`Upgrade: h2c`, RFC 7540 §3.2): its exchange is not complete, the
//!   response to the upgraded request arrives as HTTP/2 stream 1. The parser stops consuming
//!   right after the 101 head and hands the connection over ([`Http1Parser::take_h2c_handoff`]);
//!   [`super::Parser`] then continues with HTTP/2 on the bytes still buffered. While a request
//!   offering h2c waits for its answer, the client connection preface that may follow it is left
//!   in the buffer for HTTP/2 rather than parsed as a request.
//! - Chunked framing lost in a capture gap (a chunk-size line not captured, or malformed): the
//!   body ends at a captured terminating chunk, at the next syscall that starts a message, or
//!   at the close (details in `body.rs`). The response is still reported, ending with the last
//!   syscall of its body; no memory is held meanwhile.
//! - At most [`MAX_PENDING`] requests wait for responses; beyond that the oldest is abandoned.
//! - Any method token is accepted at the start of a syscall (WebDAV, PURGE, ...); inside a
//!   syscall only the known methods are, so that a framing error cannot invent requests.

mod body;
mod head;
mod start_line;

use std::collections::VecDeque;

use tracer_common::Direction;

use self::body::{Body, Progress};
pub use self::head::Method;
use self::head::{Framing, Parsed};
use self::start_line::Looks;
use super::http::semconv;
use super::{L7Event, Parse, ProtocolParser, Request, Response, SegTime, StreamBuffer};
use crate::span::Role;

/// Requests waiting for a response, per connection, before the oldest is abandoned.
pub const MAX_PENDING: usize = 1024;

/// The role of a traced process on a connection whose first bytes moving in `dir` are `bytes`,
/// if they are clearly HTTP/1: a request line means requests flow that way, a status line means
/// the tracer joined the connection mid-stream and responses flow that way.
pub fn detect(dir: Direction, bytes: &[u8]) -> Option<Role> {
    let carries_requests = if start_line::request_line(bytes) == Looks::Yes {
        true
    } else if start_line::status_line(bytes) == Looks::Yes {
        false
    } else {
        return None;
    };
    Some(match (dir, carries_requests) {
        (Direction::Ingress, true) | (Direction::Egress, false) => Role::Server,
        (Direction::Egress, true) | (Direction::Ingress, false) => Role::Client,
    })
}

/// What [`Http1Parser::parse_frame`] hands to [`Http1Parser::pair`].
#[derive(Debug)]
pub enum Http1Frame {
    /// A request head (its body, if any, is read by later calls).
    Request {
        request: Request,
        method: Method,
        h2c: bool,
    },
    /// A request that cannot be reported; it still takes a place in the queue.
    UnreadableRequest { method: Method, at: SegTime },
    /// A complete response; `answers` is the request it answers, if that one was reported.
    Response {
        answers: Option<u64>,
        status: u16,
        last: SegTime,
        /// The connection stops speaking HTTP/1 after it.
        switches: bool,
        /// ... and continues in HTTP/2: the exchange goes on there.
        h2c: bool,
    },
    /// A final response that cannot be read; its request is abandoned.
    UnreadableResponse { answers: Option<u64>, at: SegTime },
}

/// A request waiting for its response.
#[derive(Clone, Copy, Debug)]
struct Pending {
    /// `None` for a placeholder (a request that could not be reported).
    stream_id: Option<u64>,
    method: Method,
    /// The request offers an upgrade to HTTP/2 (`Upgrade: h2c`).
    h2c: bool,
    /// When the request's first byte was read or written.
    started: SegTime,
}

impl Pending {
    /// `at`, or the request's start if `at` is earlier. The two directions are buffered
    /// apart, so a response's bytes can predate the request they get paired with; nothing
    /// may end before it started.
    fn not_before_start(&self, at: SegTime) -> SegTime {
        if at.exit_ns < self.started.enter_ns {
            self.started
        } else {
            at
        }
    }
}

/// A connection that switched from HTTP/1 to HTTP/2 with `Upgrade: h2c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H2cHandoff {
    /// The id under which the upgraded request was reported (`None`: it was not seen). Its
    /// response is HTTP/2 stream 1.
    pub upgraded: Option<u64>,
    /// The first stream id HTTP/1 did not use: HTTP/2 ids are reported above it.
    pub next_stream_id: u64,
}

/// A response whose head is parsed and whose body is being read.
#[derive(Clone, Copy, Debug)]
struct OpenResponse {
    answers: Option<u64>,
    status: u16,
    /// Timing of the last byte read so far.
    last: SegTime,
    switches: bool,
    h2c: bool,
}

/// HTTP/1 parsing state of one connection.
#[derive(Debug)]
pub struct Http1Parser {
    role: Role,
    next_stream_id: u64,
    pending: VecDeque<Pending>,
    request_body: Body,
    response_body: Body,
    open: Option<OpenResponse>,
    /// The connection switched protocols or became a tunnel.
    switched: bool,
    /// The connection switched to HTTP/2; the bytes after the 101 are left for it.
    handoff: Option<H2cHandoff>,
}

impl Http1Parser {
    pub fn new(role: Role) -> Self {
        Self {
            role,
            next_stream_id: 0,
            pending: VecDeque::new(),
            request_body: Body::Idle,
            response_body: Body::Idle,
            open: None,
            switched: false,
            handoff: None,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The connection continues in HTTP/2 (`Upgrade: h2c` answered by 101): taken once, by
    /// [`super::Parser`], which replaces this parser.
    pub fn take_h2c_handoff(&mut self) -> Option<H2cHandoff> {
        self.handoff.take()
    }

    fn parse_request(&mut self, stream: &mut StreamBuffer) -> Parse<Http1Frame> {
        if self.request_body != Body::Idle {
            // Request bodies end by their length; their timing is not needed.
            let mut ignored = SegTime::default();
            if self
                .request_body
                .read(stream, &mut ignored, start_line::request_line)
                == Progress::NeedMore
            {
                return Parse::NeedMore;
            }
        }
        skip_empty_lines(stream);
        let Some(first) = stream.front_time() else {
            return Parse::NeedMore;
        };
        let (bytes, cut) = stream.head();
        if bytes.is_empty() {
            // Inside a gap: these bytes were never captured.
            return if cut { Parse::Invalid } else { Parse::NeedMore };
        }
        // Inside a syscall only a standard request line starts a request: clients write each
        // request with a write of its own, so a start mid-syscall is a pipelined request, or
        // the parser lost the framing. Then `ET /a` or `abcGET /a` must not become a request.
        if !stream.at_piece_start() && start_line::request_line(bytes) == Looks::No {
            return Parse::Invalid;
        }
        // The HTTP/2 client preface after a request offering h2c: leave it for HTTP/2, which
        // takes over when the 101 arrives.
        if self.pending.iter().any(|p| p.h2c) && is_preface_prefix(bytes) {
            return Parse::NeedMore;
        }
        match head::parse_request(bytes, cut, self.role) {
            Parsed::Complete { head, len } => {
                stream.consume(len as u64);
                self.request_body = Body::new(head.framing);
                let stream_id = self.next_stream_id;
                self.next_stream_id += 1;
                Parse::Frame(Http1Frame::Request {
                    request: Request {
                        stream_id,
                        first,
                        name: head.name,
                        attributes: head.attributes,
                        context: head.context,
                        fingerprint: head.fingerprint,
                    },
                    method: head.method,
                    h2c: head.offers_h2c,
                })
            }
            Parsed::Unreadable { start, skip } => {
                stream.consume(skip as u64);
                Parse::Frame(Http1Frame::UnreadableRequest {
                    method: start,
                    at: first,
                })
            }
            Parsed::Partial => Parse::NeedMore,
            Parsed::Invalid => Parse::Invalid,
        }
    }

    fn parse_response(&mut self, stream: &mut StreamBuffer) -> Parse<Http1Frame> {
        loop {
            if let Some(open) = self.open.as_mut() {
                if self
                    .response_body
                    .read(stream, &mut open.last, start_line::status_line)
                    == Progress::NeedMore
                {
                    return Parse::NeedMore;
                }
                let open = self.open.take().expect("checked above");
                return Parse::Frame(Http1Frame::Response {
                    answers: open.answers,
                    status: open.status,
                    last: open.last,
                    switches: open.switches,
                    h2c: open.h2c,
                });
            }
            skip_empty_lines(stream);
            let Some(first) = stream.front_time() else {
                return Parse::NeedMore;
            };
            let (bytes, cut) = stream.head();
            if bytes.is_empty() {
                return if cut { Parse::Invalid } else { Parse::NeedMore };
            }
            let method = self.pending.front().map(|p| p.method);
            match head::parse_response(bytes, cut, method) {
                Parsed::Complete { head, len } => {
                    let last = stream.consume(len as u64).unwrap_or(first);
                    if is_interim(head.status) {
                        continue;
                    }
                    let switches = head.framing == Framing::Switch;
                    self.switched |= switches;
                    self.response_body = Body::new(head.framing);
                    let answered = self.pending.pop_front();
                    let last = answered.map_or(last, |p| p.not_before_start(last));
                    // To HTTP/2 when the 101 names h2c and the request offered it (or was not
                    // seen: joined mid-stream, the HTTP/2 connection still starts here).
                    let h2c = switches
                        && head.status == 101
                        && head.upgrade_h2c
                        && answered.is_none_or(|p| p.h2c);
                    self.open = Some(OpenResponse {
                        answers: answered.and_then(|p| p.stream_id),
                        status: head.status,
                        last,
                        switches,
                        h2c,
                    });
                }
                Parsed::Unreadable { start, skip } => {
                    stream.consume(skip as u64);
                    let answered = match is_interim(start) {
                        true => None,
                        false => self.pending.pop_front(),
                    };
                    return Parse::Frame(Http1Frame::UnreadableResponse {
                        answers: answered.and_then(|p| p.stream_id),
                        at: answered.map_or(first, |p| p.not_before_start(first)),
                    });
                }
                Parsed::Partial => return Parse::NeedMore,
                Parsed::Invalid => return Parse::Invalid,
            }
        }
    }

    /// Queues a request for pairing; the oldest is abandoned when the queue is full.
    fn enqueue(&mut self, pending: Pending, at: SegTime, out: &mut Vec<L7Event>) {
        if self.pending.len() >= MAX_PENDING
            && let Some(Pending {
                stream_id: Some(stream_id),
                ..
            }) = self.pending.pop_front()
        {
            out.push(L7Event::Abandoned {
                stream_id,
                at,
                reason: "too many requests awaiting a response",
            });
        }
        self.pending.push_back(pending);
    }

    fn abandon_pending(&mut self, at: SegTime, reason: &'static str, out: &mut Vec<L7Event>) {
        for pending in self.pending.drain(..) {
            if let Some(stream_id) = pending.stream_id {
                out.push(L7Event::Abandoned {
                    stream_id,
                    at,
                    reason,
                });
            }
        }
    }
}

/// Drops the empty lines a peer may send between messages (RFC 9112 §2.2), so that a message's
/// first byte, and its timing, are its start line's.
fn skip_empty_lines(stream: &mut StreamBuffer) {
    let (bytes, _) = stream.head();
    let empty = bytes
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if empty > 0 {
        stream.consume(empty as u64);
    }
}

/// Whether `bytes` are the HTTP/2 client connection preface, or the start of it.
fn is_preface_prefix(bytes: &[u8]) -> bool {
    let preface = super::http2::PREFACE;
    let n = bytes.len().min(preface.len());
    bytes[..n] == preface[..n]
}

/// 1xx other than 101: a final response follows.
fn is_interim(status: u16) -> bool {
    (100..200).contains(&status) && status != 101
}

impl ProtocolParser for Http1Parser {
    type Frame = Http1Frame;

    fn parse_frame(&mut self, dir: Direction, stream: &mut StreamBuffer) -> Parse<Http1Frame> {
        if self.handoff.is_some() {
            // HTTP/2 from here on: the bytes are left for it.
            return Parse::NeedMore;
        }
        if self.switched && self.open.is_none() {
            // Not HTTP/1 any more: drop the bytes as they come.
            stream.clear();
            return Parse::NeedMore;
        }
        if dir == self.role.request_direction() {
            self.parse_request(stream)
        } else {
            self.parse_response(stream)
        }
    }

    fn find_boundary(&self, dir: Direction, bytes: &[u8]) -> Option<usize> {
        if dir == self.role.request_direction() {
            start_line::find(bytes, start_line::request_line)
        } else {
            start_line::find(bytes, start_line::status_line)
        }
    }

    fn pair(&mut self, _dir: Direction, frame: Http1Frame, out: &mut Vec<L7Event>) {
        match frame {
            Http1Frame::Request {
                request,
                method,
                h2c,
            } => {
                let pending = Pending {
                    stream_id: Some(request.stream_id),
                    method,
                    h2c,
                    started: request.first,
                };
                self.enqueue(pending, request.first, out);
                out.push(L7Event::Request(request));
            }
            Http1Frame::UnreadableRequest { method, at } => {
                self.enqueue(
                    Pending {
                        stream_id: None,
                        method,
                        h2c: false,
                        started: at,
                    },
                    at,
                    out,
                );
            }
            Http1Frame::Response {
                answers,
                last,
                h2c: true,
                ..
            } => {
                // The exchange continues as HTTP/2 stream 1: no response yet.
                self.abandon_pending(last, "connection switched protocols", out);
                self.handoff = Some(H2cHandoff {
                    upgraded: answers,
                    next_stream_id: self.next_stream_id,
                });
            }
            Http1Frame::Response {
                answers,
                status,
                last,
                switches,
                h2c: false,
            } => {
                if let Some(stream_id) = answers {
                    let (attributes, error) = semconv::response_outcome(status, self.role);
                    out.push(L7Event::Response(Response {
                        stream_id,
                        last,
                        attributes,
                        error,
                    }));
                }
                if switches {
                    self.abandon_pending(last, "connection switched protocols", out);
                }
            }
            Http1Frame::UnreadableResponse { answers, at } => {
                if let Some(stream_id) = answers {
                    out.push(L7Event::Abandoned {
                        stream_id,
                        at,
                        reason: "response could not be read",
                    });
                }
            }
        }
    }

    fn close(&mut self, at: SegTime, out: &mut Vec<L7Event>) {
        if let Some(open) = self.open.take()
            && let Some(stream_id) = open.answers
        {
            // Only a body that runs to the close, or whose end could not be seen, ends here.
            if matches!(self.response_body, Body::UntilClose | Body::Lost) {
                let (attributes, error) = semconv::response_outcome(open.status, self.role);
                out.push(L7Event::Response(Response {
                    stream_id,
                    last: open.last,
                    attributes,
                    error,
                }));
            } else {
                out.push(L7Event::Abandoned {
                    stream_id,
                    at,
                    reason: "connection closed during the response",
                });
            }
        }
        self.abandon_pending(at, "connection closed before a response", out);
        self.request_body = Body::Idle;
        self.response_body = Body::Idle;
    }
}

#[cfg(test)]
mod tests;
