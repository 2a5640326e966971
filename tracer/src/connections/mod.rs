//! Stage 2: connections. Routes capture events to per-connection state: two byte streams (one
//! per direction), the connection's addresses and role, and its protocol parser, which turns
//! the streams into requests and responses for the stitching stage.
//!
//! A connection is (pid, fd, generation): when an fd number is reused, the generation changes
//! and the old connection is finished before the new one starts, so two connections never mix.

pub mod addr;

use std::net::SocketAddr;

// Keys are the agent's own (pids, fds, span ids): a fast hash, seeded per process.
use foldhash::{HashMap, HashMapExt};

use tracer_common::{DATA_FLAG_LOST_BEFORE, Direction};

use crate::{
    capture::{CaptureEvent, DataRecord, OpenRecord, SocketId},
    clock,
    protocols::{L7Event, ParseStats, Parser, SegTime, StreamBuffer},
    span::{CompactString, Role, ToCompactString},
};
use addr::AddressResolver;

/// A first syscall this long that is not a message start means the protocol is not ours.
const DETECT_MIN_BYTES: usize = 16;
/// Shorter first syscalls (a few bytes of a method?) get this many chances.
const DETECT_SYSCALLS: u32 = 4;
/// On a connection joined mid-stream, syscalls inspected for a message start before giving up.
const DETECT_SYSCALLS_MIDSTREAM: u32 = 64;
/// Stream-id distance between two parser instances on one connection (ids stay far below).
const STREAM_EPOCH: u64 = 1 << 40;
/// Connections tracked at most; the least recently active one is evicted beyond that.
const MAX_CONNECTIONS: usize = 65536;

/// What the stitching stage knows about a connection.
#[derive(Clone, Debug)]
pub struct ConnMeta {
    pub socket: SocketId,
    pub role: Option<Role>,
    /// This process's end. For accepted sockets, the listener's address: its IP is
    /// unspecified (0.0.0.0, ::) when the server listens on every address.
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    /// `peer`'s IP as text, formatted once per connection rather than for every span.
    pub peer_ip: Option<CompactString>,
}

impl ConnMeta {
    fn new(
        socket: SocketId,
        role: Option<Role>,
        local: Option<SocketAddr>,
        peer: Option<SocketAddr>,
    ) -> Self {
        Self {
            socket,
            role,
            local,
            peer,
            peer_ip: peer.map(|p| p.ip().to_compact_string()),
        }
    }
}

enum ProtocolState {
    /// Not recognised yet; `syscalls` inspected so far.
    Detecting {
        syscalls: u32,
        /// On a connection seen from its start, its syscalls so far: a message start may come
        /// in several small syscalls (`G`, `ET / HTTP/1.1...`), so detection reads them joined,
        /// and the parser gets them all once the protocol is known. At most `DETECT_SYSCALLS`,
        /// of fewer than `DETECT_MIN_BYTES` captured bytes per direction, are ever held.
        held: Vec<DataRecord<'static>>,
    },
    Parsing(Parser),
    /// Not a protocol the tracer understands (TLS, a database, ...): its bytes are ignored.
    Unknown,
}

impl ProtocolState {
    fn detecting() -> Self {
        ProtocolState::Detecting {
            syscalls: 0,
            held: Vec::new(),
        }
    }
}

struct Connection {
    meta: ConnMeta,
    streams: [StreamBuffer; 2],
    protocol: ProtocolState,
    /// The agent did not see this stream from its first byte (socket found in /proc, or data
    /// lost): the first bytes may be the middle of a message.
    mid_stream: bool,
    last_active_ns: u64,
    /// Added to the parser's stream ids. Bumped when the parser is replaced (after lost data),
    /// so the new parser's requests never reuse the ids of the old one's.
    stream_epoch: u64,
}

