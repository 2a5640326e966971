//! The receiver, exercised by real OTLP clients: tonic's generated client and reqwest.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tracer_e2e::{AttrValue, Failure, OtlpReceiver};

const WAIT: Duration = Duration::from_secs(5);

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn request(names: &[&str]) -> ExportTraceServiceRequest {
    let spans = names
        .iter()
        .map(|name| Span {
            trace_id: vec![0xab; 16],
            span_id: vec![1; 8],
            parent_span_id: vec![2; 8],
            name: name.to_string(),
            kind: 2,
            start_time_unix_nano: 10,
            end_time_unix_nano: 20,
            attributes: vec![kv(
                "http.response.status_code",
                any_value::Value::IntValue(500),
            )],
            status: Some(Status {
                message: "boom".into(),
                code: 2,
            }),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue("svc".into()),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn grpc_client(r: &OtlpReceiver) -> TraceServiceClient<tonic::transport::Channel> {
    TraceServiceClient::connect(r.endpoint()).await.unwrap()
}

/// reqwest is built without a TLS crypto provider (the agent installs ring); so do the tests.
fn http_client() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

async fn post(r: &OtlpReceiver, path: &str, body: Vec<u8>) -> reqwest::Result<reqwest::Response> {
    http_client()
        .build()
        .unwrap()
        .post(format!("{}{path}", r.endpoint()))
        .header("content-type", "application/x-protobuf")
        .header("x-api-key", "k1")
        .body(body)
        .send()
        .await
}

#[tokio::test]
async fn grpc_records_spans_resources_and_metadata() {
    let r = OtlpReceiver::start_grpc().await.unwrap();
    let mut client = grpc_client(&r).await;
    let mut req = tonic::Request::new(request(&["a", "b"]));
    req.metadata_mut()
        .insert("x-api-key", "k1".parse().unwrap());
    client.export(req).await.unwrap();

    let spans = r.wait_for_spans(2, WAIT).await.unwrap();
    assert_eq!(spans.len(), 2);
    let s = &spans[0];
    assert_eq!(s.service_name, "svc");
    assert_eq!(s.name, "a");
    assert_eq!(s.trace_id, "ab".repeat(16));
    assert_eq!(s.span_id, "0101010101010101");
    assert_eq!(s.parent_span_id, "0202020202020202");
    assert_eq!(
        (s.kind, s.status_code, s.status_message.as_str()),
        (2, 2, "boom")
    );
    assert_eq!((s.start_unix_nano, s.end_unix_nano), (10, 20));
    assert_eq!(
        s.attr("http.response.status_code"),
        Some(&AttrValue::Int(500))
    );
    let requests = r.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].headers.get("x-api-key").map(String::as_str),
        Some("k1")
    );
}

#[tokio::test]
async fn http_accepts_protobuf_posts_only_on_the_traces_path() {
    let r = OtlpReceiver::start_http().await.unwrap();
    let ok = post(&r, "/v1/traces", request(&["a"]).encode_to_vec())
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["content-type"], "application/x-protobuf");
    let spans = r.wait_for_spans(1, WAIT).await.unwrap();
    assert_eq!(spans[0].name, "a");
    assert_eq!(r.requests()[0].headers["x-api-key"], "k1");

    let missing = post(&r, "/v1/logs", vec![]).await.unwrap();
    assert_eq!(missing.status(), 404);
    let garbage = post(&r, "/v1/traces", vec![0xff; 3]).await.unwrap();
    assert_eq!(garbage.status(), 400);
    let json = http_client()
        .build()
        .unwrap()
        .post(format!("{}/v1/traces", r.endpoint()))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 415);
    assert_eq!(r.spans().len(), 1);
}

