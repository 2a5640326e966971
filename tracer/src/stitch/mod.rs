//! Stage 4: span stitching. Turns requests and responses into spans and decides each span's
//! trace and parent:
//!
//! - a server span continues the W3C context its request carried, else starts a new trace;
//! - a client span written by a thread while that thread serves a request is that server
//!   span's child (the in-process parent);
//! - when both ends of a connection are traced on this host, the server span's parent is the
//!   client span on the other end (`peers`), whatever header the request carried.
//!
//! With traceparent injection on, the kernel decides the ids of server spans (as it reads a
//! request) and of the client spans whose requests it inserted a header into; those ids went
//! over the wire, so the spans take them as they are (`kernel_ids`).
//!
//! Decisions can arrive late (the two ends' events race), so parents are kept as references
//! and a span's trace id is resolved only when it is exported: once it has ended and a settle
//! window has passed since it (and its ancestors) started.

mod peers;
mod pending;

use std::{collections::VecDeque, sync::Arc, time::Duration};

// Keys are the agent's own (pids, fds, span ids): a fast hash, seeded per process.
use foldhash::{HashMap, HashMapExt};

use rand::{Rng, SeedableRng, rngs::SmallRng};
use tracer_common::{IDS_CLIENT, IDS_SERVER, TraceIds};

use crate::{
    capture::SocketId,
    connections::ConnMeta,
    process::ProcessMeta,
    protocols::{L7Event, Request, Response, SegTime},
    span::{
        self, Attribute, CompactString, Role, Span, SpanId, SpanKind, ToCompactString,
        TraceContext, TraceId,
    },
};
use peers::{Peers, Seen};
use pending::PendingSpans;

/// A span's identity: its connection and its request's id on that connection.
pub type SpanKey = (SocketId, u64);

#[derive(Clone, Copy, Debug)]
pub struct StitchConfig {
    /// How long a span waits, after it starts, for a late counterpart before its trace is
    /// decided (events of two processes can reach the agent in either order).
    pub settle: Duration,
    /// Started spans held at most; beyond, the oldest are dropped (counted).
    pub max_pending: usize,
}

