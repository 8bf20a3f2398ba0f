//! The simulated runtime's own HTTP server on loopback: OpenAI's `/v1/chat/completions`,
//! `/v1/completions`, `/v1/embeddings` and `/v1/models`, streams as SSE ending in
//! `data: [DONE]`; and the Responses API (`/v1/responses`, stored, with
//! `previous_response_id`; streams end with `response.completed`). The agent relays to it exactly as to vLLM or llama.cpp's server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::Simulator;
use super::openai::{self as shapes, ChatBody, CompletionBody, EmbeddingBody, Kind};
use super::responses::{self, ResponsesRequest};
use crate::driver::{DriverError, Event, EventStream};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body the simulated runtime accepts.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Serve `simulator` on a fresh loopback port; the address it listens on.
pub async fn start(simulator: Arc<Simulator>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let address = listener.local_addr()?;
    tokio::spawn(serve(listener, simulator));
    Ok(address)
}

async fn serve(listener: TcpListener, simulator: Arc<Simulator>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("the simulated runtime's accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let simulator = simulator.clone();
        let service = hyper::service::service_fn(move |request| {
            let simulator = simulator.clone();
            async move { Ok::<_, Infallible>(handle(simulator, request).await) }
        });
        tokio::spawn(async move {
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("a connection to the simulated runtime ended: {e}");
            }
        });
    }
}

async fn handle(simulator: Arc<Simulator>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    match (request.method().clone(), path.as_str()) {
        (Method::GET, "/health") => full(StatusCode::OK, &json!({ "status": "ok" })),
        (Method::GET, "/v1/models") => {
            let data: Vec<Value> = simulator
                .models()
                .iter()
                .map(|m| json!({ "id": m, "object": "model", "owned_by": "simulated" }))
                .collect();
            full(StatusCode::OK, &json!({ "object": "list", "data": data }))
        }
        (Method::POST, "/v1/chat/completions") => match read_json::<ChatBody>(request).await {
            Ok(body) => {
                let generation = simulator.chat(&body.request());
                generation_reply(Kind::Chat, &body.model, body.stream, generation).await
            }
            Err(reply) => reply,
        },
        (Method::POST, "/v1/completions") => match read_json::<CompletionBody>(request).await {
            Ok(body) => {
                let completion = body.request();
                let generation = simulator.generate(&completion.model, &completion.prompt, &completion.sampling);
                generation_reply(Kind::Completion, &body.model, body.stream, generation).await
            }
            Err(reply) => reply,
        },
        (Method::POST, "/v1/responses") => match read_json::<Value>(request).await {
            Ok(body) => responses_reply(simulator, &body).await,
            Err(reply) => reply,
        },
        (Method::POST, "/v1/embeddings") => match read_json::<EmbeddingBody>(request).await {
            Ok(body) => {
                let embed = body.request();
                match simulator.embed(&embed.model, &embed.input) {
                    Ok(vectors) => {
                        let data: Vec<Value> = vectors
                            .into_iter()
                            .enumerate()
                            .map(|(index, embedding)| json!({ "object": "embedding", "index": index, "embedding": embedding }))
                            .collect();
                        full(
                            StatusCode::OK,
                            &json!({ "object": "list", "model": body.model, "data": data }),
                        )
                    }
                    Err(e) => driver_error(&e),
                }
            }
            Err(reply) => reply,
        },
        (method, path) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the simulated runtime has no endpoint {method} {path}"),
        ),
    }
}

async fn generation_reply(
    kind: Kind,
    model: &str,
    stream: bool,
    generation: Result<EventStream, DriverError>,
) -> Response<Body> {
    let events = match generation {
        Ok(events) => events,
        Err(e) => return driver_error(&e),
    };
    let id = request_id(if kind == Kind::Chat { "chatcmpl" } else { "cmpl" });
    let created = now_secs();
    if !stream {
        return match crate::driver::collect(events).await {
            Ok((text, finish, usage)) => full(
                StatusCode::OK,
                &shapes::whole_reply(kind, &id, created, model, &text, &finish, usage),
            ),
            Err(e) => driver_error(&e),
        };
    }
    let model = model.to_owned();
    let frames = events
        .map(move |event| {
            let text = match event {
                Ok(Event::Delta(delta)) => sse(&shapes::chunk(kind, &id, created, &model, Some(&delta), None)),
                Ok(Event::Done { finish_reason, usage }) => {
                    let mut last = shapes::chunk(kind, &id, created, &model, None, Some(&finish_reason));
                    last["usage"] = shapes::usage_json(usage);
                    format!("{}data: [DONE]\n\n", sse(&last))
                }
                Err(e) => sse(&shapes::error_body(&e.to_string(), "runtime_error", e.status())),
            };
            Ok::<_, Infallible>(Frame::data(Bytes::from(text)))
        })
        .boxed();
    let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    response
}

