//! Connections joined mid-stream: no preface, no HPACK history.

use super::*;

/// A client and server that have already exchanged `calls` unary calls (on streams 1, 3, ...),
/// so their encoders' tables hold entries the tracer never saw.
fn warmed_up(calls: u32) -> (Client, Server) {
    let (mut client, mut server) = (Client::new(), Server::new());
    for i in 0..calls {
        let id = 2 * i + 1;
        client.grpc_call(id, "/shop.v1.Orders/Get", &[]);
        server.grpc_reply(id, "0", 1);
    }
    (client, server)
}

#[test]
fn a_call_on_a_warm_connection_is_reported_with_what_can_be_decoded() {
    let (mut client, mut server) = warmed_up(3);
    let mut c = Conn::detecting();
    // The first thing seen is a response to a call made before: not detected from it alone?
    // It is: a HEADERS block with :status (static) shows responses flow out.
    c.io(OUT, &server.grpc_reply(5, "0", 1), 1);
    assert_eq!(c.role, Some(Role::Server));
    // The next call repeats every field: all of them are dynamic references now, except the
    // method and scheme... which the encoder also took from the static table.
    c.io(IN, &client.grpc_call(7, "/shop.v1.Orders/Get", &[]), 2);
    c.io(OUT, &server.grpc_reply(7, "0", 1), 3);
    // A call to a new method: its path is a literal, the rest dynamic.
    c.io(IN, &client.grpc_call(9, "/shop.v1.Orders/Cancel", &[]), 4);
    c.io(OUT, &server.grpc_reply(9, "0", 1), 5);
    assert_eq!(
        c.summary(),
        vec![
            // Path unknown: the method alone names it, no invented route.
            req(7, "POST", 2),
            ok(7, 3),
            // content-type unknown: not known to be gRPC, so named as HTTP.
            req(9, "POST /shop.v1.Orders/Cancel", 4),
            ok(9, 5),
        ]
    );
    let first = requests(&c.events)[0];
    assert_eq!(attr(&first.attributes, "url.path"), None);
    assert_eq!(attr(&first.attributes, "rpc.method"), None);
    assert_eq!(
        attr(&first.attributes, "http.request.method"),
        Some(&Value::Str("POST".into()))
    );
    // The response status: :status 200 is static, grpc-status unknown (a dynamic reference),
    // and the call is not known to be gRPC: plain HTTP 200.
    assert_eq!(
        responses(&c.events)[0].attributes,
        vec![Attribute::int("http.response.status_code", 200)]
    );
    assert_eq!(c.stats.unnamed_requests, 1);
    assert!(c.stats.unknown_fields > 0);
}

#[test]
fn entries_inserted_after_the_join_are_known() {
    let (mut client, mut server) = warmed_up(2);
    let mut c = Conn::detecting();
    // A call with a new header: literal, inserted, then referred to by the next call.
    let fresh = [("x-tenant", "acme")];
    c.io(IN, &client.grpc_call(5, "/shop.v1.Orders/Get", &fresh), 1);
    assert_eq!(c.role, Some(Role::Server));
    c.io(OUT, &server.grpc_reply(5, "0", 1), 2);
    let block = client.hpack.block(&[
        (":method", "POST"),
        (":path", "/shop.v1.Orders/Get"),
        ("x-tenant", "acme"),
    ]);
    // The tracer's table: x-tenant is at index 62, known.
    let mut facts = fields::Facts::default();
    let reader = &mut c.h2_mut().readers[IN as usize];
    let outcome = reader.hpack.decode(&block, true, |f| {
        if f.name == hpack::Text::Known(b"x-tenant") {
            assert_eq!(f.value, hpack::Text::Known(b"acme"));
        }
        facts.read(f)
    });
    assert_eq!(
        outcome.unknown, 1,
        "only the path, inserted before the join"
    );
}

