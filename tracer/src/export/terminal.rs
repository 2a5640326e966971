//! The default output: finished traces printed to stdout as waterfalls. Spans are held per
//! trace until the trace has been quiet for a while, within fixed bounds.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, interval};

use super::config::TerminalConfig;
use super::otlp::ResourceBuilder;
use super::stats::SinkCounters;
use super::waterfall::{RenderOptions, render};
use crate::span::{Span, TraceId};

/// Spans of traces not printed yet, bounded in traces and in spans per trace.
pub struct Assembler {
    config: TerminalConfig,
    traces: HashMap<TraceId, Pending>,
    /// Spans in `traces`.
    held: usize,
}

struct Pending {
    spans: Vec<Arc<Span>>,
    last_seen: Instant,
}

/// A trace ready to print, and whether it was cut short to bound memory.
pub type Ready = (Vec<Arc<Span>>, bool);

impl Assembler {
    pub fn new(config: TerminalConfig) -> Self {
        Self {
            config,
            traces: HashMap::new(),
            held: 0,
        }
    }

    /// Adds a span; returns traces that must be printed now to stay within bounds.
    pub fn add(&mut self, span: Arc<Span>, now: Instant) -> Vec<Ready> {
        let mut ready = Vec::new();
        let id = span.trace_id;
        if !self.traces.contains_key(&id) && self.traces.len() >= self.config.max_traces {
            ready.extend(self.evict_oldest());
        }
        let pending = self.traces.entry(id).or_insert_with(|| Pending {
            spans: Vec::new(),
            last_seen: now,
        });
        pending.spans.push(span);
        pending.last_seen = now;
        self.held += 1;
        if pending.spans.len() >= self.config.max_spans_per_trace {
            ready.push((self.remove(&id), true));
        }
        while self.held > self.config.max_spans {
            ready.extend(self.evict_oldest());
        }
        ready
    }

    /// The least recently seen trace, printed early.
    fn evict_oldest(&mut self) -> Option<Ready> {
        let (id, _) = self.traces.iter().min_by_key(|(_, p)| p.last_seen)?;
        let id = *id;
        Some((self.remove(&id), true))
    }

    fn remove(&mut self, id: &TraceId) -> Vec<Arc<Span>> {
        let spans = self.traces.remove(id).map(|p| p.spans).unwrap_or_default();
        self.held -= spans.len();
        spans
    }

    /// Removes the traces quiet for the quiet period, oldest first.
    pub fn take_quiet(&mut self, now: Instant) -> Vec<Ready> {
        let quiet = self.config.quiet_period;
        let mut ids: Vec<(Instant, TraceId)> = self
            .traces
            .iter()
            .filter(|(_, p)| now.duration_since(p.last_seen) >= quiet)
            .map(|(id, p)| (p.last_seen, *id))
            .collect();
        ids.sort();
        ids.into_iter()
            .map(|(_, id)| (self.remove(&id), false))
            .collect()
    }

    /// Removes everything (shutdown), oldest first.
    pub fn take_all(&mut self) -> Vec<Ready> {
        self.held = 0;
        let mut all: Vec<Pending> = self.traces.drain().map(|(_, p)| p).collect();
        all.sort_by_key(|p| p.last_seen);
        all.into_iter().map(|p| (p.spans, false)).collect()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.traces.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.traces.is_empty()
    }
}

/// Runs the terminal output until its queue is closed, then prints everything pending.
pub async fn run(
    config: TerminalConfig,
    rx: mpsc::Receiver<Arc<Span>>,
    resources: Arc<ResourceBuilder>,
    counters: Arc<SinkCounters>,
) {
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    // tokio's stdout writes on a blocking thread: a stalled terminal or pipe stalls only this
    // task, whose queue then fills and drops, and never a runtime worker or the capture.
    let stdout = tokio::io::stdout();
    run_with_writer(config, rx, resources, counters, stdout, color).await
}

