//! HTTP semantics shared by the HTTP/1 and HTTP/2 parsers: trace context headers, route
//! templates, URL handling and the OpenTelemetry attributes of a request and its response.

pub mod route;
pub mod semconv;
pub mod trace_context;
pub mod url;
