//! gRPC over HTTP/2, built from the input by a structure-aware generator: calls with gRPC
//! content-type on new streams, response heads, messages, trailers (`grpc-status` a real code
//! or arbitrary bytes), trailers-only answers, resets, and raw noise, header blocks encoded by
//! `httlib-hpack` (Huffman, dynamic table). Each write is then split into syscalls and maybe
//! cut by the capture, as the input says.
//!
//! Invariants: the books of every connection (see `conn`); and when the conversation is clean
//! (no noise, no capture cut), every call with a well-formed method path is reported under that
//! name, and every call answered with a numeric `grpc-status` ends with that status code.

use std::collections::BTreeMap;

use httlib_hpack::Encoder;
use tracer::{
    protocols::{
        L7Event, Parser,
        http2::{Http2Parser, MAX_STREAMS, Start, frame},
    },
    span::{Role, Value, find},
};
use tracer_common::Direction;

use crate::{conn::Conn, script::Syscall};

const PATHS: [&str; 4] = [
    "/shop.v1.Orders/Get",
    "/shop.v1.Orders/List",
    "/grpc.health.v1.Health/Check",
    "/demo.Greeter/SayHello",
];

/// What was sent on one stream.
#[derive(Debug, Default)]
struct Call {
    /// The span name it must get, when its path is one of `PATHS`.
    name: Option<String>,
    /// The numeric `grpc-status` it was answered with.
    status: Option<i64>,
    /// Its response ended (END_STREAM) or it was reset: nothing more is sent on it.
    closed: bool,
}

/// The input, read from the front; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (s, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        s
    }
}

struct Peer {
    hpack: Encoder<'static>,
}

impl Peer {
    fn headers(&mut self, stream: u32, end: bool, fields: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut block = Vec::new();
        for (name, value) in fields {
            let flags = Encoder::BEST_FORMAT | Encoder::WITH_INDEXING | Encoder::HUFFMAN_VALUE;
            self.hpack
                .encode((name.to_vec(), value.to_vec(), flags), &mut block)
                .expect("literal fields always encode");
        }
        let flags = frame::END_HEADERS | if end { frame::END_STREAM } else { 0 };
        frame_bytes(frame::HEADERS, flags, stream, &block)
    }
}

