//! What the receiver got, flattened for easy assertions.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

/// One export request as it arrived.
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    /// HTTP headers or gRPC metadata (lowercase names; non-text values left out).
    pub headers: BTreeMap<String, String>,
    pub request: ExportTraceServiceRequest,
    /// The request's protobuf bytes. OTLP/HTTP: the body exactly as sent (after undoing any
    /// gzip). OTLP/gRPC: the decoded message encoded again (tonic decodes before the service
    /// sees it), so fields unknown to opentelemetry-proto would be missing.
    pub raw: Vec<u8>,
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
    /// Arrays, maps, bytes: shown with `Debug`.
    Other(String),
}

impl AttrValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            AttrValue::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// One span with its resource and scope folded in.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedSpan {
    /// The resource's `service.name` ("" if none).
    pub service_name: String,
    pub resource: BTreeMap<String, AttrValue>,
    pub scope_name: String,
    pub scope_version: String,
    /// Lowercase hex.
    pub trace_id: String,
    pub span_id: String,
    /// "" for a root span.
    pub parent_span_id: String,
    pub trace_state: String,
    pub flags: u32,
    pub name: String,
    /// OTLP `SpanKind` number (2 server, 3 client).
    pub kind: i32,
    pub attributes: BTreeMap<String, AttrValue>,
    /// OTLP `StatusCode` number (0 unset, 1 ok, 2 error).
    pub status_code: i32,
    pub status_message: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes.get(key)
    }

    pub fn resource_attr(&self, key: &str) -> Option<&AttrValue> {
        self.resource.get(key)
    }

    /// A string attribute, "" when absent (or not a string).
    pub fn str_attr(&self, key: &str) -> &str {
        self.attr(key).and_then(AttrValue::as_str).unwrap_or("")
    }

    /// An integer attribute, -1 when absent (or not an integer).
    pub fn int_attr(&self, key: &str) -> i64 {
        self.attr(key).and_then(AttrValue::as_int).unwrap_or(-1)
    }

    /// `url.path`, "" when absent.
    pub fn path(&self) -> &str {
        self.str_attr("url.path")
    }

    /// The resource's `process.pid`, -1 when absent.
    pub fn pid(&self) -> i64 {
        self.resource_attr("process.pid")
            .and_then(AttrValue::as_int)
            .unwrap_or(-1)
    }
}

/// The spans of `service` of OTLP kind `kind`.
pub fn spans_of(spans: &[ReceivedSpan], service: &str, kind: i32) -> Vec<ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.service_name == service && s.kind == kind)
        .cloned()
        .collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn attr_map(attrs: &[KeyValue]) -> BTreeMap<String, AttrValue> {
    attrs
        .iter()
        .map(|kv| (kv.key.clone(), value(kv.value.as_ref())))
        .collect()
}

fn value(v: Option<&AnyValue>) -> AttrValue {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => AttrValue::Str(s.clone()),
        Some(any_value::Value::IntValue(i)) => AttrValue::Int(*i),
        Some(any_value::Value::BoolValue(b)) => AttrValue::Bool(*b),
        Some(any_value::Value::DoubleValue(d)) => AttrValue::Double(*d),
        other => AttrValue::Other(format!("{other:?}")),
    }
}

/// Flattens requests into spans, in arrival order.
pub fn flatten(requests: &[ReceivedRequest]) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for rs in requests.iter().flat_map(|r| &r.request.resource_spans) {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| attr_map(&r.attributes))
            .unwrap_or_default();
        let service_name = resource
            .get("service.name")
            .and_then(AttrValue::as_str)
            .unwrap_or_default()
            .to_string();
        for ss in &rs.scope_spans {
            let scope = ss.scope.clone().unwrap_or_default();
            for s in &ss.spans {
                let status = s.status.clone().unwrap_or_default();
                out.push(ReceivedSpan {
                    service_name: service_name.clone(),
                    resource: resource.clone(),
                    scope_name: scope.name.clone(),
                    scope_version: scope.version.clone(),
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    trace_state: s.trace_state.clone(),
                    flags: s.flags,
                    name: s.name.clone(),
                    kind: s.kind,
                    attributes: attr_map(&s.attributes),
                    status_code: status.code,
                    status_message: status.message,
                    start_unix_nano: s.start_time_unix_nano,
                    end_unix_nano: s.end_time_unix_nano,
                });
            }
        }
    }
    out
}
