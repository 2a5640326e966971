//! Command-line interface: `tracer run` (the agent) and the commands that talk to a running
//! agent (`enable`, `disable`, `status`, `exec`).

mod commands;
mod exec;
mod status;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use commands::{disable, enable, status};
pub use exec::exec;

use crate::control::{KeyValue, Selector};

#[derive(Parser, Debug)]
#[command(
    name = "tracer",
    version,
    about = "eBPF distributed tracer: HTTP spans from unmodified processes, exported over OTLP"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent: trace what the selectors match, serve the control socket, export spans.
    /// With no selector it starts idle; enable processes with `tracer enable`.
    Run(RunArgs),
    /// Start tracing processes in the running agent.
    Enable(EnableArgs),
    /// Stop tracing processes in the running agent (at once: no new span starts).
    Disable(DisableArgs),
    /// Show what the running agent traces, and its health.
    Status(StatusArgs),
    /// Run a command traced from its first instruction, and pass its exit status through.
    Exec(ExecArgs),
}

#[derive(Args, Debug, Clone)]
pub struct SocketArg {
    /// The agent's control socket [env: TRACER_SOCKET] [default: /run/tracer/tracer.sock]
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
}

/// Exactly one selector.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct SelectorArgs {
    /// One process (and the children it starts from now on).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Processes whose executable or process name is NAME, now and when they start.
    #[arg(long, value_name = "NAME")]
    pub exe: Option<String>,
    /// Processes listening on TCP port N, now and when they start listening.
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Processes in a cgroup (v2) and its sub-cgroups, now and when they join.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,
    /// Processes in the pods of a Kubernetes namespace on this node, now and as pods start.
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Processes in pods with this label, now and as pods start or get it.
    #[arg(long, value_name = "KEY=VALUE")]
    pub pod_label: Option<KeyValue>,
    /// Processes in pods with this annotation, now and as pods start or get it.
    #[arg(long, value_name = "KEY=VALUE")]
    pub pod_annotation: Option<KeyValue>,
}