#[test]
fn a_size_update_to_zero_makes_the_table_whole_again() {
    let (mut client, _) = warmed_up(2);
    let mut c = Conn::detecting();
    c.io(IN, &client.grpc_call(5, "/shop.v1.Orders/Get", &[]), 1);
    assert_eq!(c.summary(), vec![req(5, "POST", 1)]);
    // The client's encoder resets its table: size 0, then back to 4096.
    let mut reset = vec![0x20, 0x3f, 0xe1, 0x1f];
    let mut fresh = Hpack::new();
    reset.extend(fresh.block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/shop.v1.Orders/Get"),
        (":authority", AUTHORITY),
        ("content-type", "application/grpc"),
    ]));
    c.io(IN, &frame(frame::HEADERS, frame::END_HEADERS, 7, &reset), 2);
    client.hpack = fresh;
    c.io(IN, &client.grpc_call(9, "/shop.v1.Orders/Get", &[]), 3);
    assert_eq!(
        c.summary()[1..],
        [
            req(7, "shop.v1.Orders/Get", 2),
            req(9, "shop.v1.Orders/Get", 3)
        ]
    );
    assert!(c.h2().readers[IN as usize].hpack.has_whole_history());
}

#[test]
fn responses_to_requests_not_seen_are_never_reported() {
    let (_, mut server) = warmed_up(1);
    let mut c = Conn::with(
        Parser::Http2(Box::new(Http2Parser::new(Role::Client, Start::MidStream))),
        Role::Client,
    );
    c.io(IN, &server.grpc_reply(3, "0", 2), 1)
        .io(IN, &server.grpc_error(5, "13"), 2)
        .io(IN, &rst(7, 8), 3)
        .close(4);
    assert!(c.events.is_empty(), "{:?}", c.summary());
}

#[test]
fn trailers_of_a_request_started_before_the_join_are_not_a_request() {
    let (mut client, _) = warmed_up(1);
    let mut c = Conn::with(
        Parser::Http2(Box::new(Http2Parser::new(Role::Server, Start::MidStream))),
        Role::Server,
    );
    // Request trailers (no pseudo-header) on stream 3, which opened before the join.
    c.io(
        IN,
        &client.hpack.headers(3, true, &[("x-checksum", "9f")]),
        1,
    );
    // A block of dynamic references only: it could be either.
    c.io(
        IN,
        &frame(
            frame::HEADERS,
            frame::END_HEADERS | frame::END_STREAM,
            5,
            &[0xbe, 0xbf],
        ),
        2,
    );
    assert!(c.events.is_empty());
    assert_eq!(c.stats.unidentified_blocks, 2);
}

#[test]
fn a_settings_frame_seen_first_mid_stream_is_checked_by_the_first_block() {
    // SETTINGS going out made the tracer think this process is the server; the requests it
    // then sees going out prove otherwise: it stops rather than report backwards spans.
    let (mut client, _) = warmed_up(1);
    let mut c = Conn::detecting();
    c.io(OUT, &settings(&[(4, 1 << 20)]), 1);
    assert_eq!(c.role, Some(Role::Server));
    c.io(OUT, &client.grpc_call(3, "/s.S/M", &[]), 2);
    c.io(OUT, &client.grpc_call(5, "/s.S/M", &[]), 3);
    assert!(c.events.is_empty());
    assert_eq!(c.stats.unidentified_blocks, 1);
}

impl Conn {
    fn h2_mut(&mut self) -> &mut Http2Parser {
        match &mut self.parser {
            Some(Parser::Http2(p)) => p,
            _ => panic!("not HTTP/2"),
        }
    }
}

#[test]
fn the_other_direction_is_read_only_from_a_syscall_that_starts_with_frames() {
    let (mut client, mut server) = warmed_up(4);
    let mut c = Conn::detecting();
    c.io(IN, &client.grpc_call(9, "/shop.v1.Orders/Get", &[]), 1);
    assert_eq!(c.role, Some(Role::Server));
    // The first write seen going out is the tail of an earlier one: its bytes happen to read as
    // a DATA frame ending stream 9, then run on. It must not end stream 9.
    let mut tail = frame(frame::DATA, frame::END_STREAM, 9, b"hello");
    tail.extend(b"\x00\x01");
    c.io(OUT, &tail, 2);
    assert_eq!(c.summary(), vec![req(9, "POST", 1)]);
    c.io(OUT, &server.grpc_reply(9, "0", 1), 3);
    assert_eq!(c.summary(), vec![req(9, "POST", 1), ok(9, 3)]);
    assert_eq!(c.stats.skipped_bytes, tail.len() as u64);
}
