//! Thousands of short-lived processes and connections: a traced client forks 2000 children
//! (traced from their fork), each opens a connection to a traced server, makes one request and
//! exits; every 50th exits mid-request. The server's fd numbers are reused all along.
//!
//! Every request yields exactly one span per end; the ones cut by an exit are exported as
//! errors and counted; and afterwards every table, in the kernel and in the agent, is back to
//! what the long-lived server needs.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use tracer_e2e::{
    OtlpReceiver, Protocol, ReceivedSpan,
    harness::{Agent, Proc, Service, e2e_preconditions, root, run_args},
    observe::{memory_kib, metric},
};

const CHILDREN: u32 = 2000;
const ABANDON_EVERY: u32 = 50;
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const STATUS_ERROR: i32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_processes_and_connections_leave_no_residue() -> Result<()> {
    e2e_preconditions()?;
    let script = root().join("tests/fixtures/churn.py");
    let receiver = OtlpReceiver::start(Protocol::Grpc).await?;
    let server = Service::start_script(&script, &["server"])?;
    let mut child = Command::new("python3")
        .arg(&script)
        .args(["clients", "--port", &server.port.to_string()])
        .args(["--count", &CHILDREN.to_string()])
        .args(["--abandon-every", &ABANDON_EVERY.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let clients = Proc::adopt(child);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    ensure!(line.trim() == "ready", "clients said {line:?}");

    let targets = [
        format!("{}=churn-server", server.proc.pid()),
        format!("{}=churn-clients", clients.pid()),
    ];
    let mut agent = Agent::start(&run_args(&targets, &receiver), &[])?;
    let baseline = agent.metrics()?;

    writeln!(stdin, "go")?;
    line.clear();
    let done = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(120), done)
        .await
        .context("children not done in 120 s")???;
    ensure!(line.trim() == "done", "clients said {line:?}");

    let abandoned = CHILDREN.div_ceil(ABANDON_EVERY);
    // Whatever arrived within the wait is checked below, request by request.
    let _ = receiver
        .wait_for_spans(2 * CHILDREN as usize, Duration::from_secs(60))
        .await;
    let spans = receiver.spans();

    // Exactly one span per request and end, whatever fd and pid served it.
    let mut per_request: BTreeMap<(i32, String), Vec<&ReceivedSpan>> = BTreeMap::new();
    for span in &spans {
        per_request
            .entry((span.kind, span.path().to_string()))
            .or_default()
            .push(span);
    }
    let path_for = |i: u32| match i % ABANDON_EVERY {
        0 => format!("/slow/{i}"),
        _ => format!("/item/{i}"),
    };
    let wrong: Vec<String> = (0..CHILDREN)
        .flat_map(|i| [(SERVER, path_for(i)), (CLIENT, path_for(i))])
        .filter_map(|key| {
            let found = per_request.get(&key).map_or(0, Vec::len);
            (found != 1).then(|| format!("{found}x kind {} {}", key.0, key.1))
        })
        .collect();
    ensure!(
        wrong.is_empty(),
        "{} requests without exactly one span per end: {:?}\nstatus:\n{}",
        wrong.len(),
        &wrong[..wrong.len().min(40)],
        agent.cli_ok(&["status"])?
    );
    for i in 0..CHILDREN {
        let cut = i % ABANDON_EVERY == 0;
        let path = path_for(i);
        let client = per_request[&(CLIENT, path.clone())][0];
        ensure!(
            (client.status_code == STATUS_ERROR) == cut,
            "{path}: an error exactly when the process exited mid-request: {client:#?}"
        );
        if !cut {
            let server = per_request[&(SERVER, path.clone())][0];
            ensure!(
                server.parent_span_id == client.span_id,
                "{path}: server linked to its client"
            );
        }
    }

    // Afterwards: only the long-lived server's state is left, everywhere: what it held
    // before the churn (its listening socket), nothing for the 2000 gone processes.
    let table = |text: &str, name: &str| metric(text, "tracer_table_entries", &[("table", name)]);
    let base = |name: &str| {
        let value = table(&baseline, name);
        // A renamed series must not pass as None == None.
        assert!(
            value.is_some(),
            "no tracer_table_entries{{table=\"{name}\"}} before the churn"
        );
        value
    };
    let expected = [
        // The server; the clients' parent exits after its last child.
        ("processes", Some(1)),
        ("kernel_processes", Some(1)),
        ("kernel_sockets", base("kernel_sockets")),
        ("connections", base("connections")),
        ("pending_spans", Some(0)),
        ("waiting_peers", Some(0)),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let metrics = agent.metrics()?;
        let sizes: Vec<(&str, Option<u64>)> = expected
            .iter()
            .map(|(name, _)| (*name, table(&metrics, name)))
            .collect();
        if sizes
            .iter()
            .zip(&expected)
            .all(|(got, want)| got.1 == want.1)
        {
            break metrics;
        }
        ensure!(
            Instant::now() < deadline,
            "tables not back to {expected:?} within 30 s: {sizes:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let cut = metric(&metrics, "tracer_requests_abandoned_total", &[]).unwrap_or(0);
    ensure!(
        cut >= abandoned as u64,
        "{abandoned} requests cut by an exit counted: {cut}"
    );
    let (rss, peak) = memory_kib(agent.proc.pid())?;
    eprintln!(
        "{CHILDREN} processes, {} connections: agent RSS {rss} KiB (peak {peak} KiB)",
        2 * CHILDREN
    );
    drop(stdin);
    let status = agent.stop()?;
    ensure!(status.success(), "agent exit status {status}");
    Ok(())
}