impl SelectorArgs {
    pub fn selector(&self) -> Selector {
        let given = [
            self.pid.map(Selector::Pid),
            self.exe.clone().map(Selector::Exe),
            self.port.map(Selector::Port),
            self.cgroup.clone().map(Selector::Cgroup),
            self.namespace.clone().map(Selector::Namespace),
            self.pod_label.clone().map(Selector::PodLabel),
            self.pod_annotation.clone().map(Selector::PodAnnotation),
        ];
        given
            .into_iter()
            .flatten()
            .next()
            .expect("clap requires one selector")
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Trace a process, optionally naming its service (default: the executable's name).
    /// Repeatable: --pid 1234=frontend --pid 5678
    #[arg(long = "pid", value_name = "PID[=SERVICE]", value_parser = parse_target)]
    pub pids: Vec<Target>,
    /// Trace processes by executable or process name (repeatable).
    #[arg(long = "exe", value_name = "NAME")]
    pub exes: Vec<String>,
    /// Trace processes listening on a TCP port (repeatable).
    #[arg(long = "port", value_name = "N")]
    pub ports: Vec<u16>,
    /// Trace processes in a cgroup v2 (repeatable).
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<String>,
    /// Trace the pods of a Kubernetes namespace on this node (repeatable).
    #[arg(long = "namespace", value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Trace pods with this label (repeatable).
    #[arg(long = "pod-label", value_name = "KEY=VALUE")]
    pub pod_labels: Vec<KeyValue>,
    /// Trace pods with this annotation, e.g. tracer.io/enabled=true (repeatable).
    #[arg(long = "pod-annotation", value_name = "KEY=VALUE")]
    pub pod_annotations: Vec<KeyValue>,

    /// Read selectors and settings from a TOML or YAML file (flags override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub socket: SocketArg,

    #[command(flatten)]
    pub export: ExportFlags,

    /// Payload bytes captured per syscall (request heads must fit) [default: 4096]
    #[arg(long, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(64..=tracer_common::MAX_CAPTURE_BYTES as i64))]
    pub capture_bytes: Option<u32>,

    /// Kernel ring buffer size in MiB, a power of two [default: 4]
    #[arg(long, value_name = "MIB", value_parser = parse_ring_mib)]
    pub ring_buffer_mib: Option<u32>,

    /// Also write every raw capture record to FILE (mode 0600), for replay in benchmarks,
    /// fuzzing and bug reports. It holds request heads as captured: use on test traffic.
    #[arg(long, value_name = "FILE")]
    pub record_events: Option<PathBuf>,

    /// Insert a W3C `traceparent` header into the outgoing HTTP/1 requests traced processes
    /// make while serving a request, so untraced services downstream join the trace. Changes
    /// bytes on the wire; off by default (see README: traceparent injection).
    #[arg(long)]
    pub inject_traceparent: bool,

    /// Serve the agent's own metrics for Prometheus at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9464). Off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ExportFlags {
    /// OTLP collector base URL, like OTEL_EXPORTER_OTLP_ENDPOINT (http/protobuf appends
    /// /v1/traces). Without one, traces are printed to the terminal.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP transport: grpc or http/protobuf.
    #[arg(long, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<String>,
    /// Also append every batch as an OTLP-JSON line to FILE.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct EnableArgs {
    #[command(flatten)]
    pub selector: SelectorArgs,
    /// The service.name of the processes it matches (default: the executable's name).
    #[arg(long, value_name = "NAME")]
    pub service_name: Option<String>,
    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Args, Debug)]
pub struct DisableArgs {
    #[command(flatten)]
    pub selector: SelectorArgs,
    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print the status as JSON.
    #[arg(long, conflicts_with = "metrics")]
    pub json: bool,
    /// Print every counter and table size in the OpenMetrics text format (what
    /// `run --metrics-addr` serves).
    #[arg(long)]
    pub metrics: bool,
    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// The service.name of the command's spans (default: its executable's name).
    #[arg(long, value_name = "NAME")]
    pub service_name: Option<String>,
    #[command(flatten)]
    pub socket: SocketArg,
    /// With no agent running, one runs for this command alone, exporting as these say.
    #[command(flatten)]
    pub export: ExportFlags,
    /// The command and its arguments, after `--`.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

/// A process to trace and the service name to give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub pid: u32,
    pub service_name: Option<String>,
}

fn parse_target(s: &str) -> Result<Target, String> {
    let (pid, name) = match s.split_once('=') {
        Some((pid, name)) => (pid, Some(name)),
        None => (s, None),
    };
    let pid = pid
        .trim()
        .parse()
        .map_err(|_| format!("{pid:?} is not a process id"))?;
    let service_name = match name.map(str::trim) {
        Some("") => return Err("empty service name after '='".into()),
        other => other.map(String::from),
    };
    Ok(Target { pid, service_name })
}

fn parse_ring_mib(s: &str) -> Result<u32, String> {
    let mib: u32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(1..=1024).contains(&mib) || !mib.is_power_of_two() {
        return Err(format!(
            "{mib} MiB: expected a power of two between 1 and 1024"
        ));
    }
    Ok(mib)
}

/// The CLI talks to a root-only socket: say so before trying.
pub fn require_root(command: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!(
            "tracer {command} must run as root (the agent's control socket is root-only): use sudo"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_take_an_optional_service_name() {
        assert_eq!(
            parse_target("42"),
            Ok(Target {
                pid: 42,
                service_name: None
            })
        );
        assert_eq!(
            parse_target("42=checkout"),
            Ok(Target {
                pid: 42,
                service_name: Some("checkout".into())
            })
        );
        assert!(parse_target("x").is_err());
        assert!(parse_target("42=").is_err());
    }

    #[test]
    fn ring_size_must_be_a_power_of_two() {
        assert_eq!(parse_ring_mib("16"), Ok(16));
        assert!(parse_ring_mib("12").is_err());
        assert!(parse_ring_mib("0").is_err());
    }

    #[test]
    fn enable_takes_exactly_one_selector() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        assert!(parse(&["tracer", "enable"]).is_err());
        assert!(parse(&["tracer", "enable", "--pid", "1", "--exe", "x"]).is_err());
        let cli = parse(&[
            "tracer",
            "enable",
            "--exe",
            "nginx",
            "--service-name",
            "web",
        ])
        .unwrap();
        let Command::Enable(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.selector.selector(), Selector::Exe("nginx".into()));
        assert_eq!(args.service_name.as_deref(), Some("web"));
    }

    #[test]
    fn pod_selectors_parse_as_key_value() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        let cli = parse(&[
            "tracer",
            "disable",
            "--pod-annotation",
            "tracer.io/enabled=true",
        ]);
        let Command::Disable(args) = cli.unwrap().command else {
            panic!()
        };
        assert_eq!(
            args.selector.selector(),
            Selector::PodAnnotation("tracer.io/enabled=true".parse().unwrap())
        );
        assert!(parse(&["tracer", "enable", "--pod-label", "app"]).is_err());
        assert!(parse(&["tracer", "enable", "--namespace", "a", "--pod-label", "b=c"]).is_err());
        let cli = parse(&[
            "tracer",
            "run",
            "--namespace",
            "shop",
            "--pod-label",
            "app=web",
            "--pod-label",
            "tier=db",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.namespaces, ["shop"]);
        assert_eq!(args.pod_labels.len(), 2);
    }

    #[test]
    fn exec_keeps_the_command_arguments_as_given() {
        let cli = Cli::try_parse_from([
            "tracer",
            "exec",
            "--service-name",
            "api",
            "--",
            "python3",
            "-m",
            "http.server",
        ])
        .unwrap();
        let Command::Exec(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.command, ["python3", "-m", "http.server"]);
    }
}
