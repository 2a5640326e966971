//! Whole exchanges: gRPC and plain HTTP/2 attributes, status rules, context, fingerprints,
//! credentials and timing.

use super::*;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn grpc_unary_call_seen_by_the_server() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::server();
    c.io(IN, &client.preface(), 1).io(OUT, &server.preface(), 2);
    let call = client.grpc_call(
        1,
        "/shop.v1.Orders/Get",
        &[
            ("traceparent", TRACEPARENT),
            ("tracestate", "rojo=00f067aa0ba902b7"),
            ("authorization", "Bearer s3cr3t-token"),
        ],
    );
    c.io(IN, &call, 3).io(OUT, &server.grpc_reply(1, "0", 1), 4);
    assert_eq!(c.summary(), vec![req(1, "shop.v1.Orders/Get", 3), ok(1, 4)]);
    let request = requests(&c.events)[0];
    assert_eq!(
        request.attributes,
        vec![
            Attribute::str("rpc.system", "grpc"),
            Attribute::str("rpc.service", "shop.v1.Orders"),
            Attribute::str("rpc.method", "Get"),
            Attribute::str("server.address", "orders.internal"),
            Attribute::int("server.port", 50051),
            Attribute::str("network.protocol.version", "2"),
        ]
    );
    let context = request.context.as_ref().expect("traceparent");
    assert_eq!(context.flags, 1);
    assert_eq!(context.state, "rojo=00f067aa0ba902b7");
    let response = responses(&c.events)[0];
    assert_eq!(
        response.attributes,
        vec![Attribute::int("rpc.grpc.status_code", 0)]
    );
    assert!(!format!("{:?}", c.events).contains("s3cr3t"));
}

#[test]
fn grpc_status_rules_differ_by_role() {
    // (status, client error, server error)
    let cases = [
        ("0", None, None),
        ("5", Some("gRPC status 5 (NOT_FOUND)"), None),
        ("3", Some("gRPC status 3 (INVALID_ARGUMENT)"), None),
        (
            "13",
            Some("gRPC status 13 (INTERNAL)"),
            Some("gRPC status 13 (INTERNAL)"),
        ),
        (
            "4",
            Some("gRPC status 4 (DEADLINE_EXCEEDED)"),
            Some("gRPC status 4 (DEADLINE_EXCEEDED)"),
        ),
    ];
    for (status, client_error, server_error) in cases {
        for (role, expected) in [(Role::Client, client_error), (Role::Server, server_error)] {
            let (mut client, mut server) = (Client::new(), Server::new());
            let (mut c, req_dir, resp_dir) = match role {
                Role::Client => (Conn::client(), OUT, IN),
                Role::Server => (Conn::server(), IN, OUT),
            };
            c.io(req_dir, &client.preface(), 1)
                .io(req_dir, &client.grpc_call(1, "/s.S/M", &[]), 2)
                .io(resp_dir, &server.grpc_reply(1, status, 0), 3)
                // The same status as trailers-only.
                .io(req_dir, &client.grpc_call(3, "/s.S/M", &[]), 4)
                .io(resp_dir, &server.grpc_error(3, status), 5);
            let expected = expected.map(str::to_string);
            assert_eq!(
                c.summary()[1..],
                [
                    Ev::Resp(1, 3, expected.clone()),
                    req(3, "s.S/M", 4),
                    Ev::Resp(3, 5, expected.clone()),
                ],
                "{role:?} {status}"
            );
            let response = responses(&c.events)[1];
            let code: i64 = status.parse().unwrap();
            assert_eq!(
                attr(&response.attributes, "rpc.grpc.status_code"),
                Some(&Value::Int(code))
            );
            let error_type = attr(&response.attributes, "error.type");
            assert_eq!(
                error_type,
                expected
                    .as_ref()
                    .map(|_| Value::Str(status.into()))
                    .as_ref()
            );
        }
    }
}

#[test]
fn grpc_response_without_grpc_status_is_an_error() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::client();
    c.io(OUT, &client.preface(), 1);
    c.io(OUT, &client.grpc_call(1, "/s.S/M", &[]), 2);
    // A proxy answers 503 with no gRPC trailers; then a server ends with DATA.
    c.io(IN, &server.reply(1, "503", b"upstream down"), 3);
    c.io(OUT, &client.grpc_call(3, "/s.S/M", &[]), 4);
    let mut reply = server.grpc_head(3);
    reply.extend(data(3, true, &message(2)));
    c.io(IN, &reply, 5);
    assert_eq!(
        c.summary()[1..],
        [
            failed(1, 3, "missing grpc-status (HTTP 503)"),
            req(3, "s.S/M", 4),
            failed(3, 5, "missing grpc-status"),
        ]
    );
    assert_eq!(
        responses(&c.events)[1].attributes,
        vec![Attribute::str("error.type", "_OTHER")]
    );
}

