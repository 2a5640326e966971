//! Capture limits: syscalls of which only a prefix was captured.

use super::*;

/// How much of each syscall the kernel captures in these tests.
const CAPTURE: usize = 4096;

impl Conn {
    /// One syscall moving `bytes`, of which the first `CAPTURE` are captured.
    fn io_capped(&mut self, dir: Direction, bytes: &[u8], n: u64) -> &mut Self {
        let captured = &bytes[..bytes.len().min(CAPTURE)];
        self.io_cut(dir, captured, bytes.len() as u64, n)
    }
}

#[test]
fn data_larger_than_the_capture_is_counted_through_the_gap() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::server();
    c.io(IN, &client.preface(), 1);
    // A 40 kB upload in three writes, each captured in part.
    let mut upload = client.grpc_head(1, "/files.v1.Files/Put", &[]);
    upload.extend(data(1, false, &message(16_000)));
    c.io_capped(IN, &upload, 2);
    c.io_capped(IN, &data(1, false, &vec![7; 16_384]), 3);
    c.io_capped(IN, &data(1, true, &vec![7; 8_000]), 4);
    // The reply: head and a 16 kB message in one write, trailers in the next.
    let mut reply = server.grpc_head(1);
    reply.extend(data(1, false, &message(16_000)));
    c.io_capped(OUT, &reply, 5);
    c.io_capped(OUT, &server.grpc_trailers(1, "0"), 6);
    // The next call still parses.
    c.io_capped(IN, &client.grpc_call(3, "/files.v1.Files/Stat", &[]), 7);
    c.io_capped(OUT, &server.grpc_reply(3, "0", 1), 8);
    assert_eq!(
        c.summary(),
        vec![
            req(1, "files.v1.Files/Put", 2),
            ok(1, 6),
            req(3, "files.v1.Files/Stat", 7),
            ok(3, 8),
        ]
    );
    assert_eq!(c.stats, ParseStats::default());
    assert_eq!(
        attr(&responses(&c.events)[0].attributes, "rpc.grpc.status_code"),
        Some(&Value::Int(0))
    );
}

#[test]
fn a_header_block_cut_by_the_capture_gives_its_captured_fields_and_loses_the_table() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::server();
    c.io(IN, &client.preface(), 1);
    // A value that fits the encoder's 4096-byte table (so nothing is evicted there) but whose
    // Huffman code (19 bits per backslash) runs far past the capture.
    let big = "\\".repeat(3_500);
    // The pseudo-header fields come first and are captured; the large field runs past the
    // capture, then another new field the encoder inserts.
    let head = client.grpc_head(
        1,
        "/shop.v1.Orders/Get",
        &[("x-big", &big), ("x-after", "tail")],
    );
    c.io_capped(IN, &head, 2);
    c.io(IN, &data(1, true, &message(12)), 3);
    c.io(OUT, &server.grpc_reply(1, "0", 1), 4);
    // The next call refers to entries of the cut block (x-after, inserted past the cut) and
    // from before (the path): the table lost them, they are unknown, not guessed.
    c.io(
        IN,
        &client.grpc_call(3, "/shop.v1.Orders/Get", &[("x-after", "tail")]),
        5,
    );
    c.io(OUT, &server.grpc_reply(3, "0", 1), 6);
    assert_eq!(
        c.summary(),
        vec![
            req(1, "shop.v1.Orders/Get", 2),
            ok(1, 4),
            req(3, "POST", 5),
            ok(3, 6),
        ]
    );
    assert_eq!(c.stats.damaged_header_blocks, 1);
    assert_eq!(c.stats.unnamed_requests, 1);
    assert_eq!(c.stats.resyncs, 0, "the frames stayed in sync");
}