impl Connection {
    fn new(meta: ConnMeta, mid_stream: bool, now_ns: u64) -> Self {
        Self {
            meta,
            streams: [StreamBuffer::new(), StreamBuffer::new()],
            protocol: ProtocolState::detecting(),
            mid_stream,
            last_active_ns: now_ns,
            stream_epoch: 0,
        }
    }

    /// Ends the connection: responses that run until close complete, others are abandoned.
    fn finish(&mut self, at: SegTime, out: &mut dyn FnMut(&ConnMeta, L7Event)) {
        if let ProtocolState::Parsing(parser) = &mut self.protocol {
            let mut events = Vec::new();
            parser.close(at, &mut events);
            self.emit(&mut events, out);
        }
    }

    /// Hands parsed events on, with stream ids made unique for the connection's life.
    fn emit(&self, events: &mut Vec<L7Event>, out: &mut dyn FnMut(&ConnMeta, L7Event)) {
        for mut ev in events.drain(..) {
            match &mut ev {
                L7Event::Request(r) => r.stream_id += self.stream_epoch,
                L7Event::Response(r) => r.stream_id += self.stream_epoch,
                L7Event::Abandoned { stream_id, .. } => *stream_id += self.stream_epoch,
            }
            out(&self.meta, ev);
        }
    }
}

/// Counters of this stage (all visible in the agent's status).
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnStats {
    pub opened: u64,
    pub closed: u64,
    /// Connections whose protocol was not recognised.
    pub unknown_protocol: u64,
    /// Connections evicted because the table was full.
    pub evicted: u64,
    /// Data events for a connection generation older than the current one on that fd.
    pub stale_events: u64,
    /// Connections reset because the kernel lost some of their data.
    pub lost_resyncs: u64,
    /// Connections whose local address could not be read from /proc.
    pub unresolved_addresses: u64,
    pub parse: ParseStats,
}

pub struct Connections {
    table: HashMap<(u32, i32), Connection>,
    resolver: AddressResolver,
    stats: ConnStats,
    scratch: Vec<L7Event>,
}

impl Default for Connections {
    fn default() -> Self {
        Self::new()
    }
}

impl Connections {
    pub fn new() -> Self {
        Self {
            table: HashMap::new(),
            resolver: AddressResolver::new(),
            stats: ConnStats::default(),
            scratch: Vec::new(),
        }
    }

    pub fn stats(&self) -> ConnStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// A socket that was open before tracing started (found in /proc): its stream is joined
    /// mid-way, and its addresses come from the socket inode.
    pub fn adopt(&mut self, socket: SocketId, inode: u64, out: &mut dyn FnMut(&ConnMeta, L7Event)) {
        let now = clock::monotonic_ns();
        let endpoints = self.resolver.resolve_inode(socket.tgid, inode, now, now);
        let meta = ConnMeta::new(
            socket,
            None,
            endpoints.map(|e| e.local),
            endpoints.map(|e| e.peer),
        );
        self.insert(Connection::new(meta, true, now), out);
    }

    /// Feeds one capture event; requests and responses go to `out` with their connection.
    pub fn on_event(&mut self, event: CaptureEvent<'_>, out: &mut dyn FnMut(&ConnMeta, L7Event)) {
        match event {
            CaptureEvent::Open(open) => self.on_open(open, out),
            CaptureEvent::Data(data) => self.on_data(data, out),
            CaptureEvent::Close { socket, ts_ns } => {
                let key = (socket.tgid, socket.fd);
                if self
                    .table
                    .get(&key)
                    .is_some_and(|c| c.meta.socket.conn_gen == socket.conn_gen)
                    && let Some(mut conn) = self.table.remove(&key)
                {
                    conn.finish(at(ts_ns), out);
                    self.stats.closed += 1;
                }
            }
            CaptureEvent::ProcessExit { tgid, ts_ns } => self.forget_process(tgid, ts_ns, out),
            // Which processes are traced is the agent's business (`pipeline` hands these over).
            CaptureEvent::Fork { .. } | CaptureEvent::Exec { .. } | CaptureEvent::Listen { .. } => {
            }
        }
    }

