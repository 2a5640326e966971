//! What arrives at the collector, over every protocol and option.

use super::*;

async fn export_and_check(r: &OtlpReceiver, protocol: &str) {
    let c = config(
        to(r, protocol),
        &[(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-api-key=se%20cret,X-Tenant=t1",
        )],
    );
    let exporter = Exporter::start(c, "test-host".into()).unwrap();
    for s in trace_now() {
        assert!(exporter.submit(s));
    }
    let spans = r.wait_for_spans(3, WAIT).await.unwrap();
    check_trace(&spans);
    for req in r.requests() {
        assert_eq!(req.headers["x-api-key"], "se cret");
        assert_eq!(req.headers["x-tenant"], "t1");
    }
    // One request per batch, grouped into one resource per process.
    assert_eq!(r.requests()[0].request.resource_spans.len(), 2);
    let stats = stats_when(&exporter, |s| s.exported == 3).await;
    assert_eq!(stats.submitted, 3);
    assert_eq!(stats.dropped_queue_full + stats.dropped_export_failed, 0);
    exporter.shutdown(WAIT).await;
}

#[tokio::test]
async fn grpc_export_arrives_complete() {
    let r = OtlpReceiver::start_grpc().await.unwrap();
    export_and_check(&r, "grpc").await;
}

#[tokio::test]
async fn http_export_arrives_complete() {
    let r = OtlpReceiver::start_http().await.unwrap();
    export_and_check(&r, "http/protobuf").await;
}

#[tokio::test]
async fn gzip_compression_when_configured() {
    for r in [
        OtlpReceiver::start_grpc().await.unwrap(),
        OtlpReceiver::start_http().await.unwrap(),
    ] {
        let (protocol, header) = match r.protocol() {
            tracer_e2e::Protocol::Grpc => ("grpc", "grpc-encoding"),
            tracer_e2e::Protocol::Http => ("http/protobuf", "content-encoding"),
        };
        let vars = [("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")];
        let exporter =
            Exporter::start(config(to(&r, protocol), &vars), "test-host".into()).unwrap();
        for s in trace_now() {
            exporter.submit(s);
        }
        check_trace(&r.wait_for_spans(3, WAIT).await.unwrap());
        assert_eq!(r.requests()[0].headers[header], "gzip", "{protocol}");
        exporter.shutdown(WAIT).await;
    }
}

#[tokio::test]
async fn https_endpoints_verify_the_collector_with_the_configured_ca() {
    for r in [
        OtlpReceiver::start_grpc_tls().await.unwrap(),
        OtlpReceiver::start_http_tls().await.unwrap(),
    ] {
        let protocol = protocol_of(&r);
        assert!(r.endpoint().starts_with("https://"));
        // Without the collector's CA the system roots are used, and they do not trust it.
        let exporter = Exporter::start(config(to(&r, protocol), &[]), "h".into()).unwrap();
        exporter.submit(trace_now().remove(0));
        let stats = stats_when(&exporter, |s| s.dropped_export_failed == 1).await;
        assert_eq!(stats.exported, 0, "{protocol}");
        exporter.shutdown(WAIT).await;

        let ca = temp_path("ca.pem");
        std::fs::write(&ca, r.ca_pem().unwrap()).unwrap();
        let vars = [("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.to_str().unwrap())];
        let c = config(to(&r, protocol), &vars);
        let exporter = Exporter::start(c, "test-host".into()).unwrap();
        for s in trace_now() {
            exporter.submit(s);
        }
        check_trace(&r.wait_for_spans(3, WAIT).await.unwrap());
        exporter.shutdown(WAIT).await;
        let _ = std::fs::remove_dir_all(ca.parent().unwrap());
    }
}

#[test]
fn exporter_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Exporter>();
}
