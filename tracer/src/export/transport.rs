//! Where a batch goes: OTLP/gRPC, OTLP/HTTP (protobuf) or an OTLP/JSON lines file. Each send
//! is one attempt; retrying is the batch worker's job, so failures say whether to retry.

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::{BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use reqwest::header::{
    CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER,
};
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::clock::WallClock;
use super::config::{Compression, OtlpConfig, Protocol};
use super::json;
use super::otlp::{ResourceBuilder, build_request, wire};
use crate::span::Span;

/// A failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportError {
    pub retryable: bool,
    /// The server's hint (HTTP `Retry-After`).
    pub retry_after: Option<Duration>,
    pub message: String,
}

impl ExportError {
    fn retryable(message: String) -> Self {
        Self {
            retryable: true,
            retry_after: None,
            message,
        }
    }

    fn permanent(message: String) -> Self {
        Self {
            retryable: false,
            retry_after: None,
            message,
        }
    }
}

/// A successful attempt. The collector may still have refused some spans (partial success).
#[derive(Debug, Default)]
pub struct Delivered {
    pub rejected_spans: u64,
    /// The collector's reason for rejecting, if it gave one.
    pub message: String,
}

pub enum Transport {
    // Boxed: the tonic client is large and the other variants small.
    Grpc(Box<GrpcTransport>),
    Http(HttpTransport),
    File(FileTransport),
}

impl Transport {
    pub fn otlp(config: &OtlpConfig) -> Result<Self> {
        Ok(match config.protocol {
            Protocol::Grpc => Transport::Grpc(Box::new(GrpcTransport::new(config)?)),
            Protocol::HttpProtobuf => Transport::Http(HttpTransport::new(config)?),
        })
    }

    /// For log lines: where this transport sends.
    pub fn target(&self) -> String {
        match self {
            Transport::Grpc(t) => format!("OTLP export to {} (grpc)", t.endpoint),
            Transport::Http(t) => format!("OTLP export to {}", t.url),
            Transport::File(t) => format!("writing {}", t.path.display()),
        }
    }

    /// A batch as this transport sends it: an OTLP protobuf request (gzipped for OTLP/HTTP
    /// when compression is on; tonic compresses gRPC messages itself), or an OTLP/JSON line.
    /// Encoded once, however many attempts follow.
    pub fn encode(
        &self,
        spans: &[Arc<Span>],
        resources: &ResourceBuilder,
        clock: &WallClock,
    ) -> Result<Bytes, ExportError> {
        match self {
            Transport::Grpc(_) => Ok(wire::encode_request(spans, resources, clock).into()),
            Transport::Http(t) => {
                let body = wire::encode_request(spans, resources, clock);
                Ok(if t.gzip { gzip(&body) } else { body }.into())
            }
            Transport::File(_) => json::to_json_line(&build_request(spans, resources, clock))
                .map(Bytes::from)
                .map_err(|e| ExportError::permanent(format!("encoding OTLP/JSON: {e}"))),
        }
    }

    /// One attempt to deliver a batch from [`Transport::encode`].
    pub async fn send(&mut self, batch: &Bytes) -> Result<Delivered, ExportError> {
        match self {
            Transport::Grpc(t) => t.send(batch.clone()).await,
            Transport::Http(t) => t.send(batch).await,
            Transport::File(t) => t.send(batch.clone()).await,
        }
    }
}

/// The gRPC method OTLP exports call.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

pub struct GrpcTransport {
    endpoint: String,
    client: tonic::client::Grpc<Channel>,
    metadata: MetadataMap,
    timeout: Duration,
}

impl GrpcTransport {
    fn new(config: &OtlpConfig) -> Result<Self> {
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
            .with_context(|| format!("invalid gRPC endpoint {}", config.endpoint))?
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            .user_agent(user_agent())?;
        if config.endpoint.starts_with("https:") {
            let tls = match read_ca(config)? {
                Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
                None => ClientTlsConfig::new().with_native_roots(),
            };
            endpoint = endpoint
                .tls_config(tls)
                .context("setting up TLS for the gRPC endpoint")?;
        }
        let mut metadata = MetadataMap::new();
        for (key, value) in &config.headers {
            // Checked as HTTP headers by the config; gRPC's own reserved forms are not allowed.
            let key = MetadataKey::from_bytes(key.as_bytes())
                .with_context(|| format!("header {key} cannot be sent as gRPC metadata"))?;
            let value = MetadataValue::try_from(value.as_str())
                .with_context(|| format!("header {key} has a value gRPC cannot carry"))?;
            metadata.insert(key, value);
        }
        // Lazy: a collector that is down at startup must not stop the agent.
        let mut client = tonic::client::Grpc::new(endpoint.connect_lazy());
        if config.compression == Compression::Gzip {
            client = client.send_compressed(CompressionEncoding::Gzip);
        }
        Ok(Self {
            endpoint: config.endpoint.clone(),
            client,
            metadata,
            timeout: config.timeout,
        })
    }