    /// Finishes every connection of a process (it exited, or tracing was disabled).
    pub fn forget_process(
        &mut self,
        tgid: u32,
        ts_ns: u64,
        out: &mut dyn FnMut(&ConnMeta, L7Event),
    ) {
        let keys: Vec<_> = self.table.keys().filter(|k| k.0 == tgid).copied().collect();
        for key in keys {
            if let Some(mut conn) = self.table.remove(&key) {
                conn.finish(at(ts_ns), out);
                self.stats.closed += 1;
            }
        }
    }

    fn on_open(&mut self, open: OpenRecord, out: &mut dyn FnMut(&ConnMeta, L7Event)) {
        let socket = open.socket;
        let now = clock::monotonic_ns();
        // First-hand addresses from the kernel where it has them (the peer from the syscall,
        // a client's local address from the sock_ops handoff, a server's from its listener);
        // /proc for the rest, while the socket still exists.
        let mut local = match (open.local, open.accepted, open.listen_fd) {
            (Some(local), _, _) => Some(local),
            (None, true, Some(listen_fd)) => self.resolver.listener(socket.tgid, listen_fd, now),
            _ => None,
        };
        let mut peer = open.peer;
        if local.is_none() || peer.is_none() {
            let found = self
                .resolver
                .resolve(socket.tgid, socket.fd, open.ts_ns, now);
            local = local.or(found.map(|e| e.local));
            peer = peer.or(found.map(|e| e.peer));
        }
        if local.is_none() && peer.is_some() {
            self.stats.unresolved_addresses += 1;
        }
        let role = if open.accepted {
            Role::Server
        } else {
            Role::Client
        };
        let meta = ConnMeta::new(socket, Some(role), local, peer);
        self.insert(Connection::new(meta, false, now), out);
    }

    fn insert(&mut self, conn: Connection, out: &mut dyn FnMut(&ConnMeta, L7Event)) {
        let key = (conn.meta.socket.tgid, conn.meta.socket.fd);
        let at_ns = conn.last_active_ns;
        if let Some(mut old) = self.table.insert(key, conn) {
            // The fd was reused and the close went unseen (e.g. dup2 over it): end the old one.
            old.finish(at(at_ns), out);
            self.stats.closed += 1;
        }
        self.stats.opened += 1;
        if self.table.len() > MAX_CONNECTIONS {
            self.evict_oldest(out);
        }
    }

    fn evict_oldest(&mut self, out: &mut dyn FnMut(&ConnMeta, L7Event)) {
        let oldest = self
            .table
            .iter()
            .min_by_key(|(_, c)| c.last_active_ns)
            .map(|(k, _)| *k);
        if let Some(mut conn) = oldest.and_then(|k| self.table.remove(&k)) {
            conn.finish(at(conn.last_active_ns), out);
            self.stats.evicted += 1;
        }
    }

