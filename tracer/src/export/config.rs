//! Export settings: CLI flags and the standard OpenTelemetry environment variables, resolved
//! once at startup so that a bad value is a clear error before anything is captured.
//!
//! Rules (flags override environment, signal-specific variables override generic ones):
//! - Endpoint: `--otlp-endpoint` and `OTEL_EXPORTER_OTLP_ENDPOINT` are base URLs (http/protobuf
//!   appends `/v1/traces`); `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is used as-is. No endpoint:
//!   traces are printed to the terminal instead.
//! - Protocol: `--otlp-protocol`, then `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, then
//!   `OTEL_EXPORTER_OTLP_PROTOCOL`; unset, it is http/protobuf as the spec says, except that an
//!   endpoint on port 4317 (the OTLP/gRPC port) means grpc: sending HTTP/1 to a gRPC port is the
//!   most common misconfiguration and could never work.
//! - Headers: `OTEL_EXPORTER_OTLP_TRACES_HEADERS` replaces `OTEL_EXPORTER_OTLP_HEADERS` whole;
//!   likewise `..._TIMEOUT`, `..._CERTIFICATE` and `..._COMPRESSION`.
//! - Batching: `OTEL_BSP_*`, with agent defaults (see [`BatchConfig::default`]).
//!
//! Empty variables count as unset, as the spec requires.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};

use super::env::{parse_count, parse_key_values, parse_millis};

/// Export-related command-line flags.
#[derive(Clone, Debug, Default)]
pub struct ExportArgs {
    /// `--otlp-endpoint URL`: base URL of an OTLP collector.
    pub otlp_endpoint: Option<String>,
    /// `--otlp-protocol grpc|http/protobuf`
    pub otlp_protocol: Option<String>,
    /// `--output FILE`: append OTLP/JSON lines.
    pub output: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// `OTEL_EXPORTER_OTLP_COMPRESSION`: none by default, as the spec says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

/// Where and how OTLP is sent.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpConfig {
    pub protocol: Protocol,
    /// gRPC: the server's URL. http/protobuf: the full URL POSTed to.
    pub endpoint: String,
    /// Sent on every export (header names lowercased: gRPC metadata requires it).
    pub headers: Vec<(String, String)>,
    /// Per-attempt timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`, default 10 s).
    pub timeout: Duration,
    /// PEM file of the CA(s) trusted for https instead of the system's roots
    /// (`OTEL_EXPORTER_OTLP_CERTIFICATE`): for collectors behind a private CA.
    pub ca_certificate: Option<PathBuf>,
    pub compression: Compression,
}

/// Batch span processor settings, one queue per output.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchConfig {
    /// Spans held per output before `submit` drops (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub max_queue_size: usize,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`
    pub max_export_batch_size: usize,
    /// How long a partial batch waits for more spans (`OTEL_BSP_SCHEDULE_DELAY`).
    pub schedule_delay: Duration,
    /// Bound on one batch's export including all retries (`OTEL_BSP_EXPORT_TIMEOUT`).
    pub export_timeout: Duration,
}

impl Default for BatchConfig {
    /// The spec's defaults except two, chosen for an agent:
    /// - queue 8192 (spec 2048): one agent queues for every process on the host, not one;
    /// - delay 1 s (spec 5 s): spans reach the backend while the user is still looking.
    fn default() -> Self {
        Self {
            max_queue_size: 8192,
            max_export_batch_size: 512,
            schedule_delay: Duration::from_millis(1000),
            export_timeout: Duration::from_millis(30_000),
        }
    }
}

/// Retries of retryable failures, bounded in count and, through
/// [`BatchConfig::export_timeout`], in time: a dead collector costs at most one held batch.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryConfig {
    /// Attempts per batch, the first included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Resource settings shared by every traced process (see `otlp::resource` for precedence).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceConfig {
    /// `OTEL_RESOURCE_ATTRIBUTES`, in order.
    pub attributes: Vec<(String, String)>,
    /// `OTEL_SERVICE_NAME`
    pub service_name: Option<String>,
}

