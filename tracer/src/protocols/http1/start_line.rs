//! Recognising where an HTTP/1 message starts, from its first line alone: for protocol
//! detection, for resynchronising after garbage, and for ending a body whose framing was lost.
//!
//! Stricter than the head parser on purpose: these run over arbitrary bytes, so a match needs a
//! known method (or `HTTP/1.x NNN`) and, once the line is complete, the right version.

use crate::protocols::http::semconv::KNOWN_METHODS;

/// How the front of some bytes looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Looks {
    /// A start line (complete, or far enough along to be unmistakable).
    Yes,
    /// Too few bytes to tell: they are a prefix of a start line.
    Maybe,
    No,
}

/// Whether `bytes` start with a request line: `<known method> SP <target> SP HTTP/1.x`.
pub fn request_line(bytes: &[u8]) -> Looks {
    let mut prefix = false;
    for method in KNOWN_METHODS {
        let method = method.as_bytes();
        if bytes.len() <= method.len() {
            prefix |= method.starts_with(bytes);
            continue;
        }
        if bytes.starts_with(method) && bytes[method.len()] == b' ' {
            return rest_of_request_line(&bytes[method.len() + 1..], method == b"CONNECT");
        }
    }
    if prefix { Looks::Maybe } else { Looks::No }
}

/// The request line after `METHOD SP`: a target, then ` HTTP/1.0` or ` HTTP/1.1` at the line end.
fn rest_of_request_line(rest: &[u8], connect: bool) -> Looks {
    let Some(&first) = rest.first() else {
        return Looks::Maybe;
    };
    // origin-form `/`, asterisk-form `*`, absolute-form `http://`, or CONNECT's `host:port`.
    let plausible_target = match first {
        b'/' | b'*' => true,
        _ if connect => first.is_ascii_alphanumeric() || first == b'[',
        _ => starts_like(rest, b"http://") || starts_like(rest, b"https://"),
    };
    if !plausible_target {
        return Looks::No;
    }
    let line_end = rest.iter().position(|&b| b == b'\n');
    let line = match line_end {
        Some(end) => rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]),
        // The CR of the line end may have come in this syscall and its LF in the next.
        None => rest.strip_suffix(b"\r").unwrap_or(rest),
    };
    let Some(space) = line.iter().position(|&b| b == b' ') else {
        // The target runs on: fine while the line is incomplete.
        let target_chars = line.iter().all(|&b| b > b' ' && b != 0x7f);
        return if line_end.is_none() && target_chars {
            Looks::Yes
        } else {
            Looks::No
        };
    };
    let (target, version) = (&line[..space], &line[space + 1..]);
    if !target.iter().all(|&b| b > b' ' && b != 0x7f) {
        return Looks::No;
    }
    let versions: [&[u8]; 2] = [b"HTTP/1.1", b"HTTP/1.0"];
    let fits = |v: &&[u8]| match line_end {
        Some(_) => *v == version,
        None => v.starts_with(version),
    };
    if versions.iter().any(fits) {
        Looks::Yes
    } else {
        Looks::No
    }
}

/// Whether `bytes` and `prefix` agree (ignoring ASCII case) as far as both go.
fn starts_like(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes
        .iter()
        .zip(prefix)
        .all(|(a, b)| a.eq_ignore_ascii_case(b))
}

/// Whether `bytes` start with a status line: `HTTP/1.x NNN` followed by a space or line end.
pub fn status_line(bytes: &[u8]) -> Looks {
    const SHAPE: &[u8; 13] = b"HTTP/1.v ddd ";
    for (i, &b) in bytes.iter().take(SHAPE.len()).enumerate() {
        let ok = match SHAPE[i] {
            b'v' => b == b'0' || b == b'1',
            b'd' => b.is_ascii_digit(),
            // After the code: the reason phrase, or no reason phrase and the line end.
            b' ' if i == 12 => matches!(b, b' ' | b'\r' | b'\n'),
            expected => b == expected,
        };
        if !ok {
            return Looks::No;
        }
    }
    if bytes.len() >= 12 {
        Looks::Yes
    } else {
        Looks::Maybe
    }
}

