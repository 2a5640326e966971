//! `tracer status` as text.

use std::fmt::Write;

use tracer_common::Counter;

use crate::control::protocol::StatusReport;

pub fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    let rows: Vec<[String; 6]> = report
        .processes
        .iter()
        .map(|p| {
            [
                p.pid.to_string(),
                p.executable.clone(),
                p.service_name.clone(),
                p.selector.clone(),
                p.spans.to_string(),
                p.drops.to_string(),
            ]
        })
        .collect();
    let header = ["PID", "EXECUTABLE", "SERVICE", "SELECTOR", "SPANS", "DROPS"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // Numbers right-aligned, text left-aligned.
            let _ = match i {
                0 | 4 | 5 => write!(s, "{cell:>w$}"),
                _ => write!(s, "{cell:<w$}"),
            };
            s.push_str(if i < 5 { "  " } else { "" });
        }
        s.trim_end().to_string()
    };
    if rows.is_empty() {
        out.push_str("no process is traced\n");
    } else {
        let _ = writeln!(out, "{}", line(header));
        for row in &rows {
            let _ = writeln!(out, "{}", line(row.each_ref().map(String::as_str)));
        }
    }
    out.push('\n');
    if report.selectors.is_empty() {
        out.push_str("selectors: none (enable some with `tracer enable`)\n");
    } else {
        let list: Vec<String> = report
            .selectors
            .iter()
            .map(|s| {
                let named = s
                    .service_name
                    .as_ref()
                    .map(|n| format!(" as {n}"))
                    .unwrap_or_default();
                let waiting = if s.processes == 0 { ", waiting" } else { "" };
                format!(
                    "{}{named} ({} process(es){waiting})",
                    s.selector, s.processes
                )
            })
            .collect();
        let _ = writeln!(out, "selectors: {}", list.join("; "));
    }
    let a = &report.agent;
    let _ = writeln!(
        out,
        "agent: pid {}, version {}, up {}; export: {}",
        a.pid,
        a.version,
        uptime(a.uptime_seconds),
        a.export
    );
    let is_drop = |name: &str| Counter::ALL.iter().any(|c| c.is_drop() && c.name() == name);
    let lost: Vec<String> = a
        .kernel
        .iter()
        .filter(|(name, n)| *n > 0 && is_drop(name))
        .map(|(name, n)| format!("{name}={n}"))
        .collect();
    let _ = writeln!(
        out,
        "health: kernel events lost {}{}; spans exported {}, dropped {}; export errors {}; \
         export queue {}/{}; requests without response {}",
        a.kernel_lost,
        if lost.is_empty() {
            String::new()
        } else {
            format!(" ({})", lost.join(" "))
        },
        a.spans_exported,
        a.spans_dropped,
        a.export_errors,
        a.export_queue,
        a.export_queue_capacity,
        a.abandoned_requests
    );
    let tables: Vec<String> = report
        .metrics
        .iter()
        .filter(|m| m.name == "tracer_table_entries")
        .filter_map(|m| {
            Some(format!(
                "{} {}",
                m.labels.first()?.1.replace('_', " "),
                m.value
            ))
        })
        .collect();
    if !tables.is_empty() {
        let _ = writeln!(out, "tables: {}", tables.join(", "));
    }
    let injection: Vec<String> = a
        .kernel
        .iter()
        .filter(|(name, _)| name.starts_with("inject"))
        .map(|(name, n)| format!("{}={n}", name.trim_start_matches("inject_")))
        .collect();
    if a.kernel
        .iter()
        .any(|(name, n)| name.starts_with("inject") && *n > 0)
    {
        let _ = writeln!(out, "traceparent injection: {}", injection.join(" "));
    }
    out
}

fn uptime(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{
        Selector,
        protocol::{AgentStatus, Metric, MetricKind, ProcessStatus, SelectorStatus},
    };

    #[test]
    fn renders_an_aligned_table_and_the_health_lines() {
        let report = StatusReport {
            agent: AgentStatus {
                pid: 7,
                version: "0.1.0".into(),
                uptime_seconds: 125,
                export: "terminal".into(),
                kernel: vec![
                    ("data_events".into(), 90),
                    ("ring_full".into(), 2),
                    ("truncated".into(), 5),
                    ("injected".into(), 3),
                    ("inject_stopped".into(), 1),
                ],
                kernel_lost: 2,
                spans_exported: 40,
                spans_dropped: 1,
                export_errors: 0,
                export_queue: 3,
                export_queue_capacity: 8192,
                abandoned_requests: 4,
            },
            processes: vec![ProcessStatus {
                pid: 1234,
                executable: "python3.11".into(),
                service_name: "frontend".into(),
                selector: "pid 1234".into(),
                spans: 40,
                drops: 1,
            }],
            selectors: vec![
                SelectorStatus {
                    selector: Selector::Pid(1234),
                    service_name: Some("frontend".into()),
                    processes: 1,
                },
                SelectorStatus {
                    selector: Selector::Exe("nginx".into()),
                    service_name: None,
                    processes: 0,
                },
            ],
            metrics: vec![Metric {
                name: "tracer_table_entries".into(),
                help: String::new(),
                kind: MetricKind::Gauge,
                labels: vec![("table".into(), "pending_spans".into())],
                value: 6,
            }],
        };
        let text = render(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            " PID  EXECUTABLE  SERVICE   SELECTOR  SPANS  DROPS"
        );
        assert_eq!(
            lines[1],
            "1234  python3.11  frontend  pid 1234     40      1"
        );
        assert_eq!(
            lines[3],
            "selectors: pid 1234 as frontend (1 process(es)); exe nginx (0 process(es), waiting)"
        );
        assert_eq!(
            lines[4],
            "agent: pid 7, version 0.1.0, up 2m 5s; export: terminal"
        );
        assert!(
            lines[5].starts_with(
                "health: kernel events lost 2 (ring_full=2); spans exported 40, dropped 1;"
            ),
            "{}",
            lines[5]
        );
        assert_eq!(lines[6], "tables: pending spans 6");
        assert_eq!(lines[7], "traceparent injection: injected=3 stopped=1");
    }
}
