//! Any split of valid conversations into syscalls gives the same spans.
//!
//! A conversation: process 1 serves HTTP/1 keep-alive requests from an untraced client; while
//! serving one, its thread calls process 2, over one prior-knowledge h2c connection (gRPC,
//! answers in one to three writes, trailers-only errors) or one HTTP/1 keep-alive connection.
//! Both ends of those calls are traced, so spans get parents in-process (same thread) and
//! across processes (the two ends of a connection).
//!
//! The reference run gives each write one syscall on each end. A split run cuts every write
//! into up to four syscalls, lets a reader take two consecutive writes in one read, and cuts
//! the capture of some syscalls where the rest is body (HTTP/1) or DATA payload (HTTP/2; the
//! frame headers after the cut then come as runs, as the kernel's frame walk sends them). Its
//! spans must equal the reference's: names, attributes, statuses, parents, and times taken
//! from the syscalls that carried the same bytes (first byte of a request, last of a response).

use std::{collections::HashMap, ops::Range};

use bytes::Bytes;
use httlib_hpack::Encoder;
use tracer_common::Direction::{self, Egress, Ingress};

use super::{Rng, Shape, io, open, pipeline, shapes};
use crate::{
    capture::{CaptureEvent, SocketId},
    protocols::http2::frame,
};

/// A traced process's socket, and the thread that uses it.
#[derive(Clone, Copy, Debug)]
struct End {
    socket: SocketId,
    tid: u32,
}

const FRONT_IN: End = End {
    socket: SocketId {
        tgid: 1,
        fd: 4,
        conn_gen: 10,
    },
    tid: 7,
};
const GRPC_OUT: End = End {
    socket: SocketId {
        tgid: 1,
        fd: 5,
        conn_gen: 11,
    },
    tid: 7,
};
const GRPC_IN: End = End {
    socket: SocketId {
        tgid: 2,
        fd: 6,
        conn_gen: 12,
    },
    tid: 9,
};
const HTTP_OUT: End = End {
    socket: SocketId {
        tgid: 1,
        fd: 8,
        conn_gen: 13,
    },
    tid: 7,
};
const HTTP_IN: End = End {
    socket: SocketId {
        tgid: 2,
        fd: 9,
        conn_gen: 14,
    },
    tid: 9,
};

/// One write: bytes from one end to the other (an end is `None` when not traced).
#[derive(Debug, Default)]
struct Message {
    from: Option<End>,
    to: Option<End>,
    bytes: Vec<u8>,
    /// Ranges of `bytes` the parsers count but never read: HTTP/1 bodies, DATA payloads.
    opaque: Vec<Range<usize>>,
    /// HTTP/2 frames in `bytes`: (start, type, payload length).
    frames: Vec<(usize, u8, usize)>,
}

impl Message {
    fn new(from: Option<End>, to: Option<End>) -> Self {
        Self {
            from,
            to,
            ..Self::default()
        }
    }

    fn text(mut self, text: &str) -> Self {
        self.bytes.extend_from_slice(text.as_bytes());
        self
    }

    fn body(mut self, len: usize) -> Self {
        let start = self.bytes.len();
        self.bytes.extend((0..len).map(|i| b'a' + (i % 26) as u8));
        self.opaque.push(start..self.bytes.len());
        self
    }

