//! The agent's HTTP API: every `POST /v1/...` and `POST /api/...` is relayed as bytes to the
//! local runtime ([`crate::relay`]; the simulated runtime too, on its loopback server);
//! `GET /v1/models`, `GET /telemetry` (the latest sample) and `/telemetry/stream` are the
//! agent's own.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use switchyard_protocol::AgentTelemetry;
use tokio::sync::watch;

use crate::config::{AgentConfig, RuntimeKind};
use crate::driver::{DriverError, RuntimeDriver};
use crate::performance::PerformanceTracker;
use crate::relay::{RelayError, RuntimeRelay};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A response body; an error ends the answer abruptly (the HTTP/2 stream is reset), which
/// the controller turns into an explicit error for its client.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

#[derive(Debug)]
pub struct AgentApi {
    pub config: Arc<AgentConfig>,
    pub driver: Arc<dyn RuntimeDriver>,
    pub performance: Arc<PerformanceTracker>,
    pub telemetry: watch::Receiver<AgentTelemetry>,
    /// The data plane to the runtime's own server.
    relay: RuntimeRelay,
    /// The models the agent starts itself.
    models: Option<Arc<crate::models::ModelManager>>,
    /// Set by `POST /power/sleep`, cleared by `/power/wake`; telemetry reports it.
    sleeping: Arc<std::sync::atomic::AtomicBool>,
    /// The copy of the runtime's prefix cache `POST /cache/probe` answers from, and the
    /// client that has prompts tokenized.
    kv_events: Option<(Arc<crate::kv_events::KvEvents>, reqwest::Client)>,
}

fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    body.map_err(|never| match never {}).boxed_unsync()
}

