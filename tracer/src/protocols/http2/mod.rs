//! HTTP/2 (RFC 9113) and gRPC over one connection, with HPACK (RFC 7541).
//!
//! One [`Http2Parser`] reads both directions of a connection: `read` turns each direction's
//! bytes into frames and header blocks (through capture gaps), [`hpack`] decodes the blocks with
//! one dynamic table per direction, and the parser follows streams: a request is reported when
//! its request HEADERS block is complete, its response when the stream's response ends
//! (END_STREAM on the last DATA frame or on the trailers). Request ids are the stream ids.
//!
//! Decisions for the cases the protocol leaves open to an observer:
//! - Nothing is invented. A header field that refers to a dynamic table entry the tracer did not
//!   see (joined mid-stream, a block cut by the capture) is unknown; a request whose `:method` or
//!   `:path` is unknown is named `HTTP` (or by its method alone) without those attributes, and
//!   counted ([`ParseStats::unnamed_requests`]); a response whose status was not read has no
//!   status and no error. A response is only reported for a request that was.
//! - Joined mid-stream, a HEADERS block in the request direction starts a request only if it
//!   shows a request pseudo-header field: without the history it could be a request's trailers.
//! - Informational responses (1xx without END_STREAM) are skipped.
//! - RST_STREAM abandons its stream (the reason names the error code). GOAWAY from the server
//!   abandons the streams above its last stream id. Closing the connection abandons the rest.
//! - A gRPC request is one whose `content-type` is `application/grpc` (`+proto`, `;...`), not
//!   gRPC-Web (its status travels in the body). A gRPC response without `grpc-status` is an
//!   error, unless part of the response could not be read (then the status is unknown).
//! - When the framing is lost in the response direction (a frame header in a capture gap), the
//!   streams then open may have ended unseen. They stay open and continue if more of their frames
//!   arrive; otherwise they are abandoned ("end of stream not captured", at the syscall where
//!   the framing was lost) at close, at GOAWAY, or when more than [`MAX_UNSURE_STREAMS`] are in
//!   that state.
//! - At most [`MAX_STREAMS`] streams are followed per connection; beyond, the oldest is
//!   abandoned.
//! - Server push: PUSH_PROMISE blocks are decoded (the table must stay in sync) and pushed
//!   streams are not reported (no request of the client started them).
//! - The role found by detection from a SETTINGS frame is confirmed by the first header block
//!   that shows which way requests go; if it shows the opposite, the parser stops reporting.

mod detect;
mod fields;
pub mod frame;
pub mod hpack;
mod read;
mod span;

use std::collections::BTreeMap;

use tracer_common::Direction;

pub use self::detect::detect;
pub use self::frame::PREFACE;
use self::read::{Block, Event, Read, Reader};
pub use self::read::{MAX_HEADER_BLOCK, Start};
use self::span::ResponseFacts;
use super::http1::H2cHandoff;
use super::{L7Event, Parse, ParseStats, ProtocolParser, Request, Response, SegTime, StreamBuffer};
use crate::span::Role;

/// Streams followed at once per connection; beyond, the oldest is abandoned.
pub const MAX_STREAMS: usize = 1000;
/// Streams whose end may have been lost in a capture gap, kept at once per connection.
pub const MAX_UNSURE_STREAMS: usize = 100;

/// What [`Http2Parser::parse_frame`] hands to [`Http2Parser::pair`].
#[derive(Debug)]
pub struct Http2Frame(Event);

/// A stream whose request was reported.
#[derive(Debug)]
struct Stream {
    /// The id its request was reported with.
    id: u64,
    response: ResponseFacts,
    /// A response head was seen.
    head_seen: bool,
    /// The framing of the response direction was lost while the stream was open: when.
    lost_at: Option<SegTime>,
    /// The syscall that carried the request's first byte (default: not seen, h2c upgrade).
    first: SegTime,
}

/// Counters moved into [`ParseStats`] after each feed.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    unnamed_requests: u64,
    streams_evicted: u64,
    unidentified_blocks: u64,
}

