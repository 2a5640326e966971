//! Bad bytes on one connection give no span and no panic, and the next good request, on a new
//! connection of the same process (same thread), is traced exactly as if the bad connection
//! had never been: same name, attributes, status, parent and times.
//!
//! The bad inputs: garbage, a head larger than the capture, a head larger than the agent
//! buffers, requests cut short by the close, invalid Content-Length, NUL bytes, and the HTTP/2
//! client preface on an HTTP/1 server (prior-knowledge curl at a plain HTTP/1 port), each
//! answered the way an HTTP/1 server does (an error status, or nothing), in random syscalls.

use tracer_common::Direction::{self, Egress, Ingress};

use super::{Rng, Shape, io, open, pipeline, shapes};
use crate::{
    capture::{CaptureEvent, SocketId},
    pipeline::Pipeline,
    protocols::http2::frame,
};

const TID: u32 = 7;
const BAD: SocketId = SocketId {
    tgid: 1,
    fd: 4,
    conn_gen: 20,
};
const GOOD: SocketId = SocketId {
    tgid: 1,
    fd: 5,
    conn_gen: 21,
};

const GOOD_REQUEST: &[u8] = b"GET /users/42?page=2 HTTP/1.1\r\nHost: shop:8080\r\n\
User-Agent: curl/8.5.0\r\n\
traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n";
const GOOD_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"a\":1}";
const HTTP1_REFUSES_H2: &[u8] =
    b"HTTP/1.0 505 HTTP Version Not Supported\r\nContent-Length: 0\r\n\r\n";
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// A bad input: what the client sends, and what the server answers (maybe nothing).
struct Case {
    name: &'static str,
    /// Syscalls moving bytes to the server: (captured, total).
    sent: Vec<(Vec<u8>, u64)>,
    answer: &'static [u8],
}

fn whole(bytes: &[u8]) -> (Vec<u8>, u64) {
    (bytes.to_vec(), bytes.len() as u64)
}

fn cases(rng: &mut Rng) -> Vec<Case> {
    let mut cases = Vec::new();
    for len in [20, 300, 4000] {
        let garbage: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        cases.push(Case {
            name: "garbage",
            sent: vec![whole(&garbage)],
            answer: b"",
        });
    }
    cases.push(Case {
        name: "a TLS ClientHello",
        sent: vec![whole(
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03abcdefghijklmnop",
        )],
        answer: b"",
    });
    let mut big = b"GET /big HTTP/1.1\r\nHost: shop\r\nCookie: ".to_vec();
    big.extend(std::iter::repeat_n(b'c', 10_000));
    big.extend_from_slice(b"\r\n\r\n");
    cases.push(Case {
        name: "a head past the capture",
        sent: vec![(big[..4096].to_vec(), big.len() as u64)],
        answer: b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\r\n",
    });
    let mut huge = b"GET /huge HTTP/1.1\r\n".to_vec();
    while huge.len() < 70_000 {
        huge.extend_from_slice(
            format!("X-Filler-{}: {}\r\n", huge.len(), "f".repeat(100)).as_bytes(),
        );
    }
    huge.extend_from_slice(b"\r\n");
    cases.push(Case {
        name: "a head past the agent's buffer",
        sent: huge.chunks(4096).map(whole).collect(),
        answer: b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\r\n",
    });
    let valid = b"POST /orders HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\n\r\n";
    for _ in 0..3 {
        let cut = 1 + rng.below(valid.len() - 2);
        cases.push(Case {
            name: "a request cut short by the close",
            sent: vec![whole(&valid[..cut])],
            answer: b"",
        });
    }
    for bad in [
        &b"POST /two HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc"[..],
        b"POST /nan HTTP/1.1\r\nContent-Length: 3x\r\n\r\nabc",
        b"POST /neg HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /huge HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\nabc",
        b"POST /te HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    ] {
        cases.push(Case {
            name: "an invalid Content-Length",
            sent: vec![whole(bad)],
            answer: BAD_REQUEST,
        });
    }
    for bad in [
        &b"GET /nul HTTP/1.1\r\nHost: a\0b\r\n\r\n"[..],
        b"GET /a\0b HTTP/1.1\r\nHost: shop\r\n\r\n",
        b"GE\0T /a HTTP/1.1\r\n\r\n",
        &[0u8; 64],
    ] {
        cases.push(Case {
            name: "NUL bytes",
            sent: vec![whole(bad)],
            answer: BAD_REQUEST,
        });
    }
    // The preface alone (with its SETTINGS), as an HTTP/2 client opens a connection.
    let mut preface = frame::PREFACE.to_vec();
    preface.extend_from_slice(&[0, 0, 6, frame::SETTINGS, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]);
    cases.push(Case {
        name: "the HTTP/2 preface on an HTTP/1 port",
        sent: vec![whole(&preface)],
        answer: HTTP1_REFUSES_H2,
    });
    cases
}

/// Splits every syscall of `sent` in up to three at random (a capture cut stays in the last).
fn resplit(sent: &[(Vec<u8>, u64)], rng: &mut Rng) -> Vec<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    for (captured, total) in sent {
        if captured.is_empty() {
            if *total > 0 {
                out.push((Vec::new(), *total));
            }
            continue;
        }
        let mut cuts: Vec<usize> = (0..rng.below(3))
            .map(|_| rng.below(captured.len()))
            .collect();
        cuts.extend([0, captured.len()]);
        cuts.sort_unstable();
        cuts.dedup();
        let last = cuts.len() - 2;
        for (i, w) in cuts.windows(2).enumerate() {
            let piece = captured[w[0]..w[1]].to_vec();
            let len = piece.len() as u64;
            out.push((
                piece,
                if i == last {
                    len + total - captured.len() as u64
                } else {
                    len
                },
            ));
        }
    }
    out
}

