//! Framing: every frame type, padding, CONTINUATION, interleaved streams, resets, GOAWAY,
//! closes and limits.

use super::*;

/// A connection where the preface and SETTINGS have been exchanged.
fn started(c: &mut Conn, client: &Client, server: &Server) {
    c.io(IN, &client.preface(), 1).io(OUT, &server.preface(), 2);
}

#[test]
fn every_frame_type_around_one_exchange() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::server();
    started(&mut c, &client, &server);
    let mut incoming = client.grpc_head(1, "/shop.v1.Orders/Get", &[]);
    incoming.extend(frame(frame::PRIORITY, 0, 1, &[0, 0, 0, 0, 15]));
    incoming.extend(frame(frame::PING, 0, 0, b"12345678"));
    incoming.extend(frame(0xfa, 0x3, 1, b"unknown extension frame"));
    incoming.extend(window_update(1, 100));
    incoming.extend(data(1, true, &message(3)));
    c.io(IN, &incoming, 3);
    let mut outgoing = frame(frame::PING, frame::ACK, 0, b"12345678");
    outgoing.extend(window_update(0, 65_535));
    // A pushed promise on stream 2: decoded for the table, never a span.
    let promise = server.hpack.block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/pushed.css"),
        (":authority", AUTHORITY),
    ]);
    let mut payload = 2u32.to_be_bytes().to_vec();
    payload.extend(&promise);
    outgoing.extend(frame(frame::PUSH_PROMISE, frame::END_HEADERS, 1, &payload));
    outgoing.extend(server.grpc_reply(1, "0", 2));
    outgoing.extend(server.hpack.headers(2, false, &[(":status", "200")]));
    outgoing.extend(data(2, true, b"body{}"));
    outgoing.extend(goaway(1, 0));
    c.io(OUT, &outgoing, 4).close(5);
    assert_eq!(c.summary(), vec![req(1, "shop.v1.Orders/Get", 3), ok(1, 4)]);
    assert_eq!(c.stats, ParseStats::default());
}

#[test]
fn padding_and_priority_on_headers_and_data() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::server();
    started(&mut c, &client, &server);
    let block = client.hpack.block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/padded/items"),
        (":authority", "h"),
    ]);
    let mut payload = vec![7]; // pad length
    payload.extend([0x80, 0, 0, 0, 200]); // exclusive dependency on 0, weight
    payload.extend(&block);
    payload.extend([0; 7]);
    let flags = frame::END_HEADERS | frame::END_STREAM | frame::PADDED | frame::PRIORITY_FLAG;
    c.io(IN, &frame(frame::HEADERS, flags, 1, &payload), 3);
    let mut reply = server
        .hpack
        .headers(1, false, &[(":status", "200"), ("content-length", "2")]);
    let mut body = vec![200]; // 200 bytes of padding after 2 bytes of data
    body.extend(b"ok");
    body.extend([0; 200]);
    reply.extend(frame(
        frame::DATA,
        frame::END_STREAM | frame::PADDED,
        1,
        &body,
    ));
    c.io(OUT, &reply, 4);
    assert_eq!(c.summary(), vec![req(1, "GET /padded/items", 3), ok(1, 4)]);
    let status = attr(
        &responses(&c.events)[0].attributes,
        "http.response.status_code",
    );
    assert_eq!(status, Some(&Value::Int(200)));
    assert_eq!(c.stats, ParseStats::default());
}

#[test]
fn continuation_frames_reassemble_a_block_across_syscalls() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::server();
    started(&mut c, &client, &server);
    let block = client.hpack.block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/shop.v1.Orders/Create"),
        (":authority", AUTHORITY),
        ("content-type", "application/grpc"),
        ("x-long", &"v".repeat(300)),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ]);
    let (a, rest) = block.split_at(10);
    let (b, d) = rest.split_at(150);
    let mut first = frame(frame::HEADERS, 0, 1, a);
    first.extend(frame(frame::CONTINUATION, 0, 1, b));
    let second = frame(frame::CONTINUATION, frame::END_HEADERS, 1, d);
    c.io(IN, &first, 3).io(IN, &second, 4);
    c.io(IN, &data(1, true, &message(1)), 5);
    c.io(OUT, &server.grpc_reply(1, "0", 1), 6);
    assert_eq!(
        c.summary(),
        vec![req(1, "shop.v1.Orders/Create", 3), ok(1, 6)]
    );
    let request = requests(&c.events)[0];
    assert_eq!(
        request.context.as_ref().map(|ctx| ctx.parent_id),
        Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
    );
    assert_eq!(c.stats, ParseStats::default());
}

