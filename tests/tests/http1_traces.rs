//! The core tracer end to end: two plain Python HTTP workers (a frontend whose handler calls a
//! backend twice), the real agent with its kernel programs, curl, and a real OTLP receiver.
//! Every combination of {frontend forwards trace headers or not} × {keep-alive or not} is
//! traced at once by one agent; both OTLP transports are covered by the two tests.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tracer_e2e::{
    AttrValue, OtlpReceiver, Protocol, ReceivedSpan,
    harness::{Agent, Service, curl, e2e_preconditions, run_args},
};

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const STATUS_ERROR: i32 = 2;
/// Spans per frontend/backend pair: 2 checkouts × 5 + 1 failure × 3.
const SPANS_PER_PAIR: usize = 13;

struct Pair {
    frontend: Service,
    backend: Service,
    forward: bool,
    keep_alive: bool,
    /// The traceparent curl sends on the first request (a distinct trace per pair).
    trace_id: String,
    parent_id: String,
}

fn start_pairs() -> Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    for (i, (forward, keep_alive)) in [(false, false), (false, true), (true, false), (true, true)]
        .into_iter()
        .enumerate()
    {
        let backend = Service::start(&["backend"])?;
        let backend_url = backend.url("");
        let mut args = vec!["frontend", "--backend", &backend_url];
        if forward {
            args.push("--forward");
        }
        if keep_alive {
            args.push("--keep-alive");
        }
        let frontend = Service::start(&args)?;
        pairs.push(Pair {
            frontend,
            backend,
            forward,
            keep_alive,
            trace_id: format!("4bf92f3577b34da6a3ce929d0e0e47{:02x}", i + 0x30),
            parent_id: format!("00f067aa0ba902{:02x}", i + 0xb0),
        });
    }
    Ok(pairs)
}

fn status_of(span: &ReceivedSpan) -> i64 {
    span.attr("http.response.status_code")
        .and_then(AttrValue::as_int)
        .unwrap_or(-1)
}

fn one<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    pred: impl Fn(&ReceivedSpan) -> bool,
) -> Result<&'a ReceivedSpan> {
    let found: Vec<_> = spans.iter().filter(|s| pred(s)).collect();
    ensure!(
        found.len() == 1,
        "expected exactly one {what}, found {}: {found:#?}",
        found.len()
    );
    Ok(found[0])
}

/// The frontend's SERVER span for `path`, its CLIENT children, and the backend SERVER spans
/// under those, checked against the expected ids and statuses. Returns the trace id.
fn check_tree(
    spans: &[ReceivedSpan],
    pair: &Pair,
    path: &str,
    backend_paths: &[&str],
    incoming: Option<(&str, &str)>,
    status: i64,
) -> Result<String> {
    let label = format!(
        "pair forward={} keep_alive={} {path}",
        pair.forward, pair.keep_alive
    );
    let (fpid, bpid) = (
        pair.frontend.proc.pid() as i64,
        pair.backend.proc.pid() as i64,
    );
    let server = one(spans, &format!("frontend server span ({label})"), |s| {
        s.pid() == fpid && s.kind == SERVER && s.path() == path
    })?;
    match incoming {
        Some((trace, parent)) => {
            ensure!(
                server.trace_id == trace,
                "{label}: continues the incoming trace: {server:#?}"
            );
            ensure!(
                server.parent_span_id == parent,
                "{label}: parent is the caller: {server:#?}"
            );
        }
        None => {
            ensure!(
                server.parent_span_id.is_empty(),
                "{label}: a new root: {server:#?}"
            );
            ensure!(server.trace_id != pair.trace_id, "{label}: a new trace id");
        }
    }
    ensure!(
        status_of(server) == status,
        "{label}: status code: {server:#?}"
    );
    ensure!(
        (server.status_code == STATUS_ERROR) == (status >= 500),
        "{label}: ERROR status exactly for 5xx: {server:#?}"
    );
    ensure!(
        server
            .attr("http.request.method")
            .and_then(AttrValue::as_str)
            == Some("GET")
    );
    ensure!(
        server.start_unix_nano < server.end_unix_nano,
        "{label}: duration"
    );

    let clients: Vec<_> = spans
        .iter()
        .filter(|s| s.pid() == fpid && s.kind == CLIENT && s.parent_span_id == server.span_id)
        .collect();
    ensure!(
        clients.len() == backend_paths.len(),
        "{label}: {} client children expected, got {clients:#?}",
        backend_paths.len()
    );
    for backend_path in backend_paths {
        let client = one(
            spans,
            &format!("client span {backend_path} ({label})"),
            |s| {
                s.pid() == fpid
                    && s.kind == CLIENT
                    && s.parent_span_id == server.span_id
                    && s.path() == *backend_path
            },
        )?;
        ensure!(
            client.trace_id == server.trace_id,
            "{label}: client in the server's trace"
        );
        ensure!(
            client.start_unix_nano >= server.start_unix_nano
                && client.end_unix_nano <= server.end_unix_nano,
            "{label}: client span inside its parent's time range: {client:#?} {server:#?}"
        );
        ensure!(
            (client.status_code == STATUS_ERROR) == (status_of(client) >= 400),
            "{label}: client ERROR for 4xx/5xx: {client:#?}"
        );
        let backend = one(
            spans,
            &format!("backend span {backend_path} ({label})"),
            |s| s.pid() == bpid && s.kind == SERVER && s.parent_span_id == client.span_id,
        )?;
        ensure!(
            backend.path() == *backend_path,
            "{label}: backend path: {backend:#?}"
        );
        ensure!(
            backend.trace_id == server.trace_id,
            "{label}: backend in the same trace"
        );
        ensure!(
            status_of(backend) == status_of(client),
            "{label}: both ends saw one status"
        );
        ensure!(
            backend.name.starts_with("GET /"),
            "{label}: name {:?}",
            backend.name
        );
    }
    Ok(server.trace_id.clone())
}

