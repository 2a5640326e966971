//! The agent's self-metrics: every counter and table size, gathered in one list that both
//! `tracer status` and the Prometheus endpoint (`--metrics-addr`, off by default) show.
//!
//! The endpoint is answered by the agent's main loop, like the control socket: one snapshot
//! per scrape, never a lock on the data path.

use std::{convert::Infallible, net::SocketAddr};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request as HttpRequest, Response as HttpResponse, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
};
use tracer_common::Counter;

use super::control_server::Call;
use crate::{
    control::{
        Request, Response,
        protocol::{Metric, MetricKind},
    },
    export::ExportStats,
    pipeline::{PipelineStats, PipelineTables},
};

/// What the metrics are computed from: one snapshot of every stage.
pub struct Sources<'a> {
    pub kernel: &'a [u64; Counter::COUNT as usize],
    pub pipeline: &'a PipelineStats,
    pub tables: PipelineTables,
    pub export: &'a ExportStats,
    pub traced_processes: usize,
    /// Entries of the kernel's enabled-process map.
    pub kernel_processes: usize,
    pub kernel_sockets: usize,
    pub uptime_seconds: u64,
}

pub fn collect(s: &Sources) -> Vec<Metric> {
    let mut out = Vec::new();
    let mut add = |name: &str, help: &str, kind, labels: &[(&str, &str)], value: u64| {
        out.push(Metric {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        })
    };
    use MetricKind::{Counter as C, Gauge as G};
    add(
        "tracer_uptime_seconds",
        "Seconds since the agent started.",
        G,
        &[],
        s.uptime_seconds,
    );

    // Kernel: events out, drops by cause, and the other counters (one family each, its
    // samples adjacent as the renderer needs).
    let kernel = |c: &Counter| (c.name(), s.kernel[*c as usize]);
    let events = [Counter::DataEvents, Counter::ControlEvents];
    for (name, value) in events.iter().map(kernel) {
        let kind = name.trim_end_matches("_events");
        add(
            "tracer_kernel_events",
            "Records the kernel programs sent to the agent, by kind.",
            C,
            &[("kind", kind)],
            value,
        );
    }
    for (name, value) in Counter::ALL.iter().filter(|c| c.is_drop()).map(kernel) {
        add(
            "tracer_kernel_drops",
            "Events the kernel programs could not deliver whole, by cause.",
            C,
            &[("cause", name)],
            value,
        );
    }
    let others = Counter::ALL
        .iter()
        .filter(|c| !c.is_drop() && !events.contains(c));
    for (name, value) in others.map(kernel) {
        add(
            "tracer_kernel_counter",
            "Other kernel-side counts (truncated payloads, traceparent injection, ...).",
            C,
            &[("name", name)],
            value,
        );
    }

    // Userspace tables: what memory grows with.
    let tables = [
        ("processes", s.traced_processes),
        ("kernel_processes", s.kernel_processes),
        ("kernel_sockets", s.kernel_sockets),
        ("connections", s.tables.connections),
        ("pending_spans", s.tables.pending_spans),
        ("waiting_peers", s.tables.waiting_peers),
    ];
    for (table, size) in tables {
        add(
            "tracer_table_entries",
            "Entries held now, per table (each bounded; evictions are counted).",
            G,
            &[("table", table)],
            size as u64,
        );
    }

    let p = s.pipeline;
    let c = &p.connections;
    let st = &p.stitch;
    let counters: [(&str, &str, u64); 18] = [
        ("records", "Ring-buffer records decoded.", p.records),
        (
            "untraced_events",
            "Records of processes no longer traced (still in the ring when tracing stopped).",
            p.untraced_events,
        ),
        (
            "decode_errors",
            "Records that could not be decoded.",
            p.decode_errors,
        ),
        ("connections_opened", "Connections seen opening.", c.opened),
        (
            "connections_evicted",
            "Connections evicted from a full table.",
            c.evicted,
        ),
        (
            "connections_unknown_protocol",
            "Connections in no supported protocol.",
            c.unknown_protocol,
        ),
        (
            "connections_lost_resyncs",
            "Connections reset after kernel data loss.",
            c.lost_resyncs,
        ),
        (
            "parse_resyncs",
            "Times a parser skipped garbage to the next message.",
            c.parse.resyncs,
        ),
        (
            "parse_skipped_bytes",
            "Bytes skipped while resynchronising.",
            c.parse.skipped_bytes,
        ),
        (
            "parse_oversized",
            "Message heads larger than the buffering limit.",
            c.parse.oversized,
        ),
        (
            "spans_started",
            "Requests that started a span.",
            st.spans_started,
        ),
        (
            "spans_finished",
            "Spans ended and handed to sampling.",
            st.spans_finished,
        ),
        (
            "spans_sampled_out",
            "Spans the sampler dropped (by design).",
            p.sampled_out,
        ),
        (
            "requests_abandoned",
            "Requests that got no response.",
            st.abandoned,
        ),
        (
            "spans_evicted",
            "Started spans dropped because too many were pending.",
            st.evicted,
        ),
        (
            "responses_orphaned",
            "Responses whose request was never seen.",
            st.orphan_responses,
        ),
        (
            "spans_discarded",
            "Open requests dropped when tracing was turned off.",
            st.discarded,
        ),
        (
            "spans_submitted",
            "Spans handed to the outputs; each output exports, drops (counted) or queues them.",
            s.export.submitted,
        ),
    ];
    for (name, help, value) in counters {
        add(&format!("tracer_{name}"), help, C, &[], value);
    }

    for sink in &s.export.sinks {
        let name = sink.sink;
        add(
            "tracer_spans_exported",
            "Spans delivered, per output.",
            C,
            &[("sink", name)],
            sink.exported,
        );
        for (cause, value) in [
            ("queue_full", sink.dropped_queue_full),
            ("export_failed", sink.dropped_export_failed),
            ("rejected_by_collector", sink.rejected_by_collector),
        ] {
            add(
                "tracer_spans_dropped",
                "Spans an output lost, by cause.",
                C,
                &[("sink", name), ("cause", cause)],
                value,
            );
        }
        add(
            "tracer_export_errors",
            "Failed export attempts.",
            C,
            &[("sink", name)],
            sink.export_errors,
        );
        add(
            "tracer_export_retries",
            "Export attempts that were retries.",
            C,
            &[("sink", name)],
            sink.retries,
        );
        add(
            "tracer_export_queue_depth",
            "Spans waiting in an output's queue.",
            G,
            &[("sink", name)],
            sink.queue_depth as u64,
        );
        add(
            "tracer_export_queue_capacity",
            "Capacity of an output's queue.",
            G,
            &[("sink", name)],
            sink.queue_capacity as u64,
        );
    }
    out
}

