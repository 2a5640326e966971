//! Bytes that are not (whole) HTTP: no span, no panic, and parsing resumes at the next message.

use super::*;
use crate::protocols::MAX_BUFFERED;

#[test]
fn garbage_yields_no_events() {
    let garbage: [&[u8]; 6] = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"\0\0\0\0\0\0\0\0",
        b"hello world\r\n\r\n",
        b"GET\r\n\r\n",
        b"HTTP/1.1 abc\r\n\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
    ];
    for bytes in garbage {
        for role in [Role::Server, Role::Client] {
            let mut c = Conn::new(role);
            c.io(IN, bytes, 1).io(OUT, bytes, 2).close(3);
            assert!(
                c.events.is_empty(),
                "{:?}: {:?}",
                String::from_utf8_lossy(bytes),
                c.events
            );
            assert!(c.ingress.is_empty() && c.egress.is_empty());
        }
    }
}

/// Deterministic noise (xorshift).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Every reported request ends exactly once (a response or an abandonment) once the connection
/// closed, and nothing ends that was not reported.
fn assert_each_request_ends_once(events: &[L7Event]) {
    let mut open = std::collections::HashSet::new();
    for event in events {
        match event {
            L7Event::Request(r) => assert!(open.insert(r.stream_id), "id reused: {events:?}"),
            L7Event::Response(Response { stream_id, .. })
            | L7Event::Abandoned { stream_id, .. } => {
                assert!(
                    open.remove(stream_id),
                    "{stream_id} ended twice or never began: {events:?}"
                )
            }
        }
    }
    assert!(open.is_empty(), "never ended: {open:?} in {events:?}");
}

/// Runs random syscalls (random cuts into random gaps) built from `fragment` through both
/// directions of a connection.
fn run_noise(rounds: u32, seed: u64, fragment: impl Fn(&mut Noise) -> Vec<u8>) {
    let mut noise = Noise(seed);
    for round in 0..rounds {
        let role = if round.is_multiple_of(2) {
            Role::Server
        } else {
            Role::Client
        };
        let mut c = Conn::new(role);
        for n in 0..30u64 {
            let bytes: Vec<u8> = (0..1 + noise.below(6))
                .flat_map(|_| fragment(&mut noise))
                .collect();
            let captured = if noise.below(4) == 0 {
                noise.below(bytes.len() + 1)
            } else {
                bytes.len()
            };
            let extra = if noise.below(8) == 0 {
                noise.below(5_000) as u64
            } else {
                0
            };
            let dir = if noise.below(2) == 0 { IN } else { OUT };
            c.io_cut(dir, &bytes[..captured], bytes.len() as u64 + extra, n);
        }
        c.close(99);
        assert_each_request_ends_once(&c.events);
    }
}

#[test]
fn random_bytes_never_panic_and_keep_the_books() {
    let alphabet =
        b"GET HTTP/1.1\r\n: 0123456789abcdef-;Content-Length Transfer-Encoding chunked\0\xff";
    run_noise(300, 0x2545_f491_4f6c_dd1d, |noise| {
        (0..1 + noise.below(40))
            .map(|_| alphabet[noise.below(alphabet.len())])
            .collect()
    });
}

#[test]
fn random_http_fragments_never_panic_and_keep_the_books() {
    const FRAGMENTS: [&[u8]; 24] = [
        b"GET /a HTTP/1.1\r\n",
        b"HEAD /h HTTP/1.1\r\n",
        b"POST /p HTTP/1.0\r\n",
        b"CONNECT h:1 HTTP/1.1\r\n",
        b"PROPFIND /d HTTP/1.1\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 100 Continue\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n",
        b"HTTP/1.1 204 No Content\r\n",
        b"HTTP/1.0 503 Busy\r\n",
        b"Content-Length: 5\r\n",
        b"Content-Length: 0\r\n",
        b"Content-Length: x\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Host: h:80\r\n",
        b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n",
        b"\r\n",
        b"\r\n",
        b"5\r\nhello\r\n",
        b"5;e=1\r\nhel",
        b"0\r\n\r\n",
        b"hello",
        b"\0",
        b"\n",
    ];
    run_noise(300, 0x9e37_79b9_7f4a_7c15, |noise| {
        FRAGMENTS[noise.below(FRAGMENTS.len())].to_vec()
    });
}