#[test]
fn a_frame_header_past_the_capture_loses_the_framing_until_the_next_syscall() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::client();
    c.io(OUT, &client.preface(), 1).io(IN, &server.preface(), 2);
    let mut calls = client.grpc_call(1, "/s.S/Big", &[]);
    calls.extend(client.grpc_call(3, "/s.S/Small", &[]));
    c.io(OUT, &calls, 3);
    // Go-style: head, a 10 kB message and trailers in one write. The trailers' frame header
    // is past the capture: stream 1's end is not seen.
    let mut big = server.grpc_head(1);
    big.extend(data(1, false, &message(10_000)));
    big.extend(server.grpc_trailers(1, "0"));
    c.io_capped(IN, &big, 5);
    // The next write starts with frames: reading resumes. Stream 3 ends normally; its status
    // is a reference into the part of the table the lost trailers changed.
    c.io(IN, &server.grpc_reply(3, "0", 1), 6);
    c.close(9);
    assert_eq!(
        c.summary(),
        vec![
            req(1, "s.S/Big", 3),
            req(3, "s.S/Small", 3),
            Ev::Resp(3, 6, None),
            Ev::Gone(1, 5, "end of stream not captured"),
        ]
    );
    // Stream 3's status could not be read: no status, and no error claimed.
    assert_eq!(responses(&c.events)[0].attributes, vec![]);
    assert_eq!(c.stats.resyncs, 1);
}

#[test]
fn streams_whose_frames_come_back_after_a_loss_continue() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::client();
    c.io(OUT, &client.preface(), 1).io(IN, &server.preface(), 2);
    c.io(OUT, &client.grpc_call(1, "/s.S/Watch", &[]), 3);
    // Server streaming with large messages: each write loses the framing after its first
    // frame, the next write starts with frames again.
    let mut first = server.grpc_head(1);
    first.extend(data(1, false, &message(8_000)));
    first.extend(data(1, false, &message(10)));
    c.io_capped(IN, &first, 4);
    // One frame filling its write: reading resumes there.
    c.io_capped(IN, &data(1, false, &message(8_000)), 5);
    c.io(IN, &server.grpc_trailers(1, "0"), 6);
    // grpc-status is new to the encoder, a literal: read whatever the table lost.
    assert_eq!(c.summary(), vec![req(1, "s.S/Watch", 3), ok(1, 6)]);
    assert_eq!(c.stats.resyncs, 1);
}

#[test]
fn an_uncaptured_syscall_between_frames_is_skipped() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::server();
    c.io(IN, &client.preface(), 1);
    c.io(IN, &client.grpc_call(1, "/s.S/A", &[]), 2);
    // A read whose bytes were not captured at all (a fault in the kernel's copy).
    c.io_cut(IN, b"", 300, 3);
    c.io(IN, &client.grpc_call(3, "/s.S/B", &[]), 4);
    c.io(OUT, &server.grpc_reply(1, "0", 1), 5);
    c.io(OUT, &server.grpc_reply(3, "0", 1), 6);
    // Header blocks may have been in the lost bytes: stream 3's references to earlier
    // entries (content-type among them) are unknown, so it is not known to be gRPC.
    assert_eq!(
        c.summary(),
        vec![
            req(1, "s.S/A", 2),
            req(3, "POST /s.S/B", 4),
            ok(1, 5),
            ok(3, 6),
        ]
    );
    assert_eq!((c.stats.resyncs, c.stats.skipped_bytes), (1, 300));
}

#[test]
fn a_padded_header_block_whose_first_byte_is_not_captured() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::server();
    c.io(IN, &client.preface(), 1);
    let block = client
        .hpack
        .block(&[(":method", "GET"), (":scheme", "http"), (":path", "/a")]);
    let mut payload = vec![3];
    payload.extend(&block);
    payload.extend([0; 3]);
    let headers = frame(
        frame::HEADERS,
        frame::END_HEADERS | frame::END_STREAM | frame::PADDED,
        1,
        &payload,
    );
    // Only the frame header is captured.
    c.io_cut(IN, &headers[..9], headers.len() as u64, 2);
    c.io(OUT, &server.reply(1, "200", b"x"), 3);
    // Nothing of the block was read: a request of unknown method and path.
    assert_eq!(c.summary(), vec![req(1, "HTTP", 2), ok(1, 3)]);
    assert_eq!(c.stats.unnamed_requests, 1);
}