/// Offset of the first line start in `bytes` (offset 0, or just after a `\n`) where `looks`
/// finds a start line or a prefix of one.
pub fn find(bytes: &[u8], looks: fn(&[u8]) -> Looks) -> Option<usize> {
    let mut at = 0;
    while at < bytes.len() {
        if looks(&bytes[at..]) != Looks::No {
            return Some(at);
        }
        at += bytes[at..].iter().position(|&b| b == b'\n')? + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(request_line(b"GET / HTTP/1.1\r\n"), Looks::Yes);
        assert_eq!(request_line(b"POST /api?x=1 HTTP/1.0\n"), Looks::Yes);
        assert_eq!(request_line(b"OPTIONS * HTTP/1.1\r\n"), Looks::Yes);
        assert_eq!(request_line(b"GET http://h/ HTTP/1.1\r\n"), Looks::Yes);
        assert_eq!(request_line(b"GET HTTPS://h/ HTTP/1.1\r\n"), Looks::Yes);
        assert_eq!(request_line(b"GET htt"), Looks::Yes);
        assert_eq!(request_line(b"CONNECT db:5432 HTTP/1.1\r\n"), Looks::Yes);
        // Incomplete but unmistakable.
        assert_eq!(request_line(b"GET /very/long/pa"), Looks::Yes);
        assert_eq!(request_line(b"GET /x HTTP/1."), Looks::Yes);
        // A syscall that ends between the CR and the LF of the line end.
        assert_eq!(request_line(b"GET /x HTTP/1.1\r"), Looks::Yes);
        assert_eq!(request_line(b"GET /x\r"), Looks::Yes);
        // Too short to tell.
        assert_eq!(request_line(b"GE"), Looks::Maybe);
        assert_eq!(request_line(b"GET "), Looks::Maybe);
        assert_eq!(request_line(b""), Looks::Maybe);
    }

    #[test]
    fn not_request_lines() {
        for bytes in [
            &b"GET foo\r\n"[..],
            b"GET key",
            b"GET HELLO",
            b"GET httpd.conf HTTP/1.1\r\n",
            b"get / HTTP/1.1\r\n",
            b"GET / HTTP/2.0\r\n",
            b"GET / HTTP/1.1 extra\r\n",
            b"GET / HTTX",
            b"GET /\x00 HTTP/1.1\r\n",
            b"PRI * HTTP/2.0\r\n",
            b"GETX / HTTP/1.1\r\n",
            b"CONNECT  HTTP/1.1\r\n",
            b"\x16\x03\x01\x02\x00",
            b"*2\r\n$3\r\nGET\r\n",
        ] {
            assert_eq!(
                request_line(bytes),
                Looks::No,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_line(b"HTTP/1.1 200 OK\r\n"), Looks::Yes);
        assert_eq!(status_line(b"HTTP/1.0 404\r\n"), Looks::Yes);
        assert_eq!(status_line(b"HTTP/1.1 204"), Looks::Yes);
        assert_eq!(status_line(b"HTTP/1.1 2"), Looks::Maybe);
        assert_eq!(status_line(b"HT"), Looks::Maybe);
        assert_eq!(status_line(b"HTTP/2 200 OK\r\n"), Looks::No);
        assert_eq!(status_line(b"HTTP/1.1 20x OK"), Looks::No);
        assert_eq!(status_line(b"HTTP/1.1 2000"), Looks::No);
        assert_eq!(status_line(b"http/1.1 200 OK"), Looks::No);
    }

    #[test]
    fn find_looks_at_line_starts_only() {
        let bytes = b"junk GET / HTTP/1.1\r\nmore\r\nGET /a HTTP/1.1\r\n";
        assert_eq!(find(bytes, request_line), Some(27));
        assert_eq!(find(b"GET / HTTP/1.1\r\n", request_line), Some(0));
        assert_eq!(find(b"xx\nyy\n", request_line), None);
        assert_eq!(find(b"", request_line), None);
        // A possible start cut by the end of the bytes counts.
        assert_eq!(find(b"body\r\nHTT", status_line), Some(6));
        assert_eq!(find(b"body HTTP/1.1 200 OK\r\n", status_line), None);
    }
}
