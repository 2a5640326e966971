//! "Credentials never leave the host", checked on the wire: real traced peers exchange
//! requests carrying random per-run secrets in every place the README promises to keep
//! (`Authorization`, `Proxy-Authorization`, `Cookie`, `Set-Cookie`, URL query values, request
//! and response bodies; for gRPC, `authorization` and `cookie` metadata, `set-cookie` and the
//! messages). The spans must arrive as usual, and no secret may appear anywhere in what the
//! agent exported (the raw OTLP bytes the receiver got, every decoded string field, the HTTP
//! headers of the export, the `--output` file) nor in the agent's own log, kept at trace level.
//!
//! The peers check that the secrets really travelled (they answer 200 or OK only when every
//! credential came with the request), and the client checks the answers carried theirs.
//! Secrets reach the peers through the environment: command lines are exported (redacted).

use std::{
    collections::BTreeSet,
    path::Path,
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, ensure};
use tracer_e2e::{
    OtlpReceiver, ReceivedSpan,
    harness::{Agent, Service, TempDir, agent_binary, is_root, root, run_args},
    spans_of,
};

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const ERROR: i32 = 2;

/// What the agent logs during the tests: everything it has to say about the traffic.
const AGENT_LOG_LEVEL: &str = "info,tracer=trace";

/// Where each secret travels, named as the fixtures' `MARK_*` variables.
const SECRETS: [&str; 8] = [
    "AUTHORIZATION",
    "PROXY",
    "COOKIE",
    "QUERY_A",
    "QUERY_B",
    "REQUEST_BODY",
    "SET_COOKIE",
    "RESPONSE_BODY",
];

