use std::collections::HashMap;

use super::*;

fn resolve(args: ExportArgs, vars: &[(&str, &str)]) -> Result<ExportConfig> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ExportConfig::resolve(&args, &|name| vars.get(name).cloned())
}

fn endpoint_flag(url: &str) -> ExportArgs {
    ExportArgs {
        otlp_endpoint: Some(url.into()),
        ..Default::default()
    }
}

fn otlp(args: ExportArgs, vars: &[(&str, &str)]) -> OtlpConfig {
    resolve(args, vars).unwrap().otlp.expect("an OTLP endpoint")
}

#[test]
fn summary_names_every_output() {
    let args = ExportArgs {
        otlp_protocol: Some("grpc".into()),
        output: Some("/tmp/s.jsonl".into()),
        ..endpoint_flag("http://c:4317")
    };
    assert_eq!(
        resolve(args, &[]).unwrap().summary(),
        "exporting spans as OTLP grpc to http://c:4317/, OTLP/JSON lines to /tmp/s.jsonl"
    );
    assert_eq!(
        resolve(ExportArgs::default(), &[]).unwrap().summary(),
        "exporting spans as terminal waterfalls (no OTLP endpoint configured)"
    );
}

#[test]
fn no_endpoint_means_terminal_only() {
    let c = resolve(ExportArgs::default(), &[]).unwrap();
    assert_eq!(c.otlp, None);
    assert_eq!(c.terminal, Some(TerminalConfig::default()));
    assert_eq!(c.batch, BatchConfig::default());
    // An empty variable is unset.
    let c = resolve(
        ExportArgs::default(),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")],
    )
    .unwrap();
    assert_eq!(c.otlp, None);
}

#[test]
fn base_endpoint_gets_the_traces_path_for_http() {
    for (base, want) in [
        ("http://c:4318", "http://c:4318/v1/traces"),
        ("http://c:4318/", "http://c:4318/v1/traces"),
        ("https://c.example/otlp", "https://c.example/otlp/v1/traces"),
        (
            "https://c.example/otlp/",
            "https://c.example/otlp/v1/traces",
        ),
    ] {
        let o = otlp(endpoint_flag(base), &[]);
        assert_eq!(o.protocol, Protocol::HttpProtobuf);
        assert_eq!(o.endpoint, want, "base {base}");
        let o = otlp(
            ExportArgs::default(),
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", base)],
        );
        assert_eq!(o.endpoint, want, "env base {base}");
    }
}

#[test]
fn traces_endpoint_is_used_as_is_and_flag_wins() {
    let vars = [
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/custom"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"),
    ];
    assert_eq!(
        otlp(ExportArgs::default(), &vars).endpoint,
        "http://t:4318/custom"
    );
    assert_eq!(
        otlp(endpoint_flag("http://flag:4318"), &vars).endpoint,
        "http://flag:4318/v1/traces"
    );
}

#[test]
fn grpc_endpoint_is_not_given_a_path() {
    let args = ExportArgs {
        otlp_endpoint: Some("http://c:9999".into()),
        otlp_protocol: Some("grpc".into()),
        ..Default::default()
    };
    let o = otlp(args, &[]);
    assert_eq!(o.protocol, Protocol::Grpc);
    assert_eq!(o.endpoint, "http://c:9999/");
}

#[test]
fn protocol_precedence_and_port_4317_default() {
    assert_eq!(
        otlp(endpoint_flag("http://c:4317"), &[]).protocol,
        Protocol::Grpc
    );
    assert_eq!(
        otlp(endpoint_flag("http://c:4318"), &[]).protocol,
        Protocol::HttpProtobuf
    );
    assert_eq!(
        otlp(endpoint_flag("http://c"), &[]).protocol,
        Protocol::HttpProtobuf
    );
    let vars = [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
    ];
    // Explicit configuration beats the port heuristic; traces-specific beats generic.
    let o = otlp(endpoint_flag("http://c:4317"), &vars);
    assert_eq!(o.protocol, Protocol::HttpProtobuf);
    assert_eq!(o.endpoint, "http://c:4317/v1/traces");
    let o = otlp(endpoint_flag("http://c:4318"), &vars[..1]);
    assert_eq!(o.protocol, Protocol::Grpc);
    let args = ExportArgs {
        otlp_protocol: Some("grpc".into()),
        ..endpoint_flag("http://c:4318")
    };
    assert_eq!(otlp(args, &vars).protocol, Protocol::Grpc);
}