async fn traces_whole_trees(protocol: Protocol) -> Result<()> {
    e2e_preconditions()?;
    let receiver = OtlpReceiver::start(protocol).await?;
    let pairs = start_pairs()?;
    let mut targets = Vec::new();
    for (i, pair) in pairs.iter().enumerate() {
        targets.push(format!("{}=frontend-{i}", pair.frontend.proc.pid()));
        // The backend keeps the default service name: the executable's.
        targets.push(pair.backend.proc.pid().to_string());
    }
    let args = run_args(&targets, &receiver);
    let mut agent = Agent::start(&args, &[])?;

    for pair in &pairs {
        let traceparent = format!("traceparent: 00-{}-{}-01", pair.trace_id, pair.parent_id);
        assert_eq!(
            curl(&pair.frontend.url("/checkout/1"), &["-H", &traceparent])?,
            200
        );
        assert_eq!(curl(&pair.frontend.url("/checkout/2"), &[])?, 200);
        assert_eq!(curl(&pair.frontend.url("/fail"), &[])?, 500);
    }

    let expected = SPANS_PER_PAIR * pairs.len();
    let spans = receiver
        .wait_for_spans(expected, Duration::from_secs(30))
        .await
        .with_context(|| format!("agent log:\n{}", agent.log().join("\n")))?;
    // Nothing more than the expected spans arrives.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spans_after = receiver.spans();
    ensure!(
        spans_after.len() == expected,
        "expected {expected} spans, got {}: {spans_after:#?}",
        spans_after.len()
    );

    for (i, pair) in pairs.iter().enumerate() {
        let frontend_pid = pair.frontend.proc.pid() as i64;
        for span in spans.iter().filter(|s| s.pid() == frontend_pid) {
            ensure!(
                span.service_name == format!("frontend-{i}"),
                "named service: {span:#?}"
            );
        }
        let backend_pid = pair.backend.proc.pid() as i64;
        for span in spans.iter().filter(|s| s.pid() == backend_pid) {
            ensure!(
                span.service_name.starts_with("python3"),
                "executable name: {span:#?}"
            );
        }
        let continued = check_tree(
            &spans,
            pair,
            "/checkout/1",
            &["/inventory/1", "/price/1"],
            Some((&pair.trace_id, &pair.parent_id)),
            200,
        )?;
        let fresh = check_tree(
            &spans,
            pair,
            "/checkout/2",
            &["/inventory/2", "/price/2"],
            None,
            200,
        )?;
        ensure!(continued != fresh, "two requests, two traces");
        check_tree(&spans, pair, "/fail", &["/fail"], None, 500)?;
    }
    for span in &spans {
        ensure!(
            span.resource_attr("host.name").is_some(),
            "host.name: {span:#?}"
        );
        ensure!(span.resource_attr("service.instance.id").is_some());
        let expected_name = match span.path() {
            p if p.starts_with("/checkout/") => "GET /checkout/{id}",
            p if p.starts_with("/inventory/") => "GET /inventory/{id}",
            p if p.starts_with("/price/") => "GET /price/{id}",
            _ => "GET /fail",
        };
        ensure!(span.name == expected_name, "span name: {span:#?}");
    }

    let status = agent.stop()?;
    ensure!(status.success(), "agent exit status {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_python_services_exported_over_grpc() -> Result<()> {
    traces_whole_trees(Protocol::Grpc).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_python_services_exported_over_http() -> Result<()> {
    traces_whole_trees(Protocol::Http).await
}