/// Random secrets of this run: a short label and 16 random hex digits each.
struct Markers(Vec<(&'static str, String)>);

impl Markers {
    fn new() -> Self {
        use std::hash::{BuildHasher, RandomState};
        let seed = (std::process::id(), SystemTime::now());
        Self(
            SECRETS
                .iter()
                .map(|&name| {
                    // Each RandomState has keys of its own: a fresh random value per secret.
                    let random = RandomState::new().hash_one((name, seed));
                    let label: String = name.chars().filter(char::is_ascii_alphabetic).collect();
                    (name, format!("{}{random:016x}", label.to_ascii_lowercase()))
                })
                .collect(),
        )
    }

    fn get(&self, name: &str) -> &str {
        &self
            .0
            .iter()
            .find(|(n, _)| *n == name)
            .expect("a known secret")
            .1
    }

    /// `MARK_<NAME>=<secret>` for the fixtures.
    fn envs(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .map(|(name, value)| (format!("MARK_{name}"), value.clone()))
            .collect()
    }

    /// The secrets found in `haystack` (the first few places of each), with what surrounds
    /// them. A secret counts as found from the first ten of its random digits on, so that a
    /// cut-off copy is caught too.
    fn leaks_in(&self, what: &str, haystack: &[u8]) -> Vec<String> {
        let mut leaks = Vec::new();
        for (name, value) in &self.0 {
            let random = &value[value.len() - 16..];
            let needle = &random.as_bytes()[..10];
            let places = haystack
                .windows(needle.len())
                .enumerate()
                .filter(|(_, w)| w == &needle)
                .map(|(at, _)| at);
            for at in places.take(5) {
                let from = at.saturating_sub(80);
                let to = (at + 40).min(haystack.len());
                leaks.push(format!(
                    "{name} in {what}: …{}…",
                    haystack[from..to].escape_ascii()
                ));
            }
        }
        leaks
    }
}

/// Every secret found in what the agent exported or logged; fails listing them.
fn audit(markers: &Markers, receiver: &OtlpReceiver, output: &Path, log: &[String]) -> Result<()> {
    let requests = receiver.requests();
    ensure!(!requests.is_empty(), "nothing exported");
    let mut leaks = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        ensure!(!r.raw.is_empty(), "export {i} has no bytes");
        leaks.extend(markers.leaks_in(&format!("export {i}: raw OTLP bytes"), &r.raw));
        // Every string field decoded: names, attributes, events, links, resource, scope,
        // status messages, trace state.
        let decoded = format!("{:?}", r.request);
        leaks.extend(markers.leaks_in(&format!("export {i}: decoded"), decoded.as_bytes()));
        let headers = format!("{:?}", r.headers);
        leaks.extend(markers.leaks_in(&format!("export {i}: headers"), headers.as_bytes()));
    }
    let file = std::fs::read(output).with_context(|| format!("reading {}", output.display()))?;
    ensure!(!file.is_empty(), "the --output file is empty");
    leaks.extend(markers.leaks_in("the --output OTLP/JSON file", &file));
    leaks.extend(markers.leaks_in("the agent's log", log.join("\n").as_bytes()));
    ensure!(
        leaks.is_empty(),
        "secrets left the host:\n{}",
        leaks.join("\n")
    );
    Ok(())
}

/// Runs `tracer exec` against the agent with `envs` added; the command must succeed.
fn exec_traced(
    agent: &Agent,
    service: &str,
    command: &[&str],
    envs: &[(String, String)],
) -> Result<String> {
    let out = Command::new(agent_binary()?)
        .args(["exec", "--service-name", service, "--control-socket"])
        .arg(&agent.socket)
        .arg("--")
        .args(command)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .output()?;
    ensure!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The agent, tracing `pid` as `service`, exporting over OTLP/HTTP (its raw bytes are kept
/// as sent) and to the `--output` file `output`.
fn start_agent(pid: u32, service: &str, receiver: &OtlpReceiver, output: &Path) -> Result<Agent> {
    let mut args = run_args(&[format!("{pid}={service}")], receiver);
    args.extend(["--output".to_string(), output.display().to_string()]);
    Agent::start(&args, &[("RUST_LOG", AGENT_LOG_LEVEL)])
}

/// Stops the agent (it flushes everything it has) and returns its whole log.
fn stop_agent(mut agent: Agent) -> Result<Vec<String>> {
    let status = agent.stop()?;
    ensure!(status.success(), "agent exit status {status}");
    // Its stderr readers finish once the pipe is drained.
    std::thread::sleep(Duration::from_millis(200));
    Ok(agent.log())
}

fn names(spans: &[ReceivedSpan]) -> Vec<&str> {
    let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    names
}

/// Each server span's parent is one of the client spans (both ends are traced here).
fn check_parents(clients: &[ReceivedSpan], servers: &[ReceivedSpan]) -> Result<()> {
    let ids: BTreeSet<&str> = clients.iter().map(|c| c.span_id.as_str()).collect();
    for server in servers {
        ensure!(
            ids.contains(server.parent_span_id.as_str()),
            "server span without its client: {server:#?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_credentials_query_values_and_bodies_stay_on_the_host() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    let markers = Markers::new();
    let receiver = OtlpReceiver::start_http().await?;
    let service = Service::start_command(
        Command::new("python3")
            .arg(root().join("tests/fixtures/secret_service.py"))
            .envs(markers.envs()),
    )?;
    let dir = TempDir::new("secrets-http1")?;
    let output = dir.path().join("spans.jsonl");
    let agent = start_agent(service.proc.pid(), "secret-service", &receiver, &output)?;

    let body = dir.path().join("body.json");
    std::fs::write(
        &body,
        format!(
            r#"{{"user":"demo","password":"{}"}}"#,
            markers.get("REQUEST_BODY")
        ),
    )?;
    let body_arg = format!("@{}", body.display());
    let query = format!(
        "token={}&b={}",
        markers.get("QUERY_A"),
        markers.get("QUERY_B")
    );
    let credentials = [
        format!("Authorization: Bearer {}", markers.get("AUTHORIZATION")),
        format!("Proxy-Authorization: Basic {}", markers.get("PROXY")),
        format!("Cookie: sid={}", markers.get("COOKIE")),
    ];
    let account = service.url(&format!("/account?{query}"));
    let login = service.url(&format!("/login?{query}"));
    let mut get = vec!["curl", "-s", "-i", "--max-time", "10"];
    for header in &credentials {
        get.extend(["-H", header]);
    }
    let mut post = get.clone();
    get.push(&account);
    // The body from a file: the command line is exported (redacted), a body must not be.
    post.extend([
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &body_arg,
        &login,
    ]);
    for command in [&get, &post] {
        let out = exec_traced(&agent, "curl", command, &[])?;
        ensure!(
            out.starts_with("HTTP/1.1 200"),
            "the service accepted the credentials: {out}"
        );
        let set_cookie = format!("Set-Cookie: session={}", markers.get("SET_COOKIE"));
        ensure!(
            out.contains(&set_cookie) && out.contains(markers.get("RESPONSE_BODY")),
            "the answer carried its secrets: {out}"
        );
        // The audit's own check: it finds these secrets where they are.
        let found = markers.leaks_in("curl's output", out.as_bytes());
        ensure!(
            ["SET_COOKIE", "RESPONSE_BODY"]
                .iter()
                .all(|name| found.iter().any(|l| l.starts_with(&format!("{name} in")))),
            "the audit misses secrets in plain sight: {found:?}"
        );
    }

    receiver
        .wait_for_spans(4, Duration::from_secs(15))
        .await
        .with_context(|| agent.log().join("\n"))?;
    let log = stop_agent(agent)?;
    // The secrets first: a leak is reported with where it was found.
    audit(&markers, &receiver, &output, &log)?;
    let spans = receiver.spans();
    ensure!(spans.len() == 4, "{spans:#?}");
    let servers = spans_of(&spans, "secret-service", SERVER);
    let clients = spans_of(&spans, "curl", CLIENT);
    ensure!(
        names(&servers) == ["GET /account", "POST /login"]
            && names(&clients) == ["GET /account", "POST /login"],
        "{spans:#?}"
    );
    for span in servers.iter().chain(&clients) {
        ensure!(
            span.int_attr("http.response.status_code") == 200 && span.status_code != ERROR,
            "{span:#?}"
        );
        // Keys stay, values go.
        ensure!(
            span.str_attr("url.query") == "token=REDACTED&b=REDACTED",
            "{span:#?}"
        );
        ensure!(
            span.str_attr("network.protocol.version") == "1.1",
            "{span:#?}"
        );
    }
    for client in &clients {
        let path = client.str_attr("url.path");
        ensure!(
            client.str_attr("url.full")
                == service.url(&format!("{path}?token=REDACTED&b=REDACTED")),
            "{client:#?}"
        );
    }
    check_parents(&clients, &servers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_metadata_and_messages_stay_on_the_host() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    let markers = Markers::new();
    let receiver = OtlpReceiver::start_http().await?;
    let script = root().join("tests/fixtures/grpc_services.py");
    let script = script.display().to_string();
    let server = Service::start_command(
        Command::new("python3")
            .args([&script, "server"])
            .envs(markers.envs()),
    )?;
    let dir = TempDir::new("secrets-grpc")?;
    let output = dir.path().join("spans.jsonl");
    let agent = start_agent(server.proc.pid(), "secret-greeter", &receiver, &output)?;

    let target = format!("127.0.0.1:{}", server.port);
    let out = exec_traced(
        &agent,
        "secret-client",
        &[
            "python3", &script, "client", "--target", &target, "--calls", "secret",
        ],
        &markers.envs(),
    )?;
    ensure!(out.trim() == "done", "{out}");

    // Three calls, both ends of each.
    receiver
        .wait_for_spans(6, Duration::from_secs(15))
        .await
        .with_context(|| agent.log().join("\n"))?;
    let log = stop_agent(agent)?;
    audit(&markers, &receiver, &output, &log)?;
    let spans = receiver.spans();
    ensure!(spans.len() == 6, "{spans:#?}");
    let servers = spans_of(&spans, "secret-greeter", SERVER);
    let clients = spans_of(&spans, "secret-client", CLIENT);
    ensure!(servers.len() == 3 && clients.len() == 3, "{spans:#?}");
    for span in servers.iter().chain(&clients) {
        ensure!(span.name == "demo.Greeter/Secret", "{span:#?}");
        ensure!(span.str_attr("rpc.system") == "grpc", "{span:#?}");
        ensure!(span.str_attr("rpc.method") == "Secret", "{span:#?}");
        ensure!(
            span.int_attr("rpc.grpc.status_code") == 0 && span.status_code != ERROR,
            "{span:#?}"
        );
    }
    check_parents(&clients, &servers)
}