#[test]
fn invalid_values_are_one_line_errors_naming_the_setting() {
    let err =
        |args: ExportArgs, vars: &[(&str, &str)]| resolve(args, vars).unwrap_err().to_string();
    assert_eq!(
        err(
            endpoint_flag("http://c:4318"),
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "foo")]
        ),
        "invalid OTEL_EXPORTER_OTLP_PROTOCOL \"foo\": expected grpc or http/protobuf"
    );
    assert_eq!(
        err(endpoint_flag("localhost:4317"), &[]),
        "invalid --otlp-endpoint \"localhost:4317\": expected an http:// or https:// URL"
    );
    assert_eq!(
        err(
            ExportArgs::default(),
            &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://x")]
        ),
        "invalid OTEL_EXPORTER_OTLP_TRACES_ENDPOINT \"ftp://x\": expected an http:// or https:// URL"
    );
    assert_eq!(
        err(
            endpoint_flag("http://c"),
            &[("OTEL_EXPORTER_OTLP_TIMEOUT", "0")]
        ),
        "invalid OTEL_EXPORTER_OTLP_TIMEOUT \"0\": must be greater than 0"
    );
    assert!(
        err(
            ExportArgs::default(),
            &[("OTEL_BSP_MAX_QUEUE_SIZE", "lots")]
        )
        .contains("OTEL_BSP_MAX_QUEUE_SIZE")
    );
    assert_eq!(
        err(
            endpoint_flag("http://c"),
            &[("OTEL_EXPORTER_OTLP_HEADERS", "bad key=1")]
        ),
        "invalid OTEL_EXPORTER_OTLP_HEADERS: \"bad key\" is not a valid header name"
    );
    assert!(
        !err(
            endpoint_flag("http://c"),
            &[("OTEL_EXPORTER_OTLP_HEADERS", "k=%0A")]
        )
        .contains('\n')
    );
}

#[test]
fn headers_decoded_lowercased_and_traces_specific_replaces_generic() {
    let o = otlp(
        endpoint_flag("http://c"),
        &[("OTEL_EXPORTER_OTLP_HEADERS", "API-Key=se%20cret,x-tenant=a")],
    );
    assert_eq!(
        o.headers,
        vec![
            ("api-key".to_string(), "se cret".to_string()),
            ("x-tenant".to_string(), "a".to_string())
        ]
    );
    let o = otlp(
        endpoint_flag("http://c"),
        &[
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=generic,x-tenant=a"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "api-key=traces"),
        ],
    );
    assert_eq!(o.headers, vec![("api-key".into(), "traces".into())]);
}

#[test]
fn timeouts_and_batch_settings() {
    let c = resolve(
        endpoint_flag("http://c"),
        &[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
            ("OTEL_BSP_SCHEDULE_DELAY", "0"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "7000"),
        ],
    )
    .unwrap();
    assert_eq!(c.otlp.unwrap().timeout, Duration::from_millis(2500));
    assert_eq!(c.terminal, None);
    assert_eq!(
        c.batch,
        BatchConfig {
            max_queue_size: 100,
            // Clamped to the queue size.
            max_export_batch_size: 100,
            schedule_delay: Duration::ZERO,
            export_timeout: Duration::from_millis(7000),
        }
    );
    let c = resolve(endpoint_flag("http://c"), &[]).unwrap();
    let o = c.otlp.unwrap();
    assert_eq!(o.timeout, Duration::from_secs(10));
    assert_eq!(o.ca_certificate, None);
}

#[test]
fn compression() {
    assert_eq!(
        otlp(endpoint_flag("http://c"), &[]).compression,
        Compression::None
    );
    let vars = [
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
        ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip"),
    ];
    assert_eq!(
        otlp(endpoint_flag("http://c"), &vars).compression,
        Compression::Gzip
    );
    assert_eq!(
        resolve(
            endpoint_flag("http://c"),
            &[("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")]
        )
        .unwrap_err()
        .to_string(),
        "invalid OTEL_EXPORTER_OTLP_COMPRESSION \"zstd\": expected gzip or none"
    );
}

#[test]
fn ca_certificate_traces_specific_wins() {
    let vars = [
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/generic.pem"),
        ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces.pem"),
    ];
    let o = otlp(endpoint_flag("https://c"), &vars);
    assert_eq!(o.ca_certificate, Some(PathBuf::from("/traces.pem")));
    let o = otlp(endpoint_flag("https://c"), &vars[..1]);
    assert_eq!(o.ca_certificate, Some(PathBuf::from("/generic.pem")));
}

#[test]
fn resource_variables_and_output() {
    let args = ExportArgs {
        output: Some("/tmp/spans.jsonl".into()),
        ..Default::default()
    };
    let c = resolve(
        args,
        &[
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment.name=prod,team=a%2Cb",
            ),
            ("OTEL_SERVICE_NAME", "checkout"),
        ],
    )
    .unwrap();
    assert_eq!(
        c.resource.attributes,
        vec![
            ("deployment.environment.name".into(), "prod".into()),
            ("team".into(), "a,b".into())
        ]
    );
    assert_eq!(c.resource.service_name.as_deref(), Some("checkout"));
    assert_eq!(c.output, Some(PathBuf::from("/tmp/spans.jsonl")));
    // Output alone does not silence the terminal.
    assert!(c.terminal.is_some());
}