#[test]
fn interleaved_streams_end_in_any_order() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::client();
    c.io(OUT, &client.preface(), 1).io(IN, &server.preface(), 2);
    // Three calls written together, heads then bodies interleaved.
    let mut calls = client.grpc_head(1, "/shop.v1.Orders/Get", &[]);
    calls.extend(client.grpc_head(3, "/shop.v1.Orders/List", &[]));
    calls.extend(client.grpc_head(5, "/shop.v1.Users/Get", &[]));
    calls.extend(data(5, true, &message(4)));
    calls.extend(data(1, true, &message(4)));
    calls.extend(data(3, true, &message(4)));
    c.io(OUT, &calls, 3);
    // Server streaming on 3 while 5 and 1 answer.
    let mut a = server.grpc_head(3);
    a.extend(data(3, false, &message(30)));
    a.extend(server.grpc_reply(5, "5", 1));
    c.io(IN, &a, 4);
    let mut b = data(3, false, &message(30));
    b.extend(server.grpc_error(1, "14"));
    c.io(IN, &b, 5);
    c.io(IN, &data(3, false, &message(30)), 6);
    c.io(IN, &server.grpc_trailers(3, "0"), 7);
    assert_eq!(
        c.summary(),
        vec![
            req(1, "shop.v1.Orders/Get", 3),
            req(3, "shop.v1.Orders/List", 3),
            req(5, "shop.v1.Users/Get", 3),
            failed(5, 4, "gRPC status 5 (NOT_FOUND)"),
            failed(1, 5, "gRPC status 14 (UNAVAILABLE)"),
            ok(3, 7),
        ]
    );
    assert_eq!(c.stats, ParseStats::default());
}

#[test]
fn informational_responses_are_skipped() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::server();
    started(&mut c, &client, &server);
    c.io(
        IN,
        &client.get(1, "/upload", &[("expect", "100-continue")]),
        3,
    );
    c.io(
        OUT,
        &server.hpack.headers(1, false, &[(":status", "100")]),
        4,
    );
    c.io(OUT, &server.reply(1, "201", b"done"), 5);
    assert_eq!(c.summary(), vec![req(1, "GET /upload", 3), ok(1, 5)]);
    let status = attr(
        &responses(&c.events)[0].attributes,
        "http.response.status_code",
    );
    assert_eq!(status, Some(&Value::Int(201)));
}

#[test]
fn rst_stream_abandons_its_stream_only() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::client();
    c.io(OUT, &client.preface(), 1).io(IN, &server.preface(), 2);
    let mut calls = client.grpc_call(1, "/s.S/A", &[]);
    calls.extend(client.grpc_call(3, "/s.S/B", &[]));
    c.io(OUT, &calls, 3);
    // The client cancels 1; the server refuses 3 after starting it... no: it answers 3.
    c.io(OUT, &rst(1, 0x8), 4);
    c.io(IN, &server.grpc_reply(3, "0", 1), 5);
    // A reset after the end changes nothing.
    c.io(IN, &rst(3, 0x0), 6);
    c.close(7);
    assert_eq!(
        c.summary(),
        vec![
            req(1, "s.S/A", 3),
            req(3, "s.S/B", 3),
            Ev::Gone(1, 4, "stream reset: CANCEL"),
            ok(3, 5),
        ]
    );
}

#[test]
fn goaway_abandons_the_streams_the_server_did_not_process() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::client();
    c.io(OUT, &client.preface(), 1).io(IN, &server.preface(), 2);
    let mut calls = Vec::new();
    for id in [1, 3, 5, 7] {
        calls.extend(client.grpc_call(id, "/s.S/M", &[]));
    }
    c.io(OUT, &calls, 3);
    c.io(IN, &goaway(3, 0), 4);
    c.io(IN, &server.grpc_reply(3, "0", 1), 5);
    c.io(IN, &server.grpc_reply(1, "0", 1), 6);
    assert_eq!(
        c.summary()[4..],
        [
            Ev::Gone(5, 4, "not processed by the server (GOAWAY)"),
            Ev::Gone(7, 4, "not processed by the server (GOAWAY)"),
            ok(3, 5),
            ok(1, 6),
        ]
    );
    // GOAWAY from the client concerns pushed streams only.
    let mut c = Conn::server();
    c.io(IN, &client.preface(), 1);
    c.io(IN, &Client::new().grpc_call(1, "/s.S/M", &[]), 2);
    c.io(IN, &goaway(0, 0), 3);
    assert_eq!(c.summary(), vec![req(1, "s.S/M", 2)]);
}

