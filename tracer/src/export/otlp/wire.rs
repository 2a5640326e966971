//! Spans → the protobuf bytes of an OTLP `ExportTraceServiceRequest`, written directly.
//!
//! Why by hand: going through opentelemetry-proto's structs copies every string of every span
//! into a message tree, encodes it (prost walks nested lengths again at each level), then
//! frees it; that was most of the agent's export cost. This writes the same bytes with prost's
//! wire-format primitives, field by field in prost's order. Only per-batch parts (Resource,
//! scope) still go through the structs. The tests compare the bytes with prost's encoding of
//! `build_request`.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use super::{ResourceBuilder, SCOPE_NAME, VERSION, group_by_process, otlp_kind};
use crate::export::clock::WallClock;
use crate::span::{Attribute, Span, Value};

// Field numbers (opentelemetry/proto/trace/v1/trace.proto and common.proto).
const REQUEST_RESOURCE_SPANS: u32 = 1;
const RESOURCE_SPANS_RESOURCE: u32 = 1;
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
const SCOPE_SPANS_SCOPE: u32 = 1;
const SCOPE_SPANS_SPANS: u32 = 2;
const SPAN_TRACE_ID: u32 = 1;
const SPAN_SPAN_ID: u32 = 2;
const SPAN_TRACE_STATE: u32 = 3;
const SPAN_PARENT_SPAN_ID: u32 = 4;
const SPAN_FLAGS: u32 = 16;
const SPAN_NAME: u32 = 5;
const SPAN_KIND: u32 = 6;
const SPAN_START: u32 = 7;
const SPAN_END: u32 = 8;
const SPAN_ATTRIBUTES: u32 = 9;
const SPAN_STATUS: u32 = 15;
const STATUS_MESSAGE: u32 = 2;
const STATUS_CODE: u32 = 3;
const KEY_VALUE_KEY: u32 = 1;
const KEY_VALUE_VALUE: u32 = 2;
const ANY_STRING: u32 = 1;
const ANY_BOOL: u32 = 2;
const ANY_INT: u32 = 3;
const STATUS_CODE_ERROR: u64 = StatusCode::Error as u64;

/// The encoded request for `spans`, grouped by process like `build_request`.
pub fn encode_request(
    spans: &[Arc<Span>],
    resources: &ResourceBuilder,
    clock: &WallClock,
) -> Vec<u8> {
    let scope = InstrumentationScope {
        name: SCOPE_NAME.to_string(),
        version: VERSION.to_string(),
        ..Default::default()
    };
    let scope_len = scope.encoded_len();
    let mut out = Vec::with_capacity(spans.len() * 400 + 1024);
    for (process, group) in group_by_process(spans) {
        let resource = resources.resource(process);
        // A process's spans take 16 KiB to 2 MiB: a length of three varint bytes.
        put_measured(REQUEST_RESOURCE_SPANS, 3, &mut out, |out| {
            put_len_prefix(RESOURCE_SPANS_RESOURCE, resource.encoded_len(), out);
            resource.encode_raw(out);
            put_measured(RESOURCE_SPANS_SCOPE_SPANS, 3, out, |out| {
                put_len_prefix(SCOPE_SPANS_SCOPE, scope_len, out);
                scope.encode_raw(out);
                for span in group {
                    // A span takes 128 bytes to 16 KiB: two varint bytes.
                    put_measured(SCOPE_SPANS_SPANS, 2, out, |out| put_span(span, clock, out));
                }
            });
        });
    }
    out
}

/// A length-delimited field whose length is known once `write` has written its bytes. Room
/// for `guess` varint bytes of length is left before them; when the length takes another
/// size, the bytes move. Why not measure first: computing each span's length before writing
/// it was a third of the encoder's time.
fn put_measured(tag: u32, guess: usize, out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    encode_key(tag, WireType::LengthDelimited, out);
    let at = out.len();
    out.resize(at + guess, 0);
    write(out);
    let len = (out.len() - at - guess) as u64;
    let mut prefix = [0u8; 10];
    encode_varint(len, &mut &mut prefix[..]);
    let prefix = &prefix[..encoded_len_varint(len)];
    if prefix.len() == guess {
        out[at..at + guess].copy_from_slice(prefix);
    } else {
        out.splice(at..at + guess, prefix.iter().copied());
    }
}

