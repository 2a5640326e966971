//! One connection as the agent runs it (`connections` without the table): syscalls pushed into
//! the stream of their direction, the protocol parser fed after each, events collected. Checks
//! the invariants every parser owes the rest of the agent whatever the bytes.

use std::collections::HashSet;

use crate::script::Syscall;
use tracer::protocols::{L7Event, MAX_BUFFERED, ParseStats, Parser, SegTime, StreamBuffer};

/// Syscalls inspected for a protocol before giving up, as `connections` does mid-stream.
const DETECT_SYSCALLS: usize = 64;

pub struct Conn {
    /// `None` until detected (when the connection starts detecting).
    parser: Option<Parser>,
    streams: [StreamBuffer; 2],
    events: Vec<L7Event>,
    stats: ParseStats,
    syscalls: u64,
}

impl Conn {
    pub fn with(parser: Parser) -> Self {
        Self {
            parser: Some(parser),
            ..Self::detecting()
        }
    }

    /// The protocol is recognised from the first syscalls, as on a connection the agent sees
    /// open.
    pub fn detecting() -> Self {
        Self {
            parser: None,
            streams: [StreamBuffer::new(), StreamBuffer::new()],
            events: Vec::new(),
            stats: ParseStats::default(),
            syscalls: 0,
        }
    }

    /// Syscall `n` happens at `n * 1000` ns and takes 500 ns: times only grow.
    fn time(n: u64) -> SegTime {
        SegTime {
            enter_ns: n * 1_000,
            exit_ns: n * 1_000 + 500,
            tid: 1,
            ids: None,
        }
    }

    pub fn io(&mut self, syscall: &Syscall<'_>) {
        self.syscalls += 1;
        if self.parser.is_none() {
            if self.syscalls as usize > DETECT_SYSCALLS {
                return;
            }
            match Parser::detect(syscall.dir, syscall.captured) {
                Some((parser, _)) => self.parser = Some(parser),
                None => return,
            }
        }
        let parser = self.parser.as_mut().expect("detected above");
        let stream = &mut self.streams[syscall.dir as usize];
        stream.push(syscall.captured, syscall.total, Self::time(self.syscalls));
        parser.feed(syscall.dir, stream, &mut self.events, &mut self.stats);
        // Memory: what a stream holds after parsing is bounded, whatever arrived.
        assert!(
            stream.buffered() <= MAX_BUFFERED,
            "{} bytes held in {:?}",
            stream.buffered(),
            syscall.dir
        );
    }

    /// Closes the connection after the last syscall; returns everything reported.
    pub fn close(mut self) -> Vec<L7Event> {
        if let Some(parser) = self.parser.as_mut() {
            parser.close(Self::time(self.syscalls + 1), &mut self.events);
        }
        assert_books(&self.events);
        self.events
    }
}

/// After the close: each request reported once and ended exactly once (by a response or an
/// abandonment), nothing ended that was not reported, and no request ends before it started.
pub fn assert_books(events: &[L7Event]) {
    let mut open = std::collections::HashMap::new();
    let mut seen = HashSet::new();
    for event in events {
        match event {
            L7Event::Request(r) => {
                assert!(seen.insert(r.stream_id), "request {} twice", r.stream_id);
                assert!(!r.name.is_empty(), "unnamed span {r:?}");
                open.insert(r.stream_id, r.first);
            }
            L7Event::Response(r) => {
                let first = open
                    .remove(&r.stream_id)
                    .unwrap_or_else(|| panic!("response for {} not open", r.stream_id));
                assert!(
                    r.last.exit_ns >= first.enter_ns,
                    "ends before it starts: {r:?}"
                );
            }
            L7Event::Abandoned { stream_id, at, .. } => {
                let first = open
                    .remove(stream_id)
                    .unwrap_or_else(|| panic!("abandoned {stream_id} not open"));
                assert!(at.exit_ns >= first.enter_ns, "abandoned before it starts");
            }
        }
    }
    assert!(open.is_empty(), "never ended after the close: {open:?}");
}
