//! The front door: OpenAI-compatible (`/v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings`, `/v1/models`) and Ollama-compatible (`/api/chat`, `/api/generate`,
//! `/api/embed`, `/api/tags`, `/api/ps`, `/api/version`) endpoints. Each prompt is checked
//! (API key, size, JSON), described to the active policy, admitted to a node slot, forwarded
//! over the node's link with retries before the first byte, and relayed back. Every answer
//! names the node, the policy (`name@hash`) and the reason.

pub mod admission;
mod catalog;
pub mod forward;
pub mod keys;
pub mod metrics;
pub mod ollama;
mod relay;
pub mod request_info;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};
use switchyard_protocol::Decision;

use self::admission::{Admission, Refusal};
use self::forward::{ForwardError, FrontLimits, forward};
use self::keys::ApiKeys;
use self::metrics::FrontMetrics;
use self::relay::{Shape, relay};
use self::request_info::{Api, request_info};
use crate::app::App;
use crate::http::{ResponseBody, json, read_body, text};

/// The front door's state.
#[derive(Debug)]
pub struct Front {
    pub keys: ApiKeys,
    pub limits: FrontLimits,
    pub admission: Arc<Admission>,
    pub metrics: FrontMetrics,
    /// One line per routed request (the demo prints them).
    pub routed: tokio::sync::broadcast::Sender<String>,
    next_id: AtomicU64,
}

impl Front {
    pub fn new(keys: ApiKeys, limits: FrontLimits) -> Self {
        Self {
            admission: Admission::new(limits.queue_capacity),
            keys,
            limits,
            metrics: FrontMetrics::default(),
            routed: tokio::sync::broadcast::channel(256).0,
            next_id: AtomicU64::new(1),
        }
    }
}

/// An error in the shape of the API the client used.
fn api_error(
    api_is_ollama: bool,
    status: StatusCode,
    kind: &str,
    message: impl Into<String>,
) -> Response<ResponseBody> {
    let message = message.into();
    if api_is_ollama {
        json(status, &json!({ "error": message }))
    } else {
        crate::http::error_json(status, kind, message)
    }
}

fn with_retry_after(mut response: Response<ResponseBody>, seconds: u64) -> Response<ResponseBody> {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

fn routing_headers(response: &mut Response<ResponseBody>, node: &str, policy: &str, reason: &str) {
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-switchyard-node", node),
        ("x-switchyard-policy", policy),
        ("x-switchyard-reason", reason),
    ] {
        let clean: String = value
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
            .take(200)
            .collect();
        if let Ok(value) = HeaderValue::from_str(&clean) {
            headers.insert(name, value);
        }
    }
}

/// A node's whole JSON answer (`Null` if it is not JSON).
async fn body_json(response: Response<Incoming>) -> Value {
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or_default()
}

/// Route a front-door request; `None` if the path is not the front door's.
pub async fn handle(app: Arc<App>, request: Request<Incoming>) -> Option<Response<ResponseBody>> {
    let api = match (request.method(), request.uri().path()) {
        (&Method::POST, "/v1/chat/completions") => Api::OpenAiChat,
        (&Method::POST, "/v1/completions") => Api::OpenAiCompletions,
        (&Method::POST, "/v1/embeddings") => Api::OpenAiEmbeddings,
        (&Method::POST, "/api/chat") => Api::OllamaChat,
        (&Method::POST, "/api/generate") => Api::OllamaGenerate,
        (&Method::POST, "/api/embed") => Api::OllamaEmbed,
        (&Method::GET, "/v1/models") => return Some(catalog::openai_models(&app, request.headers())),
        (&Method::GET, "/api/tags") => return Some(catalog::ollama_tags(&app, request.headers())),
        (&Method::GET, "/api/ps") => return Some(catalog::ollama_ps(&app, request.headers())),
        (&Method::GET | &Method::HEAD, "/api/version") => {
            return Some(json(StatusCode::OK, &json!({ "version": "0.12.6" })));
        }
        (&Method::GET | &Method::HEAD, "/") => {
            return Some(text(StatusCode::OK, "text/plain", "Switchyard is running".to_owned()));
        }
        _ => return None,
    };
    Some(prompt(app, api, request).await)
}