/// `POST /v1/responses`: the stored conversation it continues, then its input.
async fn responses_reply(simulator: Arc<Simulator>, body: &Value) -> Response<Body> {
    let request = match ResponsesRequest::parse(body) {
        Ok(request) => request,
        Err(message) => return error(StatusCode::BAD_REQUEST, "invalid_request_error", message),
    };
    let prompt = match simulator.responses.prompt(&request) {
        Ok(prompt) => prompt,
        Err(message) => return full(StatusCode::NOT_FOUND, &responses::not_found(&message)),
    };
    let sampling = crate::driver::Sampling {
        max_tokens: request.max_output_tokens,
        ..Default::default()
    };
    let events = match simulator.generate(&request.model, &prompt, &sampling) {
        Ok(events) => events,
        Err(e) => return driver_error(&e),
    };
    let id = simulator.responses.store(simulator.profile().name, prompt);
    let model = request.model.clone();
    if !request.stream {
        return match crate::driver::collect(events).await {
            Ok((text, _, usage)) => {
                simulator.responses.finish(&id, &text);
                let object = responses::response_object(
                    &id,
                    &model,
                    "completed",
                    &text,
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    usage.cached_tokens,
                );
                full(StatusCode::OK, &object)
            }
            Err(e) => driver_error(&e),
        };
    }
    let created = responses::response_object(&id, &model, "in_progress", "", 0, 0, 0);
    let mut text = String::new();
    let frames = async_stream::stream! {
        yield Ok::<_, Infallible>(Frame::data(Bytes::from(named_sse("response.created", &json!({ "type": "response.created", "response": created })))));
        let mut events = events;
        while let Some(event) = events.next().await {
            let chunk = match event {
                Ok(Event::Delta(delta)) => {
                    text.push_str(&delta);
                    named_sse("response.output_text.delta", &json!({
                        "type": "response.output_text.delta", "item_id": format!("msg_{id}"),
                        "output_index": 0, "content_index": 0, "delta": delta,
                    }))
                }
                Ok(Event::Done { usage, .. }) => {
                    let done = responses::response_object(&id, &model, "completed", &text, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens);
                    named_sse("response.completed", &json!({ "type": "response.completed", "response": done }))
                }
                Err(e) => named_sse("error", &json!({ "type": "error", "message": e.to_string() })),
            };
            yield Ok(Frame::data(Bytes::from(chunk)));
        }
        simulator.responses.finish(&id, &text);
    };
    let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    response
}

fn named_sse(name: &str, value: &Value) -> String {
    format!("event: {name}\ndata: {value}\n\n")
}

fn sse(value: &Value) -> String {
    format!("data: {value}\n\n")
}

fn full(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, kind: &str, message: impl AsRef<str>) -> Response<Body> {
    full(status, &shapes::error_body(message.as_ref(), kind, status.as_u16()))
}

fn driver_error(e: &DriverError) -> Response<Body> {
    let (status, kind) = e.answer();
    error(status, kind, e.to_string())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn request_id(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{nanos:x}")
}

async fn read_json<T: serde::de::DeserializeOwned>(request: Request<Incoming>) -> Result<T, Response<Body>> {
    let body = match Limited::new(request.into_body(), BODY_LIMIT).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                format!("request body is over {BODY_LIMIT} bytes"),
            ));
        }
        Err(e) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("cannot read the body: {e}"),
            ));
        }
    };
    serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("invalid JSON body: {e}"),
        )
    })
}
