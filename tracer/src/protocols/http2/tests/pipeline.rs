//! The whole data path (connections, parsing, stitching, sampling) over HTTP/2, in the style of
//! `pipeline/tests.rs`: a frontend (HTTP/1 server, pid 1) calls a gRPC backend (pid 2) on this
//! host over prior-knowledge h2c, with two calls in flight on one connection.

use super::*;
use crate::pipeline::Pipeline;
use crate::pipeline::testutil::{data as io, hex, open, process, sock};
use crate::sampling::Sampler;
use crate::span::{self, Span, SpanKind};
use crate::stitch::StitchConfig;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

fn named<'a>(spans: &'a [Span], pid: u32, name: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.process.pid == pid && s.name == name)
        .collect()
}

#[test]
fn grpc_calls_between_two_traced_processes_form_one_trace() {
    for server_first in [false, true] {
        let mut p = Pipeline::new(StitchConfig::default(), Sampler::default());
        p.add_process(process(1));
        p.add_process(process(2));
        let (front, out, back) = (sock(1, 4, 10), sock(1, 5, 11), sock(2, 6, 12));
        let traceparent = format!("traceparent: 00-{TRACE}-{CALLER}-01\r\n");
        p.on_event(open(front, true, "127.0.0.1:8080", "127.0.0.1:50000"));
        let incoming = format!("GET /checkout HTTP/1.1\r\nHost: shop\r\n{traceparent}\r\n");
        p.on_event(io(front, 7, 100, IN, incoming.as_bytes()));

        // Thread 7 of the frontend calls the backend twice on one HTTP/2 connection.
        let (mut client, mut server) = (Client::new(), Server::new());
        let mut writes = client.preface();
        writes.extend(client.grpc_call(1, "/shop.v1.Orders/Get", &[]));
        writes.extend(client.grpc_call(3, "/shop.v1.Users/Get", &[]));
        p.on_event(open(out, false, "127.0.0.1:40000", "127.0.0.1:50051"));
        p.on_event(open(back, true, "0.0.0.0:50051", "127.0.0.1:40000"));
        let sent = io(out, 7, 200, OUT, &writes);
        let read = io(back, 9, 210, IN, &writes);
        if server_first {
            p.on_event(read);
            p.on_event(sent);
        } else {
            p.on_event(sent);
            p.on_event(read);
        }
        // The backend answers the second call first, with an error; then the first.
        let mut replies = server.preface();
        replies.extend(server.grpc_error(3, "5"));
        p.on_event(io(back, 9, 250, OUT, &replies));
        p.on_event(io(out, 7, 260, IN, &replies));
        let last = server.grpc_reply(1, "0", 1);
        p.on_event(io(back, 9, 270, OUT, &last));
        p.on_event(io(out, 7, 280, IN, &last));
        p.on_event(io(
            front,
            7,
            300,
            OUT,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ));

        let spans = p.ready_spans(true);
        assert_eq!(spans.len(), 5, "{spans:#?}");
        let frontend = named(&spans, 1, "GET /checkout")[0];
        let [get_client] = named(&spans, 1, "shop.v1.Orders/Get")[..] else {
            panic!("one client span for Orders/Get: {spans:#?}");
        };
        let [get_server] = named(&spans, 2, "shop.v1.Orders/Get")[..] else {
            panic!("one server span for Orders/Get: {spans:#?}");
        };
        let users_client = named(&spans, 1, "shop.v1.Users/Get")[0];
        let users_server = named(&spans, 2, "shop.v1.Users/Get")[0];

        assert_eq!(hex(&frontend.trace_id), TRACE);
        for s in [get_client, get_server, users_client, users_server] {
            assert_eq!(s.trace_id, frontend.trace_id, "server_first={server_first}");
        }
        assert_eq!(get_client.kind, SpanKind::Client);
        assert_eq!(get_client.parent_span_id, Some(frontend.span_id));
        assert_eq!(users_client.parent_span_id, Some(frontend.span_id));
        // Each server span's parent is its own call, matched by stream id among the two.
        assert_eq!(get_server.parent_span_id, Some(get_client.span_id));
        assert_eq!(users_server.parent_span_id, Some(users_client.span_id));
        assert_eq!(p.stats().stitch.peer_links, 2);

        // Timing: the client from its write's entry to its last read's exit; the server from
        // its read's exit to its last write's exit.
        assert_eq!(
            (get_client.start_mono_ns, get_client.end_mono_ns),
            (200, 285)
        );
        assert_eq!(
            (get_server.start_mono_ns, get_server.end_mono_ns),
            (215, 275)
        );
        assert_eq!(users_server.end_mono_ns, 255);

        // NOT_FOUND fails the call for the client, not for the server.
        assert!(users_client.error.is_some());
        assert_eq!(users_server.error, None);
        assert_eq!(get_server.error, None);
        assert_eq!(
            span::find(&users_server.attributes, "rpc.grpc.status_code"),
            Some(&Value::Int(5))
        );
        assert_eq!(
            span::find(&get_server.attributes, "rpc.service"),
            Some(&Value::Str("shop.v1.Orders".into()))
        );
        assert_eq!(
            span::find(&get_client.attributes, "network.peer.port"),
            Some(&Value::Int(50051))
        );
    }
}