/// Length of a length-delimited field holding `len` bytes: key, length, bytes.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_len_prefix(tag: u32, len: usize, out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

fn put_bytes(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    put_len_prefix(tag, bytes.len(), out);
    out.extend_from_slice(bytes);
}

/// proto3 scalars are left out when they hold their default value.
fn nonempty_len(tag: u32, len: usize) -> usize {
    if len == 0 { 0 } else { field_len(tag, len) }
}

fn put_nonempty(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    if !bytes.is_empty() {
        put_bytes(tag, bytes, out);
    }
}

fn kind(span: &Span) -> u64 {
    otlp_kind(span.kind) as u64
}

fn status_len(span: &Span) -> usize {
    match &span.error {
        Some(message) => {
            nonempty_len(STATUS_MESSAGE, message.len())
                + key_len(STATUS_CODE)
                + encoded_len_varint(STATUS_CODE_ERROR)
        }
        None => 0,
    }
}

fn any_value_len(value: &Value) -> usize {
    match value {
        // A oneof member is written even when it holds its type's default.
        Value::Str(s) => field_len(ANY_STRING, s.len()),
        Value::Bool(_) => key_len(ANY_BOOL) + 1,
        Value::Int(i) => key_len(ANY_INT) + encoded_len_varint(*i as u64),
    }
}

fn key_value_len(a: &Attribute) -> usize {
    nonempty_len(KEY_VALUE_KEY, a.key.len()) + field_len(KEY_VALUE_VALUE, any_value_len(&a.value))
}

fn put_fixed64(tag: u32, v: u64, out: &mut Vec<u8>) {
    if v != 0 {
        encode_key(tag, WireType::SixtyFourBit, out);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn put_varint(tag: u32, v: u64, out: &mut Vec<u8>) {
    encode_key(tag, WireType::Varint, out);
    encode_varint(v, out);
}

/// The span's fields in the order prost writes them: by field number, so `flags` (16) last.
fn put_span(span: &Span, clock: &WallClock, out: &mut Vec<u8>) {
    put_bytes(SPAN_TRACE_ID, &span.trace_id, out);
    put_bytes(SPAN_SPAN_ID, &span.span_id, out);
    put_nonempty(SPAN_TRACE_STATE, span.trace_state.as_bytes(), out);
    if let Some(parent) = &span.parent_span_id {
        put_bytes(SPAN_PARENT_SPAN_ID, parent, out);
    }
    put_nonempty(SPAN_NAME, span.name.as_bytes(), out);
    put_varint(SPAN_KIND, kind(span), out);
    put_fixed64(SPAN_START, clock.to_unix_nanos(span.start_mono_ns), out);
    put_fixed64(SPAN_END, clock.to_unix_nanos(span.end_mono_ns), out);
    for a in &span.attributes {
        put_len_prefix(SPAN_ATTRIBUTES, key_value_len(a), out);
        put_nonempty(KEY_VALUE_KEY, a.key.as_bytes(), out);
        put_len_prefix(KEY_VALUE_VALUE, any_value_len(&a.value), out);
        match &a.value {
            Value::Str(s) => put_bytes(ANY_STRING, s.as_bytes(), out),
            Value::Bool(b) => put_varint(ANY_BOOL, u64::from(*b), out),
            Value::Int(i) => put_varint(ANY_INT, *i as u64, out),
        }
    }
    put_len_prefix(SPAN_STATUS, status_len(span), out);
    if let Some(message) = &span.error {
        put_nonempty(STATUS_MESSAGE, message.as_bytes(), out);
        put_varint(STATUS_CODE, STATUS_CODE_ERROR, out);
    }
    if span.trace_flags != 0 {
        encode_key(SPAN_FLAGS, WireType::ThirtyTwoBit, out);
        out.extend_from_slice(&u32::from(span.trace_flags).to_le_bytes());
    }
}

#[cfg(test)]
mod tests;