    fn frame(mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Self {
        let start = self.bytes.len();
        self.bytes
            .extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        self.bytes.extend([kind, flags]);
        self.bytes.extend(stream.to_be_bytes());
        self.bytes.extend_from_slice(payload);
        self.frames.push((start, kind, payload.len()));
        if kind == frame::DATA {
            self.opaque
                .push(start + frame::HEADER_LEN..self.bytes.len());
        }
        self
    }

    fn headers(
        self,
        hpack: &mut Encoder<'static>,
        stream: u32,
        end: bool,
        fields: &[(&str, &str)],
    ) -> Self {
        let mut block = Vec::new();
        for (name, value) in fields {
            let flags = Encoder::BEST_FORMAT | Encoder::WITH_INDEXING | Encoder::HUFFMAN_VALUE;
            hpack
                .encode(
                    (name.as_bytes().to_vec(), value.as_bytes().to_vec(), flags),
                    &mut block,
                )
                .unwrap();
        }
        let flags = frame::END_HEADERS | if end { frame::END_STREAM } else { 0 };
        self.frame(frame::HEADERS, flags, stream, &block)
    }

    /// A gRPC message of `len` bytes in one DATA frame.
    fn grpc_message(self, stream: u32, end: bool, len: usize) -> Self {
        let mut payload = vec![0];
        payload.extend((len as u32).to_be_bytes());
        payload.resize(5 + len, b'm');
        let flags = if end { frame::END_STREAM } else { 0 };
        self.frame(frame::DATA, flags, stream, &payload)
    }
}

/// The h2c connection between the two processes.
struct H2 {
    client: Encoder<'static>,
    server: Encoder<'static>,
    next_stream: u32,
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const GRPC_METHODS: [&str; 3] = [
    "/shop.v1.Orders/Get",
    "/shop.v1.Stock/Reserve",
    "/grpc.health.v1.Health/Check",
];

fn conversation(rng: &mut Rng) -> Vec<Message> {
    let mut out = Vec::new();
    let mut h2: Option<H2> = None;
    for n in 0..2 + rng.below(4) {
        let with_context = rng.chance(40);
        let context = match with_context {
            true => format!("traceparent: {TRACEPARENT}\r\n"),
            false => String::new(),
        };
        let kind = rng.below(4);
        let head = match kind {
            0 | 1 => format!("GET /users/{n} HTTP/1.1\r\nHost: shop\r\n{context}\r\n"),
            2 => format!(
                "POST /orders HTTP/1.1\r\nHost: shop\r\nContent-Length: {}\r\n{context}\r\n",
                100 + n
            ),
            _ => format!("GET /fail HTTP/1.1\r\nHost: shop\r\n{context}\r\n"),
        };
        let mut request = Message::new(None, Some(FRONT_IN)).text(&head);
        if kind == 2 {
            request = request.body(100 + n);
        }
        out.push(request);
        for _ in 0..rng.below(3) {
            if rng.chance(60) {
                grpc_call(&mut out, &mut h2, rng, with_context);
            } else {
                http1_call(&mut out, rng);
            }
        }
        let front_out = Message::new(Some(FRONT_IN), None);
        match kind {
            0 | 1 => {
                let len = 10 + rng.below(8000);
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                if rng.chance(50) {
                    out.push(front_out.text(&head).body(len));
                } else {
                    out.push(front_out.text(&head));
                    out.push(Message::new(Some(FRONT_IN), None).body(len));
                }
            }
            2 => out.push(front_out.text("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")),
            _ => out.push(front_out.text(
                "HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5\r\nerror\r\n0\r\n\r\n",
            )),
        }
    }
    out
}

fn grpc_call(out: &mut Vec<Message>, h2: &mut Option<H2>, rng: &mut Rng, forward: bool) {
    let h2 = h2.get_or_insert_with(|| {
        let mut preface = Message::new(Some(GRPC_OUT), Some(GRPC_IN))
            .text(std::str::from_utf8(frame::PREFACE).unwrap());
        preface = preface.frame(frame::SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 0]);
        out.push(preface);
        let settings = Message::new(Some(GRPC_IN), Some(GRPC_OUT))
            .frame(frame::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100])
            .frame(frame::SETTINGS, frame::ACK, 0, &[]);
        out.push(settings);
        H2 {
            client: Encoder::default(),
            server: Encoder::default(),
            next_stream: 1,
        }
    });
    let stream = h2.next_stream;
    h2.next_stream += 2;
    let path = GRPC_METHODS[rng.below(GRPC_METHODS.len())];
    let mut fields = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "orders:50051"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    if forward {
        fields.push(("traceparent", TRACEPARENT));
    }
    let call = Message::new(Some(GRPC_OUT), Some(GRPC_IN))
        .headers(&mut h2.client, stream, false, &fields)
        .grpc_message(stream, true, 5 + rng.below(200));
    out.push(call);
    let reply = || Message::new(Some(GRPC_IN), Some(GRPC_OUT));
    let code = ["0", "0", "5", "13"][rng.below(4)];
    let head = [(":status", "200"), ("content-type", "application/grpc")];
    let trailers = [("grpc-status", code), ("grpc-message", "")];
    match rng.below(4) {
        0 => {
            let mut fields = head.to_vec();
            fields.extend([("grpc-status", code), ("grpc-message", "nope")]);
            out.push(reply().headers(&mut h2.server, stream, true, &fields));
        }
        1 => out.push(
            reply()
                .headers(&mut h2.server, stream, false, &head)
                .grpc_message(stream, false, 10 + rng.below(16_000))
                .headers(&mut h2.server, stream, true, &trailers),
        ),
        2 => {
            out.push(
                reply()
                    .headers(&mut h2.server, stream, false, &head)
                    .grpc_message(stream, false, 10 + rng.below(16_000)),
            );
            out.push(reply().headers(&mut h2.server, stream, true, &trailers));
        }
        _ => {
            out.push(reply().headers(&mut h2.server, stream, false, &head));
            out.push(reply().grpc_message(stream, false, 10 + rng.below(16_000)));
            out.push(reply().headers(&mut h2.server, stream, true, &trailers));
        }
    }
}

