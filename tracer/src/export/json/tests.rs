use std::sync::Arc;

use serde_json::Value;

use super::*;
use crate::export::clock::WallClock;
use crate::export::config::ResourceConfig;
use crate::export::otlp::{ResourceBuilder, build_request};
use crate::export::testutil::{process, span};

fn request() -> ExportTraceServiceRequest {
    let p = process(9, "api");
    let root = span(&p, 0xab, 0x01, None, "GET /", 10, 20);
    let mut child = span(&p, 0xab, 0x02, Some(0x01), "GET /x", 11, 15);
    child.error = Some("boom".into());
    build_request(
        &[Arc::new(root), Arc::new(child)],
        &ResourceBuilder::new("h".into(), ResourceConfig::default()),
        &WallClock::fixed(1_700_000_000_000_000_000),
    )
}

/// Every object key in the document, recursively.
fn keys(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.push(k.clone());
                keys(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

fn has_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().any(has_null),
        Value::Array(a) => a.iter().any(has_null),
        _ => false,
    }
}

#[test]
fn follows_the_otlp_json_rules() {
    let line = to_json_line(&request()).unwrap();
    assert_eq!(line.last(), Some(&b'\n'));
    assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one line");
    let doc: Value = serde_json::from_slice(&line).unwrap();

    let mut all_keys = Vec::new();
    keys(&doc, &mut all_keys);
    for k in &all_keys {
        // Attribute keys are values (under "key"), so every object key is a field name.
        assert!(!k.contains('_'), "field {k} is not lowerCamelCase");
    }
    assert!(!has_null(&doc), "null in {doc}");

    let rs = &doc["resourceSpans"][0];
    let resource_attrs = rs["resource"]["attributes"].as_array().unwrap();
    let pid = resource_attrs
        .iter()
        .find(|a| a["key"] == "process.pid")
        .unwrap();
    assert_eq!(pid["value"], serde_json::json!({"intValue": "9"}));
    assert_eq!(rs["scopeSpans"][0]["scope"]["name"], "tracer");

    let spans = rs["scopeSpans"][0]["spans"].as_array().unwrap();
    let (root, child) = (&spans[0], &spans[1]);
    assert_eq!(root["traceId"], "ab".repeat(16));
    assert_eq!(root["spanId"], "0101010101010101");
    assert_eq!(root["parentSpanId"], "");
    assert_eq!(child["parentSpanId"], "0101010101010101");
    assert_eq!(root["kind"], 2, "enums are integers");
    assert_eq!(root["startTimeUnixNano"], "1700000000010000000");
    assert_eq!(root["endTimeUnixNano"], "1700000000020000000");
    assert_eq!(child["status"]["code"], 2);
    assert_eq!(child["status"]["message"], "boom");
    let method = &root["attributes"][0];
    assert_eq!(method["key"], "http.request.method");
    assert_eq!(method["value"]["stringValue"], "GET");
}

#[test]
fn parses_back_into_the_same_request() {
    let req = request();
    let line = to_json_line(&req).unwrap();
    let back: ExportTraceServiceRequest = serde_json::from_slice(&line).unwrap();
    assert_eq!(back, req);
}

#[test]
fn reads_numbers_written_by_other_tools() {
    // OTLP/JSON allows 64-bit integers as numbers and uppercase hex; other writers use them.
    let doc = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{
        "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
        "name":"x","kind":3,"startTimeUnixNano":1544712660000000000,
        "endTimeUnixNano":"1544712661000000000",
        "attributes":[{"key":"n","value":{"intValue":5}}]}]}]}]}"#;
    let req: ExportTraceServiceRequest = serde_json::from_str(doc).unwrap();
    let s = &req.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(s.trace_id[0], 0x5b);
    assert_eq!(s.start_time_unix_nano, 1_544_712_660_000_000_000);
    assert_eq!(s.kind, 3);
}

#[test]
fn the_library_writes_null_for_unset_messages_so_we_set_them_all() {
    // Why `otlp::to_otlp_span` always sets `status`: with-serde writes an unset one as null.
    let mut req = request();
    req.resource_spans[0].scope_spans[0].spans[0].status = None;
    let doc: Value = serde_json::from_slice(&to_json_line(&req).unwrap()).unwrap();
    assert!(doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["status"].is_null());
}