fn full(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(boxed(Full::new(Bytes::from(value.to_string()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

pub(crate) fn error(status: StatusCode, kind: &str, message: impl AsRef<str>) -> Response<Body> {
    full(
        status,
        &json!({ "error": { "message": message.as_ref(), "type": kind, "code": status.as_u16() } }),
    )
}

fn driver_error(e: &DriverError) -> Response<Body> {
    let (status, kind) = e.answer();
    error(status, kind, e.to_string())
}

impl AgentApi {
    pub fn new(
        config: Arc<AgentConfig>,
        driver: Arc<dyn RuntimeDriver>,
        performance: Arc<PerformanceTracker>,
        telemetry: watch::Receiver<AgentTelemetry>,
    ) -> Result<Self, RelayError> {
        let relay = RuntimeRelay::new(&driver.base_url(), driver.clone(), performance.clone())?;
        Ok(Self {
            config,
            driver,
            performance,
            telemetry,
            relay,
            models: None,
            sleeping: Arc::default(),
            kv_events: None,
        })
    }

    /// Turn `sleeping` on `POST /power/sleep` and off on `/power/wake`.
    pub fn with_sleep_switch(mut self, sleeping: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.sleeping = sleeping;
        self
    }

    /// Answer `POST /cache/probe` from `events` (vLLM's KV-cache events).
    pub fn with_kv_events(mut self, events: Option<Arc<crate::kv_events::KvEvents>>) -> Self {
        self.kv_events = events.map(|events| {
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(2))
                .build()
                .unwrap_or_default();
            (events, client)
        });
        self
    }

    /// Serve `models`' models from their own runtimes, started on demand.
    pub fn with_models(mut self, models: Option<Arc<crate::models::ModelManager>>) -> Self {
        let shared_runtime = self.config.runtime.base_url.is_some();
        self.relay = self.relay.with_models(models.clone(), shared_runtime);
        self.models = models;
        self
    }

    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let mut response = self.route(request).await;
        let headers = response.headers_mut();
        if let Ok(node) = header::HeaderValue::from_str(&self.config.node) {
            headers.insert("x-switchyard-node", node);
        }
        headers.insert(
            "x-switchyard-runtime",
            header::HeaderValue::from_static(self.driver.kind().as_str()),
        );
        if self.driver.kind() == RuntimeKind::Simulated {
            headers.insert("x-switchyard-simulated", header::HeaderValue::from_static("true"));
        }
        response
    }

    async fn route(&self, request: Request<Incoming>) -> Response<Body> {
        let path = request.uri().path().to_owned();
        match (request.method().clone(), path.as_str()) {
            (Method::GET, "/telemetry") => {
                let sample = self.telemetry.borrow().clone();
                full(StatusCode::OK, &serde_json::to_value(sample).unwrap_or_default())
            }
            (Method::GET, "/telemetry/stream") => self.telemetry_stream(),
            (Method::POST, "/link/refused") => {
                // The controller refused this agent (e.g. its certificate names another node).
                let reason = match Limited::new(request.into_body(), 64 * 1024).collect().await {
                    Ok(body) => serde_json::from_slice::<Value>(&body.to_bytes())
                        .ok()
                        .and_then(|v| v["reason"].as_str().map(str::to_owned)),
                    Err(_) => None,
                };
                tracing::error!(
                    "the controller refused this agent: {}",
                    reason.as_deref().unwrap_or("no reason given")
                );
                full(StatusCode::OK, &json!({ "ok": true }))
            }
            (Method::GET, "/healthz") => full(StatusCode::OK, &json!({ "status": "ok", "node": self.config.node })),
            // As vLLM and SGLang answer it, so that other routers can probe the agent: 200 while
            // the runtime answers and the machine is not going to sleep, 503 with why otherwise.
            (Method::GET, "/health") => {
                let sample = self.telemetry.borrow();
                let why = if sample.power.sleeping {
                    Some("the machine is going to sleep".to_owned())
                } else {
                    match &sample.runtime {
                        Some(runtime) if runtime.healthy => None,
                        Some(runtime) => Some(
                            runtime
                                .error
                                .clone()
                                .unwrap_or_else(|| "the runtime is unhealthy".to_owned()),
                        ),
                        None => Some("no runtime".to_owned()),
                    }
                };
                match why {
                    None => full(StatusCode::OK, &json!({ "status": "ok", "node": self.config.node })),
                    Some(why) => error(StatusCode::SERVICE_UNAVAILABLE, "unhealthy", why),
                }
            }
            (Method::GET, "/v1/models") => self.models().await,
            (Method::POST, "/models/load" | "/models/unload") => self.load_or_unload(request).await,
            (Method::POST, "/cache/probe") => self.cache_probe(request).await,
            (Method::POST, "/power/sleep" | "/power/wake") => {
                let sleeping = path.ends_with("/sleep");
                self.sleeping.store(sleeping, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    sleeping,
                    "told the machine is {}",
                    if sleeping {
                        "going to sleep: no new work"
                    } else {
                        "awake"
                    }
                );
                full(
                    StatusCode::OK,
                    &json!({ "node": self.config.node, "sleeping": sleeping }),
                )
            }
            (Method::POST, path) if path.starts_with("/v1/") || path.starts_with("/api/") => {
                match self.relay.relay(request).await {
                    Ok(response) => response,
                    Err(e) => error(StatusCode::BAD_REQUEST, "invalid_request_error", e.to_string()),
                }
            }
            (method, path) => error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no endpoint {method} {path}"),
            ),
        }
    }

    /// Every telemetry sample as one NDJSON line, for as long as the client reads.
    fn telemetry_stream(&self) -> Response<Body> {
        let mut updates = self.telemetry.clone();
        let lines = async_stream::stream! {
            loop {
                let line = {
                    let sample = updates.borrow_and_update();
                    let mut line = serde_json::to_vec(&*sample).unwrap_or_default();
                    line.push(b'\n');
                    line
                };
                yield Ok::<_, Infallible>(Frame::data(Bytes::from(line)));
                if updates.changed().await.is_err() {
                    return;
                }
            }
        };
        let mut response = Response::new(boxed(StreamBody::new(lines)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/x-ndjson"),
        );
        response
    }

    /// `POST /models/load` and `/models/unload` with `{"model": NAME}` (the catalog's local or
    /// logical name): the operator's `switchyard models load|unload`.
    /// `POST /cache/probe`: the runtime's cached tokens for a request's prompt (404 where
    /// the agent keeps no copy of the runtime's cache, 409 while it is not current).
    async fn cache_probe(&self, request: Request<Incoming>) -> Response<Body> {
        use crate::kv_events::probe::{self, ProbeError, ProbeRequest};
        let Some((events, client)) = &self.kv_events else {
            return error(
                StatusCode::NOT_FOUND,
                "not_found_error",
                "this agent does not follow its runtime's KV-cache events ([runtime.kv_events])",
            );
        };
        let asked = match Limited::new(request.into_body(), 16 * 1024 * 1024).collect().await {
            Ok(body) => serde_json::from_slice::<ProbeRequest>(&body.to_bytes()),
            Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request_error", e.to_string()),
        };
        let asked = match asked {
            Ok(asked) => asked,
            Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request_error", e.to_string()),
        };
        match probe::probe(events, client, &self.driver.base_url(), &asked).await {
            Ok(answer) => full(StatusCode::OK, &json!(answer)),
            Err(e @ ProbeError::NoCopy) => error(StatusCode::CONFLICT, "cache_copy_not_current", e.to_string()),
            Err(e @ ProbeError::NoPrompt) => {
                error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request_error", e.to_string())
            }
            Err(e @ ProbeError::Tokenize(_)) => error(StatusCode::BAD_GATEWAY, "runtime_error", e.to_string()),
        }
    }

    async fn load_or_unload(&self, request: Request<Incoming>) -> Response<Body> {
        let load = request.uri().path().ends_with("/load");
        let name = match Limited::new(request.into_body(), 64 * 1024).collect().await {
            Ok(body) => serde_json::from_slice::<Value>(&body.to_bytes())
                .ok()
                .and_then(|v| v["model"].as_str().map(str::to_owned)),
            Err(_) => None,
        };
        let Some(name) = name else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "send {\"model\": NAME}",
            );
        };
        let Some(entry) = self.config.models.iter().find(|m| m.local == name || m.logical == name) else {
            return error(
                StatusCode::NOT_FOUND,
                "model_not_found",
                format!("model {name:?} is not in node {}'s catalog", self.config.node),
            );
        };
        let local = entry.local.clone();
        let outcome = match &self.models {
            Some(models) if models.manages(&local) => if load {
                models.load_now(&local).await.map(|()| "loaded")
            } else {
                models
                    .unload(&local)
                    .await
                    .map(|stopped| if stopped { "unloaded" } else { "was not loaded" })
            }
            .map_err(|e| {
                let status = match e {
                    crate::models::LoadError::Busy { .. } => StatusCode::CONFLICT,
                    crate::models::LoadError::TooLarge { .. } => StatusCode::INSUFFICIENT_STORAGE,
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                };
                error(status, "model_error", e.to_string())
            }),
            _ => {
                let done = if load {
                    self.driver.load_model(&local).await.map(|()| "loaded")
                } else {
                    self.driver.unload_model(&local).await.map(|()| "unloaded")
                };
                done.map_err(|e| driver_error(&e))
            }
        };
        match outcome {
            Ok(what) => {
                tracing::info!(model = %local, "{what} (operator)");
                full(
                    StatusCode::OK,
                    &json!({ "node": self.config.node, "model": local, "result": what }),
                )
            }
            Err(response) => response,
        }
    }

    async fn models(&self) -> Response<Body> {
        let data: Vec<Value> = self
            .config
            .models
            .iter()
            .map(|m| json!({ "id": m.local, "object": "model", "owned_by": self.config.node, "logical": m.logical }))
            .collect();
        full(StatusCode::OK, &json!({ "object": "list", "data": data }))
    }
}
