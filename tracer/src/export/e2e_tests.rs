//! The exporter against the real OTLP receiver from `tracer-e2e`, on 127.0.0.1.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tracer_e2e::{AttrValue, Failure, OtlpReceiver, ReceivedSpan};

use super::clock::monotonic_now_ns;
use super::testutil::{process, span, temp_path};
use super::*;
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

async fn export_and_check(r: &OtlpReceiver, protocol: &str) {
    let c = config(
        to(r, protocol),
        &[(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-api-key=se%20cret,X-Tenant=t1",
        )],
    );
    let exporter = Exporter::start(c, "test-host".into()).unwrap();
    for s in trace_now() {
        assert!(exporter.submit(s));
    }
    let spans = r.wait_for_spans(3, WAIT).await.unwrap();
    check_trace(&spans);
    for req in r.requests() {
        assert_eq!(req.headers["x-api-key"], "se cret");
        assert_eq!(req.headers["x-tenant"], "t1");
    }
    // One request per batch, grouped into one resource per process.
    assert_eq!(r.requests()[0].request.resource_spans.len(), 2);
    let stats = stats_when(&exporter, |s| s.exported == 3).await;
    assert_eq!(stats.submitted, 3);
    assert_eq!(stats.dropped_queue_full + stats.dropped_export_failed, 0);
    exporter.shutdown(WAIT).await;
}

#[tokio::test]
async fn grpc_export_arrives_complete() {
    let r = OtlpReceiver::start_grpc().await.unwrap();
    export_and_check(&r, "grpc").await;
}

#[tokio::test]
async fn http_export_arrives_complete() {
    let r = OtlpReceiver::start_http().await.unwrap();
    export_and_check(&r, "http/protobuf").await;
}

#[tokio::test]
async fn gzip_compression_when_configured() {
    for r in [
        OtlpReceiver::start_grpc().await.unwrap(),
        OtlpReceiver::start_http().await.unwrap(),
    ] {
        let (protocol, header) = match r.protocol() {
            tracer_e2e::Protocol::Grpc => ("grpc", "grpc-encoding"),
            tracer_e2e::Protocol::Http => ("http/protobuf", "content-encoding"),
        };
        let vars = [("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")];
        let exporter =
            Exporter::start(config(to(&r, protocol), &vars), "test-host".into()).unwrap();
        for s in trace_now() {
            exporter.submit(s);
        }
        check_trace(&r.wait_for_spans(3, WAIT).await.unwrap());
        assert_eq!(r.requests()[0].headers[header], "gzip", "{protocol}");
        exporter.shutdown(WAIT).await;
    }
}

