//! `tracer status` as text.

use std::fmt::Write;

use tracer_common::Counter;

use crate::control::protocol::StatusReport;

pub fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    // The POD column only when some process runs in a known pod.
    let pods = report.processes.iter().any(|p| p.pod.is_some());
    let rows: Vec<Vec<String>> = report
        .processes
        .iter()
        .map(|p| {
            let mut row = vec![
                p.pid.to_string(),
                p.executable.clone(),
                p.service_name.clone(),
            ];
            if pods {
                row.push(p.pod.clone().unwrap_or_else(|| "-".into()));
            }
            row.extend([p.selector.clone(), p.spans.to_string(), p.drops.to_string()]);
            row
        })
        .collect();
    let mut header = vec!["PID", "EXECUTABLE", "SERVICE"];
    if pods {
        header.push("POD");
    }
    header.extend(["SELECTOR", "SPANS", "DROPS"]);
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let last = header.len() - 1;
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            // Numbers (the first and the last two columns) right-aligned, text left-aligned.
            let _ = match i {
                0 => write!(s, "{cell:>w$}"),
                i if i + 2 > last => write!(s, "{cell:>w$}"),
                _ => write!(s, "{cell:<w$}"),
            };
            s.push_str(if i < last { "  " } else { "" });
        }
        s.trim_end().to_string()
    };
    if rows.is_empty() {
        out.push_str("no process is traced\n");
    } else {
        let _ = writeln!(out, "{}", line(&header));
        for row in &rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            let _ = writeln!(out, "{}", line(&cells));
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
    if !a.kubernetes.is_empty() {
        let _ = writeln!(out, "kubernetes: {}", a.kubernetes);
    }
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
                kubernetes: "off: not in a Kubernetes pod".into(),
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
                pod: None,
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
        assert_eq!(lines[5], "kubernetes: off: not in a Kubernetes pod");
        assert!(
            lines[6].starts_with(
                "health: kernel events lost 2 (ring_full=2); spans exported 40, dropped 1;"
            ),
            "{}",
            lines[6]
        );
        assert_eq!(lines[7], "tables: pending spans 6");
        assert_eq!(lines[8], "traceparent injection: injected=3 stopped=1");
    }

    #[test]
    fn processes_in_pods_get_a_pod_column() {
        let process = |pid: u32, pod: Option<&str>| ProcessStatus {
            pid,
            executable: "app".into(),
            service_name: "web".into(),
            selector: "namespace shop".into(),
            pod: pod.map(String::from),
            spans: 3,
            drops: 0,
        };
        let report = StatusReport {
            agent: AgentStatus {
                pid: 1,
                version: "0".into(),
                uptime_seconds: 1,
                export: "terminal".into(),
                kubernetes: "on: node n1, 2 pod(s)".into(),
                kernel: vec![],
                kernel_lost: 0,
                spans_exported: 0,
                spans_dropped: 0,
                export_errors: 0,
                export_queue: 0,
                export_queue_capacity: 1,
                abandoned_requests: 0,
            },
            processes: vec![
                process(10, Some("shop/web-7d9f-x2k4q/app")),
                process(11, None),
            ],
            selectors: vec![],
            metrics: vec![],
        };
        let text = render(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "PID  EXECUTABLE  SERVICE  POD                      SELECTOR        SPANS  DROPS"
        );
        assert_eq!(
            lines[1],
            " 10  app         web      shop/web-7d9f-x2k4q/app  namespace shop      3      0"
        );
        assert_eq!(
            lines[2],
            " 11  app         web      -                        namespace shop      3      0"
        );
    }
}
