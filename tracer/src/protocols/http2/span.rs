//! Span names and attributes of HTTP/2 requests: gRPC after the OpenTelemetry RPC conventions
//! (<https://opentelemetry.io/docs/specs/semconv/rpc/grpc/>), plain HTTP through the shared
//! HTTP semantics.
//!
//! What a header block did not show is left out: a request whose `:method` or `:path` could not
//! be decoded gets no made-up name (`HTTP`, or its method alone), and a response whose status
//! could not be read gets no status and no error.

use super::fields::{Facts, GrpcStatus};
use crate::protocols::http::semconv::{self, ERROR_TYPE, NETWORK_PROTOCOL_VERSION};
use crate::protocols::http::{trace_context, url};
use crate::span::{Attribute, CompactString, Role, TraceContext};

pub const RPC_SYSTEM: &str = "rpc.system";
pub const RPC_SERVICE: &str = "rpc.service";
pub const RPC_METHOD: &str = "rpc.method";
pub const RPC_GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";

/// gRPC status codes that make a SERVER span an error (the OpenTelemetry gRPC conventions):
/// UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
const SERVER_ERRORS: [u32; 6] = [2, 4, 12, 13, 14, 15];

/// What a request head gives its span.
#[derive(Debug)]
pub struct RequestSpan {
    pub name: CompactString,
    pub attributes: Vec<Attribute>,
    pub context: Option<TraceContext>,
    pub fingerprint: u64,
    pub grpc: bool,
    /// Its method or path could not be read.
    pub unnamed: bool,
}

/// The span of the request whose head is `facts`, on HTTP/2 stream `stream`.
pub fn request(facts: &Facts, stream: u32, role: Role) -> RequestSpan {
    let method = facts.method.as_deref();
    // CONNECT has no :path; its target is :authority.
    let target = match (method, facts.path.as_deref()) {
        (_, Some(path)) => Some(path),
        (Some("CONNECT"), None) => facts.authority.as_deref(),
        (_, None) => None,
    };
    let authority = facts.authority.as_deref().or(facts.host.as_deref());
    let grpc = facts.grpc;
    let (name, attributes) = match target.and_then(grpc_method).filter(|_| grpc) {
        Some((service, rpc_method)) => grpc_span(service, rpc_method, authority, facts.scheme),
        None => {
            let (name, mut attributes) = semconv::request_span(
                &semconv::RequestHead {
                    method,
                    target,
                    host: authority.map(str::as_bytes),
                    user_agent: facts.user_agent.as_deref(),
                    scheme: facts.scheme,
                    version: "2",
                },
                role,
            );
            if grpc {
                attributes.insert(0, Attribute::str(RPC_SYSTEM, "grpc"));
            }
            (name, attributes)
        }
    };
    // At most two traceparent values are kept: two already make the context invalid.
    let traceparent: Vec<&[u8]> = facts.traceparent.iter().map(Vec::as_slice).collect();
    let tracestate: Vec<&[u8]> = facts.tracestate.iter().map(Vec::as_slice).collect();
    RequestSpan {
        name,
        attributes,
        context: trace_context::extract(&traceparent, &tracestate),
        fingerprint: fingerprint(method, facts.path.as_deref(), stream),
        grpc,
        unnamed: method.is_none() || target.is_none(),
    }
}

/// `/package.Service/Method` → (`package.Service`, `Method`): one slash-free, non-empty part
/// each, printable ASCII, and short enough to be a span name.
fn grpc_method(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let printable = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && !b"/?#".contains(&b))
    };
    (printable(service) && printable(method) && path.len() <= semconv::MAX_VALUE_LEN)
        .then_some((service, method))
}

fn grpc_span(
    service: &str,
    method: &str,
    authority: Option<&str>,
    scheme: Option<&'static str>,
) -> (CompactString, Vec<Attribute>) {
    let mut attributes = Vec::with_capacity(6);
    attributes.push(Attribute::str(RPC_SYSTEM, "grpc"));
    attributes.push(Attribute::str(RPC_SERVICE, service));
    attributes.push(Attribute::str(RPC_METHOD, method));
    if let Some((host, port)) = authority.and_then(url::split_authority) {
        attributes.push(Attribute::str(
            semconv::SERVER_ADDRESS,
            semconv::capped(host),
        ));
        let port = port.or(match scheme {
            Some("https") => Some(443),
            Some(_) => Some(80),
            None => None,
        });
        if let Some(port) = port {
            attributes.push(Attribute::int(semconv::SERVER_PORT, i64::from(port)));
        }
    }
    attributes.push(Attribute::str(NETWORK_PROTOCOL_VERSION, "2"));
    let mut name = CompactString::with_capacity(service.len() + 1 + method.len());
    name.push_str(service);
    name.push('/');
    name.push_str(method);
    (name, attributes)
}

