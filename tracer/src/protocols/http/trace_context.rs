//! W3C Trace Context level 1 (<https://www.w3.org/TR/trace-context-1/>): reading `traceparent`
//! and `tracestate` as a request carries them, and writing `traceparent`.
//!
//! The rules are the specification's, applied strictly: a request whose `traceparent` is not
//! valid carries no context (the span starts a new trace), and a `tracestate` that is not valid is
//! dropped without affecting `traceparent`.

use super::trim_ows;
use crate::span::TraceContext;

/// Length of a version-00 `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`.
const TRACEPARENT_LEN: usize = 55;
/// At most this many list members in a `tracestate` (empty members not counted: they come from
/// combining header fields and carry nothing).
const MAX_TRACESTATE_MEMBERS: usize = 32;
/// Longest key and value of a `tracestate` list member.
const MAX_KEY_LEN: usize = 256;
const MAX_VALUE_LEN: usize = 256;
/// A multi-tenant key `tenant@system`: the tenant has at most 241 characters, the system 14.
const MAX_TENANT_LEN: usize = 241;
const MAX_SYSTEM_LEN: usize = 14;

/// The trace context a request carries, given all of its `traceparent` and `tracestate` header
/// values in order. `None` when there is no valid `traceparent`.
pub fn extract(traceparent: &[&[u8]], tracestate: &[&[u8]]) -> Option<TraceContext> {
    // A field that must be single-valued but arrives twice is invalid: which one is meant?
    let [value] = traceparent else {
        return None;
    };
    let (trace_id, parent_id, flags) = parse_traceparent(trim_ows(value))?;
    Some(TraceContext {
        trace_id,
        parent_id,
        flags,
        state: combine_tracestate(tracestate).unwrap_or_default(),
    })
}

/// `traceparent` header value for the given ids (version 00).
pub fn format_traceparent(trace_id: &[u8; 16], span_id: &[u8; 8], flags: u8) -> String {
    let mut out = String::with_capacity(TRACEPARENT_LEN);
    out.push_str("00-");
    push_hex(&mut out, trace_id);
    out.push('-');
    push_hex(&mut out, span_id);
    out.push('-');
    push_hex(&mut out, &[flags]);
    out
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
}

fn parse_traceparent(value: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    if value.len() < TRACEPARENT_LEN || value[2] != b'-' {
        return None;
    }
    let [version] = decode_hex::<1>(&value[..2])?;
    match version {
        0xff => return None,
        // Version 00 has exactly four fields.
        0x00 if value.len() != TRACEPARENT_LEN => return None,
        // A later version may append fields, each introduced by a dash.
        _ if value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-' => return None,
        _ => {}
    }
    if value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = decode_hex::<16>(&value[3..35])?;
    let parent_id = decode_hex::<8>(&value[36..52])?;
    let [flags] = decode_hex::<1>(&value[53..55])?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    // Version 00 defines the whole flags byte. For a later version only the sampled bit is
    // understood ("parse the sampled bit of flags"); the other bits may mean something else there.
    let flags = if version == 0 { flags } else { flags & 0x01 };
    Some((trace_id, parent_id, flags))
}

/// Decodes exactly `2 * N` lowercase hex digits.
fn decode_hex<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (lower_hex_value(pair[0])? << 4) | lower_hex_value(pair[1])?;
    }
    Some(out)
}

