//! The capture's other syscall paths with real peers: nginx (headers with writev, files with
//! sendfile, keep-alive) and a server reading with each receive syscall in turn (recvmsg,
//! readv, read, recvfrom after MSG_PEEKs that must be skipped, recvmmsg) and writing with
//! sendmsg/writev (20 iovecs). Bodies are far larger than the capture: the parser must count them
//! through the uncaptured bytes, or the next response on the connection is lost.

use std::{process::Command, time::Duration};

use anyhow::{Context, Result, ensure};
use tracer_e2e::{
    AttrValue, OtlpReceiver, ReceivedSpan,
    harness::{Agent, Service, TempDir, is_root, root, run_args},
    nginx::Nginx,
};

const STATUS_ERROR: i32 = 2;

fn status(s: &ReceivedSpan) -> i64 {
    s.attr("http.response.status_code")
        .and_then(AttrValue::as_int)
        .unwrap_or(-1)
}

/// The spans as (method, path, status, error), sorted.
fn summary(spans: &[ReceivedSpan]) -> Vec<(String, String, i64, bool)> {
    let mut out: Vec<_> = spans
        .iter()
        .map(|s| {
            let method = s
                .attr("http.request.method")
                .and_then(AttrValue::as_str)
                .unwrap_or("");
            (
                method.to_string(),
                s.path().to_string(),
                status(s),
                s.status_code == STATUS_ERROR,
            )
        })
        .collect();
    out.sort();
    out
}

fn curl(args: &[&str]) -> Result<String> {
    let out = Command::new("curl").arg("-s").args(args).output()?;
    ensure!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// nginx serving a small file, a 256 KiB one (with sendfile: 64 times the capture), and 503
/// under /api/.
fn nginx() -> Result<Nginx> {
    Nginx::start(
        "sendfile on; keepalive_requests 1000;",
        "root www; location /api/ { return 503; }",
        |dir| {
            let www = dir.join("www");
            std::fs::create_dir_all(&www)?;
            std::fs::write(www.join("small.txt"), "small file")?;
            std::fs::write(www.join("big.bin"), vec![7u8; 256 * 1024])?;
            Ok(())
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_keep_alive_with_sendfile_bodies_and_head() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    let server = nginx()?;
    let port = server.port;
    let receiver = OtlpReceiver::start_grpc().await?;
    let mut agent = Agent::start(
        &run_args(&[format!("{}=nginx", server.pid())], &receiver),
        &[],
    )?;

    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    // One connection, six requests; the 256 KiB bodies never pass through user memory.
    let codes = curl(&[
        "-w",
        "%{http_code} %{num_connects}\\n",
        "-o",
        "/dev/null",
        &url("/big.bin"),
        "-o",
        "/dev/null",
        &url("/small.txt"),
        "-o",
        "/dev/null",
        &url("/missing"),
        "-o",
        "/dev/null",
        &url("/api/orders/17"),
        "-o",
        "/dev/null",
        &url("/big.bin"),
        "-o",
        "/dev/null",
        &url("/small.txt"),
    ])?;
    ensure!(
        codes == "200 1\n200 0\n404 0\n503 0\n200 0\n200 0\n",
        "one keep-alive connection: {codes}"
    );
    curl(&["-I", "-o", "/dev/null", &url("/big.bin")])?;

    let spans = receiver
        .wait_for_spans(7, Duration::from_secs(20))
        .await
        .with_context(|| agent.log().join("\n"))?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    ensure!(
        receiver.spans().len() == 7,
        "exactly 7 spans: {:#?}",
        receiver.spans()
    );
    let s = |m: &str, p: &str, code, err| (m.to_string(), p.to_string(), code, err);
    ensure!(
        summary(&spans)
            == vec![
                s("GET", "/api/orders/17", 503, true),
                s("GET", "/big.bin", 200, false),
                s("GET", "/big.bin", 200, false),
                s("GET", "/missing", 404, false),
                s("GET", "/small.txt", 200, false),
                s("GET", "/small.txt", 200, false),
                s("HEAD", "/big.bin", 200, false),
            ],
        "{:#?}",
        summary(&spans)
    );
    ensure!(
        spans
            .iter()
            .all(|s| s.service_name == "nginx" && s.kind == 2)
    );
    let api = spans.iter().find(|s| s.path() == "/api/orders/17").unwrap();
    ensure!(
        api.name == "GET /api/orders/{id}",
        "route template: {}",
        api.name
    );
    ensure!(agent.stop()?.success());
    drop(server);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectored_reads_and_writes_with_bodies_past_the_capture() -> Result<()> {
    ensure!(is_root(), "run with `cargo xtask test` (root)");
    let server = Service::start_script(&root().join("tests/fixtures/vectored_server.py"), &[])?;
    let receiver = OtlpReceiver::start_http().await?;
    let mut agent = Agent::start(&run_args(&[server.proc.pid().to_string()], &receiver), &[])?;

    let tmp = TempDir::new("post")?;
    let body = tmp.path().join("body");
    std::fs::write(&body, vec![b'x'; 10 * 1024])?;
    let body_arg = format!("@{}", body.display());
    // One curl, so one keep-alive connection; each request is a section of its own (`--next`
    // resets the options), with its extra options.
    let requests: [(&str, &[&str]); 6] = [
        ("/v/1", &[]),
        ("/w/2", &[]),
        ("/v/3", &[]),
        ("/p/4", &["--data-binary", &body_arg]),
        ("/w/5", &[]),
        ("/h/6", &[]),
    ];
    let mut args: Vec<String> = Vec::new();
    for (i, (path, extra)) in requests.into_iter().enumerate() {
        if i > 0 {
            args.extend(["--next", "-s"].map(String::from));
        }
        let format = "%{http_code} %{size_download} %{num_connects}\\n";
        args.extend(["-w", format, "-o", "/dev/null"].map(String::from));
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(server.url(path));
    }
    let out = curl(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    ensure!(
        out == "200 20480 1\n200 20480 0\n200 20480 0\n200 5 0\n200 20480 0\n201 2 0\n",
        "one connection, all answered: {out}"
    );
    let spans = receiver
        .wait_for_spans(6, Duration::from_secs(20))
        .await
        .with_context(|| agent.log().join("\n"))?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    ensure!(
        receiver.spans().len() == 6,
        "exactly 6 spans: {:#?}",
        receiver.spans()
    );
    let paths: Vec<_> = summary(&spans)
        .into_iter()
        .map(|(m, p, code, err)| format!("{m} {p} {code} {err}"))
        .collect();
    ensure!(
        paths
            == [
                "GET /h/6 201 false",
                "GET /v/1 200 false",
                "GET /v/3 200 false",
                "GET /w/2 200 false",
                "GET /w/5 200 false",
                "POST /p/4 200 false"
            ],
        "{paths:?}"
    );
    ensure!(agent.stop()?.success());
    Ok(())
}
