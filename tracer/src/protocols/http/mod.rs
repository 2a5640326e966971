//! HTTP semantics shared by the HTTP/1 and HTTP/2 parsers: trace context headers, route
//! templates, URL handling and the OpenTelemetry attributes of a request and its response.

pub mod route;
pub mod semconv;
pub mod trace_context;
pub mod url;

/// Strips optional whitespace (RFC 9110 OWS: spaces and tabs only) from both ends.
pub fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}