#[test]
fn plain_http2_request_and_response_attributes() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::client();
    c.io(OUT, &client.preface(), 1).io(IN, &server.preface(), 2);
    let get = client.get(
        1,
        "/users/42/orders?token=abc",
        &[
            ("cookie", "session=s3cr3t-cookie"),
            ("traceparent", TRACEPARENT),
        ],
    );
    c.io(OUT, &get, 3);
    c.io(IN, &server.reply(1, "404", b"not found"), 4);
    assert_eq!(
        c.summary(),
        vec![
            req(1, "GET /users/{id}/orders", 3),
            failed(1, 4, "HTTP 404")
        ]
    );
    let request = requests(&c.events)[0];
    assert_eq!(
        request.attributes,
        vec![
            Attribute::str("http.request.method", "GET"),
            Attribute::str("url.scheme", "https"),
            Attribute::str("url.path", "/users/42/orders"),
            Attribute::str("url.query", "token=REDACTED"),
            Attribute::str("server.address", "www.example.com"),
            Attribute::int("server.port", 443),
            Attribute::str(
                "url.full",
                "https://www.example.com/users/42/orders?token=REDACTED"
            ),
            Attribute::str("user_agent.original", "curl/8.5.0"),
            Attribute::str("network.protocol.version", "2"),
        ]
    );
    assert!(request.context.is_some());
    assert_eq!(
        responses(&c.events)[0].attributes,
        vec![
            Attribute::int("http.response.status_code", 404),
            Attribute::str("error.type", "404"),
        ]
    );
    let all = format!("{:?}", c.events);
    assert!(!all.contains("s3cr3t"), "credentials never reach events");
}

#[test]
fn credentials_indexed_by_a_careless_encoder_are_not_exported_either() {
    // An encoder may add authorization and cookie values to its dynamic table; later requests
    // then refer to them by index. The value is decoded, but never leaves the decoder.
    let mut hpack = Hpack::new();
    let mut c = Conn::server();
    c.io(IN, PREFACE, 1);
    for (i, id) in [1u32, 3].into_iter().enumerate() {
        let mut block = Vec::new();
        let flags = Encoder::BEST_FORMAT | Encoder::WITH_INDEXING;
        for (name, value) in [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            ("authorization", "Basic c2VjcmV0"),
            ("cookie", "id=s3cr3t"),
            ("proxy-authorization", "Basic cHJveHk="),
        ] {
            hpack
                .0
                .encode(
                    (name.as_bytes().to_vec(), value.as_bytes().to_vec(), flags),
                    &mut block,
                )
                .unwrap();
        }
        let flags = frame::END_HEADERS | frame::END_STREAM;
        c.io(IN, &frame(frame::HEADERS, flags, id, &block), 2 + i as u64);
    }
    assert_eq!(c.summary(), vec![req(1, "GET /", 2), req(3, "GET /", 3)]);
    let all = format!("{:?}", c.events);
    for secret in ["c2VjcmV0", "s3cr3t", "cHJveHk"] {
        assert!(!all.contains(secret), "{secret}");
    }
}

#[test]
fn both_ends_compute_the_same_fingerprint_from_different_encodings() {
    // The client's encoder indexes and Huffman-codes; the bytes the server reads went through a
    // proxy that re-encoded them plainly. Different blocks, same decoded fields.
    let mut client = Client::new();
    let mut c = Conn::client();
    c.io(OUT, &client.preface(), 1);
    c.io(OUT, &client.grpc_call(1, "/s.S/M", &[]), 2);
    c.io(OUT, &client.grpc_call(3, "/s.S/M", &[]), 3);
    let mut plain = Encoder::default();
    let mut s = Conn::server();
    s.io(IN, PREFACE, 1);
    for (i, id) in [1u32, 3].into_iter().enumerate() {
        let mut block = Vec::new();
        for (name, value) in [
            (":scheme", "http"),
            (":method", "POST"),
            (":authority", AUTHORITY),
            (":path", "/s.S/M"),
            ("content-type", "application/grpc"),
        ] {
            plain
                .encode(
                    (name.as_bytes().to_vec(), value.as_bytes().to_vec(), 0),
                    &mut block,
                )
                .unwrap();
        }
        s.io(
            IN,
            &frame(frame::HEADERS, frame::END_HEADERS, id, &block),
            2 + i as u64,
        );
    }
    let ours: Vec<u64> = requests(&c.events).iter().map(|r| r.fingerprint).collect();
    let theirs: Vec<u64> = requests(&s.events).iter().map(|r| r.fingerprint).collect();
    assert_eq!(ours, theirs);
    assert_ne!(
        ours[0], ours[1],
        "the stream id tells concurrent calls apart"
    );
}

#[test]
fn timing_is_the_first_syscall_of_the_head_and_the_last_of_the_end() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::server();
    c.io(IN, &client.preface(), 1);
    // The request head split over three reads, the end of the response over two writes.
    let call = client.grpc_call(1, "/s.S/M", &[]);
    c.io(IN, &call[..4], 2)
        .io(IN, &call[4..20], 3)
        .io(IN, &call[20..], 4);
    let reply = server.grpc_reply(1, "0", 2);
    let cut = reply.len() - 3;
    c.io(OUT, &reply[..cut], 5).io(OUT, &reply[cut..], 6);
    assert_eq!(c.summary(), vec![req(1, "s.S/M", 2), ok(1, 6)]);
    let request = requests(&c.events)[0];
    assert_eq!(request.first, t(2));
    assert_eq!(responses(&c.events)[0].last, t(6));
}

#[test]
fn trailers_only_and_streaming_responses() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::client();
    c.io(OUT, &client.preface(), 1);
    c.io(OUT, &client.grpc_call(1, "/shop.v1.Orders/Watch", &[]), 2);
    c.io(IN, &server.grpc_head(1), 3);
    for n in 4..9 {
        c.io(IN, &data(1, false, &message(100)), n);
    }
    c.io(IN, &server.grpc_trailers(1, "0"), 9);
    c.io(OUT, &client.grpc_call(3, "/shop.v1.Orders/Get", &[]), 10);
    c.io(IN, &server.grpc_error(3, "5"), 11);
    assert_eq!(
        c.summary(),
        vec![
            req(1, "shop.v1.Orders/Watch", 2),
            ok(1, 9),
            req(3, "shop.v1.Orders/Get", 10),
            failed(3, 11, "gRPC status 5 (NOT_FOUND)"),
        ]
    );
}