#[test]
fn close_abandons_open_streams_by_how_far_they_got() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::server();
    started(&mut c, &client, &server);
    let mut calls = client.grpc_call(1, "/s.S/A", &[]);
    calls.extend(client.grpc_call(3, "/s.S/B", &[]));
    c.io(IN, &calls, 3)
        .io(OUT, &server.grpc_head(3), 4)
        .close(9);
    assert_eq!(
        c.summary()[2..],
        [
            Ev::Gone(1, 9, "connection closed before a response"),
            Ev::Gone(3, 9, "connection closed during the response"),
        ]
    );
    c.events.clear();
    c.close(10);
    assert!(c.events.is_empty(), "a second close reports nothing");
}

#[test]
fn open_streams_are_bounded() {
    let mut client = Client::new();
    let mut c = Conn::server();
    c.io(IN, &client.preface(), 1);
    let mut burst = Vec::new();
    for i in 0..MAX_STREAMS as u32 + 3 {
        burst.extend(client.grpc_head(2 * i + 1, "/s.S/M", &[]));
    }
    c.io(IN, &burst, 2);
    let gone: Vec<Ev> = c
        .summary()
        .into_iter()
        .filter(|e| matches!(e, Ev::Gone(..)))
        .collect();
    assert_eq!(
        gone,
        [1, 3, 5]
            .map(|id| Ev::Gone(id, 2, "too many open streams"))
            .to_vec()
    );
    assert_eq!(c.h2().streams.len(), MAX_STREAMS);
    assert_eq!(c.stats.streams_evicted, 3);
}

#[test]
fn stream_ids_that_cannot_start_a_request_are_ignored() {
    let mut client = Client::new();
    let mut c = Conn::server();
    c.io(IN, &client.preface(), 1);
    c.io(IN, &client.grpc_call(5, "/s.S/A", &[]), 2);
    // Lower than one already used, even (server-initiated), and request trailers.
    c.io(IN, &client.grpc_call(3, "/s.S/B", &[]), 3);
    c.io(IN, &client.grpc_call(6, "/s.S/C", &[]), 4);
    c.io(
        IN,
        &client.hpack.headers(5, true, &[("x-checksum", "abc")]),
        5,
    );
    assert_eq!(c.summary(), vec![req(5, "s.S/A", 2)]);
}

#[test]
fn an_invalid_frame_loses_the_framing_until_the_next_syscall_with_frames() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::server();
    started(&mut c, &client, &server);
    // CONTINUATION without a HEADERS before it: the parser is not where it thinks it is.
    let mut bad = frame(frame::CONTINUATION, frame::END_HEADERS, 1, b"\x82");
    bad.extend(client.grpc_call(1, "/s.S/Lost", &[]));
    c.io(IN, &bad, 3);
    // Garbage of its own syscall, then frames again.
    c.io(IN, b"\x00\x00\x01\x01garbage", 4);
    c.io(IN, &client.grpc_call(3, "/s.S/Found", &[]), 5);
    c.io(OUT, &server.grpc_reply(3, "0", 1), 6);
    // The lost block inserted entries the decoder never saw: the fields referring to them
    // (:authority, content-type, ...) are unknown, so the call is not known to be gRPC. The
    // static method and the literal path are known.
    assert_eq!(c.summary(), vec![req(3, "POST /s.S/Found", 5), ok(3, 6)]);
    let request = requests(&c.events)[0];
    assert_eq!(attr(&request.attributes, "rpc.system"), None);
    assert_eq!(attr(&request.attributes, "server.address"), None);
    assert_eq!(c.stats.resyncs, 1);
    assert_eq!(c.stats.skipped_bytes, (bad.len() + 11) as u64);
    assert_eq!(c.stats.unknown_fields, 4);
    assert_eq!(c.stats.unnamed_requests, 0);
}
