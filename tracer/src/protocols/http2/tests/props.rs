//! Randomised properties over recorded-like conversations (seeded, bounded):
//! - split into syscalls at random points, a conversation gives the same events as unsplit;
//! - captured only in part (random capture cuts, total lengths kept), it gives no event that
//!   contradicts what was sent: names and attributes are the truth or less of it, no invented
//!   status or error, responses only for reported requests;
//! - cut short, it gives the events of the whole run up to the cut, then abandons;
//! - garbage and bit flips never panic, give no span from garbage, and keep the books.

use std::collections::{BTreeMap, HashSet};

use super::*;
use crate::protocols::http::route;

use crate::test_rng::Rng;

/// What was really sent on a stream.
#[derive(Clone, Debug)]
struct Truth {
    method: &'static str,
    path: String,
    grpc: bool,
    status: u16,
    grpc_status: Option<u32>,
}

/// A conversation: writes in order, and the truth of each stream.
struct Script {
    role: Role,
    writes: Vec<(Direction, Vec<u8>)>,
    truth: BTreeMap<u32, Truth>,
}

const GRPC_METHODS: [&str; 4] = [
    "/shop.v1.Orders/Get",
    "/shop.v1.Orders/List",
    "/shop.v1.Users/Get",
    "/grpc.health.v1.Health/Check",
];
const PATHS: [&str; 3] = ["/", "/users/42/orders", "/static/app.js"];

fn script(rng: &mut Rng) -> Script {
    let role = if rng.chance(50) {
        Role::Server
    } else {
        Role::Client
    };
    let (to_server, to_client) = match role {
        Role::Server => (IN, OUT),
        Role::Client => (OUT, IN),
    };
    let (mut client, mut server) = (Client::new(), Server::new());
    let mut writes = vec![(to_server, client.preface()), (to_client, server.preface())];
    let mut truth = BTreeMap::new();
    let mut id = 1u32;
    for _ in 0..1 + rng.below(10) {
        let kind = rng.below(6);
        let mut extra: Vec<(&str, String)> = Vec::new();
        if rng.chance(40) {
            extra.push((
                "traceparent",
                format!("00-{:032x}-{:016x}-01", rng.next() | 1, rng.next() | 1),
            ));
        }
        if rng.chance(30) {
            extra.push(("authorization", format!("Bearer {:x}", rng.next())));
        }
        if rng.chance(30) {
            extra.push(("x-request-id", format!("{:x}", rng.next())));
        }
        let extra: Vec<(&str, &str)> = extra.iter().map(|(n, v)| (*n, v.as_str())).collect();
        match kind {
            0..=2 => {
                let path = GRPC_METHODS[rng.below(GRPC_METHODS.len())];
                let code = [0, 0, 0, 5, 13, 14][rng.below(6)];
                let status = code.to_string();
                writes.push((to_server, client.grpc_call(id, path, &extra)));
                let reply = match kind {
                    0 => server.grpc_reply(id, &status, 1),
                    1 => server.grpc_reply(id, &status, 2 + rng.below(4)),
                    _ => server.grpc_error(id, &status),
                };
                push_split(&mut writes, to_client, reply, rng);
                truth.insert(
                    id,
                    Truth {
                        method: "POST",
                        path: path.into(),
                        grpc: true,
                        status: 200,
                        grpc_status: Some(code),
                    },
                );
                id += 2;
            }
            3 | 4 => {
                let path = PATHS[rng.below(PATHS.len())];
                let status = ["200", "404", "503", "204"][rng.below(4)];
                writes.push((to_server, client.get(id, path, &extra)));
                let body: &[u8] = if status == "204" {
                    b""
                } else {
                    b"<html></html>"
                };
                push_split(&mut writes, to_client, server.reply(id, status, body), rng);
                truth.insert(
                    id,
                    Truth {
                        method: "GET",
                        path: path.into(),
                        grpc: false,
                        status: status.parse().unwrap(),
                        grpc_status: None,
                    },
                );
                id += 2;
            }
            _ => {
                // Two concurrent calls answered in reverse order, frames interleaved.
                let (a, b) = (id, id + 2);
                let mut calls = client.grpc_call(a, GRPC_METHODS[0], &extra);
                calls.extend(client.grpc_call(b, GRPC_METHODS[1], &[]));
                writes.push((to_server, calls));
                let mut replies = server.grpc_head(b);
                replies.extend(server.grpc_head(a));
                replies.extend(data(a, false, &message(40)));
                replies.extend(data(b, false, &message(40)));
                replies.extend(server.grpc_trailers(b, "0"));
                replies.extend(server.grpc_trailers(a, "0"));
                push_split(&mut writes, to_client, replies, rng);
                for (stream, path) in [(a, GRPC_METHODS[0]), (b, GRPC_METHODS[1])] {
                    truth.insert(
                        stream,
                        Truth {
                            method: "POST",
                            path: path.into(),
                            grpc: true,
                            status: 200,
                            grpc_status: Some(0),
                        },
                    );
                }
                id += 4;
            }
        }
    }
    Script {
        role,
        writes,
        truth,
    }
}