    fn on_data(&mut self, data: DataRecord<'_>, out: &mut dyn FnMut(&ConnMeta, L7Event)) {
        let socket = data.socket;
        let key = (socket.tgid, socket.fd);
        match self.table.get(&key).map(|c| c.meta.socket.conn_gen) {
            Some(current) if current == socket.conn_gen => {}
            Some(current) if current > socket.conn_gen && !is_user_gen(current) => {
                self.stats.stale_events += 1;
                return;
            }
            _ => {
                // First sight of this connection (its open event was lost, or it was found in
                // /proc under another generation): start it here, mid-stream.
                let meta = ConnMeta::new(socket, None, None, None);
                self.insert(Connection::new(meta, true, data.exit_ns), out);
            }
        }
        let Some(conn) = self.table.get_mut(&key) else {
            return;
        };
        conn.last_active_ns = data.exit_ns;
        let time = SegTime {
            enter_ns: data.enter_ns,
            exit_ns: data.exit_ns,
            tid: data.tid,
            ids: data.ids,
        };
        if data.flags & DATA_FLAG_LOST_BEFORE != 0 {
            // A hole of unknown size: whatever was in progress can no longer be trusted.
            conn.finish(time, out);
            conn.streams.iter_mut().for_each(|s| {
                s.clear();
            });
            if let ProtocolState::Detecting { held, .. } = &mut conn.protocol {
                held.clear();
            }
            if matches!(conn.protocol, ProtocolState::Parsing(_)) {
                conn.protocol = ProtocolState::detecting();
                conn.stream_epoch += STREAM_EPOCH;
            }
            conn.mid_stream = true;
            self.stats.lost_resyncs += 1;
        }
        let dir = data.direction;
        let stream = &mut conn.streams[dir as usize];
        match &mut conn.protocol {
            ProtocolState::Unknown => {}
            ProtocolState::Parsing(parser) => {
                stream.push_runs(&data.payload, &data.runs, data.total_len, time);
                parser.feed(dir, stream, &mut self.scratch, &mut self.stats.parse);
            }
            ProtocolState::Detecting { syscalls, held } => {
                *syscalls += 1;
                let attempts = *syscalls;
                let fresh = !conn.mid_stream;
                let detected = if fresh {
                    held.push(data.into_owned());
                    Parser::detect(dir, &joined_prefix(held, dir))
                        .map(|d| (d, std::mem::take(held)))
                } else {
                    Parser::detect(dir, &data.payload).map(|d| (d, vec![data.into_owned()]))
                };
                match detected {
                    Some(((mut parser, role), replay)) => {
                        conn.meta.role = Some(role);
                        conn.streams.iter_mut().for_each(|s| {
                            s.clear();
                        });
                        for record in replay {
                            let dir = record.direction;
                            let stream = &mut conn.streams[dir as usize];
                            let time = SegTime {
                                enter_ns: record.enter_ns,
                                exit_ns: record.exit_ns,
                                tid: record.tid,
                                ids: record.ids,
                            };
                            stream.push_runs(&record.payload, &record.runs, record.total_len, time);
                            parser.feed(dir, stream, &mut self.scratch, &mut self.stats.parse);
                        }
                        conn.protocol = ProtocolState::Parsing(parser);
                    }
                    None => {
                        let give_up = if fresh {
                            // A fresh stream starts with a message, or it is not ours.
                            let held_bytes: usize = held
                                .iter()
                                .filter(|r| r.direction == dir)
                                .map(|r| r.payload.len())
                                .sum();
                            held_bytes >= DETECT_MIN_BYTES || attempts >= DETECT_SYSCALLS
                        } else {
                            attempts >= DETECT_SYSCALLS_MIDSTREAM
                        };
                        if give_up {
                            conn.protocol = ProtocolState::Unknown;
                            conn.streams.iter_mut().for_each(|s| {
                                s.clear();
                            });
                            self.stats.unknown_protocol += 1;
                        }
                    }
                }
            }
        }
        conn.emit(&mut self.scratch, out);
    }

    /// Housekeeping on the agent's tick.
    pub fn tick(&mut self, now_ns: u64) {
        self.resolver.expire(now_ns);
    }
}

/// The captured bytes of the `held` syscalls moving in `dir`, joined up to the first one the
/// capture cut (bytes after a gap are not contiguous with those before).
fn joined_prefix(held: &[DataRecord<'_>], dir: Direction) -> Vec<u8> {
    let mut out = Vec::new();
    for record in held.iter().filter(|r| r.direction == dir) {
        out.extend_from_slice(&record.payload);
        if record.total_len > record.payload.len() as u64 {
            break;
        }
    }
    out
}

fn is_user_gen(conn_gen: u64) -> bool {
    conn_gen & tracer_common::USER_GEN_BIT != 0
}

fn at(ts_ns: u64) -> SegTime {
    SegTime {
        enter_ns: ts_ns,
        exit_ns: ts_ns,
        tid: 0,
        ids: None,
    }
}
