//! Recognising HTTP/2 from the first bytes the tracer sees of a connection.
//!
//! - The client connection preface (`PRI * HTTP/2.0...`): prior-knowledge h2c, or the first
//!   bytes of any HTTP/2 client. Moving out, the traced process is the client; in, the server.
//! - A SETTINGS frame first: the server's connection preface (RFC 9113 §3.4). Servers often
//!   write it before they read the client's, so it can be the first syscall of a connection.
//!   Moving out, the traced process is the server. Since a SETTINGS frame may also be sent later,
//!   this role is confirmed by the first header block whose pseudo-header fields show which way
//!   requests go (and the parser stops if they show the opposite).
//! - Joined mid-stream, no preface: whole, strict frame headers one after the other (two of
//!   them, or one filling the syscall exactly) and a HEADERS frame among them whose block,
//!   decoded with the static table alone, starts a request (`:method`, `:path`, ...) or a
//!   response (`:status`). Which of the two gives the role. Anything less is not enough: the
//!   detection is retried on the next syscall.

use super::Http2Parser;
use super::fields::Facts;
use super::frame::{self, FrameHeader, HEADER_LEN, PREFACE};
use super::hpack::Decoder;
use super::read::Start;
use crate::span::Role;
use tracer_common::Direction;

/// A prefix of the client preface this long is enough: `PRI * HTTP/2.0`.
const PREFACE_MIN: usize = 14;

/// Settings per SETTINGS frame accepted as a connection preface (servers send a handful).
const MAX_PREFACE_SETTINGS: u32 = 32;

/// The parser and the traced process's role, if `bytes` (the first captured bytes seen moving
/// in `dir`) are clearly HTTP/2.
pub fn detect(dir: Direction, bytes: &[u8]) -> Option<(Http2Parser, Role)> {
    let n = bytes.len().min(PREFACE.len());
    if n >= PREFACE_MIN && bytes[..n] == PREFACE[..n] {
        let role = match dir {
            Direction::Egress => Role::Client,
            Direction::Ingress => Role::Server,
        };
        return Some((Http2Parser::new(role, Start::ClientPreface), role));
    }
    if is_server_preface(bytes) {
        let role = match dir {
            Direction::Egress => Role::Server,
            Direction::Ingress => Role::Client,
        };
        return Some((
            Http2Parser::new(role, Start::ClientPreface).unconfirmed(),
            role,
        ));
    }
    let carries_requests = frames_say_requests(bytes)?;
    let role = match (dir, carries_requests) {
        (Direction::Ingress, true) | (Direction::Egress, false) => Role::Server,
        (Direction::Egress, true) | (Direction::Ingress, false) => Role::Client,
    };
    Some((Http2Parser::new(role, Start::MidStream), role))
}

/// A complete, valid SETTINGS frame (not an acknowledgement) followed by nothing or by strict
/// frame headers.
fn is_server_preface(bytes: &[u8]) -> bool {
    let Some(header) = FrameHeader::parse(bytes) else {
        return false;
    };
    let end = HEADER_LEN + header.length as usize;
    if header.kind != frame::SETTINGS
        || header.flags != 0
        || !header.is_strict(frame::DEFAULT_MAX_FRAME_SIZE)
        || header.length > 6 * MAX_PREFACE_SETTINGS
        || bytes.len() < end
    {
        return false;
    }
    let valid = bytes[HEADER_LEN..end].chunks_exact(6).all(|s| {
        let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
        // Values RFC 9113 §6.5.2 (and RFC 8441, RFC 9218) constrain; other ids are ignored.
        match u16::from_be_bytes([s[0], s[1]]) {
            0x2 | 0x8 | 0x9 => value <= 1,
            0x4 => value <= 0x7fff_ffff,
            0x5 => (frame::DEFAULT_MAX_FRAME_SIZE..=frame::MAX_MAX_FRAME_SIZE).contains(&value),
            _ => true,
        }
    });
    valid
        && (bytes.len() == end
            || frame::starts_frames(bytes, bytes.len() as u64, frame::DEFAULT_MAX_FRAME_SIZE))
}

/// Whether strict frames at the start of `bytes` show requests (`Some(true)`) or responses
/// (`Some(false)`) moving this way; `None` when they do not show it surely.
fn frames_say_requests(bytes: &[u8]) -> Option<bool> {
    if !frame::starts_frames(bytes, bytes.len() as u64, frame::DEFAULT_MAX_FRAME_SIZE) {
        return None;
    }
    let mut at = 0;
    while let Some(header) = bytes.get(at..).and_then(FrameHeader::parse) {
        let payload = at + HEADER_LEN;
        let end = payload + header.length as usize;
        if header.kind == frame::HEADERS {
            // The block's start is enough: pseudo-header fields come first.
            let captured = end <= bytes.len();
            let payload = bytes.get(payload..end.min(bytes.len()))?;
            let fragment = fragment(&header, payload, captured)?;
            let whole = captured && header.has(frame::END_HEADERS);
            let mut facts = Facts::default();
            let outcome = Decoder::without_history().decode(fragment, whole, |f| facts.read(f));
            if outcome.malformed || facts.request_pseudo == facts.response_pseudo {
                return None;
            }
            return Some(facts.request_pseudo);
        }
        at = end;
    }
    None
}