/// Pushes `bytes` as one write, or as two writes cut at a frame boundary.
fn push_split(
    writes: &mut Vec<(Direction, Vec<u8>)>,
    dir: Direction,
    bytes: Vec<u8>,
    rng: &mut Rng,
) {
    let boundaries = frame_boundaries(&bytes);
    if boundaries.len() > 2 && rng.chance(50) {
        let at = boundaries[1 + rng.below(boundaries.len() - 2)];
        writes.push((dir, bytes[..at].to_vec()));
        writes.push((dir, bytes[at..].to_vec()));
    } else {
        writes.push((dir, bytes));
    }
}

/// Offsets where frames start in `bytes`, and its end.
fn frame_boundaries(bytes: &[u8]) -> Vec<usize> {
    let mut out = vec![0];
    let mut at = 0;
    while let Some(h) = bytes.get(at..).and_then(frame::FrameHeader::parse) {
        at += frame::HEADER_LEN + h.length as usize;
        out.push(at);
    }
    out
}

/// One syscall: direction, captured bytes, total length, time.
type Syscall = (Direction, Vec<u8>, u64, SegTime);

fn time(write: usize, part: usize) -> SegTime {
    let ns = write as u64 * 1_000 + part as u64;
    SegTime {
        enter_ns: ns,
        exit_ns: ns,
        tid: 1,
        ids: None,
    }
}

/// Each write as one syscall.
fn whole(script: &Script) -> Vec<Syscall> {
    script
        .writes
        .iter()
        .enumerate()
        .map(|(i, (dir, b))| (*dir, b.clone(), b.len() as u64, time(i + 1, 0)))
        .collect()
}

/// Each write split at random points into several syscalls.
fn split(script: &Script, rng: &mut Rng) -> Vec<Syscall> {
    let mut out = Vec::new();
    for (i, (dir, bytes)) in script.writes.iter().enumerate() {
        let mut cuts: Vec<usize> = (0..rng.below(4)).map(|_| rng.below(bytes.len())).collect();
        cuts.push(0);
        cuts.push(bytes.len());
        cuts.sort_unstable();
        cuts.dedup();
        for (part, pair) in cuts.windows(2).enumerate() {
            let piece = bytes[pair[0]..pair[1]].to_vec();
            let len = piece.len() as u64;
            out.push((*dir, piece, len, time(i + 1, part)));
        }
    }
    out
}

/// Runs syscalls through a connection, then closes it. With no `role` the connection detects
/// the protocol from its first syscall (which must then hold the whole preface, as real
/// clients write it); with one, it is known to be HTTP/2 from its start.
fn run(syscalls: &[Syscall], role: Option<Role>, close: bool) -> (Vec<L7Event>, ParseStats) {
    let mut c = match role {
        None => Conn::detecting(),
        Some(role) => Conn::with(
            Parser::Http2(Box::new(Http2Parser::new(role, Start::ClientPreface))),
            role,
        ),
    };
    for (dir, captured, total, at) in syscalls {
        c.io_at(*dir, captured, *total, *at);
    }
    if close {
        c.close(1_000_000);
    }
    (c.events, c.stats)
}

impl Conn {
    fn io_at(&mut self, dir: Direction, captured: &[u8], total: u64, at: SegTime) {
        if self.parser.is_none() {
            match Parser::detect(dir, captured) {
                Some((parser, role)) => {
                    self.parser = Some(parser);
                    self.role = Some(role);
                }
                None => return,
            }
        }
        let parser = self.parser.as_mut().expect("detected");
        let stream = &mut self.streams[dir as usize];
        stream.push(captured, total, at);
        parser.feed(dir, stream, &mut self.events, &mut self.stats);
    }
}

/// An event with times reduced to the write that carried them.
fn normal(events: &[L7Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            L7Event::Request(r) => format!(
                "req {} {:?} {:?} {:?} {:x} @{}",
                r.stream_id,
                r.name,
                r.attributes,
                r.context,
                r.fingerprint,
                r.first.enter_ns / 1_000
            ),
            L7Event::Response(r) => format!(
                "resp {} {:?} {:?} @{}",
                r.stream_id,
                r.attributes,
                r.error,
                r.last.enter_ns / 1_000
            ),
            L7Event::Abandoned {
                stream_id,
                at,
                reason,
            } => format!("gone {stream_id} {reason} @{}", at.enter_ns / 1_000),
        })
        .collect()
}

