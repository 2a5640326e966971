//! The receiver: shared state, fault knobs, start/stop/restart on a fixed port.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types::PrivatePkcs8KeyDer};

use crate::received::{ReceivedRequest, ReceivedSpan, flatten};
use crate::{grpc, http};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
}

/// An error answer: each has a gRPC status and an HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// gRPC UNAVAILABLE / HTTP 503: retryable.
    Unavailable,
    /// gRPC RESOURCE_EXHAUSTED / HTTP 429: retryable back-pressure.
    ResourceExhausted,
    /// gRPC INVALID_ARGUMENT / HTTP 400: not retryable.
    InvalidArgument,
}

#[derive(Default)]
struct Faults {
    /// Answer the next this-many requests with `next_failure`.
    fail_next: usize,
    next_failure: Option<Failure>,
    /// Answer every request with this until cleared.
    always: Option<Failure>,
    /// Wait this long before answering.
    delay: Duration,
    /// Accept, but report this many spans rejected, with this message.
    partial: Option<(i64, String)>,
}

/// State shared by the servers and the test.
#[derive(Default)]
pub(crate) struct State {
    requests: Mutex<Vec<ReceivedRequest>>,
    /// Spans in every accepted request, kept or not.
    spans: AtomicUsize,
    /// Set: only count what arrives (the benchmarks receive hundreds of thousands of spans,
    /// on the CPUs they measure).
    count_only: AtomicBool,
    attempts: AtomicUsize,
    faults: Mutex<Faults>,
    arrived: Notify,
}

impl State {
    /// Called for every request: counts it, applies the delay, and says whether to fail.
    pub(crate) async fn admit(&self) -> Option<Failure> {
        self.attempts.fetch_add(1, SeqCst);
        let (delay, failure) = {
            let mut f = self.faults.lock().unwrap();
            let failure = if f.fail_next > 0 {
                f.fail_next -= 1;
                f.next_failure
            } else {
                f.always
            };
            (f.delay, failure)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        failure
    }

    /// The answer to an accepted request.
    pub(crate) fn reply(&self) -> ExportTraceServiceResponse {
        let partial = self.faults.lock().unwrap().partial.clone();
        ExportTraceServiceResponse {
            partial_success: partial.map(|(rejected_spans, error_message)| {
                ExportTracePartialSuccess {
                    rejected_spans,
                    error_message,
                }
            }),
        }
    }

    /// Whether requests are kept (else only their spans are counted).
    pub(crate) fn keeps_requests(&self) -> bool {
        !self.count_only.load(SeqCst)
    }

    /// Counts an accepted request's spans and keeps it; `raw` is only asked for when kept.
    pub(crate) fn record(
        &self,
        headers: BTreeMap<String, String>,
        request: ExportTraceServiceRequest,
        raw: impl FnOnce(&ExportTraceServiceRequest) -> Vec<u8>,
    ) {
        let spans = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.spans.fetch_add(spans, SeqCst);
        if self.keeps_requests() {
            let raw = raw(&request);
            self.requests.lock().unwrap().push(ReceivedRequest {
                headers,
                request,
                raw,
            });
        }
        self.arrived.notify_waiters();
    }
}

/// Accepts connections until `stop`, serving each with `serve`. The connections are owned
/// here, so that stopping (returning, or being aborted) closes every open one too, as a
/// collector that went away would.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut stop: oneshot::Receiver<()>,
    serve: F,
) where
    F: Fn(Conn) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let serve = Arc::new(serve);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (serve, tls) = (serve.clone(), tls.clone());
                connections.spawn(async move {
                    let conn: Conn = match tls {
                        None => Box::new(stream),
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => Box::new(stream),
                            Err(_) => return,
                        },
                    };
                    serve(conn).await
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// A connection, plain or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}
pub(crate) type Conn = Box<dyn Io>;

/// A self-signed certificate for 127.0.0.1 and localhost, and a TLS acceptor using it.
fn self_signed_tls(protocol: Protocol) -> Result<(TlsAcceptor, String)> {
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])?;
    // Explicit provider: the workspace enables both of rustls's, so there is no default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![key.cert.der().clone()],
            PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()).into(),
        )?;
    config.alpn_protocols = vec![match protocol {
        Protocol::Grpc => b"h2".to_vec(),
        Protocol::Http => b"http/1.1".to_vec(),
    }];
    Ok((TlsAcceptor::from(Arc::new(config)), key.cert.pem()))
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// A real OTLP trace receiver on 127.0.0.1 (gRPC or HTTP/protobuf).
pub struct OtlpReceiver {
    protocol: Protocol,
    /// With TLS: the acceptor, and the certificate clients must trust (PEM).
    tls: Option<(TlsAcceptor, String)>,
    addr: SocketAddr,
    state: Arc<State>,
    running: Mutex<Option<Running>>,
}

impl OtlpReceiver {
    /// An OTLP/gRPC receiver on a free port.
    pub async fn start_grpc() -> Result<Self> {
        Self::start(Protocol::Grpc).await
    }