#[tokio::test]
async fn https_endpoints_verify_the_collector_with_the_configured_ca() {
    for r in [
        OtlpReceiver::start_grpc_tls().await.unwrap(),
        OtlpReceiver::start_http_tls().await.unwrap(),
    ] {
        let protocol = match r.protocol() {
            tracer_e2e::Protocol::Grpc => "grpc",
            tracer_e2e::Protocol::Http => "http/protobuf",
        };
        assert!(r.endpoint().starts_with("https://"));
        // Without the collector's CA the system roots are used, and they do not trust it.
        let exporter = Exporter::start(config(to(&r, protocol), &[]), "h".into()).unwrap();
        exporter.submit(trace_now().remove(0));
        let stats = stats_when(&exporter, |s| s.dropped_export_failed == 1).await;
        assert_eq!(stats.exported, 0, "{protocol}");
        exporter.shutdown(WAIT).await;

        let ca = temp_path("ca.pem");
        std::fs::write(&ca, r.ca_pem().unwrap()).unwrap();
        let vars = [("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.to_str().unwrap())];
        let c = config(to(&r, protocol), &vars);
        let exporter = Exporter::start(c, "test-host".into()).unwrap();
        for s in trace_now() {
            exporter.submit(s);
        }
        check_trace(&r.wait_for_spans(3, WAIT).await.unwrap());
        exporter.shutdown(WAIT).await;
        let _ = std::fs::remove_dir_all(ca.parent().unwrap());
    }
}

#[tokio::test]
async fn retryable_failures_are_retried_and_delivered() {
    for r in [
        OtlpReceiver::start_grpc().await.unwrap(),
        OtlpReceiver::start_http().await.unwrap(),
    ] {
        let protocol = match r.protocol() {
            tracer_e2e::Protocol::Grpc => "grpc",
            tracer_e2e::Protocol::Http => "http/protobuf",
        };
        // Twice UNAVAILABLE (gRPC) or 429 (HTTP), then accepted.
        let failure = match r.protocol() {
            tracer_e2e::Protocol::Grpc => Failure::Unavailable,
            tracer_e2e::Protocol::Http => Failure::ResourceExhausted,
        };
        r.fail_next(2, failure);
        let exporter = Exporter::start(config(to(&r, protocol), &[]), "h".into()).unwrap();
        for s in trace_now() {
            exporter.submit(s);
        }
        let spans = r.wait_for_spans(3, WAIT).await.unwrap();
        assert_eq!(spans.len(), 3, "{protocol}");
        let stats = stats_when(&exporter, |s| s.exported == 3).await;
        let stats = stats.sink("otlp").cloned().unwrap();
        assert_eq!((stats.retries, stats.export_errors), (2, 2), "{protocol}");
        assert_eq!(r.attempts(), 3, "{protocol}");
        assert_eq!(
            (stats.exported, stats.dropped_export_failed),
            (3, 0),
            "{protocol}"
        );
        exporter.shutdown(WAIT).await;
    }
}

#[tokio::test]
async fn permanent_failures_are_not_retried_but_counted() {
    let r = OtlpReceiver::start_grpc().await.unwrap();
    r.fail_next(1, Failure::InvalidArgument);
    let exporter = Exporter::start(config(to(&r, "grpc"), &[]), "h".into()).unwrap();
    for s in trace_now() {
        exporter.submit(s);
    }
    let stats = stats_when(&exporter, |s| s.dropped_export_failed == 3).await;
    assert_eq!((stats.export_errors, stats.sinks[0].retries), (1, 0));
    // The next batch goes through.
    exporter.submit(trace_now().remove(0));
    r.wait_for_spans(1, WAIT).await.unwrap();
    assert_eq!(r.attempts(), 2);
    exporter.shutdown(WAIT).await;
}

#[tokio::test]
async fn partial_success_is_counted_not_retried() {
    for r in [
        OtlpReceiver::start_grpc().await.unwrap(),
        OtlpReceiver::start_http().await.unwrap(),
    ] {
        let protocol = match r.protocol() {
            tracer_e2e::Protocol::Grpc => "grpc",
            tracer_e2e::Protocol::Http => "http/protobuf",
        };
        r.set_partial_success(Some((1, "span too old")));
        let exporter = Exporter::start(config(to(&r, protocol), &[]), "h".into()).unwrap();
        for s in trace_now() {
            exporter.submit(s);
        }
        let stats = stats_when(&exporter, |s| s.exported == 2).await;
        let otlp = stats.sink("otlp").unwrap();
        assert_eq!(otlp.rejected_by_collector, 1, "{protocol}");
        assert_eq!((otlp.retries, otlp.export_errors), (0, 0), "{protocol}");
        assert_eq!(r.attempts(), 1, "{protocol}");
        exporter.shutdown(WAIT).await;
    }
}

#[tokio::test]
async fn dead_collector_never_blocks_submit_bounds_the_queue_and_recovers() {
    let r = OtlpReceiver::start_http().await.unwrap();
    r.stop().await;
    let c = config(
        to(&r, "http/protobuf"),
        &[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "2000"),
        ],
    );
    let exporter = Exporter::start(c, "h".into()).unwrap();
    let p = process(1, "svc");
    let mut slowest = Duration::ZERO;
    for i in 0..5000u32 {
        let s = span(&p, 1, (i % 250) as u8, None, "lost", 0, 1);
        let started = Instant::now();
        exporter.submit(s);
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(50),
        "a submit took {slowest:?}"
    );
    let stats = exporter.stats();
    assert_eq!(stats.submitted, 5000);
    assert!(stats.queue_depth <= 100, "{stats:?}");
    // At most the queue plus the batch in flight can be held; the rest was dropped.
    assert!(stats.dropped_queue_full >= 5000 - 200, "{stats:?}");

    // Failed batches are given up on within OTEL_BSP_EXPORT_TIMEOUT and counted.
    let stats = stats_when(&exporter, |s| s.dropped_export_failed > 0).await;
    assert!(stats.export_errors > 0);

    // The collector comes back on the same port: new spans are delivered without any help.
    r.restart().await.unwrap();
    let back = process(2, "svc");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        exporter.submit(span(&back, 2, 1, None, "after", 0, 1));
        if r.spans().iter().any(|s| s.name == "after") {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", exporter.stats());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    exporter.shutdown(WAIT).await;
}

#[tokio::test]
async fn shutdown_flushes_pending_spans_and_is_bounded_when_the_collector_is_dead() {
    let r = OtlpReceiver::start_grpc().await.unwrap();
    // A delay far beyond the test: only shutdown can send these.
    let c = config(to(&r, "grpc"), &[("OTEL_BSP_SCHEDULE_DELAY", "600000")]);
    let exporter = Exporter::start(c, "h".into()).unwrap();
    for s in trace_now() {
        exporter.submit(s);
    }
    exporter.shutdown(WAIT).await;
    assert_eq!(r.spans().len(), 3);

    r.set_delay(Duration::from_secs(30));
    let exporter = Exporter::start(config(to(&r, "grpc"), &[]), "h".into()).unwrap();
    exporter.submit(trace_now().remove(0));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    exporter.shutdown(Duration::from_millis(300)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn json_lines_output_fans_out_with_otlp_and_parses_back() {
    let r = OtlpReceiver::start_http().await.unwrap();
    let path = temp_path("spans.jsonl");
    let args = ExportArgs {
        output: Some(path.clone()),
        ..to(&r, "http/protobuf")
    };
    let exporter = Exporter::start(config(args, &[]), "h".into()).unwrap();
    for s in trace_now() {
        exporter.submit(s);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    for s in trace_now() {
        exporter.submit(s);
    }
    exporter.shutdown(WAIT).await;
    assert_eq!(r.spans().len(), 6, "OTLP got every span too");

    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    let mut names = Vec::new();
    for line in text.lines() {
        let req: ExportTraceServiceRequest = serde_json::from_str(line).unwrap();
        let raw: serde_json::Value = serde_json::from_str(line).unwrap();
        let first = &raw["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(first["traceId"], "ab".repeat(16), "hex ids");
        for rs in &req.resource_spans {
            for s in &rs.scope_spans[0].spans {
                names.push(s.name.clone());
            }
        }
    }
    names.sort();
    assert_eq!(
        names,
        ["GET", "GET", "GET /", "GET /", "GET /users", "GET /users"]
    );
}

#[tokio::test]
async fn an_unwritable_output_is_a_startup_error() {
    let args = ExportArgs {
        output: Some("/nonexistent-dir/spans.jsonl".into()),
        ..Default::default()
    };
    let err = Exporter::start(config(args, &[]), "h".into())
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("cannot open /nonexistent-dir/spans.jsonl for appending"),
        "{err:#}"
    );
}

#[tokio::test]
async fn terminal_prints_waterfalls_when_quiet_and_at_shutdown() {
    use tokio::io::AsyncReadExt;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let (writer, mut reader) = tokio::io::duplex(1 << 16);
    let counters = Arc::new(stats::SinkCounters::default());
    let terminal = TerminalConfig {
        quiet_period: Duration::from_millis(100),
        ..TerminalConfig::default()
    };
    let resources = Arc::new(otlp::ResourceBuilder::new(
        "h".into(),
        ResourceConfig::default(),
    ));
    let task = tokio::spawn(terminal::run_with_writer(
        terminal,
        rx,
        resources,
        counters.clone(),
        writer,
        false,
    ));
    let p = process(1, "svc");
    tx.send(Arc::new(span(&p, 1, 1, None, "quiet", 0, 10)))
        .await
        .unwrap();
    // Printed once quiet, long before shutdown.
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(WAIT, reader.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(first.starts_with("trace 01010101"), "{first}");
    assert!(first.contains("svc quiet"), "{first}");
    // Pending at shutdown: printed when the queue closes.
    tx.send(Arc::new(span(&p, 2, 1, None, "pending", 0, 10)))
        .await
        .unwrap();
    drop(tx);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).await.unwrap();
    assert!(rest.contains("svc pending"), "{rest}");
    assert_eq!(
        counters.exported.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

/// Collects the messages of WARN and ERROR events.
#[derive(Clone, Default)]
struct Warnings(Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = format!("{v:?}");
                }
            }
        }
        if *event.metadata().level() <= tracing::Level::WARN {
            let mut m = Message(String::new());
            event.record(&mut m);
            self.0.lock().unwrap().push(m.0);
        }
    }
}

#[tokio::test]
async fn many_failures_make_one_log_line() {
    use tracing_subscriber::layer::SubscriberExt;
    let warnings = Warnings::default();
    // Thread-local: the test's single-threaded runtime runs the exporter's tasks here too.
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(warnings.clone()));
    let r = OtlpReceiver::start_http().await.unwrap();
    r.set_failure(Some(Failure::InvalidArgument));
    let mut c = config(
        to(&r, "http/protobuf"),
        &[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1")],
    );
    c.retry.max_attempts = 1;
    let exporter = Exporter::start(c, "h".into()).unwrap();
    let p = process(1, "svc");
    for i in 0..30 {
        exporter.submit(span(&p, 1, i, None, "x", 0, 1));
    }
    let stats = stats_when(&exporter, |s| s.export_errors == 30).await;
    assert_eq!(stats.dropped_export_failed, 30);
    let lines = warnings.0.lock().unwrap().clone();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].starts_with(&format!(
            "OTLP export to {}/v1/traces failing: HTTP 400",
            r.endpoint()
        )),
        "{}",
        lines[0]
    );
    exporter.shutdown(WAIT).await;
}

#[test]
fn exporter_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Exporter>();
}