fn at(clock: &mut u64) -> (u64, u64) {
    *clock += 100;
    (*clock, *clock + 5)
}

/// The good exchange on its own connection, from `clock` on.
fn good_exchange(p: &mut Pipeline, clock: &mut u64) {
    p.on_event(open(
        GOOD,
        true,
        "127.0.0.1:8080",
        "127.0.0.1:50001",
        *clock,
    ));
    let send = |p: &mut Pipeline, clock: &mut u64, dir: Direction, bytes: &[u8]| {
        p.on_event(io(
            GOOD,
            TID,
            at(clock),
            dir,
            bytes,
            bytes.len() as u64,
            Vec::new(),
        ))
    };
    send(p, clock, Ingress, GOOD_REQUEST);
    send(p, clock, Egress, GOOD_RESPONSE);
    p.on_event(CaptureEvent::Close {
        socket: GOOD,
        ts_ns: at(clock).0,
    });
}

/// The good exchange's spans when nothing came before it.
fn reference(clock: u64) -> Vec<Shape> {
    let mut p = pipeline(&[1]);
    let mut clock = clock;
    good_exchange(&mut p, &mut clock);
    let spans = shapes(&p.ready_spans(true));
    let [span] = &spans[..] else {
        panic!("one span: {spans:#?}")
    };
    // Exactly what this request is, as `pipeline/tests.rs` and the HTTP semantics define it.
    assert_eq!(span.name, "GET /users/{id}");
    assert_eq!(span.kind, "Server");
    assert_eq!(span.error, None);
    assert_eq!(span.parent, "remote 00f067aa0ba902b7");
    for attribute in [
        "http.request.method=GET",
        "url.path=/users/42",
        "url.query=page=REDACTED",
        "server.address=shop",
        "server.port=8080",
        "user_agent.original=curl/8.5.0",
        "http.response.status_code=200",
    ] {
        assert!(
            span.attributes.iter().any(|a| a == attribute),
            "{attribute} in {span:#?}"
        );
    }
    spans
}

#[test]
fn bad_input_gives_no_span_and_the_next_connection_is_traced_exactly() {
    let mut rng = Rng::new(0xbad1);
    check(cases(&mut rng), &mut rng);
}

/// What curl --http2-prior-knowledge writes at an HTTP/1-only server: the preface and its
/// SETTINGS, then the request's HEADERS (`GET /`, static table). The HTTP/2 parser reports the
/// request, and when the server answers in HTTP/1 and closes, it is abandoned: a failed `GET /`
/// span for a request the server never understood. Not fixed yet: a parser has no way to take
/// back a request it reported (`L7Event` would need a "discarded" outcome the stitcher drops,
/// as it drops the open spans of a process no longer traced), and the HTTP/2 parser would need
/// to hold the server to its connection preface (a SETTINGS frame first).
#[test]
#[ignore = "known gap: a request on an HTTP/2 preface the server refuses in HTTP/1 gives a span"]
fn a_prior_knowledge_request_refused_in_http1_gives_no_span() {
    let mut request = frame::PREFACE.to_vec();
    request.extend_from_slice(&[0, 0, 6, frame::SETTINGS, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]);
    let headers = [
        0,
        0,
        3,
        frame::HEADERS,
        frame::END_HEADERS | frame::END_STREAM,
        0,
        0,
        0,
        1,
    ];
    request.extend_from_slice(&headers);
    request.extend_from_slice(&[0x82, 0x86, 0x84]);
    let case = Case {
        name: "a prior-knowledge request at an HTTP/1 port",
        sent: vec![whole(&request)],
        answer: HTTP1_REFUSES_H2,
    };
    check(vec![case], &mut Rng::new(0xbad2));
}

fn check(cases: Vec<Case>, rng: &mut Rng) {
    for case in cases {
        for round in 0..8 {
            let mut p = pipeline(&[1]);
            let mut clock = 0;
            p.on_event(open(BAD, true, "127.0.0.1:8080", "127.0.0.1:50000", 1));
            for (captured, total) in resplit(&case.sent, rng) {
                p.on_event(io(
                    BAD,
                    TID,
                    at(&mut clock),
                    Ingress,
                    &captured,
                    total,
                    Vec::new(),
                ));
            }
            for (captured, total) in resplit(&[whole(case.answer)], rng) {
                p.on_event(io(
                    BAD,
                    TID,
                    at(&mut clock),
                    Egress,
                    &captured,
                    total,
                    Vec::new(),
                ));
            }
            p.on_event(CaptureEvent::Close {
                socket: BAD,
                ts_ns: at(&mut clock).0,
            });
            let spans = p.ready_spans(true);
            assert!(
                spans.is_empty(),
                "{} (round {round}) gave spans: {spans:#?}",
                case.name
            );

            let start = clock;
            good_exchange(&mut p, &mut clock);
            assert_eq!(
                shapes(&p.ready_spans(true)),
                reference(start),
                "after {} (round {round})",
                case.name
            );
        }
    }
}
