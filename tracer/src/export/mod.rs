//! Export: finished spans → OTLP (gRPC or HTTP/protobuf), an OTLP/JSON lines file, and/or
//! terminal waterfalls.
//!
//! Every output has its own bounded queue and task, like a separate OTel batch span
//! processor: a dead collector fills only its own queue and never slows the file or the
//! terminal. [`Exporter::submit`] never blocks; a span an output cannot take is dropped and
//! counted in [`ExportStats`].
//!
//! Use from the agent:
//! ```ignore
//! let config = ExportConfig::resolve(&args, &|k| std::env::var(k).ok())?; // bad value: exit
//! tracing::info!("{}", config.summary());
//! let exporter = Exporter::start(config, host_name)?; // inside the tokio runtime
//! exporter.submit(span);                               // from the pipeline, any thread
//! exporter.shutdown(Duration::from_secs(5)).await;     // on exit: flushes what is queued
//! ```
//! `service.name` precedence needs [`ProcessMeta::service_name_is_explicit`]: set it when the
//! operator named the service (`ProcessMeta::from_proc` does).
//!
//! [`ProcessMeta::service_name_is_explicit`]: crate::process::ProcessMeta::service_name_is_explicit

mod batch;
pub mod clock;
mod config;
mod env;
pub mod json;
pub mod otlp;
mod retry;
mod stats;
mod terminal;
pub(crate) mod transport;
pub mod waterfall;

#[cfg(test)]
mod e2e_tests;
#[cfg(test)]
pub(crate) mod testutil;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Result;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use config::{
    BatchConfig, Compression, ExportArgs, ExportConfig, OtlpConfig, Protocol, ResourceConfig,
    RetryConfig, TerminalConfig,
};
pub use stats::{ExportStats, SinkStats};

use crate::span::Span;
use batch::BatchWorker;
use clock::WallClock;
use otlp::ResourceBuilder;
use stats::SinkCounters;
use transport::{FileTransport, Transport};

/// How often the monotonic→wall-clock offset is measured again (follows NTP steps).
const CLOCK_REFRESH: Duration = Duration::from_secs(60);

/// The running export stage.
pub struct Exporter {
    submitted: AtomicU64,
    sinks: Vec<Sink>,
    clock_task: JoinHandle<()>,
}

struct Sink {
    name: &'static str,
    tx: mpsc::Sender<Arc<Span>>,
    counters: Arc<SinkCounters>,
    task: JoinHandle<()>,
}

impl Exporter {
    /// Starts one task per output. Must be called inside a tokio runtime. Fails only on
    /// configuration the OS or client libraries refuse (e.g. an unwritable `--output`); an
    /// unreachable collector is not an error here.
    pub fn start(config: ExportConfig, host_name: String) -> Result<Self> {
        let clock = Arc::new(WallClock::new());
        let resources = Arc::new(ResourceBuilder::new(host_name, config.resource.clone()));
        let mut sinks = Vec::new();
        let batched = |name: &'static str, transport: Transport| {
            let (tx, rx) = mpsc::channel(config.batch.max_queue_size.max(1));
            let counters = Arc::new(SinkCounters::default());
            let worker = BatchWorker {
                rx,
                transport,
                batch: config.batch.clone(),
                retry: config.retry.clone(),
                counters: counters.clone(),
                resources: resources.clone(),
                clock: clock.clone(),
            };
            Sink {
                name,
                tx,
                counters,
                task: tokio::spawn(worker.run()),
            }
        };
        if let Some(otlp) = &config.otlp {
            sinks.push(batched("otlp", Transport::otlp(otlp)?));
        }
        if let Some(path) = &config.output {
            sinks.push(batched(
                "file",
                Transport::File(FileTransport::new(path.clone())?),
            ));
        }
        if let Some(terminal) = &config.terminal {
            let (tx, rx) = mpsc::channel(terminal.max_queue_size.max(1));
            let counters = Arc::new(SinkCounters::default());
            let task = tokio::spawn(terminal::run(
                terminal.clone(),
                rx,
                resources.clone(),
                counters.clone(),
            ));
            sinks.push(Sink {
                name: "terminal",
                tx,
                counters,
                task,
            });
        }
        let clock_task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(CLOCK_REFRESH);
            loop {
                tick.tick().await;
                clock.refresh();
            }
        });
        Ok(Self {
            submitted: AtomicU64::new(0),
            sinks,
            clock_task,
        })
    }

    /// Queues a finished span for every output. Never blocks. Returns false if an output's
    /// queue was full and dropped it (counted per output).
    pub fn submit(&self, span: Span) -> bool {
        self.submitted.fetch_add(1, Relaxed);
        let span = Arc::new(span);
        let mut all = true;
        for sink in &self.sinks {
            if sink.tx.try_send(span.clone()).is_err() {
                SinkCounters::add(&sink.counters.dropped_queue_full, 1);
                all = false;
            }
        }
        all
    }

    pub fn stats(&self) -> ExportStats {
        ExportStats::new(
            self.submitted.load(Relaxed),
            self.sinks
                .iter()
                .map(|s| {
                    let depth = s.tx.max_capacity() - s.tx.capacity();
                    s.counters.snapshot(s.name, depth, s.tx.max_capacity())
                })
                .collect(),
        )
    }

    /// Exports everything queued, then stops. Outputs still busy after `timeout` (a dead
    /// collector mid-retry) are abandoned; what they held is logged as lost.
    pub async fn shutdown(self, timeout: Duration) {
        self.clock_task.abort();
        let deadline = tokio::time::Instant::now() + timeout;
        // Closing a queue makes its task flush what it holds and return; close all first so
        // that the outputs drain in parallel.
        let tasks: Vec<_> = self
            .sinks
            .into_iter()
            .map(|sink| (sink.name, sink.task))
            .collect();
        for (name, mut task) in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                tracing::warn!(
                    "{name} output did not finish within {timeout:?} at shutdown; its pending spans are lost"
                );
            }
        }
    }
}
