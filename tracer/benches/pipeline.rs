//! Throughput of the userspace data path on one core, from real capture events: the
//! ring-buffer records of nginx answering keep-alive requests (`tests/data/captures/
//! http1_nginx.rec`, made by `tests/data/captures/record.sh`), replayed as many times over as
//! new connections (each copy gets its own connection generations and later timestamps).
//! The replay runs on the recording's clock and flushes when the agent would: on its tick, and
//! on a ring wake-up (`RING_WAKEUP_BYTES` of records since the last read) once `BUSY_FLUSH`
//! has passed. The recording (nginx under wrk) brings a wake-up about every 53 ms of it, so
//! spans settle as they did live.
//!
//! - `parse_stitch_sample`: decoding, connections, HTTP/1 parsing, stitching and sampling.
//! - `otlp_encode`: the resulting spans as OTLP protobuf export requests (512 per request),
//!   as the agent writes them.
//! - `all`: both, record in, encoded bytes out: each flush's spans are encoded right away.
//!
//! Throughput is in HTTP/1 transactions (one server span each).
//!
//!     cargo bench -p tracer --bench pipeline

use std::{hint::black_box, mem::offset_of, path::Path, sync::Arc};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tracer::{
    agent, capture,
    export::{ResourceConfig, clock::WallClock, otlp},
    pipeline::Pipeline,
    process::ProcessMeta,
    sampling::Sampler,
    span::Span,
    stitch::StitchConfig,
};
use tracer_common::{DataEvent, EventHeader, EventKind, RING_WAKEUP_BYTES};

// The agent's allocator (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Times the recording is replayed per iteration.
const COPIES: u64 = 64;
/// Field offsets of the kernel's record layouts.
const KIND: usize = offset_of!(EventHeader, kind);
const TGID: usize = offset_of!(EventHeader, tgid);
const TS: usize = offset_of!(EventHeader, ts_ns);
const CONN_GEN: usize = offset_of!(EventHeader, conn_gen);
const DATA_TS_ENTER: usize = offset_of!(DataEvent, ts_enter_ns);

fn u32_at(r: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(r[at..at + 4].try_into().unwrap())
}

fn add_u64(r: &mut [u8], at: usize, delta: u64) {
    let v = u64::from_ne_bytes(r[at..at + 8].try_into().unwrap());
    r[at..at + 8].copy_from_slice(&(v + delta).to_ne_bytes());
}

/// The socket records of the recording.
fn recorded() -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/captures/http1_nginx.rec");
    let socket_kinds = [
        EventKind::Data,
        EventKind::Accept,
        EventKind::Connect,
        EventKind::Close,
    ];
    capture::record::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
        .into_iter()
        .filter(|r| socket_kinds.iter().any(|k| *k as u32 == u32_at(r, KIND)))
        .collect()
}

/// `COPIES` replays of `records`, one after another in time, each on new connections.
fn replayed(records: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let first = records.iter().map(|r| ts(r)).min().unwrap();
    let last = records.iter().map(|r| ts(r)).max().unwrap();
    let period = last - first + 1_000_000;
    let mut out = Vec::with_capacity(records.len() * COPIES as usize);
    for copy in 0..COPIES {
        for record in records {
            let mut r = record.clone();
            add_u64(&mut r, TS, copy * period);
            add_u64(&mut r, CONN_GEN, copy << 24);
            if u32_at(&r, KIND) == EventKind::Data as u32 {
                add_u64(&mut r, DATA_TS_ENTER, copy * period);
            }
            out.push(r);
        }
    }
    out
}

fn pipeline(tgid: u32) -> Pipeline {
    let meta = ProcessMeta::from_proc(std::process::id(), Some("nginx"), "bench").unwrap();
    let mut pipeline = Pipeline::new(StitchConfig::default(), Sampler::default());
    pipeline.add_process(Arc::new(ProcessMeta { pid: tgid, ..meta }));
    pipeline
}

fn ts(record: &[u8]) -> u64 {
    u64::from_ne_bytes(record[TS..TS + 8].try_into().unwrap())
}

/// Replays `records` on their own clock, handing the spans of each flush to `out`. The agent
/// reads the ring on each tick and wake-up, and flushes on each tick and on a wake-up
/// `BUSY_FLUSH` after the last flush (`agent::run`).
fn run(records: &[Vec<u8>], mut pipeline: Pipeline, mut out: impl FnMut(Vec<Span>)) {
    let tick = agent::TICK.as_nanos() as u64;
    let busy = agent::BUSY_FLUSH.as_nanos() as u64;
    let (mut now, mut next_tick, mut flushed, mut unread) = (0, 0, 0, 0);
    for record in records {
        now = now.max(ts(record));
        pipeline.on_record(record, now);
        // As the ring counts it: an 8-byte header, the record padded to 8 bytes.
        unread += (record.len() as u64).next_multiple_of(8) + 8;
        let ticked = now >= next_tick;
        let woken = unread >= RING_WAKEUP_BYTES;
        if ticked || woken {
            unread = 0;
        }
        if ticked {
            next_tick = now + tick;
        }
        if ticked || (woken && now - flushed >= busy) {
            out(pipeline.ready_spans_at(now, false));
            flushed = now;
        }
    }
    out(pipeline.ready_spans_at(now, true));
}

fn encode(spans: &[Arc<Span>], resources: &otlp::ResourceBuilder, clock: &WallClock) -> usize {
    spans
        .chunks(512)
        .map(|batch| black_box(otlp::wire::encode_request(batch, resources, clock)).len())
        .sum()
}

fn benches(c: &mut Criterion) {
    let records = replayed(&recorded());
    let tgid = u32_at(&records[0], TGID);
    let mut spans: Vec<Arc<Span>> = Vec::new();
    run(&records, pipeline(tgid), |out| {
        spans.extend(out.into_iter().map(Arc::new))
    });
    let transactions = spans.len() as u64;
    assert_eq!(transactions % COPIES, 0, "every copy gives the same spans");
    assert!(
        transactions >= 100 * COPIES,
        "{transactions} spans from the recording"
    );
    let resources = otlp::ResourceBuilder::new("bench".into(), ResourceConfig::default());
    let clock = WallClock::new();

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(transactions));
    group.sample_size(20);
    group.bench_function("parse_stitch_sample", |b| {
        b.iter_batched(
            || pipeline(tgid),
            |p| {
                let mut n = 0;
                run(&records, p, |spans| n += spans.len());
                n
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("otlp_encode", |b| {
        b.iter(|| encode(&spans, &resources, &clock))
    });
    group.bench_function("all", |b| {
        b.iter_batched(
            || pipeline(tgid),
            |p| {
                let mut bytes = 0;
                run(&records, p, |out| {
                    let spans: Vec<Arc<Span>> = out.into_iter().map(Arc::new).collect();
                    bytes += encode(&spans, &resources, &clock);
                });
                bytes
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(pipeline_benches, benches);
criterion_main!(pipeline_benches);
