//! The front door: OpenAI's API (any `POST /v1/...` whose JSON body names a `model`, plus
//! `GET /v1/models`) and Ollama's (`/api/chat`, `/api/generate`, `/api/embed`, `/api/tags`,
//! `/api/ps`, `/api/version`). A prompt goes through five phases, each a plain function over
//! what it needs: authenticate, parse, decide, send (admission and the node's link, see
//! [`forward`]) and respond (see [`respond`]). Switchyard decides where a request goes, never
//! what it is: a runtime that speaks the client's API receives the client's bytes with only
//! `model` rewritten, and its answer comes back as it was sent. Every answer names the node,
//! the policy (`name@hash`) and the reason; every failure is a [`FrontError`] rendered in one
//! place, in the client's API shape.

pub mod admission;
pub mod anthropic;
mod cache_probe;
mod catalog;
mod clip;
pub mod continuation;
pub mod error;
mod feasible;
pub mod forward;
mod grant;
pub mod handover;
pub mod key_share;
pub mod keyless;
pub mod keys;
mod log_safe;
pub mod metrics;
pub mod model_field;
pub mod ollama;
pub mod pick;
#[cfg(test)]
mod properties;
mod record;
mod relay;
pub mod request_info;
mod respond;
pub mod responses;
pub mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};
use switchyard_protocol::{Decision, NodeSnapshot, RequestInfo, Route};

use self::admission::Admission;
pub use self::error::{ClientApi, FrontError};
use self::forward::{Dialect, Dispatch, FrontLimits, Outbound, forward};
use self::keys::{ApiKeys, Grant};
use self::log_safe::log_safe;
use self::metrics::FrontMetrics;
use self::request_info::{Api, Endpoint, request_info};
use crate::decisions::DecisionStore;
use crate::http::{ResponseBody, json, text};
use crate::node_table::NodeTable;
use crate::policy::{PolicyEngine, PreparedSnapshot};
use crate::prefix_index::{PrefixIndex, PromptChain};

/// The front door: its own state and the handles it uses (the policy engine, the node
/// table, the decision record), handed to it by the composition root (`app.rs`).
#[derive(Debug)]
pub struct Front {
    pub engine: PolicyEngine,
    pub nodes: Arc<NodeTable>,
    /// The decision record, when kept.
    pub decisions: Option<Arc<DecisionStore>>,
    pub keys: ApiKeys,
    pub limits: FrontLimits,
    pub admission: Arc<Admission>,
    pub metrics: Arc<FrontMetrics>,
    /// One line per routed request (the demo prints them).
    pub routed: tokio::sync::broadcast::Sender<String>,
    /// Cancelled when the shutdown grace is about to end: answers still running end with an
    /// explicit error.
    pub closing: tokio_util::sync::CancellationToken,
    /// Which node holds which prompt prefixes: the requests' cache estimates.
    pub prefixes: Arc<PrefixIndex>,
    /// Which node produced each Responses API response (for `previous_response_id`).
    pub responses: Arc<responses::ResponseOrigins>,
    /// Answers to move off a node that is going away (a drain's deadline).
    pub handover: Arc<handover::Handover>,
    next_id: AtomicU64,
}

impl Front {
    pub fn new(
        engine: PolicyEngine,
        nodes: Arc<NodeTable>,
        decisions: Option<Arc<DecisionStore>>,
        keys: ApiKeys,
        limits: FrontLimits,
    ) -> Self {
        Self {
            engine,
            nodes,
            decisions,
            admission: Admission::new(limits.queue_capacity),
            keys,
            limits,
            metrics: Arc::new(FrontMetrics::default()),
            routed: tokio::sync::broadcast::channel(256).0,
            closing: tokio_util::sync::CancellationToken::new(),
            prefixes: Arc::default(),
            responses: Arc::default(),
            handover: Arc::default(),
            next_id: AtomicU64::new(1),
        }
    }
}

