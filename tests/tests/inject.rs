//! traceparent injection end to end: a traced Python relay that forwards no trace header calls
//! a backend over pooled keep-alive connections; the agent runs with `--inject-traceparent`.
//! The backend records every `traceparent` it receives and echoes a digest of each body.
//!
//! - untraced backend: each request carries exactly one traceparent, naming the relay's
//!   exported trace and client span; requests without context get distinct new traces; a
//!   request the application gave its own traceparent keeps it untouched; every body arrives
//!   intact over hundreds of keep-alive requests;
//! - traced backend: relay server -> relay client -> backend server is one trace;
//! - tracing disabled for the relay, then the agent SIGKILLed: its calls go out unchanged,
//!   the sk_msg program leaves the kernel, and the same keep-alive connections keep working.

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use tracer_e2e::{
    OtlpReceiver, Protocol, ReceivedSpan,
    harness::{Agent, Service, TempDir, e2e_preconditions, root, run_args},
    observe::metric,
};

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
/// Requests without context through the relay with the untraced backend.
const FRESH: u32 = 300;
const CONTINUED: std::ops::Range<u32> = 1000..1020;
const OWN: std::ops::Range<u32> = 2000..2020;
/// Requests through the relay with the traced backend.
const WHOLE: u32 = 50;
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

struct Pair {
    relay: Service,
    backend: Service,
    record: std::path::PathBuf,
}

fn start_pair(dir: &TempDir, name: &str) -> Result<Pair> {
    let script = root().join("tests/fixtures/inject_services.py");
    let record = dir.path().join(format!("{name}.jsonl"));
    let backend = Service::start_script(
        &script,
        &[
            "recorder",
            "--record",
            record.to_str().context("utf-8 path")?,
        ],
    )?;
    let relay = Service::start_script(&script, &["relay", "--backend", &backend.url("")])?;
    Ok(Pair {
        relay,
        backend,
        record,
    })
}

/// What the backend received: path -> traceparent values, body length.
fn recorded(pair: &Pair) -> Result<BTreeMap<String, (Vec<String>, u64)>> {
    let text = std::fs::read_to_string(&pair.record)?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let entry: serde_json::Value = serde_json::from_str(line)?;
        let path = entry["path"].as_str().context("path")?.to_string();
        let values = entry["traceparents"]
            .as_array()
            .context("traceparents")?
            .iter()
            .map(|v| v.as_str().unwrap_or("").to_string())
            .collect();
        let len = entry["body_len"].as_u64().context("body_len")?;
        ensure!(
            out.insert(path.clone(), (values, len)).is_none(),
            "{path} received twice"
        );
    }
    Ok(out)
}

/// The client ports (connections) the backend received the paths `wanted` from.
fn client_ports(pair: &Pair, wanted: impl Fn(&str) -> bool) -> Result<HashSet<u64>> {
    let mut ports = HashSet::new();
    for line in std::fs::read_to_string(&pair.record)?.lines() {
        let entry: serde_json::Value = serde_json::from_str(line)?;
        if wanted(entry["path"].as_str().context("path")?) {
            ports.insert(entry["client_port"].as_u64().context("client_port")?);
        }
    }
    Ok(ports)
}

/// The relay's body size for item `i` (inject_services.py `body_for`).
fn body_len(i: u32) -> u64 {
    (i as u64 * 97) % 3100
}

async fn relay(
    client: &reqwest::Client,
    pair: &Pair,
    i: u32,
    header: Option<(&str, &str)>,
) -> Result<()> {
    let mut request = client.get(pair.relay.url(&format!("/relay/{i}")));
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = request.send().await.with_context(|| format!("relay {i}"))?;
    let status = response.status().as_u16();
    let body = response.text().await?;
    ensure!(status == 200, "relay {i}: {status} {body}");
    Ok(())
}

/// Spans by (pid, kind, path); each must be unique.
fn index(spans: &[ReceivedSpan]) -> Result<BTreeMap<(i64, i32, String), &ReceivedSpan>> {
    let mut out = BTreeMap::new();
    for span in spans {
        let key = (span.pid(), span.kind, span.path().to_string());
        ensure!(
            out.insert(key.clone(), span).is_none(),
            "two spans for {key:?}"
        );
    }
    Ok(out)
}

