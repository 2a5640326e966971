//! Message bodies: lengths, chunked coding, bodies to the close, bodies larger than the capture.

use super::*;

#[test]
fn content_length_body_is_counted_through_gaps_without_buffering() {
    let mut c = Conn::client();
    c.io(OUT, GET, 1)
        // 1 MiB body: 4 KiB captured per syscall.
        .io_cut(
            IN,
            &[
                b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n".as_slice(),
                &[b'x'; 4000],
            ]
            .concat(),
            262_144 + 44,
            2,
        );
    for n in 3..6 {
        c.io_cut(IN, &[b'x'; 4096], 262_144, n);
        assert_eq!(c.ingress.buffered(), 0, "nothing kept while counting");
    }
    assert_eq!(c.summary(), vec![req(0, "GET /a", 1), Ev::Resp(0, 200, 5)]);
    // The stream is exactly at the next message.
    c.io(OUT, GET, 6).io(IN, OK_EMPTY, 7);
    assert_eq!(c.summary()[2..], [req(1, "GET /a", 6), Ev::Resp(1, 200, 7)]);
    assert_eq!(c.stats, ParseStats::default());
}

#[test]
fn request_body_larger_than_the_capture() {
    let mut c = Conn::server();
    c.io_cut(
        IN,
        b"PUT /upload HTTP/1.1\r\nContent-Length: 100000\r\n\r\nDATA",
        48 + 100_000,
        1,
    )
    .io(OUT, OK_EMPTY, 2)
    .io(IN, GET, 3)
    .io(OUT, OK_EMPTY, 4);
    assert_eq!(
        c.summary(),
        vec![
            req(0, "PUT /upload", 1),
            Ev::Resp(0, 200, 2),
            req(1, "GET /a", 3),
            Ev::Resp(1, 200, 4)
        ]
    );
}

#[test]
fn chunked_response_over_many_reads_with_extensions_and_trailers() {
    let mut c = Conn::client();
    c.io(OUT, GET, 1)
        .io(
            IN,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Expires\r\n\r\n",
            2,
        )
        .io(IN, b"4;ext=1\r\nWi", 3)
        .io(IN, b"ki\r\n5\r\npedia\r", 4)
        .io(IN, b"\n0\r\nExpires: never\r\n", 5);
    assert_eq!(c.summary(), vec![req(0, "GET /a", 1)]);
    c.io(IN, b"\r\n", 6);
    assert_eq!(c.summary(), vec![req(0, "GET /a", 1), Ev::Resp(0, 200, 6)]);
}

#[test]
fn chunked_request_body() {
    let mut c = Conn::server();
    c.io(
        IN,
        b"POST /ingest HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        1,
    )
    .io(IN, GET, 2)
    .io(OUT, OK_EMPTY, 3)
    .io(OUT, OK_EMPTY, 4);
    assert_eq!(
        c.summary(),
        vec![
            req(0, "POST /ingest", 1),
            req(1, "GET /a", 2),
            Ev::Resp(0, 200, 3),
            Ev::Resp(1, 200, 4)
        ]
    );
}

#[test]
fn chunked_framing_lost_in_a_gap_ends_at_the_next_response() {
    let mut c = Conn::server();
    c.io(IN, GET, 1)
        .io(
            OUT,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            2,
        )
        // One write of many chunks: only the first is captured, later size lines are not.
        .io_cut(OUT, b"100\r\n", 20_000, 3)
        .io_cut(OUT, b"", 20_000, 4)
        .io(IN, GET, 5);
    assert_eq!(c.summary(), vec![req(0, "GET /a", 1), req(1, "GET /a", 5)]);
    // The next response starts a syscall: the lost body ended with the previous one.
    c.io(OUT, OK_EMPTY, 6);
    assert_eq!(
        c.summary(),
        vec![
            req(0, "GET /a", 1),
            req(1, "GET /a", 5),
            Ev::Resp(0, 200, 4),
            Ev::Resp(1, 200, 6)
        ]
    );
    assert_eq!(c.egress.buffered(), 0);
}

