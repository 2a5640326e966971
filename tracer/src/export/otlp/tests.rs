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

/// A process in the `checkout` container of a Deployment's pod.
fn in_pod(explicit_name: Option<&str>) -> ProcessMeta {
    use crate::kubernetes::{PodContext, cgroup::Container, pods::Pod};
    let pod = Pod {
        uid: "3f6c1a2b-8e4d-4c7a-9b1e-5d2f0a6c8e41".into(),
        namespace: "shop".into(),
        name: "checkout-7d9f8b6c5d-x2k4q".into(),
        labels: Default::default(),
        annotations: Default::default(),
        containers: Vec::new(),
        owners: vec![
            ("k8s.replicaset.name", "checkout-7d9f8b6c5d".into()),
            ("k8s.deployment.name", "checkout".into()),
        ],
    };
    let mut meta = (*process(42, "python3")).clone();
    if let Some(name) = explicit_name {
        meta.service_name = name.into();
        meta.service_name_is_explicit = true;
    }
    meta.container = Some(Container {
        id: "c7761e58".repeat(8),
        pod_uid: Some(pod.uid.clone()),
    });
    meta.in_pod(Some(Arc::new(PodContext {
        pod: Arc::new(pod),
        container_name: Some("checkout".into()),
        node_name: "node-1".into(),
    })))
}

#[test]
fn processes_in_pods_carry_kubernetes_attributes() {
    let r = builder(&[("k8s.cluster.name", "prod")], None).resource(&in_pod(None));
    let a = &r.attributes;
    for (key, value) in [
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", "checkout-7d9f8b6c5d-x2k4q"),
        ("k8s.pod.uid", "3f6c1a2b-8e4d-4c7a-9b1e-5d2f0a6c8e41"),
        ("k8s.node.name", "node-1"),
        ("k8s.container.name", "checkout"),
        ("k8s.replicaset.name", "checkout-7d9f8b6c5d"),
        ("k8s.deployment.name", "checkout"),
        ("k8s.cluster.name", "prod"),
        ("container.id", &"c7761e58".repeat(8)),
        // The workload names the service, not the executable.
        ("service.name", "checkout"),
        ("process.executable.name", "python3"),
    ] {
        assert_eq!(str_attr(a, key), Some(value), "{key}");
    }
    // A host-wide variable cannot move a process to another pod.
    let r = builder(&[("k8s.pod.name", "other")], None).resource(&in_pod(None));
    assert_eq!(
        str_attr(&r.attributes, "k8s.pod.name"),
        Some("checkout-7d9f8b6c5d-x2k4q")
    );
}

#[test]
fn service_name_precedence_with_a_workload() {
    // explicit selector name > OTEL_SERVICE_NAME > OTEL_RESOURCE_ATTRIBUTES > workload > exe
    let attrs = [("service.name", "from-attrs")];
    let name = |b: &ResourceBuilder, p: &ProcessMeta| {
        str_attr(&b.resource(p).attributes, "service.name").map(String::from)
    };
    let explicit = in_pod(Some("payments"));
    assert_eq!(
        name(&builder(&attrs, Some("from-env")), &explicit).as_deref(),
        Some("payments")
    );
    let workload = in_pod(None);
    assert_eq!(
        name(&builder(&attrs, Some("from-env")), &workload).as_deref(),
        Some("from-env")
    );
    assert_eq!(
        name(&builder(&attrs, None), &workload).as_deref(),
        Some("from-attrs")
    );
    assert_eq!(
        name(&builder(&[], None), &workload).as_deref(),
        Some("checkout")
    );
    assert_eq!(
        name(&builder(&[], None), &process(42, "python3")).as_deref(),
        Some("python3")
    );
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

#[test]
fn spans_are_grouped_by_process_in_order_of_first_appearance() {
    let (a, b, c) = (process(1, "a"), process(2, "b"), process(3, "c"));
    // A restarted process (same pid, another start time) is another group.
    let mut a_again = (*a).clone();
    a_again.start_ticks += 1;
    let a_again = Arc::new(a_again);
    let order = [&a, &a, &b, &a, &c, &b, &b, &a_again, &a];
    let spans: Vec<Arc<Span>> = order
        .iter()
        .enumerate()
        .map(|(i, p)| Arc::new(span(p, 1, i as u8, None, "GET", 0, 1)))
        .collect();
    let groups: Vec<(u32, u64, Vec<u8>)> = group_by_process(&spans)
        .into_iter()
        .map(|(p, spans)| {
            let ids = spans.iter().map(|s| s.span_id[0]).collect();
            (p.pid, p.start_ticks, ids)
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            (1, a.start_ticks, vec![0, 1, 3, 8]),
            (2, b.start_ticks, vec![2, 5, 6]),
            (3, c.start_ticks, vec![4]),
            (1, a_again.start_ticks, vec![7]),
        ]
    );
}
