//! The exporter against the real OTLP receiver from `tracer-e2e`, on 127.0.0.1: shared
//! fixtures here; what arrives in `delivery`, failures in `faults`, file and terminal in
//! `outputs`.

mod delivery;
mod faults;
mod outputs;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tracer_e2e::{AttrValue, Failure, OtlpReceiver, ReceivedSpan};

use super::testutil::{process, span, temp_path};
use super::*;
use crate::clock::monotonic_ns as monotonic_now_ns;
use crate::span::{Attribute, SpanKind};

const WAIT: Duration = Duration::from_secs(10);

/// Resolves like the agent does, with `vars` as the environment; short delays and retries.
fn config(args: ExportArgs, vars: &[(&str, &str)]) -> ExportConfig {
    let mut vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.entry("OTEL_BSP_SCHEDULE_DELAY".into())
        .or_insert_with(|| "20".into());
    let mut c = ExportConfig::resolve(&args, &|k| vars.get(k).cloned()).unwrap();
    c.retry = RetryConfig {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    };
    c
}

fn to(r: &OtlpReceiver, protocol: &str) -> ExportArgs {
    ExportArgs {
        otlp_endpoint: Some(r.endpoint()),
        otlp_protocol: Some(protocol.into()),
        output: None,
    }
}

/// Two processes: a server span, its client call, and the served span of the callee (error).
fn trace_now() -> Vec<Span> {
    let (fe, be) = (process(100, "frontend"), process(200, "backend"));
    let now_ms = monotonic_now_ns() / 1_000_000;
    let root = span(&fe, 0xab, 1, None, "GET /", now_ms - 30, now_ms);
    let mut call = span(&fe, 0xab, 2, Some(1), "GET", now_ms - 20, now_ms - 5);
    call.kind = SpanKind::Client;
    call.attributes
        .push(Attribute::str("server.address", "backend"));
    let mut served = span(&be, 0xab, 3, Some(2), "GET /users", now_ms - 18, now_ms - 6);
    served.error = Some("500 Internal Server Error".into());
    served.trace_state = "vendor=x".into();
    vec![root, call, served]
}

/// Waits (bounded) until the exporter's counters satisfy `done`: the receiver records a
/// request before the exporter has read the answer and counted it.
async fn stats_when(exporter: &Exporter, done: impl Fn(&ExportStats) -> bool) -> ExportStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = exporter.stats();
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn by_name<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    spans.iter().find(|s| s.name == name).expect(name)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// The checks shared by the gRPC and HTTP tests.
fn check_trace(spans: &[ReceivedSpan]) {
    assert_eq!(spans.len(), 3);
    let root = by_name(spans, "GET /");
    assert_eq!(root.service_name, "frontend");
    assert_eq!(root.trace_id, "ab".repeat(16));
    assert_eq!(root.span_id, "0101010101010101");
    assert_eq!(root.parent_span_id, "");
    assert_eq!(root.kind, 2);
    assert_eq!(root.status_code, 0);
    assert_eq!(root.flags, 1);
    assert_eq!(root.scope_name, "tracer");
    assert_eq!(
        root.attr("http.request.method"),
        Some(&AttrValue::Str("GET".into()))
    );
    assert_eq!(
        root.attr("http.response.status_code"),
        Some(&AttrValue::Int(200))
    );
    // Monotonic times became wall-clock times: now, and 30 ms long.
    let age = unix_now().abs_diff(root.end_unix_nano);
    assert!(age < 5_000_000_000, "end time off by {age} ns");
    assert_eq!(root.end_unix_nano - root.start_unix_nano, 30_000_000);
    let r = &root.resource;
    assert_eq!(r["host.name"], AttrValue::Str("test-host".into()));
    assert_eq!(r["process.pid"], AttrValue::Int(100));
    assert_eq!(
        r["service.instance.id"],
        AttrValue::Str("instance-100".into())
    );
    assert_eq!(
        r["process.executable.name"],
        AttrValue::Str("frontend".into())
    );
    assert_eq!(
        r["process.executable.path"],
        AttrValue::Str("/usr/bin/frontend".into())
    );
    assert_eq!(
        r["process.command_line"],
        AttrValue::Str("frontend --port 80".into())
    );
    assert_eq!(r["telemetry.sdk.name"], AttrValue::Str("tracer".into()));
    assert_eq!(r["telemetry.sdk.language"], AttrValue::Str("rust".into()));

    let call = by_name(spans, "GET");
    assert_eq!(
        (call.kind, call.parent_span_id.as_str()),
        (3, "0101010101010101")
    );
    assert_eq!(
        call.attr("server.address"),
        Some(&AttrValue::Str("backend".into()))
    );

    let served = by_name(spans, "GET /users");
    assert_eq!(served.service_name, "backend");
    assert_eq!(served.resource["process.pid"], AttrValue::Int(200));
    assert_eq!(served.parent_span_id, "0202020202020202");
    assert_eq!(served.status_code, 2);
    assert_eq!(served.status_message, "500 Internal Server Error");
    assert_eq!(served.trace_state, "vendor=x");
}

fn protocol_of(r: &OtlpReceiver) -> &'static str {
    match r.protocol() {
        tracer_e2e::Protocol::Grpc => "grpc",
        tracer_e2e::Protocol::Http => "http/protobuf",
    }
}
