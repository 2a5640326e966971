//! Tests of the HTTP/2 parser the way the agent runs it: syscalls pushed into the two streams
//! of a connection, the [`Parser`] detecting the protocol and feeding them, events collected.
//! Header blocks are encoded by `httlib-hpack`, an encoder independent of the decoder under
//! test, with Huffman coding and dynamic table references as real peers use them.

mod capture;
mod exchanges;
mod frames;
mod midstream;
mod pipeline;
mod props;
mod upgrade;

use httlib_hpack::Encoder;

use super::*;
use crate::protocols::Parser;
use crate::span::{Attribute, Value, find};

/// Timing of the `n`th syscall of a test.
fn t(n: u64) -> SegTime {
    SegTime {
        enter_ns: n * 1_000,
        exit_ns: n * 1_000 + 10,
        tid: 42,
        ids: None,
    }
}

use Direction::{Egress as OUT, Ingress as IN};

/// A connection seen by the tracer.
struct Conn {
    parser: Option<Parser>,
    role: Option<Role>,
    streams: [StreamBuffer; 2],
    events: Vec<L7Event>,
    stats: ParseStats,
}

impl Conn {
    /// Not detected yet: the first syscalls decide, as on a new connection.
    fn detecting() -> Self {
        Self {
            parser: None,
            role: None,
            streams: [StreamBuffer::new(), StreamBuffer::new()],
            events: Vec::new(),
            stats: ParseStats::default(),
        }
    }

    fn with(parser: Parser, role: Role) -> Self {
        Self {
            parser: Some(parser),
            role: Some(role),
            ..Self::detecting()
        }
    }

    /// A server seen from the connection's start.
    fn server() -> Self {
        Self::with(
            Parser::Http2(Box::new(Http2Parser::new(
                Role::Server,
                Start::ClientPreface,
            ))),
            Role::Server,
        )
    }

    fn client() -> Self {
        Self::with(
            Parser::Http2(Box::new(Http2Parser::new(
                Role::Client,
                Start::ClientPreface,
            ))),
            Role::Client,
        )
    }

    fn io(&mut self, dir: Direction, bytes: &[u8], n: u64) -> &mut Self {
        self.io_cut(dir, bytes, bytes.len() as u64, n)
    }

    /// One syscall that moved `total` bytes of which `captured` were captured.
    fn io_cut(&mut self, dir: Direction, captured: &[u8], total: u64, n: u64) -> &mut Self {
        if self.parser.is_none() {
            match Parser::detect(dir, captured) {
                Some((parser, role)) => {
                    self.parser = Some(parser);
                    self.role = Some(role);
                }
                None => return self,
            }
        }
        let parser = self.parser.as_mut().expect("detected");
        let stream = &mut self.streams[dir as usize];
        stream.push(captured, total, t(n));
        parser.feed(dir, stream, &mut self.events, &mut self.stats);
        self
    }

    fn close(&mut self, n: u64) -> &mut Self {
        if let Some(parser) = self.parser.as_mut() {
            parser.close(t(n), &mut self.events);
        }
        self
    }

    fn summary(&self) -> Vec<Ev> {
        summary(&self.events)
    }

    fn h2(&self) -> &Http2Parser {
        match &self.parser {
            Some(Parser::Http2(p)) => p,
            _ => panic!("not HTTP/2"),
        }
    }
}

