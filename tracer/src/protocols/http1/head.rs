//! Request and response heads (httparse), and how the message body that follows them is framed
//! (RFC 9112 §6).

use std::mem::MaybeUninit;

use httparse::Status;

use super::start_line::{self, Looks};
use crate::protocols::http::{semconv, trace_context, trim_ows};
use crate::span::{Attribute, CompactString, Role, TraceContext};

/// Headers beyond this many make a head unreadable (browsers send about 20).
pub const MAX_HEADERS: usize = 128;
/// An incomplete start line longer than this is not waited for.
pub const MAX_START_LINE: usize = 16 * 1024;

/// What the response framing needs to know about the request method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// The response has no body.
    Head,
    /// A 2xx response turns the connection into a tunnel.
    Connect,
    Other,
}

impl Method {
    fn of(method: &str) -> Self {
        match method {
            "HEAD" => Method::Head,
            "CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    NoBody,
    Length(u64),
    Chunked,
    /// The body runs until the connection closes (a response without a length).
    UntilClose,
    /// 101 Switching Protocols or a 2xx answer to CONNECT: what follows is not HTTP/1.
    Switch,
}

/// Result of parsing a head at the front of a stream.
#[derive(Debug)]
pub enum Parsed<T, S> {
    /// A whole head, `len` bytes long.
    Complete { head: T, len: usize },
    /// The start line `start` is valid but the message cannot be read: its head was cut by the
    /// capture, has a malformed header, or has invalid framing. `skip` bytes (the start line,
    /// or the whole head) belong to it for sure.
    Unreadable { start: S, skip: usize },
    /// A prefix of a head: wait for more bytes.
    Partial,
    /// Not a start line.
    Invalid,
}

/// A request head, with what the span needs already extracted.
#[derive(Debug)]
pub struct RequestHead {
    pub name: CompactString,
    pub attributes: Vec<Attribute>,
    pub context: Option<TraceContext>,
    pub fingerprint: u64,
    pub method: Method,
    pub framing: Framing,
    /// `Upgrade` offers `h2c`: a 101 answer turns the connection into HTTP/2 (RFC 7540 §3.2).
    pub offers_h2c: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub framing: Framing,
    /// `Upgrade: h2c`: with a 101, the connection continues in HTTP/2.
    pub upgrade_h2c: bool,
}

/// Parses the request head at the front of `bytes` (which start with the head: empty lines
/// before it are skipped by the caller). `cut` tells that a capture gap follows the bytes, so a
/// partial head will never complete.
pub fn parse_request(bytes: &[u8], cut: bool, role: Role) -> Parsed<RequestHead, Method> {
    let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let parsed = req.parse_with_uninit_headers(bytes, &mut headers);
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        // The request line itself is incomplete or malformed.
        let partial = matches!(parsed, Ok(Status::Partial));
        if partial && !cut && bytes.len() <= MAX_START_LINE {
            return Parsed::Partial;
        }
        // A request line cut by the capture (a long URL) is still a request.
        if partial && cut && start_line::request_line(bytes) == Looks::Yes {
            return Parsed::Unreadable {
                start: Method::of(req.method.unwrap_or_default()),
                skip: bytes.len(),
            };
        }
        return Parsed::Invalid;
    };
    let len = match parsed {
        Ok(Status::Complete(len)) => len,
        Ok(Status::Partial) if !cut => return Parsed::Partial,
        _ => {
            return Parsed::Unreadable {
                start: Method::of(method),
                skip: start_line_len(bytes),
            };
        }
    };
    let fields = Fields::scan(req.headers);
    let Some(framing) = fields.request_framing() else {
        return Parsed::Unreadable {
            start: Method::of(method),
            skip: len,
        };
    };
    let version = if version == 0 { "1.0" } else { "1.1" };
    let (name, attributes) = semconv::request_span(
        &semconv::RequestHead {
            method: Some(method),
            target: Some(target),
            host: fields.host,
            user_agent: fields.user_agent,
            scheme: Some("http"),
            version,
        },
        role,
    );
    let traceparent = &fields.traceparent[..fields.traceparents.min(2)];
    Parsed::Complete {
        head: RequestHead {
            name,
            attributes,
            context: trace_context::extract(traceparent, &fields.tracestate),
            fingerprint: fingerprint(method, target, version),
            method: Method::of(method),
            framing,
            offers_h2c: fields.upgrade.is_some_and(offers_h2c),
        },
        len,
    }
}

/// Parses the response head at the front of `bytes`; `request` is the method of the request it
/// answers, if known.
pub fn parse_response(
    bytes: &[u8],
    cut: bool,
    request: Option<Method>,
) -> Parsed<ResponseHead, u16> {
    let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        bytes,
        &mut headers,
    );
    // The reason phrase is parsed last: once it is set the status line is complete.
    let (Some(status), Some(_)) = (res.code, res.reason) else {
        let partial = matches!(parsed, Ok(Status::Partial));
        if partial && !cut && bytes.len() <= MAX_START_LINE {
            return Parsed::Partial;
        }
        // A status line cut by the capture inside its reason phrase: the status is known.
        if let (true, true, Some(status)) = (partial, cut, res.code) {
            return Parsed::Unreadable {
                start: status,
                skip: bytes.len(),
            };
        }
        return Parsed::Invalid;
    };
    let len = match parsed {
        Ok(Status::Complete(len)) => len,
        Ok(Status::Partial) if !cut => return Parsed::Partial,
        _ => {
            return Parsed::Unreadable {
                start: status,
                skip: start_line_len(bytes),
            };
        }
    };
    let fields = Fields::scan(res.headers);
    match fields.response_framing(status, request) {
        Some(framing) => Parsed::Complete {
            head: ResponseHead {
                status,
                framing,
                upgrade_h2c: fields
                    .upgrade
                    .is_some_and(|v| trim_ows(v).eq_ignore_ascii_case(b"h2c")),
            },
            len,
        },
        None => Parsed::Unreadable {
            start: status,
            skip: len,
        },
    }
}

