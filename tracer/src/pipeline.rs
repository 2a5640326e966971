//! The data path in one place: a ring-buffer record goes through capture decoding, the
//! connection table (and its protocol parsers), stitching and sampling, and comes out as spans
//! ready for export. Single-threaded by design: every stage is plain state, no locks.

use crate::{
    capture::{self, CaptureEvent, SocketId},
    clock,
    connections::{ConnStats, Connections},
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
    pub connections: ConnStats,
    pub stitch: StitchStats,
}

pub struct Pipeline {
    connections: Connections,
    stitcher: Stitcher,
    sampler: Sampler,
    records: u64,
    decode_errors: u64,
    sampled_out: u64,
    /// Processes whose exit the kernel reported since the last `take_exited`.
    exited: Vec<u32>,
    finished: Vec<Span>,
}

impl Pipeline {
    pub fn new(stitch: StitchConfig, sampler: Sampler) -> Self {
        Self {
            connections: Connections::new(),
            stitcher: Stitcher::new(stitch),
            sampler,
            records: 0,
            decode_errors: 0,
            sampled_out: 0,
            exited: Vec::new(),
            finished: Vec::new(),
        }
    }

    pub fn stitcher(&mut self) -> &mut Stitcher {
        &mut self.stitcher
    }

    /// A socket found open in /proc when tracing was enabled.
    pub fn adopt_socket(&mut self, socket: SocketId, inode: u64) {
        let now = clock::monotonic_ns();
        let stitcher = &mut self.stitcher;
        self.connections.adopt(socket, inode, &mut |conn, ev| {
            stitcher.on_event(conn, ev, now)
        });
    }

    /// One ring-buffer record.
    pub fn on_record(&mut self, record: &[u8]) {
        self.records += 1;
        match capture::decode(record) {
            Ok(event) => self.on_event(event),
            Err(e) => {
                self.decode_errors += 1;
                tracing::debug!("undecodable capture record: {e}");
            }
        }
    }

    pub fn on_event(&mut self, event: CaptureEvent) {
        if let CaptureEvent::ProcessExit { tgid, .. } = event {
            self.exited.push(tgid);
        }
        let now = clock::monotonic_ns();
        let stitcher = &mut self.stitcher;
        self.connections
            .on_event(event, &mut |conn, ev| stitcher.on_event(conn, ev, now));
    }

    /// Ends everything of a process (it exited, or tracing was turned off for it).
    pub fn forget_process(&mut self, tgid: u32) {
        let now = clock::monotonic_ns();
        let stitcher = &mut self.stitcher;
        self.connections
            .forget_process(tgid, now, &mut |conn, ev| stitcher.on_event(conn, ev, now));
    }

    pub fn take_exited(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.exited)
    }

    /// Spans ready for export (sampled). With `force`, everything that has ended (shutdown).
    pub fn ready_spans(&mut self, force: bool) -> Vec<Span> {
        let now = clock::monotonic_ns();
        self.connections.tick(now);
        self.finished.clear();
        self.stitcher.flush(now, force, &mut self.finished);
        let before = self.finished.len();
        let sampler = self.sampler;
        self.finished.retain(|s| sampler.keep(s));
        self.sampled_out += (before - self.finished.len()) as u64;
        std::mem::take(&mut self.finished)
    }

    pub fn stats(&self) -> PipelineStats {
        PipelineStats {
            records: self.records,
            decode_errors: self.decode_errors,
            sampled_out: self.sampled_out,
            connections: self.connections.stats(),
            stitch: self.stitcher.stats(),
        }
    }
}

#[cfg(test)]
mod tests;