/// An event reduced to what most tests check; times are syscall numbers.
#[derive(Clone, Debug, PartialEq)]
enum Ev {
    /// stream id, span name, syscall of the first byte.
    Req(u64, String, u64),
    /// stream id, syscall of the last byte, error.
    Resp(u64, u64, Option<String>),
    /// stream id, syscall, reason.
    Gone(u64, u64, &'static str),
}

fn req(id: u64, name: &str, first: u64) -> Ev {
    Ev::Req(id, name.to_string(), first)
}

fn ok(id: u64, last: u64) -> Ev {
    Ev::Resp(id, last, None)
}

fn failed(id: u64, last: u64, error: &str) -> Ev {
    Ev::Resp(id, last, Some(error.to_string()))
}

fn summary(events: &[L7Event]) -> Vec<Ev> {
    events
        .iter()
        .map(|e| match e {
            L7Event::Request(r) => {
                Ev::Req(r.stream_id, r.name.to_string(), r.first.enter_ns / 1_000)
            }
            L7Event::Response(r) => Ev::Resp(r.stream_id, r.last.enter_ns / 1_000, r.error.clone()),
            L7Event::Abandoned {
                stream_id,
                at,
                reason,
            } => Ev::Gone(*stream_id, at.enter_ns / 1_000, reason),
        })
        .collect()
}

fn requests(events: &[L7Event]) -> Vec<&Request> {
    events
        .iter()
        .filter_map(|e| match e {
            L7Event::Request(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn responses(events: &[L7Event]) -> Vec<&Response> {
    events
        .iter()
        .filter_map(|e| match e {
            L7Event::Response(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn attr<'a>(attributes: &'a [Attribute], key: &str) -> Option<&'a Value> {
    find(attributes, key)
}

// ---- Building HTTP/2 bytes ----

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = values
        .iter()
        .flat_map(|(id, v)| id.to_be_bytes().into_iter().chain(v.to_be_bytes()))
        .collect();
    frame(frame::SETTINGS, 0, 0, &payload)
}

fn settings_ack() -> Vec<u8> {
    frame(frame::SETTINGS, frame::ACK, 0, &[])
}

fn window_update(stream: u32, n: u32) -> Vec<u8> {
    frame(frame::WINDOW_UPDATE, 0, stream, &n.to_be_bytes())
}

fn data(stream: u32, end: bool, payload: &[u8]) -> Vec<u8> {
    frame(
        frame::DATA,
        if end { frame::END_STREAM } else { 0 },
        stream,
        payload,
    )
}

fn rst(stream: u32, code: u32) -> Vec<u8> {
    frame(frame::RST_STREAM, 0, stream, &code.to_be_bytes())
}

fn goaway(last_stream: u32, code: u32) -> Vec<u8> {
    let mut payload = last_stream.to_be_bytes().to_vec();
    payload.extend(code.to_be_bytes());
    payload.extend(b"bye");
    frame(frame::GOAWAY, 0, 0, &payload)
}

/// A gRPC length-prefixed message of `len` bytes.
fn message(len: usize) -> Vec<u8> {
    let mut out = vec![0];
    out.extend((len as u32).to_be_bytes());
    out.extend(std::iter::repeat_n(b'm', len));
    out
}

/// One direction's HPACK encoder, encoding as real peers do: indexed where possible, new
/// fields added to the dynamic table, values Huffman-coded, credentials never indexed.
struct Hpack(Encoder<'static>);

impl Hpack {
    fn new() -> Self {
        Self(Encoder::default())
    }

    fn block(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in fields {
            let sensitive = matches!(
                *name,
                "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
            );
            let flags = if sensitive {
                Encoder::NEVER_INDEXED | Encoder::HUFFMAN_VALUE
            } else {
                Encoder::BEST_FORMAT | Encoder::WITH_INDEXING | Encoder::HUFFMAN_VALUE
            };
            self.0
                .encode(
                    (name.as_bytes().to_vec(), value.as_bytes().to_vec(), flags),
                    &mut out,
                )
                .unwrap();
        }
        out
    }

    /// A HEADERS frame with END_HEADERS (and END_STREAM if `end`).
    fn headers(&mut self, stream: u32, end: bool, fields: &[(&str, &str)]) -> Vec<u8> {
        let flags = frame::END_HEADERS | if end { frame::END_STREAM } else { 0 };
        frame(frame::HEADERS, flags, stream, &self.block(fields))
    }
}

/// The client's side of a connection.
struct Client {
    hpack: Hpack,
}

/// The server's side.
struct Server {
    hpack: Hpack,
}

const AUTHORITY: &str = "orders.internal:50051";

impl Client {
    fn new() -> Self {
        Self {
            hpack: Hpack::new(),
        }
    }

    /// The connection preface with the client's SETTINGS, as one write.
    fn preface(&self) -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        out.extend(settings(&[(2, 0), (4, 4_194_304), (6, 16_384)]));
        out.extend(window_update(0, 4_128_769));
        out
    }

    fn grpc_head(&mut self, stream: u32, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut fields = vec![
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", AUTHORITY),
            ("content-type", "application/grpc"),
            ("user-agent", "grpc-go/1.64.0"),
            ("te", "trailers"),
        ];
        fields.extend_from_slice(extra);
        self.hpack.headers(stream, false, &fields)
    }

    /// A unary call: request HEADERS, then one DATA frame ending the stream.
    fn grpc_call(&mut self, stream: u32, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut out = self.grpc_head(stream, path, extra);
        out.extend(data(stream, true, &message(12)));
        out
    }

    fn get(&mut self, stream: u32, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut fields = vec![
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "www.example.com"),
            (":path", path),
            ("user-agent", "curl/8.5.0"),
            ("accept", "*/*"),
        ];
        fields.extend_from_slice(extra);
        self.hpack.headers(stream, true, &fields)
    }
}

impl Server {
    fn new() -> Self {
        Self {
            hpack: Hpack::new(),
        }
    }

    /// The server's SETTINGS and its acknowledgement of the client's.
    fn preface(&self) -> Vec<u8> {
        let mut out = settings(&[(3, 100), (4, 65_535), (5, 16_384)]);
        out.extend(settings_ack());
        out
    }

    fn grpc_head(&mut self, stream: u32) -> Vec<u8> {
        self.hpack.headers(
            stream,
            false,
            &[(":status", "200"), ("content-type", "application/grpc")],
        )
    }

    fn grpc_trailers(&mut self, stream: u32, status: &str) -> Vec<u8> {
        self.hpack.headers(
            stream,
            true,
            &[("grpc-status", status), ("grpc-message", "")],
        )
    }

    /// A whole response: head, `messages` DATA frames, trailers.
    fn grpc_reply(&mut self, stream: u32, status: &str, messages: usize) -> Vec<u8> {
        let mut out = self.grpc_head(stream);
        for _ in 0..messages {
            out.extend(data(stream, false, &message(20)));
        }
        out.extend(self.grpc_trailers(stream, status));
        out
    }

    /// A trailers-only response (an immediate error).
    fn grpc_error(&mut self, stream: u32, status: &str) -> Vec<u8> {
        self.hpack.headers(
            stream,
            true,
            &[
                (":status", "200"),
                ("content-type", "application/grpc"),
                ("grpc-status", status),
                ("grpc-message", "no such order"),
            ],
        )
    }

    fn reply(&mut self, stream: u32, status: &str, body: &[u8]) -> Vec<u8> {
        let mut out = self.hpack.headers(
            stream,
            body.is_empty(),
            &[
                (":status", status),
                ("content-type", "text/html"),
                ("set-cookie", "session=s3cr3t-cookie"),
            ],
        );
        if !body.is_empty() {
            out.extend(data(stream, true, body));
        }
        out
    }
}

#[test]
fn prior_knowledge_detection_and_roles() {
    let client = Client::new();
    let server = Server::new();
    for (dir, bytes, role) in [
        (OUT, client.preface(), Role::Client),
        (IN, client.preface(), Role::Server),
        (OUT, server.preface(), Role::Server),
        (IN, server.preface(), Role::Client),
    ] {
        let mut c = Conn::detecting();
        c.io(dir, &bytes, 1);
        assert_eq!(c.role, Some(role), "{dir:?} {bytes:02x?}");
        assert_eq!(c.parser.as_ref().map(Parser::name), Some("http/2"));
        assert_eq!(c.stats, ParseStats::default());
    }
}

#[test]
fn a_grpc_server_seen_from_its_first_write() {
    // Go and hyper servers write their SETTINGS before reading the client's preface.
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::detecting();
    c.io(OUT, &server.preface(), 1)
        .io(IN, &client.preface(), 2)
        .io(IN, &client.grpc_call(1, "/shop.v1.Orders/Get", &[]), 3)
        .io(OUT, &server.grpc_reply(1, "0", 1), 4)
        .close(5);
    assert_eq!(c.role, Some(Role::Server));
    assert_eq!(c.summary(), vec![req(1, "shop.v1.Orders/Get", 3), ok(1, 4)]);
    assert_eq!(c.stats, ParseStats::default());
}
