use super::*;
use crate::export::testutil::{process, span};

/// frontend GET / ─┬─ GET backend/users ── backend GET /users
///                 └─ GET /fail (error)
/// plus a span whose parent is remote (not in the trace). Given out of order.
fn trace() -> Vec<Arc<Span>> {
    let (fe, be) = (process(1, "frontend"), process(2, "backend"));
    let root = span(&fe, 7, 1, None, "GET /", 1000, 1100);
    let mut call = span(&fe, 7, 2, Some(1), "GET backend/users", 1010, 1060);
    call.kind = SpanKind::Client;
    let served = span(&be, 7, 3, Some(2), "GET /users", 1020, 1050);
    let mut fail = span(&fe, 7, 4, Some(1), "GET /fail", 1060, 1100);
    fail.error = Some("500 Internal Server Error".into());
    let remote = span(&be, 7, 5, Some(9), "GET /remote", 1005, 1008);
    [served, fail, remote, call, root]
        .into_iter()
        .map(Arc::new)
        .collect()
}

fn name(p: &ProcessMeta) -> String {
    p.service_name.clone()
}

fn opts(color: bool) -> RenderOptions {
    RenderOptions {
        color,
        bar_width: 10,
        max_label_width: 60,
    }
}

#[test]
fn renders_tree_order_bars_and_error_mark() {
    let text = render(&trace(), &name, &opts(false));
    let expected = [
        "trace 07070707070707070707070707070707  5 spans  100 ms",
        "  frontend GET /                    100 ms │██████████│",
        "    frontend → GET backend/users   50.0 ms │ █████    │",
        "      backend GET /users           30.0 ms │  ███     │",
        "✗   frontend GET /fail             40.0 ms │      ████│ 500 Internal Server Error",
        "  backend GET /remote              3.00 ms │█         │",
    ];
    assert_eq!(text.lines().collect::<Vec<_>>(), expected, "\n{text}");
}

#[test]
fn colour_only_on_error_lines_and_header() {
    let text = render(&trace(), &name, &opts(true));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with(BOLD) && lines[0].ends_with(RESET));
    assert!(lines[4].starts_with(&format!("{RED}✗")), "{:?}", lines[4]);
    assert!(lines[4].ends_with(RESET));
    for i in [1, 2, 3, 5] {
        assert!(!lines[i].contains('\x1b'), "line {i}: {:?}", lines[i]);
    }
}

#[test]
fn tree_order_survives_parent_cycles_and_self_parents() {
    let p = process(1, "svc");
    let spans: Vec<Arc<Span>> = [
        span(&p, 1, 1, Some(2), "a", 10, 20),
        span(&p, 1, 2, Some(1), "b", 11, 19),
        span(&p, 1, 3, Some(3), "self", 5, 6),
        span(&p, 1, 4, None, "root", 0, 30),
    ]
    .into_iter()
    .map(Arc::new)
    .collect();
    let order = tree_order(&spans);
    // Every span exactly once: roots by start, then the cycle from its earliest span.
    assert_eq!(order, vec![(3, 0), (2, 0), (0, 0), (1, 1)]);
}

#[test]
fn long_labels_are_cut_and_zero_length_spans_get_a_cell() {
    let p = process(1, "svc");
    let spans = vec![
        Arc::new(span(&p, 1, 1, None, "a-very-long-span-name", 0, 10)),
        Arc::new(span(&p, 1, 2, Some(1), "end", 10, 10)),
    ];
    let o = RenderOptions {
        max_label_width: 12,
        ..opts(false)
    };
    let text = render(&spans, &name, &o);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].starts_with("  svc a-very-…"), "{:?}", lines[1]);
    assert!(lines[2].ends_with("│         █│"), "{:?}", lines[2]);
}

#[test]
fn durations() {
    assert_eq!(duration(850_000), "850 µs");
    assert_eq!(duration(1_234_567), "1.23 ms");
    assert_eq!(duration(12_345_678), "12.3 ms");
    assert_eq!(duration(123_456_789), "123 ms");
    assert_eq!(duration(1_250_000_000), "1.25 s");
}