/// Length of the start line at the front of `bytes`, with the empty lines allowed before it.
fn start_line_len(bytes: &[u8]) -> usize {
    let start = bytes
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    bytes[start..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |end| start + end + 1)
}

/// FNV-1a over the request line: the same on the client's write and the server's read.
fn fingerprint(method: &str, target: &str, version: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let parts: [&[u8]; 5] = [
        method.as_bytes(),
        b" ",
        target.as_bytes(),
        b" HTTP/",
        version.as_bytes(),
    ];
    for byte in parts.into_iter().flatten() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The header fields the tracer reads; everything else (credentials included) is skipped.
#[derive(Default)]
struct Fields<'a> {
    host: Option<&'a [u8]>,
    user_agent: Option<&'a [u8]>,
    content_length: Option<u64>,
    /// A Content-Length that is not a number, or several that differ.
    bad_length: bool,
    transfer_encoding: bool,
    /// `chunked` is the last transfer coding.
    chunked: bool,
    traceparent: [&'a [u8]; 2],
    traceparents: usize,
    tracestate: Vec<&'a [u8]>,
    upgrade: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    fn scan(headers: &[httparse::Header<'a>]) -> Self {
        let mut fields = Fields::default();
        for header in headers {
            let (name, value) = (header.name.as_bytes(), header.value);
            let is = |expected: &str| name.eq_ignore_ascii_case(expected.as_bytes());
            // Dispatch on length first: most headers are rejected with one comparison.
            match name.len() {
                4 if is("host") => {
                    fields.host.get_or_insert(value);
                }
                7 if is("upgrade") => {
                    fields.upgrade.get_or_insert(value);
                }
                10 if is("user-agent") => fields.user_agent = Some(value),
                10 if is("tracestate") => fields.tracestate.push(value),
                11 if is("traceparent") => {
                    if let Some(slot) = fields.traceparent.get_mut(fields.traceparents) {
                        *slot = value;
                    }
                    fields.traceparents += 1;
                }
                14 if is("content-length") => match parse_content_length(value) {
                    Some(n) if fields.content_length.is_none_or(|seen| seen == n) => {
                        fields.content_length = Some(n);
                    }
                    _ => fields.bad_length = true,
                },
                17 if is("transfer-encoding") => {
                    fields.transfer_encoding = true;
                    if let Some(last) = value
                        .split(|&b| b == b',')
                        .map(trim_ows)
                        .rfind(|c| !c.is_empty())
                    {
                        fields.chunked = last.eq_ignore_ascii_case(b"chunked");
                    }
                }
                _ => {}
            }
        }
        fields
    }

    /// RFC 9112 §6.3 for requests: no length means no body. `None`: the framing is invalid.
    fn request_framing(&self) -> Option<Framing> {
        // Transfer-Encoding wins over Content-Length; a request coding other than chunked
        // cannot be delimited.
        if self.transfer_encoding {
            return self.chunked.then_some(Framing::Chunked);
        }
        if self.bad_length {
            return None;
        }
        Some(match self.content_length {
            Some(0) | None => Framing::NoBody,
            Some(n) => Framing::Length(n),
        })
    }

    /// RFC 9112 §6.3 for responses. `None`: the framing is invalid.
    fn response_framing(&self, status: u16, request: Option<Method>) -> Option<Framing> {
        if status == 101 || (request == Some(Method::Connect) && (200..300).contains(&status)) {
            return Some(Framing::Switch);
        }
        if (100..200).contains(&status)
            || status == 204
            || status == 304
            || request == Some(Method::Head)
        {
            return Some(Framing::NoBody);
        }
        if self.transfer_encoding {
            return Some(if self.chunked {
                Framing::Chunked
            } else {
                Framing::UntilClose
            });
        }
        if self.bad_length {
            return None;
        }
        Some(match self.content_length {
            Some(0) => Framing::NoBody,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        })
    }
}

/// Whether an `Upgrade` value lists the `h2c` protocol token (`h2c`, `websocket, h2c`).
fn offers_h2c(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|token| trim_ows(token).eq_ignore_ascii_case(b"h2c"))
}

/// `Content-Length` as a list of equal decimal numbers (`5` or `5, 5`).
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for item in value.split(|&b| b == b',').map(trim_ows) {
        if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = item.iter().try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })?;
        if length.is_some_and(|seen| seen != n) {
            return None;
        }
        length = Some(n);
    }
    length
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(bytes: &[u8]) -> Parsed<RequestHead, Method> {
        parse_request(bytes, false, Role::Server)
    }

    fn framing(bytes: &[u8]) -> Option<Framing> {
        match request(bytes) {
            Parsed::Complete { head, .. } => Some(head.framing),
            _ => None,
        }
    }

    fn response_framing(bytes: &[u8], method: Option<Method>) -> Option<Framing> {
        match parse_response(bytes, false, method) {
            Parsed::Complete { head, .. } => Some(head.framing),
            _ => None,
        }
    }

    #[test]
    fn content_length_values() {
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(parse_content_length(b"42"), Some(42));
        assert_eq!(parse_content_length(b"5, 5"), Some(5));
        assert_eq!(
            parse_content_length(b"18446744073709551615"),
            Some(u64::MAX)
        );
        for bad in [
            &b""[..],
            b"-1",
            b"+5",
            b"5, 6",
            b"0x10",
            b"1 2",
            b"18446744073709551616",
            b"5,",
        ] {
            assert_eq!(
                parse_content_length(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn request_framing_rules() {
        assert_eq!(framing(b"GET / HTTP/1.1\r\n\r\n"), Some(Framing::NoBody));
        assert_eq!(
            framing(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n"),
            Some(Framing::Length(3))
        );
        assert_eq!(
            framing(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"),
            Some(Framing::Length(3))
        );
        assert_eq!(
            framing(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"),
            Some(Framing::Chunked)
        );
        // Transfer-Encoding wins over Content-Length.
        assert_eq!(
            framing(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(Framing::Chunked)
        );
        for bad in [
            &b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        ] {
            assert!(
                matches!(request(bad), Parsed::Unreadable { start: Method::Other, skip } if skip == bad.len()),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn response_framing_rules() {
        let r = |head: &[u8], m| response_framing(head, m);
        assert_eq!(
            r(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", None),
            Some(Framing::Length(2))
        );
        assert_eq!(
            r(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
                Some(Method::Head)
            ),
            Some(Framing::NoBody)
        );
        assert_eq!(
            r(b"HTTP/1.1 200 OK\r\n\r\n", None),
            Some(Framing::UntilClose)
        );
        assert_eq!(
            r(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                None
            ),
            Some(Framing::Chunked)
        );
        assert_eq!(
            r(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", None),
            Some(Framing::UntilClose)
        );
        assert_eq!(
            r(
                b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n",
                None
            ),
            Some(Framing::NoBody)
        );
        assert_eq!(
            r(b"HTTP/1.1 304 Not Modified\r\n\r\n", None),
            Some(Framing::NoBody)
        );
        assert_eq!(
            r(b"HTTP/1.1 100 Continue\r\n\r\n", None),
            Some(Framing::NoBody)
        );
        assert_eq!(
            r(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", None),
            Some(Framing::Switch)
        );
        assert_eq!(
            r(
                b"HTTP/1.1 200 Connection established\r\n\r\n",
                Some(Method::Connect)
            ),
            Some(Framing::Switch)
        );
        assert_eq!(
            r(
                b"HTTP/1.1 407 Auth\r\nContent-Length: 0\r\n\r\n",
                Some(Method::Connect)
            ),
            Some(Framing::NoBody)
        );
        assert_eq!(
            r(b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", None),
            None
        );
    }

    #[test]
    fn truncated_and_malformed_heads() {
        let head = b"GET /a HTTP/1.1\r\nHost: x\r\nCookie: aaaa";
        assert!(matches!(
            parse_request(head, false, Role::Server),
            Parsed::Partial
        ));
        assert!(matches!(
            parse_request(head, true, Role::Server),
            Parsed::Unreadable {
                start: Method::Other,
                skip: 17
            }
        ));
        assert!(matches!(
            parse_request(b"GET /a HT", true, Role::Server),
            Parsed::Unreadable {
                start: Method::Other,
                skip: 9
            }
        ));
        assert!(matches!(
            parse_request(b"GET /a\x01", true, Role::Server),
            Parsed::Invalid
        ));
        assert!(matches!(
            parse_request(b"GE", true, Role::Server),
            Parsed::Invalid
        ));
        assert!(matches!(
            parse_request(b"GET /a HT", false, Role::Server),
            Parsed::Partial
        ));
        assert!(matches!(
            parse_request(
                b"\r\nHEAD / HTTP/1.1\r\nBad\0: x\r\n\r\n",
                false,
                Role::Server
            ),
            Parsed::Unreadable {
                start: Method::Head,
                skip: 19
            }
        ));
        assert!(matches!(
            parse_request(b"\x16\x03\x01\x00", false, Role::Server),
            Parsed::Invalid
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 503 Busy\r\nX", true, None),
            Parsed::Unreadable {
                start: 503,
                skip: 19
            }
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 5", true, None),
            Parsed::Invalid
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 502 Bad Gat", true, None),
            Parsed::Unreadable {
                start: 502,
                skip: 20
            }
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 5", false, None),
            Parsed::Partial
        ));
    }

    #[test]
    fn fingerprint_covers_the_request_line_only() {
        let fp = |bytes: &[u8]| match parse_request(bytes, false, Role::Client) {
            Parsed::Complete { head, .. } => head.fingerprint,
            other => panic!("{other:?}"),
        };
        let a = fp(b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(a, fp(b"GET /a?x=1 HTTP/1.1\r\nUser-Agent: other\r\n\r\n"));
        assert_ne!(a, fp(b"GET /a?x=2 HTTP/1.1\r\n\r\n"));
        assert_ne!(a, fp(b"GET /a?x=1 HTTP/1.0\r\n\r\n"));
        assert_ne!(a, fp(b"PUT /a?x=1 HTTP/1.1\r\n\r\n"));
    }

    #[test]
    fn too_many_headers_make_the_head_unreadable() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert!(matches!(
            request(&head),
            Parsed::Unreadable { skip: 16, .. }
        ));
    }
}
