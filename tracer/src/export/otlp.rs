//! Spans → OTLP protobuf messages: one `Resource` per traced process.

use std::sync::Arc;

// Keys are pids and start times: a fast hash.
use foldhash::{HashMap, HashMapExt};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{self as otlp, ResourceSpans, ScopeSpans};

use super::clock::WallClock;
use super::config::ResourceConfig;
use crate::process::ProcessMeta;
use crate::span::{Span, SpanKind, Value};

pub mod wire;

pub const SCOPE_NAME: &str = "tracer";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Builds each process's Resource from its [`ProcessMeta`], the host and the OTEL_* settings.
///
/// Precedence, highest first:
/// 1. facts about the process (`process.*`, `service.instance.id`, `container.id`, its pod's
///    `k8s.*`) and `telemetry.sdk.*`: a host-wide variable cannot be right for every process;
/// 2. `service.name`: an operator-set per-process name, then `OTEL_SERVICE_NAME`, then
///    `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, then the Kubernetes workload's name, then
///    the executable name;
/// 3. other `OTEL_RESOURCE_ATTRIBUTES` keys (they may override `host.name`);
/// 4. `host.name` as the agent sees it.
#[derive(Debug)]
pub struct ResourceBuilder {
    host_name: String,
    config: ResourceConfig,
}

impl ResourceBuilder {
    pub fn new(host_name: String, config: ResourceConfig) -> Self {
        Self { host_name, config }
    }

    /// The `service.name` a process is exported under.
    pub fn service_name<'a>(&'a self, process: &'a ProcessMeta) -> &'a str {
        if process.service_name_is_explicit {
            return &process.service_name;
        }
        let from_attributes = || {
            self.config
                .attributes
                .iter()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v.as_str())
        };
        self.config
            .service_name
            .as_deref()
            .or_else(from_attributes)
            .unwrap_or(&process.service_name)
    }

    pub fn resource(&self, p: &ProcessMeta) -> Resource {
        let mut attrs: Vec<KeyValue> = Vec::with_capacity(24 + self.config.attributes.len());
        let mut put = |key: &str, value: any_value::Value| {
            if !attrs.iter().any(|a| a.key == key) {
                attrs.push(KeyValue {
                    key: key.to_string(),
                    value: Some(AnyValue { value: Some(value) }),
                    ..Default::default()
                });
            }
        };
        let s = |v: &str| any_value::Value::StringValue(v.to_string());
        put("service.name", s(self.service_name(p)));
        put("service.instance.id", s(&p.service_instance_id));
        put("process.pid", any_value::Value::IntValue(p.pid.into()));
        put("process.executable.name", s(&p.executable_name));
        // /proc/PID/exe and cmdline can be unreadable; an empty value would be a false fact.
        if !p.executable_path.is_empty() {
            put("process.executable.path", s(&p.executable_path));
        }
        if !p.command_line.is_empty() {
            put("process.command_line", s(&p.command_line));
        }
        if let Some(container) = &p.container {
            put("container.id", s(&container.id));
        }
        if let Some(pod) = &p.pod {
            for (key, value) in pod.attributes() {
                put(key, s(value));
            }
        }
        put("telemetry.sdk.name", s(SCOPE_NAME));
        put("telemetry.sdk.language", s("rust"));
        put("telemetry.sdk.version", s(VERSION));
        for (key, value) in &self.config.attributes {
            put(key, s(value));
        }
        put("host.name", s(&self.host_name));
        Resource {
            attributes: attrs,
            ..Default::default()
        }
    }
}

/// `spans` grouped by process, in order of first appearance.
pub fn group_by_process(spans: &[Arc<Span>]) -> Vec<(&ProcessMeta, Vec<&Span>)> {
    // A process incarnation is (pid, start time): two Arcs of the same process share a Resource.
    let mut index: HashMap<(u32, u64), usize> = HashMap::new();
    let mut groups: Vec<(&ProcessMeta, Vec<&Span>)> = Vec::new();
    // Spans of one process tend to come in runs: those skip the lookup.
    let mut last: Option<((u32, u64), usize)> = None;
    for span in spans {
        let p = &*span.process;
        let id = (p.pid, p.start_ticks);
        let i = match last {
            Some((last_id, i)) if last_id == id => i,
            _ => *index.entry(id).or_insert_with(|| {
                groups.push((p, Vec::new()));
                groups.len() - 1
            }),
        };
        last = Some((id, i));
        groups[i].1.push(span);
    }
    groups
}

/// One export request for `spans` as opentelemetry-proto messages (for OTLP/JSON; the
/// protobuf exports write the same request directly: see [`wire`]).
pub fn build_request(
    spans: &[Arc<Span>],
    resources: &ResourceBuilder,
    clock: &WallClock,
) -> ExportTraceServiceRequest {
    let scope = InstrumentationScope {
        name: SCOPE_NAME.to_string(),
        version: VERSION.to_string(),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: group_by_process(spans)
            .into_iter()
            .map(|(process, spans)| ResourceSpans {
                resource: Some(resources.resource(process)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope.clone()),
                    spans: spans.iter().map(|s| to_otlp_span(s, clock)).collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

/// The OTLP span kind of ours.
pub fn otlp_kind(kind: SpanKind) -> otlp::span::SpanKind {
    match kind {
        SpanKind::Server => otlp::span::SpanKind::Server,
        SpanKind::Client => otlp::span::SpanKind::Client,
    }
}

pub fn to_otlp_span(span: &Span, clock: &WallClock) -> otlp::Span {
    let kind = otlp_kind(span.kind);
    // Always present, even when UNSET: a `null` status in OTLP/JSON trips some readers.
    let status = match &span.error {
        Some(message) => otlp::Status {
            message: message.clone(),
            code: otlp::status::StatusCode::Error as i32,
        },
        None => otlp::Status::default(),
    };
    otlp::Span {
        trace_id: span.trace_id.to_vec(),
        span_id: span.span_id.to_vec(),
        trace_state: span.trace_state.clone(),
        parent_span_id: span.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags: span.trace_flags.into(),
        name: span.name.to_string(),
        kind: kind as i32,
        start_time_unix_nano: clock.to_unix_nanos(span.start_mono_ns),
        end_time_unix_nano: clock.to_unix_nanos(span.end_mono_ns),
        attributes: span
            .attributes
            .iter()
            .map(|a| KeyValue {
                key: a.key.to_string(),
                value: Some(AnyValue {
                    value: Some(match &a.value {
                        Value::Str(s) => any_value::Value::StringValue(s.to_string()),
                        Value::Int(i) => any_value::Value::IntValue(*i),
                        Value::Bool(b) => any_value::Value::BoolValue(*b),
                    }),
                }),
                ..Default::default()
            })
            .collect(),
        status: Some(status),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
