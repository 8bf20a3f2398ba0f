//! Switchyard's policies as a gateway's endpoint picker: Envoy's external processing service
//! (`ext_proc`, one gRPC stream per request), as the Gateway API Inference Extension's
//! endpoint-picker protocol uses it. Each request's headers and buffered body are decided by
//! the controller's active policy through the front door's own path
//! ([`switchyard_controller::front::pick`]: the same registry, hot swap, shadow, canary,
//! decision record and node slots); the answer names the chosen runtime's endpoint in the
//! `x-gateway-destination-endpoint` header and in `envoy.lb` dynamic metadata, rewrites
//! `model` where the node's name differs, and a refusal becomes Envoy's immediate response
//! with the front door's status and body. The response's status comes back to close the
//! decision record and free the node's slot. gRPC health (`grpc.health.v1`) says SERVING
//! while the picker runs.

mod exchange;
mod headers;

use std::sync::Arc;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{ProcessingRequest, ProcessingResponse};
use switchyard_controller::front::Front;
use switchyard_controller::front::keys::Grant;
use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// The header (and `envoy.lb` metadata key) naming the chosen endpoint, as the endpoint-picker
/// protocol defines it.
pub const DESTINATION_HEADER: &str = "x-gateway-destination-endpoint";
/// The key of the gateway's subset hint (in the `envoy.lb.subset_hint` filter metadata).
pub const SUBSET_KEY: &str = "x-gateway-destination-endpoint-subset";

/// The ext_proc service over the front door.
#[derive(Debug, Clone)]
pub struct Picker {
    front: Arc<Front>,
    /// What the gateway's requests are decided as (`[gateway]`: priority cap and weight).
    grant: Arc<Grant>,
}

impl Picker {
    pub fn new(front: Arc<Front>, grant: Grant) -> Self {
        Self {
            front,
            grant: Arc::new(grant),
        }
    }
}

#[tonic::async_trait]
impl ExternalProcessor for Picker {
    type ProcessStream = ReceiverStream<Result<ProcessingResponse, Status>>;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let (answers, stream) = tokio::sync::mpsc::channel(4);
        tokio::spawn(exchange::run(
            self.front.clone(),
            self.grant.clone(),
            request.into_inner(),
            answers,
        ));
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}

/// Serve the picker (and gRPC health) on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    front: Arc<Front>,
    grant: Grant,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<ExternalProcessorServer<Picker>>().await;
    // The endpoint-picker protocol's readiness and liveness services are the empty name.
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(ExternalProcessorServer::new(Picker::new(front, grant)))
        .serve_with_incoming_shutdown(nodelay(listener), shutdown.cancelled_owned())
        .await
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