/// Route a front-door request; `None` if the path is not the front door's.
pub async fn handle(front: Arc<Front>, request: Request<Incoming>) -> Option<Response<ResponseBody>> {
    let api = match (request.method(), request.uri().path()) {
        (&Method::GET, "/v1/models") => return Some(catalog::openai_models(&front, &request)),
        (&Method::GET, "/api/tags") => return Some(catalog::ollama_tags(&front, &request)),
        (&Method::GET, "/api/ps") => return Some(catalog::ollama_ps(&front, &request)),
        (&Method::GET | &Method::HEAD, "/api/version") => {
            return Some(json(StatusCode::OK, &json!({ "version": "0.12.6" })));
        }
        (&Method::GET | &Method::HEAD, "/") => {
            return Some(text(StatusCode::OK, "text/plain", "Switchyard is running".to_owned()));
        }
        (&Method::POST, path) => Api::from_path(path)?,
        _ => return None,
    };
    let started = Instant::now();
    let client = request_info::client_api(api);
    let mut outcome = Outcome {
        arrived_ms: crate::clock::now_ms(),
        ..Outcome::default()
    };
    let response = match prompt(&front, api, request, started, &mut outcome).await {
        Ok(response) => response,
        Err(error) => {
            outcome.refused(&front, &error);
            let mut response = client.render(&error);
            if let Some(policy) = &outcome.policy {
                routing_headers(
                    response.headers_mut(),
                    outcome.node.as_deref().unwrap_or("none"),
                    policy,
                    outcome.reason.as_deref().unwrap_or("-"),
                );
            }
            response
        }
    };
    Some(response)
}

/// What is known about a prompt when it ends early: for its error's headers and metrics.
#[derive(Debug)]
struct Outcome {
    policy: Option<String>,
    reason: Option<String>,
    node: Option<String>,
    /// The metrics label: the logical model once a node was chosen for it, `-` before (a
    /// client's arbitrary model name never becomes a label).
    model_label: String,
    /// When the request arrived, ms since the epoch.
    arrived_ms: u64,
    /// The decision record's draft, once the policy decided (when a record is kept).
    record: Option<record::RecordSink>,
    /// Whether the deciding policy lets a stream continue on another node.
    policy_continues: bool,
}

impl Outcome {
    /// The request ends refused: its record (if a policy decided) and its count in `/metrics`.
    fn refused(&mut self, front: &Front, error: &FrontError) {
        let status = error.status().as_u16();
        if let Some(mut sink) = self.record.take() {
            sink.outcome().node = self.node.clone();
            sink.finish(status, false);
        }
        front
            .metrics
            .request(self.node.as_deref().unwrap_or("none"), &self.model_label, status);
    }
}

impl Default for Outcome {
    fn default() -> Self {
        Self {
            policy: None,
            reason: None,
            node: None,
            model_label: "-".to_owned(),
            arrived_ms: 0,
            record: None,
            policy_continues: true,
        }
    }
}

