//! Counters of what happened to submitted spans, per output and in total.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters of one output, shared between `submit` and the output's task.
#[derive(Debug, Default)]
pub struct SinkCounters {
    pub exported: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_export_failed: AtomicU64,
    pub rejected_by_collector: AtomicU64,
    pub export_errors: AtomicU64,
    pub retries: AtomicU64,
    pub traces_evicted: AtomicU64,
    pub failure_reports: AtomicU64,
}

impl SinkCounters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn snapshot(
        &self,
        sink: &'static str,
        queue_depth: usize,
        queue_capacity: usize,
    ) -> SinkStats {
        SinkStats {
            sink,
            exported: self.exported.load(Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Relaxed),
            dropped_export_failed: self.dropped_export_failed.load(Relaxed),
            rejected_by_collector: self.rejected_by_collector.load(Relaxed),
            export_errors: self.export_errors.load(Relaxed),
            retries: self.retries.load(Relaxed),
            traces_evicted: self.traces_evicted.load(Relaxed),
            failure_reports: self.failure_reports.load(Relaxed),
            queue_depth,
            queue_capacity,
        }
    }
}

/// One output's counters. Span counts, except where noted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// "otlp", "file" or "terminal".
    pub sink: &'static str,
    /// Accepted by the collector, written to the file, or printed.
    pub exported: u64,
    /// Refused by `submit` because this output's queue was full.
    pub dropped_queue_full: u64,
    /// Given up on after a permanent failure or the last retry.
    pub dropped_export_failed: u64,
    /// Refused by the collector in a partial success.
    pub rejected_by_collector: u64,
    /// Failed attempts (requests), retries included.
    pub export_errors: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// Terminal: traces printed before they were quiet, to bound memory.
    pub traces_evicted: u64,
    /// Warnings logged about failing exports (rate-limited: one per interval).
    pub failure_reports: u64,
    pub queue_depth: usize,
    pub queue_capacity: usize,
}

/// A snapshot of [`super::Exporter`]'s counters. Totals add up the outputs, so with two
/// outputs one span can count twice (once per output).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Spans passed to `submit`.
    pub submitted: u64,
    pub exported: u64,
    pub dropped_queue_full: u64,
    pub dropped_export_failed: u64,
    pub export_errors: u64,
    /// Spans waiting in the queues (a batch being exported is not counted).
    pub queue_depth: usize,
    pub sinks: Vec<SinkStats>,
}

impl ExportStats {
    pub fn new(submitted: u64, sinks: Vec<SinkStats>) -> Self {
        let sum = |f: fn(&SinkStats) -> u64| sinks.iter().map(f).sum();
        Self {
            submitted,
            exported: sum(|s| s.exported),
            dropped_queue_full: sum(|s| s.dropped_queue_full),
            dropped_export_failed: sum(|s| s.dropped_export_failed),
            export_errors: sum(|s| s.export_errors),
            queue_depth: sinks.iter().map(|s| s.queue_depth).sum(),
            sinks,
        }
    }

    pub fn sink(&self, name: &str) -> Option<&SinkStats> {
        self.sinks.iter().find(|s| s.sink == name)
    }
}
