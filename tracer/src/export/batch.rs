//! The batch span processor of one output: collects spans from its bounded queue into
//! batches (by size or delay) and exports one batch at a time with bounded retries. While an
//! export is slow, the queue fills and `submit` drops: memory stays bounded by design.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use super::clock::WallClock;
use super::config::{BatchConfig, RetryConfig};
use super::otlp::ResourceBuilder;
use super::retry::{FailureLog, backoff};
use super::stats::SinkCounters;
use super::transport::{ExportError, Transport};
use crate::span::Span;

/// How often a continuing failure is logged.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Rate-limited logs: failed exports, and spans refused in a partial success.
struct Logs {
    failures: FailureLog,
    rejections: FailureLog,
}

pub struct BatchWorker {
    pub rx: mpsc::Receiver<Arc<Span>>,
    pub transport: Transport,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    pub counters: Arc<SinkCounters>,
    pub resources: Arc<ResourceBuilder>,
    pub clock: Arc<WallClock>,
}

impl BatchWorker {
    /// Runs until the queue is closed and drained.
    pub async fn run(mut self) {
        let max = self.batch.max_export_batch_size.max(1);
        let mut log = Logs {
            failures: FailureLog::new(LOG_INTERVAL),
            rejections: FailureLog::new(LOG_INTERVAL),
        };
        let mut batch: Vec<Arc<Span>> = Vec::with_capacity(max);
        // When the oldest span of the current batch must be sent at the latest.
        let mut due: Option<Instant> = None;
        loop {
            let room = max - batch.len();
            let timer = async {
                match due {
                    Some(due) => sleep_until(due).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                n = self.rx.recv_many(&mut batch, room) => {
                    if n == 0 {
                        // Closed and empty: flush what is left and stop.
                        if !batch.is_empty() {
                            self.export(std::mem::take(&mut batch), &mut log).await;
                        }
                        return;
                    }
                    due.get_or_insert_with(|| Instant::now() + self.batch.schedule_delay);
                    if batch.len() >= max {
                        self.export(std::mem::replace(&mut batch, Vec::with_capacity(max)), &mut log).await;
                        due = None;
                    }
                }
                _ = timer => {
                    self.export(std::mem::replace(&mut batch, Vec::with_capacity(max)), &mut log).await;
                    due = None;
                }
            }
        }
    }

    async fn export(&mut self, spans: Vec<Arc<Span>>, log: &mut Logs) {
        let n = spans.len() as u64;
        // An encoding error is permanent: it takes the failure path below on the first attempt.
        let batch = self.transport.encode(&spans, &self.resources, &self.clock);
        drop(spans);
        let target = self.transport.target();
        let deadline = Instant::now() + self.batch.export_timeout;
        let mut attempt = 1;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt_result = match &batch {
                Ok(batch) => timeout(remaining, self.transport.send(batch)).await,
                Err(error) => Ok(Err(error.clone())),
            };
            let result = match attempt_result {
                Ok(result) => result,
                Err(_) => Err(ExportError {
                    retryable: false,
                    retry_after: None,
                    message: format!(
                        "no success within OTEL_BSP_EXPORT_TIMEOUT ({:?})",
                        self.batch.export_timeout
                    ),
                }),
            };
            let error = match result {
                Ok(delivered) => {
                    let rejected = delivered.rejected_spans.min(n);
                    SinkCounters::add(&self.counters.exported, n - rejected);
                    SinkCounters::add(&self.counters.rejected_by_collector, rejected);
                    let now = std::time::Instant::now();
                    if let Some(line) = log.failures.success(&target, now) {
                        tracing::info!("{line}");
                    }
                    if rejected > 0 || !delivered.message.is_empty() {
                        // Partial success: not retryable, but worth knowing (rate-limited).
                        let what = format!(
                            "collector rejected {rejected} of {n} spans: {}",
                            delivered.message
                        );
                        if let Some(line) = log.rejections.failure(&target, &what, now) {
                            tracing::warn!("{line}");
                            SinkCounters::add(&self.counters.failure_reports, 1);
                        }
                    }
                    return;
                }
                Err(error) => error,
            };
            SinkCounters::add(&self.counters.export_errors, 1);
            let now = std::time::Instant::now();
            if let Some(line) = log.failures.failure(&target, &error.message, now) {
                tracing::warn!("{line}");
                SinkCounters::add(&self.counters.failure_reports, 1);
            }
            let wait = backoff(
                &self.retry,
                attempt,
                error.retry_after,
                rand::random_range(0.8..1.2),
            );
            let give_up = !error.retryable
                || attempt >= self.retry.max_attempts
                || Instant::now() + wait >= deadline;
            if give_up {
                SinkCounters::add(&self.counters.dropped_export_failed, n);
                return;
            }
            SinkCounters::add(&self.counters.retries, 1);
            sleep(wait).await;
            attempt += 1;
        }
    }
}
