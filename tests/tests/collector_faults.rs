//! A collector that is unreachable, answering errors, refusing, or slow: the traced service
//! is never slowed or failed, capture goes on, the export queue stays bounded, every span is
//! either exported or counted as dropped, and export resumes when the collector is back.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tracer_e2e::{
    Failure, OtlpReceiver, Protocol,
    harness::{Agent, Service, e2e_preconditions, free_port, run_args},
    observe::{memory_kib, metric, scrape},
};

/// Export settings that make each fault show within seconds.
const ENV: &[(&str, &str)] = &[
    ("OTEL_BSP_MAX_QUEUE_SIZE", "256"),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64"),
    ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
    ("OTEL_BSP_EXPORT_TIMEOUT", "3000"),
];
const QUEUE: u64 = 256;
/// Stated in the README: the agent's resident memory stays under this through an outage.
const MAX_RSS_KIB: u64 = 64 * 1024;

/// GET /<prefix>/<i> for i < n on one keep-alive connection; every request must succeed.
async fn drive(client: &reqwest::Client, service: &Service, prefix: &str, n: u32) -> Result<()> {
    for i in 0..n {
        let response = client
            .get(service.url(&format!("/{prefix}/{i}")))
            .send()
            .await
            .with_context(|| format!("/{prefix}/{i}: the traced service must keep answering"))?;
        ensure!(
            response.status() == 200,
            "/{prefix}/{i}: {}",
            response.status()
        );
    }
    Ok(())
}

