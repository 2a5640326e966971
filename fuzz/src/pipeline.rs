//! The whole userspace data path from raw ring-buffer records: `capture::decode` (kernel
//! byte layouts, hints past the capture), connections, every parser, stitching and sampling,
//! then `ready_spans(true)`.
//!
//! Input: the recording format of `tracer run --record-events` (`capture::record`: a u32-LE
//! length, then the record), read leniently: a length past the end takes what is left. A real
//! recording is a seed as it is. Every process a record names is traced (at most 16).
//!
//! Invariants: no span ends before it starts, every span has a name and belongs to a traced
//! process, and spans out are no more than requests in.

use std::{collections::HashSet, sync::Arc};

use tracer::{
    capture::{self, CaptureEvent},
    pipeline::Pipeline,
    process::ProcessMeta,
    sampling::Sampler,
    stitch::StitchConfig,
};

const MAX_PROCESSES: usize = 16;

pub fn run(data: &[u8]) {
    let mut pipeline = Pipeline::new(StitchConfig::default(), Sampler::default());
    let mut traced = HashSet::new();
    let mut rest = data;
    let mut spans = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_le_bytes(crate::script::take::<4>(&mut rest)) as usize;
        let (record, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        if let Ok(event) = capture::decode(record) {
            let tgid = match event {
                CaptureEvent::Data(d) => Some(d.socket.tgid),
                CaptureEvent::Open(o) => Some(o.socket.tgid),
                CaptureEvent::Close { socket, .. } => Some(socket.tgid),
                _ => None,
            };
            if let Some(tgid) = tgid
                && traced.len() < MAX_PROCESSES
                && traced.insert(tgid)
            {
                pipeline.add_process(Arc::new(ProcessMeta::unknown(tgid)));
            }
        }
        pipeline.on_record(record, tracer::clock::monotonic_ns());
        pipeline.take_process_changes();
    }
    spans.extend(pipeline.ready_spans(true));
    let stats = pipeline.stats();
    assert!(
        spans.len() as u64 <= stats.stitch.spans_started,
        "{stats:?}"
    );
    for span in &spans {
        assert!(
            span.end_mono_ns >= span.start_mono_ns,
            "span ends before it starts: {span:#?}"
        );
        assert!(!span.name.is_empty(), "{span:#?}");
        assert!(traced.contains(&span.process.pid), "{span:#?}");
    }
}
