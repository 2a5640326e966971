//! The agent's own log about losses: once per interval while running, and a summary at exit.
//! Never a line per event, never silent.

use std::time::{Duration, Instant};

use tracer_common::Counter;

use crate::{capture::Capture, pipeline::Pipeline};

/// How often kernel drop counters are compared and reported.
const REPORT_EVERY: Duration = Duration::from_secs(10);

pub struct DropReporter {
    last: Instant,
    kernel: [u64; Counter::COUNT as usize],
}

impl DropReporter {
    pub fn new() -> Self {
        Self {
            last: Instant::now(),
            kernel: [0; Counter::COUNT as usize],
        }
    }

    pub fn maybe_report(&mut self, capture: &Capture) {
        if self.last.elapsed() < REPORT_EVERY {
            return;
        }
        self.last = Instant::now();
        let now = capture.counters();
        let lost: Vec<String> = Counter::ALL
            .iter()
            .filter(|c| c.is_drop())
            .filter_map(|c| {
                let delta = now[*c as usize] - self.kernel[*c as usize];
                (delta > 0).then(|| format!("{}={delta}", c.name()))
            })
            .collect();
        if !lost.is_empty() {
            tracing::warn!(
                "kernel capture lost events in the last {}s: {}",
                REPORT_EVERY.as_secs(),
                lost.join(" ")
            );
        }
        self.kernel = now;
    }
}

pub fn final_report(capture: &Capture, pipeline: &Pipeline) {
    let kernel = capture.counters();
    let counters: Vec<String> = Counter::ALL
        .iter()
        .map(|c| format!("{}={}", c.name(), kernel[*c as usize]))
        .collect();
    let stats = pipeline.stats();
    tracing::info!(
        "capture: {}; spans finished={} abandoned={} discarded={} peer_links={} \
         thread_links={} sampled_out={}; connections opened={} unknown_protocol={} \
         lost_resyncs={}; parse resyncs={} skipped_bytes={}",
        counters.join(" "),
        stats.stitch.spans_finished,
        stats.stitch.abandoned,
        stats.stitch.discarded,
        stats.stitch.peer_links,
        stats.stitch.thread_links,
        stats.sampled_out,
        stats.connections.opened,
        stats.connections.unknown_protocol,
        stats.connections.lost_resyncs,
        stats.connections.parse.resyncs,
        stats.connections.parse.skipped_bytes,
    );
}