/// [`run`] with the destination and colour choice given (tests).
pub async fn run_with_writer(
    config: TerminalConfig,
    mut rx: mpsc::Receiver<Arc<Span>>,
    resources: Arc<ResourceBuilder>,
    counters: Arc<SinkCounters>,
    mut out: impl AsyncWrite + Unpin,
    color: bool,
) {
    let opts = RenderOptions {
        color,
        ..RenderOptions::default()
    };
    let service = |p: &crate::process::ProcessMeta| resources.service_name(p).to_string();
    let mut print = async |ready: Vec<Ready>| {
        for (spans, evicted) in ready {
            if evicted {
                SinkCounters::add(&counters.traces_evicted, 1);
            }
            let text = render(&spans, &service, &opts) + "\n";
            let written = out.write_all(text.as_bytes()).await;
            if written.and(out.flush().await).is_ok() {
                SinkCounters::add(&counters.exported, spans.len() as u64);
            } else {
                SinkCounters::add(&counters.export_errors, 1);
                SinkCounters::add(&counters.dropped_export_failed, spans.len() as u64);
            }
        }
    };
    let mut assembler = Assembler::new(config.clone());
    let mut tick = interval((config.quiet_period / 4).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            span = rx.recv() => match span {
                Some(span) => print(assembler.add(span, Instant::now())).await,
                None => break,
            },
            _ = tick.tick() => print(assembler.take_quiet(Instant::now())).await,
        }
    }
    print(assembler.take_all()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testutil::{process, span};

    fn config() -> TerminalConfig {
        TerminalConfig {
            quiet_period: Duration::from_secs(1),
            max_traces: 2,
            max_spans_per_trace: 3,
            max_spans: 5,
            max_queue_size: 10,
        }
    }

    fn ids(ready: &[Ready]) -> Vec<(u8, usize, bool)> {
        ready
            .iter()
            .map(|(spans, evicted)| (spans[0].trace_id[0], spans.len(), *evicted))
            .collect()
    }

    #[test]
    fn prints_a_trace_once_it_is_quiet() {
        let p = process(1, "svc");
        let t0 = Instant::now();
        let mut a = Assembler::new(config());
        assert!(
            a.add(Arc::new(span(&p, 1, 1, None, "a", 0, 1)), t0)
                .is_empty()
        );
        assert!(
            a.add(
                Arc::new(span(&p, 1, 2, Some(1), "b", 0, 1)),
                t0 + Duration::from_millis(800)
            )
            .is_empty()
        );
        // Quiet is measured from the last span, not the first.
        assert!(a.take_quiet(t0 + Duration::from_millis(1500)).is_empty());
        let ready = a.take_quiet(t0 + Duration::from_millis(1800));
        assert_eq!(ids(&ready), vec![(1, 2, false)]);
        assert!(a.is_empty());
    }

    #[test]
    fn bounds_traces_and_spans_per_trace() {
        let p = process(1, "svc");
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut a = Assembler::new(config());
        a.add(Arc::new(span(&p, 1, 1, None, "a", 0, 1)), at(0));
        a.add(Arc::new(span(&p, 2, 1, None, "a", 0, 1)), at(1));
        // A third trace evicts the least recently seen one (trace 1).
        let ready = a.add(Arc::new(span(&p, 3, 1, None, "a", 0, 1)), at(2));
        assert_eq!(ids(&ready), vec![(1, 1, true)]);
        assert_eq!(a.len(), 2);
        // A trace reaching the span cap is printed at once.
        a.add(Arc::new(span(&p, 2, 2, None, "a", 0, 1)), at(3));
        let ready = a.add(Arc::new(span(&p, 2, 3, None, "a", 0, 1)), at(4));
        assert_eq!(ids(&ready), vec![(2, 3, true)]);
        assert_eq!(ids(&a.take_all()), vec![(3, 1, false)]);
    }

    #[test]
    fn bounds_spans_held_in_all() {
        let p = process(1, "svc");
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut a = Assembler::new(TerminalConfig {
            max_traces: 10,
            max_spans_per_trace: 10,
            ..config()
        });
        for (i, trace) in [1, 1, 2, 2, 3].into_iter().enumerate() {
            let s = Arc::new(span(&p, trace, i as u8, None, "a", 0, 1));
            assert!(a.add(s, at(i as u64)).is_empty());
        }
        // A sixth span held: the least recently seen trace (1) goes.
        let ready = a.add(Arc::new(span(&p, 4, 9, None, "a", 0, 1)), at(9));
        assert_eq!(ids(&ready), vec![(1, 2, true)]);
        assert_eq!((a.held, a.len()), (4, 3));
    }
}
