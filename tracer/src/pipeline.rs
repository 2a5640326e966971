//! The data path in one place: a ring-buffer record goes through capture decoding, the
//! connection table (and its protocol parsers), stitching and sampling, and comes out as spans
//! ready for export. Single-threaded by design: every stage is plain state, no locks.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use crate::{
    capture::{self, CaptureEvent, SocketId},
    clock,
    connections::{ConnStats, Connections},
    process::ProcessMeta,
    protocols::L7Event,
    sampling::Sampler,
    span::Span,
    stitch::{StitchConfig, StitchStats, Stitcher},
};

#[derive(Clone, Copy, Debug, Default)]
pub struct PipelineStats {
    pub records: u64,
    pub decode_errors: u64,
    /// Spans the sampler dropped (by design, not a loss).
    pub sampled_out: u64,
    /// Events of processes no longer traced (still in the ring buffer when tracing stopped).
    pub untraced_events: u64,
    pub connections: ConnStats,
    pub stitch: StitchStats,
}

/// Sizes of the pipeline's tables (each bounded, with evictions counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineTables {
    pub connections: usize,
    /// Spans started and not exported yet.
    pub pending_spans: usize,
    /// Requests waiting for the other end of their connection.
    pub waiting_peers: usize,
}

/// A change in which processes exist or are traced, for the agent to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessChange {
    Exited(u32),
    Forked {
        parent: u32,
        child: u32,
    },
    Exec {
        tgid: u32,
        traced: bool,
        exe_match: bool,
    },
    Listen {
        tgid: u32,
        fd: i32,
    },
}

pub struct Pipeline {
    connections: Connections,
    stitcher: Stitcher,
    sampler: Sampler,
    /// Processes whose events flow on (the rest are dropped: tracing was turned off for them
    /// while their events were already in the ring buffer).
    traced: HashSet<u32>,
    records: u64,
    decode_errors: u64,
    sampled_out: u64,
    untraced_events: u64,
    /// Process changes since the last `take_process_changes`.
    process_changes: Vec<ProcessChange>,
    /// Per traced process: data the kernel reported lost on its connections.
    lost: HashMap<u32, u64>,
    finished: Vec<Span>,
}

impl Pipeline {
    pub fn new(stitch: StitchConfig, sampler: Sampler) -> Self {
        Self {
            connections: Connections::new(),
            stitcher: Stitcher::new(stitch),
            sampler,
            traced: HashSet::new(),
            records: 0,
            decode_errors: 0,
            sampled_out: 0,
            untraced_events: 0,
            process_changes: Vec::new(),
            lost: HashMap::new(),
            finished: Vec::new(),
        }
    }

    /// Starts passing `meta`'s events on.
    pub fn add_process(&mut self, meta: Arc<ProcessMeta>) {
        self.traced.insert(meta.pid);
        self.stitcher.add_process(meta);
    }

    /// Stops tracing a process: its events still in flight are dropped, its open requests
    /// are discarded without spans (counted), finished spans still go out.
    pub fn remove_process(&mut self, tgid: u32) {
        if !self.traced.remove(&tgid) {
            return;
        }
        let now = clock::monotonic_ns();
        let stitcher = &mut self.stitcher;
        self.connections.forget_process(tgid, now, &mut |conn, ev| {
            // Requests cut short by turning tracing off are not failures of the application.
            if !matches!(ev, L7Event::Abandoned { .. }) {
                stitcher.on_event(conn, ev, now);
            }
        });
        self.stitcher.discard_open(tgid);
        self.stitcher.remove_process(tgid, now);
        self.lost.remove(&tgid);
    }

    pub fn is_traced(&self, tgid: u32) -> bool {
        self.traced.contains(&tgid)
    }

    /// Data the kernel lost on `tgid`'s connections (each loss resets one connection).
    pub fn lost_for(&self, tgid: u32) -> u64 {
        self.lost.get(&tgid).copied().unwrap_or(0)
    }

    /// A socket found open in /proc when tracing was enabled.
    pub fn adopt_socket(&mut self, socket: SocketId, inode: u64) {
        let now = clock::monotonic_ns();
        let stitcher = &mut self.stitcher;
        self.connections.adopt(socket, inode, &mut |conn, ev| {
            stitcher.on_event(conn, ev, now)
        });
    }