/// The header block fragment of a HEADERS frame's payload (or of its captured prefix, when
/// `whole` is false).
fn fragment<'a>(header: &FrameHeader, payload: &'a [u8], whole: bool) -> Option<&'a [u8]> {
    let mut start = 0;
    let mut pad = 0;
    if header.has(frame::PADDED) {
        pad = usize::from(*payload.first()?);
        start = 1;
    }
    if header.has(frame::PRIORITY_FLAG) {
        start += 5;
    }
    let end = if whole {
        payload.len().checked_sub(pad)?
    } else {
        payload.len()
    };
    payload.get(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend([kind, flags]);
        out.extend(stream.to_be_bytes());
        out.extend(payload);
        out
    }

    fn role(dir: Direction, bytes: &[u8]) -> Option<Role> {
        detect(dir, bytes).map(|(_, role)| role)
    }

    #[test]
    fn client_preface() {
        assert_eq!(role(Direction::Egress, PREFACE), Some(Role::Client));
        assert_eq!(role(Direction::Ingress, PREFACE), Some(Role::Server));
        assert_eq!(
            role(Direction::Ingress, b"PRI * HTTP/2.0\r\n"),
            Some(Role::Server)
        );
        assert_eq!(role(Direction::Ingress, b"PRI * HTTP/2"), None);
        assert_eq!(role(Direction::Ingress, b"PRI * HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn server_preface() {
        // MAX_CONCURRENT_STREAMS 100, INITIAL_WINDOW_SIZE 65535, then a WINDOW_UPDATE.
        let settings = frame(
            frame::SETTINGS,
            0,
            0,
            &[0, 3, 0, 0, 0, 100, 0, 4, 0, 0, 0xff, 0xff],
        );
        assert_eq!(role(Direction::Egress, &settings), Some(Role::Server));
        assert_eq!(role(Direction::Ingress, &settings), Some(Role::Client));
        let mut with_update = settings.clone();
        with_update.extend(frame(frame::WINDOW_UPDATE, 0, 0, &[0, 0x0f, 0, 1]));
        assert_eq!(role(Direction::Egress, &with_update), Some(Role::Server));
        // An empty SETTINGS is a preface too.
        assert_eq!(
            role(Direction::Egress, &frame(frame::SETTINGS, 0, 0, &[])),
            Some(Role::Server)
        );
        // Invalid values, acknowledgements, cut payloads, or garbage after it are not.
        let bad_push = frame(frame::SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 2]);
        assert_eq!(role(Direction::Egress, &bad_push), None);
        assert_eq!(
            role(Direction::Egress, &frame(frame::SETTINGS, 1, 0, &[])),
            None
        );
        assert_eq!(role(Direction::Egress, &settings[..15]), None);
        let mut junk = settings.clone();
        junk.extend(b"GET / HTTP/1.1\r\n");
        assert_eq!(role(Direction::Egress, &junk), None);
    }

    #[test]
    fn mid_stream_frames_need_a_header_block_that_shows_the_direction() {
        // :method POST, :scheme http, :path / (static), then a DATA frame.
        let mut request = frame(frame::HEADERS, frame::END_HEADERS, 7, &[0x83, 0x86, 0x84]);
        request.extend(frame(frame::DATA, frame::END_STREAM, 7, b"\0\0\0\0\0"));
        assert_eq!(role(Direction::Ingress, &request), Some(Role::Server));
        assert_eq!(role(Direction::Egress, &request), Some(Role::Client));
        // :status 200 alone, filling the syscall.
        let response = frame(frame::HEADERS, frame::END_HEADERS, 7, &[0x88]);
        assert_eq!(role(Direction::Ingress, &response), Some(Role::Client));
        assert_eq!(role(Direction::Egress, &response), Some(Role::Server));
        // Dynamic references only: nothing shows the direction.
        let unknown = frame(frame::HEADERS, frame::END_HEADERS, 7, &[0xbe, 0xbf]);
        assert_eq!(role(Direction::Ingress, &unknown), None);
        // DATA only.
        let data = frame(frame::DATA, 0, 7, b"hello");
        assert_eq!(role(Direction::Ingress, &data), None);
        // A HEADERS frame that does not fill the syscall, alone: not enough.
        let mut short = frame(frame::HEADERS, frame::END_HEADERS, 7, &[0x83, 0x86, 0x84]);
        short.push(0);
        assert_eq!(role(Direction::Ingress, &short), None);
        // A malformed block.
        let bad = frame(frame::HEADERS, frame::END_HEADERS, 7, &[0x83, 0x80]);
        assert_eq!(role(Direction::Ingress, &bad), None);
        // Text protocols never look like frames.
        assert_eq!(
            role(Direction::Ingress, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            None
        );
        assert_eq!(role(Direction::Ingress, b"*1\r\n$4\r\nPING\r\n"), None);
    }
}
