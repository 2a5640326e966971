//! What the agent knows about a traced process: the facts its OTLP Resource is built from.

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::kubernetes::{PodContext, cgroup::Container};

/// Identity of a traced process, read from /proc once when tracing is enabled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessMeta {
    pub pid: u32,
    /// `service.name`: set by the operator, else the Kubernetes workload's name, else the
    /// executable's name.
    pub service_name: String,
    /// Whether the operator set `service_name`: an explicit name outranks `OTEL_SERVICE_NAME`
    /// at export, the executable-name default does not.
    pub service_name_is_explicit: bool,
    /// `service.instance.id`: stable for this process incarnation (host, pid, start time).
    pub service_instance_id: String,
    /// `process.executable.name`
    pub executable_name: String,
    /// `process.executable.path`
    pub executable_path: String,
    /// `process.command_line`, with values of secret-looking arguments redacted.
    pub command_line: String,
    /// Start time in clock ticks since boot (/proc/PID/stat field 22): tells pid reuse apart.
    pub start_ticks: u64,
    /// The container it runs in (`container.id`), from its cgroup path; any runtime, with or
    /// without Kubernetes.
    pub container: Option<Container>,
    /// Its pod, container and node (`k8s.*`), when the agent knows the pod.
    pub pod: Option<Arc<PodContext>>,
}

impl ProcessMeta {
    /// A process the agent could not describe (it vanished before /proc was read).
    pub fn unknown(pid: u32) -> Self {
        Self {
            pid,
            service_name: "unknown_service".into(),
            service_name_is_explicit: false,
            service_instance_id: String::new(),
            executable_name: String::new(),
            executable_path: String::new(),
            command_line: String::new(),
            start_ticks: 0,
            container: None,
            pod: None,
        }
    }

    /// A child forked by this process that is gone before its /proc entry was read: a fork
    /// copies its parent, so it has the parent's executable and command line.
    pub fn forked_as(&self, pid: u32, host: &str) -> Self {
        // Its start time is unknown: the fork's time tells this incarnation apart.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            pid,
            service_instance_id: instance_id(host, pid, now),
            start_ticks: 0,
            ..self.clone()
        }
    }

    /// Places the process in its pod; the workload's name becomes its `service.name` unless
    /// the operator named the service.
    pub fn in_pod(mut self, pod: Option<Arc<PodContext>>) -> Self {
        if let Some(context) = &pod
            && !self.service_name_is_explicit
        {
            self.service_name = context.pod.workload_name().to_string();
        }
        self.pod = pod;
        self
    }

    /// Reads the process's identity from /proc. `service_name` overrides the default name.
    pub fn from_proc(pid: u32, service_name: Option<&str>, host: &str) -> Result<Self> {
        let proc = procfs::process::Process::new(pid as i32)
            .with_context(|| format!("process {pid} not found"))?;
        let stat = proc
            .stat()
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        let executable_path = proc
            .exe()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cmdline = proc.cmdline().unwrap_or_default();
        let executable_name = executable_path
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or(&stat.comm)
            .to_string();
        Ok(Self {
            pid,
            service_name: service_name.unwrap_or(&executable_name).to_string(),
            service_name_is_explicit: service_name.is_some(),
            service_instance_id: instance_id(host, pid, stat.starttime),
            executable_name,
            executable_path,
            command_line: redact_command_line(&cmdline),
            start_ticks: stat.starttime,
            container: crate::kubernetes::cgroup::container_of(pid),
            pod: None,
        })
    }
}

