//! Renders one trace as a terminal waterfall: spans in parent→child order, indented, with a
//! bar on a time axis shared by the whole trace; client spans (outgoing calls) are marked `→`.
//! Pure, so that it is tested as text.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use crate::process::ProcessMeta;
use crate::span::{Span, SpanKind};

pub struct RenderOptions {
    /// ANSI colours (red error lines, bold header): only for a terminal.
    pub color: bool,
    /// Characters of the time axis.
    pub bar_width: usize,
    /// Longest "service name" label before it is cut with '…'.
    pub max_label_width: usize,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            color: false,
            bar_width: 40,
            max_label_width: 60,
        }
    }
}

const RED: &str = "\x1b[31m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// Renders the spans of one trace (any order). `service` names a span's process.
pub fn render(
    spans: &[Arc<Span>],
    service: &dyn Fn(&ProcessMeta) -> String,
    opts: &RenderOptions,
) -> String {
    let mut out = String::new();
    if spans.is_empty() {
        return out;
    }
    let start = spans.iter().map(|s| s.start_mono_ns).min().unwrap_or(0);
    let end = spans
        .iter()
        .map(|s| s.end_mono_ns)
        .max()
        .unwrap_or(0)
        .max(start);
    let (bold, reset) = if opts.color { (BOLD, RESET) } else { ("", "") };
    let _ = writeln!(
        out,
        "{bold}trace {}  {} span{}  {}{reset}",
        hex(&spans[0].trace_id),
        spans.len(),
        if spans.len() == 1 { "" } else { "s" },
        duration(end - start)
    );

    let rows: Vec<(usize, &Span)> = tree_order(spans)
        .into_iter()
        .map(|(i, depth)| (depth, &*spans[i]))
        .collect();
    let labels: Vec<String> = rows
        .iter()
        .map(|(depth, s)| {
            // "→" marks an outgoing call, so a client span and the server span under it
            // (same name, other service) read as caller and callee.
            let arrow = if s.kind == SpanKind::Client {
                "→ "
            } else {
                ""
            };
            let label = format!(
                "{}{} {arrow}{}",
                "  ".repeat(*depth),
                service(&s.process),
                s.name
            );
            truncate(&label, opts.max_label_width)
        })
        .collect();
    let width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let total = (end - start).max(1) as u128;
    let w = opts.bar_width.max(1);
    for ((_, span), label) in rows.iter().zip(&labels) {
        // Columns of the bar: floor of the start, ceiling of the end, at least one cell.
        let from = ((span.start_mono_ns - start) as u128 * w as u128 / total) as usize;
        let from = from.min(w - 1);
        let to = ((span.end_mono_ns.max(span.start_mono_ns) - start) as u128 * w as u128)
            .div_ceil(total) as usize;
        let to = to.clamp(from + 1, w);
        let bar: String = (0..w)
            .map(|c| if (from..to).contains(&c) { '█' } else { ' ' })
            .collect();
        let pad = width - label.chars().count();
        let mark = if span.error.is_some() { '✗' } else { ' ' };
        let (color, reset) = match span.error.is_some() && opts.color {
            true => (RED, RESET),
            false => ("", ""),
        };
        let _ = write!(
            out,
            "{color}{mark} {label}{:pad$} {:>9} │{bar}│",
            "",
            duration(span.duration_ns())
        );
        if let Some(error) = &span.error {
            let _ = write!(out, " {error}");
        }
        let _ = writeln!(out, "{reset}");
    }
    out
}

/// Indices of `spans` with their depth, depth-first, siblings by start time. Spans whose parent
/// is not in the trace are roots; a parent cycle (corrupt ids) is broken rather than lost.
pub fn tree_order(spans: &[Arc<Span>]) -> Vec<(usize, usize)> {
    let mut by_id: HashMap<[u8; 8], usize> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        by_id.entry(s.span_id).or_insert(i);
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match s.parent_span_id.and_then(|p| by_id.get(&p)) {
            Some(&parent) if parent != i => children[parent].push(i),
            _ => roots.push(i),
        }
    }
    let by_start =
        |a: &usize, b: &usize| (spans[*a].start_mono_ns, *a).cmp(&(spans[*b].start_mono_ns, *b));
    roots.sort_by(by_start);
    children.iter_mut().for_each(|c| c.sort_by(by_start));

    let mut order = Vec::with_capacity(spans.len());
    let mut visited = vec![false; spans.len()];
    for &r in &roots {
        visit(r, &children, &mut visited, &mut order);
    }
    // Only spans in a parent cycle are left: show them from the earliest.
    let mut rest: Vec<usize> = (0..spans.len()).filter(|&i| !visited[i]).collect();
    rest.sort_by(by_start);
    for r in rest {
        visit(r, &children, &mut visited, &mut order);
    }
    order
}

fn visit(
    root: usize,
    children: &[Vec<usize>],
    visited: &mut [bool],
    order: &mut Vec<(usize, usize)>,
) {
    let mut stack = vec![(root, 0)];
    while let Some((i, depth)) = stack.pop() {
        if std::mem::replace(&mut visited[i], true) {
            continue;
        }
        order.push((i, depth));
        stack.extend(children[i].iter().rev().map(|&c| (c, depth + 1)));
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Human duration with three significant digits: `850 µs`, `12.3 ms`, `1.25 s`.
pub fn duration(ns: u64) -> String {
    let ns = ns as f64;
    if ns < 1e6 {
        format!("{:.0} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!(
            "{:.*} ms",
            if ns < 1e7 {
                2
            } else if ns < 1e8 {
                1
            } else {
                0
            },
            ns / 1e6
        )
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

#[cfg(test)]
mod tests;
