//! HTTP/2 and gRPC end to end, with real peers: grpcio (Python) and tonic (Rust) servers and
//! clients, curl over prior-knowledge h2c against nghttpd, and a gRPC chain A → B.

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use tracer_e2e::{
    OtlpReceiver, ReceivedSpan,
    harness::{
        Agent, Proc, Service, TempDir, agent_binary, free_port, is_root, root, run_args,
        wait_for_port,
    },
    spans_of,
};

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const ERROR: i32 = 2;

fn grpc_script() -> String {
    root()
        .join("tests/fixtures/grpc_services.py")
        .display()
        .to_string()
}

/// Starts a program that prints "listening on PORT"; returns it and the port.
fn start_listening(program: &str, args: &[&str]) -> Result<(Proc, u16)> {
    let service = Service::start_command(Command::new(program).args(args))?;
    Ok((service.proc, service.port))
}

/// Runs `tracer exec` with the agent's socket; the command must succeed.
fn exec_traced(agent: &Agent, service: &str, command: &[&str]) -> Result<String> {
    let out = Command::new(agent_binary()?)
        .args(["exec", "--service-name", service, "--control-socket"])
        .arg(&agent.socket)
        .arg("--")
        .args(command)
        .output()?;
    ensure!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Each server span's parent is a client span with the same name; every client is used once.
fn check_pairs(clients: &[ReceivedSpan], servers: &[ReceivedSpan]) -> Result<()> {
    ensure!(clients.len() == servers.len(), "{clients:#?} {servers:#?}");
    let by_id: BTreeMap<&str, &ReceivedSpan> =
        clients.iter().map(|c| (c.span_id.as_str(), c)).collect();
    let mut used = std::collections::BTreeSet::new();
    for server in servers {
        let client = by_id
            .get(server.parent_span_id.as_str())
            .with_context(|| format!("server span without its client: {server:#?}"))?;
        ensure!(client.name == server.name, "{client:#?} {server:#?}");
        ensure!(client.trace_id == server.trace_id);
        ensure!(used.insert(client.span_id.clone()), "one server per client");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_unary_streaming_and_a_failure_on_one_channel() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    let receiver = OtlpReceiver::start_grpc().await?;
    let (server, port) = start_listening("python3", &[&grpc_script(), "server"])?;
    let agent = Agent::start(
        &run_args(&[format!("{}=greeter", server.pid())], &receiver),
        &[],
    )?;
    let out = exec_traced(
        &agent,
        "greeter-client",
        &[
            "python3",
            &grpc_script(),
            "client",
            "--target",
            &format!("127.0.0.1:{port}"),
        ],
    )?;
    ensure!(out.trim() == "done", "{out}");

    // Six calls, both ends of each.
    let spans = receiver
        .wait_for_spans(12, Duration::from_secs(20))
        .await
        .with_context(|| agent.log().join("\n"))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(receiver.spans().len() == 12, "{:#?}", receiver.spans());
    let servers = spans_of(&spans, "greeter", SERVER);
    let clients = spans_of(&spans, "greeter-client", CLIENT);
    let mut names: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    ensure!(
        names
            == [
                "demo.Greeter/Big",
                "demo.Greeter/Count",
                "demo.Greeter/Fail",
                "demo.Greeter/SayHello",
                "demo.Greeter/SayHello",
                "demo.Greeter/SayHello"
            ],
        "{names:?}"
    );
    for span in servers.iter().chain(&clients) {
        ensure!(span.str_attr("rpc.system") == "grpc", "{span:#?}");
        ensure!(span.str_attr("rpc.service") == "demo.Greeter", "{span:#?}");
        let method = span.name.rsplit('/').next().unwrap();
        ensure!(span.str_attr("rpc.method") == method, "{span:#?}");
        let (code, error) = if method == "Fail" {
            (13, true)
        } else {
            (0, false)
        };
        ensure!(span.int_attr("rpc.grpc.status_code") == code, "{span:#?}");
        // INTERNAL is an error on both sides.
        ensure!((span.status_code == ERROR) == error, "{span:#?}");
        ensure!(
            span.str_attr("network.protocol.version") == "2",
            "{span:#?}"
        );
    }
    // One channel: all six calls on one connection, HPACK's dynamic table in use. Big's
    // trailers (grpc-status 0) came 64 KiB past the start of a write: the kernel's frame walk
    // found them.
    let ports: std::collections::BTreeSet<i64> = servers
        .iter()
        .map(|s| s.int_attr("network.peer.port"))
        .collect();
    ensure!(ports.len() == 1, "one connection: {ports:?}");
    check_pairs(&clients, &servers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_server_and_client() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    let receiver = OtlpReceiver::start_http().await?;
    let peer = env!("CARGO_BIN_EXE_tonic_peer");
    let (server, port) = start_listening(peer, &["server"])?;
    let agent = Agent::start(
        &run_args(&[format!("{}=tonic-server", server.pid())], &receiver),
        &[],
    )?;
    let out = exec_traced(
        &agent,
        "tonic-client",
        &[peer, "client", &port.to_string(), "4"],
    )?;
    ensure!(out.trim() == "done", "{out}");
    let spans = receiver
        .wait_for_spans(8, Duration::from_secs(20))
        .await
        .with_context(|| agent.log().join("\n"))?;
    let servers = spans_of(&spans, "tonic-server", SERVER);
    let clients = spans_of(&spans, "tonic-client", CLIENT);
    let method = "opentelemetry.proto.collector.trace.v1.TraceService/Export";
    for span in servers.iter().chain(&clients) {
        ensure!(span.name == method, "{span:#?}");
        ensure!(
            span.str_attr("rpc.service") == "opentelemetry.proto.collector.trace.v1.TraceService"
        );
        ensure!(span.str_attr("rpc.method") == "Export");
    }
    let failed: Vec<_> = servers
        .iter()
        .filter(|s| s.int_attr("rpc.grpc.status_code") == 13)
        .collect();
    ensure!(
        failed.len() == 1 && failed[0].status_code == ERROR,
        "{servers:#?}"
    );
    ensure!(
        servers
            .iter()
            .filter(|s| s.int_attr("rpc.grpc.status_code") == 0)
            .count()
            == 3
    );
    check_pairs(&clients, &servers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_h2c_prior_knowledge_against_nghttpd() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    let receiver = OtlpReceiver::start_grpc().await?;
    let dir = TempDir::new("h2")?;
    std::fs::write(dir.path().join("index.html"), "<h1>h2</h1>")?;
    std::fs::create_dir_all(dir.path().join("items"))?;
    std::fs::write(dir.path().join("items/42"), vec![b'x'; 100 * 1024])?;
    let port = free_port()?;
    let nghttpd = Proc::spawn(
        Command::new("nghttpd")
            .args(["--no-tls", "-d"])
            .arg(dir.path())
            .arg(port.to_string())
            .stdout(Stdio::null()),
    )?;
    wait_for_port(port, Duration::from_secs(10))?;
    let agent = Agent::start(
        &run_args(&[format!("{}=nghttpd", nghttpd.pid())], &receiver),
        &[],
    )?;
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    // A page, a body far larger than the capture, a miss. (One connection each: curl 7.88
    // fails to reuse a prior-knowledge connection to nghttpd, tracer or not.)
    for (path, code) in [
        ("/index.html", "200"),
        ("/items/42", "200"),
        ("/missing", "404"),
    ] {
        let out = exec_traced(
            &agent,
            "curl",
            &[
                "curl",
                "-s",
                "--http2-prior-knowledge",
                "-w",
                "%{http_version} %{http_code}",
                "-o",
                "/dev/null",
                &url(path),
            ],
        )?;
        ensure!(out == format!("2 {code}"), "{path}: {out}");
    }
    let spans = receiver
        .wait_for_spans(6, Duration::from_secs(20))
        .await
        .with_context(|| agent.log().join("\n"))?;
    let servers = spans_of(&spans, "nghttpd", SERVER);
    let clients = spans_of(&spans, "curl", CLIENT);
    let mut got: Vec<(String, i64, bool)> = servers
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                s.int_attr("http.response.status_code"),
                s.status_code == ERROR,
            )
        })
        .collect();
    got.sort();
    ensure!(
        got == [
            ("GET /index.html".to_string(), 200, false),
            ("GET /items/{id}".to_string(), 200, false),
            ("GET /missing".to_string(), 404, false),
        ],
        "{got:?}"
    );
    for span in servers.iter().chain(&clients) {
        ensure!(
            span.str_attr("network.protocol.version") == "2",
            "{span:#?}"
        );
        ensure!(
            span.attr("rpc.system").is_none(),
            "plain HTTP/2 is not gRPC: {span:#?}"
        );
    }
    // The client sees the 404 as an error; the server does not.
    let missing = clients
        .iter()
        .find(|s| s.str_attr("url.path") == "/missing")
        .context("client /missing")?;
    ensure!(missing.status_code == ERROR, "{missing:#?}");
    check_pairs(&clients, &servers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_chain_keeps_one_trace_with_its_parents() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    let receiver = OtlpReceiver::start_grpc().await?;
    let (backend, backend_port) = start_listening("python3", &[&grpc_script(), "server"])?;
    let target = format!("127.0.0.1:{backend_port}");
    let (frontend, frontend_port) = start_listening(
        "python3",
        &[&grpc_script(), "frontend", "--backend", &target],
    )?;
    let agent = Agent::start(
        &run_args(
            &[
                format!("{}=frontend", frontend.pid()),
                format!("{}=backend", backend.pid()),
            ],
            &receiver,
        ),
        &[],
    )?;
    // An untraced caller with its own trace context.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let out = Command::new("python3")
        .args([&grpc_script(), "client", "--calls", "checkout", "--target"])
        .arg(format!("127.0.0.1:{frontend_port}"))
        .args(["--traceparent", &format!("00-{trace}-{caller}-01")])
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spans = receiver
        .wait_for_spans(3, Duration::from_secs(20))
        .await
        .with_context(|| agent.log().join("\n"))?;
    let a_server = spans_of(&spans, "frontend", SERVER);
    let a_client = spans_of(&spans, "frontend", CLIENT);
    let b_server = spans_of(&spans, "backend", SERVER);
    ensure!(
        a_server.len() == 1 && a_client.len() == 1 && b_server.len() == 1,
        "{spans:#?}"
    );
    let (a_server, a_client, b_server) = (&a_server[0], &a_client[0], &b_server[0]);
    ensure!(a_server.name == "demo.Frontend/Checkout" && a_client.name == "demo.Greeter/SayHello");
    ensure!(
        a_server.trace_id == trace && a_server.parent_span_id == caller,
        "{a_server:#?}"
    );
    // grpcio writes the call from its own thread: the link comes from the context the
    // frontend passed on.
    ensure!(a_client.parent_span_id == a_server.span_id, "{a_client:#?}");
    ensure!(b_server.parent_span_id == a_client.span_id, "{b_server:#?}");
    for span in [a_server, a_client, b_server] {
        ensure!(span.trace_id == trace, "{span:#?}");
        ensure!(span.int_attr("rpc.grpc.status_code") == 0 && span.status_code != ERROR);
    }
    ensure!(
        a_client.start_unix_nano >= a_server.start_unix_nano
            && a_client.end_unix_nano <= a_server.end_unix_nano
    );
    Ok(())
}