fn http1_call(out: &mut Vec<Message>, rng: &mut Rng) {
    let id = rng.below(1000);
    out.push(Message::new(Some(HTTP_OUT), Some(HTTP_IN)).text(&format!(
        "GET /price/{id} HTTP/1.1\r\nHost: prices:9090\r\n\r\n"
    )));
    let status = ["200 OK", "404 Not Found", "503 Unavailable"][rng.below(3)];
    let len = 2 + rng.below(6000);
    out.push(
        Message::new(Some(HTTP_IN), Some(HTTP_OUT))
            .text(&format!(
                "HTTP/1.1 {status}\r\nContent-Length: {len}\r\n\r\n"
            ))
            .body(len),
    );
}

/// One direction of one socket: what the tracer sees as one stream.
type Side = (SocketId, Direction);

/// A syscall's range in its side's stream, and its (enter, exit) times.
type Carried = (Range<usize>, (u64, u64));

/// Syscall times of a run, to tell which syscall carried which byte.
#[derive(Default)]
struct Timeline {
    /// Per side: each syscall's stream range and (enter, exit) times.
    syscalls: HashMap<Side, Vec<Carried>>,
    /// Per side and message: the message's stream range.
    messages: HashMap<(Side, usize), Range<usize>>,
}

impl Timeline {
    /// (enter, exit) of the syscall that carried the first (or last) byte of message `msg`.
    fn times(&self, side: Side, msg: usize, first: bool) -> (u64, u64) {
        let range = &self.messages[&(side, msg)];
        let byte = if first { range.start } else { range.end - 1 };
        self.syscalls[&side]
            .iter()
            .find(|(r, _)| r.contains(&byte))
            .map(|(_, t)| *t)
            .expect("every byte was carried")
    }
}

/// The capture events of a conversation: each write one syscall per end (`rng` None), or split,
/// merged and cut at random.
fn events(
    messages: &[Message],
    mut rng: Option<&mut Rng>,
) -> (Vec<CaptureEvent<'static>>, Timeline) {
    let mut events = vec![
        open(FRONT_IN.socket, true, "127.0.0.1:8080", "10.1.2.3:5555", 1),
        open(
            GRPC_OUT.socket,
            false,
            "127.0.0.1:40000",
            "127.0.0.1:50051",
            1,
        ),
        open(GRPC_IN.socket, true, "0.0.0.0:50051", "127.0.0.1:40000", 1),
        open(
            HTTP_OUT.socket,
            false,
            "127.0.0.1:40001",
            "127.0.0.1:9090",
            1,
        ),
        open(HTTP_IN.socket, true, "0.0.0.0:9090", "127.0.0.1:40001", 1),
    ];
    let mut timeline = Timeline::default();
    let mut offsets: HashMap<Side, usize> = HashMap::new();
    let mut clock = 1_000u64;
    // A read that waits to take the next message too: (end, message indices).
    let mut waiting: Option<(End, Vec<usize>)> = None;
    for (i, msg) in messages.iter().enumerate() {
        if let Some(end) = msg.from {
            let side = (end.socket, Egress);
            let at = offsets.entry(side).or_default();
            timeline
                .messages
                .insert((side, i), *at..*at + msg.bytes.len());
            *at += msg.bytes.len();
            emit(
                &mut events,
                &mut timeline,
                &mut clock,
                end,
                Egress,
                messages,
                &[i],
                rng.as_deref_mut(),
            );
        }
        let Some(end) = msg.to else { continue };
        let side = (end.socket, Ingress);
        let at = offsets.entry(side).or_default();
        timeline
            .messages
            .insert((side, i), *at..*at + msg.bytes.len());
        *at += msg.bytes.len();
        let mut batch = match waiting.take() {
            Some((_, batch)) => batch,
            None => Vec::new(),
        };
        batch.push(i);
        let next_same = messages.get(i + 1).is_some_and(|next| {
            next.from.map(|e| e.socket) == msg.from.map(|e| e.socket)
                && next.to.map(|e| e.socket) == Some(end.socket)
        });
        if next_same && rng.as_deref_mut().is_some_and(|r| r.chance(30)) {
            waiting = Some((end, batch));
            continue;
        }
        emit(
            &mut events,
            &mut timeline,
            &mut clock,
            end,
            Ingress,
            messages,
            &batch,
            rng.as_deref_mut(),
        );
    }
    (events, timeline)
}