#[test]
fn garbage_before_a_request_is_skipped() {
    let mut c = Conn::server();
    c.io(IN, b"\x01\x02junk\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n", 1)
        .io(OUT, OK_EMPTY, 2);
    assert_eq!(c.summary(), vec![req(0, "GET /a", 1), Ev::Resp(0, 200, 2)]);
    assert_eq!(c.stats.resyncs, 1);
    assert_eq!(c.stats.skipped_bytes, 8);
}

#[test]
fn head_cut_by_the_capture_is_not_reported_and_keeps_pairing_right() {
    let mut c = Conn::server();
    // Pipelined: a request whose head is larger than the capture, then a normal one.
    c.io_cut(
        IN,
        b"GET /big HTTP/1.1\r\nCookie: aaaaaaaaaaaaaaaa",
        9_000,
        1,
    )
    .io(IN, b"GET /small HTTP/1.1\r\n\r\n", 2)
    .io(OUT, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbig", 3)
    .io(
        OUT,
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        4,
    );
    // The first response answered the unreadable request: the second pairs with /small.
    assert_eq!(
        c.summary(),
        vec![req(0, "GET /small", 2), Ev::Resp(0, 404, 4)]
    );
}

#[test]
fn response_head_cut_by_the_capture_abandons_its_request() {
    let mut c = Conn::client();
    c.io(OUT, GET, 1)
        .io_cut(IN, b"HTTP/1.1 200 OK\r\nSet-Cookie: xxxxxxxxx", 10_000, 2)
        .io(OUT, GET, 3)
        .io(IN, OK_EMPTY, 4);
    assert_eq!(
        c.summary(),
        vec![
            req(0, "GET /a", 1),
            Ev::Gone(0, 2, "response could not be read"),
            req(1, "GET /a", 3),
            Ev::Resp(1, 200, 4),
        ]
    );
}

#[test]
fn start_line_cut_by_the_capture_is_skipped() {
    let mut c = Conn::server();
    c.io_cut(IN, b"GET /very/long/ur", 9_000, 1)
        .io(IN, GET, 2)
        .io(
            OUT,
            b"HTTP/1.1 414 URI Too Long\r\nContent-Length: 0\r\n\r\n",
            3,
        )
        .io(OUT, OK_EMPTY, 4);
    // The 414 answered the request whose start line was cut.
    assert_eq!(c.summary(), vec![req(0, "GET /a", 2), Ev::Resp(0, 200, 4)]);
}

#[test]
fn oversized_head_is_dropped() {
    let mut c = Conn::server();
    c.io(IN, b"GET /a HTTP/1.1\r\n", 1);
    let filler = format!("X-Filler: {}\r\n", "f".repeat(1000));
    for n in 0..70 {
        c.io(IN, filler.as_bytes(), 2 + n);
    }
    assert!(c.events.is_empty());
    assert_eq!(c.stats.oversized, 1);
    assert!(c.ingress.buffered() <= MAX_BUFFERED);
    c.io(IN, b"\r\n", 100)
        .io(IN, GET, 101)
        .io(OUT, OK_EMPTY, 102);
    assert_eq!(
        c.summary(),
        vec![req(0, "GET /a", 101), Ev::Resp(0, 200, 102)]
    );
}

#[test]
fn nul_bytes_and_invalid_lengths_give_no_span_and_resync() {
    let bad_requests: [&[u8]; 4] = [
        b"GET /nul HTTP/1.1\r\nHost: a\0b\r\n\r\n",
        b"POST /two HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
        b"POST /nan HTTP/1.1\r\nContent-Length: 3x\r\n\r\nabc",
        b"POST /te HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    ];
    for bad in bad_requests {
        let mut c = Conn::server();
        c.io(IN, bad, 1)
            .io(
                OUT,
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
                2,
            )
            .io(IN, GET, 3)
            .io(OUT, OK_EMPTY, 4);
        let name = String::from_utf8_lossy(&bad[..12]).into_owned();
        assert_eq!(
            c.summary(),
            vec![req(0, "GET /a", 3), Ev::Resp(0, 200, 4)],
            "{name}"
        );
    }
}

#[test]
fn response_with_conflicting_lengths_abandons_its_request() {
    let mut c = Conn::client();
    c.io(OUT, GET, 1)
        .io(
            IN,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 20\r\n\r\nok",
            2,
        )
        .io(OUT, GET, 3)
        .io(IN, OK_EMPTY, 4);
    assert_eq!(
        c.summary(),
        vec![
            req(0, "GET /a", 1),
            Ev::Gone(0, 2, "response could not be read"),
            req(1, "GET /a", 3),
            Ev::Resp(1, 200, 4),
        ]
    );
}

#[test]
fn uncaptured_syscalls_between_messages_are_skipped() {
    // The capture lost a whole syscall (e.g. a read-fault): nothing captured, only a length.
    let mut c = Conn::server();
    c.io_cut(IN, b"", 500, 1)
        .io(IN, GET, 2)
        .io(OUT, OK_EMPTY, 3);
    assert_eq!(c.summary(), vec![req(0, "GET /a", 2), Ev::Resp(0, 200, 3)]);
}

#[test]
fn a_wrong_length_does_not_invent_requests() {
    // The body is one byte longer than announced: the stray byte is dropped.
    let mut c = Conn::server();
    c.io(IN, b"POST /p HTTP/1.1\r\nContent-Length: 2\r\n\r\nabc", 1)
        .io(OUT, OK_EMPTY, 2)
        .io(IN, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n", 3)
        .io(OUT, OK_EMPTY, 4)
        .io(OUT, OK_EMPTY, 5);
    assert_eq!(
        c.summary(),
        vec![
            req(0, "POST /p", 1),
            Ev::Resp(0, 200, 2),
            req(1, "GET /a", 3),
            req(2, "GET /b", 3),
            Ev::Resp(1, 200, 4),
            Ev::Resp(2, 200, 5),
        ]
    );
    assert_eq!((c.stats.resyncs, c.stats.skipped_bytes), (1, 1));
    // A body one byte short: the parser lands inside the next request's method, and `ET /a`
    // (which httparse would accept as a method) is not reported.
    let mut c = Conn::server();
    c.io(
        IN,
        b"POST /p HTTP/1.1\r\nContent-Length: 2\r\n\r\nxGET /a HTTP/1.1\r\n\r\n",
        1,
    );
    assert_eq!(c.summary(), vec![req(0, "POST /p", 1)]);
}

/// Response bytes read before the request they get paired with (the directions are buffered
/// apart): the abandonment is dated at the request's start, never before it (fuzz input
/// fuzz/regressions/http1/abandoned-before-its-request).
#[test]
fn an_unreadable_response_begun_before_its_request_ends_it_no_earlier_than_its_start() {
    let mut c = Conn::server();
    c.io(IN, GET, 1)
        .io(OUT, OK_EMPTY, 2)
        .io(OUT, b"HTTP/1.1 200 OK\r\nServer: x\r\n", 3)
        .io(IN, GET, 4)
        .io_cut(OUT, b"Set-Cookie: xxxxxxxxx", 10_000, 5);
    assert_eq!(
        c.summary(),
        vec![
            req(0, "GET /a", 1),
            Ev::Resp(0, 200, 2),
            req(1, "GET /a", 4),
            Ev::Gone(1, 4, "response could not be read"),
        ]
    );
}
