//! OTLP/HTTP with protobuf bodies: `POST /v1/traces`, served by hyper.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use crate::receiver::{Failure, State, accept_loop};

const PROTOBUF: &str = "application/x-protobuf";

pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
    stop: oneshot::Receiver<()>,
) {
    accept_loop(listener, tls, stop, move |stream| {
        let state = state.clone();
        async move {
            let service = service_fn(move |req| handle(req, state.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
    .await
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::POST || req.uri().path() != "/v1/traces" {
        return Ok(answer(
            StatusCode::NOT_FOUND,
            "text/plain",
            "only POST /v1/traces",
        ));
    }
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    if headers.get("content-type").map(String::as_str) != Some(PROTOBUF) {
        return Ok(answer(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "text/plain",
            "expected application/x-protobuf",
        ));
    }
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return Ok(answer(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "body not read",
        ));
    };
    if let Some(failure) = state.admit().await {
        let status = match failure {
            Failure::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Failure::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Failure::InvalidArgument => StatusCode::BAD_REQUEST,
        };
        return Ok(answer(status, "text/plain", "receiver told to fail"));
    }
    let body = match headers.get("content-encoding").map(String::as_str) {
        None | Some("identity") => body.to_vec(),
        Some("gzip") => {
            let mut plain = Vec::new();
            let mut decoder = flate2::read::GzDecoder::new(&body[..]);
            if std::io::Read::read_to_end(&mut decoder, &mut plain).is_err() {
                return Ok(answer(StatusCode::BAD_REQUEST, "text/plain", "bad gzip"));
            }
            plain
        }
        Some(_) => {
            return Ok(answer(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "text/plain",
                "unsupported content-encoding",
            ));
        }
    };
    let Ok(request) = ExportTraceServiceRequest::decode(&body[..]) else {
        return Ok(answer(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "not an ExportTraceServiceRequest",
        ));
    };
    state.record(headers, request, |_| body);
    let reply = state.reply().encode_to_vec();
    Ok(answer(StatusCode::OK, PROTOBUF, reply))
}

fn answer(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    response
}
