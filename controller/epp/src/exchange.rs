//! One request's exchange with Envoy: its headers, its body (where the policy decides), its
//! response's headers (their status goes in the decision record) and the exchange's end with
//! the request's (which frees the node's slot: a streamed answer holds it to its last byte).
//! Two body modes, as Envoy's `request_body_mode` says in the first message:
//! - `BUFFERED`: headers are answered at once; the whole body comes in one message, answered
//!   with the pick (and the body rewritten where the node names the model otherwise);
//! - `FULL_DUPLEX_STREAMED` (the Gateway API Inference Extension's mode): body chunks arrive
//!   without waiting for answers; the picker holds its answer to the headers until the body
//!   has ended (its last chunk, or trailers), then answers the headers with the pick and sends
//!   the body back in chunks of at most 64 KiB, as that mode requires.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Incoming;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Answer;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeadersResponse, ImmediateResponse, ProcessingRequest,
    ProcessingResponse, StreamedBodyResponse, TrailersResponse, body_mutation,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use switchyard_controller::front::keys::Grant;
use switchyard_controller::front::pick::{self, Held, Picked};
use switchyard_controller::front::{Front, FrontError};
use tokio::sync::mpsc::Sender;
use tonic::{Status, Streaming};

use crate::{DESTINATION_HEADER, headers};

/// Where the stream's answers go.
type Answers = Sender<Result<ProcessingResponse, Status>>;

/// Envoy's `FULL_DUPLEX_STREAMED` body mode (`ProcessingMode.BodySendMode`).
const FULL_DUPLEX_STREAMED: i32 = 4;
/// The largest body chunk sent back in full-duplex mode (Envoy's recommendation).
const CHUNK: usize = 64 * 1024;

/// What one stream has seen so far.
#[derive(Default)]
struct Request {
    path: String,
    headers: http::HeaderMap,
    body: BytesMut,
    /// Envoy streams the body full duplex: the headers' answer waits for the body's end.
    duplex: bool,
    /// The body ended and the pick was answered (so trailers only need their own answer).
    decided: bool,
    /// The endpoints the gateway allows (its subset hint), where it gives one.
    subset: Option<Vec<String>>,
    /// The chosen node's slot and record, once picked.
    held: Option<Held>,
    /// The response's status, once its headers passed.
    status: Option<u16>,
}

pub async fn run(front: Arc<Front>, grant: Arc<Grant>, mut inbound: Streaming<ProcessingRequest>, answers: Answers) {
    let mut request = Request::default();
    'exchange: loop {
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
        if let Some(config) = &message.protocol_config {
            request.duplex = config.request_body_mode == FULL_DUPLEX_STREAMED;
        }
        for answer in step(&front, &grant, &mut request, message.request).await {
            if answers.send(Ok(answer)).await.is_err() {
                break 'exchange;
            }
        }
    }
    // The exchange ends with the request (a stream's last byte included): the slot is freed
    // and the record closed with the response's status (0: the client left, or the upstream
    // failed before answering).
    if let Some(held) = request.held.take() {
        held.finish(request.status.unwrap_or(0));
    }
}

