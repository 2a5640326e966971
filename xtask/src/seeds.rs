//! Fuzz seeds from real captures. `tests/data/captures/*.rec` are recordings of real traffic
//! (`tracer run --record-events`, made by `tests/data/captures/record.sh`); each connection in
//! them becomes a seed in the input format of each target (described in `fuzz/src/`):
//!
//! - `pipeline`: the records of one connection as they are (and the whole recording when small).
//! - `http1`, `http2`: the connection's data records as `script` syscalls, each with its real
//!   captured bytes and real uncaptured remainder; the role from its accept or connect.
//! - `hpack`: the header blocks of each direction of an HTTP/2 connection, in order (so the
//!   dynamic table references resolve).
//! - `trace_context`: the `traceparent` and `tracestate` values seen in HTTP/1 heads.
//! - `grpc`: a few generator programs written here (its input drives a generator, not bytes).
//!
//! Written from scratch on every run into `fuzz/seeds/`, which is not kept in git.

use std::{
    collections::BTreeMap,
    mem::size_of,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use tracer_common::{DataEvent, EventHeader, EventKind};

/// A data record, as far as seeds need it.
struct Data {
    egress: bool,
    captured: Vec<u8>,
    total: u64,
}

/// One connection of a recording.
#[derive(Default)]
struct Connection {
    /// Its records as recorded (open, data, close).
    records: Vec<Vec<u8>>,
    /// `Some(true)` accepted, `Some(false)` connected, `None` not seen opening.
    accepted: Option<bool>,
    data: Vec<Data>,
}

/// Whole recordings larger than this are only used per connection (libFuzzer's inputs are
/// best kept small; its default limit is the largest seed).
const MAX_WHOLE_SEED: usize = 32 * 1024;

/// Syscalls of one connection in an `http1`/`http2` seed (later ones repeat the earlier).
const MAX_SCRIPT_SYSCALLS: usize = 64;

/// Writes every target's seeds under `out/<target>/`. Returns how many each got.
pub fn write(captures: &Path, out: &Path) -> Result<BTreeMap<&'static str, usize>> {
    let mut seeds: BTreeMap<&'static str, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    let mut recordings: Vec<PathBuf> = std::fs::read_dir(captures)
        .with_context(|| format!("listing {}", captures.display()))?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rec"))
        .collect();
    recordings.sort();
    for path in &recordings {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        if bytes.len() <= MAX_WHOLE_SEED {
            seeds
                .entry("pipeline")
                .or_default()
                .push((format!("{stem}-all"), bytes.clone()));
        }
        for (n, conn) in connections(&bytes).values().enumerate() {
            let name = format!("{stem}-{n}");
            // Long connections (the nginx recording's hundreds of requests) are cut: libFuzzer
            // sizes its inputs by the largest seed.
            let mut recording = Vec::new();
            for record in &conn.records {
                if recording.len() + record.len() + 4 > MAX_WHOLE_SEED {
                    break;
                }
                recording.extend(framed(record));
            }
            seeds
                .entry("pipeline")
                .or_default()
                .push((name.clone(), recording));
            let http2 = conn.data.iter().any(|d| looks_http2(&d.captured));
            let target = if http2 { "http2" } else { "http1" };
            seeds
                .entry(target)
                .or_default()
                .push((name.clone(), script(conn, http2)));
            if http2 {
                for (dir, blocks) in header_blocks(conn) {
                    seeds
                        .entry("hpack")
                        .or_default()
                        .push((format!("{name}-{dir}"), blocks));
                }
            } else {
                for (i, values) in trace_headers(conn).into_iter().enumerate() {
                    seeds
                        .entry("trace_context")
                        .or_default()
                        .push((format!("{name}-{i}"), values));
                }
            }
        }
    }
    seeds
        .entry("trace_context")
        .or_default()
        .extend(TRACE_CONTEXT.iter().enumerate().map(|(i, s)| {
            let mut seed = vec![1];
            seed.extend_from_slice(s.as_bytes());
            (format!("written-{i}"), seed)
        }));
    seeds.entry("grpc").or_default().extend(
        GRPC.iter()
            .enumerate()
            .map(|(i, s)| (format!("written-{i}"), s.to_vec())),
    );

    let mut counts = BTreeMap::new();
    for (target, files) in &seeds {
        let dir = out.join(target);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes)?;
        }
        counts.insert(*target, files.len());
    }
    Ok(counts)
}

/// Hand-written `trace_context` values (one `traceparent`, then `tracestate` values).
const TRACE_CONTEXT: [&str; 4] = [
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\ncongo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
    "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-the-future-holds\nvendor@tenant=x",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00\na=1\nb=2,,c=3",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01\n",
];

/// Hand-written `grpc` generator programs (see `fuzz/src/grpc.rs`): a unary call answered
/// with trailers; a call answered trailers-only; two interleaved calls and a reset.
const GRPC: [&[u8]; 3] = [
    &[0x00, 0, 0, 12, 1, 0, 2, 0, 20, 3, 0, 0],
    &[0x02, 0, 1, 4, 4, 0, 5],
    &[0x01, 0, 2, 8, 0, 0, 3, 1, 1, 1, 2, 0, 30, 5, 1, 1, 3, 0, 13],
];