async fn prompt(
    front: &Arc<Front>,
    api: Api,
    request: Request<Incoming>,
    started: Instant,
    outcome: &mut Outcome,
) -> Result<Response<ResponseBody>, FrontError> {
    let (parts, body) = request.into_parts();
    let grant = authenticate(&front.keys, &parts, request_info::client_api(api))?;
    // The key's share: counted from here (queueing included) to the answer's last byte.
    let key_slot = front.keys.enter(&grant).map_err(|full| FrontError::KeyBusy {
        key: grant.name.clone(),
        limit: full.limit,
    })?;
    let patience = front.limits.body_read_timeout;
    let body = tokio::time::timeout(
        patience,
        crate::http::read_body_limited(body, front.limits.max_body_bytes),
    )
    .await
    .map_err(|_| FrontError::BodyTimeout(patience))?
    .map_err(|e| match e {
        crate::http::BodyError::TooLarge(limit) => FrontError::TooLarge(limit),
        crate::http::BodyError::Read(message) => FrontError::BadRequest(message),
    })?;
    let id = format!("req-{}", front.next_id.fetch_add(1, Ordering::Relaxed));
    let (mut info, value) = parse(api, &id, &parts.headers, &body, &grant)?;
    // The key's token budget: the prompt (estimated) and the answer it may take, until the
    // answer says what it used.
    let reserve = u64::from(info.prompt_tokens) + info.max_tokens.map_or(key_share::DEFAULT_RESERVED_ANSWER, u64::from);
    let charge = front
        .keys
        .charge(&grant, reserve)
        .map_err(|over| FrontError::OverBudget {
            key: grant.name.clone(),
            per_minute: over.per_minute,
            asked: over.asked,
            retry_after_s: over.retry_after_s,
            advice: if over.asked > over.per_minute {
                "it can never fit: send a smaller prompt or max_tokens, or ask for a larger budget"
            } else {
                "send it again after Retry-After"
            },
        })?;

    // The node table of this moment: what the policy decides on, the links the request is
    // sent over, and the energy it is estimated with.
    let view = front.nodes.published();
    feasible::check(view.snapshot(), &info)?;
    let endpoint = Endpoint::of(parts.uri.path());
    // Only what prefills a prompt fills a cache (not embeddings, nor counting tokens).
    let chain = match (api, endpoint) {
        (Api::OpenAiEmbeddings | Api::OllamaEmbed, _) | (_, Endpoint::CountTokens) => PromptChain::default(),
        _ => PromptChain::of(&value, &info.model),
    };
    info.cached = front.prefixes.estimate(&chain, view.snapshot(), &info.model);
    if !chain.is_empty() {
        cache_probe::refine(&view, &info.model, &value, info.prompt_tokens, &mut info.cached).await;
    }
    let previous = match endpoint {
        Endpoint::Responses => previous_response(front, &value, &mut info),
        _ => None,
    };
    let mut route = decide(front, &view.prepared, &info, started, outcome).await?;
    if let Some((id, node)) = &previous {
        route = pinned(route, view.snapshot(), &info.model, id, node)?;
        outcome.reason = Some(route.reason.clone());
    }
    let dispatch = Dispatch {
        wait_for_first: route.wait_for_first,
        priority: info.priority,
        stream: info.stream,
        max_tokens: info.max_tokens,
    };
    let path = parts.uri.path();
    let mut upstream = forward(
        &front.nodes,
        front,
        view.clone(),
        &route.targets,
        dispatch,
        &grant.flow(),
        |node, local| plan(api, endpoint, path, node, &body, &value, local),
    )
    .await?;
    upstream.permit.hold(key_slot, charge);

    front.prefixes.record(&upstream.node, &chain);
    // The index's own guess for the node, checked against the runtime's count at the end.
    let guessed = info
        .cached
        .iter()
        .find(|c| c.node == upstream.node && c.source == switchyard_protocol::CacheSource::Approximate)
        .map_or(0, |c| c.tokens);
    let cold_check = crate::prefix_index::ColdCheck::new(front.prefixes.clone(), &upstream.node, &chain, guessed);
    outcome.node = Some(upstream.node.clone());
    outcome.model_label = info.model.clone();
    let energy = energy_estimate(view.energy(&upstream.node), &info);
    let mut sink = outcome.record.take();
    if let Some(sink) = &mut sink {
        let recorded = sink.outcome();
        recorded.node = Some(upstream.node.clone());
        recorded.ttft_ms = Some(started.elapsed().as_millis().min(u128::from(u32::MAX)) as u32);
        recorded.retries = upstream.retries;
        recorded.continued = upstream
            .lost
            .iter()
            .map(|from| continuation::Handoff {
                from: from.clone(),
                to: upstream.node.clone(),
                after_tokens: 0,
            })
            .collect();
        recorded.energy_mj = energy.map(|e| (e.joules * 1000.0).round() as u64);
    }
    let reason = served_reason(&route, &upstream.node);
    let policy = outcome.policy.clone().unwrap_or_default();
    // Escaped: a client's model or task, or a policy's reason, never forges a log line.
    tracing::info!(request = %id, node = %upstream.node, model = %log_safe(&info.model), task = %log_safe(info.task.as_deref().unwrap_or("-")), %policy, reason = %log_safe(&reason), retries = upstream.retries, "routed");
    // The line is for the demo's live log: build it only when someone is listening.
    if front.routed.receiver_count() > 0 {
        let _ = front.routed.send(format!(
            "{id} {} {} -> {} ({}) task={} by {policy}: {}",
            api.as_str(),
            log_safe(&info.model),
            upstream.node,
            upstream.local_model,
            log_safe(info.task.as_deref().unwrap_or("-")),
            log_safe(&reason),
        ));
    }
    let node = upstream.node.clone();
    let lost = upstream.lost.join(",");
    let allowed = outcome.policy_continues && grant.continue_streams;
    let continuation = continues(api, endpoint, &upstream, &info, &value, &front.limits, allowed).then(|| {
        let path = path.to_owned();
        Box::new(continuation::Continuation::new(
            front.clone(),
            continuation::Request {
                plan: Box::new(move |node, local| plan(api, endpoint, &path, node, &body, &value, local)),
                eligible: continuation_eligible(api),
                targets: route.targets.clone(),
                model: info.model.clone(),
                dispatch,
                flow: grant.flow(),
                max_continuations: front.limits.max_continuations,
            },
        ))
    });
    let afterwards = respond::Afterwards {
        record: sink,
        cold_check,
        continuation,
    };
    let mut response = respond::respond(front, api, &info, upstream, started, afterwards, endpoint).await;
    routing_headers(response.headers_mut(), &node, &policy, &reason);
    if !lost.is_empty()
        && let Ok(value) = HeaderValue::from_str(&lost)
    {
        // The nodes lost before this answer began: it was sent on to the next target.
        response.headers_mut().insert("x-switchyard-continued-from", value);
    }
    if let Some(estimate) = energy {
        front.metrics.energy(&node, estimate.joules);
        estimate.write(response.headers_mut());
    }
    Ok(response)
}

