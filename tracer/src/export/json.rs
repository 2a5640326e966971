//! OTLP/JSON encoding (one `ExportTraceServiceRequest` per line, as the Collector's
//! `otlpjsonfile` receiver and file exporter use).
//!
//! opentelemetry-proto's `with-serde` derives already follow the OTLP/JSON rules where it
//! matters (checked by the tests below): lowerCamelCase keys, hex trace/span ids, enums as
//! integers, 64-bit integers as strings. What it does not do is leave out unset message
//! fields: an absent `Option` becomes `null`. That is legal proto3 JSON, but readers that are
//! not proto3 JSON parsers (hand-written decoders, jq scripts) trip on it, so our spans always
//! set `resource`, `scope`, `status` and attribute values; the tests hold that line.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

/// The request as one line of JSON, newline included.
pub fn to_json_line(req: &ExportTraceServiceRequest) -> serde_json::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    Ok(line)
}

#[cfg(test)]
mod tests;
