//! A Rust gRPC peer built on tonic, for the end-to-end tests. It serves (and calls) the OTLP
//! TraceService that opentelemetry-proto generates for tonic: a real tonic service, without
//! protoc.
//!
//!     tonic_peer server              prints "listening on PORT"; Export answers OK, or
//!                                    INTERNAL when the request's first schema_url is "fail"
//!     tonic_peer client PORT N       N calls on one channel, the last asking to fail;
//!                                    prints "done"

use std::time::Duration;

use anyhow::Context;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_client::TraceServiceClient,
    trace_service_server::{TraceService, TraceServiceServer},
};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

struct Service;

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let fail = request
            .get_ref()
            .resource_spans
            .first()
            .is_some_and(|r| r.schema_url == "fail");
        if fail {
            return Err(Status::internal("asked to fail"));
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("server") => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            println!("listening on {}", listener.local_addr()?.port());
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Service))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await?;
        }
        Some("client") => {
            let port: u16 = args.get(2).context("port")?.parse()?;
            let calls: usize = args.get(3).context("calls")?.parse()?;
            let channel =
                tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
                    .timeout(Duration::from_secs(10))
                    .connect()
                    .await?;
            let mut client = TraceServiceClient::new(channel);
            for i in 0..calls {
                let schema_url = if i + 1 == calls { "fail" } else { "ok" };
                let request = ExportTraceServiceRequest {
                    resource_spans: vec![ResourceSpans {
                        schema_url: schema_url.into(),
                        ..Default::default()
                    }],
                };
                let result = client.export(request).await;
                anyhow::ensure!(
                    result.is_ok() == (schema_url == "ok"),
                    "call {i}: {result:?}"
                );
            }
            println!("done");
        }
        _ => anyhow::bail!("usage: tonic_peer server | tonic_peer client PORT N"),
    }
    Ok(())
}