impl Default for StitchConfig {
    fn default() -> Self {
        Self {
            settle: Duration::from_millis(500),
            max_pending: 100_000,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct StitchStats {
    pub spans_started: u64,
    pub spans_finished: u64,
    /// Server spans linked to the client span on the other end of their connection.
    pub peer_links: u64,
    /// Client spans whose parent is a server span of the same thread.
    pub thread_links: u64,
    /// Client spans whose parent is the server span whose context the application passed on
    /// (written by another thread).
    pub context_links: u64,
    /// Requests that got no response (connection closed, data lost).
    pub abandoned: u64,
    /// Responses whose request was never seen.
    pub orphan_responses: u64,
    /// Started spans dropped because too many were pending.
    pub evicted: u64,
    /// Requests on connections whose role is unknown.
    pub no_role: u64,
    /// Requests reusing the id of a pending one (should stay 0).
    pub duplicate_requests: u64,
    /// Open requests dropped because tracing was turned off for their process.
    pub discarded: u64,
    /// Spans exported without their process's identity (it was never registered).
    pub unknown_process: u64,
    /// Spans whose ids the kernel decided (traceparent injection).
    pub kernel_ids: u64,
}

enum Parent {
    /// Start of a new trace.
    None,
    /// The caller is outside what the agent sees: continue its W3C context.
    Remote(TraceContext),
    /// Another span of this agent (same process's server span, or the other end's client).
    Local(SpanKey),
}

struct Ending {
    end_ns: u64,
    attributes: Vec<Attribute>,
    error: Option<String>,
}

struct Pending {
    kind: SpanKind,
    span_id: SpanId,
    /// The trace id if this span turns out to be a root.
    own_trace_id: TraceId,
    parent: Parent,
    name: CompactString,
    attributes: Vec<Attribute>,
    start_ns: u64,
    /// Agent time (CLOCK_MONOTONIC) when the request was processed.
    seen_ns: u64,
    thread: (u32, u32),
    /// The trace and parent ids of the W3C context the request carried (server spans), to
    /// recognise the calls an application makes while propagating it.
    incoming: Option<(TraceId, SpanId)>,
    ending: Option<Ending>,
    /// A span was linked to this one as its child: once exported, it is remembered in
    /// `settled` for children still pending (every child is linked while its parent is
    /// pending, since a child starts before its parent ends).
    is_parent: bool,
}

/// What an exported span leaves behind for late children and peers.
#[derive(Clone)]
struct Settled {
    span_id: SpanId,
    origin: Origin,
    until_ns: u64,
}

/// Where a trace's id came from, resolved through the parent chain.
#[derive(Clone)]
struct Origin {
    trace_id: TraceId,
    flags: u8,
    state: String,
    /// Some(sampled) when the trace came from a remote caller; None when it started here.
    remote_sampled: Option<bool>,
}

const MAX_PARENT_DEPTH: usize = 64;

pub struct Stitcher {
    config: StitchConfig,
    pending: PendingSpans<Pending>,
    /// Keys of pending spans in the order they were seen (so by `seen_ns`): a flush looks only
    /// at those whose settle window has passed. Keys of spans gone since are skipped.
    by_arrival: VecDeque<SpanKey>,
    /// Spans past their settle window that were not ready at the last flush (not ended, or an
    /// ancestor undecided), in arrival order: all seen before those in `by_arrival`.
    overdue: VecDeque<SpanKey>,
    /// A flush's spans ready to go; empty between flushes, kept for its capacity.
    ready_keys: Vec<SpanKey>,
    /// Server spans in flight per (tgid, tid), oldest first.
    in_flight: HashMap<(u32, u32), Vec<SpanKey>>,
    peers: Peers,
    settled: HashMap<SpanKey, Settled>,
    /// Spans with kernel-decided ids, by span id: the parents injected client spans name.
    by_kernel_id: HashMap<SpanId, SpanKey>,
    processes: HashMap<u32, Arc<ProcessMeta>>,
    /// Identities of processes gone, until their last spans are out: pid -> (meta, until).
    retired: HashMap<u32, (Arc<ProcessMeta>, u64)>,
    /// Trace and span ids: random, not secret, so a fast generator seeded from the OS (as
    /// the OpenTelemetry SDK's id generator does); ThreadRng's ChaCha was 3% of the pipeline.
    rng: SmallRng,
    stats: StitchStats,
}

/// How long a gone process's identity is kept for its settling spans.
const RETIRED_TTL_NS: u64 = 60 * 1_000_000_000;
/// How long an exported parent is remembered for its pending children.
const SETTLED_TTL_NS: u64 = 60 * 1_000_000_000;

impl Stitcher {
    pub fn new(config: StitchConfig) -> Self {
        Self {
            config,
            pending: PendingSpans::new(),
            by_arrival: VecDeque::new(),
            overdue: VecDeque::new(),
            ready_keys: Vec::new(),
            in_flight: HashMap::new(),
            peers: Peers::default(),
            settled: HashMap::new(),
            by_kernel_id: HashMap::new(),
            processes: HashMap::new(),
            retired: HashMap::new(),
            rng: SmallRng::from_os_rng(),
            stats: StitchStats::default(),
        }
    }

    pub fn stats(&self) -> StitchStats {
        self.stats
    }

    /// Spans started and not exported yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Requests waiting for the other end of their connection.
    pub fn waiting_peers(&self) -> usize {
        self.peers.len()
    }

    /// Registers (or refreshes, after an exec) a traced process: its spans carry this identity.
    /// Identities are looked up when spans are exported, so the first requests of a process
    /// the kernel enabled by itself (at fork, at exec) still get the identity registered
    /// moments later.
    pub fn add_process(&mut self, meta: Arc<ProcessMeta>) {
        self.retired.remove(&meta.pid);
        self.processes.insert(meta.pid, meta);
    }

    /// Drops the spans of `tgid` that have not ended (tracing was turned off for it); spans
    /// that ended still go out.
    pub fn discard_open(&mut self, tgid: u32) {
        let open: Vec<SpanKey> = self
            .pending
            .iter()
            .filter(|(k, p)| k.0.tgid == tgid && p.ending.is_none())
            .map(|(k, _)| *k)
            .collect();
        for key in open {
            if let Some(span) = self.pending.remove(&key) {
                self.leave_thread(span.thread, key);
                self.stats.discarded += 1;
            }
        }
    }

    /// Forgets a process (it exited, or is no longer traced). Its identity is kept a while
    /// for its spans still settling.
    pub fn remove_process(&mut self, pid: u32, now_ns: u64) {
        if let Some(meta) = self.processes.remove(&pid) {
            self.retired.insert(pid, (meta, now_ns + RETIRED_TTL_NS));
        }
    }

    fn identity(&mut self, pid: u32) -> Arc<ProcessMeta> {
        if let Some(meta) = self
            .processes
            .get(&pid)
            .or_else(|| self.retired.get(&pid).map(|(m, _)| m))
        {
            return meta.clone();
        }
        self.stats.unknown_process += 1;
        Arc::new(ProcessMeta::unknown(pid))
    }

    pub fn on_event(&mut self, conn: &ConnMeta, event: L7Event, now_ns: u64) {
        match event {
            L7Event::Request(req) => self.on_request(conn, req, now_ns),
            L7Event::Response(resp) => self.on_response(conn, resp),
            L7Event::Abandoned {
                stream_id,
                at,
                reason,
            } => self.on_abandoned(conn, stream_id, at, reason),
        }
    }

    fn on_request(&mut self, conn: &ConnMeta, req: Request, now_ns: u64) {
        let Some(role) = conn.role else {
            self.stats.no_role += 1;
            return;
        };
        let tgid = conn.socket.tgid;
        let key = (conn.socket, req.stream_id);
        if self.pending.contains_key(&key) {
            // One id per request on a connection: a repeat is a parser bug, never overwrite.
            self.stats.duplicate_requests += 1;
            return;
        }
        let thread = (tgid, req.first.tid);
        let kernel_ids = req.first.ids.filter(|ids| {
            ids.kind
                == match role {
                    Role::Server => IDS_SERVER,
                    Role::Client => IDS_CLIENT,
                }
        });
        tracing::trace!(
            "request {} on pid {tgid} fd {} ({role:?}, local {:?}, peer {:?})",
            req.name,
            conn.socket.fd,
            conn.local,
            conn.peer
        );
        let (start_ns, parent, is_parent) = match role {
            Role::Server => (
                req.first.exit_ns,
                self.server_parent(conn, &req, key, kernel_ids.as_ref(), now_ns),
                false,
            ),
            Role::Client => {
                let (parent, peer_child) =
                    self.client_parent(conn, &req, key, thread, kernel_ids.as_ref(), now_ns);
                (req.first.enter_ns, parent, peer_child)
            }
        };
        let (span_id, own_trace_id) = match &kernel_ids {
            Some(ids) => {
                self.stats.kernel_ids += 1;
                // Injected calls name server spans only.
                if role == Role::Server {
                    self.by_kernel_id.insert(ids.span_id, key);
                }
                (ids.span_id, ids.trace_id)
            }
            None => (new_span_id(&mut self.rng), new_trace_id(&mut self.rng)),
        };
        let mut attributes = req.attributes;
        add_connection_attributes(&mut attributes, role, conn);
        if role == Role::Server {
            self.in_flight.entry(thread).or_default().push(key);
        }
        if self.pending.len() >= self.config.max_pending {
            self.evict_oldest();
        }
        self.by_arrival.push_back(key);
        self.pending.insert(
            key,
            Pending {
                kind: role.into(),
                span_id,
                own_trace_id,
                parent,
                name: req.name,
                attributes,
                start_ns,
                seen_ns: now_ns,
                thread,
                incoming: match role {
                    Role::Server => req.context.as_ref().map(|c| (c.trace_id, c.parent_id)),
                    Role::Client => None,
                },
                ending: None,
                is_parent,
            },
        );
        self.stats.spans_started += 1;
    }

    fn server_parent(
        &mut self,
        conn: &ConnMeta,
        req: &Request,
        key: SpanKey,
        kernel_ids: Option<&TraceIds>,
        now_ns: u64,
    ) -> Parent {
        let seen = Seen {
            fingerprint: req.fingerprint,
            key,
            at_ns: req.first.exit_ns,
            seen_ns: now_ns,
        };
        if let Some(local) = conn.local
            && let Some(client) = self.peers.server(local, conn.peer, seen)
            && let Some(parent) = self.link_to(client)
        {
            self.stats.peer_links += 1;
            return parent;
        }
        if let Some(ids) = kernel_ids {
            // What the kernel read is what its children carry downstream.
            return match &req.context {
                _ if ids.parent_id == [0; 8] => Parent::None,
                Some(ctx) if ctx.trace_id == ids.trace_id && ctx.parent_id == ids.parent_id => {
                    Parent::Remote(ctx.clone())
                }
                _ => Parent::Remote(context_of(ids)),
            };
        }
        match &req.context {
            Some(ctx) => Parent::Remote(ctx.clone()),
            None => Parent::None,
        }
    }

    /// `Parent::Local(parent)` if `parent` is still known (pending, which marks it a parent,
    /// or exported and remembered); None if it is gone.
    fn link_to(&mut self, parent: SpanKey) -> Option<Parent> {
        if let Some(span) = self.pending.get_mut(&parent) {
            span.is_parent = true;
        } else if !self.settled.contains_key(&parent) {
            return None;
        }
        Some(Parent::Local(parent))
    }

    /// The client span's parent, and whether a server span seen first was linked to it as
    /// its child (then it is a parent itself).
    fn client_parent(
        &mut self,
        conn: &ConnMeta,
        req: &Request,
        key: SpanKey,
        thread: (u32, u32),
        kernel_ids: Option<&TraceIds>,
        now_ns: u64,
    ) -> (Parent, bool) {
        let seen = Seen {
            fingerprint: req.fingerprint,
            key,
            at_ns: req.first.enter_ns,
            seen_ns: now_ns,
        };
        let mut peer_child = false;
        if let (Some(local), Some(peer)) = (conn.local, conn.peer)
            && let Some(server) = self.peers.client(local, peer, seen)
            && let Some(span) = self.pending.get_mut(&server)
        {
            // The other end was seen first and decided on its own; it is this span's child.
            span.parent = Parent::Local(key);
            peer_child = true;
            self.stats.peer_links += 1;
        }
        (self.client_link(req, thread, kernel_ids), peer_child)
    }

    fn client_link(
        &mut self,
        req: &Request,
        thread: (u32, u32),
        kernel_ids: Option<&TraceIds>,
    ) -> Parent {
        if let Some(ids) = kernel_ids {
            // The kernel inserted a traceparent naming the thread's server span as parent.
            let server = self.by_kernel_id.get(&ids.parent_id).copied();
            return match server.and_then(|server| self.link_to(server)) {
                Some(parent) => {
                    self.stats.thread_links += 1;
                    parent
                }
                None => Parent::Remote(context_of(ids)),
            };
        }
        // The newest server span of this thread that began before this request was written.
        let serving = self.in_flight.get(&thread).and_then(|keys| {
            keys.iter().rev().copied().find(|k| {
                self.pending
                    .get(k)
                    .is_some_and(|p| p.start_ns <= req.first.enter_ns)
            })
        });
        if let Some(server) = serving
            && let Some(parent) = self.link_to(server)
        {
            self.stats.thread_links += 1;
            return parent;
        }
        // Another thread wrote it (a client library's I/O thread, a thread pool, an event
        // loop), but the application propagated the context of a request it is serving.
        if let Some(ctx) = &req.context
            && let Some(server) = self.serving_context(thread.0, ctx, req.first.enter_ns)
            && let Some(parent) = self.link_to(server)
        {
            self.stats.context_links += 1;
            return parent;
        }
        // The application's own header (it may be instrumented, or forward context from a
        // queue) or a new trace.
        match &req.context {
            Some(ctx) => Parent::Remote(ctx.clone()),
            None => Parent::None,
        }
    }

    /// The server span of process `tgid`, in flight at `at_ns`, whose incoming context the
    /// outgoing `ctx` continues: the same trace, and preferably the same parent (forwarded
    /// verbatim). The newest such span if several match.
    fn serving_context(&self, tgid: u32, ctx: &TraceContext, at_ns: u64) -> Option<SpanKey> {
        let mut best: Option<(bool, u64, SpanKey)> = None;
        for key in self
            .in_flight
            .iter()
            .filter(|((pid, _), _)| *pid == tgid)
            .flat_map(|(_, keys)| keys)
        {
            let Some(span) = self.pending.get(key) else {
                continue;
            };
            let Some((trace_id, parent_id)) = span.incoming else {
                continue;
            };
            if trace_id != ctx.trace_id || span.start_ns > at_ns {
                continue;
            }
            let candidate = (parent_id == ctx.parent_id, span.start_ns, *key);
            if best.is_none_or(|b| (candidate.0, candidate.1) > (b.0, b.1)) {
                best = Some(candidate);
            }
        }
        best.map(|(_, _, key)| key)
    }

    fn on_response(&mut self, conn: &ConnMeta, resp: Response) {
        let key = (conn.socket, resp.stream_id);
        let Some(span) = self.pending.get_mut(&key) else {
            self.stats.orphan_responses += 1;
            return;
        };
        span.ending = Some(Ending {
            end_ns: resp.last.exit_ns.max(span.start_ns),
            attributes: resp.attributes,
            error: resp.error,
        });
        let thread = span.thread;
        self.leave_thread(thread, key);
    }

    fn on_abandoned(&mut self, conn: &ConnMeta, stream_id: u64, at: SegTime, reason: &str) {
        let key = (conn.socket, stream_id);
        let Some(span) = self.pending.get_mut(&key) else {
            return;
        };
        span.ending = Some(Ending {
            end_ns: at.exit_ns.max(span.start_ns),
            attributes: Vec::new(),
            error: Some(reason.to_string()),
        });
        let thread = span.thread;
        self.leave_thread(thread, key);
        self.stats.abandoned += 1;
    }

    fn leave_thread(&mut self, thread: (u32, u32), key: SpanKey) {
        // An emptied list stays until the next flush: a busy thread would otherwise
        // allocate one per request.
        if let Some(keys) = self.in_flight.get_mut(&thread) {
            keys.retain(|k| *k != key);
        }
    }

    /// Drops the span seen first (the overdue ones were all seen before the others).
    fn evict_oldest(&mut self) {
        while let Some(key) = self
            .overdue
            .pop_front()
            .or_else(|| self.by_arrival.pop_front())
        {
            if let Some(span) = self.pending.remove(&key) {
                self.leave_thread(span.thread, key);
                self.stats.evicted += 1;
                return;
            }
        }
    }

    /// Appends to `ready` the spans ready to go: ended, and their trace decided. With `force`,
    /// every span that ended.
    fn ready(&mut self, now_ns: u64, settle: u64, force: bool, ready: &mut Vec<SpanKey>) {
        if force {
            ready.extend(
                self.pending
                    .iter()
                    .filter(|(_, p)| p.ending.is_some())
                    .map(|(k, _)| *k),
            );
            return;
        }
        // Each candidate is looked up once here: at 10k req/s thousands of spans wait out the
        // settle window, so each lookup is a cache miss.
        for key in std::mem::take(&mut self.overdue) {
            match self.pending.get(&key) {
                None => {}
                Some(span) if self.is_ready(span, now_ns, settle) => ready.push(key),
                Some(_) => self.overdue.push_back(key),
            }
        }
        while let Some(&key) = self.by_arrival.front() {
            match self.pending.get(&key) {
                Some(span) if span.seen_ns + settle > now_ns => break,
                Some(span) if self.is_ready(span, now_ns, settle) => ready.push(key),
                Some(_) => self.overdue.push_back(key),
                None => {}
            }
            self.by_arrival.pop_front();
        }
    }

    /// Whether a pending span can go: it ended, and its trace is decided.
    fn is_ready(&self, span: &Pending, now_ns: u64, settle: u64) -> bool {
        span.ending.is_some() && self.decided_span(span, now_ns, settle, 0)
    }

    /// Moves every span that is ready (ended, and its trace decided) to `out`. With `force`,
    /// everything that ended goes now (shutdown).
    pub fn flush(&mut self, now_ns: u64, force: bool, out: &mut Vec<Span>) {
        let settle = self.config.settle.as_nanos() as u64;
        // Kept across flushes, as it grows to a tick's worth of keys.
        let mut ready = std::mem::take(&mut self.ready_keys);
        self.ready(now_ns, settle, force, &mut ready);
        out.reserve(ready.len());
        for key in ready.drain(..) {
            let Some(span) = self.pending.remove(&key) else {
                continue;
            };
            let origin = self.origin_of(&span, 0);
            let parent_span_id = self.parent_span_id(&span);
            let ending = span.ending.expect("filtered on ending");
            let mut attributes = span.attributes;
            attributes.extend(ending.attributes);
            // Only parents are remembered: every span for a minute was a map of a minute of
            // traffic, scanned on every flush.
            if span.is_parent {
                self.settled.insert(
                    key,
                    Settled {
                        span_id: span.span_id,
                        origin: origin.clone(),
                        until_ns: now_ns + SETTLED_TTL_NS,
                    },
                );
            }
            self.stats.spans_finished += 1;
            out.push(Span {
                trace_id: origin.trace_id,
                span_id: span.span_id,
                parent_span_id,
                trace_flags: origin.flags,
                trace_state: origin.state,
                remote_sampled: origin.remote_sampled,
                kind: span.kind,
                name: span.name,
                start_mono_ns: span.start_ns,
                end_mono_ns: ending.end_ns,
                error: ending.error,
                attributes,
                process: self.identity(key.0.tgid),
            });
        }
        self.ready_keys = ready;
        if !force {
            self.settled.retain(|_, s| s.until_ns > now_ns);
            let (pending, settled) = (&self.pending, &self.settled);
            self.by_kernel_id
                .retain(|_, key| pending.contains_key(key) || settled.contains_key(key));
            self.retired.retain(|_, (_, until)| *until > now_ns);
            self.in_flight.retain(|_, keys| !keys.is_empty());
            self.peers.expire(now_ns.saturating_sub(4 * settle));
        }
    }

    /// Whether `key`'s trace can no longer change: its settle window and its ancestors' passed.
    fn decided(&self, key: SpanKey, now_ns: u64, settle: u64, depth: usize) -> bool {
        if self.settled.contains_key(&key) || depth > MAX_PARENT_DEPTH {
            return true;
        }
        match self.pending.get(&key) {
            Some(span) => self.decided_span(span, now_ns, settle, depth),
            // Parent evicted: the child resolves without it.
            None => true,
        }
    }

    fn decided_span(&self, span: &Pending, now_ns: u64, settle: u64, depth: usize) -> bool {
        span.seen_ns + settle <= now_ns
            && match span.parent {
                Parent::Local(parent) => self.decided(parent, now_ns, settle, depth + 1),
                _ => true,
            }
    }

    fn origin(&self, key: SpanKey, depth: usize) -> Origin {
        if let Some(settled) = self.settled.get(&key) {
            return settled.origin.clone();
        }
        match self.pending.get(&key) {
            Some(span) => self.origin_of(span, depth),
            None => new_origin(new_trace_id(&mut rand::rng())),
        }
    }

    fn origin_of(&self, span: &Pending, depth: usize) -> Origin {
        match &span.parent {
            Parent::Remote(ctx) => Origin {
                trace_id: ctx.trace_id,
                flags: ctx.flags,
                state: ctx.state.clone(),
                remote_sampled: Some(ctx.flags & 1 == 1),
            },
            Parent::Local(parent)
                if depth < MAX_PARENT_DEPTH
                    && (self.pending.contains_key(parent) || self.settled.contains_key(parent)) =>
            {
                self.origin(*parent, depth + 1)
            }
            _ => new_origin(span.own_trace_id),
        }
    }

    fn parent_span_id(&self, span: &Pending) -> Option<SpanId> {
        match &span.parent {
            Parent::None => None,
            Parent::Remote(ctx) => Some(ctx.parent_id),
            Parent::Local(parent) => self
                .pending
                .get(parent)
                .map(|p| p.span_id)
                .or_else(|| self.settled.get(parent).map(|s| s.span_id)),
        }
    }
}

/// The W3C context a kernel-decided span continues.
fn context_of(ids: &TraceIds) -> TraceContext {
    TraceContext {
        trace_id: ids.trace_id,
        parent_id: ids.parent_id,
        flags: ids.flags,
        state: String::new(),
    }
}

fn new_origin(trace_id: TraceId) -> Origin {
    Origin {
        trace_id,
        flags: 1,
        state: String::new(),
        remote_sampled: None,
    }
}

/// Connection facts the protocol could not know: peer and local addresses.
fn add_connection_attributes(attributes: &mut Vec<Attribute>, role: Role, conn: &ConnMeta) {
    let has = |attributes: &Vec<Attribute>, key: &str| span::find(attributes, key).is_some();
    if let (Some(peer), Some(ip)) = (conn.peer, &conn.peer_ip) {
        attributes.push(Attribute::str("network.peer.address", ip.clone()));
        attributes.push(Attribute::int("network.peer.port", peer.port() as i64));
        if role == Role::Server && !has(attributes, "client.address") {
            attributes.push(Attribute::str("client.address", ip.clone()));
        }
    }
    // A server's address is its own end; a client's is its peer, whose IP is formatted already.
    let (server, server_ip) = match role {
        Role::Server => (conn.local, None),
        Role::Client => (conn.peer, conn.peer_ip.clone()),
    };
    if let Some(server) = server {
        if !has(attributes, "server.address") && !server.ip().is_unspecified() {
            let ip = server_ip.unwrap_or_else(|| server.ip().to_compact_string());
            attributes.push(Attribute::str("server.address", ip));
        }
        if !has(attributes, "server.port") {
            attributes.push(Attribute::int("server.port", server.port() as i64));
        }
    }
}

fn new_trace_id(rng: &mut impl Rng) -> TraceId {
    loop {
        let id: TraceId = rng.random();
        if id != [0; 16] {
            return id;
        }
    }
}

fn new_span_id(rng: &mut impl Rng) -> SpanId {
    loop {
        let id: SpanId = rng.random();
        if id != [0; 8] {
            return id;
        }
    }
}

/// Settle window as CLOCK_MONOTONIC ns, for callers that schedule flushes.
pub fn settle_ns(config: &StitchConfig) -> u64 {
    config.settle.as_nanos() as u64
}