/// Phase 1: the API key (or a keyless grant for the connection's network).
fn authenticate(keys: &ApiKeys, parts: &http::request::Parts, client: ClientApi) -> Result<Grant, FrontError> {
    keys.check(&parts.headers, peer(&parts.extensions), client)
        .map_err(|message| FrontError::Unauthorized(message.to_owned()))
}

/// The client's IP address, from the connection (never from a forwarded header).
pub fn peer(extensions: &http::Extensions) -> Option<std::net::IpAddr> {
    extensions.get::<crate::http::PeerAddr>().map(|p| p.0.ip())
}

/// Phase 2: the body as JSON (for the policy's metadata and for translation) and the
/// request's metadata, checked against the key.
fn parse(
    api: Api,
    id: &str,
    headers: &HeaderMap,
    body: &Bytes,
    grant: &Grant,
) -> Result<(RequestInfo, Value), FrontError> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(value @ Value::Object(_)) => value,
        Ok(_) => return Err(FrontError::BadRequest("the request body must be a JSON object".into())),
        Err(e) => {
            return Err(FrontError::BadRequest(format!(
                "malformed JSON in the request body: {e}"
            )));
        }
    };
    let info = request_info(api, id, headers, &value, grant).map_err(FrontError::BadRequest)?;
    if !grant.allows(&info.model) {
        return Err(FrontError::Forbidden {
            key: grant.name.clone(),
            model: info.model,
        });
    }
    Ok((info, value))
}