/// The terminal waterfall printer, used when no OTLP endpoint is configured.
#[derive(Clone, Debug, PartialEq)]
pub struct TerminalConfig {
    /// A trace is printed once no span of it arrived for this long.
    pub quiet_period: Duration,
    /// Traces held while waiting; past this the oldest is printed early.
    pub max_traces: usize,
    /// Spans held per trace; a trace reaching this is printed early.
    pub max_spans_per_trace: usize,
    /// Spans held in all; past this the oldest traces are printed early.
    pub max_spans: usize,
    /// Spans waiting for the printer thread before `submit` drops.
    pub max_queue_size: usize,
}

impl Default for TerminalConfig {
    fn default() -> Self {
        Self {
            quiet_period: Duration::from_secs(1),
            max_traces: 1000,
            max_spans_per_trace: 500,
            max_spans: 10_000,
            max_queue_size: 8192,
        }
    }
}

/// Resolved export settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportConfig {
    pub otlp: Option<OtlpConfig>,
    /// OTLP/JSON lines file.
    pub output: Option<PathBuf>,
    /// Set when there is no OTLP endpoint.
    pub terminal: Option<TerminalConfig>,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    pub resource: ResourceConfig,
}

impl ExportConfig {
    /// Resolves flags and environment (`env` returns a variable's value; injectable for tests).
    pub fn resolve(args: &ExportArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        // The spec treats an empty variable as unset.
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());

        let endpoint = if let Some(base) = &args.otlp_endpoint {
            Some(Endpoint::Base(check_url("--otlp-endpoint", base)?))
        } else if let Some(url) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(Endpoint::Exact(check_url(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                &url,
            )?))
        } else if let Some(base) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(Endpoint::Base(check_url(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                &base,
            )?))
        } else {
            None
        };

        let protocol = if let Some(p) = &args.otlp_protocol {
            Some(parse_protocol("--otlp-protocol", p)?)
        } else if let Some(p) = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
            Some(parse_protocol("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", &p)?)
        } else if let Some(p) = var("OTEL_EXPORTER_OTLP_PROTOCOL") {
            Some(parse_protocol("OTEL_EXPORTER_OTLP_PROTOCOL", &p)?)
        } else {
            None
        };

        let headers = match var("OTEL_EXPORTER_OTLP_TRACES_HEADERS") {
            Some(h) => parse_headers("OTEL_EXPORTER_OTLP_TRACES_HEADERS", &h)?,
            None => match var("OTEL_EXPORTER_OTLP_HEADERS") {
                Some(h) => parse_headers("OTEL_EXPORTER_OTLP_HEADERS", &h)?,
                None => Vec::new(),
            },
        };

        let timeout = match var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") {
            Some(t) => positive_millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", &t)?,
            None => match var("OTEL_EXPORTER_OTLP_TIMEOUT") {
                Some(t) => positive_millis("OTEL_EXPORTER_OTLP_TIMEOUT", &t)?,
                None => Duration::from_secs(10),
            },
        };

        let ca_certificate = var("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE")
            .or_else(|| var("OTEL_EXPORTER_OTLP_CERTIFICATE"))
            .map(PathBuf::from);

        let compression = match var("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION") {
            Some(c) => parse_compression("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", &c)?,
            None => match var("OTEL_EXPORTER_OTLP_COMPRESSION") {
                Some(c) => parse_compression("OTEL_EXPORTER_OTLP_COMPRESSION", &c)?,
                None => Compression::None,
            },
        };

        let otlp = endpoint.map(|endpoint| {
            let protocol = protocol.unwrap_or_else(|| match endpoint.url().port() {
                Some(4317) => Protocol::Grpc,
                _ => Protocol::HttpProtobuf,
            });
            OtlpConfig {
                endpoint: endpoint.resolve(protocol),
                protocol,
                headers,
                timeout,
                ca_certificate,
                compression,
            }
        });

        let mut batch = BatchConfig::default();
        if let Some(v) = var("OTEL_BSP_MAX_QUEUE_SIZE") {
            batch.max_queue_size = parse_count("OTEL_BSP_MAX_QUEUE_SIZE", &v)?;
        }
        if let Some(v) = var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
            batch.max_export_batch_size = parse_count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", &v)?;
        }
        // The spec requires batch <= queue; a larger batch could never fill.
        batch.max_export_batch_size = batch.max_export_batch_size.min(batch.max_queue_size);
        if let Some(v) = var("OTEL_BSP_SCHEDULE_DELAY") {
            batch.schedule_delay = parse_millis("OTEL_BSP_SCHEDULE_DELAY", &v)?;
        }
        if let Some(v) = var("OTEL_BSP_EXPORT_TIMEOUT") {
            batch.export_timeout = positive_millis("OTEL_BSP_EXPORT_TIMEOUT", &v)?;
        }

        let resource = ResourceConfig {
            attributes: match var("OTEL_RESOURCE_ATTRIBUTES") {
                Some(a) => parse_key_values("OTEL_RESOURCE_ATTRIBUTES", &a)?,
                None => Vec::new(),
            },
            service_name: var("OTEL_SERVICE_NAME").map(|s| s.trim().to_string()),
        };

        let terminal = otlp.is_none().then(TerminalConfig::default);
        Ok(Self {
            otlp,
            output: args.output.clone(),
            terminal,
            batch,
            retry: RetryConfig::default(),
            resource,
        })
    }
}

