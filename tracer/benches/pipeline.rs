//! Throughput of the userspace data path on one core. Ring-buffer records in the kernel's
//! byte layout (keep-alive connections, a curl-like request with traceparent, a Python-like
//! response) go through decoding, connections, HTTP/1 parsing, stitching and sampling; the
//! spans are then encoded as OTLP protobuf. Prints transactions (spans) per second.
//!
//!     cargo bench -p tracer --bench pipeline

use std::{hint::black_box, mem::size_of, sync::Arc, time::Instant};

use prost::Message;
use tracer::{
    export::{ResourceConfig, clock::WallClock, otlp},
    pipeline::Pipeline,
    process::ProcessMeta,
    sampling::Sampler,
    stitch::StitchConfig,
};
use tracer_common::{ConnEvent, DataEvent, Direction, EventHeader, EventKind, Syscall};

const CONNECTIONS: usize = 64;
const PER_CONNECTION: usize = 4000;
const PID: u32 = 4242;

const REQUEST: &[u8] = b"GET /api/users/12345/orders?page=2 HTTP/1.1\r\nHost: shop.local:8080\r\n\
User-Agent: curl/7.88.1\r\nAccept: */*\r\n\
traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\n\
Date: Sat, 21 Nov 2026 12:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n\
{\"orders\": [1, 2, 3, 4, 5]}";

fn bytes_of<T>(v: &T) -> &[u8] {
    // SAFETY: #[repr(C)] plain-old-data from tracer-common.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

fn header(kind: EventKind, fd: i32, ts: u64) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        tgid: PID,
        tid: PID + fd as u32,
        fd,
        ts_ns: ts,
        conn_gen: fd as u64,
    }
}

fn accept(fd: i32) -> Vec<u8> {
    let mut peer = [0u8; 28];
    peer[0..2].copy_from_slice(&2u16.to_ne_bytes());
    peer[2..4].copy_from_slice(&(40000 + fd as u16).to_be_bytes());
    peer[4..8].copy_from_slice(&[127, 0, 0, 1]);
    let mut local = peer;
    local[2..4].copy_from_slice(&8080u16.to_be_bytes());
    bytes_of(&ConnEvent {
        header: header(EventKind::Accept, fd, 1),
        peer_addr: peer,
        peer_addr_len: 16,
        local_addr: local,
        local_addr_len: 16,
        listen_fd: 3,
        result: 0,
    })
    .to_vec()
}

fn data(fd: i32, ts: u64, direction: Direction, payload: &[u8]) -> Vec<u8> {
    let mut out = bytes_of(&DataEvent {
        header: header(EventKind::Data, fd, ts + 2),
        ts_enter_ns: ts,
        total_len: payload.len() as u64,
        captured_len: payload.len() as u32,
        syscall: match direction {
            Direction::Ingress => Syscall::Recvfrom as u8,
            Direction::Egress => Syscall::Sendto as u8,
        },
        direction: direction as u8,
        flags: 0,
        hint_count: 0,
        ids: Default::default(),
    })
    .to_vec();
    out.extend_from_slice(payload);
    out
}

fn main() {
    // Connections interleave, as the ring buffer interleaves them.
    let mut records = Vec::new();
    for fd in 0..CONNECTIONS {
        records.push(accept(fd as i32 + 10));
    }
    let mut ts = 1_000;
    for _ in 0..PER_CONNECTION {
        for fd in 0..CONNECTIONS {
            let fd = fd as i32 + 10;
            records.push(data(fd, ts, Direction::Ingress, REQUEST));
            records.push(data(fd, ts + 10, Direction::Egress, RESPONSE));
            ts += 20;
        }
    }
    let transactions = CONNECTIONS * PER_CONNECTION;
    let bytes: usize = records.iter().map(Vec::len).sum();

    let meta = ProcessMeta::from_proc(std::process::id(), Some("bench"), "host").unwrap();
    let meta = Arc::new(ProcessMeta { pid: PID, ..meta });
    let mut pipeline = Pipeline::new(StitchConfig::default(), Sampler::default());
    pipeline.add_process(meta);

    let start = Instant::now();
    let mut spans = Vec::with_capacity(transactions);
    for (i, record) in records.iter().enumerate() {
        pipeline.on_record(record);
        if i % 8192 == 0 {
            spans.extend(pipeline.ready_spans(true));
        }
    }
    spans.extend(pipeline.ready_spans(true));
    let pipeline_secs = start.elapsed().as_secs_f64();
    assert_eq!(
        spans.len(),
        transactions,
        "every transaction gives one span"
    );

    let resources = otlp::ResourceBuilder::new("host".into(), ResourceConfig::default());
    let clock = WallClock::new();
    let spans: Vec<_> = spans.into_iter().map(Arc::new).collect();
    let start = Instant::now();
    let mut encoded = 0;
    for batch in spans.chunks(512) {
        let request = otlp::build_request(batch, &resources, &clock);
        encoded += black_box(request.encode_to_vec()).len();
    }
    let encode_secs = start.elapsed().as_secs_f64();

    println!(
        "pipeline (decode, connections, HTTP/1, stitch, sample): {transactions} transactions \
         ({:.1} MB of records) in {pipeline_secs:.3} s = {:.0} spans/s",
        bytes as f64 / 1e6,
        transactions as f64 / pipeline_secs
    );
    println!(
        "OTLP protobuf encoding: {transactions} spans ({:.1} MB) in {encode_secs:.3} s = {:.0} spans/s",
        encoded as f64 / 1e6,
        transactions as f64 / encode_secs
    );
    println!(
        "both, one core: {:.0} spans/s",
        transactions as f64 / (pipeline_secs + encode_secs)
    );
}