async fn prompt(app: Arc<App>, api: Api, request: Request<Incoming>) -> Response<ResponseBody> {
    let started = Instant::now();
    let ollama = api.is_ollama();
    let (parts, body) = request.into_parts();
    let grant = match app.front.keys.check(&parts.headers) {
        Ok(grant) => grant,
        Err(message) => return api_error(ollama, StatusCode::UNAUTHORIZED, "authentication_error", message),
    };
    let body = match read_body(body, app.front.limits.max_body_bytes).await {
        Ok(body) => body,
        Err(reply) if ollama => {
            let status = reply.status();
            let message = reply
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let message: Value = serde_json::from_slice(&message).unwrap_or_default();
            return api_error(
                true,
                status,
                "",
                message["error"]["message"].as_str().unwrap_or("bad request body"),
            );
        }
        Err(reply) => return reply,
    };
    let body: Value = match serde_json::from_slice(&body) {
        Ok(value @ Value::Object(_)) => value,
        Ok(_) => {
            return api_error(
                ollama,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "the request body must be a JSON object",
            );
        }
        Err(e) => {
            return api_error(
                ollama,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("malformed JSON in the request body: {e}"),
            );
        }
    };
    let id = format!("req-{}", app.front.next_id.fetch_add(1, Ordering::Relaxed));
    let info = match request_info(api, &id, &parts.headers, &body, &grant) {
        Ok(info) => info,
        Err(message) => return api_error(ollama, StatusCode::BAD_REQUEST, "invalid_request_error", message),
    };
    if !grant.allows(&info.model) {
        return api_error(
            ollama,
            StatusCode::FORBIDDEN,
            "permission_error",
            format!("API key '{}' may not use model '{}'", grant.name, info.model),
        );
    }

    let decided = Instant::now();
    let routed = app.engine.decide_prepared(&info, &app.nodes.prepared());
    app.front.metrics.decision.observe(decided.elapsed());
    let policy = routed.policy_id.to_string();
    let route = match routed.decision {
        Decision::Reject(reject) => {
            let status = StatusCode::from_u16(reject.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let kind = if status == StatusCode::NOT_FOUND {
                "model_not_found"
            } else {
                "unavailable"
            };
            app.front.metrics.request("none", &info.model, status.as_u16());
            let mut response = api_error(ollama, status, kind, reject.message);
            routing_headers(&mut response, "none", &policy, "rejected by the policy");
            if status == StatusCode::SERVICE_UNAVAILABLE {
                response = with_retry_after(response, 5);
            }
            return response;
        }
        Decision::Route(route) => route,
    };

    let (path, shape) = match api {
        Api::OpenAiChat => ("/v1/chat/completions", Shape::Pass { sse: info.stream }),
        Api::OpenAiCompletions => ("/v1/completions", Shape::Pass { sse: info.stream }),
        Api::OpenAiEmbeddings | Api::OllamaEmbed => ("/v1/embeddings", Shape::Pass { sse: false }),
        Api::OllamaChat | Api::OllamaGenerate => (
            "/v1/chat/completions",
            Shape::Ollama {
                translator: Box::new(ollama::NdjsonTranslator::new(
                    &info.model,
                    api == Api::OllamaGenerate,
                    started,
                )),
                stream: info.stream,
            },
        ),
    };
    let body_for = |local: &str| -> Bytes {
        let value = match api {
            Api::OllamaChat => ollama::to_openai_chat(&body, local, false),
            Api::OllamaGenerate => ollama::to_openai_chat(&body, local, true),
            Api::OllamaEmbed => ollama::to_openai_embeddings(&body, local),
            _ => {
                let mut value = body.clone();
                value["model"] = Value::String(local.to_owned());
                value
            }
        };
        Bytes::from(value.to_string())
    };
    let refused = |status: StatusCode, kind: &str, message: String, retry_after: u64| {
        app.front.metrics.request("none", &info.model, status.as_u16());
        with_retry_after(api_error(ollama, status, kind, message), retry_after)
    };
    let upstream = match forward(&app, &route.targets, path, info.priority, body_for).await {
        Ok(upstream) => upstream,
        Err(ForwardError::Refused(refusal @ Refusal::QueueFull(_))) => {
            return refused(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                refusal.to_string(),
                2,
            );
        }
        Err(ForwardError::Refused(refusal)) => {
            return refused(StatusCode::SERVICE_UNAVAILABLE, "unavailable", refusal.to_string(), 5);
        }
        Err(ForwardError::Exhausted(last)) => {
            let message = format!("no node could serve the request: {last}");
            return refused(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message, 5);
        }
    };
    let node = upstream.node.clone();
    let status = upstream.response.status();
    tracing::info!(request = %id, %node, model = %info.model, task = info.task.as_deref().unwrap_or("-"), %policy, reason = %route.reason, retries = upstream.retries, "routed");
    // The line is for the demo's live log: build it only when someone is listening.
    if app.front.routed.receiver_count() > 0 {
        let _ = app.front.routed.send(format!(
            "{id} {} {} -> {node} ({}) task={} by {policy}: {}{}",
            api.as_str(),
            info.model,
            upstream.local_model,
            info.task.as_deref().unwrap_or("-"),
            route.reason,
            if upstream.retries > 0 {
                format!(" [{} retries]", upstream.retries)
            } else {
                String::new()
            }
        ));
    }

    let mut response = if !status.is_success() {
        // The node refused (e.g. 400, 404): its message, in the client's API shape.
        let value = body_json(upstream.response).await;
        let message = value["error"]["message"]
            .as_str()
            .or_else(|| value["error"].as_str())
            .unwrap_or("the node refused the request");
        app.front.metrics.request(&node, &info.model, status.as_u16());
        api_error(ollama, status, "upstream_error", message)
    } else if api == Api::OllamaEmbed {
        let value = body_json(upstream.response).await;
        app.front.metrics.request(&node, &info.model, 200);
        json(StatusCode::OK, &ollama::from_openai_embeddings(&value, &info.model))
    } else {
        let content_type = match &shape {
            Shape::Ollama { stream: true, .. } => HeaderValue::from_static("application/x-ndjson"),
            Shape::Ollama { stream: false, .. } => HeaderValue::from_static("application/json"),
            Shape::Pass { .. } => upstream
                .response
                .headers()
                .get(header::CONTENT_TYPE)
                .cloned()
                .unwrap_or(HeaderValue::from_static("application/json")),
        };
        let body = relay(app.clone(), upstream, info.model.clone(), shape, started);
        let mut response = Response::new(body);
        response.headers_mut().insert(header::CONTENT_TYPE, content_type);
        response
    };
    routing_headers(&mut response, &node, &policy, &route.reason);
    response
}