/// HTTP/2 parsing state of one connection.
#[derive(Debug)]
pub struct Http2Parser {
    role: Role,
    /// Indexed by `Direction as usize`.
    readers: [Reader; 2],
    streams: BTreeMap<u32, Stream>,
    /// The highest stream id that started a request.
    last_opened: u32,
    /// Reported ids are `id_base + stream id`...
    id_base: u64,
    /// ...except stream 1 after an h2c upgrade: the HTTP/1 request's id.
    upgraded: Option<u64>,
    /// The role is known for sure (not only from a SETTINGS frame seen first).
    role_confirmed: bool,
    /// Header blocks contradicted the role: nothing more is reported.
    stopped: bool,
    counters: Counters,
}

impl Http2Parser {
    /// A parser for a connection seen from its start (`Start::ClientPreface`: the client
    /// preface comes first from the client, the server's frames from the server), or joined
    /// mid-stream (`Start::MidStream`).
    pub fn new(role: Role, start: Start) -> Self {
        let request_dir = role.request_direction();
        let response_start = match start {
            Start::MidStream => Start::MidStream,
            _ => Start::Fresh,
        };
        let mut readers = [Reader::new(Start::Fresh), Reader::new(Start::Fresh)];
        readers[request_dir as usize] = Reader::new(start);
        readers[role.response_direction() as usize] = Reader::new(response_start);
        Self {
            role,
            readers,
            streams: BTreeMap::new(),
            last_opened: 0,
            id_base: 0,
            upgraded: None,
            role_confirmed: true,
            stopped: false,
            counters: Counters::default(),
        }
    }

    /// A parser for a connection whose role came from a SETTINGS frame seen first.
    fn unconfirmed(mut self) -> Self {
        self.role_confirmed = false;
        self
    }

