use super::*;
use crate::export::testutil::{process, span};
use crate::span::Attribute;

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
}

fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attrs, key)? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn builder(attributes: &[(&str, &str)], service_name: Option<&str>) -> ResourceBuilder {
    ResourceBuilder::new(
        "host-1".into(),
        ResourceConfig {
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            service_name: service_name.map(String::from),
        },
    )
}

#[test]
fn resource_has_process_host_and_sdk_attributes() {
    let r = builder(&[], None).resource(&process(42, "api"));
    let a = &r.attributes;
    assert_eq!(str_attr(a, "service.name"), Some("api"));
    assert_eq!(str_attr(a, "service.instance.id"), Some("instance-42"));
    assert_eq!(str_attr(a, "host.name"), Some("host-1"));
    assert_eq!(
        attr(a, "process.pid"),
        Some(&any_value::Value::IntValue(42))
    );
    assert_eq!(str_attr(a, "process.executable.name"), Some("api"));
    assert_eq!(str_attr(a, "process.executable.path"), Some("/usr/bin/api"));
    assert_eq!(str_attr(a, "process.command_line"), Some("api --port 80"));
    assert_eq!(str_attr(a, "telemetry.sdk.name"), Some("tracer"));
    assert_eq!(str_attr(a, "telemetry.sdk.language"), Some("rust"));
    assert_eq!(str_attr(a, "telemetry.sdk.version"), Some(VERSION));
    assert_eq!(a[0].key, "service.name");
}

#[test]
fn resource_precedence() {
    let env = [
        ("service.name", "from-attrs"),
        ("host.name", "node-7"),
        ("process.pid", "1"),
        ("deployment.environment.name", "prod"),
    ];
    let p = process(42, "api");
    // OTEL_SERVICE_NAME beats the attribute, which beats the executable-name default.
    let r = builder(&env, Some("from-env")).resource(&p);
    assert_eq!(str_attr(&r.attributes, "service.name"), Some("from-env"));
    let r = builder(&env, None).resource(&p);
    assert_eq!(str_attr(&r.attributes, "service.name"), Some("from-attrs"));
    // Host-wide values may be overridden and added; per-process facts may not.
    assert_eq!(str_attr(&r.attributes, "host.name"), Some("node-7"));
    assert_eq!(
        attr(&r.attributes, "process.pid"),
        Some(&any_value::Value::IntValue(42))
    );
    assert_eq!(
        str_attr(&r.attributes, "deployment.environment.name"),
        Some("prod")
    );
    assert_eq!(
        r.attributes
            .iter()
            .filter(|a| a.key == "process.pid")
            .count(),
        1
    );
    // An operator-set per-process name beats everything.
    let mut explicit = (*p).clone();
    explicit.service_name = "checkout".into();
    explicit.service_name_is_explicit = true;
    let r = builder(&env, Some("from-env")).resource(&explicit);
    assert_eq!(str_attr(&r.attributes, "service.name"), Some("checkout"));
}

#[test]
fn spans_are_grouped_by_process_and_converted() {
    let (a, b) = (process(1, "a"), process(2, "b"));
    let root = span(&a, 7, 1, None, "GET /", 1000, 1010);
    let mut child = span(&b, 7, 2, Some(1), "GET /x", 1001, 1005);
    child.kind = crate::span::SpanKind::Client;
    child.error = Some("500 Internal Server Error".into());
    child.trace_state = "k=v".into();
    child.attributes.push(Attribute {
        key: "flag",
        value: crate::span::Value::Bool(true),
    });
    let third = span(&a, 8, 3, None, "GET /y", 1002, 1003);
    let spans: Vec<Arc<Span>> = [root, child, third].into_iter().map(Arc::new).collect();
    let clock = WallClock::fixed(1_700_000_000_000_000_000);
    let req = build_request(&spans, &builder(&[], None), &clock);

    assert_eq!(req.resource_spans.len(), 2);
    let names: Vec<Vec<&str>> = req
        .resource_spans
        .iter()
        .map(|rs| {
            rs.scope_spans[0]
                .spans
                .iter()
                .map(|s| s.name.as_str())
                .collect()
        })
        .collect();
    assert_eq!(names, vec![vec!["GET /", "GET /y"], vec!["GET /x"]]);
    let scope = req.resource_spans[0].scope_spans[0].scope.as_ref().unwrap();
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("tracer", VERSION)
    );

    let root = &req.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(root.trace_id, vec![7; 16]);
    assert_eq!(root.span_id, vec![1; 8]);
    assert!(root.parent_span_id.is_empty());
    assert_eq!(root.kind, otlp::span::SpanKind::Server as i32);
    assert_eq!(root.flags, 1);
    assert_eq!(root.start_time_unix_nano, 1_700_000_001_000_000_000);
    assert_eq!(root.end_time_unix_nano, 1_700_000_001_010_000_000);
    assert_eq!(root.status, Some(otlp::Status::default()));
    assert_eq!(
        str_attr(&root.attributes, "http.request.method"),
        Some("GET")
    );
    assert_eq!(
        attr(&root.attributes, "http.response.status_code"),
        Some(&any_value::Value::IntValue(200))
    );

    let child = &req.resource_spans[1].scope_spans[0].spans[0];
    assert_eq!(child.parent_span_id, vec![1; 8]);
    assert_eq!(child.kind, otlp::span::SpanKind::Client as i32);
    assert_eq!(child.trace_state, "k=v");
    let status = child.status.as_ref().unwrap();
    assert_eq!(status.code, otlp::status::StatusCode::Error as i32);
    assert_eq!(status.message, "500 Internal Server Error");
    assert_eq!(
        attr(&child.attributes, "flag"),
        Some(&any_value::Value::BoolValue(true))
    );
}