/// The answers to one message (none for a full-duplex message that waits for more).
async fn step(
    front: &Front,
    grant: &Grant,
    request: &mut Request,
    message: Option<Incoming>,
) -> Vec<ProcessingResponse> {
    let Some(message) = message else {
        return Vec::new();
    };
    match message {
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
                return vec![immediate(&request.path, &error).await];
            }
            if request.duplex {
                return Vec::new();
            }
            vec![respond(Answer::RequestHeaders(HeadersResponse {
                response: Some(CommonResponse::default()),
            }))]
        }
        Incoming::RequestBody(chunk) => {
            let limit = front.limits.max_body_bytes;
            if request.body.len() + chunk.body.len() > limit {
                return vec![immediate(&request.path, &FrontError::TooLarge(limit)).await];
            }
            request.body.extend_from_slice(&chunk.body);
            match (chunk.end_of_stream, request.duplex) {
                (true, _) => decide(front, grant, request).await,
                (false, true) => Vec::new(),
                (false, false) => {
                    let error = FrontError::BadRequest(
                        "the endpoint picker needs the whole body: set the ext_proc filter's request_body_mode \
                         to BUFFERED or FULL_DUPLEX_STREAMED"
                            .into(),
                    );
                    vec![immediate(&request.path, &error).await]
                }
            }
        }
        Incoming::RequestTrailers(_) => {
            // In full-duplex mode, trailers (where the client sends any) end the body.
            let mut answers = if request.duplex && !request.decided {
                decide(front, grant, request).await
            } else {
                Vec::new()
            };
            answers.push(respond(Answer::RequestTrailers(TrailersResponse::default())));
            answers
        }
        Incoming::ResponseHeaders(message) => {
            // The slot stays held while the answer streams: it is freed when the exchange ends.
            request.status = Some(headers::status(message.headers.as_ref()));
            vec![respond(Answer::ResponseHeaders(HeadersResponse {
                response: Some(CommonResponse::default()),
            }))]
        }
        Incoming::ResponseBody(_) => vec![respond(Answer::ResponseBody(BodyResponse {
            response: Some(CommonResponse::default()),
        }))],
        Incoming::ResponseTrailers(_) => vec![respond(Answer::ResponseTrailers(TrailersResponse::default()))],
    }
}

/// The body has ended: the policy decides, and the answers say where (or why not).
async fn decide(front: &Front, grant: &Grant, request: &mut Request) -> Vec<ProcessingResponse> {
    request.decided = true;
    let body = std::mem::take(&mut request.body).freeze();
    match pick::pick(
        front,
        grant,
        &request.path,
        &request.headers,
        &body,
        request.subset.as_deref(),
    )
    .await
    {
        Ok(picked) => picked_answers(request, picked, body),
        Err(error) => vec![immediate(&request.path, &error).await],
    }
}

/// The chosen endpoint in the header and `envoy.lb` metadata, the body rewritten where the
/// node calls the model otherwise; in full-duplex mode the headers' answer and then the body.
fn picked_answers(request: &mut Request, picked: Picked, original: Bytes) -> Vec<ProcessingResponse> {
    let mut set = vec![
        (DESTINATION_HEADER, picked.endpoint.clone()),
        ("x-switchyard-node", picked.node.clone()),
        ("x-switchyard-policy", picked.policy.clone()),
    ];
    tracing::debug!(node = %picked.node, endpoint = %picked.endpoint, bytes = original.len(), "picked");
    let metadata = Some(headers::metadata("envoy.lb", DESTINATION_HEADER, &picked.endpoint));
    let rewritten = picked.body.clone();
    request.held = Some(picked.held);
    if request.duplex {
        // Envoy drops the content length itself in this mode; the body must come back whole.
        let headers = ProcessingResponse {
            dynamic_metadata: metadata,
            response: Some(Answer::RequestHeaders(HeadersResponse {
                response: Some(CommonResponse {
                    header_mutation: Some(headers::set(&set)),
                    clear_route_cache: true,
                    ..Default::default()
                }),
            })),
            ..Default::default()
        };
        let body = rewritten.unwrap_or(original);
        let chunks: Vec<&[u8]> = if body.is_empty() {
            vec![&[][..]]
        } else {
            body.chunks(CHUNK).collect()
        };
        let last = chunks.len() - 1;
        let mut answers = vec![headers];
        answers.extend(chunks.into_iter().enumerate().map(|(i, chunk)| {
            respond(Answer::RequestBody(BodyResponse {
                response: Some(CommonResponse {
                    body_mutation: Some(BodyMutation {
                        mutation: Some(body_mutation::Mutation::StreamedResponse(StreamedBodyResponse {
                            body: chunk.to_vec(),
                            end_of_stream: i == last,
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                }),
            }))
        }));
        return answers;
    }
    let body_mutation = rewritten.map(|body| {
        set.push(("content-length", body.len().to_string()));
        BodyMutation {
            mutation: Some(body_mutation::Mutation::Body(body.to_vec())),
        }
    });
    vec![ProcessingResponse {
        dynamic_metadata: metadata,
        response: Some(Answer::RequestBody(BodyResponse {
            response: Some(CommonResponse {
                header_mutation: Some(headers::set(&set)),
                body_mutation,
                clear_route_cache: true,
                ..Default::default()
            }),
        })),
        ..Default::default()
    }]
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
