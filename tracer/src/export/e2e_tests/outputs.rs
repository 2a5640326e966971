//! The OTLP/JSON lines file and the terminal.

use super::*;

#[tokio::test]
async fn json_lines_output_fans_out_with_otlp_and_parses_back() {
    let r = OtlpReceiver::start_http().await.unwrap();
    let path = temp_path("spans.jsonl");
    let args = ExportArgs {
        output: Some(path.clone()),
        ..to(&r, "http/protobuf")
    };
    let exporter = Exporter::start(config(args, &[]), "h".into()).unwrap();
    for s in trace_now() {
        exporter.submit(s);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    for s in trace_now() {
        exporter.submit(s);
    }
    exporter.shutdown(WAIT).await;
    assert_eq!(r.spans().len(), 6, "OTLP got every span too");

    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    let mut names = Vec::new();
    for line in text.lines() {
        let req: ExportTraceServiceRequest = serde_json::from_str(line).unwrap();
        let raw: serde_json::Value = serde_json::from_str(line).unwrap();
        let first = &raw["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(first["traceId"], "ab".repeat(16), "hex ids");
        for rs in &req.resource_spans {
            for s in &rs.scope_spans[0].spans {
                names.push(s.name.clone());
            }
        }
    }
    names.sort();
    assert_eq!(
        names,
        ["GET", "GET", "GET /", "GET /", "GET /users", "GET /users"]
    );
}

#[tokio::test]
async fn an_unwritable_output_is_a_startup_error() {
    let args = ExportArgs {
        output: Some("/nonexistent-dir/spans.jsonl".into()),
        ..Default::default()
    };
    let err = Exporter::start(config(args, &[]), "h".into())
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("cannot open /nonexistent-dir/spans.jsonl for appending"),
        "{err:#}"
    );
}

#[tokio::test]
async fn terminal_prints_waterfalls_when_quiet_and_at_shutdown() {
    use tokio::io::AsyncReadExt;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let (writer, mut reader) = tokio::io::duplex(1 << 16);
    let counters = Arc::new(stats::SinkCounters::default());
    let terminal = TerminalConfig {
        quiet_period: Duration::from_millis(100),
        ..TerminalConfig::default()
    };
    let resources = Arc::new(otlp::ResourceBuilder::new(
        "h".into(),
        ResourceConfig::default(),
    ));
    let task = tokio::spawn(terminal::run_with_writer(
        terminal,
        rx,
        resources,
        counters.clone(),
        writer,
        false,
    ));
    let p = process(1, "svc");
    tx.send(Arc::new(span(&p, 1, 1, None, "quiet", 0, 10)))
        .await
        .unwrap();
    // Printed once quiet, long before shutdown.
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(WAIT, reader.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(first.starts_with("trace 01010101"), "{first}");
    assert!(first.contains("svc quiet"), "{first}");
    // Pending at shutdown: printed when the queue closes.
    tx.send(Arc::new(span(&p, 2, 1, None, "pending", 0, 10)))
        .await
        .unwrap();
    drop(tx);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).await.unwrap();
    assert!(rest.contains("svc pending"), "{rest}");
    assert_eq!(
        counters.exported.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}