fn frame_bytes(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// A gRPC length-prefixed message of `len` bytes in a DATA frame.
fn message(stream: u32, end: bool, len: usize) -> Vec<u8> {
    let mut payload = vec![0];
    payload.extend((len as u32).to_be_bytes());
    payload.resize(5 + len, b'm');
    frame_bytes(
        frame::DATA,
        if end { frame::END_STREAM } else { 0 },
        stream,
        &payload,
    )
}

pub fn run(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.byte();
    let role = if flags & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let (to_server, to_client) = match role {
        Role::Server => (Direction::Ingress, Direction::Egress),
        Role::Client => (Direction::Egress, Direction::Ingress),
    };
    let mut client = Peer {
        hpack: Encoder::default(),
    };
    let mut server = Peer {
        hpack: Encoder::default(),
    };
    let mut preface = frame::PREFACE.to_vec();
    preface.extend(frame_bytes(frame::SETTINGS, 0, 0, &[]));
    let mut writes = vec![
        (to_server, preface),
        (to_client, frame_bytes(frame::SETTINGS, 0, 0, &[])),
    ];
    let mut calls: BTreeMap<u32, Call> = BTreeMap::new();
    let mut clean = true;
    let mut next_id = 1u32;
    while !input.0.is_empty() {
        let op = input.byte();
        // The stream an answer goes to: one of those still open.
        let open: Vec<u32> = calls
            .iter()
            .filter(|(_, c)| !c.closed)
            .map(|(id, _)| *id)
            .collect();
        let target = (!open.is_empty()).then(|| open[usize::from(input.byte()) % open.len()]);
        match (op % 8, target) {
            (0, _) => {
                let id = next_id;
                next_id += 2;
                let pick = input.byte();
                let (path, name) = match pick & 0x80 {
                    0 => {
                        let path = PATHS[usize::from(pick) % PATHS.len()];
                        (path.as_bytes().to_vec(), Some(path[1..].to_string()))
                    }
                    _ => {
                        let mut path = b"/".to_vec();
                        path.extend(input.bytes(usize::from(pick & 0x3f)));
                        (path, None)
                    }
                };
                let traceparent = match pick & 0x40 {
                    0 => None,
                    _ => Some(input.bytes(55).to_vec()),
                };
                let mut fields: Vec<(&[u8], &[u8])> = vec![
                    (b":method", b"POST"),
                    (b":scheme", b"http"),
                    (b":path", &path),
                    (b":authority", b"orders.internal:50051"),
                    (b"content-type", b"application/grpc"),
                    (b"te", b"trailers"),
                ];
                if let Some(tp) = &traceparent {
                    fields.push((b"traceparent", tp));
                }
                let mut bytes = client.headers(id, false, &fields);
                bytes.extend(message(id, true, usize::from(input.byte())));
                writes.push((to_server, bytes));
                calls.insert(
                    id,
                    Call {
                        name,
                        ..Call::default()
                    },
                );
            }
            (1, Some(id)) => writes.push((
                to_client,
                server.headers(
                    id,
                    false,
                    &[(b":status", b"200"), (b"content-type", b"application/grpc")],
                ),
            )),
            (2, Some(id)) => {
                writes.push((to_client, message(id, false, usize::from(input.byte()))))
            }
            (3 | 4, Some(id)) => {
                let code = input.byte();
                let status = match code & 0x80 {
                    0 => (code % 17).to_string().into_bytes(),
                    _ => input.bytes(usize::from(code & 7)).to_vec(),
                };
                let mut fields: Vec<(&[u8], &[u8])> = Vec::new();
                if op % 8 == 4 {
                    // Trailers-only: the whole answer is one header block.
                    fields.push((b":status", b"200"));
                    fields.push((b"content-type", b"application/grpc"));
                }
                fields.push((b"grpc-status", &status));
                writes.push((to_client, server.headers(id, true, &fields)));
                let call = calls.get_mut(&id).expect("open call");
                call.closed = true;
                // Arbitrary bytes may or may not read as a code: only generated codes are checked.
                call.status = (code & 0x80 == 0).then_some(i64::from(code % 17));
            }
            (5, Some(id)) => {
                let dir = if input.byte() & 1 == 0 {
                    to_server
                } else {
                    to_client
                };
                writes.push((
                    dir,
                    frame_bytes(frame::RST_STREAM, 0, id, &8u32.to_be_bytes()),
                ));
                let call = calls.get_mut(&id).expect("open call");
                call.closed = true;
                call.name = None;
            }
            (6, _) => {
                let dir = if input.byte() & 1 == 0 {
                    to_server
                } else {
                    to_client
                };
                let len = usize::from(input.byte());
                writes.push((dir, input.bytes(len).to_vec()));
                clean = false;
            }
            _ => {}
        }
    }
    // Beyond this many open streams the parser evicts: no call is sure to be reported.
    clean &= calls.len() < MAX_STREAMS;

    let mut conn = match flags & 2 {
        0 => Conn::with(Parser::Http2(Box::new(Http2Parser::new(
            role,
            Start::ClientPreface,
        )))),
        _ => Conn::detecting(),
    };
    // Each write in up to two syscalls, maybe cut by the capture, as the flags byte's bits and
    // the written bytes' own length say (the input is used up by now).
    let mut split_seed = u32::from(flags >> 2);
    for (i, (dir, bytes)) in writes.iter().enumerate() {
        split_seed = split_seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        // Detection needs the client preface in one syscall, as real clients write it.
        let whole_preface = i == 0 && flags & 2 != 0;
        let at = match whole_preface {
            true => bytes.len(),
            false => (split_seed as usize >> 8) % (bytes.len() + 1),
        };
        let cut = flags & 0x80 != 0 && split_seed & 0x10 != 0 && !whole_preface;
        clean &= !cut;
        let (first, second) = bytes.split_at(at);
        for part in [first, second] {
            let captured = if cut { &part[..part.len() / 2] } else { part };
            conn.io(&Syscall {
                dir: *dir,
                captured,
                total: part.len() as u64,
            });
        }
    }
    let events = conn.close();
    if clean {
        check_calls(&calls, &events);
    }
}

/// Each call sent with a known path is reported under its name; each answered with a numeric
/// status ends with it.
fn check_calls(calls: &BTreeMap<u32, Call>, events: &[L7Event]) {
    for (id, call) in calls {
        let Some(name) = &call.name else { continue };
        let request = events.iter().find_map(|e| match e {
            L7Event::Request(r) if r.stream_id == u64::from(*id) => Some(r),
            _ => None,
        });
        let request = request.unwrap_or_else(|| panic!("call {id} not reported: {events:#?}"));
        assert_eq!(&request.name, name);
        let Some(status) = call.status else { continue };
        let response = events.iter().find_map(|e| match e {
            L7Event::Response(r) if r.stream_id == u64::from(*id) => Some(r),
            _ => None,
        });
        let response = response.unwrap_or_else(|| panic!("call {id} not answered: {events:#?}"));
        assert_eq!(
            find(&response.attributes, "rpc.grpc.status_code"),
            Some(&Value::Int(status)),
            "call {id}: {response:?}"
        );
    }
}
