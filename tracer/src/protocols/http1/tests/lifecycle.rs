//! The life of a connection: protocol switches, tunnels, closes, queue limits.

use super::*;

#[test]
fn switching_protocols_ends_http1_on_the_connection() {
    let mut c = Conn::server();
    c.io(
        IN,
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        1,
    )
    .io(
        OUT,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
        2,
    )
    // WebSocket frames, one of which happens to contain an HTTP request line.
    .io(IN, b"\x81\x85abcdGET / HTTP/1.1\r\n\r\n", 3)
    .io(OUT, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 4)
    .close(5);
    assert_eq!(c.summary(), vec![req(0, "GET /ws", 1), Ev::Resp(0, 101, 2)]);
    assert_eq!(c.stats, ParseStats::default());
    assert!(
        c.ingress.is_empty() && c.egress.is_empty(),
        "bytes after the switch are dropped"
    );
}

#[test]
fn requests_queued_behind_a_switch_are_abandoned() {
    let mut c = Conn::server();
    c.io(
        IN,
        b"GET /ws HTTP/1.1\r\nUpgrade: h2c\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
        1,
    )
    .io(OUT, b"HTTP/1.1 101 Switching Protocols\r\n\r\n", 2);
    assert_eq!(
        c.summary(),
        vec![
            req(0, "GET /ws", 1),
            req(1, "GET /b", 1),
            Ev::Resp(0, 101, 2),
            Ev::Gone(1, 2, "connection switched protocols"),
        ]
    );
}

#[test]
fn connect_2xx_makes_a_tunnel() {
    let mut c = Conn::client();
    c.io(
        OUT,
        b"CONNECT api.example:443 HTTP/1.1\r\nHost: api.example:443\r\n\r\n",
        1,
    )
    .io(IN, b"HTTP/1.1 200 Connection established\r\n\r\n", 2)
    // TLS through the tunnel.
    .io(OUT, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 3)
    .io(IN, b"\x16\x03\x03\x00\x7a\x02", 4)
    .close(5);
    assert_eq!(c.summary(), vec![req(0, "CONNECT", 1), Ev::Resp(0, 200, 2)]);
    assert_eq!(c.stats, ParseStats::default());
}

#[test]
fn refused_connect_keeps_the_connection_http() {
    let mut c = Conn::client();
    c.io(OUT, b"CONNECT api.example:443 HTTP/1.1\r\n\r\n", 1)
        .io(
            IN,
            b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
            2,
        )
        .io(
            OUT,
            b"CONNECT api.example:443 HTTP/1.1\r\nProxy-Authorization: Basic eDp5\r\n\r\n",
            3,
        )
        .io(IN, b"HTTP/1.1 200 OK\r\n\r\n", 4);
    assert_eq!(
        c.summary(),
        vec![
            req(0, "CONNECT", 1),
            Ev::Resp(0, 407, 2),
            req(1, "CONNECT", 3),
            Ev::Resp(1, 200, 4)
        ]
    );
}

#[test]
fn close_abandons_requests_without_a_response() {
    let mut c = Conn::server();
    c.io(IN, GET, 1).io(IN, GET, 2).close(7);
    assert_eq!(
        c.summary(),
        vec![
            req(0, "GET /a", 1),
            req(1, "GET /a", 2),
            Ev::Gone(0, 7, "connection closed before a response"),
            Ev::Gone(1, 7, "connection closed before a response"),
        ]
    );
    // A second close reports nothing more.
    c.events.clear();
    c.close(8);
    assert!(c.events.is_empty());
}

#[test]
fn close_during_a_response_with_a_length_abandons_it() {
    let mut c = Conn::client();
    c.io(OUT, GET, 1)
        .io(
            IN,
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",
            2,
        )
        .close(3);
    assert_eq!(
        c.summary(),
        vec![
            req(0, "GET /a", 1),
            Ev::Gone(0, 3, "connection closed during the response")
        ]
    );
}

#[test]
fn pending_queue_is_bounded() {
    let mut c = Conn::server();
    let burst: Vec<u8> = GET.repeat(MAX_PENDING + 6);
    c.io(IN, &burst, 1);
    let gone: Vec<Ev> = c
        .summary()
        .into_iter()
        .filter(|e| matches!(e, Ev::Gone(..)))
        .collect();
    assert_eq!(
        gone,
        (0..6)
            .map(|id| Ev::Gone(id, 1, "too many requests awaiting a response"))
            .collect::<Vec<_>>()
    );
    assert_eq!(c.parser.pending.len(), MAX_PENDING);
    // The next response answers the oldest request still queued.
    c.events.clear();
    c.io(OUT, OK_EMPTY, 2);
    assert_eq!(c.summary(), vec![Ev::Resp(6, 200, 2)]);
}

#[test]
fn joined_mid_stream_the_first_response_pairs_with_nothing() {
    // `detect` saw a response first: the request was before the tracer started.
    let mut c = Conn::client();
    c.io(IN, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 1)
        .io(OUT, GET, 2)
        .io(IN, OK_EMPTY, 3);
    assert_eq!(c.summary(), vec![req(0, "GET /a", 2), Ev::Resp(0, 200, 3)]);
}

#[test]
fn stream_ids_count_requests_per_connection() {
    let mut c = Conn::server();
    for i in 0..5 {
        c.io(IN, GET, 2 * i + 1).io(OUT, OK_EMPTY, 2 * i + 2);
    }
    let ids: Vec<u64> = responses(&c.events).iter().map(|r| r.stream_id).collect();
    assert_eq!(ids, [0, 1, 2, 3, 4]);
}