/// `00-<trace>-<parent>-<flags>` split, checked for shape.
fn parse_traceparent(value: &str) -> Result<(String, String, String)> {
    let parts: Vec<&str> = value.split('-').collect();
    ensure!(
        parts.len() == 4 && parts[0] == "00" && parts[1].len() == 32 && parts[2].len() == 16,
        "malformed traceparent {value:?}"
    );
    Ok((parts[1].into(), parts[2].into(), parts[3].into()))
}

/// Ids of the loaded programs named like the injection program (the kernel keeps 15 bytes of
/// a name).
fn injection_programs() -> Vec<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some("inject_tracepar"))
        .map(|p| p.id())
        .collect()
}

async fn injects_and_leaves_nothing_behind(protocol: Protocol) -> Result<()> {
    e2e_preconditions()?;
    let receiver = OtlpReceiver::start(protocol).await?;
    let dir = TempDir::new("inject")?;
    let untraced = start_pair(&dir, "untraced")?;
    let traced = start_pair(&dir, "traced")?;
    let targets = [
        untraced.relay.proc.pid().to_string(),
        traced.relay.proc.pid().to_string(),
        traced.backend.proc.pid().to_string(),
    ];
    let mut args = run_args(&targets, &receiver);
    args.push("--inject-traceparent".into());
    let before: HashSet<u32> = injection_programs().into_iter().collect();
    let mut agent = Agent::start(&args, &[])?;
    let ours: Vec<u32> = injection_programs()
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    ensure!(
        ours.len() == 1,
        "one sk_msg program loaded by the agent: {ours:?}"
    );

    // One keep-alive client: each relay serves all of it on one thread, one pooled backend
    // connection. (Plain HTTP, but reqwest wants the TLS provider e2e_preconditions chose.)
    let client = reqwest::Client::new();
    for i in 0..FRESH {
        relay(&client, &untraced, i, None).await?;
    }
    let incoming = format!("00-{TRACE}-{CALLER}-01");
    for i in CONTINUED {
        relay(&client, &untraced, i, Some(("traceparent", &incoming))).await?;
    }
    let own = |i: u32| format!("00-{:032x}-{:016x}-01", 0xabc000 + i, 0xdef000 + i);
    for i in OWN {
        relay(&client, &untraced, i, Some(("x-own-traceparent", &own(i)))).await?;
    }
    for i in 0..WHOLE {
        relay(&client, &traced, i, None).await?;
    }

    let requests = FRESH as usize + CONTINUED.len() + OWN.len();
    let expected = 2 * requests + 3 * WHOLE as usize;
    let spans = receiver
        .wait_for_spans(expected, Duration::from_secs(60))
        .await
        .with_context(|| format!("agent log:\n{}", agent.log().join("\n")))?;
    let status = agent.cli_ok(&["status"])?;
    let metrics = agent.metrics()?;
    let spans = index(&spans)?;
    let relay_pid = untraced.relay.proc.pid() as i64;
    let span = |pid: i64, kind: i32, path: String| {
        spans
            .get(&(pid, kind, path.clone()))
            .copied()
            .with_context(|| format!("no span kind {kind} {path} of pid {pid}"))
    };

    // Untraced backend: what went over the wire is what was exported.
    let received = recorded(&untraced)?;
    ensure!(
        received.len() == requests,
        "backend saw {} requests",
        received.len()
    );
    let mut traces = HashSet::new();
    for i in (0..FRESH).chain(CONTINUED).chain(OWN) {
        let path = format!("/echo/{i}");
        let (values, len) = received
            .get(&path)
            .with_context(|| format!("{path} not received"))?;
        ensure!(
            *len == body_len(i),
            "{path}: body of {len} bytes, sent {}",
            body_len(i)
        );
        ensure!(
            values.len() == 1,
            "{path}: exactly one traceparent, got {values:?}"
        );
        let server = span(relay_pid, SERVER, format!("/relay/{i}"))?;
        let call = span(relay_pid, CLIENT, path.clone())?;
        ensure!(
            call.parent_span_id == server.span_id,
            "{path}: call is the served request's child"
        );
        ensure!(call.trace_id == server.trace_id, "{path}: one trace");
        if OWN.contains(&i) {
            ensure!(
                values[0] == own(i),
                "{path}: the application's own header untouched: {values:?}"
            );
            continue;
        }
        let (trace, parent, flags) = parse_traceparent(&values[0])?;
        ensure!(
            (trace.as_str(), parent.as_str(), flags.as_str())
                == (server.trace_id.as_str(), call.span_id.as_str(), "01"),
            "{path}: header {} names the exported trace {} and client span {}",
            values[0],
            server.trace_id,
            call.span_id
        );
        if CONTINUED.contains(&i) {
            ensure!(
                (server.trace_id.as_str(), server.parent_span_id.as_str()) == (TRACE, CALLER),
                "{path}: the incoming context continues: {server:#?}"
            );
        } else {
            ensure!(
                server.parent_span_id.is_empty(),
                "{path}: a new trace: {server:#?}"
            );
            traces.insert(trace);
        }
    }
    // Keep-alive connections carried them (the case that chains unrelated requests into
    // mega-traces), and no request joined another's trace.
    let fresh = |path: &str| {
        path.strip_prefix("/echo/")
            .and_then(|i| i.parse::<u32>().ok())
            .is_some_and(|i| i < FRESH)
    };
    let ports = client_ports(&untraced, fresh)?;
    ensure!(
        !ports.is_empty() && ports.len() * 10 <= FRESH as usize,
        "{FRESH} requests over {} connections: keep-alive was not exercised",
        ports.len()
    );
    ensure!(
        traces.len() == FRESH as usize,
        "{} distinct traces for {FRESH} requests",
        traces.len()
    );

    // Traced backend: one whole trace per request.
    let received = recorded(&traced)?;
    let (relay_pid, backend_pid) = (
        traced.relay.proc.pid() as i64,
        traced.backend.proc.pid() as i64,
    );
    for i in 0..WHOLE {
        let path = format!("/echo/{i}");
        let server = span(relay_pid, SERVER, format!("/relay/{i}"))?;
        let call = span(relay_pid, CLIENT, path.clone())?;
        let backend = span(backend_pid, SERVER, path.clone())?;
        ensure!(
            call.parent_span_id == server.span_id && backend.parent_span_id == call.span_id,
            "{path}: server -> client -> backend"
        );
        ensure!(
            server.trace_id == call.trace_id && call.trace_id == backend.trace_id,
            "{path}: one trace"
        );
        let values = &received
            .get(&path)
            .with_context(|| format!("{path} not received"))?
            .0;
        ensure!(
            *values == [format!("00-{}-{}-01", call.trace_id, call.span_id)],
            "{path}: the header the backend got names the client span: {values:?}"
        );
    }
    let counter = |name: &str| metric(&metrics, "tracer_kernel_counter_total", &[("name", name)]);
    let injected = (FRESH as usize + CONTINUED.len() + WHOLE as usize) as u64;
    ensure!(
        counter("injected") == Some(injected)
            && counter("inject_already_present") == Some(OWN.len() as u64),
        "metrics count {injected} injected and {} left alone:\n{metrics}",
        OWN.len()
    );
    ensure!(
        status.contains(&format!("traceparent injection: injected={injected} ")),
        "tracer status shows injection:\n{status}"
    );

    // Tracing turned off for the relay: its calls go out as the application wrote them.
    agent.cli_ok(&["disable", "--pid", &untraced.relay.proc.pid().to_string()])?;
    for i in 4000..4010 {
        relay(&client, &untraced, i, None).await?;
    }
    let received = recorded(&untraced)?;
    for i in 4000..4010 {
        let (values, _) = received
            .get(&format!("/echo/{i}"))
            .with_context(|| format!("/echo/{i} not received"))?;
        ensure!(values.is_empty(), "/echo/{i} after disable: {values:?}");
    }

    // SIGKILL: no cleanup code runs, yet the program leaves the data path.
    agent.proc.stop(9, Duration::from_secs(10))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while injection_programs().iter().any(|id| ours.contains(id)) {
        ensure!(
            Instant::now() < deadline,
            "sk_msg program still loaded 20 s after SIGKILL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same keep-alive connections still carry requests, now unchanged.
    for i in 5000..5010 {
        relay(&client, &untraced, i, None).await?;
    }
    let received = recorded(&untraced)?;
    for i in 5000..5010 {
        let (values, len) = received
            .get(&format!("/echo/{i}"))
            .with_context(|| format!("/echo/{i} not received"))?;
        ensure!(
            values.is_empty() && *len == body_len(i),
            "/echo/{i} after the agent died: {values:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injects_traceparent_and_leaves_nothing_behind() -> Result<()> {
    injects_and_leaves_nothing_behind(Protocol::Http).await
}
