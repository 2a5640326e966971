//! The data path from decoded capture events to spans, without the kernel: connections,
//! parsing, stitching and sampling together.

use std::time::Duration;

use tracer_common::{DATA_FLAG_LOST_BEFORE, Direction, IDS_CLIENT, IDS_SERVER, TraceIds};

use super::testutil::{data, hex, open, pipeline, process, sock};
use super::{Pipeline, ProcessChange};
use crate::{
    capture::CaptureEvent,
    sampling::Sampler,
    span::{self, Span, SpanKind, Value},
    stitch::StitchConfig,
};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

fn request(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: svc\r\n{extra}\r\n").into_bytes()
}

fn response(status: u16) -> Vec<u8> {
    format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok").into_bytes()
}

fn path(span: &Span) -> String {
    match span::find(&span.attributes, "url.path") {
        Some(Value::Str(s)) => s.to_string(),
        other => panic!("no url.path: {other:?}"),
    }
}

fn by_path<'a>(spans: &'a [Span], pid: u32, p: &str) -> &'a Span {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.process.pid == pid && path(s) == p)
        .collect();
    assert_eq!(found.len(), 1, "one span for {p} of pid {pid}: {spans:#?}");
    found[0]
}

#[test]
fn a_served_request_and_the_calls_its_thread_makes_form_one_tree() {
    let mut p = pipeline(&[1]);
    let (server, client) = (sock(1, 4, 10), sock(1, 5, 11));
    let traceparent = format!("traceparent: 00-{TRACE}-{CALLER}-01\r\n");
    p.on_event(open(server, true, "127.0.0.1:8080", "127.0.0.1:50000"));
    p.on_event(data(
        server,
        7,
        100,
        Direction::Ingress,
        &request("/a/1", &traceparent),
    ));
    p.on_event(open(client, false, "127.0.0.1:40000", "127.0.0.1:9090"));
    p.on_event(data(client, 7, 200, Direction::Egress, &request("/b", "")));
    p.on_event(data(client, 7, 300, Direction::Ingress, &response(503)));
    p.on_event(data(server, 7, 400, Direction::Egress, &response(200)));

    let spans = p.ready_spans(true);
    assert_eq!(spans.len(), 2);
    let (s, c) = (by_path(&spans, 1, "/a/1"), by_path(&spans, 1, "/b"));
    assert_eq!(s.kind, SpanKind::Server);
    assert_eq!(hex(&s.trace_id), TRACE);
    assert_eq!(s.parent_span_id.map(|p| hex(&p)).as_deref(), Some(CALLER));
    assert_eq!(s.name, "GET /a/{id}");
    // Server: first byte read (exit of the read) to last byte written (exit of the write).
    assert_eq!((s.start_mono_ns, s.end_mono_ns), (105, 405));
    assert_eq!(s.error, None);

    assert_eq!(c.kind, SpanKind::Client);
    assert_eq!(c.trace_id, s.trace_id);
    assert_eq!(c.parent_span_id, Some(s.span_id));
    // Client: entry of the request write to the exit of the last response read.
    assert_eq!((c.start_mono_ns, c.end_mono_ns), (200, 305));
    assert!(c.error.is_some(), "a 503 is an error for the client");
    assert_eq!(
        span::find(&c.attributes, "network.peer.port"),
        Some(&Value::Int(9090))
    );
    assert_eq!(
        span::find(&s.attributes, "client.address"),
        Some(&Value::Str("127.0.0.1".into()))
    );
}

#[test]
fn another_thread_call_is_not_a_child() {
    let mut p = pipeline(&[1]);
    let (server, client) = (sock(1, 4, 10), sock(1, 5, 11));
    p.on_event(open(server, true, "127.0.0.1:8080", "127.0.0.1:50000"));
    p.on_event(data(server, 7, 100, Direction::Ingress, &request("/a", "")));
    p.on_event(open(client, false, "127.0.0.1:40000", "127.0.0.1:9090"));
    p.on_event(data(client, 8, 200, Direction::Egress, &request("/b", "")));
    p.on_event(data(client, 8, 300, Direction::Ingress, &response(200)));
    p.on_event(data(server, 7, 400, Direction::Egress, &response(200)));
    let spans = p.ready_spans(true);
    let (s, c) = (by_path(&spans, 1, "/a"), by_path(&spans, 1, "/b"));
    assert_eq!(c.parent_span_id, None);
    assert_ne!(c.trace_id, s.trace_id);
}