/// Emits the syscalls of one end moving `batch` (consecutive messages) in `dir`.
#[allow(clippy::too_many_arguments)]
fn emit(
    events: &mut Vec<CaptureEvent<'static>>,
    timeline: &mut Timeline,
    clock: &mut u64,
    end: End,
    dir: Direction,
    messages: &[Message],
    batch: &[usize],
    mut rng: Option<&mut Rng>,
) {
    let side = (end.socket, dir);
    let start = timeline.messages[&(side, batch[0])].start;
    let mut bytes = Vec::new();
    let mut opaque = Vec::new();
    let mut frames = Vec::new();
    for &i in batch {
        let base = bytes.len();
        let m = &messages[i];
        bytes.extend_from_slice(&m.bytes);
        opaque.extend(m.opaque.iter().map(|r| r.start + base..r.end + base));
        frames.extend(m.frames.iter().map(|&(s, k, l)| (s + base, k, l)));
    }
    let mut cuts = vec![0, bytes.len()];
    if let Some(rng) = rng.as_deref_mut() {
        cuts.extend((0..rng.below(4)).map(|_| rng.below(bytes.len())));
    }
    cuts.sort_unstable();
    cuts.dedup();
    for piece in cuts.windows(2) {
        let (a, b) = (piece[0], piece[1]);
        let (captured, runs) = match rng.as_deref_mut() {
            Some(rng) => match rng.chance(40) {
                true => capture_cut(&bytes, a..b, &opaque, &frames, rng),
                false => (b, Vec::new()),
            },
            None => (b, Vec::new()),
        };
        let times = (*clock, *clock + 5);
        *clock += 100;
        events.push(io(
            end.socket,
            end.tid,
            times,
            dir,
            &bytes[a..captured],
            (b - a) as u64,
            runs,
        ));
        timeline
            .syscalls
            .entry(side)
            .or_default()
            .push((start + a..start + b, times));
    }
}

/// Where the capture of syscall `piece` may end so that nothing the parsers read is lost: inside
/// a body or DATA payload, with every later frame header of the syscall (and the header block
/// of HEADERS frames, up to what the kernel copies) sent as runs. Returns the end of the
/// captured prefix and the runs (offsets from the syscall's start); no cut if none fits.
fn capture_cut(
    bytes: &[u8],
    piece: Range<usize>,
    opaque: &[Range<usize>],
    frames: &[(usize, u8, usize)],
    rng: &mut Rng,
) -> (usize, Vec<(u64, Bytes)>) {
    let whole = (piece.end, Vec::new());
    let c = piece.start + rng.below(piece.len());
    if !opaque.iter().any(|r| r.contains(&c)) {
        return whole;
    }
    let mut runs = Vec::new();
    for &(start, kind, len) in frames.iter().filter(|f| f.0 >= c && f.0 < piece.end) {
        let block = matches!(kind, frame::HEADERS | frame::CONTINUATION);
        let end = start + frame::HEADER_LEN + if block { len } else { 0 };
        if end > piece.end || (block && len > tracer_common::FRAME_HINT_PAYLOAD) {
            return whole;
        }
        runs.push((
            (start - piece.start) as u64,
            Bytes::copy_from_slice(&bytes[start..end]),
        ));
    }
    // HTTP/1 has no runs: everything after the cut must be one body.
    if frames.is_empty() && !opaque.iter().any(|r| r.contains(&c) && r.end >= piece.end) {
        return whole;
    }
    (c, runs)
}