    /// One ring-buffer record, read at `now_ns` (CLOCK_MONOTONIC; the agent reads the clock
    /// once per batch). A replay passes the recording's own times, so that spans settle as
    /// they did when it was made.
    pub fn on_record(&mut self, record: &[u8], now_ns: u64) {
        self.records += 1;
        match capture::decode(record) {
            Ok(event) => self.on_event_at(event, now_ns),
            Err(e) => {
                self.decode_errors += 1;
                tracing::debug!("undecodable capture record: {e}");
            }
        }
    }

    pub fn on_event(&mut self, event: CaptureEvent<'_>) {
        self.on_event_at(event, clock::monotonic_ns());
    }

    fn on_event_at(&mut self, event: CaptureEvent<'_>, now: u64) {
        let change = match event {
            CaptureEvent::ProcessExit { tgid, .. } => Some(ProcessChange::Exited(tgid)),
            CaptureEvent::Fork { parent, child } => Some(ProcessChange::Forked { parent, child }),
            CaptureEvent::Exec {
                tgid,
                traced,
                exe_match,
            } => Some(ProcessChange::Exec {
                tgid,
                traced,
                exe_match,
            }),
            CaptureEvent::Listen { tgid, fd } => Some(ProcessChange::Listen { tgid, fd }),
            _ => None,
        };
        if let Some(change) = change {
            // The kernel traces these processes already; their next events may be in this very
            // batch, before the agent has read their /proc entry.
            match change {
                ProcessChange::Forked { parent, child } if self.traced.contains(&parent) => {
                    self.traced.insert(child);
                }
                ProcessChange::Exec {
                    tgid,
                    exe_match: true,
                    ..
                } => {
                    self.traced.insert(tgid);
                }
                _ => {}
            }
            self.process_changes.push(change);
            if !matches!(change, ProcessChange::Exited(_)) {
                return;
            }
        }
        let tgid = match &event {
            CaptureEvent::Data(d) => d.socket.tgid,
            CaptureEvent::Open(o) => o.socket.tgid,
            CaptureEvent::Close { socket, .. } => socket.tgid,
            CaptureEvent::ProcessExit { tgid, .. } => *tgid,
            _ => return,
        };
        if !self.traced.contains(&tgid) {
            self.untraced_events += 1;
            return;
        }
        if let CaptureEvent::Data(d) = &event
            && d.flags & tracer_common::DATA_FLAG_LOST_BEFORE != 0
        {
            *self.lost.entry(tgid).or_default() += 1;
        }
        let stitcher = &mut self.stitcher;
        self.connections
            .on_event(event, &mut |conn, ev| stitcher.on_event(conn, ev, now));
    }

    /// Ends everything of a process that exited: open requests end as abandoned.
    pub fn process_exited(&mut self, tgid: u32) {
        if !self.traced.remove(&tgid) {
            return;
        }
        let now = clock::monotonic_ns();
        let stitcher = &mut self.stitcher;
        self.connections
            .forget_process(tgid, now, &mut |conn, ev| stitcher.on_event(conn, ev, now));
        self.stitcher.remove_process(tgid, now);
        self.lost.remove(&tgid);
    }

    pub fn take_process_changes(&mut self) -> Vec<ProcessChange> {
        std::mem::take(&mut self.process_changes)
    }

    /// Spans ready for export (sampled). With `force`, everything that has ended (shutdown).
    pub fn ready_spans(&mut self, force: bool) -> Vec<Span> {
        self.ready_spans_at(clock::monotonic_ns(), force)
    }

    /// [`Self::ready_spans`] at `now` (CLOCK_MONOTONIC ns): see [`Self::on_record`].
    pub fn ready_spans_at(&mut self, now: u64, force: bool) -> Vec<Span> {
        self.connections.tick(now);
        self.finished.clear();
        self.stitcher.flush(now, force, &mut self.finished);
        let before = self.finished.len();
        let sampler = self.sampler;
        self.finished.retain(|s| sampler.keep(s));
        self.sampled_out += (before - self.finished.len()) as u64;
        std::mem::take(&mut self.finished)
    }

    /// Entries held now: what the agent's memory grows with.
    pub fn tables(&self) -> PipelineTables {
        PipelineTables {
            connections: self.connections.len(),
            pending_spans: self.stitcher.pending(),
            waiting_peers: self.stitcher.waiting_peers(),
        }
    }

    pub fn stats(&self) -> PipelineStats {
        PipelineStats {
            records: self.records,
            decode_errors: self.decode_errors,
            sampled_out: self.sampled_out,
            untraced_events: self.untraced_events,
            connections: self.connections.stats(),
            stitch: self.stitcher.stats(),
        }
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