/// Waits until the receiver holds `n` spans whose path starts with `/<prefix>/`.
async fn arrived(receiver: &OtlpReceiver, prefix: &str, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let wanted = format!("/{prefix}/");
    loop {
        let count = receiver
            .spans()
            .iter()
            .filter(|s| {
                s.attr("url.path")
                    .and_then(|v| v.as_str())
                    .is_some_and(|p| p.starts_with(&wanted))
            })
            .count();
        if count >= n {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{count}/{n} {wanted} spans arrived in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Counts {
    finished: u64,
    submitted: u64,
    exported: u64,
    queue_full: u64,
    export_failed: u64,
    rejected: u64,
    errors: u64,
    retries: u64,
    queue_depth: u64,
}

fn counts(agent: &Agent) -> Result<Counts> {
    let text = agent.metrics()?;
    let get = |name: &str, labels: &[(&str, &str)]| {
        metric(&text, name, labels).with_context(|| format!("{name} {labels:?} in\n{text}"))
    };
    let otlp = ("sink", "otlp");
    Ok(Counts {
        finished: get("tracer_spans_finished_total", &[])?,
        submitted: get("tracer_spans_submitted_total", &[])?,
        exported: get("tracer_spans_exported_total", &[otlp])?,
        queue_full: get(
            "tracer_spans_dropped_total",
            &[otlp, ("cause", "queue_full")],
        )?,
        export_failed: get(
            "tracer_spans_dropped_total",
            &[otlp, ("cause", "export_failed")],
        )?,
        rejected: get(
            "tracer_spans_dropped_total",
            &[otlp, ("cause", "rejected_by_collector")],
        )?,
        errors: get("tracer_export_errors_total", &[otlp])?,
        retries: get("tracer_export_retries_total", &[otlp])?,
        queue_depth: get("tracer_export_queue_depth", &[otlp])?,
    })
}

/// Polls the metrics until `done` holds (or 30 s pass), checking the queue bound each time.
async fn until(agent: &Agent, what: &str, done: impl Fn(&Counts) -> bool) -> Result<Counts> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = counts(agent)?;
        ensure!(
            c.queue_depth <= QUEUE,
            "export queue {} over its bound {QUEUE}",
            c.queue_depth
        );
        if done(&c) {
            return Ok(c);
        }
        ensure!(Instant::now() < deadline, "not within 30 s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_faults_never_stop_capture_and_every_span_is_accounted_for() -> Result<()> {
    e2e_preconditions()?;
    let receiver = OtlpReceiver::start(Protocol::Http).await?;
    let service = Service::start(&["backend"])?;
    let metrics_addr = format!("127.0.0.1:{}", free_port()?);
    let mut args = run_args(&[service.proc.pid().to_string()], &receiver);
    args.extend(["--metrics-addr".to_string(), metrics_addr.clone()]);
    let mut agent = Agent::start(&args, ENV)?;
    let client = reqwest::Client::new();

    drive(&client, &service, "ok", 20).await?;
    arrived(&receiver, "ok", 20).await?;

    // Unreachable: capture goes on, the queue stays bounded, the overflow is counted.
    receiver.stop().await;
    drive(&client, &service, "down", 1000).await?;
    let down = until(
        &agent,
        "1020 spans finished and the overflow counted",
        |c| c.finished >= 1020 && c.queue_full > 0 && c.errors > 0,
    )
    .await?;
    let (_, peak) = memory_kib(agent.proc.pid())?;
    ensure!(
        peak <= MAX_RSS_KIB,
        "agent peak RSS {peak} KiB during the outage"
    );
    eprintln!(
        "outage: {} spans finished, {} dropped (queue full), {} export errors; agent peak RSS {peak} KiB",
        down.finished, down.queue_full, down.errors
    );

    // Back: export resumes; the queue drains (spans submitted while it is still full are
    // dropped and counted, as with OpenTelemetry SDKs), then new spans arrive.
    receiver.restart().await?;
    until(
        &agent,
        "the queue drained after the collector came back",
        |c| c.queue_depth == 0 && c.exported > down.exported,
    )
    .await?;
    drive(&client, &service, "back", 20).await?;
    arrived(&receiver, "back", 20).await?;

    // Answering 503: retried, counted; spans after the errors arrive.
    receiver.set_failure(Some(Failure::Unavailable));
    drive(&client, &service, "unavailable", 50).await?;
    until(&agent, "503s counted as errors and retried", |c| {
        c.errors > down.errors && c.retries > down.retries
    })
    .await?;
    receiver.set_failure(None);
    drive(&client, &service, "after-unavailable", 20).await?;
    arrived(&receiver, "after-unavailable", 20).await?;

    // Refusing (400): permanent, dropped at once and counted, never retried.
    let before = counts(&agent)?;
    receiver.set_failure(Some(Failure::InvalidArgument));
    drive(&client, &service, "refused", 50).await?;
    let refused = until(&agent, "50 refused spans counted as export_failed", |c| {
        c.export_failed >= before.export_failed + 50
    })
    .await?;
    ensure!(
        refused.retries == before.retries,
        "a refusal is not retried: retries {} -> {}",
        before.retries,
        refused.retries
    );
    receiver.set_failure(None);

    // Slow (answers after the attempt timeout): errors, capture unaffected, then recovery.
    let before = counts(&agent)?;
    receiver.set_delay(Duration::from_secs(3));
    drive(&client, &service, "slow", 50).await?;
    until(&agent, "timeouts counted", |c| c.errors > before.errors).await?;
    receiver.set_delay(Duration::ZERO);
    drive(&client, &service, "after-slow", 20).await?;
    arrived(&receiver, "after-slow", 20).await?;

    // Nothing lost silently: once the queue drains, every submitted span is exported or
    // counted as dropped (a slow answer may still be in flight: wait for it).
    let total = 20 + 1000 + 20 + 50 + 20 + 50 + 50 + 20;
    let settled = until(&agent, "exported + dropped == submitted", |c| {
        c.queue_depth == 0
            && c.submitted == c.exported + c.queue_full + c.export_failed + c.rejected
    })
    .await?;
    ensure!(
        settled.finished == total && settled.submitted == total,
        "{total} requests: {} spans finished, {} submitted",
        settled.finished,
        settled.submitted
    );
    // The Prometheus endpoint serves the same counters.
    let scraped = scrape(&metrics_addr)?;
    ensure!(
        metric(&scraped, "tracer_spans_submitted_total", &[]) == Some(total),
        "scraped:\n{scraped}"
    );
    let status = agent.stop()?;
    ensure!(status.success(), "agent exit status {status}");
    Ok(())
}