fn lower_hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Combines the `tracestate` field values into one list (RFC 9110 field combination: joined
/// with commas) and validates it. Members are written without surrounding whitespace and empty
/// members are left out. `None` when the list is invalid.
fn combine_tracestate(values: &[&[u8]]) -> Option<String> {
    let mut out = String::new();
    let mut members = 0usize;
    for value in values {
        for member in value.split(|&b| b == b',') {
            let member = trim_ows(member);
            if member.is_empty() {
                continue;
            }
            let eq = member.iter().position(|&b| b == b'=')?;
            let (key, value) = (&member[..eq], &member[eq + 1..]);
            if !valid_key(key) || !valid_value(value) {
                return None;
            }
            members += 1;
            if members > MAX_TRACESTATE_MEMBERS || has_key(&out, key) {
                return None;
            }
            if !out.is_empty() {
                out.push(',');
            }
            // Validated as printable ASCII above.
            out.push_str(std::str::from_utf8(member).ok()?);
        }
    }
    Some(out)
}

/// Whether the combined list `out` already has a member with `key` (each key at most once).
fn has_key(out: &str, key: &[u8]) -> bool {
    out.split(',')
        .any(|member| member.as_bytes().split(|&b| b == b'=').next() == Some(key))
}

/// `key = simple-key / multi-tenant-key` (level 1).
fn valid_key(key: &[u8]) -> bool {
    match key.iter().position(|&b| b == b'@') {
        None => {
            key.len() <= MAX_KEY_LEN
                && key.first().is_some_and(u8::is_ascii_lowercase)
                && key[1..].iter().all(|&b| is_key_char(b))
        }
        Some(at) => {
            let (tenant, system) = (&key[..at], &key[at + 1..]);
            (1..=MAX_TENANT_LEN).contains(&tenant.len())
                && (tenant[0].is_ascii_lowercase() || tenant[0].is_ascii_digit())
                && tenant[1..].iter().all(|&b| is_key_char(b))
                && (1..=MAX_SYSTEM_LEN).contains(&system.len())
                && system[0].is_ascii_lowercase()
                && system[1..].iter().all(|&b| is_key_char(b))
        }
    }
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/')
}

/// `value = 0*255(chr) nblk-chr`: printable ASCII without ',' and '=', not ending in a space.
fn valid_value(value: &[u8]) -> bool {
    let printable = |b: &u8| (0x20..=0x7e).contains(b) && *b != b',' && *b != b'=';
    (1..=MAX_VALUE_LEN).contains(&value.len())
        && value.iter().all(printable)
        && value.last() != Some(&b' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE_ID: [u8; 16] = [
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47,
        0x36,
    ];
    const PARENT_ID: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
    const SPEC_SAMPLED: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn parent(value: &str) -> Option<TraceContext> {
        extract(&[value.as_bytes()], &[])
    }

    fn state(values: &[&str]) -> String {
        let values: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        extract(&[SPEC_SAMPLED], &values).unwrap().state
    }

    #[test]
    fn spec_examples_parse() {
        let ctx = parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(ctx.trace_id, TRACE_ID);
        assert_eq!(ctx.parent_id, PARENT_ID);
        assert_eq!(ctx.flags, 0x01);
        assert_eq!(ctx.state, "");
        let ctx = parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert_eq!(ctx.flags, 0x00);
        let ctx = extract(
            &[b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"],
            &[b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"],
        )
        .unwrap();
        assert_eq!(
            ctx.parent_id,
            [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]
        );
        assert_eq!(ctx.state, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    }

    #[test]
    fn version_00_flags_are_kept_whole() {
        let ctx = parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09").unwrap();
        assert_eq!(ctx.flags, 0x09);
    }

    #[test]
    fn surrounding_whitespace_is_not_part_of_the_value() {
        assert!(parent(" \t00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ").is_some());
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        let invalid = [
            "",
            "00",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Version ff is forbidden.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Uppercase hex anywhere.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0F",
            // Version 00 is exactly 55 characters.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            // Wrong delimiters and field lengths.
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "000-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Non-hex characters.
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-.1",
            "xx-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for value in invalid {
            assert_eq!(parent(value), None, "{value:?} should be invalid");
        }
    }

    #[test]
    fn more_than_one_traceparent_is_invalid() {
        assert_eq!(extract(&[SPEC_SAMPLED, SPEC_SAMPLED], &[]), None);
        assert_eq!(extract(&[], &[b"a=1"]), None);
    }

    #[test]
    fn future_versions_parse_the_version_00_prefix() {
        let ctx = parent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            (ctx.trace_id, ctx.parent_id, ctx.flags),
            (TRACE_ID, PARENT_ID, 1)
        );
        let ctx =
            parent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds")
                .unwrap();
        assert_eq!(ctx.trace_id, TRACE_ID);
        // Only the sampled bit is understood in a future version.
        assert_eq!(
            parent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff")
                .unwrap()
                .flags,
            1
        );
        assert_eq!(
            parent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe")
                .unwrap()
                .flags,
            0
        );
        // Longer, but the 56th character is not a dash.
        assert_eq!(
            parent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.future"),
            None
        );
        assert_eq!(
            parent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0"),
            None
        );
        assert_eq!(
            parent("cc-00000000000000000000000000000000-00f067aa0ba902b7-01-x"),
            None
        );
    }

    #[test]
    fn format_then_extract_round_trips() {
        let value = format_traceparent(&TRACE_ID, &PARENT_ID, 1);
        assert_eq!(value.as_bytes(), SPEC_SAMPLED);
        let ctx = parent(&value).unwrap();
        assert_eq!(
            (ctx.trace_id, ctx.parent_id, ctx.flags),
            (TRACE_ID, PARENT_ID, 1)
        );
        assert_eq!(
            format_traceparent(&[0xff; 16], &[0xab; 8], 0),
            format!("00-{}-{}-00", "f".repeat(32), "ab".repeat(8))
        );
    }

    #[test]
    fn tracestate_values_are_combined_in_order() {
        assert_eq!(
            state(&["rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"]),
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
        );
        assert_eq!(
            state(&["foo=1,bar=2", "rojo=1,congo=2", "baz=3"]),
            "foo=1,bar=2,rojo=1,congo=2,baz=3"
        );
    }

    #[test]
    fn tracestate_whitespace_and_empty_members_are_dropped() {
        assert_eq!(state(&[" foo=1 ,\t, bar=2\t", "", "  "]), "foo=1,bar=2");
        assert_eq!(state(&[]), "");
        assert_eq!(state(&[""]), "");
        // A value keeps its leading spaces (they are part of it).
        assert_eq!(state(&["foo= 1"]), "foo= 1");
    }

    #[test]
    fn tracestate_keys_follow_the_level_1_grammar() {
        let valid = [
            "a=1",
            "foo_bar-baz*/9=1",
            "fw529a3039@dt=1",
            "1tenant@sys=1",
            "t@s=1",
        ];
        for v in valid {
            assert_eq!(state(&[v]), v, "{v:?} should be valid");
        }
        let long_key = format!("{}=1", "z".repeat(256));
        assert_eq!(state(&[&long_key]), long_key);
        let long_tenant = format!("{}@{}=1", "t".repeat(241), "v".repeat(14));
        assert_eq!(state(&[&long_tenant]), long_tenant);
        let invalid = [
            "Foo=1",
            "1foo=1",
            "foo.bar=1",
            "foo bar=1",
            "foo@=1",
            "@sys=1",
            "foo@1sys=1",
            "a@b@c=1",
            "=1",
            &format!("{}=1", "z".repeat(257)),
            &format!("{}@v=1", "t".repeat(242)),
            &format!("t@{}=1", "v".repeat(15)),
        ];
        for v in invalid {
            assert_eq!(state(&[v]), "", "{v:?} should be invalid");
        }
    }

    #[test]
    fn tracestate_values_follow_the_grammar() {
        let long_value = format!("foo={}", "v".repeat(256));
        assert_eq!(state(&[&long_value]), long_value);
        for v in [
            "foo=",
            "foo=bar=baz",
            "foo=b\u{7f}r",
            "foo=\u{e9}",
            &format!("foo={}", "v".repeat(257)),
        ] {
            assert_eq!(state(&[v]), "", "{v:?} should be invalid");
        }
        // One bad member invalidates the whole list, in any header field.
        assert_eq!(state(&["foo=1", "bar=2,baz"]), "");
    }

    #[test]
    fn tracestate_rejects_duplicate_keys_and_more_than_32_members() {
        assert_eq!(state(&["foo=1,foo=2"]), "");
        assert_eq!(state(&["foo=1", "foo=1"]), "");
        // A key that is a prefix of another is not a duplicate.
        assert_eq!(state(&["foo=1,foob=2"]), "foo=1,foob=2");
        let members: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(state(&[&members[..32].join(",")]), members[..32].join(","));
        assert_eq!(state(&[&members.join(",")]), "");
        // The limit applies to the combined list.
        assert_eq!(
            state(&[&members[..20].join(","), &members[20..].join(",")]),
            ""
        );
    }

    #[test]
    fn invalid_tracestate_keeps_the_traceparent() {
        let ctx = extract(&[SPEC_SAMPLED], &[b"BAD=1"]).unwrap();
        assert_eq!(ctx.trace_id, TRACE_ID);
        assert_eq!(ctx.state, "");
    }
}