/// Phase 3: the active policy's decision (the fallback's when it faults), made on a policy
/// thread, never on this async worker.
async fn decide(
    front: &Front,
    view: &Arc<PreparedSnapshot>,
    info: &RequestInfo,
    started: Instant,
    outcome: &mut Outcome,
) -> Result<Route, FrontError> {
    let engine = &front.engine;
    let decided = Instant::now();
    let routed = engine.decide(info, view.clone()).await;
    front.metrics.decision.observe(decided.elapsed());
    outcome.policy = Some(routed.policy_id.to_string());
    outcome.policy_continues = engine.continues_streams(&routed.policy_id);
    let canary = engine.canary_share(&routed.policy_id);
    if front.decisions.is_some() || canary.is_some() {
        // What the policy saw in place of the snapshot's in-flight counts (for the record;
        // a canary alone needs only the outcome).
        let in_flight = match &front.decisions {
            Some(_) => view
                .snapshot()
                .nodes
                .iter()
                .filter(|n| n.variant(&info.model).is_some())
                .map(|n| (n.name.clone(), front.admission.in_use(&n.name)))
                .collect(),
            None => Vec::new(),
        };
        outcome.record = Some(record::RecordSink::new(
            front.decisions.clone(),
            canary,
            view,
            in_flight,
            info,
            &routed,
            started,
            outcome.arrived_ms,
        ));
    }
    match routed.decision {
        Decision::Route(route) => {
            outcome.reason = Some(route.reason.clone());
            Ok(route)
        }
        Decision::Reject(reject) => {
            outcome.reason = Some("rejected by the policy".to_owned());
            Err(FrontError::Rejected {
                status: StatusCode::from_u16(reject.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                message: reject.message,
            })
        }
    }
}

/// What one node receives: the client's bytes with `model` rewritten when the node speaks
/// the client's API, a translation where an Ollama client meets an OpenAI runtime.
fn plan(
    api: Api,
    endpoint: Endpoint,
    path: &str,
    node: &NodeSnapshot,
    raw: &Bytes,
    value: &Value,
    local: &str,
) -> Result<Outbound, FrontError> {
    let translated = |path: &str, body: Value| Outbound {
        path: path.to_owned(),
        body: Bytes::from(body.to_string()),
    };
    let schema_style = if node.runtime == switchyard_protocol::RuntimeKind::LlamaCpp {
        ollama::SchemaStyle::LlamaCpp
    } else {
        ollama::SchemaStyle::OpenAi
    };
    Ok(match (api, Dialect::of(node)) {
        (Api::OllamaChat, Dialect::OpenAi) => translated(
            "/v1/chat/completions",
            ollama::to_openai_chat(value, local, false, schema_style),
        ),
        (Api::OllamaGenerate, Dialect::OpenAi) => translated(
            "/v1/chat/completions",
            ollama::to_openai_chat(value, local, true, schema_style),
        ),
        (Api::OllamaEmbed, Dialect::OpenAi) => translated("/v1/embeddings", ollama::to_openai_embeddings(value, local)),
        (Api::AnthropicMessages, _) if !anthropic::speaks_anthropic(node.runtime) => {
            let mut chat = anthropic::to_openai_chat(value, local);
            if endpoint == Endpoint::CountTokens {
                // No counter on such a runtime: a one-token generation, whose usage counts
                // the prompt with the runtime's own tokenizer (and leaves it cached).
                chat["max_tokens"] = json!(1);
            }
            translated("/v1/chat/completions", chat)
        }
        _ => Outbound {
            path: path.to_owned(),
            body: model_field::replace_model(raw, local).map_err(|e| FrontError::BadRequest(e.to_string()))?,
        },
    })
}

/// Whether a stream may continue on another node if its node is lost: a streamed chat whose
/// node answers OpenAI chat SSE (an OpenAI client's, or an Ollama or Anthropic client's the
/// controller translates), one choice, continuations allowed by `[limits]` and (`allowed`) by
/// the key and the deciding policy.
fn continues(
    api: Api,
    endpoint: Endpoint,
    upstream: &forward::Upstream,
    info: &RequestInfo,
    value: &Value,
    limits: &FrontLimits,
    allowed: bool,
) -> bool {
    let openai_chat_stream = match api {
        Api::OpenAiChat => true,
        Api::OllamaChat | Api::OllamaGenerate => upstream.dialect == Dialect::OpenAi,
        Api::AnthropicMessages => endpoint != Endpoint::CountTokens && !anthropic::speaks_anthropic(upstream.runtime),
        _ => false,
    };
    openai_chat_stream
        && info.stream
        && limits.max_continuations > 0
        && allowed
        && value["n"].as_u64().is_none_or(|n| n == 1)
        && upstream.response.status().is_success()
}

/// The nodes a continuation of `api`'s stream may go to: those that answer it as OpenAI chat
/// SSE.
fn continuation_eligible(api: Api) -> fn(&NodeSnapshot) -> bool {
    match api {
        Api::OllamaChat | Api::OllamaGenerate => |node| Dialect::of(node) == Dialect::OpenAi,
        Api::AnthropicMessages => |node| !anthropic::speaks_anthropic(node.runtime),
        _ => |_| true,
    }
}

/// The node that produced the response a Responses request continues, when the controller
/// relayed it: `(id, node)`. An id it does not know is tagged `previous-response: unknown`
/// and left to the policy and the runtime.
fn previous_response(front: &Front, body: &Value, info: &mut RequestInfo) -> Option<(String, String)> {
    let id = body["previous_response_id"].as_str().filter(|id| !id.is_empty())?;
    match front.responses.node_of(id) {
        Some(node) => Some((id.to_owned(), node)),
        None => {
            info.tags.push(("previous-response".to_owned(), "unknown".to_owned()));
            None
        }
    }
}

/// The route to the node holding the previous response, whatever the policy chose: only
/// that node can continue the conversation. Unavailable, it is a 503 that says so.
fn pinned(
    route: Route,
    snapshot: &switchyard_protocol::ClusterSnapshot,
    model: &str,
    id: &str,
    node: &str,
) -> Result<Route, FrontError> {
    let held = snapshot.node(node).filter(|n| n.healthy).and_then(|n| n.variant(model));
    let Some(variant) = held else {
        return Err(FrontError::Rejected {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "previous_response_id {id} was produced by node {node}, which cannot serve {model} now (down, draining or without the model); retry later, or send the whole conversation without previous_response_id"
            ),
        });
    };
    Ok(Route {
        targets: vec![switchyard_protocol::Target {
            node: node.into(),
            model: variant.local.as_str().into(),
        }],
        reason: format!("{}; previous_response_id {id} lives on {node}", route.reason),
        wait_for_first: true,
    })
}

