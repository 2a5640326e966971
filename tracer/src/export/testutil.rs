//! Fixtures shared by the export tests.

use std::sync::Arc;

use crate::process::ProcessMeta;
use crate::span::{Attribute, Span, SpanKind};

pub fn process(pid: u32, service: &str) -> Arc<ProcessMeta> {
    Arc::new(ProcessMeta {
        pid,
        service_name: service.to_string(),
        service_name_is_explicit: false,
        service_instance_id: format!("instance-{pid}"),
        executable_name: service.to_string(),
        executable_path: format!("/usr/bin/{service}"),
        command_line: format!("{service} --port 80"),
        start_ticks: 1000 + pid as u64,
        container: None,
        pod: None,
    })
}

/// A span with ids derived from small numbers so that tests read easily:
/// trace id `[trace; 16]`, span id `[id; 8]`.
pub fn span(
    process: &Arc<ProcessMeta>,
    trace: u8,
    id: u8,
    parent: Option<u8>,
    name: &str,
    start_ms: u64,
    end_ms: u64,
) -> Span {
    Span {
        trace_id: [trace; 16],
        span_id: [id; 8],
        parent_span_id: parent.map(|p| [p; 8]),
        trace_flags: 1,
        trace_state: String::new(),
        remote_sampled: None,
        kind: SpanKind::Server,
        name: name.into(),
        start_mono_ns: start_ms * 1_000_000,
        end_mono_ns: end_ms * 1_000_000,
        error: None,
        attributes: vec![
            Attribute::str("http.request.method", "GET"),
            Attribute::int("http.response.status_code", 200),
        ],
        process: process.clone(),
    }
}

/// A fresh path in a directory of its own under the system temp dir, unique per call.
pub fn temp_path(file: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tracer-export-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(file)
}
