//! HTTP/1.1 connections upgraded to HTTP/2 with `Upgrade: h2c` (RFC 7540 §3.2).

use super::*;

const UPGRADE: &[u8] = b"GET /reports/7 HTTP/1.1\r\nHost: api:8080\r\n\
Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n";
const SWITCHING: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
const GET: &[u8] = b"GET /health HTTP/1.1\r\nHost: api:8080\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Stream 1's response, as the server writes it right after the 101.
fn upgraded_reply(server: &mut Server) -> Vec<u8> {
    let mut out = server.preface();
    out.extend(server.reply(1, "200", b"{\"report\":7}"));
    out
}

#[test]
fn server_side_the_upgraded_request_ends_with_its_http2_response() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::detecting();
    c.io(IN, GET, 1).io(OUT, OK, 2);
    c.io(IN, UPGRADE, 3);
    // The 101 and the server's first HTTP/2 frames in one write.
    let mut write = SWITCHING.to_vec();
    write.extend(upgraded_reply(&mut server));
    c.io(OUT, &write, 4);
    assert_eq!(c.parser.as_ref().map(Parser::name), Some("http/2"));
    c.io(IN, &client.preface(), 5);
    // A second request on the HTTP/2 connection: stream 3.
    c.io(IN, &client.get(3, "/reports/8", &[]), 6);
    c.io(OUT, &server.reply(3, "200", b"{}"), 7);
    c.close(8);
    // HTTP/1 used ids 0 and 1; HTTP/2 stream 3 is reported above them.
    assert_eq!(
        c.summary(),
        vec![
            req(0, "GET /health", 1),
            ok(0, 2),
            req(1, "GET /reports/{id}", 3),
            ok(1, 4),
            req(2 + 3, "GET /reports/{id}", 6),
            ok(5, 7),
        ]
    );
    assert_eq!(
        attr(
            &responses(&c.events)[1].attributes,
            "http.response.status_code"
        ),
        Some(&Value::Int(200)),
        "the upgraded request's status is its HTTP/2 response's, not 101"
    );
    assert_eq!(c.stats, ParseStats::default());
}

#[test]
fn client_side_with_the_preface_written_before_the_101_is_read() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::detecting();
    c.io(OUT, UPGRADE, 1);
    // Out of order in the agent: the client's preface is processed before the 101.
    c.io(OUT, &client.preface(), 2);
    assert_eq!(c.parser.as_ref().map(Parser::name), Some("http/1.1"));
    c.io(IN, SWITCHING, 3);
    c.io(IN, &upgraded_reply(&mut server), 4);
    // The preface waited in the buffer; it is read when the client writes again.
    c.io(OUT, &client.get(3, "/x", &[]), 5);
    c.io(IN, &server.reply(3, "204", b""), 6);
    assert_eq!(
        c.summary(),
        vec![
            req(0, "GET /reports/{id}", 1),
            ok(0, 4),
            req(1 + 3, "GET /x", 5),
            ok(4, 6),
        ]
    );
    assert_eq!(c.stats, ParseStats::default());
}

#[test]
fn a_refused_upgrade_stays_http1() {
    let mut c = Conn::detecting();
    c.io(IN, UPGRADE, 1)
        .io(OUT, OK, 2)
        .io(IN, GET, 3)
        .io(OUT, OK, 4);
    assert_eq!(
        c.summary(),
        vec![
            req(0, "GET /reports/{id}", 1),
            ok(0, 2),
            req(1, "GET /health", 3),
            ok(1, 4),
        ]
    );
    assert_eq!(c.parser.as_ref().map(Parser::name), Some("http/1.1"));
}

#[test]
fn websocket_upgrades_keep_ending_at_the_101() {
    let mut c = Conn::detecting();
    c.io(
        IN,
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        1,
    )
    .io(
        OUT,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
        2,
    );
    assert_eq!(c.summary(), vec![req(0, "GET /ws", 1), ok(0, 2)]);
    assert_eq!(c.parser.as_ref().map(Parser::name), Some("http/1.1"));
}

#[test]
fn a_101_to_h2c_seen_without_its_request_starts_http2_all_the_same() {
    // Joined mid-stream: the response comes first. The HTTP/2 connection starts fresh at the
    // 101, so its later streams decode fully; stream 1 answers a request never seen.
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::detecting();
    let mut write = SWITCHING.to_vec();
    write.extend(upgraded_reply(&mut server));
    c.io(OUT, &write, 1);
    assert_eq!(c.role, Some(Role::Server));
    c.io(IN, &client.preface(), 2);
    c.io(IN, &client.get(3, "/next", &[]), 3);
    c.io(OUT, &server.reply(3, "200", b"."), 4);
    assert_eq!(c.summary(), vec![req(3, "GET /next", 3), ok(3, 4)]);
}