#[tokio::test]
async fn answers_the_failures_it_is_told_to() {
    let g = OtlpReceiver::start_grpc().await.unwrap();
    let mut client = grpc_client(&g).await;
    g.fail_next(1, Failure::Unavailable);
    let err = client.export(request(&["x"])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    client.export(request(&["y"])).await.unwrap();
    g.set_failure(Some(Failure::InvalidArgument));
    let err = client.export(request(&["z"])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(g.attempts(), 3);
    assert_eq!(g.spans().len(), 1, "failed requests are not recorded");

    let h = OtlpReceiver::start_http().await.unwrap();
    let body = request(&["a"]).encode_to_vec();
    h.fail_next(2, Failure::ResourceExhausted);
    assert_eq!(
        post(&h, "/v1/traces", body.clone()).await.unwrap().status(),
        429
    );
    assert_eq!(
        post(&h, "/v1/traces", body.clone()).await.unwrap().status(),
        429
    );
    assert_eq!(
        post(&h, "/v1/traces", body.clone()).await.unwrap().status(),
        200
    );
    h.set_failure(Some(Failure::Unavailable));
    assert_eq!(
        post(&h, "/v1/traces", body.clone()).await.unwrap().status(),
        503
    );
    h.set_failure(None);
    h.set_delay(Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert_eq!(post(&h, "/v1/traces", body).await.unwrap().status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(h.attempts(), 5);
    assert_eq!(h.spans().len(), 2);
}

#[tokio::test]
async fn stops_and_restarts_on_the_same_port() {
    let r = OtlpReceiver::start_http().await.unwrap();
    let body = request(&["a"]).encode_to_vec();
    assert_eq!(
        post(&r, "/v1/traces", body.clone()).await.unwrap().status(),
        200
    );
    r.stop().await;
    let refused = post(&r, "/v1/traces", body.clone()).await.unwrap_err();
    assert!(refused.is_connect(), "{refused:?}");
    r.restart().await.unwrap();
    assert_eq!(post(&r, "/v1/traces", body).await.unwrap().status(), 200);
    assert_eq!(r.spans().len(), 2, "recordings survive a restart");

    let g = OtlpReceiver::start_grpc().await.unwrap();
    let mut client = grpc_client(&g).await;
    client.export(request(&["a"])).await.unwrap();
    g.stop().await;
    assert!(client.export(request(&["b"])).await.is_err());
    g.restart().await.unwrap();
    // The channel reconnects by itself; allow it a few tries.
    let mut delivered = false;
    for _ in 0..50 {
        if client.export(request(&["c"])).await.is_ok() {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(delivered);
    assert_eq!(
        g.spans()
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "c"]
    );
}

#[tokio::test]
async fn wait_for_spans_is_bounded_and_says_what_arrived() {
    let r = OtlpReceiver::start_http().await.unwrap();
    let err = r
        .wait_for_spans(1, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "0 of 1 spans arrived within 200ms (0 requests attempted)"
    );
}

#[tokio::test]
async fn serves_tls_with_a_certificate_clients_can_trust() {
    let h = OtlpReceiver::start_http_tls().await.unwrap();
    assert!(h.endpoint().starts_with("https://127.0.0.1:"));
    let ca = reqwest::Certificate::from_pem(h.ca_pem().unwrap().as_bytes()).unwrap();
    let client = http_client().tls_certs_only([ca]).build().unwrap();
    let ok = client
        .post(format!("{}/v1/traces", h.endpoint()))
        .header("content-type", "application/x-protobuf")
        .body(request(&["a"]).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // A client that does not trust the certificate is refused.
    assert!(
        http_client()
            .build()
            .unwrap()
            .post(format!("{}/v1/traces", h.endpoint()))
            .send()
            .await
            .is_err()
    );

    let g = OtlpReceiver::start_grpc_tls().await.unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(g.ca_pem().unwrap()));
    let channel = tonic::transport::Endpoint::from_shared(g.endpoint())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    TraceServiceClient::new(channel)
        .export(request(&["b"]))
        .await
        .unwrap();
    assert_eq!(g.spans()[0].name, "b");
}