impl ExportConfig {
    /// One line for the agent's startup log: where spans go.
    pub fn summary(&self) -> String {
        let mut outputs = Vec::new();
        if let Some(o) = &self.otlp {
            let protocol = match o.protocol {
                Protocol::Grpc => "grpc",
                Protocol::HttpProtobuf => "http/protobuf",
            };
            outputs.push(format!("OTLP {protocol} to {}", o.endpoint));
        }
        if let Some(path) = &self.output {
            outputs.push(format!("OTLP/JSON lines to {}", path.display()));
        }
        if self.terminal.is_some() {
            outputs.push("terminal waterfalls (no OTLP endpoint configured)".to_string());
        }
        format!("exporting spans as {}", outputs.join(", "))
    }
}

enum Endpoint {
    /// A base URL: http/protobuf appends the signal path.
    Base(Url),
    /// A signal-specific URL, used unchanged.
    Exact(Url),
}

impl Endpoint {
    fn url(&self) -> &Url {
        match self {
            Endpoint::Base(u) | Endpoint::Exact(u) => u,
        }
    }

    fn resolve(self, protocol: Protocol) -> String {
        match (self, protocol) {
            (Endpoint::Base(mut url), Protocol::HttpProtobuf) => {
                let path = format!("{}/v1/traces", url.path().trim_end_matches('/'));
                url.set_path(&path);
                url.to_string()
            }
            (Endpoint::Base(url) | Endpoint::Exact(url), _) => url.to_string(),
        }
    }
}

fn check_url(name: &str, raw: &str) -> Result<Url> {
    let raw = raw.trim();
    match Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(url),
        _ => bail!("invalid {name} \"{raw}\": expected an http:// or https:// URL"),
    }
}

fn parse_protocol(name: &str, raw: &str) -> Result<Protocol> {
    match raw.trim() {
        "grpc" => Ok(Protocol::Grpc),
        "http/protobuf" => Ok(Protocol::HttpProtobuf),
        other => bail!("invalid {name} \"{other}\": expected grpc or http/protobuf"),
    }
}

fn parse_compression(name: &str, raw: &str) -> Result<Compression> {
    match raw.trim() {
        "gzip" => Ok(Compression::Gzip),
        "none" => Ok(Compression::None),
        other => bail!("invalid {name} \"{other}\": expected gzip or none"),
    }
}

fn positive_millis(name: &str, raw: &str) -> Result<Duration> {
    let d = parse_millis(name, raw)?;
    if d.is_zero() {
        bail!("invalid {name} \"{raw}\": must be greater than 0");
    }
    Ok(d)
}

/// Header pairs checked against HTTP's rules now, so that no export can fail on them later.
fn parse_headers(name: &str, raw: &str) -> Result<Vec<(String, String)>> {
    let mut headers = parse_key_values(name, raw)?;
    for (key, value) in &mut headers {
        let Ok(header) = HeaderName::from_bytes(key.as_bytes()) else {
            bail!("invalid {name}: \"{key}\" is not a valid header name");
        };
        if HeaderValue::from_str(value).is_err() {
            bail!("invalid {name}: the value of \"{key}\" is not a valid header value");
        }
        *key = header.as_str().to_string();
    }
    Ok(headers)
}

#[cfg(test)]
mod tests;
