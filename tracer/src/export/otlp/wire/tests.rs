use prost::Message;

use super::*;
use crate::export::config::ResourceConfig;
use crate::export::otlp::build_request;
use crate::export::testutil::{process, span};
use crate::span::SpanKind;
use crate::test_rng::Rng;

/// prost's encoding of the same request: the reference the direct encoder must match byte
/// for byte.
fn reference(spans: &[Arc<Span>], resources: &ResourceBuilder, clock: &WallClock) -> Vec<u8> {
    build_request(spans, resources, clock).encode_to_vec()
}

fn resources() -> ResourceBuilder {
    ResourceBuilder::new(
        "host-1".into(),
        ResourceConfig {
            attributes: vec![("deployment.environment.name".into(), "prod".into())],
            service_name: None,
        },
    )
}

fn text(rng: &mut Rng, max: usize) -> String {
    // Lengths across the one-byte/two-byte varint boundary, and non-ASCII text.
    let len = rng.below(max + 1);
    (0..len)
        .map(|_| ['a', '/', 'é', '世', '0'][rng.below(5)])
        .collect()
}

fn random_span(rng: &mut Rng, processes: &[Arc<crate::process::ProcessMeta>]) -> Span {
    let p = &processes[rng.below(processes.len())];
    let mut s = span(p, rng.next() as u8, rng.next() as u8, None, "", 0, 0);
    s.trace_id = (rng.next() as u128 | (rng.next() as u128) << 64).to_le_bytes();
    s.parent_span_id = rng.chance(50).then(|| rng.next().to_le_bytes());
    s.trace_flags = rng.below(2) as u8;
    s.trace_state = if rng.chance(20) {
        text(rng, 40)
    } else {
        String::new()
    };
    s.kind = if rng.chance(50) {
        SpanKind::Server
    } else {
        SpanKind::Client
    };
    s.name = text(rng, 200).into();
    // Times at and around the clock's offset: 0 ns after conversion is a proto3 default.
    s.start_mono_ns = rng.below(3) as u64 * 1_000_000;
    s.end_mono_ns = s.start_mono_ns + rng.below(2) as u64 * 1_500;
    s.error = rng.chance(30).then(|| text(rng, 150));
    s.attributes.clear();
    for _ in 0..rng.below(12) {
        s.attributes.push(match rng.below(4) {
            0 => Attribute::str("url.path", text(rng, 300)),
            1 => Attribute::int("http.response.status_code", rng.next() as i64),
            2 => Attribute::int("server.port", -(rng.below(70_000) as i64)),
            _ => Attribute {
                key: "error.flag",
                value: Value::Bool(rng.chance(50)),
            },
        });
    }
    // Spans whose length takes three varint bytes (the encoder guesses two): the value alone
    // is past 16,383 bytes.
    if rng.chance(3) {
        s.attributes.push(Attribute::str(
            "url.full",
            "x".repeat(16_384 + rng.below(200)),
        ));
    }
    s
}

#[test]
fn random_batches_encode_exactly_as_prost_does() {
    let mut rng = Rng::new(7);
    let processes = [process(1, "a"), process(2, "b"), process(70_000, "ççç")];
    let resources = resources();
    // Offset such that a start of 0 ms converts to 0 ns (left out, as prost does).
    let clock = WallClock::fixed(0);
    let mut long_spans = 0;
    for round in 0..300 {
        let spans: Vec<Arc<Span>> = (0..rng.below(20))
            .map(|_| Arc::new(random_span(&mut rng, &processes)))
            .collect();
        long_spans += spans
            .iter()
            .filter(|s| s.attributes.iter().any(|a| a.key == "url.full"))
            .count();
        let ours = encode_request(&spans, &resources, &clock);
        let theirs = reference(&spans, &resources, &clock);
        if ours != theirs {
            let at = ours.iter().zip(&theirs).take_while(|(a, b)| a == b).count();
            panic!(
                "round {round}: lengths {} / {}, first difference at byte {at}: {:?} / {:?}\n{spans:#?}",
                ours.len(),
                theirs.len(),
                &ours[at.saturating_sub(8)..(at + 8).min(ours.len())],
                &theirs[at.saturating_sub(8)..(at + 8).min(theirs.len())],
            );
        }
    }
    assert!(long_spans > 0, "no span had a three-byte length");
}

#[test]
fn empty_batch_is_an_empty_request() {
    let clock = WallClock::fixed(0);
    assert!(encode_request(&[], &resources(), &clock).is_empty());
}

#[test]
fn decodes_as_the_spans_it_was_given() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    let p = process(42, "api");
    let mut s = span(&p, 7, 1, Some(9), "GET /items", 1000, 1010);
    s.error = Some("500 Internal Server Error".into());
    let clock = WallClock::fixed(1_700_000_000_000_000_000);
    let bytes = encode_request(&[Arc::new(s)], &resources(), &clock);
    let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
    let span = &decoded.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(span.name, "GET /items");
    assert_eq!(span.trace_id, vec![7; 16]);
    assert_eq!(span.parent_span_id, vec![9; 8]);
    assert_eq!(span.end_time_unix_nano, 1_700_000_001_010_000_000);
    let status = span.status.as_ref().unwrap();
    assert_eq!(status.message, "500 Internal Server Error");
    assert_eq!(status.code, 2);
    assert_eq!(span.attributes.len(), 2);
}