    /// An OTLP/HTTP receiver (POST /v1/traces, protobuf) on a free port.
    pub async fn start_http() -> Result<Self> {
        Self::start(Protocol::Http).await
    }

    /// An OTLP/gRPC receiver over TLS; clients must trust [`ca_pem`](Self::ca_pem).
    pub async fn start_grpc_tls() -> Result<Self> {
        Self::start_with(Protocol::Grpc, true).await
    }

    /// An OTLP/HTTP receiver over TLS; clients must trust [`ca_pem`](Self::ca_pem).
    pub async fn start_http_tls() -> Result<Self> {
        Self::start_with(Protocol::Http, true).await
    }

    pub async fn start(protocol: Protocol) -> Result<Self> {
        Self::start_with(protocol, false).await
    }

    pub async fn start_with(protocol: Protocol, tls: bool) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let receiver = Self {
            protocol,
            tls: if tls {
                Some(self_signed_tls(protocol)?)
            } else {
                None
            },
            addr: listener.local_addr()?,
            state: Arc::default(),
            running: Mutex::new(None),
        };
        receiver.serve(listener);
        Ok(receiver)
    }

    fn serve(&self, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel();
        let state = self.state.clone();
        let tls = self.tls.as_ref().map(|(acceptor, _)| acceptor.clone());
        let task = match self.protocol {
            Protocol::Grpc => tokio::spawn(grpc::serve(listener, tls, state, stopped)),
            Protocol::Http => tokio::spawn(http::serve(listener, tls, state, stopped)),
        };
        *self.running.lock().unwrap() = Some(Running { stop, task });
    }

    /// Base URL, like `OTEL_EXPORTER_OTLP_ENDPOINT` (`http://127.0.0.1:PORT`, or https).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The TLS certificate clients must trust (PEM), for a TLS receiver.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|(_, pem)| pem.as_str())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Stops listening and closes every open connection, like a collector that crashed.
    pub async fn stop(&self) {
        let running = self.running.lock().unwrap().take();
        if let Some(Running { stop, task }) = running {
            let _ = stop.send(());
            let _ = task.await;
        }
    }

    /// Listens again on the same port (after [`stop`](Self::stop)).
    pub async fn restart(&self) -> Result<()> {
        if self.running.lock().unwrap().is_some() {
            bail!("receiver is running");
        }
        let listener = TcpListener::bind(self.addr)
            .await
            .with_context(|| format!("rebinding {}", self.addr))?;
        self.serve(listener);
        Ok(())
    }

    /// Answers the next `n` requests with `failure`, then resumes normal answers.
    pub fn fail_next(&self, n: usize, failure: Failure) {
        let mut f = self.state.faults.lock().unwrap();
        f.fail_next = n;
        f.next_failure = Some(failure);
    }

    /// Answers every request with `failure` (`None`: normal answers again).
    pub fn set_failure(&self, failure: Option<Failure>) {
        self.state.faults.lock().unwrap().always = failure;
    }

    /// Accepts requests but answers that `rejected` spans were refused (partial success).
    pub fn set_partial_success(&self, rejected: Option<(i64, &str)>) {
        self.state.faults.lock().unwrap().partial = rejected.map(|(n, m)| (n, m.to_string()));
    }

    /// Delays every answer.
    pub fn set_delay(&self, delay: Duration) {
        self.state.faults.lock().unwrap().delay = delay;
    }

    /// Requests that reached the server, accepted or not.
    pub fn attempts(&self) -> usize {
        self.state.attempts.load(SeqCst)
    }

    /// Accepted requests, in arrival order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Spans of the accepted requests, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        flatten(&self.state.requests.lock().unwrap())
    }

    /// From now on, only count the spans that arrive: `requests()` and `spans()` stay empty.
    pub fn count_only(&self) {
        self.state.count_only.store(true, SeqCst);
    }

    /// How many spans arrived since the start or the last `clear`, kept or only counted.
    pub fn span_count(&self) -> usize {
        self.state.spans.load(SeqCst)
    }

    /// Forgets what arrived so far.
    pub fn clear(&self) {
        let mut requests = self.state.requests.lock().unwrap();
        requests.clear();
        self.state.spans.store(0, SeqCst);
    }

    /// Waits until at least `n` spans arrived; fails after `timeout` saying how many did.
    pub async fn wait_for_spans(&self, n: usize, timeout: Duration) -> Result<Vec<ReceivedSpan>> {
        if !self.state.keeps_requests() {
            bail!("this receiver only counts spans (count_only): use span_count");
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before checking, so that an arrival in between is not missed.
            let arrived = self.state.arrived.notified();
            let spans = self.spans();
            if spans.len() >= n {
                return Ok(spans);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                bail!(
                    "{} of {n} spans arrived within {timeout:?} ({} requests attempted)",
                    self.spans().len(),
                    self.attempts()
                );
            }
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(running) = self.running.get_mut().unwrap().take() {
            running.task.abort();
        }
    }
}
