//! Control messages. Every message is one JSON object on one line.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which processes a request is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    /// One process (and the children it starts from now on).
    Pid(u32),
    /// Processes whose executable (file name of /proc/PID/exe) or process name is this, now
    /// and whenever one starts.
    Exe(String),
    /// Processes listening on this TCP port, now and whenever one starts listening.
    Port(u16),
    /// Processes in this cgroup (v2 path, absolute or under the cgroup mount), and its
    /// sub-cgroups, now and whenever one joins.
    Cgroup(String),
    /// Processes in the containers of this Kubernetes namespace's pods on this node.
    Namespace(String),
    /// Processes in the containers of pods with this label.
    PodLabel(KeyValue),
    /// Processes in the containers of pods with this annotation.
    PodAnnotation(KeyValue),
}

impl Selector {
    /// Whether it selects by pod (and needs the Kubernetes layer).
    pub fn is_pod_selector(&self) -> bool {
        matches!(
            self,
            Selector::Namespace(_) | Selector::PodLabel(_) | Selector::PodAnnotation(_)
        )
    }
}

/// A label or annotation, `key=value`, as the CLI, the config file and the control protocol
/// all spell it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

impl std::str::FromStr for KeyValue {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected key=value"))?;
        // Kubernetes keys: an optional DNS prefix and '/', then a name; never blank or spaced.
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err(format!(
                "{s:?}: the key before '=' must be a label or annotation key"
            ));
        }
        Ok(Self {
            key: key.to_string(),
            value: value.to_string(),
        })
    }
}

impl TryFrom<String> for KeyValue {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<KeyValue> for String {
    fn from(kv: KeyValue) -> String {
        kv.to_string()
    }
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Pid(pid) => write!(f, "pid {pid}"),
            Selector::Exe(name) => write!(f, "exe {name}"),
            Selector::Port(port) => write!(f, "port {port}"),
            Selector::Cgroup(path) => write!(f, "cgroup {path}"),
            Selector::Namespace(namespace) => write!(f, "namespace {namespace}"),
            Selector::PodLabel(kv) => write!(f, "pod-label {kv}"),
            Selector::PodAnnotation(kv) => write!(f, "pod-annotation {kv}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Enable {
        selector: Selector,
        /// The `service.name` of the processes it matches (default: executable name).
        service_name: Option<String>,
    },
    Disable {
        selector: Selector,
    },
    Status,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    /// Done; `message` says what happened, for the operator.
    Ok {
        message: String,
    },
    Status(Box<StatusReport>),
    /// Refused; `message` is one line that says what happened and what to do.
    Error {
        message: String,
    },
}

/// What `tracer status` shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub agent: AgentStatus,
    pub processes: Vec<ProcessStatus>,
    pub selectors: Vec<SelectorStatus>,
    /// Every counter and table size of the agent, as `--metrics-addr` exposes them.
    #[serde(default)]
    pub metrics: Vec<Metric>,
}

/// One sample of the agent's self-metrics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metric {
    /// Family name (`tracer_...`; counters without their `_total` suffix).
    pub name: String,
    pub help: String,
    pub kind: MetricKind,
    pub labels: Vec<(String, String)>,
    pub value: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// A total since the agent started.
    Counter,
    /// A current level (queue depth, table size).
    Gauge,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub pid: u32,
    pub version: String,
    pub uptime_seconds: u64,
    /// Where spans go: "otlp grpc http://…", "terminal", "file …" (comma-separated).
    pub export: String,
    /// Pod metadata: "on: node n1, 12 pod(s)", or "off: " and why.
    #[serde(default)]
    pub kubernetes: String,
    /// Kernel capture counters (`tracer_common::Counter` names), totals since start.
    pub kernel: Vec<(String, u64)>,
    /// Kernel events lost (every drop cause summed).
    pub kernel_lost: u64,
    pub spans_exported: u64,
    /// Spans an export queue was full for.
    pub spans_dropped: u64,
    pub export_errors: u64,
    pub export_queue: usize,
    pub export_queue_capacity: usize,
    /// Requests that got no response (connection closed, data lost).
    pub abandoned_requests: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStatus {
    pub pid: u32,
    pub executable: String,
    pub service_name: String,
    /// The selector that matched, or how it was inherited ("child of pid 12").
    pub selector: String,
    /// "namespace/pod/container" when it runs in a known pod.
    #[serde(default)]
    pub pod: Option<String>,
    /// Spans handed to export so far.
    pub spans: u64,
    /// Spans lost so far: refused by a full export queue, or cut by data the kernel lost.
    pub drops: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectorStatus {
    pub selector: Selector,
    pub service_name: Option<String>,
    /// Processes traced because of it now.
    pub processes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_line_each() {
        let req = Request::Enable {
            selector: Selector::Exe("nginx".into()),
            service_name: Some("web".into()),
        };
        let line = serde_json::to_string(&req).unwrap();
        assert_eq!(
            line,
            r#"{"request":"enable","selector":{"exe":"nginx"},"service_name":"web"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), req);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"request":"status"}"#).unwrap(),
            Request::Status
        );
        assert!(serde_json::from_str::<Request>(r#"{"request":"reboot"}"#).is_err());
    }

    #[test]
    fn selectors_read_as_the_cli_spells_them() {
        assert_eq!(Selector::Port(8080).to_string(), "port 8080");
        assert_eq!(Selector::Cgroup("/a/b".into()).to_string(), "cgroup /a/b");
        let kv: KeyValue = "tracer.io/enabled=true".parse().unwrap();
        assert_eq!(
            Selector::PodAnnotation(kv.clone()).to_string(),
            "pod-annotation tracer.io/enabled=true"
        );
        assert_eq!(
            Selector::Namespace("shop".into()).to_string(),
            "namespace shop"
        );
        assert_eq!(
            Selector::PodLabel(kv).to_string(),
            "pod-label tracer.io/enabled=true"
        );
    }

    #[test]
    fn pod_selectors_travel_as_key_value_strings() {
        let selector = Selector::PodLabel("app=web".parse().unwrap());
        let json = serde_json::to_string(&selector).unwrap();
        assert_eq!(json, r#"{"pod_label":"app=web"}"#);
        assert_eq!(serde_json::from_str::<Selector>(&json).unwrap(), selector);
        // A value may hold '=' and may be empty; a key may not be empty.
        let kv: KeyValue = "k=a=b".parse().unwrap();
        assert_eq!((kv.key.as_str(), kv.value.as_str()), ("k", "a=b"));
        assert_eq!("k=".parse::<KeyValue>().unwrap().value, "");
        assert!("=v".parse::<KeyValue>().is_err());
        assert!("novalue".parse::<KeyValue>().is_err());
        assert!(serde_json::from_str::<Selector>(r#"{"pod_label":"app"}"#).is_err());
    }
}
