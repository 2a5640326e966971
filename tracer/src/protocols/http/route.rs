//! Low-cardinality routes from URL paths, for span names: `/users/12345/orders` becomes
//! `/users/{id}/orders`.
//!
//! The tracer sees no framework routing table, so identifiers are recognised by their shape:
//! a segment that looks generated (numbers, UUIDs, hashes, tokens, e-mail addresses) is replaced,
//! a segment that looks like a word is kept. Paths deeper than [`MAX_SEGMENTS`] are cut, so a
//! client cannot create unbounded span names by sending unusual paths.

use crate::span::CompactString;

/// What replaces an identifier segment.
pub const ID: &str = "{id}";
/// Segments kept before the rest of a path is collapsed into `/*`.
pub const MAX_SEGMENTS: usize = 8;
/// A segment this long is treated as an identifier whatever it contains.
const MAX_WORD_LEN: usize = 64;

/// The route template of `path` (a URL path; anything from `?` or `#` on is ignored).
pub fn template(path: &str) -> CompactString {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let path = path[..end].strip_prefix('/').unwrap_or(&path[..end]);
    if path.is_empty() {
        return CompactString::const_new("/");
    }
    // A template is at most about MAX_SEGMENTS * (MAX_WORD_LEN + 1) bytes, whatever the path.
    let mut out = CompactString::with_capacity(path.len().min(128) + 1);
    for (i, segment) in path.split('/').enumerate() {
        if i == MAX_SEGMENTS {
            out.push_str("/*");
            break;
        }
        out.push('/');
        // Matrix parameters (`;jsessionid=...`) are not part of the route.
        let segment = segment.split(';').next().unwrap_or_default();
        out.push_str(if is_identifier(segment) { ID } else { segment });
    }
    out
}

/// Whether a path segment looks like a generated identifier rather than a fixed word.
fn is_identifier(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    if bytes.len() > MAX_WORD_LEN || bytes.contains(&b'@') {
        return true;
    }
    let digits = bytes.iter().filter(|b| b.is_ascii_digit()).count();
    let letters = bytes.iter().filter(|b| b.is_ascii_alphabetic()).count();
    // `12345`, and numbered words like `order-98765` or `2024-01-15`; short ones such as `v2`,
    // `oauth2` or `x86` stay.
    if digits == bytes.len() || digits >= 4 {
        return true;
    }
    if is_uuid(bytes) {
        return true;
    }
    // Hashes and object ids: `5f2b9c1e`, `507f1f77bcf86cd799439011`. A digit is required so that
    // words made of the letters a-f (`deadbeef`, `facade`) stay.
    if bytes.len() >= 8 && digits > 0 && bytes.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    // Long random tokens (base64, base62, ULIDs): letters mixed with digits.
    bytes.len() >= 16
        && digits > 0
        && letters > 0
        && bytes.iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'.' | b'~' | b'+')
        })
}

/// `8-4-4-4-12` hex digits, any case.
fn is_uuid(bytes: &[u8]) -> bool {
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_root_paths() {
        assert_eq!(template(""), "/");
        assert_eq!(template("/"), "/");
        assert_eq!(template("?q=1"), "/");
        assert_eq!(template("/?q=1"), "/");
    }

    #[test]
    fn static_words_are_kept() {
        assert_eq!(template("/api/v1/users"), "/api/v1/users");
        assert_eq!(template("/healthz"), "/healthz");
        assert_eq!(template("/oauth2/authorize"), "/oauth2/authorize");
        assert_eq!(template("/static/css/main.css"), "/static/css/main.css");
        assert_eq!(template("/products/deadbeef"), "/products/deadbeef");
        assert_eq!(template("/wiki/Special:Random"), "/wiki/Special:Random");
        assert_eq!(template("/x86/v2/s3"), "/x86/v2/s3");
    }

    #[test]
    fn numeric_ids_are_replaced() {
        assert_eq!(template("/users/12345"), "/users/{id}");
        assert_eq!(template("/users/1/orders/42"), "/users/{id}/orders/{id}");
        assert_eq!(template("/orders/order-98765/items"), "/orders/{id}/items");
        assert_eq!(template("/reports/2024-01-15"), "/reports/{id}");
    }

    #[test]
    fn uuids_hashes_and_tokens_are_replaced() {
        assert_eq!(
            template("/sessions/550e8400-e29b-41d4-a716-446655440000"),
            "/sessions/{id}"
        );
        assert_eq!(
            template("/sessions/550E8400-E29B-41D4-A716-446655440000/end"),
            "/sessions/{id}/end"
        );
        assert_eq!(
            template("/objects/507f1f77bcf86cd799439011"),
            "/objects/{id}"
        );
        assert_eq!(template("/commits/3f2a9c1b"), "/commits/{id}");
        assert_eq!(template("/files/aGVsbG8gd29ybGQx"), "/files/{id}");
        assert_eq!(template("/reset/Xk9_2pQ-vR7tLm3sZ0aB"), "/reset/{id}");
        assert_eq!(
            template("/events/01ARZ3NDEKTSV4RRFFQ69G5FAV"),
            "/events/{id}"
        );
        assert_eq!(
            template("/users/alice@example.com/profile"),
            "/users/{id}/profile"
        );
        assert_eq!(template(&format!("/blob/{}", "a".repeat(65))), "/blob/{id}");
    }

    #[test]
    fn query_fragment_and_matrix_parameters_are_dropped() {
        assert_eq!(template("/search?q=12345&page=2"), "/search");
        assert_eq!(template("/docs#section-1234"), "/docs");
        assert_eq!(template("/app;jsessionid=ABC123DEF456/home"), "/app/home");
    }

    #[test]
    fn trailing_and_repeated_slashes_are_kept() {
        assert_eq!(template("/users/"), "/users/");
        assert_eq!(template("/a//b"), "/a//b");
    }

    #[test]
    fn deep_paths_are_collapsed() {
        assert_eq!(template("/a/b/c/d/e/f/g/h"), "/a/b/c/d/e/f/g/h");
        assert_eq!(template("/a/b/c/d/e/f/g/h/i/j/k"), "/a/b/c/d/e/f/g/h/*");
        assert_eq!(
            template(&"/x".repeat(10_000)),
            format!("{}/*", "/x".repeat(8))
        );
    }

    #[test]
    fn paths_without_a_leading_slash_get_one() {
        assert_eq!(template("users/7"), "/users/{id}");
    }
}