/// Which syscall each time of the reference run belongs to: (side, message, is entry).
fn anchors(timeline: &Timeline) -> HashMap<u64, (Side, usize, bool)> {
    let mut out = HashMap::new();
    for &(side, msg) in timeline.messages.keys() {
        // In the reference each write is one syscall on each end.
        let (enter, exit) = timeline.times(side, msg, true);
        assert_eq!((enter, exit), timeline.times(side, msg, false));
        out.insert(enter, (side, msg, true));
        out.insert(exit, (side, msg, false));
    }
    out
}

/// The reference's spans with their times moved to the syscalls of `timeline` that carried the
/// same bytes: a start is a request's first byte, an end a response's last.
fn moved(
    reference: &[Shape],
    anchors: &HashMap<u64, (Side, usize, bool)>,
    timeline: &Timeline,
) -> Vec<Shape> {
    let at = |t: u64, first: bool| {
        let (side, msg, enter) = anchors[&t];
        let (e, x) = timeline.times(side, msg, first);
        if enter { e } else { x }
    };
    let mut out: Vec<Shape> = reference
        .iter()
        .map(|s| Shape {
            start: at(s.start, true),
            end: at(s.end, false),
            ..s.clone()
        })
        .collect();
    out.sort();
    out
}

fn run(events: Vec<CaptureEvent>) -> Vec<Shape> {
    let mut p = pipeline(&[1, 2]);
    for event in events {
        p.on_event(event);
    }
    shapes(&p.ready_spans(true))
}

#[test]
fn any_split_of_valid_conversations_gives_the_same_spans() {
    let mut rng = Rng::new(0x5eed_5a1e);
    let mut cut_runs = 0;
    for round in 0..40 {
        let messages = conversation(&mut rng);
        let (reference_events, reference_timeline) = events(&messages, None);
        let reference = run(reference_events);
        check_reference(&reference, &messages);
        let anchors = anchors(&reference_timeline);
        for split in 0..25 {
            let (split_events, timeline) = events(&messages, Some(&mut rng));
            cut_runs += split_events
                .iter()
                .filter(|e| matches!(e, CaptureEvent::Data(d) if (d.payload.len() as u64) < d.total_len))
                .count();
            let got = run(split_events);
            assert_eq!(
                got,
                moved(&reference, &anchors, &timeline),
                "round {round} split {split}"
            );
        }
    }
    assert!(cut_runs > 500, "capture cuts were exercised: {cut_runs}");
}

/// The reference run itself is right: one server span per request to process 1, one client and
/// one server span per call, every call a child of the request its thread was serving.
fn check_reference(spans: &[Shape], messages: &[Message]) {
    let requests = messages.iter().filter(|m| m.from.is_none()).count();
    let calls = messages
        .iter()
        .filter(|m| {
            let outgoing = [GRPC_OUT.socket, HTTP_OUT.socket];
            m.from.is_some_and(|e| outgoing.contains(&e.socket))
                && !m.bytes.starts_with(frame::PREFACE)
        })
        .count();
    assert_eq!(spans.len(), requests + 2 * calls, "{spans:#?}");
    for s in spans {
        match (s.pid, s.kind.as_str()) {
            (1, "Server") => assert!(s.parent.is_empty() || s.parent.starts_with("remote")),
            (1, "Client") => assert!(s.parent.starts_with("1 Server"), "{s:?}"),
            (2, "Server") => assert_eq!(s.parent, format!("1 Client {}", s.name), "{s:?}"),
            _ => panic!("unexpected span {s:?}"),
        }
        assert!(s.parent.is_empty() || s.parent_trace, "{s:?}");
        assert!(s.start <= s.end);
    }
}
