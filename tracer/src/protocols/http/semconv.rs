//! Span names and attributes for HTTP exchanges, after the stable OpenTelemetry HTTP semantic
//! conventions (<https://opentelemetry.io/docs/specs/semconv/http/http-spans/>).
//!
//! Only the fields named in [`RequestHead`] reach attributes: header values are taken from an
//! allowlist, so `Authorization`, `Proxy-Authorization`, `Cookie` and `Set-Cookie` can never be
//! exported, and query values, URL userinfo and path parameters are redacted. Bodies are never
//! read.

use super::route;
use super::url;
use crate::span::{Attribute, CompactString, Role, ToCompactString};

pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
pub const HTTP_REQUEST_METHOD_ORIGINAL: &str = "http.request.method_original";
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
pub const URL_SCHEME: &str = "url.scheme";
pub const URL_PATH: &str = "url.path";
pub const URL_QUERY: &str = "url.query";
pub const URL_FULL: &str = "url.full";
pub const SERVER_ADDRESS: &str = "server.address";
pub const SERVER_PORT: &str = "server.port";
pub const USER_AGENT_ORIGINAL: &str = "user_agent.original";
pub const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";
pub const ERROR_TYPE: &str = "error.type";

/// The methods the conventions call known (RFC 9110, PATCH, QUERY); others become `_OTHER`.
pub const KNOWN_METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY",
];

/// Longest attribute value taken from a request; longer values are cut (at a character
/// boundary) so that one odd request cannot make a span arbitrarily large.
pub const MAX_VALUE_LEN: usize = 2048;

/// The parts of a request head that spans describe, as they appeared on the wire. `None` marks
/// a part the tracer could not read (an HTTP/2 header block decoded without its HPACK history):
/// its attributes are left out rather than guessed.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    /// Case-sensitive method token.
    pub method: Option<&'a str>,
    /// The request target (HTTP/1 request line; `:path`, or `:authority` for CONNECT, in HTTP/2).
    pub target: Option<&'a str>,
    /// `Host` (HTTP/1) or `:authority` (HTTP/2).
    pub host: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    /// `http` or `https`.
    pub scheme: Option<&'static str>,
    /// `network.protocol.version`: `1.0`, `1.1`, `2`.
    pub version: &'static str,
}

/// The method as a static string, if it is one of the known methods.
fn known_method(method: &str) -> Option<&'static str> {
    KNOWN_METHODS.iter().copied().find(|m| *m == method)
}

/// Span name (`"GET /users/{id}"`) and attributes of a request, seen from `role`. A request
/// whose method is unknown or unreadable is named `HTTP` (`HTTP /users/{id}` when its path is
/// known).
pub fn request_span(head: &RequestHead<'_>, role: Role) -> (CompactString, Vec<Attribute>) {
    // Room for the connection's and the response's attributes too (added later).
    let mut attributes = Vec::with_capacity(16);
    let known = head.method.and_then(known_method);
    match (known, head.method) {
        (Some(method), _) => attributes.push(Attribute::str(HTTP_REQUEST_METHOD, method)),
        (None, Some(method)) => {
            attributes.push(Attribute::str(HTTP_REQUEST_METHOD, "_OTHER"));
            attributes.push(Attribute::str(HTTP_REQUEST_METHOD_ORIGINAL, capped(method)));
        }
        (None, None) => {}
    }
    if let Some(scheme) = head.scheme {
        attributes.push(Attribute::str(URL_SCHEME, scheme));
    }

    let target = head.target.map(url::split_target).unwrap_or_default();
    // Inputs are cut before redaction so that no oversized buffer outlives this call.
    let path = target.path.map(|raw| {
        let raw = capped(raw);
        let mut path = CompactString::with_capacity(raw.len());
        url::push_redacted_path(&mut path, raw);
        cap(&mut path);
        path
    });
    let query = target.query.filter(|q| !q.is_empty()).map(|raw| {
        let raw = capped(raw);
        let mut query = CompactString::with_capacity(raw.len() + 16);
        url::push_redacted_query(&mut query, raw);
        cap(&mut query);
        query
    });
    // The target's authority wins over Host (RFC 9112 §3.2.2).
    let authority = target
        .authority
        .or_else(|| head.host.and_then(|h| std::str::from_utf8(h).ok()));
    let server = authority.and_then(|a| Some((a, url::split_authority(a)?)));
    let full = match (role, head.scheme, server, &path) {
        (Role::Client, Some(scheme), Some((authority, _)), Some(path)) => {
            Some(full_url(scheme, authority, path, query.as_deref()))
        }
        _ => None,
    };

    if let Some(path) = path {
        attributes.push(Attribute::str(URL_PATH, path));
    }
    if let Some(query) = query {
        attributes.push(Attribute::str(URL_QUERY, query));
    }
    if let Some((_, (host, port))) = server {
        attributes.push(Attribute::str(SERVER_ADDRESS, capped(host)));
        let port = port.or(match head.scheme {
            Some("https") => Some(443),
            Some(_) => Some(80),
            None => None,
        });
        if let Some(port) = port {
            attributes.push(Attribute::int(SERVER_PORT, i64::from(port)));
        }
    }
    if let Some(full) = full {
        attributes.push(Attribute::str(URL_FULL, full));
    }
    if let Some(agent) = head.user_agent {
        let agent = &agent[..agent.len().min(MAX_VALUE_LEN)];
        let mut agent = CompactString::from_utf8_lossy(agent);
        cap(&mut agent);
        attributes.push(Attribute::str(USER_AGENT_ORIGINAL, agent));
    }
    attributes.push(Attribute::str(NETWORK_PROTOCOL_VERSION, head.version));

    // Unknown methods are named `HTTP`: a method token is client-chosen and unbounded.
    let method = known.unwrap_or("HTTP");
    let name = match target.path {
        Some(raw) => {
            let route = route::template(raw);
            let mut name = CompactString::with_capacity(method.len() + 1 + route.len());
            name.push_str(method);
            name.push(' ');
            name.push_str(&route);
            name
        }
        // CONNECT host:port and OPTIONS * have no route.
        None => CompactString::const_new(method),
    };
    (name, attributes)
}