/// Each request reported once, ended at most once, and only reported requests end.
fn assert_books(events: &[L7Event]) {
    let mut open = HashSet::new();
    let mut seen = HashSet::new();
    for e in events {
        match e {
            L7Event::Request(r) => {
                assert!(seen.insert(r.stream_id), "request {} twice", r.stream_id);
                open.insert(r.stream_id);
            }
            L7Event::Response(Response { stream_id, .. })
            | L7Event::Abandoned { stream_id, .. } => {
                assert!(open.remove(stream_id), "end of {stream_id} not open");
            }
        }
    }
}

/// The names a request may honestly get, from most to least known.
fn allowed_names(truth: &Truth) -> Vec<String> {
    let route = route::template(&truth.path);
    let mut names = vec![
        format!("{} {route}", truth.method),
        format!("HTTP {route}"),
        truth.method.to_string(),
        "HTTP".to_string(),
    ];
    if truth.grpc {
        names.push(truth.path[1..].to_string());
    }
    names
}

/// The name of a request fully read.
fn expected_name(truth: &Truth) -> String {
    match truth.grpc {
        true => truth.path[1..].to_string(),
        false => format!("{} {}", truth.method, route::template(&truth.path)),
    }
}

/// Whether every attribute of a request agrees with what was sent.
fn attributes_agree(attributes: &[Attribute], truth: &Truth) -> bool {
    let path = truth.path.split('?').next().unwrap_or_default();
    attributes.iter().all(|a| match (a.key, &a.value) {
        ("http.request.method", Value::Str(m)) => m == truth.method,
        ("url.path", Value::Str(p)) => p == path,
        ("rpc.system", Value::Str(s)) => s == "grpc" && truth.grpc,
        ("rpc.service", Value::Str(s)) => truth.grpc && truth.path[1..].starts_with(&**s),
        ("rpc.method", Value::Str(m)) => truth.grpc && truth.path.ends_with(&format!("/{m}")),
        ("server.address", Value::Str(h)) => h == "orders.internal" || h == "www.example.com",
        ("server.port", Value::Int(p)) => [50051, 443].contains(p),
        ("url.scheme", Value::Str(s)) => s == "http" || s == "https",
        ("url.full", Value::Str(u)) => u.ends_with(path),
        ("user_agent.original", Value::Str(u)) => u == "curl/8.5.0" || u == "grpc-go/1.64.0",
        ("network.protocol.version", Value::Str(v)) => v == "2",
        _ => false,
    })
}

/// Checks a run with capture cuts against the truth and the run without.
fn assert_honest(cut: &[L7Event], full: &[L7Event], script: &Script) {
    assert_books(cut);
    let full_req: BTreeMap<u64, &Request> =
        requests(full).iter().map(|r| (r.stream_id, *r)).collect();
    let full_resp: BTreeMap<u64, &Response> =
        responses(full).iter().map(|r| (r.stream_id, *r)).collect();
    for r in requests(cut) {
        let truth = &script.truth[&(r.stream_id as u32)];
        let whole = full_req[&r.stream_id];
        assert_eq!(r.first, whole.first, "request {} start", r.stream_id);
        assert!(
            allowed_names(truth).iter().any(|n| *n == r.name),
            "{:?} is not {truth:?}",
            r.name
        );
        assert!(attributes_agree(&r.attributes, truth), "{r:?} vs {truth:?}");
        if r.context.is_some() {
            assert_eq!(r.context, whole.context);
        }
    }
    for r in responses(cut) {
        let truth = &script.truth[&(r.stream_id as u32)];
        let whole = full_resp[&r.stream_id];
        assert_eq!(r.last, whole.last, "response {} end", r.stream_id);
        for a in &r.attributes {
            let agrees = match (a.key, &a.value) {
                ("http.response.status_code", Value::Int(s)) => *s == i64::from(truth.status),
                ("rpc.grpc.status_code", Value::Int(s)) => Some(*s as u32) == truth.grpc_status,
                ("error.type", _) => whole.error.is_some(),
                _ => false,
            };
            assert!(agrees, "{a:?} on {r:?} vs {truth:?}");
        }
        if r.error.is_some() {
            assert!(whole.error.is_some(), "invented error {r:?}");
        }
    }
}

