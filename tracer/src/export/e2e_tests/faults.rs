//! Collector failures: retries, drops, recovery, shutdown, and quiet logs.

use super::*;

#[tokio::test]
async fn retryable_failures_are_retried_and_delivered() {
    for r in [
        OtlpReceiver::start_grpc().await.unwrap(),
        OtlpReceiver::start_http().await.unwrap(),
    ] {
        let protocol = protocol_of(&r);
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
        let protocol = protocol_of(&r);
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

/// Thirty failed batches make one warning, not thirty. (The warning's text is `FailureLog`'s,
/// tested in `retry.rs`; capturing `tracing` output here would race with the other tests'
/// threads over the process-wide callsite cache.)
#[tokio::test]
async fn many_failures_make_one_log_line() {
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
    assert_eq!(stats.sinks[0].failure_reports, 1, "{stats:#?}");
    exporter.shutdown(WAIT).await;
}