/// Process 1 calls process 2 on this host; the backend's read may reach the agent before or
/// after the frontend's write. Either way the backend span's parent is the client span, even
/// though the frontend forwarded the upstream header verbatim.
#[test]
fn both_ends_of_a_local_connection_link_in_either_order() {
    for server_first in [false, true] {
        let mut p = pipeline(&[1, 2]);
        let (front, out, back) = (sock(1, 4, 10), sock(1, 5, 11), sock(2, 6, 12));
        let traceparent = format!("traceparent: 00-{TRACE}-{CALLER}-01\r\n");
        p.on_event(open(front, true, "127.0.0.1:8080", "127.0.0.1:50000"));
        p.on_event(data(
            front,
            7,
            100,
            Direction::Ingress,
            &request("/a", &traceparent),
        ));
        p.on_event(open(out, false, "127.0.0.1:40000", "127.0.0.1:9090"));
        p.on_event(open(back, true, "0.0.0.0:9090", "127.0.0.1:40000"));
        let sent = data(out, 7, 200, Direction::Egress, &request("/b", &traceparent));
        let read = data(
            back,
            9,
            210,
            Direction::Ingress,
            &request("/b", &traceparent),
        );
        if server_first {
            p.on_event(read);
            p.on_event(sent);
        } else {
            p.on_event(sent);
            p.on_event(read);
        }
        p.on_event(data(back, 9, 250, Direction::Egress, &response(200)));
        p.on_event(data(out, 7, 260, Direction::Ingress, &response(200)));
        p.on_event(data(front, 7, 300, Direction::Egress, &response(200)));
        let spans = p.ready_spans(true);
        assert_eq!(spans.len(), 3);
        let (c, b) = (by_path(&spans, 1, "/b"), by_path(&spans, 2, "/b"));
        assert_eq!(
            b.parent_span_id,
            Some(c.span_id),
            "server_first={server_first}"
        );
        assert_eq!(hex(&b.trace_id), TRACE);
        assert_eq!(p.stats().stitch.peer_links, 1);
    }
}

#[test]
fn a_reused_fd_starts_a_new_connection_and_ends_the_old_one() {
    let mut p = pipeline(&[1]);
    let (old, new) = (sock(1, 4, 10), sock(1, 4, 20));
    p.on_event(open(old, true, "127.0.0.1:8080", "127.0.0.1:50000"));
    p.on_event(data(old, 7, 100, Direction::Ingress, &request("/old", "")));
    // The close was never seen; the new generation's data arrives.
    p.on_event(data(new, 7, 200, Direction::Ingress, &request("/new", "")));
    p.on_event(data(new, 7, 300, Direction::Egress, &response(200)));
    let spans = p.ready_spans(true);
    assert_eq!(spans.len(), 2);
    assert!(by_path(&spans, 1, "/old").error.is_some(), "abandoned");
    assert_eq!(by_path(&spans, 1, "/new").error, None);
    assert_eq!(p.stats().stitch.abandoned, 1);
    // A late event of the old generation is ignored, not mixed in.
    p.on_event(data(old, 7, 400, Direction::Egress, &response(200)));
    assert_eq!(p.stats().connections.stale_events, 1);
}

#[test]
fn data_lost_in_the_kernel_resets_the_connection() {
    let mut p = pipeline(&[1]);
    let s = sock(1, 4, 10);
    p.on_event(open(s, true, "127.0.0.1:8080", "127.0.0.1:50000"));
    p.on_event(data(s, 7, 100, Direction::Ingress, &request("/a", "")));
    // The response to /a was lost; the next event says so.
    let mut next = data(s, 7, 300, Direction::Ingress, &request("/b", ""));
    if let CaptureEvent::Data(d) = &mut next {
        d.flags = DATA_FLAG_LOST_BEFORE;
    }
    p.on_event(next);
    p.on_event(data(s, 7, 400, Direction::Egress, &response(200)));
    let spans = p.ready_spans(true);
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert!(by_path(&spans, 1, "/a").error.is_some());
    let b = by_path(&spans, 1, "/b");
    assert_eq!((b.error.as_deref(), b.end_mono_ns), (None, 405));
    assert_eq!(p.stats().connections.lost_resyncs, 1);
}

