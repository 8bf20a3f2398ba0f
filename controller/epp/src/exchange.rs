//! One request's exchange with Envoy: its headers (answered at once unless the request has
//! no body), its buffered body (where the policy decides), its response's headers (their
//! status goes in the decision record) and the exchange's end with the request's (which
//! frees the node's slot: a streamed answer holds it to its last byte). Envoy must send the body buffered
//! (`request_body_mode: BUFFERED`); streamed bodies are refused with a clear message.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Incoming;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Answer;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeadersResponse, ImmediateResponse, ProcessingRequest,
    ProcessingResponse, TrailersResponse, body_mutation,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use switchyard_controller::front::pick::{self, Held, Picked};
use switchyard_controller::front::{Front, FrontError};
use tokio::sync::mpsc::Sender;
use tonic::{Status, Streaming};

use crate::{DESTINATION_HEADER, headers};

/// Where the stream's answers go.
type Answers = Sender<Result<ProcessingResponse, Status>>;

/// What one stream has seen so far.
#[derive(Default)]
struct Request {
    path: String,
    headers: http::HeaderMap,
    body: BytesMut,
    /// The endpoints the gateway allows (its subset hint), where it gives one.
    subset: Option<Vec<String>>,
    /// The chosen node's slot and record, once picked.
    held: Option<Held>,
    /// The response's status, once its headers passed.
    status: Option<u16>,
}

pub async fn run(front: Arc<Front>, mut inbound: Streaming<ProcessingRequest>, answers: Answers) {
    let mut request = Request::default();
    loop {
        let message = match inbound.message().await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(status) => {
                tracing::debug!("ext_proc stream ended: {status}");
                break;
            }
        };
        if let Some(subset) = headers::subset_hint(message.metadata_context.as_ref()) {
            request.subset = Some(subset);
        }
        let Some(answer) = step(&front, &mut request, message.request).await else {
            continue;
        };
        if answers.send(Ok(answer)).await.is_err() {
            break;
        }
    }
    // The exchange ends with the request (a stream's last byte included): the slot is freed
    // and the record closed with the response's status (0: the client left, or the upstream
    // failed before answering).
    if let Some(held) = request.held.take() {
        held.finish(request.status.unwrap_or(0));
    }
}

/// The answer to one message (`None` for messages that need none).
async fn step(front: &Front, request: &mut Request, message: Option<Incoming>) -> Option<ProcessingResponse> {
    match message? {
        Incoming::RequestHeaders(message) => {
            let (map, path) = headers::read(message.headers.as_ref());
            request.headers = map;
            request.path = path;
            if message.end_of_stream {
                // No body: nothing to decide a prompt on.
                let error = FrontError::BadRequest(format!(
                    "the endpoint picker decides prompts: {} came without a body",
                    request.path
                ));
                return Some(immediate(&request.path, &error).await);
            }
            Some(respond(Answer::RequestHeaders(HeadersResponse {
                response: Some(CommonResponse::default()),
            })))
        }
        Incoming::RequestBody(chunk) => {
            let limit = front.limits.max_body_bytes;
            if request.body.len() + chunk.body.len() > limit {
                return Some(immediate(&request.path, &FrontError::TooLarge(limit)).await);
            }
            request.body.extend_from_slice(&chunk.body);
            if !chunk.end_of_stream {
                let error = FrontError::BadRequest(
                    "the endpoint picker needs the whole body at once: set the ext_proc filter's \
                     request_body_mode to BUFFERED"
                        .into(),
                );
                return Some(immediate(&request.path, &error).await);
            }
            let body = std::mem::take(&mut request.body).freeze();
            let subset = request.subset.as_deref();
            Some(
                match pick::pick(front, &request.path, &request.headers, &body, subset).await {
                    Ok(picked) => picked_answer(request, picked, &body),
                    Err(error) => immediate(&request.path, &error).await,
                },
            )
        }
        Incoming::ResponseHeaders(message) => {
            // The slot stays held while the answer streams: it is freed when the exchange ends.
            request.status = Some(headers::status(message.headers.as_ref()));
            Some(respond(Answer::ResponseHeaders(HeadersResponse {
                response: Some(CommonResponse::default()),
            })))
        }
        Incoming::ResponseBody(_) => Some(respond(Answer::ResponseBody(BodyResponse {
            response: Some(CommonResponse::default()),
        }))),
        Incoming::RequestTrailers(_) => Some(respond(Answer::RequestTrailers(TrailersResponse::default()))),
        Incoming::ResponseTrailers(_) => Some(respond(Answer::ResponseTrailers(TrailersResponse::default()))),
    }
}

/// The chosen endpoint in the header and `envoy.lb` metadata, the body rewritten where the
/// node calls the model otherwise.
fn picked_answer(request: &mut Request, picked: Picked, original: &Bytes) -> ProcessingResponse {
    let mut set = vec![
        (DESTINATION_HEADER, picked.endpoint.clone()),
        ("x-switchyard-node", picked.node.clone()),
        ("x-switchyard-policy", picked.policy.clone()),
    ];
    let body_mutation = picked.body.as_ref().map(|body| {
        set.push(("content-length", body.len().to_string()));
        BodyMutation {
            mutation: Some(body_mutation::Mutation::Body(body.to_vec())),
        }
    });
    tracing::debug!(node = %picked.node, endpoint = %picked.endpoint, bytes = original.len(), "picked");
    let answer = ProcessingResponse {
        dynamic_metadata: Some(headers::metadata("envoy.lb", DESTINATION_HEADER, &picked.endpoint)),
        response: Some(Answer::RequestBody(BodyResponse {
            response: Some(CommonResponse {
                header_mutation: Some(headers::set(&set)),
                body_mutation,
                clear_route_cache: true,
                ..Default::default()
            }),
        })),
        ..Default::default()
    };
    request.held = Some(picked.held);
    answer
}

fn respond(response: Answer) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(response),
        ..Default::default()
    }
}

/// Envoy answers the client itself, as the front door would have.
async fn immediate(path: &str, error: &FrontError) -> ProcessingResponse {
    let (status, answer_headers, body) = pick::render(path, error).await;
    let pairs: Vec<(&str, String)> = answer_headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?.to_owned())))
        .collect();
    respond(Answer::ImmediateResponse(ImmediateResponse {
        status: Some(HttpStatus {
            code: i32::from(status),
        }),
        headers: Some(headers::set(&pairs)),
        body: body.to_vec(),
        details: format!("switchyard_picker_{}", error.kind()),
        ..Default::default()
    }))
}