/// Attributes and error description of a response with `status`, seen from `role`: a server
/// failed when it answered 5xx; a client's call failed on 4xx and 5xx. A status outside 100-599
/// is not HTTP and counts as a failure on both sides.
pub fn response_outcome(status: u16, role: Role) -> (Vec<Attribute>, Option<String>) {
    let mut attributes = Vec::with_capacity(2);
    attributes.push(Attribute::int(HTTP_RESPONSE_STATUS_CODE, i64::from(status)));
    let failed = match role {
        Role::Server => status >= 500,
        Role::Client => status >= 400,
    } || status < 100;
    if !failed {
        return (attributes, None);
    }
    attributes.push(Attribute::str(ERROR_TYPE, status.to_compact_string()));
    (attributes, Some(format!("HTTP {status}")))
}

/// `scheme://authority/path?query` from parts already redacted (userinfo is dropped here).
fn full_url(scheme: &str, authority: &str, path: &str, query: Option<&str>) -> CompactString {
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let query_len = query.map_or(0, |q| q.len() + 1);
    let mut full =
        CompactString::with_capacity(scheme.len() + 3 + authority.len() + path.len() + query_len);
    full.push_str(scheme);
    full.push_str("://");
    full.push_str(authority);
    full.push_str(path);
    if let Some(query) = query {
        full.push('?');
        full.push_str(query);
    }
    cap(&mut full);
    full
}