#[test]
fn other_protocols_give_no_spans() {
    let mut p = pipeline(&[1]);
    let s = sock(1, 4, 10);
    p.on_event(open(s, false, "127.0.0.1:40000", "127.0.0.1:443"));
    // A TLS ClientHello, then whatever follows.
    p.on_event(data(
        s,
        7,
        100,
        Direction::Egress,
        &[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 1, 2, 3, 4, 5, 6, 7,
        ],
    ));
    p.on_event(data(
        s,
        7,
        200,
        Direction::Egress,
        &request("/not-http-anymore", ""),
    ));
    assert!(p.ready_spans(true).is_empty());
    assert_eq!(p.stats().connections.unknown_protocol, 1);
}

#[test]
fn a_process_exit_ends_its_open_requests() {
    let mut p = pipeline(&[1]);
    let s = sock(1, 4, 10);
    p.on_event(open(s, true, "127.0.0.1:8080", "127.0.0.1:50000"));
    p.on_event(data(s, 7, 100, Direction::Ingress, &request("/a", "")));
    p.on_event(CaptureEvent::ProcessExit {
        tgid: 1,
        ts_ns: 500,
    });
    let spans = p.ready_spans(true);
    assert_eq!(spans.len(), 1);
    assert!(spans[0].error.is_some());
    assert_eq!(p.take_process_changes(), vec![ProcessChange::Exited(1)]);
}

#[test]
fn a_disabled_process_starts_no_span_and_its_open_requests_are_dropped() {
    let mut p = pipeline(&[1]);
    let s = sock(1, 4, 10);
    p.on_event(open(s, true, "127.0.0.1:8080", "127.0.0.1:50000"));
    p.on_event(data(s, 7, 100, Direction::Ingress, &request("/done", "")));
    p.on_event(data(s, 7, 150, Direction::Egress, &response(200)));
    p.on_event(data(s, 7, 200, Direction::Ingress, &request("/open", "")));
    p.remove_process(1);
    // Events already in the ring buffer when tracing stopped.
    p.on_event(data(s, 7, 300, Direction::Egress, &response(200)));
    p.on_event(data(s, 7, 400, Direction::Ingress, &request("/late", "")));
    let spans = p.ready_spans(true);
    assert_eq!(spans.len(), 1, "only the finished exchange: {spans:#?}");
    assert_eq!(path(&spans[0]), "/done");
    assert_eq!(p.stats().stitch.discarded, 1);
    assert_eq!(p.stats().untraced_events, 2);
}

#[test]
fn a_forked_child_is_traced_from_its_first_event() {
    let mut p = pipeline(&[1]);
    p.on_event(CaptureEvent::Fork {
        parent: 1,
        child: 2,
    });
    // The child's events follow in the same batch, before the agent read /proc for it.
    let s = sock(2, 4, 10);
    p.on_event(open(s, true, "127.0.0.1:8080", "127.0.0.1:50000"));
    p.on_event(data(s, 9, 100, Direction::Ingress, &request("/child", "")));
    p.on_event(data(s, 9, 200, Direction::Egress, &response(200)));
    // Then the agent registers it.
    p.add_process(process(2));
    let spans = p.ready_spans(true);
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].process.service_name, "svc2");
    assert_eq!(
        p.take_process_changes(),
        vec![ProcessChange::Forked {
            parent: 1,
            child: 2
        }]
    );
    // A fork of an untraced parent traces nothing.
    p.on_event(CaptureEvent::Fork {
        parent: 5,
        child: 6,
    });
    assert!(!p.is_traced(6));
}

