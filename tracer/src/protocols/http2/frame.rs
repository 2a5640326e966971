//! HTTP/2 frame headers (RFC 9113 §4.1, §6): decoding, the rules a frame header must follow,
//! and the stricter test used to find frames in bytes of unknown origin.

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Length of a frame header.
pub const HEADER_LEN: usize = 9;

/// SETTINGS_MAX_FRAME_SIZE when not announced (RFC 9113 §6.5.2), and its ceiling.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

/// SETTINGS identifiers the parser reads.
pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub length: u32,
    pub kind: u8,
    pub flags: u8,
    /// The stream identifier, reserved bit cleared.
    pub stream: u32,
}

impl FrameHeader {
    /// Decodes the header at the front of `bytes` (at least [`HEADER_LEN`] bytes).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let b: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Self {
            length: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        })
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Whether the header obeys the rules whose violation makes a peer close the connection
    /// (RFC 9113 §6: which frames belong to a stream, fixed payload sizes, room for padding),
    /// with frames at most `max_length` long. A header breaking them means the parser is not
    /// where it thinks it is.
    pub fn is_valid(&self, max_length: u32) -> bool {
        if self.length > max_length {
            return false;
        }
        let on_stream = self.stream != 0;
        let padding = u32::from(self.has(PADDED));
        match self.kind {
            DATA => on_stream && self.length >= padding,
            HEADERS => {
                let priority = if self.has(PRIORITY_FLAG) { 5 } else { 0 };
                on_stream && self.length >= padding + priority
            }
            PRIORITY => on_stream && self.length == 5,
            RST_STREAM => on_stream && self.length == 4,
            SETTINGS => {
                !on_stream && self.length.is_multiple_of(6) && (!self.has(ACK) || self.length == 0)
            }
            PUSH_PROMISE => on_stream && self.length >= padding + 4,
            PING => !on_stream && self.length == 8,
            GOAWAY => !on_stream && self.length >= 8,
            WINDOW_UPDATE => self.length == 4,
            CONTINUATION => on_stream,
            // Unknown types are ignored by peers (RFC 9113 §5.5).
            _ => true,
        }
    }

    /// [`Self::is_valid`], and also a known type with only defined flags: what a frame must
    /// look like before bytes of unknown origin are believed to be HTTP/2.
    pub fn is_strict(&self, max_length: u32) -> bool {
        let defined = match self.kind {
            DATA => END_STREAM | PADDED,
            HEADERS => END_STREAM | END_HEADERS | PADDED | PRIORITY_FLAG,
            SETTINGS | PING => ACK,
            PUSH_PROMISE => END_HEADERS | PADDED,
            CONTINUATION => END_HEADERS,
            PRIORITY | RST_STREAM | GOAWAY | WINDOW_UPDATE => 0,
            _ => return false,
        };
        self.flags & !defined == 0 && self.is_valid(max_length)
    }
}

/// Whether one syscall's bytes (`captured` of its `total`) start with whole HTTP/2 frames:
/// strict frame headers one after the other, either at least two of them within the captured
/// bytes or one that ends exactly where the syscall does. Used to pick the stream up again at a
/// syscall boundary after the framing was lost; a header block cannot start with CONTINUATION.
pub fn starts_frames(captured: &[u8], total: u64, max_length: u32) -> bool {
    let mut at = 0u64;
    let mut headers = 0;
    let mut open_block = false;
    while at < total {
        let Some(header) = captured.get(at as usize..).and_then(FrameHeader::parse) else {
            // The next header is not captured: judge on what was seen.
            return headers >= 2;
        };
        if !header.is_strict(max_length) || (header.kind == CONTINUATION) != open_block {
            return false;
        }
        open_block = matches!(header.kind, HEADERS | PUSH_PROMISE | CONTINUATION)
            && !header.has(END_HEADERS);
        headers += 1;
        at += HEADER_LEN as u64 + u64::from(header.length);
    }
    (headers >= 1 && at == total) || headers >= 2
}