/// `s` cut to at most [`MAX_VALUE_LEN`] bytes, at a character boundary.
pub fn capped(s: &str) -> &str {
    if s.len() <= MAX_VALUE_LEN {
        return s;
    }
    let mut end = MAX_VALUE_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn cap(s: &mut CompactString) {
    let len = capped(s).len();
    if len < s.len() {
        // Rare: give back the memory too, spans may wait a while before export.
        s.truncate(len);
        s.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::Value;

    fn head(
        method: &'static str,
        target: &'static str,
        host: Option<&'static str>,
    ) -> RequestHead<'static> {
        RequestHead {
            method: Some(method),
            target: Some(target),
            host: host.map(str::as_bytes),
            user_agent: Some(b"curl/8.5.0"),
            scheme: Some("http"),
            version: "1.1",
        }
    }

    fn s(key: &'static str, value: &str) -> Attribute {
        Attribute::str(key, value.to_owned())
    }

    #[test]
    fn server_request_attributes() {
        let (name, attributes) = request_span(
            &head(
                "GET",
                "/users/42/orders?token=abc&page=2",
                Some("api.example.com:8080"),
            ),
            Role::Server,
        );
        assert_eq!(name, "GET /users/{id}/orders");
        assert_eq!(
            attributes,
            vec![
                s(HTTP_REQUEST_METHOD, "GET"),
                s(URL_SCHEME, "http"),
                s(URL_PATH, "/users/42/orders"),
                s(URL_QUERY, "token=REDACTED&page=REDACTED"),
                s(SERVER_ADDRESS, "api.example.com"),
                Attribute::int(SERVER_PORT, 8080),
                s(USER_AGENT_ORIGINAL, "curl/8.5.0"),
                s(NETWORK_PROTOCOL_VERSION, "1.1"),
            ]
        );
    }

    #[test]
    fn client_request_has_url_full_without_query_values() {
        let (name, attributes) = request_span(
            &head("POST", "/login?user=bob&next", Some("[::1]:9000")),
            Role::Client,
        );
        assert_eq!(name, "POST /login");
        assert_eq!(
            attributes,
            vec![
                s(HTTP_REQUEST_METHOD, "POST"),
                s(URL_SCHEME, "http"),
                s(URL_PATH, "/login"),
                s(URL_QUERY, "user=REDACTED&next"),
                s(SERVER_ADDRESS, "::1"),
                Attribute::int(SERVER_PORT, 9000),
                s(URL_FULL, "http://[::1]:9000/login?user=REDACTED&next"),
                s(USER_AGENT_ORIGINAL, "curl/8.5.0"),
                s(NETWORK_PROTOCOL_VERSION, "1.1"),
            ]
        );
    }

    #[test]
    fn host_without_port_uses_the_scheme_default() {
        let (_, attributes) = request_span(&head("GET", "/", Some("example.com")), Role::Client);
        assert_eq!(
            crate::span::find(&attributes, SERVER_PORT),
            Some(&Value::Int(80))
        );
        assert_eq!(
            crate::span::find(&attributes, URL_FULL),
            Some(&Value::Str("http://example.com/".into()))
        );
    }

    #[test]
    fn absolute_form_target_wins_over_host_and_drops_userinfo() {
        let (name, attributes) = request_span(
            &head(
                "GET",
                "http://alice:hunter2@proxy.example:3128/a/7?k=v",
                Some("other"),
            ),
            Role::Client,
        );
        assert_eq!(name, "GET /a/{id}");
        let find = |k| crate::span::find(&attributes, k).cloned();
        assert_eq!(
            find(SERVER_ADDRESS),
            Some(Value::Str("proxy.example".into()))
        );
        assert_eq!(
            find(URL_FULL),
            Some(Value::Str(
                "http://proxy.example:3128/a/7?k=REDACTED".into()
            ))
        );
        assert!(!format!("{attributes:?}").contains("hunter2"));
    }

    #[test]
    fn unknown_and_lowercase_methods_are_other() {
        let (name, attributes) = request_span(&head("PROPFIND", "/dav/x", None), Role::Server);
        assert_eq!(name, "HTTP /dav/x");
        assert_eq!(attributes[0], s(HTTP_REQUEST_METHOD, "_OTHER"));
        assert_eq!(attributes[1], s(HTTP_REQUEST_METHOD_ORIGINAL, "PROPFIND"));
        let (_, attributes) = request_span(&head("get", "/", None), Role::Server);
        assert_eq!(attributes[1], s(HTTP_REQUEST_METHOD_ORIGINAL, "get"));
    }

    #[test]
    fn connect_and_asterisk_targets_have_no_route() {
        let (name, attributes) =
            request_span(&head("CONNECT", "db.internal:5432", None), Role::Client);
        assert_eq!(name, "CONNECT");
        let find = |k| crate::span::find(&attributes, k).cloned();
        assert_eq!(find(SERVER_ADDRESS), Some(Value::Str("db.internal".into())));
        assert_eq!(find(SERVER_PORT), Some(Value::Int(5432)));
        assert_eq!(find(URL_PATH), None);
        assert_eq!(find(URL_FULL), None);
        let (name, _) = request_span(&head("OPTIONS", "*", Some("h")), Role::Server);
        assert_eq!(name, "OPTIONS");
    }

    #[test]
    fn unknown_parts_are_left_out_not_guessed() {
        let unknown = RequestHead {
            method: None,
            target: None,
            host: Some(b"api:8443"),
            user_agent: None,
            scheme: None,
            version: "2",
        };
        let (name, attributes) = request_span(&unknown, Role::Client);
        assert_eq!(name, "HTTP");
        assert_eq!(
            attributes,
            vec![
                s(SERVER_ADDRESS, "api"),
                Attribute::int(SERVER_PORT, 8443),
                s(NETWORK_PROTOCOL_VERSION, "2"),
            ]
        );
        // Without a scheme there is no default port and no url.full.
        let path_only = RequestHead {
            target: Some("/users/7"),
            host: Some(b"api"),
            ..unknown
        };
        let (name, attributes) = request_span(&path_only, Role::Client);
        assert_eq!(name, "HTTP /users/{id}");
        assert_eq!(
            attributes,
            vec![
                s(URL_PATH, "/users/7"),
                s(SERVER_ADDRESS, "api"),
                s(NETWORK_PROTOCOL_VERSION, "2"),
            ]
        );
        let method_only = RequestHead {
            method: Some("POST"),
            ..unknown
        };
        let (name, _) = request_span(&method_only, Role::Server);
        assert_eq!(name, "POST");
    }

    #[test]
    fn malformed_host_gives_no_server_attributes() {
        let (_, attributes) = request_span(&head("GET", "/", Some("bad host:x")), Role::Client);
        assert_eq!(crate::span::find(&attributes, SERVER_ADDRESS), None);
        assert_eq!(crate::span::find(&attributes, URL_FULL), None);
    }

    #[test]
    fn long_values_are_capped_at_a_char_boundary() {
        let agent = "é".repeat(MAX_VALUE_LEN);
        let mut h = head("GET", "/", None);
        h.user_agent = Some(agent.as_bytes());
        let (_, attributes) = request_span(&h, Role::Server);
        let Some(Value::Str(v)) = crate::span::find(&attributes, USER_AGENT_ORIGINAL) else {
            panic!("no user agent");
        };
        assert_eq!(v.len(), MAX_VALUE_LEN);
        assert!(v.chars().all(|c| c == 'é'));
        // A cut inside a character leaves no replacement character behind.
        let agent = format!("a{}", "é".repeat(MAX_VALUE_LEN));
        h.user_agent = Some(agent.as_bytes());
        let (_, attributes) = request_span(&h, Role::Server);
        let Some(Value::Str(v)) = crate::span::find(&attributes, USER_AGENT_ORIGINAL) else {
            panic!("no user agent");
        };
        assert_eq!(v.len(), MAX_VALUE_LEN - 1);
        assert!(v.chars().all(|c| c == 'a' || c == 'é'));
        let path = format!("/{}?q={}", "p".repeat(5_000), "v".repeat(5_000));
        let h = RequestHead {
            target: Some(&path),
            ..head("GET", "/", Some("h"))
        };
        let (name, attributes) = request_span(&h, Role::Client);
        assert_eq!(name, "GET /{id}");
        for key in [URL_PATH, URL_QUERY, URL_FULL] {
            let Some(Value::Str(v)) = crate::span::find(&attributes, key) else {
                panic!("no {key}");
            };
            assert!(
                v.len() <= MAX_VALUE_LEN && v.capacity() <= MAX_VALUE_LEN + 16,
                "{key}"
            );
        }
    }

    #[test]
    fn error_rules_depend_on_the_role() {
        let ok = |status, role| response_outcome(status, role).1;
        assert_eq!(ok(200, Role::Server), None);
        assert_eq!(ok(404, Role::Server), None);
        assert_eq!(ok(404, Role::Client), Some("HTTP 404".into()));
        assert_eq!(ok(503, Role::Server), Some("HTTP 503".into()));
        assert_eq!(ok(503, Role::Client), Some("HTTP 503".into()));
        assert_eq!(ok(302, Role::Client), None);
        assert_eq!(ok(99, Role::Server), Some("HTTP 99".into()));
        let (attributes, _) = response_outcome(503, Role::Server);
        assert_eq!(
            attributes,
            vec![
                Attribute::int(HTTP_RESPONSE_STATUS_CODE, 503),
                s(ERROR_TYPE, "503")
            ]
        );
        let (attributes, _) = response_outcome(201, Role::Client);
        assert_eq!(
            attributes,
            vec![Attribute::int(HTTP_RESPONSE_STATUS_CODE, 201)]
        );
    }
}