#[test]
fn unsampled_callers_are_respected_by_the_default_sampler() {
    let mut p = pipeline(&[1]);
    let s = sock(1, 4, 10);
    let traceparent = format!("traceparent: 00-{TRACE}-{CALLER}-00\r\n");
    p.on_event(open(s, true, "127.0.0.1:8080", "127.0.0.1:50000"));
    p.on_event(data(
        s,
        7,
        100,
        Direction::Ingress,
        &request("/a", &traceparent),
    ));
    p.on_event(data(s, 7, 200, Direction::Egress, &response(200)));
    assert!(p.ready_spans(true).is_empty());
    assert_eq!(p.stats().sampled_out, 1);
}

#[test]
fn spans_wait_for_the_settle_window_unless_forced() {
    let mut p = Pipeline::new(
        StitchConfig {
            settle: Duration::from_secs(3600),
            ..StitchConfig::default()
        },
        Sampler::default(),
    );
    p.add_process(process(1));
    let s = sock(1, 4, 10);
    p.on_event(open(s, true, "127.0.0.1:8080", "127.0.0.1:50000"));
    p.on_event(data(s, 7, 100, Direction::Ingress, &request("/a", "")));
    p.on_event(data(s, 7, 200, Direction::Egress, &response(200)));
    assert!(p.ready_spans(false).is_empty(), "still settling");
    assert_eq!(p.ready_spans(true).len(), 1);
}

/// A client library writing from its own thread (grpcio, thread pools, event loops): the
/// call is still the served request's child when the application passed its context on.
#[test]
fn a_call_from_another_thread_that_carries_the_served_context_is_its_child() {
    for propagated in [true, false] {
        let mut p = pipeline(&[1]);
        let (server, client) = (sock(1, 4, 10), sock(1, 5, 11));
        let incoming = format!("traceparent: 00-{TRACE}-{CALLER}-01\r\n");
        p.on_event(open(server, true, "127.0.0.1:8080", "127.0.0.1:50000"));
        p.on_event(data(
            server,
            7,
            100,
            Direction::Ingress,
            &request("/a", &incoming),
        ));
        p.on_event(open(client, false, "127.0.0.1:40000", "127.0.0.1:9090"));
        let outgoing = if propagated { incoming.as_str() } else { "" };
        // Thread 8 is not the thread serving /a.
        p.on_event(data(
            client,
            8,
            200,
            Direction::Egress,
            &request("/b", outgoing),
        ));
        p.on_event(data(client, 8, 300, Direction::Ingress, &response(200)));
        p.on_event(data(server, 7, 400, Direction::Egress, &response(200)));
        let spans = p.ready_spans(true);
        let (s, c) = (by_path(&spans, 1, "/a"), by_path(&spans, 1, "/b"));
        if propagated {
            assert_eq!(c.parent_span_id, Some(s.span_id));
            assert_eq!(p.stats().stitch.context_links, 1);
        } else {
            assert_eq!(c.parent_span_id, None);
            assert_ne!(c.trace_id, s.trace_id);
        }
    }
}

fn with_ids(mut event: CaptureEvent, ids: TraceIds) -> CaptureEvent {
    if let CaptureEvent::Data(record) = &mut event {
        record.ids = Some(ids);
    }
    event
}

fn kernel_ids(kind: u8, trace: [u8; 16], span: [u8; 8], parent: [u8; 8]) -> TraceIds {
    TraceIds {
        trace_id: trace,
        span_id: span,
        parent_id: parent,
        flags: 1,
        kind,
        _pad: [0; 6],
    }
}

