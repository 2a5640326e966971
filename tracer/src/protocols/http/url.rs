//! Pieces of request URLs, taken apart without allocating and with secrets removed.

/// What replaces secret parts of a URL (query values, userinfo, path parameters).
pub const REDACTED: &str = "REDACTED";

/// A request target split into its parts (RFC 9112 §3.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Target<'a> {
    /// The authority of an absolute-form or authority-form target (`host:port`), userinfo removed.
    pub authority: Option<&'a str>,
    /// The path of an origin-form or absolute-form target; `None` for `*` and `host:port`.
    pub path: Option<&'a str>,
    /// The query without its `?`; `None` when there is no `?`.
    pub query: Option<&'a str>,
}

/// Splits a request target: origin-form `/p?q`, absolute-form `http://host/p?q`,
/// authority-form `host:port` (CONNECT) or asterisk-form `*`.
pub fn split_target(target: &str) -> Target<'_> {
    // A fragment is never sent, but a broken client might: it is not part of the request.
    let target = target.split('#').next().unwrap_or_default();
    if target.starts_with('/') {
        let (path, query) = split_query(target);
        return Target {
            authority: None,
            path: Some(path),
            query,
        };
    }
    if let Some(rest) = strip_scheme(target) {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(end);
        let (path, query) = split_query(path_and_query);
        return Target {
            authority: Some(strip_userinfo(authority)),
            path: Some(if path.is_empty() { "/" } else { path }),
            query,
        };
    }
    if target == "*" {
        return Target::default();
    }
    Target {
        authority: Some(strip_userinfo(target)),
        path: None,
        query: None,
    }
}

fn split_query(s: &str) -> (&str, Option<&str>) {
    match s.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (s, None),
    }
}

fn strip_scheme(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")).then_some(rest)
}

/// `user:password@host` → `host`: credentials never leave the tracer.
fn strip_userinfo(authority: &str) -> &str {
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// Host and port of an authority (`example.com:8080`, `[::1]:80`, `example.com`). The host of an
/// IPv6 literal is returned without brackets. `None` when the authority is malformed; the port is
/// `None` when absent or empty (use the scheme's default).
pub fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    let authority = strip_userinfo(authority);
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            // More than one colon without brackets is not a host:port.
            Some((host, _)) if host.contains(':') => return None,
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || !host.bytes().all(is_host_char) {
        return None;
    }
    let port = match port {
        None | Some("") => None,
        Some(port) if port.bytes().all(|b| b.is_ascii_digit()) => Some(port.parse().ok()?),
        Some(_) => return None,
    };
    Some((host, port))
}

/// Characters of a reg-name or IP literal (RFC 3986), loosely: no spaces, slashes or controls.
fn is_host_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:".contains(&b)
}

/// Appends `query` with every parameter value replaced by [`REDACTED`]: keys stay, values
/// (tokens, signatures, personal data) never leave the tracer. `out` is any string type
/// (`String`, `CompactString`).
pub fn push_redacted_query<'a>(out: &mut impl Extend<&'a str>, query: &'a str) {
    for (i, param) in query.split('&').enumerate() {
        if i > 0 {
            out.extend(["&"]);
        }
        push_redacted_param(out, param);
    }
}

/// Appends `path` with the values of path parameters (`/app;jsessionid=...`) redacted: servlet
/// containers put session ids there.
pub fn push_redacted_path<'a>(out: &mut impl Extend<&'a str>, path: &'a str) {
    if !path.contains(';') {
        out.extend([path]);
        return;
    }
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.extend(["/"]);
        }
        let mut params = segment.split(';');
        out.extend([params.next().unwrap_or_default()]);
        for param in params {
            out.extend([";"]);
            push_redacted_param(out, param);
        }
    }
}

/// `key=REDACTED` for `key=value`; a bare `key` as it is.
fn push_redacted_param<'a>(out: &mut impl Extend<&'a str>, param: &'a str) {
    match param.split_once('=') {
        Some((key, _)) => out.extend([key, "=", REDACTED]),
        None => out.extend([param]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(
        authority: Option<&'static str>,
        path: Option<&'static str>,
        query: Option<&'static str>,
    ) -> Target<'static> {
        Target {
            authority,
            path,
            query,
        }
    }

    #[test]
    fn origin_form() {
        assert_eq!(
            split_target("/a/b?x=1&y"),
            target(None, Some("/a/b"), Some("x=1&y"))
        );
        assert_eq!(split_target("/"), target(None, Some("/"), None));
        assert_eq!(split_target("/a?"), target(None, Some("/a"), Some("")));
        assert_eq!(split_target("/a#frag?x=1"), target(None, Some("/a"), None));
    }

    #[test]
    fn absolute_form_takes_the_authority_from_the_url() {
        assert_eq!(
            split_target("http://user:pw@example.com:8080/p?q=1"),
            target(Some("example.com:8080"), Some("/p"), Some("q=1"))
        );
        assert_eq!(
            split_target("HTTP://example.com"),
            target(Some("example.com"), Some("/"), None)
        );
        assert_eq!(
            split_target("http://[::1]:81?x"),
            target(Some("[::1]:81"), Some("/"), Some("x"))
        );
    }

    #[test]
    fn authority_and_asterisk_forms() {
        assert_eq!(
            split_target("example.com:443"),
            target(Some("example.com:443"), None, None)
        );
        assert_eq!(split_target("*"), Target::default());
    }

    #[test]
    fn authorities() {
        assert_eq!(split_authority("example.com"), Some(("example.com", None)));
        assert_eq!(
            split_authority("example.com:8080"),
            Some(("example.com", Some(8080)))
        );
        assert_eq!(split_authority("example.com:"), Some(("example.com", None)));
        assert_eq!(split_authority("10.0.0.1:80"), Some(("10.0.0.1", Some(80))));
        assert_eq!(split_authority("[::1]:8080"), Some(("::1", Some(8080))));
        assert_eq!(
            split_authority("[2001:db8::1]"),
            Some(("2001:db8::1", None))
        );
        assert_eq!(split_authority("user:pw@host:1"), Some(("host", Some(1))));
        for bad in [
            "",
            ":80",
            "host:http",
            "host:70000",
            "[::1",
            "[::1]x",
            "::1",
            "a b",
            "a/b",
        ] {
            assert_eq!(split_authority(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn query_values_are_redacted() {
        let redact = |q: &str| {
            let mut out = String::new();
            push_redacted_query(&mut out, q);
            out
        };
        assert_eq!(
            redact("token=s3cr3t&page=2"),
            "token=REDACTED&page=REDACTED"
        );
        assert_eq!(
            redact("flag&empty=&a=b=c"),
            "flag&empty=REDACTED&a=REDACTED"
        );
        assert_eq!(redact(""), "");
        assert_eq!(redact("&&"), "&&");
    }

    #[test]
    fn path_parameter_values_are_redacted() {
        let redact = |p: &str| {
            let mut out = String::new();
            push_redacted_path(&mut out, p);
            out
        };
        assert_eq!(redact("/a/b"), "/a/b");
        assert_eq!(
            redact("/app;jsessionid=ABC/x;v"),
            "/app;jsessionid=REDACTED/x;v"
        );
    }
}