#[test]
fn chunked_framing_lost_ends_at_a_captured_terminator() {
    let mut c = Conn::client();
    c.io(OUT, GET, 1)
        .io(
            IN,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            2,
        )
        .io_cut(IN, b"2000\r\nxx", 8_300, 3)
        // Python writes the last chunk on its own.
        .io(IN, b"0\r\n\r\n", 4);
    assert_eq!(c.summary(), vec![req(0, "GET /a", 1), Ev::Resp(0, 200, 4)]);
}

#[test]
fn chunked_framing_lost_ends_at_the_close() {
    let mut c = Conn::client();
    c.io(OUT, GET, 1)
        .io(
            IN,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZZZ\r\n",
            2,
        )
        .io_cut(IN, b"more", 9_000, 3)
        .close(9);
    assert_eq!(c.summary(), vec![req(0, "GET /a", 1), Ev::Resp(0, 200, 3)]);
}

#[test]
fn response_without_length_runs_to_the_close() {
    let mut c = Conn::client();
    c.io(OUT, b"GET /stream HTTP/1.0\r\n\r\n", 1)
        .io(
            IN,
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst",
            2,
        )
        .io_cut(IN, b"second", 50_000, 3)
        // Looks like a response, but it is body: the body runs to the close.
        .io(IN, b"HTTP/1.1 500 Inside The Body\r\n\r\n", 4);
    assert_eq!(c.summary(), vec![req(0, "GET /stream", 1)]);
    assert_eq!(c.ingress.buffered(), 0);
    c.close(10);
    assert_eq!(
        c.summary(),
        vec![req(0, "GET /stream", 1), Ev::Resp(0, 200, 4)]
    );
}

#[test]
fn response_without_length_and_without_body_ends_at_its_head() {
    let mut c = Conn::client();
    c.io(OUT, GET, 1)
        .io(IN, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", 2)
        .close(5);
    assert_eq!(c.summary(), vec![req(0, "GET /a", 1), Ev::Resp(0, 200, 2)]);
}

#[test]
fn responses_without_bodies() {
    let mut c = Conn::server();
    for (i, status) in ["204 No Content", "304 Not Modified"].iter().enumerate() {
        let n = 10 * i as u64;
        c.io(IN, GET, n + 1)
            // A length on these is ignored: they never have a body.
            .io(
                OUT,
                format!("HTTP/1.1 {status}\r\nContent-Length: 50\r\n\r\n").as_bytes(),
                n + 2,
            );
    }
    c.io(IN, b"HEAD /big HTTP/1.1\r\n\r\n", 21)
        .io(
            OUT,
            b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n",
            22,
        )
        .io(IN, GET, 23)
        .io(OUT, OK_EMPTY, 24);
    assert_eq!(
        c.summary(),
        vec![
            req(0, "GET /a", 1),
            Ev::Resp(0, 204, 2),
            req(1, "GET /a", 11),
            Ev::Resp(1, 304, 12),
            req(2, "HEAD /big", 21),
            Ev::Resp(2, 200, 22),
            req(3, "GET /a", 23),
            Ev::Resp(3, 200, 24),
        ]
    );
}

#[test]
fn expect_100_continue_pairs_the_final_response() {
    let mut c = Conn::server();
    c.io(IN, b"PUT /f HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n", 1)
        .io(OUT, b"HTTP/1.1 100 Continue\r\n\r\n", 2)
        .io(IN, b"hello", 3)
        .io(OUT, b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 4);
    assert_eq!(c.summary(), vec![req(0, "PUT /f", 1), Ev::Resp(0, 201, 4)]);
}

#[test]
fn transfer_encoding_wins_over_content_length() {
    let mut c = Conn::client();
    c.io(OUT, GET, 1)
        .io(IN, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", 2)
        .io(OUT, GET, 3)
        .io(IN, OK_EMPTY, 4);
    assert_eq!(
        c.summary(),
        vec![
            req(0, "GET /a", 1),
            Ev::Resp(0, 200, 2),
            req(1, "GET /a", 3),
            Ev::Resp(1, 200, 4)
        ]
    );
}