/// With traceparent injection, the kernel decided the server span's ids as it read the
/// request and the client span's as it inserted the header: the spans carry exactly those.
#[test]
fn kernel_decided_ids_are_the_exported_ids() {
    let mut p = pipeline(&[1]);
    let (server, client) = (sock(1, 4, 10), sock(1, 5, 11));
    let trace = [0xab; 16];
    let (server_span, client_span) = ([1; 8], [2; 8]);
    p.on_event(open(server, true, "127.0.0.1:8080", "127.0.0.1:50000"));
    p.on_event(with_ids(
        data(server, 7, 100, Direction::Ingress, &request("/a", "")),
        kernel_ids(IDS_SERVER, trace, server_span, [0; 8]),
    ));
    p.on_event(open(client, false, "127.0.0.1:40000", "127.0.0.1:9090"));
    p.on_event(with_ids(
        data(client, 7, 200, Direction::Egress, &request("/b", "")),
        kernel_ids(IDS_CLIENT, trace, client_span, server_span),
    ));
    p.on_event(data(client, 7, 300, Direction::Ingress, &response(200)));
    p.on_event(data(server, 7, 400, Direction::Egress, &response(200)));
    let spans = p.ready_spans(true);
    let (s, c) = (by_path(&spans, 1, "/a"), by_path(&spans, 1, "/b"));
    assert_eq!(
        (s.trace_id, s.span_id, s.parent_span_id),
        (trace, server_span, None)
    );
    assert_eq!(
        (c.trace_id, c.span_id, c.parent_span_id),
        (trace, client_span, Some(server_span))
    );
    // Linked to the server span it names, not rebuilt from the ids as a remote parent.
    assert_eq!(c.remote_sampled, None);
}

fn settling_pipeline(settle: Duration, pids: &[u32]) -> Pipeline {
    let config = StitchConfig {
        settle,
        ..StitchConfig::default()
    };
    let mut p = Pipeline::new(config, Sampler::default());
    for pid in pids {
        p.add_process(process(*pid));
    }
    p
}

/// A server span that ends before the call its thread made (fire and forget) is exported
/// first; the call, exported later, still names it and joins its trace.
#[test]
fn a_parent_exported_before_its_child_still_parents_it() {
    let mut p = settling_pipeline(Duration::ZERO, &[1]);
    let (server, client) = (sock(1, 4, 10), sock(1, 5, 11));
    p.on_event(open(server, true, "127.0.0.1:8080", "127.0.0.1:50000"));
    p.on_event(data(server, 7, 100, Direction::Ingress, &request("/a", "")));
    p.on_event(open(client, false, "127.0.0.1:40000", "127.0.0.1:9090"));
    p.on_event(data(client, 7, 150, Direction::Egress, &request("/b", "")));
    p.on_event(data(server, 7, 200, Direction::Egress, &response(200)));
    let first = p.ready_spans(false);
    let parent = by_path(&first, 1, "/a");
    assert_eq!(first.len(), 1, "{first:#?}");
    p.on_event(data(client, 7, 300, Direction::Ingress, &response(200)));
    let second = p.ready_spans(false);
    let child = by_path(&second, 1, "/b");
    assert_eq!(
        (child.trace_id, child.parent_span_id),
        (parent.trace_id, Some(parent.span_id))
    );
}

/// A client span nobody named as parent is not remembered once exported: a server span of
/// the same host read late (after that export) does not link to it, and keeps the context
/// its own request carried instead of pointing at a span that is gone.
#[test]
fn a_server_read_after_its_client_was_exported_keeps_its_own_context() {
    let mut p = settling_pipeline(Duration::from_millis(50), &[1, 2]);
    let (out, back) = (sock(1, 5, 11), sock(2, 6, 12));
    let traceparent = format!("traceparent: 00-{TRACE}-{CALLER}-01\r\n");
    p.on_event(open(out, false, "127.0.0.1:40000", "127.0.0.1:9090"));
    p.on_event(data(
        out,
        7,
        100,
        Direction::Egress,
        &request("/b", &traceparent),
    ));
    p.on_event(data(out, 7, 300, Direction::Ingress, &response(200)));
    std::thread::sleep(Duration::from_millis(60));
    let clients = p.ready_spans(false);
    by_path(&clients, 1, "/b");
    // Within the peer window (4 x settle), the other end's read arrives.
    p.on_event(open(back, true, "127.0.0.1:9090", "127.0.0.1:40000"));
    p.on_event(data(
        back,
        8,
        110,
        Direction::Ingress,
        &request("/b", &traceparent),
    ));
    p.on_event(data(back, 8, 250, Direction::Egress, &response(200)));
    let servers = p.ready_spans(true);
    let server = by_path(&servers, 2, "/b");
    assert_eq!(hex(&server.trace_id), TRACE);
    assert_eq!(
        server.parent_span_id.map(|id| hex(&id)),
        Some(CALLER.into())
    );
    assert_eq!(p.stats().stitch.peer_links, 0);
}

