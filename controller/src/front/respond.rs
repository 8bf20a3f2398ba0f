//! Phase 5: a node's answer to the client. Where the runtime speaks the client's API the
//! answer passes as it came: status, headers and every byte of the body or stream (errors
//! included, already in the client's shape). Where an Ollama client meets an OpenAI runtime,
//! or an Anthropic client a runtime without the Messages API, the answer is translated:
//! streams incrementally, errors into the client's shape.

use std::time::Instant;

use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use switchyard_protocol::RequestInfo;

use super::ClientApi;
use super::anthropic::{self, AnthropicTranslator};
use super::forward::{Dialect, Upstream};
use super::ollama::{self, NdjsonTranslator};
use super::record::RecordSink;
use super::relay::{Framing, Relayed, Shape, relay};
use super::request_info::{Api, Endpoint};
use super::responses::Learner;
use crate::http::{ResponseBody, json};

/// What the answer carries to its end: the decision record, the check of the prefix index's
/// estimate against the runtime's own cached count, and the way to continue a stream whose
/// node is lost.
#[derive(Debug)]
pub struct Afterwards {
    pub record: Option<RecordSink>,
    pub cold_check: Option<crate::prefix_index::ColdCheck>,
    /// How a streamed chat answer continues if its node is lost.
    pub continuation: Option<Box<super::continuation::Continuation>>,
}

pub async fn respond(
    front: &super::Front,
    api: Api,
    info: &RequestInfo,
    upstream: Upstream,
    started: Instant,
    afterwards: Afterwards,
    endpoint: Endpoint,
) -> Response<ResponseBody> {
    let Afterwards {
        record,
        cold_check,
        continuation,
    } = afterwards;
    let count_only = endpoint == Endpoint::CountTokens;
    let translate = api.is_ollama() && upstream.dialect == Dialect::OpenAi;
    let to_anthropic = api == Api::AnthropicMessages && !anthropic::speaks_anthropic(upstream.runtime);
    let Upstream {
        node, response, permit, ..
    } = upstream;
    let node_name = node.clone();
    let (head, body) = response.into_parts();
    let relayed = Relayed {
        metrics: front.metrics.clone(),
        closing: front.closing.clone(),
        total_timeout: front.limits.total_timeout,
        node,
        model: info.model.clone(),
        status: head.status.as_u16(),
        started,
        shape: Shape::Pass(Framing::Whole),
        record,
        learner: (endpoint == Endpoint::Responses && head.status.is_success())
            .then(|| Learner::new(front.responses.clone(), &node_name)),
        cold_check,
        continuation,
        moved_off: front.handover.watch(&node_name),
    };
    if to_anthropic {
        to_anthropic_answer(info, count_only, head.status, body, permit, relayed).await
    } else if translate {
        to_ollama(api, info, head.status, body, permit, relayed).await
    } else {
        passed_through(head, body, permit, relayed)
    }
}

/// The runtime speaks the client's API: its status, headers and body as they came (less the
/// hop's own headers).
fn passed_through(
    mut head: http::response::Parts,
    body: Incoming,
    permit: super::admission::Permit,
    mut relayed: Relayed,
) -> Response<ResponseBody> {
    for name in ["connection", "keep-alive", "transfer-encoding", "x-switchyard-runtime"] {
        head.headers.remove(name);
    }
    let framing = head
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map_or(Framing::Whole, Framing::from_content_type);
    relayed.shape = Shape::Pass(framing);
    Response::from_parts(head, relay(relayed, body, permit))
}

/// An Ollama client and an OpenAI runtime: errors and embeddings translated whole, chat and
/// generate streamed as Ollama's NDJSON (or read whole first when the client wants one object).
async fn to_ollama(
    api: Api,
    info: &RequestInfo,
    status: StatusCode,
    body: Incoming,
    permit: super::admission::Permit,
    mut relayed: Relayed,
) -> Response<ResponseBody> {
    if !status.is_success() {
        return node_refused(ClientApi::Ollama, status, body, &mut relayed).await;
    }
    if api == Api::OllamaEmbed {
        let value: Value = whole_json(body).await;
        answered_whole(&mut relayed, status);
        return json(StatusCode::OK, &ollama::from_openai_embeddings(&value, &info.model));
    }
    relayed.shape = Shape::Translated(Box::new(ollama::OllamaTranslation {
        translator: NdjsonTranslator::new(&info.model, api == Api::OllamaGenerate, relayed.started),
        stream: info.stream,
    }));
    let translated = relay(relayed, body, permit);
    if !info.stream {
        return whole_answer(ClientApi::Ollama, translated).await;
    }
    let mut response = Response::new(translated);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    response
}

/// An Anthropic client and a runtime without the Messages API: errors in Anthropic's shape,
/// the stream as Anthropic's events, or one `message` object (for `count_tokens`, the
/// prompt's tokens as the runtime counted them).
async fn to_anthropic_answer(
    info: &RequestInfo,
    count_only: bool,
    status: StatusCode,
    body: Incoming,
    permit: super::admission::Permit,
    mut relayed: Relayed,
) -> Response<ResponseBody> {
    if !status.is_success() {
        return node_refused(ClientApi::Anthropic, status, body, &mut relayed).await;
    }
    let stream = info.stream && !count_only;
    relayed.shape = Shape::Translated(Box::new(anthropic::AnthropicTranslation {
        translator: AnthropicTranslator::new(&info.model, &info.id, info.prompt_tokens),
        stream,
        count_only,
    }));
    let translated = relay(relayed, body, permit);
    if !stream {
        return whole_answer(ClientApi::Anthropic, translated).await;
    }
    let mut response = Response::new(translated);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// An answer given whole without the relay: counted and recorded here.
fn answered_whole(relayed: &mut Relayed, status: StatusCode) {
    relayed.metrics.request(&relayed.node, &relayed.model, status.as_u16());
    if let Some(record) = relayed.record.take() {
        record.finish(status.as_u16(), false);
    }
}

/// The node's error answer to a client whose API it does not speak: its message, in the
/// client's shape, with the node's status.
async fn node_refused(
    client: ClientApi,
    status: StatusCode,
    body: Incoming,
    relayed: &mut Relayed,
) -> Response<ResponseBody> {
    let message = node_error_message(body).await;
    answered_whole(relayed, status);
    client.error_body(status, "upstream_error", &message)
}

/// A translated answer the client wants whole: read it all first, so that a node that fails
/// on the way is a 502 with the client API's error, not a 200 whose body is an error.
async fn whole_answer(client: ClientApi, translated: ResponseBody) -> Response<ResponseBody> {
    let bytes = match translated.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return client.error_body(StatusCode::BAD_GATEWAY, "upstream_error", &e.to_string());
        }
    };
    let value: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let failed = value["error"].as_str().or_else(|| {
        (value["type"] == "error").then(|| value["error"]["message"].as_str().unwrap_or("the node failed"))
    });
    if let Some(message) = failed {
        return client.error_body(StatusCode::BAD_GATEWAY, "upstream_error", message);
    }
    crate::http::text(
        StatusCode::OK,
        "application/json",
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// A node's whole JSON answer (`Null` if it is not JSON).
async fn whole_json(body: Incoming) -> Value {
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or_default()
}

/// The message of a node's error answer, whatever its shape.
async fn node_error_message(body: Incoming) -> String {
    let value = whole_json(body).await;
    value["error"]["message"]
        .as_str()
        .or_else(|| value["error"].as_str())
        .or_else(|| value["detail"].as_str())
        .unwrap_or("the node refused the request")
        .to_owned()
}