/// A UUID-formatted id derived from (host, pid, start time): the same process always gets the
/// same id, even across agent restarts; a new process with a reused pid gets another.
fn instance_id(host: &str, pid: u32, start_ticks: u64) -> String {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let hash = |salt: u64| {
        BuildHasherDefault::<DefaultHasher>::default().hash_one((salt, host, pid, start_ticks))
    };
    let (a, b) = (hash(1), hash(2));
    // Version 8 (custom) UUID layout: version nibble 8, variant bits 10.
    let a = (a & !0xf000) | 0x8000;
    let b = (b & !(0b11 << 62)) | (0b10 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "api-key",
    "api_key",
    "credential",
    "auth",
];

/// Header fields whose values are credentials, as a client's argument names them
/// (`curl -H 'Authorization: Bearer x'`). Matched at the end of the name, case-insensitively, so
/// that an attached option (`-HCookie: x`) is caught too.
const SECRET_HEADERS: &[&str] = &["authorization", "cookie"];

/// Joins argv with spaces, replacing with `REDACTED` the values of arguments whose name looks
/// secret (`--password=x` and `--token x` alike), of credential headers (`Authorization: x`,
/// `Proxy-Authorization: x`, `Cookie: x`, `Set-Cookie: x`) and of URL query parameters
/// (`http://h/p?token=x` becomes `http://h/p?token=REDACTED`): the same values spans never carry.
pub fn redact_command_line(argv: &[String]) -> String {
    let looks_secret = |s: &str| {
        let s = s.to_ascii_lowercase();
        SECRET_WORDS.iter().any(|w| s.contains(w))
    };
    let mut out = Vec::with_capacity(argv.len());
    let mut redact_next = false;
    for arg in argv {
        if redact_next && !arg.starts_with('-') {
            out.push("REDACTED".to_string());
            redact_next = false;
            continue;
        }
        redact_next = false;
        if let Some(name) = secret_header_name(arg) {
            out.push(format!("{name}: REDACTED"));
            continue;
        }
        if let Some((url, query)) = url_with_query(arg) {
            let mut redacted = format!("{url}?");
            crate::protocols::http::url::push_redacted_query(&mut redacted, query);
            out.push(redacted);
            continue;
        }
        match arg.split_once('=') {
            Some((name, _)) if looks_secret(name) => out.push(format!("{name}=REDACTED")),
            None if arg.starts_with('-') && looks_secret(arg) => {
                out.push(arg.clone());
                redact_next = true;
            }
            _ => out.push(arg.clone()),
        }
    }
    out.join(" ")
}

/// The name of a `Name: value` argument when the header is a credential.
fn secret_header_name(arg: &str) -> Option<&str> {
    let (name, _) = arg.split_once(':')?;
    let lower = name.to_ascii_lowercase();
    let secret = !name.is_empty()
        && !name.contains(char::is_whitespace)
        && SECRET_HEADERS.iter().any(|h| lower.ends_with(h));
    secret.then_some(name)
}

/// A URL or path with a query (`http://h/p?q`, `h:80/p?q`, `/p?q`): the part before `?` and
/// the query (a fragment is left in it, so it is redacted too).
fn url_with_query(arg: &str) -> Option<(&str, &str)> {
    let (url, query) = arg.split_once('?')?;
    (url.contains('/') && !url.contains(char::is_whitespace)).then_some((url, query))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn secret_arguments_are_redacted() {
        assert_eq!(
            redact_command_line(&argv("app --password=hunter2 --token abc -v --port 80")),
            "app --password=REDACTED --token REDACTED -v --port 80"
        );
        assert_eq!(
            redact_command_line(&argv("psql DB_SECRET=x plain=1")),
            "psql DB_SECRET=REDACTED plain=1"
        );
    }

    #[test]
    fn credential_headers_and_query_values_are_redacted() {
        let argv: Vec<String> = [
            "curl",
            "-H",
            "Authorization: Bearer s3cr3t",
            "-H",
            "proxy-authorization: Basic dXNlcjpwYXNz",
            "-HCookie: sid=abc",
            "-H",
            "Set-Cookie: a=b",
            "-H",
            "Accept: */*",
            "http://h:8080/a?q=s3cr3t&page=2&flag#frag",
            "/p?x=1",
            "not a url?x=1",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            redact_command_line(&argv),
            "curl -H Authorization: REDACTED -H proxy-authorization: REDACTED \
             -HCookie: REDACTED -H Set-Cookie: REDACTED -H Accept: */* \
             http://h:8080/a?q=REDACTED&page=REDACTED&flag#frag /p?x=REDACTED not a url?x=1"
        );
    }

    #[test]
    fn instance_id_is_a_stable_uuid_distinct_per_incarnation() {
        let a = instance_id("host", 10, 500);
        assert_eq!(a, instance_id("host", 10, 500));
        assert_ne!(a, instance_id("host", 10, 501));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
    }

    #[test]
    fn reads_this_process() {
        let me = ProcessMeta::from_proc(std::process::id(), None, "h").unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(!me.executable_name.is_empty());
        assert_eq!(me.service_name, me.executable_name);
        assert!(!me.service_name_is_explicit);
        let named = ProcessMeta::from_proc(std::process::id(), Some("svc"), "h").unwrap();
        assert_eq!(named.service_name, "svc");
        assert!(named.service_name_is_explicit);
    }
}