/// FNV-1a over method, path and stream id: both ends of a connection decode the same values
/// from differently encoded blocks, and the stream id makes the match exact among the
/// concurrent streams of one connection. Unknown parts hash as `?`, which no method or path is.
fn fingerprint(method: Option<&str>, path: Option<&str>, stream: u32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let id = stream.to_be_bytes();
    let parts: [&[u8]; 6] = [
        b"h2 ",
        method.map_or(b"?", str::as_bytes),
        b" ",
        path.map_or(b"?", str::as_bytes),
        b" ",
        &id,
    ];
    for byte in parts.into_iter().flatten() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// What the tracer learnt of a response by its end.
#[derive(Clone, Copy, Debug, Default)]
pub struct ResponseFacts {
    pub grpc: bool,
    pub status: Option<u16>,
    pub grpc_status: Option<GrpcStatus>,
    /// Part of the response could not be read (a block cut or with unknown names, frames lost):
    /// a `grpc-status` not seen may be one not read.
    pub unsure: bool,
}

/// Attributes and error of a finished response, seen from `role`.
pub fn response(facts: &ResponseFacts, role: Role) -> (Vec<Attribute>, Option<String>) {
    if !facts.grpc {
        return match facts.status {
            Some(status) => semconv::response_outcome(status, role),
            None => (Vec::new(), None),
        };
    }
    let code = match facts.grpc_status {
        Some(GrpcStatus::Code(code)) => code,
        Some(GrpcStatus::Invalid) => {
            return (
                vec![Attribute::str(ERROR_TYPE, "_OTHER")],
                Some("invalid grpc-status".into()),
            );
        }
        None if facts.unsure => return (Vec::new(), None),
        None => {
            let mut attributes = Vec::with_capacity(2);
            let mut error = "missing grpc-status".to_string();
            if let Some(status) = facts.status.filter(|&s| s != 200) {
                attributes.push(Attribute::int(
                    semconv::HTTP_RESPONSE_STATUS_CODE,
                    i64::from(status),
                ));
                error = format!("missing grpc-status (HTTP {status})");
            }
            attributes.push(Attribute::str(ERROR_TYPE, "_OTHER"));
            return (attributes, Some(error));
        }
    };
    let mut attributes = vec![Attribute::int(RPC_GRPC_STATUS_CODE, i64::from(code))];
    let failed = match role {
        Role::Client => code != 0,
        Role::Server => SERVER_ERRORS.contains(&code),
    };
    if !failed {
        return (attributes, None);
    }
    attributes.push(Attribute::str(ERROR_TYPE, code.to_string()));
    (
        attributes,
        Some(format!("gRPC status {code} ({})", status_name(code))),
    )
}

fn status_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "not a gRPC status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::{Value, find};

    fn grpc_facts(path: &str) -> Facts {
        Facts {
            method: Some("POST".into()),
            path: Some(path.into()),
            authority: Some("orders.internal:50051".into()),
            scheme: Some("http"),
            grpc: true,
            request_pseudo: true,
            ..Facts::default()
        }
    }

    #[test]
    fn grpc_request_names_the_full_method() {
        let span = request(&grpc_facts("/shop.v1.Orders/Get"), 5, Role::Client);
        assert_eq!(span.name, "shop.v1.Orders/Get");
        assert_eq!(
            span.attributes,
            vec![
                Attribute::str(RPC_SYSTEM, "grpc"),
                Attribute::str(RPC_SERVICE, "shop.v1.Orders"),
                Attribute::str(RPC_METHOD, "Get"),
                Attribute::str("server.address", "orders.internal"),
                Attribute::int("server.port", 50051),
                Attribute::str("network.protocol.version", "2"),
            ]
        );
        assert!(span.grpc && !span.unnamed);
    }

    #[test]
    fn a_grpc_path_of_another_shape_is_named_as_http() {
        let span = request(&grpc_facts("/a/b/c"), 5, Role::Server);
        assert_eq!(span.name, "POST /a/b/c");
        assert_eq!(span.attributes[0], Attribute::str(RPC_SYSTEM, "grpc"));
        assert_eq!(
            find(&span.attributes, "url.path"),
            Some(&Value::Str("/a/b/c".into()))
        );
    }

    #[test]
    fn unknown_method_or_path_are_not_made_up() {
        let facts = Facts {
            path: Some("/users/7".into()),
            ..Facts::default()
        };
        let span = request(&facts, 3, Role::Server);
        assert_eq!(span.name, "HTTP /users/{id}");
        assert!(span.unnamed);
        assert_eq!(find(&span.attributes, "http.request.method"), None);
        let facts = Facts {
            method: Some("POST".into()),
            grpc: true,
            ..Facts::default()
        };
        let span = request(&facts, 3, Role::Server);
        assert_eq!(span.name, "POST");
        assert!(span.unnamed);
        assert_eq!(find(&span.attributes, RPC_SERVICE), None);
        // CONNECT needs no path.
        let facts = Facts {
            method: Some("CONNECT".into()),
            authority: Some("db:5432".into()),
            ..Facts::default()
        };
        let span = request(&facts, 3, Role::Client);
        assert_eq!(span.name, "CONNECT");
        assert!(!span.unnamed);
    }

    #[test]
    fn fingerprints_differ_by_stream_and_not_by_encoding() {
        let a = request(&grpc_facts("/s.S/M"), 1, Role::Client).fingerprint;
        let b = request(&grpc_facts("/s.S/M"), 1, Role::Server).fingerprint;
        let c = request(&grpc_facts("/s.S/M"), 3, Role::Client).fingerprint;
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(
            fingerprint(None, Some("/"), 1),
            fingerprint(Some("GET"), Some("/"), 1)
        );
    }

    #[test]
    fn grpc_status_rules_by_role() {
        let outcome = |code, role| {
            response(
                &ResponseFacts {
                    grpc: true,
                    status: Some(200),
                    grpc_status: Some(GrpcStatus::Code(code)),
                    unsure: false,
                },
                role,
            )
        };
        for code in 0..=16 {
            let (attributes, client) = outcome(code, Role::Client);
            assert_eq!(
                attributes[0],
                Attribute::int(RPC_GRPC_STATUS_CODE, i64::from(code))
            );
            assert_eq!(client.is_some(), code != 0, "client, code {code}");
            let (_, server) = outcome(code, Role::Server);
            let server_error = matches!(code, 2 | 4 | 12 | 13 | 14 | 15);
            assert_eq!(server.is_some(), server_error, "server, code {code}");
        }
        let (attributes, error) = outcome(14, Role::Server);
        assert_eq!(attributes[1], Attribute::str(ERROR_TYPE, "14"));
        assert_eq!(error.as_deref(), Some("gRPC status 14 (UNAVAILABLE)"));
        let (attributes, error) = outcome(5, Role::Server);
        assert_eq!(
            (attributes.len(), error),
            (1, None),
            "NOT_FOUND is the client's fault"
        );
    }

    #[test]
    fn missing_invalid_and_unknown_grpc_status() {
        let facts = ResponseFacts {
            grpc: true,
            status: Some(503),
            grpc_status: None,
            unsure: false,
        };
        let (attributes, error) = response(&facts, Role::Server);
        assert_eq!(error.as_deref(), Some("missing grpc-status (HTTP 503)"));
        assert_eq!(
            attributes,
            vec![
                Attribute::int("http.response.status_code", 503),
                Attribute::str(ERROR_TYPE, "_OTHER")
            ]
        );
        let (_, error) = response(
            &ResponseFacts {
                grpc_status: Some(GrpcStatus::Invalid),
                ..facts
            },
            Role::Client,
        );
        assert_eq!(error.as_deref(), Some("invalid grpc-status"));
        let (attributes, error) = response(
            &ResponseFacts {
                unsure: true,
                ..facts
            },
            Role::Client,
        );
        assert!(
            attributes.is_empty() && error.is_none(),
            "not read is not missing"
        );
    }

    #[test]
    fn plain_http_responses_use_the_http_rules() {
        let facts = ResponseFacts {
            status: Some(404),
            ..ResponseFacts::default()
        };
        assert_eq!(
            response(&facts, Role::Client).1.as_deref(),
            Some("HTTP 404")
        );
        assert_eq!(response(&facts, Role::Server).1, None);
        assert_eq!(
            response(&ResponseFacts::default(), Role::Client),
            (Vec::new(), None)
        );
    }
}