/// The reason header: the policy's reason, and where the request really went when the
/// policy's first choice could not take it.
fn served_reason(route: &Route, node: &str) -> String {
    match route.targets.first() {
        Some(first) if *first.node != *node => {
            format!("{}; {} could not take it, served by {node}", route.reason, first.node)
        }
        _ => route.reason.clone(),
    }
}

/// Output tokens assumed for the energy estimate of a request that sets no `max_tokens`.
const ENERGY_DEFAULT_TOKENS: u32 = 256;

/// A request's energy, estimated when its answer starts: the node's recent joules per token
/// times the tokens the request may generate (its `max_tokens`, else 256). An upper estimate
/// made before the answer is known, labelled with where the node's figure comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
struct EnergyEstimate {
    joules: f64,
    source: switchyard_protocol::EnergySource,
}

impl EnergyEstimate {
    fn write(self, headers: &mut HeaderMap) {
        let millijoules = (self.joules * 1000.0).round() as u64;
        headers.insert("x-switchyard-energy-mj", HeaderValue::from(millijoules));
        headers.insert(
            "x-switchyard-energy-source",
            HeaderValue::from_static(self.source.as_str()),
        );
    }
}

fn energy_estimate(
    energy: Option<&switchyard_protocol::EnergyTelemetry>,
    info: &RequestInfo,
) -> Option<EnergyEstimate> {
    let energy = energy?;
    let per_token = energy.joules_per_token.filter(|j| j.is_finite() && *j >= 0.0)?;
    let tokens = info.max_tokens.unwrap_or(ENERGY_DEFAULT_TOKENS);
    Some(EnergyEstimate {
        joules: f64::from(per_token) * f64::from(tokens),
        source: energy.source,
    })
}

fn routing_headers(headers: &mut HeaderMap, node: &str, policy: &str, reason: &str) {
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