impl Conn {
    /// One syscall moving `bytes`, captured like the kernel does on an HTTP/2 socket: the
    /// first `CAPTURE` bytes, plus every frame header past them (with the payload of small
    /// header blocks) found by walking the frames from the syscall's start.
    fn io_hinted(&mut self, dir: Direction, bytes: &[u8], n: u64) -> &mut Self {
        let captured = &bytes[..bytes.len().min(CAPTURE)];
        let mut runs = Vec::new();
        let mut off = 0;
        while off + 9 <= bytes.len() {
            let len = u32::from_be_bytes([0, bytes[off], bytes[off + 1], bytes[off + 2]]) as usize;
            if off + 9 > CAPTURE {
                let small_block = matches!(bytes[off + 3], 1 | 9) && len <= 64;
                let end = off + 9 + if small_block { len } else { 0 };
                runs.push((off as u64, bytes[off..end].to_vec()));
            }
            off += 9 + len;
        }
        let parser = self.parser.as_mut().expect("detected");
        let stream = &mut self.streams[dir as usize];
        stream.push_runs(captured, &runs, bytes.len() as u64, t(n));
        parser.feed(dir, stream, &mut self.events, &mut self.stats);
        self
    }
}

/// gRPC's usual large reply: head, a message far larger than the capture and the trailers,
/// in one write. Only the kernel's frame hints show where the trailers are.
#[test]
fn trailers_past_the_capture_arrive_as_frame_hints() {
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut c = Conn::server();
    c.io(IN, &client.preface(), 1);
    c.io(IN, &client.grpc_call(1, "/shop.v1.Catalog/Dump", &[]), 2);
    let mut reply = server.grpc_head(1);
    // A 39 kB message in frames of at most 16 KiB, as encoders send it.
    for _ in 0..3 {
        reply.extend(data(1, false, &message(13_000)));
    }
    reply.extend(server.grpc_trailers(1, "13"));
    c.io_hinted(OUT, &reply, 3);
    // And the connection goes on in sync.
    c.io(IN, &client.grpc_call(3, "/shop.v1.Catalog/Get", &[]), 4);
    c.io_hinted(OUT, &server.grpc_reply(3, "0", 1), 5);
    assert_eq!(
        c.summary(),
        vec![
            req(1, "shop.v1.Catalog/Dump", 2),
            failed(1, 3, "gRPC status 13 (INTERNAL)"),
            req(3, "shop.v1.Catalog/Get", 4),
            ok(3, 5),
        ]
    );
}

/// A frame header of the response direction starts in one syscall (2), the client then sends
/// a request (3), and the header's end (4) shows the framing is broken. The loss is dated from
/// syscall 2, before the request: the stream, unsure from then on, is abandoned at the close,
/// but not before it began. Found by the `http2` fuzz target.
#[test]
fn a_stream_opened_after_the_framing_was_lost_is_not_abandoned_before_it_began() {
    let mut client = Client::new();
    let mut c = Conn::client();
    c.io(OUT, &client.preface(), 1)
        .io(IN, &[0, 0, 0, frame::HEADERS, 0xff, 0, 0, 0], 2)
        .io(OUT, &client.get(1, "/a", &[]), 3)
        .io(
            IN,
            b"\x01\x00\x00Et port 50\xff\xff\xff\"/address></body></html>",
            4,
        )
        .close(5);
    let summary = c.summary();
    assert_eq!(summary[0], req(1, "GET /a", 3));
    let Ev::Gone(1, at, _) = summary[1] else {
        panic!("{summary:?}");
    };
    assert!(
        at >= 3,
        "abandoned at syscall {at}, before its request: {summary:?}"
    );
}
