//! Tests of the HTTP/1 parser through [`drive`], the way the agent runs it: syscalls pushed into
//! the two streams of a connection, events collected.

mod exchanges;
mod framing;
mod lifecycle;
mod robustness;

use super::*;
use crate::protocols::{ParseStats, drive};
use crate::span::{Value, find};

/// Timing of the `n`th syscall of a test.
fn t(n: u64) -> SegTime {
    SegTime {
        enter_ns: n * 1_000,
        exit_ns: n * 1_000 + 10,
        tid: 42,
        ids: None,
    }
}

/// A connection seen by the tracer: the parser, its two streams, what it reported.
struct Conn {
    parser: Http1Parser,
    ingress: StreamBuffer,
    egress: StreamBuffer,
    events: Vec<L7Event>,
    stats: ParseStats,
}

impl Conn {
    fn new(role: Role) -> Self {
        Self {
            parser: Http1Parser::new(role),
            ingress: StreamBuffer::new(),
            egress: StreamBuffer::new(),
            events: Vec::new(),
            stats: ParseStats::default(),
        }
    }

    fn server() -> Self {
        Self::new(Role::Server)
    }

    fn client() -> Self {
        Self::new(Role::Client)
    }

    /// One fully captured syscall at time `n`.
    fn io(&mut self, dir: Direction, bytes: &[u8], n: u64) -> &mut Self {
        self.io_cut(dir, bytes, bytes.len() as u64, n)
    }

    /// One syscall that moved `total` bytes of which `captured` were captured.
    fn io_cut(&mut self, dir: Direction, captured: &[u8], total: u64, n: u64) -> &mut Self {
        let stream = match dir {
            Direction::Ingress => &mut self.ingress,
            Direction::Egress => &mut self.egress,
        };
        stream.push(captured, total, t(n));
        drive(
            &mut self.parser,
            dir,
            stream,
            &mut self.events,
            &mut self.stats,
        );
        self
    }

    fn close(&mut self, n: u64) -> &mut Self {
        self.parser.close(t(n), &mut self.events);
        self
    }

    /// The events so far, summarised.
    fn summary(&self) -> Vec<Ev> {
        summary(&self.events)
    }
}

use Direction::{Egress as OUT, Ingress as IN};

/// An event reduced to what most tests check; times are syscall numbers.
#[derive(Debug, PartialEq)]
enum Ev {
    /// stream id, span name, syscall of the first byte.
    Req(u64, String, u64),
    /// stream id, status, syscall of the last byte.
    Resp(u64, i64, u64),
    /// stream id, syscall, reason.
    Gone(u64, u64, &'static str),
}

fn req(id: u64, name: &str, first: u64) -> Ev {
    Ev::Req(id, name.to_string(), first)
}

fn summary(events: &[L7Event]) -> Vec<Ev> {
    events
        .iter()
        .map(|e| match e {
            L7Event::Request(r) => {
                Ev::Req(r.stream_id, r.name.to_string(), r.first.enter_ns / 1_000)
            }
            L7Event::Response(r) => {
                let Some(Value::Int(status)) = find(&r.attributes, "http.response.status_code")
                else {
                    panic!("response without status: {r:?}");
                };
                Ev::Resp(r.stream_id, *status, r.last.enter_ns / 1_000)
            }
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

const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
const OK_EMPTY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

#[test]
fn detect_roles_from_first_bytes() {
    assert_eq!(
        detect(IN, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        Some(Role::Server)
    );
    assert_eq!(detect(OUT, b"POST /api HTTP/1.0\r\n"), Some(Role::Client));
    // Joined mid-stream: a response first.
    assert_eq!(detect(IN, b"HTTP/1.1 200 OK\r\n"), Some(Role::Client));
    assert_eq!(
        detect(OUT, b"HTTP/1.0 404 Not Found\r\n"),
        Some(Role::Server)
    );
    for unsure in [
        &b"GE"[..],
        b"",
        b"HTTP/1.",
        b"\x16\x03\x01\x00\xa5\x01",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        assert_eq!(
            detect(IN, unsure),
            None,
            "{:?}",
            String::from_utf8_lossy(unsure)
        );
    }
}