/// Records grouped by connection, in recording order.
fn connections(recording: &[u8]) -> BTreeMap<(u32, i32, u64), Connection> {
    let mut out: BTreeMap<_, Connection> = BTreeMap::new();
    for record in records(recording) {
        let Some(header) = read::<EventHeader>(record) else {
            continue;
        };
        let key = (header.tgid, header.fd, header.conn_gen);
        let kind = header.kind;
        let conn = match kind {
            k if k == EventKind::Data as u32 => {
                let conn = out.entry(key).or_default();
                conn.data.extend(data(record));
                conn
            }
            k if k == EventKind::Accept as u32 || k == EventKind::Connect as u32 => {
                let conn = out.entry(key).or_default();
                conn.accepted = Some(k == EventKind::Accept as u32);
                conn
            }
            k if k == EventKind::Close as u32 => match out.get_mut(&key) {
                Some(conn) => conn,
                None => continue,
            },
            _ => continue,
        };
        conn.records.push(record.to_vec());
    }
    out.retain(|_, c| !c.data.is_empty());
    out
}

/// The records of a recording (`capture::record`: u32-LE length, then the bytes).
fn records(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((len, rest)) = bytes.split_first_chunk::<4>() {
        let len = (u32::from_le_bytes(*len) as usize).min(rest.len());
        out.push(&rest[..len]);
        bytes = &rest[len..];
    }
    out
}

fn framed(record: &[u8]) -> Vec<u8> {
    let mut out = (record.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(record);
    out
}

fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
    (bytes.len() >= size_of::<T>()).then(|| {
        // SAFETY: length checked; T is a #[repr(C)] plain-old-data type from tracer-common
        // (every bit pattern valid); read_unaligned copes with any alignment.
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
    })
}

fn data(record: &[u8]) -> Option<Data> {
    let event: DataEvent = read(record)?;
    let payload = &record[size_of::<DataEvent>()..];
    let captured = &payload[..(event.captured_len as usize).min(payload.len())];
    Some(Data {
        egress: event.direction == 1,
        captured: captured.to_vec(),
        total: event.total_len.max(captured.len() as u64),
    })
}

/// The client preface, or a frame header of a type HTTP/1 text cannot start with.
fn looks_http2(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PRI * HTTP/2.0") || (bytes.len() >= 9 && bytes[0] == 0 && bytes[3] <= 9)
}

/// The `script` format of `fuzz/src/script.rs`: flags, then `op len [uncaptured] bytes`.
fn script(conn: &Connection, http2: bool) -> Vec<u8> {
    // http1: bit 0 role, bit 1 detect. http2: bit 0 role, bits 1-2 = 0 from the start, 3 detect.
    let flags = match (conn.accepted, http2) {
        (Some(true), _) => 0,
        (Some(false), _) => 1,
        (None, false) => 0b10,
        (None, true) => 0b110,
    };
    let mut out = vec![flags];
    for d in conn.data.iter().take(MAX_SCRIPT_SYSCALLS) {
        let len = d.captured.len().min(usize::from(u16::MAX));
        let uncaptured = (d.total - len as u64).min(u64::from(u32::MAX)) as u32;
        out.push(u8::from(d.egress) | if uncaptured > 0 { 0b10 } else { 0 });
        out.extend((len as u16).to_le_bytes());
        if uncaptured > 0 {
            out.extend(uncaptured.to_le_bytes());
        }
        out.extend_from_slice(&d.captured[..len]);
    }
    out
}

/// Per direction, the `hpack` raw-mode input of its header blocks (flags 0: from the start;
/// each block `h=1 len bytes`, whole). Stops at the first syscall not captured whole.
fn header_blocks(conn: &Connection) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for (egress, name) in [(false, "in"), (true, "out")] {
        let mut stream = Vec::new();
        for d in conn.data.iter().filter(|d| d.egress == egress) {
            stream.extend_from_slice(&d.captured);
            if d.total > d.captured.len() as u64 {
                break;
            }
        }
        let mut at = if stream.starts_with(b"PRI * HTTP/2.0") {
            24
        } else {
            0
        };
        let mut seed = vec![0u8];
        let mut block = Vec::new();
        while let Some(header) = stream.get(at..at + 9) {
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let (kind, flags) = (header[3], header[4]);
            let Some(payload) = stream.get(at + 9..at + 9 + len) else {
                break;
            };
            at += 9 + len;
            if kind == 1 || kind == 9 {
                block.extend_from_slice(fragment(kind, flags, payload));
                if flags & 0x4 != 0 {
                    seed.push(1);
                    seed.extend((block.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
                    seed.extend_from_slice(&block[..block.len().min(usize::from(u16::MAX))]);
                    block.clear();
                }
            }
        }
        if seed.len() > 1 {
            out.push((name, seed));
        }
    }
    out
}

/// The header block fragment of a HEADERS (padding and priority removed) or CONTINUATION.
fn fragment(kind: u8, flags: u8, payload: &[u8]) -> &[u8] {
    if kind != 1 {
        return payload;
    }
    let pad = if flags & 0x8 != 0 {
        usize::from(payload.first().copied().unwrap_or(0))
    } else {
        0
    };
    let start = usize::from(flags & 0x8 != 0) + if flags & 0x20 != 0 { 5 } else { 0 };
    payload
        .get(start..payload.len().saturating_sub(pad))
        .unwrap_or_default()
}

/// `trace_context` inputs from the HTTP/1 heads of a connection that carry trace headers.
fn trace_headers(conn: &Connection) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for d in &conn.data {
        let mut parent = Vec::new();
        let mut state = Vec::new();
        for line in d.captured.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let value = line[colon + 1..].to_vec();
            match line[..colon].to_ascii_lowercase().as_slice() {
                b"traceparent" => parent.push(value),
                b"tracestate" => state.push(value),
                _ => {}
            }
        }
        if parent.is_empty() {
            continue;
        }
        let mut seed = vec![parent.len().min(3) as u8];
        let values: Vec<Vec<u8>> = parent.into_iter().chain(state).collect();
        seed.extend(values.join(&b'\n'));
        out.push(seed);
    }
    out
}