/// The metrics in the OpenMetrics text format (which Prometheus scrapes).
pub fn render(metrics: &[Metric]) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(metrics.to_vec())));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

#[derive(Debug)]
struct Snapshot(Vec<Metric>);

impl prometheus_client::collector::Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut i = 0;
        while i < self.0.len() {
            // Samples of one family are adjacent (collect() emits them so).
            let first = &self.0[i];
            let family_len = self.0[i..]
                .iter()
                .take_while(|m| m.name == first.name)
                .count();
            let metric_type = match first.kind {
                MetricKind::Counter => MetricType::Counter,
                MetricKind::Gauge => MetricType::Gauge,
            };
            let mut family =
                encoder.encode_descriptor(&first.name, &first.help, None, metric_type)?;
            for metric in &self.0[i..i + family_len] {
                let sample = family.encode_family(&metric.labels)?;
                match metric.kind {
                    MetricKind::Counter => ConstCounter::new(metric.value).encode(sample)?,
                    MetricKind::Gauge => ConstGauge::new(metric.value as i64).encode(sample)?,
                }
            }
            i += family_len;
        }
        Ok(())
    }
}

/// Binds the metrics endpoint (a startup error if the address is taken).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --metrics-addr {addr}"))
}

/// Serves `GET /metrics` until the agent stops, each scrape answered by the main loop.
pub async fn serve(listener: TcpListener, calls: mpsc::Sender<Call>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let calls = calls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| scrape(req, calls.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn scrape(
    req: HttpRequest<hyper::body::Incoming>,
    calls: mpsc::Sender<Call>,
) -> Result<HttpResponse<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET || req.uri().path() != "/metrics" {
        return Ok(answer(
            StatusCode::NOT_FOUND,
            "text/plain",
            "only GET /metrics\n".into(),
        ));
    }
    let (reply, answer_rx) = oneshot::channel();
    let report = match calls.send((Request::Status, reply)).await {
        Ok(()) => answer_rx.await.ok(),
        Err(_) => None,
    };
    Ok(match report {
        Some(Response::Status(report)) => answer(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(&report.metrics),
        ),
        _ => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "the agent is shutting down\n".into(),
        ),
    })
}

fn answer(status: StatusCode, content_type: &str, body: String) -> HttpResponse<Full<Bytes>> {
    let mut response = HttpResponse::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(name: &str, kind: MetricKind, labels: &[(&str, &str)], value: u64) -> Metric {
        Metric {
            name: name.into(),
            help: "help".into(),
            kind,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    #[test]
    fn renders_families_with_labels_in_the_openmetrics_format() {
        let text = render(&[
            metric(
                "tracer_kernel_drops",
                MetricKind::Counter,
                &[("cause", "ring_full")],
                3,
            ),
            metric(
                "tracer_kernel_drops",
                MetricKind::Counter,
                &[("cause", "read_fault")],
                0,
            ),
            metric(
                "tracer_table_entries",
                MetricKind::Gauge,
                &[("table", "a\"b")],
                7,
            ),
        ]);
        assert!(
            text.contains("# TYPE tracer_kernel_drops counter\n"),
            "{text}"
        );
        assert!(
            text.contains("tracer_kernel_drops_total{cause=\"ring_full\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("tracer_kernel_drops_total{cause=\"read_fault\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE tracer_table_entries gauge\n"),
            "{text}"
        );
        // Label values are escaped.
        assert!(
            text.contains("tracer_table_entries{table=\"a\\\"b\"} 7\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE tracer_kernel_drops ").count(),
            1,
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn every_kernel_drop_cause_is_a_labelled_sample() {
        let kernel = [0u64; Counter::COUNT as usize];
        let metrics = collect(&Sources {
            kernel: &kernel,
            pipeline: &PipelineStats::default(),
            tables: PipelineTables::default(),
            export: &ExportStats::default(),
            traced_processes: 0,
            kernel_processes: 0,
            kernel_sockets: 0,
            uptime_seconds: 1,
        });
        let mut causes: Vec<&str> = metrics
            .iter()
            .filter(|m| m.name == "tracer_kernel_drops")
            .map(|m| m.labels[0].1.as_str())
            .collect();
        causes.sort_unstable();
        // Written out: a drop counter added to the kernel must be added here on purpose.
        assert_eq!(
            causes,
            [
                "args_map_full",
                "mmsg_limit",
                "process_map_full",
                "ring_full",
                "socket_map_full"
            ]
        );
        // Families are contiguous, as the renderer needs.
        let mut seen = std::collections::HashSet::new();
        let mut last = "";
        for m in &metrics {
            if m.name != last {
                assert!(seen.insert(m.name.clone()), "{} split", m.name);
                last = &m.name;
            }
        }
    }
}