    /// A connection that switched from HTTP/1 with `Upgrade: h2c`: the client preface comes
    /// next from the client, the server's frames from the server, and the upgraded request is
    /// stream 1.
    pub fn upgraded(role: Role, handoff: H2cHandoff) -> Self {
        let mut parser = Self::new(role, Start::ClientPreface);
        // The client's HTTP2-Settings may allow the server larger frames.
        parser.readers[role.response_direction() as usize].max_frame = None;
        parser.id_base = handoff.next_stream_id;
        parser.upgraded = handoff.upgraded;
        parser.last_opened = 1;
        if let Some(id) = handoff.upgraded {
            parser.streams.insert(
                1,
                Stream {
                    id,
                    response: ResponseFacts::default(),
                    head_seen: false,
                    lost_at: None,
                    first: SegTime::default(),
                },
            );
        }
        parser
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Adds what was counted since the last call to `stats`.
    pub fn take_stats(&mut self, stats: &mut ParseStats) {
        for reader in &mut self.readers {
            let c = std::mem::take(&mut reader.counters);
            stats.resyncs += c.resyncs;
            stats.skipped_bytes = stats.skipped_bytes.saturating_add(c.skipped_bytes);
            stats.damaged_header_blocks += c.damaged_blocks;
            stats.unknown_fields += c.unknown_fields;
        }
        let c = std::mem::take(&mut self.counters);
        stats.unnamed_requests += c.unnamed_requests;
        stats.streams_evicted += c.streams_evicted;
        stats.unidentified_blocks += c.unidentified_blocks;
    }

    fn report_id(&self, stream: u32) -> u64 {
        match self.upgraded {
            Some(id) if stream == 1 => id,
            _ => self.id_base + u64::from(stream),
        }
    }

    /// Whether a block's pseudo-header fields agree with the direction it travels in.
    fn direction_agrees(&mut self, dir: Direction, block: &Block, out: &mut Vec<L7Event>) -> bool {
        let facts = &block.facts;
        if facts.request_pseudo == facts.response_pseudo {
            // No evidence (trailers, unknown names), or both (malformed).
            return !facts.request_pseudo;
        }
        if facts.request_pseudo == (dir == self.role.request_direction()) {
            self.role_confirmed = true;
            return true;
        }
        self.counters.unidentified_blocks += 1;
        if !self.role_confirmed {
            // The SETTINGS frame that gave the role was not the server's preface.
            self.stopped = true;
            self.abandon_all(block.first, "connection direction misjudged", out);
        }
        false
    }

    fn on_request_block(&mut self, block: Box<Block>, out: &mut Vec<L7Event>) {
        let dir = self.role.request_direction();
        if !self.direction_agrees(dir, &block, out) {
            return;
        }
        let id = block.stream;
        // Trailers of an open request, a closed stream's, or a server-initiated id: no request.
        if id.is_multiple_of(2) || id <= self.last_opened {
            return;
        }
        // Without every frame of this direction, a block on a new stream could be trailers.
        if !block.facts.request_pseudo && !self.readers[dir as usize].whole_view {
            self.counters.unidentified_blocks += 1;
            return;
        }
        self.last_opened = id;
        let span = span::request(&block.facts, id, self.role);
        self.counters.unnamed_requests += u64::from(span.unnamed);
        if self.streams.len() >= MAX_STREAMS
            && let Some((_, oldest)) = self.streams.pop_first()
        {
            self.counters.streams_evicted += 1;
            out.push(L7Event::Abandoned {
                stream_id: oldest.id,
                at: block.first,
                reason: "too many open streams",
            });
        }
        let reported = self.report_id(id);
        self.streams.insert(
            id,
            Stream {
                id: reported,
                response: ResponseFacts {
                    grpc: span.grpc,
                    ..ResponseFacts::default()
                },
                head_seen: false,
                lost_at: None,
                first: block.first,
            },
        );
        out.push(L7Event::Request(Request {
            stream_id: reported,
            first: block.first,
            name: span.name,
            attributes: span.attributes,
            context: span.context,
            fingerprint: span.fingerprint,
        }));
    }

    fn on_response_block(&mut self, block: Box<Block>, out: &mut Vec<L7Event>) {
        let dir = self.role.response_direction();
        if !self.direction_agrees(dir, &block, out) {
            return;
        }
        let Some(stream) = self.streams.get_mut(&block.stream) else {
            // Its request was not seen (or a pushed stream): never reported.
            return;
        };
        stream.lost_at = None;
        let facts = &block.facts;
        if let Some(status) = facts.status {
            if (100..200).contains(&status) && !block.end_stream {
                return;
            }
            stream.response.status = Some(status);
        }
        stream.head_seen = true;
        if !facts.is_complete() || facts.unreadable {
            stream.response.unsure = true;
        }
        if let Some(grpc_status) = facts.grpc_status {
            stream.response.grpc_status.get_or_insert(grpc_status);
        }
        if block.end_stream {
            self.finish(block.stream, block.last, out);
        }
    }

    fn finish(&mut self, stream: u32, last: SegTime, out: &mut Vec<L7Event>) {
        if let Some(stream) = self.streams.remove(&stream) {
            let (attributes, error) = span::response(&stream.response, self.role);
            out.push(L7Event::Response(Response {
                stream_id: stream.id,
                last,
                attributes,
                error,
            }));
        }
    }

    fn abandon(&mut self, stream: u32, at: SegTime, reason: &'static str, out: &mut Vec<L7Event>) {
        if let Some(stream) = self.streams.remove(&stream) {
            // The framing may have been lost before this request was sent (the loss is told
            // when reading resumes): the stream cannot have ended before it began.
            let lost_at = stream.lost_at.map(|lost| {
                if lost.exit_ns < stream.first.enter_ns {
                    stream.first
                } else {
                    lost
                }
            });
            out.push(L7Event::Abandoned {
                stream_id: stream.id,
                at: lost_at.unwrap_or(at),
                reason: if stream.lost_at.is_some() {
                    "end of stream not captured"
                } else {
                    reason
                },
            });
        }
    }

    fn abandon_all(&mut self, at: SegTime, reason: &'static str, out: &mut Vec<L7Event>) {
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            self.abandon(id, at, reason, out);
        }
    }