/// A server span the kernel continued from an incoming header keeps that caller as parent;
/// an injected call whose server span is gone still names it (from the ids alone).
#[test]
fn kernel_ids_continue_the_caller_and_survive_a_missing_parent() {
    let mut p = pipeline(&[1]);
    let (server, client) = (sock(1, 4, 10), sock(1, 5, 11));
    let trace: [u8; 16] = (0..16).collect::<Vec<u8>>().try_into().unwrap();
    let caller = [9; 8];
    let traceparent = format!("traceparent: 00-{}-{}-01\r\n", hex(&trace), hex(&caller));
    p.on_event(open(server, true, "127.0.0.1:8080", "127.0.0.1:50000"));
    p.on_event(with_ids(
        data(
            server,
            7,
            100,
            Direction::Ingress,
            &request("/a", &traceparent),
        ),
        kernel_ids(IDS_SERVER, trace, [1; 8], caller),
    ));
    p.on_event(data(server, 7, 150, Direction::Egress, &response(200)));
    p.on_event(open(client, false, "127.0.0.1:40000", "127.0.0.1:9090"));
    // A call on behalf of a server span the agent never saw.
    p.on_event(with_ids(
        data(client, 8, 200, Direction::Egress, &request("/b", "")),
        kernel_ids(IDS_CLIENT, [7; 16], [2; 8], [3; 8]),
    ));
    p.on_event(data(client, 8, 300, Direction::Ingress, &response(200)));
    let spans = p.ready_spans(true);
    let (s, c) = (by_path(&spans, 1, "/a"), by_path(&spans, 1, "/b"));
    assert_eq!(
        (s.trace_id, s.span_id, s.parent_span_id),
        (trace, [1; 8], Some(caller))
    );
    assert_eq!(
        (c.trace_id, c.span_id, c.parent_span_id),
        ([7; 16], [2; 8], Some([3; 8]))
    );
}

/// A new connection whose first request comes in small syscalls (a server reading little at a
/// time, a client writing the method alone): the protocol is recognised from the syscalls
/// joined, and the request's first syscall still starts the span.
#[test]
fn a_request_start_split_over_syscalls_is_still_recognised() {
    let head = request("/split/7", "");
    // Inside the method, after it, inside the target, and between the CR and the LF.
    for cut in [1, 3, 4, 5, 9, 22] {
        let mut p = pipeline(&[1]);
        let s = sock(1, 4, 10);
        p.on_event(open(s, true, "127.0.0.1:8080", "127.0.0.1:50000"));
        let (first, rest) = head.split_at(cut);
        p.on_event(data(s, 7, 100, Direction::Ingress, first));
        p.on_event(data(s, 7, 200, Direction::Ingress, rest));
        p.on_event(data(s, 7, 300, Direction::Egress, &response(200)));
        let spans = p.ready_spans(true);
        assert_eq!(spans.len(), 1, "cut at {cut}: {spans:#?}");
        assert_eq!(spans[0].name, "GET /split/{id}");
        assert_eq!((spans[0].start_mono_ns, spans[0].end_mono_ns), (105, 305));
    }
}

/// A span still open when its settle window ends waits, and goes at the first flush after
/// its response.
#[test]
fn a_span_open_past_its_settle_window_goes_once_it_ends() {
    let mut p = settling_pipeline(Duration::ZERO, &[1]);
    let s = sock(1, 4, 10);
    p.on_event(open(s, true, "127.0.0.1:8080", "127.0.0.1:50000"));
    p.on_event(data(s, 7, 100, Direction::Ingress, &request("/slow", "")));
    assert!(p.ready_spans(false).is_empty(), "not ended yet");
    assert!(p.ready_spans(false).is_empty(), "still not ended");
    p.on_event(data(s, 7, 900, Direction::Egress, &response(200)));
    let spans = p.ready_spans(false);
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(path(&spans[0]), "/slow");
    assert!(p.ready_spans(false).is_empty(), "exported once");
}