/// The name of an error code (RFC 9113 §7), for messages.
pub fn reset_reason(code: Option<u32>) -> &'static str {
    match code {
        Some(0x0) => "stream reset: NO_ERROR",
        Some(0x1) => "stream reset: PROTOCOL_ERROR",
        Some(0x2) => "stream reset: INTERNAL_ERROR",
        Some(0x3) => "stream reset: FLOW_CONTROL_ERROR",
        Some(0x4) => "stream reset: SETTINGS_TIMEOUT",
        Some(0x5) => "stream reset: STREAM_CLOSED",
        Some(0x6) => "stream reset: FRAME_SIZE_ERROR",
        Some(0x7) => "stream reset: REFUSED_STREAM",
        Some(0x8) => "stream reset: CANCEL",
        Some(0x9) => "stream reset: COMPRESSION_ERROR",
        Some(0xa) => "stream reset: CONNECT_ERROR",
        Some(0xb) => "stream reset: ENHANCE_YOUR_CALM",
        Some(0xc) => "stream reset: INADEQUATE_SECURITY",
        Some(0xd) => "stream reset: HTTP_1_1_REQUIRED",
        Some(_) => "stream reset: unknown error code",
        None => "stream reset",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(length: u32, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
        let mut out = length.to_be_bytes()[1..].to_vec();
        out.extend([kind, flags]);
        out.extend(stream.to_be_bytes());
        out
    }

    #[test]
    fn parses_the_nine_bytes_and_clears_the_reserved_bit() {
        let bytes = [
            0x01, 0x02, 0x03, HEADERS, 0x25, 0x80, 0x00, 0x00, 0x05, 0xff,
        ];
        assert_eq!(
            FrameHeader::parse(&bytes),
            Some(FrameHeader {
                length: 0x010203,
                kind: HEADERS,
                flags: 0x25,
                stream: 5,
            })
        );
        assert_eq!(FrameHeader::parse(&bytes[..8]), None);
    }

    #[test]
    fn validity_rules() {
        let ok = |len, kind, flags, stream| {
            FrameHeader::parse(&header(len, kind, flags, stream))
                .unwrap()
                .is_valid(DEFAULT_MAX_FRAME_SIZE)
        };
        assert!(ok(0, DATA, END_STREAM, 1));
        assert!(!ok(0, DATA, 0, 0), "DATA on stream 0");
        assert!(!ok(0, DATA, PADDED, 1), "no room for the pad length");
        assert!(ok(6, HEADERS, PADDED | PRIORITY_FLAG, 3));
        assert!(!ok(5, HEADERS, PADDED | PRIORITY_FLAG, 3));
        assert!(ok(5, PRIORITY, 0, 3) && !ok(4, PRIORITY, 0, 3));
        assert!(ok(4, RST_STREAM, 0, 3) && !ok(4, RST_STREAM, 0, 0));
        assert!(ok(12, SETTINGS, 0, 0) && !ok(7, SETTINGS, 0, 0));
        assert!(!ok(6, SETTINGS, ACK, 0) && ok(0, SETTINGS, ACK, 0));
        assert!(!ok(6, SETTINGS, 0, 1));
        assert!(ok(8, PING, ACK, 0) && !ok(8, PING, 0, 1) && !ok(9, PING, 0, 0));
        assert!(ok(8, GOAWAY, 0, 0) && !ok(7, GOAWAY, 0, 0));
        assert!(ok(4, WINDOW_UPDATE, 0, 0) && ok(4, WINDOW_UPDATE, 0, 9));
        assert!(ok(4, PUSH_PROMISE, 0, 1) && !ok(4, PUSH_PROMISE, PADDED, 1));
        assert!(!ok(0, CONTINUATION, 0, 0));
        assert!(ok(3, 0xfa, 0xff, 0), "unknown types are allowed");
        assert!(!ok(DEFAULT_MAX_FRAME_SIZE + 1, DATA, 0, 1));
        let strict = |len, kind, flags, stream| {
            FrameHeader::parse(&header(len, kind, flags, stream))
                .unwrap()
                .is_strict(DEFAULT_MAX_FRAME_SIZE)
        };
        assert!(strict(0, DATA, END_STREAM, 1));
        assert!(!strict(0, DATA, 0x40, 1), "undefined flag");
        assert!(!strict(3, 0xfa, 0, 1), "unknown type");
    }

    #[test]
    fn frame_runs_at_syscall_starts() {
        let settings = header(6, SETTINGS, 0, 0);
        let mut run = settings.clone();
        run.extend([0, 4, 0, 1, 0, 0]);
        // One frame filling the syscall exactly.
        assert!(starts_frames(
            &run,
            run.len() as u64,
            DEFAULT_MAX_FRAME_SIZE
        ));
        // One frame whose end is not the syscall's: not enough.
        assert!(!starts_frames(
            &run,
            run.len() as u64 + 3,
            DEFAULT_MAX_FRAME_SIZE
        ));
        // Two frames, the second running past the capture.
        run.extend(header(100, DATA, 0, 1));
        run.extend([0; 10]);
        assert!(starts_frames(&run, 1_000, DEFAULT_MAX_FRAME_SIZE));
        // A header block cannot start in the middle.
        let cont = header(0, CONTINUATION, END_HEADERS, 1);
        assert!(!starts_frames(
            &cont,
            cont.len() as u64,
            DEFAULT_MAX_FRAME_SIZE
        ));
        // HEADERS without END_HEADERS must be followed by CONTINUATION.
        let mut open = header(0, HEADERS, 0, 1);
        open.extend(header(4, WINDOW_UPDATE, 0, 0));
        assert!(!starts_frames(&open, 1_000, DEFAULT_MAX_FRAME_SIZE));
        // Text is not frames.
        let text = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(!starts_frames(
            text,
            text.len() as u64,
            DEFAULT_MAX_FRAME_SIZE
        ));
        assert!(!starts_frames(b"", 0, DEFAULT_MAX_FRAME_SIZE));
    }

    #[test]
    fn reset_reasons_name_the_code() {
        assert_eq!(reset_reason(Some(8)), "stream reset: CANCEL");
        assert_eq!(reset_reason(Some(0x99)), "stream reset: unknown error code");
        assert_eq!(reset_reason(None), "stream reset");
    }
}