#[test]
fn random_splits_give_the_same_events() {
    let mut rng = Rng::new(0x5eed);
    for round in 0..150 {
        let script = script(&mut rng);
        let (reference, stats) = run(&whole(&script), None, true);
        // The unsplit run is right: detected, every stream reported and answered, nothing
        // skipped.
        assert_eq!(stats, ParseStats::default(), "round {round}");
        assert_eq!(
            requests(&reference).len(),
            script.truth.len(),
            "round {round}"
        );
        assert_eq!(
            responses(&reference).len(),
            script.truth.len(),
            "round {round}"
        );
        for r in requests(&reference) {
            let truth = &script.truth[&(r.stream_id as u32)];
            assert_eq!(r.name, expected_name(truth), "round {round}");
        }
        for r in responses(&reference) {
            let truth = &script.truth[&(r.stream_id as u32)];
            let expected = match truth.grpc_status {
                Some(code) => Attribute::int("rpc.grpc.status_code", i64::from(code)),
                None => Attribute::int("http.response.status_code", i64::from(truth.status)),
            };
            assert_eq!(r.attributes[0], expected, "round {round}");
        }
        let (events, _) = run(&split(&script, &mut rng), Some(script.role), true);
        assert_eq!(normal(&events), normal(&reference), "round {round}");
    }
}

#[test]
fn random_capture_cuts_never_contradict_what_was_sent() {
    let mut rng = Rng::new(0xc0ffee);
    let mut degraded = 0;
    for _ in 0..150 {
        let script = script(&mut rng);
        let role = Some(script.role);
        // The reference: the same syscalls, fully captured.
        let mut syscalls = split(&script, &mut rng);
        let (reference, _) = run(&syscalls, role, true);
        for (_, captured, _, _) in &mut syscalls {
            if rng.chance(25) {
                captured.truncate(rng.below(captured.len() + 1));
            }
        }
        let (events, _) = run(&syscalls, role, true);
        assert_honest(&events, &reference, &script);
        degraded += usize::from(normal(&events) != normal(&reference));
    }
    assert!(degraded > 50, "the cuts changed something: {degraded}");
}

#[test]
fn truncated_conversations_report_a_prefix_then_abandon() {
    let mut rng = Rng::new(0x7a11);
    for round in 0..150 {
        let script = script(&mut rng);
        let syscalls = split(&script, &mut rng);
        let role = Some(script.role);
        let (full, _) = run(&syscalls, role, false);
        let keep = rng.below(syscalls.len() + 1);
        let mut short = syscalls[..keep].to_vec();
        if let Some((_, last, total, _)) = short.last_mut()
            && !last.is_empty()
        {
            last.truncate(rng.below(last.len()));
            *total = last.len() as u64;
        }
        let (events, _) = run(&short, role, true);
        assert_books(&events);
        let before_close: Vec<String> = normal(&events)
            .into_iter()
            .filter(|e| !e.starts_with("gone"))
            .collect();
        let reference = normal(&full);
        for e in &before_close {
            assert!(
                reference.contains(e),
                "round {round}: {e} not in the whole run"
            );
        }
        // Requests without a response were abandoned at the close.
        let answered = responses(&events).len();
        let gone = events
            .iter()
            .filter(|e| matches!(e, L7Event::Abandoned { .. }))
            .count();
        assert_eq!(requests(&events).len(), answered + gone, "round {round}");
    }
}

#[test]
fn garbage_never_panics_and_gives_no_span() {
    let mut rng = Rng::new(0x9a4b);
    for _ in 0..300 {
        let mut c = match rng.below(3) {
            0 => Conn::detecting(),
            1 => Conn::server(),
            _ => Conn::with(
                Parser::Http2(Box::new(Http2Parser::new(Role::Client, Start::MidStream))),
                Role::Client,
            ),
        };
        for n in 0..1 + rng.below(20) {
            let len = rng.below(200);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Sometimes something that looks like a frame header.
            if rng.chance(30) && bytes.len() >= 9 {
                bytes[..3].copy_from_slice(&[0, 0, rng.below(64) as u8]);
                bytes[3] = rng.below(10) as u8;
            }
            let dir = if rng.chance(50) { IN } else { OUT };
            let total = bytes.len() as u64
                + if rng.chance(20) {
                    rng.below(5000) as u64
                } else {
                    0
                };
            c.io_cut(dir, &bytes, total, n as u64 + 1);
        }
        c.close(99);
        assert!(
            requests(&c.events).is_empty(),
            "a span from garbage: {:?}",
            c.summary()
        );
        assert_books(&c.events);
    }
}

#[test]
fn bit_flips_never_panic_and_keep_the_books() {
    let mut rng = Rng::new(0xf11b);
    for _ in 0..200 {
        let script = script(&mut rng);
        let mut syscalls = split(&script, &mut rng);
        for _ in 0..1 + rng.below(8) {
            let i = rng.below(syscalls.len());
            let bytes = &mut syscalls[i].1;
            if !bytes.is_empty() {
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 << rng.below(8);
            }
        }
        let (events, _) = run(&syscalls, Some(script.role), true);
        assert_books(&events);
        assert!(requests(&events).len() <= script.truth.len() + 8);
    }
}