/// Four requests into a table of two, then their responses: the two seen first are dropped,
/// and counted. With `flush_between`, a flush after each request sets the still-open span
/// aside (past its zero settle window): it is still among the oldest, and goes first.
fn four_requests_into_a_table_of_two(flush_between: bool) {
    let config = StitchConfig {
        settle: Duration::ZERO,
        max_pending: 2,
    };
    let mut p = Pipeline::new(config, Sampler::default());
    p.add_process(process(1));
    let paths = ["/a", "/b", "/c", "/d"];
    for (i, path) in paths.iter().enumerate() {
        let s = sock(1, 4 + i as i32, 10 + i as u64);
        p.on_event(open(s, true, "127.0.0.1:8080", "127.0.0.1:50000"));
        p.on_event(data(s, 7, 100, Direction::Ingress, &request(path, "")));
        if flush_between {
            assert!(p.ready_spans(false).is_empty(), "{path} is still open");
        }
    }
    for i in 0..paths.len() {
        let s = sock(1, 4 + i as i32, 10 + i as u64);
        p.on_event(data(s, 7, 200, Direction::Egress, &response(200)));
    }
    let mut exported: Vec<String> = p.ready_spans(false).iter().map(path).collect();
    exported.sort();
    assert_eq!(exported, ["/c", "/d"], "flush between: {flush_between}");
    assert_eq!(p.stats().stitch.evicted, 2);
    assert_eq!(p.stats().stitch.orphan_responses, 2);
}

#[test]
fn beyond_max_pending_the_oldest_spans_are_evicted() {
    four_requests_into_a_table_of_two(false);
}

#[test]
fn spans_waiting_past_their_window_are_the_first_evicted() {
    four_requests_into_a_table_of_two(true);
}

/// Without a Host header, the addresses come from the connection: a server span names its own
/// end as the server and its peer as the client; a client span's server is its peer.
#[test]
fn without_a_host_header_the_connection_gives_the_addresses() {
    let mut p = pipeline(&[1]);
    let (server, client) = (sock(1, 4, 10), sock(1, 5, 11));
    let no_host = |path: &str| format!("GET {path} HTTP/1.1\r\n\r\n").into_bytes();
    p.on_event(open(server, true, "127.0.0.2:8080", "127.0.0.3:50000"));
    p.on_event(data(server, 7, 100, Direction::Ingress, &no_host("/s")));
    p.on_event(data(server, 7, 200, Direction::Egress, &response(200)));
    p.on_event(open(client, false, "127.0.0.4:40000", "127.0.0.5:9090"));
    p.on_event(data(client, 8, 300, Direction::Egress, &no_host("/c")));
    p.on_event(data(client, 8, 400, Direction::Ingress, &response(200)));
    let spans = p.ready_spans(true);
    // The connection-derived attributes, as sorted `key=value`.
    let addresses = |path: &str| {
        let span = by_path(&spans, 1, path);
        let keys = [
            "network.peer.address",
            "network.peer.port",
            "client.address",
            "server.address",
            "server.port",
        ];
        let mut found: Vec<String> = keys
            .into_iter()
            .filter_map(|key| match span::find(&span.attributes, key)? {
                Value::Str(s) => Some(format!("{key}={s}")),
                Value::Int(i) => Some(format!("{key}={i}")),
                Value::Bool(b) => Some(format!("{key}={b}")),
            })
            .collect();
        found.sort();
        found
    };
    assert_eq!(
        addresses("/s"),
        [
            "client.address=127.0.0.3",
            "network.peer.address=127.0.0.3",
            "network.peer.port=50000",
            "server.address=127.0.0.2",
            "server.port=8080",
        ]
    );
    assert_eq!(
        addresses("/c"),
        [
            "network.peer.address=127.0.0.5",
            "network.peer.port=9090",
            "server.address=127.0.0.5",
            "server.port=9090",
        ]
    );
}