    /// The response direction's framing was lost at `at`: open streams may have ended unseen.
    fn responses_lost(&mut self, at: SegTime, out: &mut Vec<L7Event>) {
        for stream in self.streams.values_mut() {
            stream.lost_at.get_or_insert(at);
            stream.response.unsure = true;
        }
        let unsure: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| s.lost_at.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in unsure
            .iter()
            .take(unsure.len().saturating_sub(MAX_UNSURE_STREAMS))
        {
            self.counters.streams_evicted += 1;
            self.abandon(*id, at, "end of stream not captured", out);
        }
    }
}

fn other(dir: Direction) -> Direction {
    match dir {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

impl ProtocolParser for Http2Parser {
    type Frame = Http2Frame;

    fn parse_frame(&mut self, dir: Direction, stream: &mut StreamBuffer) -> Parse<Http2Frame> {
        if self.stopped {
            stream.clear();
            return Parse::NeedMore;
        }
        match self.readers[dir as usize].read(stream) {
            Read::Event(event) => Parse::Frame(Http2Frame(event)),
            Read::NeedMore => Parse::NeedMore,
        }
    }

    /// Frame headers cannot be told from payload bytes by scanning: the parser never reports
    /// [`Parse::Invalid`], it drops the rest of the syscall and resumes at the next syscall that
    /// starts with frames (see the `read` module).
    fn find_boundary(&self, _dir: Direction, _bytes: &[u8]) -> Option<usize> {
        None
    }

    fn pair(&mut self, dir: Direction, frame: Http2Frame, out: &mut Vec<L7Event>) {
        let from_client = dir == self.role.request_direction();
        match frame.0 {
            Event::Headers(block) if from_client => self.on_request_block(block, out),
            Event::Headers(block) => self.on_response_block(block, out),
            Event::Data {
                stream,
                end_stream,
                last,
            } if !from_client => {
                if let Some(open) = self.streams.get_mut(&stream) {
                    open.lost_at = None;
                    if end_stream {
                        self.finish(stream, last, out);
                    }
                }
            }
            Event::Data { .. } => {}
            Event::Reset { stream, code, last } => {
                if let Some(open) = self.streams.get_mut(&stream) {
                    // Seen ending: not lost.
                    open.lost_at = None;
                }
                self.abandon(stream, last, frame::reset_reason(code), out);
            }
            Event::GoAway {
                last_stream: Some(last_stream),
                last,
            } if !from_client => {
                let refused: Vec<u32> = self
                    .streams
                    .range(last_stream.saturating_add(1)..)
                    .map(|(id, _)| *id)
                    .collect();
                for id in refused {
                    if let Some(open) = self.streams.get_mut(&id) {
                        open.lost_at = None;
                    }
                    self.abandon(id, last, "not processed by the server (GOAWAY)", out);
                }
            }
            Event::GoAway { .. } => {}
            Event::Settings {
                header_table_size,
                max_frame_size,
            } => {
                let peer = &mut self.readers[other(dir) as usize];
                if let Some(size) = header_table_size {
                    peer.hpack.set_limit(size);
                }
                // Frames already sent under a larger size may still come: keep the largest.
                if let (Some(size), Some(current)) = (max_frame_size, peer.max_frame) {
                    peer.max_frame = Some(current.max(size));
                }
            }
            Event::Lost { at } => {
                // A SETTINGS frame may have been missed: the other way's frame size is unknown.
                self.readers[other(dir) as usize].max_frame = None;
                if !from_client {
                    self.responses_lost(at, out);
                }
            }
        }
    }

    fn close(&mut self, at: SegTime, out: &mut Vec<L7Event>) {
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            let reason = match self.streams.get(&id) {
                Some(s) if s.head_seen => "connection closed during the response",
                _ => "connection closed before a response",
            };
            self.abandon(id, at, reason, out);
        }
    }
}

#[cfg(test)]
mod tests;
