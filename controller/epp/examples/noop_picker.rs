//! A no-op endpoint picker, for measuring what picking costs (tests/bench/picker.sh): the
//! same ext_proc exchange as Switchyard's picker (headers, buffered body, response headers)
//! over the same gRPC stack, answering the endpoints given on the command line in turn with
//! no decision at all.
//!
//! `noop_picker HOST:PORT...` prints `listening on ADDRESS` and serves until killed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Incoming;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Answer;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, ProcessingRequest, ProcessingResponse,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

#[derive(Debug, Clone)]
struct Noop {
    endpoints: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
}

fn answer(response: Answer) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(response),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl ExternalProcessor for Noop {
    type ProcessStream = ReceiverStream<Result<ProcessingResponse, Status>>;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut inbound = request.into_inner();
        let this = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                let reply = match message.request {
                    Some(Incoming::RequestHeaders(_)) => answer(Answer::RequestHeaders(HeadersResponse {
                        response: Some(CommonResponse::default()),
                    })),
                    Some(Incoming::RequestBody(_)) => {
                        let i = this.next.fetch_add(1, Ordering::Relaxed) % this.endpoints.len();
                        let header = HeaderValueOption {
                            header: Some(HeaderValue {
                                key: "x-gateway-destination-endpoint".into(),
                                raw_value: this.endpoints[i].clone().into_bytes(),
                                ..Default::default()
                            }),
                            append_action: 2,
                            ..Default::default()
                        };
                        answer(Answer::RequestBody(BodyResponse {
                            response: Some(CommonResponse {
                                header_mutation: Some(HeaderMutation {
                                    set_headers: vec![header],
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }),
                        }))
                    }
                    Some(Incoming::ResponseHeaders(_)) => answer(Answer::ResponseHeaders(HeadersResponse {
                        response: Some(CommonResponse::default()),
                    })),
                    _ => continue,
                };
                if tx.send(Ok(reply)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints: Vec<String> = std::env::args().skip(1).collect();
    if endpoints.is_empty() {
        return Err("usage: noop_picker HOST:PORT...".into());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    eprintln!("listening on {}", listener.local_addr()?);
    let service = Noop {
        endpoints: Arc::new(endpoints),
        next: Arc::default(),
    };
    tonic::transport::Server::builder()
        .add_service(ExternalProcessorServer::new(service))
        .serve_with_incoming(nodelay(listener))
        .await?;
    Ok(())
}

/// Accepted connections with `TCP_NODELAY`: each answer of the exchange is one small gRPC
/// frame, which Nagle's algorithm would hold back until Envoy's delayed ACK (~40 ms).
fn nodelay(listener: TcpListener) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}
