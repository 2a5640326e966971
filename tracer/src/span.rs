//! The span model: what protocol parsing hands to stitching, and stitching to export.

use std::sync::Arc;

pub use compact_str::{CompactString, ToCompactString};

use crate::process::ProcessMeta;

/// An attribute value (the subset of OTLP `AnyValue` the tracer produces).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Up to 24 bytes inline: no allocation, and no pointer to chase when the span, long
    /// out of cache after its settle window, is encoded.
    Str(CompactString),
    Int(i64),
    Bool(bool),
}

/// A key/value attribute. Keys are OpenTelemetry semantic-convention names.
#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    pub key: &'static str,
    pub value: Value,
}

impl Attribute {
    pub fn str(key: &'static str, value: impl Into<CompactString>) -> Self {
        Self {
            key,
            value: Value::Str(value.into()),
        }
    }

    pub fn int(key: &'static str, value: i64) -> Self {
        Self {
            key,
            value: Value::Int(value),
        }
    }
}

/// Finds an attribute's value by key.
pub fn find<'a>(attributes: &'a [Attribute], key: &str) -> Option<&'a Value> {
    attributes.iter().find(|a| a.key == key).map(|a| &a.value)
}

/// The side of a connection the traced process is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The process reads requests and writes responses.
    Server,
    /// The process writes requests and reads responses.
    Client,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
}

impl Role {
    /// The direction its requests travel in.
    pub fn request_direction(self) -> tracer_common::Direction {
        match self {
            Role::Server => tracer_common::Direction::Ingress,
            Role::Client => tracer_common::Direction::Egress,
        }
    }

    /// The direction its responses travel in.
    pub fn response_direction(self) -> tracer_common::Direction {
        match self {
            Role::Server => tracer_common::Direction::Egress,
            Role::Client => tracer_common::Direction::Ingress,
        }
    }
}

impl From<Role> for SpanKind {
    fn from(role: Role) -> Self {
        match role {
            Role::Server => SpanKind::Server,
            Role::Client => SpanKind::Client,
        }
    }
}

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

/// A W3C trace context (`traceparent` + `tracestate`) carried by a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: TraceId,
    /// The caller's span id (`parent-id` in the header).
    pub parent_id: SpanId,
    /// trace-flags; bit 0 is `sampled`.
    pub flags: u8,
    /// The combined `tracestate` value ("" if none or invalid).
    pub state: String,
}

/// A finished span, ready for sampling and export. Times are CLOCK_MONOTONIC nanoseconds
/// (kernel time); the exporter converts them to wall-clock time.
#[derive(Clone, Debug)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    /// W3C trace-flags (bit 0: sampled).
    pub trace_flags: u8,
    /// W3C tracestate, passed on unchanged from the incoming request (empty if none).
    pub trace_state: String,
    /// For a trace continued from a remote caller: the caller's sampled flag. None when the
    /// trace started in a traced process (the sampler decides from the trace id).
    pub remote_sampled: Option<bool>,
    pub kind: SpanKind,
    pub name: CompactString,
    pub start_mono_ns: u64,
    pub end_mono_ns: u64,
    /// `Some(description)` when the span's status is ERROR.
    pub error: Option<String>,
    pub attributes: Vec<Attribute>,
    /// The traced process: becomes the span's OTLP Resource.
    pub process: Arc<ProcessMeta>,
}

impl Span {
    pub fn duration_ns(&self) -> u64 {
        self.end_mono_ns.saturating_sub(self.start_mono_ns)
    }
}