    async fn send(&mut self, batch: Bytes) -> Result<Delivered, ExportError> {
        let mut request = tonic::Request::new(batch);
        *request.metadata_mut() = self.metadata.clone();
        request.set_timeout(self.timeout);
        let result = match self.client.ready().await {
            Ok(()) => {
                let path = PathAndQuery::from_static(EXPORT_PATH);
                self.client.unary(request, path, PrebuiltCodec).await
            }
            Err(e) => Err(tonic::Status::unavailable(format!("not ready: {e}"))),
        };
        match result {
            Ok(response) => Ok(delivered(response.into_inner())),
            Err(status) => {
                use tonic::Code::*;
                // The OTLP spec's retryable codes; RESOURCE_EXHAUSTED is the collector's
                // back-pressure signal (memory limiter), so it is retried too.
                let retryable = matches!(
                    status.code(),
                    Cancelled
                        | DeadlineExceeded
                        | ResourceExhausted
                        | Aborted
                        | OutOfRange
                        | Unavailable
                        | DataLoss
                );
                let message = format!("{:?}: {}", status.code(), status.message());
                Err(ExportError {
                    retryable,
                    retry_after: None,
                    message,
                })
            }
        }
    }
}

pub struct HttpTransport {
    url: String,
    client: reqwest::Client,
    gzip: bool,
}

impl HttpTransport {
    fn new(config: &OtlpConfig) -> Result<Self> {
        let mut headers = HeaderMap::new();
        for (key, value) in &config.headers {
            headers.insert(
                HeaderName::from_bytes(key.as_bytes())?,
                HeaderValue::from_str(value)?,
            );
        }
        install_crypto_provider();
        let mut client = reqwest::Client::builder();
        if let Some(pem) = read_ca(config)? {
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .context("parsing OTEL_EXPORTER_OTLP_CERTIFICATE")?;
            client = client.tls_certs_only(certs);
        }
        let client = client
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // A redirect of a POST is a misconfigured endpoint, not something to follow.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(user_agent())
            .default_headers(headers)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            url: config.endpoint.clone(),
            client,
            gzip: config.compression == Compression::Gzip,
        })
    }

    async fn send(&mut self, body: &Bytes) -> Result<Delivered, ExportError> {
        let mut post = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, "application/x-protobuf");
        if self.gzip {
            post = post.header(CONTENT_ENCODING, "gzip");
        }
        post = post.body(body.clone());
        let response = post
            .send()
            .await
            // Connection refused, reset, timeout: the collector may come back.
            .map_err(|e| ExportError::retryable(error_chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            // An empty or unparsable body is still a success: the status code says so.
            let reply = ExportTraceServiceResponse::decode(body).unwrap_or_default();
            return Ok(delivered(reply));
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.bytes().await.unwrap_or_default();
        let mut message = format!("HTTP {status}");
        if let Ok(text) = std::str::from_utf8(&body) {
            let text = text.trim();
            if !text.is_empty() {
                message.push_str(": ");
                message.extend(text.chars().take(200));
            }
        }
        Err(ExportError {
            retryable: matches!(status.as_u16(), 429 | 502 | 503 | 504),
            retry_after,
            message,
        })
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    encoder.write_all(data).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

/// Appends OTLP/JSON lines. The file is opened for every batch, so that log rotation
/// (rename, then a new file) is followed.
pub struct FileTransport {
    path: PathBuf,
}

impl FileTransport {
    /// Opens the file once now, so that an unwritable path is a startup error.
    pub fn new(path: PathBuf) -> Result<Self> {
        open_append(&path)
            .with_context(|| format!("cannot open {} for appending", path.display()))?;
        Ok(Self { path })
    }

    async fn send(&mut self, line: Bytes) -> Result<Delivered, ExportError> {
        let path = self.path.clone();
        // std::fs in a blocking thread: a slow disk must not stall the runtime's one thread.
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            // One write of the whole line: with O_APPEND, concurrent writers do not interleave.
            open_append(&path)?.write_all(&line)
        })
        .await
        .map_err(|e| ExportError::permanent(e.to_string()))?
        .map_err(|e| ExportError::permanent(e.to_string()))?;
        Ok(Delivered::default())
    }
}

fn open_append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// The CA bundle to trust instead of the system roots, if one is configured.
fn read_ca(config: &OtlpConfig) -> Result<Option<Vec<u8>>> {
    let Some(path) = &config.ca_certificate else {
        return Ok(None);
    };
    let pem = std::fs::read(path)
        .with_context(|| format!("reading OTLP CA certificate {}", path.display()))?;
    Ok(Some(pem))
}

/// Sends a request already encoded by [`wire::encode_request`] and decodes the reply.
struct PrebuiltCodec;

impl Codec for PrebuiltCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = PrebuiltCodec;
    type Decoder = PrebuiltCodec;

    fn encoder(&mut self) -> Self::Encoder {
        PrebuiltCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        PrebuiltCodec
    }
}

impl Encoder for PrebuiltCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for PrebuiltCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("decoding the collector's reply: {e}")))
    }
}

fn delivered(reply: ExportTraceServiceResponse) -> Delivered {
    let partial = reply.partial_success.unwrap_or_default();
    Delivered {
        rejected_spans: partial.rejected_spans.max(0) as u64,
        message: partial.error_message,
    }
}

/// reqwest's rustls is built without a crypto provider; use ring, as tonic does. Installing
/// twice is harmless (the second attempt reports the first is in place).
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn user_agent() -> String {
    format!("tracer/{}", env!("CARGO_PKG_VERSION"))
}

/// An error with its causes: reqwest's own message alone ("error sending request") hides
/// whether the connection was refused or timed out.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
