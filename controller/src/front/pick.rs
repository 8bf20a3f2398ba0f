//! The gateway's way in (issue #23): a prompt that a gateway (Envoy, through the endpoint
//! picker) holds is decided exactly as the front door decides one (parse, feasibility, cache
//! estimate, the active policy with its shadow, canary and decision record, a slot on the
//! chosen node), but not forwarded: the gateway sends it to the chosen runtime itself. The
//! slot and the record are held until the gateway says how the request ended.

use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;
use switchyard_protocol::Api;

use super::admission::Permit;
use super::grant::Grant;
use super::request_info::{Endpoint, client_api};
use super::{FrontError, Outcome, decide, feasible, parse, record};
use crate::node_table::Published;
use crate::policy::PreparedSnapshot;
use crate::prefix_index::PromptChain;
use std::sync::Arc;
use switchyard_protocol::{ClusterSnapshot, NodeSnapshot};

/// Where the policy sent a prompt.
#[derive(Debug)]
pub struct Picked {
    pub node: String,
    /// `host:port` of the node's runtime, as its agent reports it.
    pub endpoint: String,
    /// The model's name on that node; `body` is the request's body with `model` set to it.
    pub local_model: String,
    pub body: Option<Bytes>,
    /// The other targets' endpoints, in the policy's order (for gateways that take a list).
    pub fallbacks: Vec<String>,
    pub policy: String,
    pub reason: String,
    /// The node's slot and the decision record, until [`Held::finish`].
    pub held: Held,
}

/// What a picked request holds while the gateway serves it.
#[derive(Debug)]
pub struct Held {
    _permit: Permit,
    record: Option<record::RecordSink>,
    /// Counted in `/metrics` as the front door's requests are (node, model, status; 499 for
    /// one that ended without an answer).
    metrics: Arc<super::metrics::FrontMetrics>,
    node: String,
    model: String,
    counted: bool,
}

impl Held {
    /// The request ended with `status` (0: the gateway never said).
    pub fn finish(mut self, status: u16) {
        self.end(status);
    }

    fn end(&mut self, status: u16) {
        if let Some(sink) = self.record.take() {
            sink.finish(status, status == 0);
        }
        if !std::mem::replace(&mut self.counted, true) {
            let status = if status == 0 { 499 } else { status };
            self.metrics.request(&self.node, &self.model, status);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.end(0);
    }
}

/// Decide where the prompt `body` sent to `path` goes, and take a slot there (waiting in the
/// queue as the front door does), as `grant` allows (the gateway's: `[gateway]`). With a
/// `subset` (the gateway's hint: the endpoints it allows), the policy sees only the nodes
/// whose runtime endpoint is in it.
pub async fn pick(
    front: &super::Front,
    grant: &Grant,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
    subset: Option<&[String]>,
) -> Result<Picked, FrontError> {
    let mut outcome = Outcome {
        arrived_ms: crate::clock::now_ms(),
        ..Outcome::default()
    };
    let picked = decide_and_hold(front, grant, path, headers, body, subset, &mut outcome).await;
    if let Err(error) = &picked {
        // A refusal is recorded and counted as the front door records and counts it.
        outcome.refused(front, error);
    }
    picked
}

async fn decide_and_hold(
    front: &super::Front,
    grant: &Grant,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
    subset: Option<&[String]>,
    outcome: &mut Outcome,
) -> Result<Picked, FrontError> {
    let api = Api::from_path(path).ok_or_else(|| FrontError::BadRequest(format!("{path} carries no prompt")))?;
    let started = Instant::now();
    let id = format!(
        "req-{}",
        front.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let (mut info, value) = parse(api, &id, headers, body, grant)?;
    let view = front.nodes.published();
    feasible::check(view.snapshot(), &info)?;
    let endpoint = Endpoint::of(path);
    let chain = match (api, endpoint) {
        (Api::OpenAiEmbeddings | Api::OllamaEmbed, _) | (_, Endpoint::CountTokens) => PromptChain::default(),
        _ => PromptChain::of(&value, &info.model),
    };
    info.cached = front.prefixes.estimate(&chain, view.snapshot(), &info.model);
    if !chain.is_empty() {
        super::cache_probe::refine(&view, &info.model, &value, info.prompt_tokens, &mut info.cached).await;
    }
    // The gateway sends the client's bytes as they are: only nodes that speak the client's
    // API themselves (and are in the gateway's subset hint, where it gives one).
    let prepared = within(front, &view, api, subset)?;
    let previous = match endpoint {
        Endpoint::Responses => super::previous_response(front, &value, &mut info),
        _ => None,
    };
    let mut route = decide(front, &prepared, &info, started, outcome).await?;
    if let Some((id, node)) = &previous {
        route = super::pinned(route, prepared.snapshot(), &info.model, id, node)?;
        outcome.reason = Some(route.reason.clone());
    }
    let endpoints = reachable_endpoints(&route, &view)?;
    let permit = take_slot(front, &endpoints, &view, info.priority).await?;
    let (node, local_model, endpoint) = endpoints
        .iter()
        .find(|(node, _, _)| *node == permit.node)
        .cloned()
        .unwrap_or_else(|| endpoints[0].clone());
    front.prefixes.record(&node, &chain);
    let mut record = outcome.record.take();
    if let Some(sink) = &mut record {
        let recorded = sink.outcome();
        recorded.node = Some(node.clone());
        recorded.ttft_ms = None;
    }
    let body = (local_model != info.model).then(|| {
        let mut value = value;
        value["model"] = Value::String(local_model.clone());
        Bytes::from(value.to_string())
    });
    let permit_node = permit.node.clone();
    Ok(Picked {
        fallbacks: endpoints
            .iter()
            .filter(|(n, _, _)| *n != node)
            .map(|(_, _, e)| e.clone())
            .collect(),
        node,
        endpoint,
        local_model,
        body,
        policy: outcome.policy.clone().unwrap_or_default(),
        reason: super::served_reason(&route, &permit_node),
        held: Held {
            _permit: permit,
            record,
            metrics: front.metrics.clone(),
            node: permit_node,
            model: info.model.clone(),
            counted: false,
        },
    })
}

/// The policy's targets as (node, node-local model, runtime endpoint), those with an endpoint
/// the gateway can reach, in the policy's order.
fn reachable_endpoints(route: &super::Route, view: &Published) -> Result<Vec<(String, String, String)>, FrontError> {
    let endpoints: Vec<(String, String, String)> = route
        .targets
        .iter()
        .filter_map(|t| {
            Some((
                t.node.to_string(),
                t.model.to_string(),
                view.endpoint(&t.node)?.to_owned(),
            ))
        })
        .collect();
    if endpoints.is_empty() {
        return Err(FrontError::Exhausted(
            "no target of the policy's has a runtime endpoint the gateway can reach".into(),
        ));
    }
    Ok(endpoints)
}

/// A slot on one of `endpoints`' nodes, waiting in the queue as the front door does.
async fn take_slot(
    front: &super::Front,
    endpoints: &[(String, String, String)],
    view: &Published,
    priority: u8,
) -> Result<Permit, FrontError> {
    let candidates: Vec<(String, u32)> = endpoints
        .iter()
        .filter_map(|(node, _, _)| Some((node.clone(), view.snapshot().node(node)?.max_concurrency.max(1))))
        .collect();
    front
        .admission
        .acquire(&candidates, priority, &Grant::open().flow(), front.limits.queue_timeout)
        .await
        .map_err(|refusal| match refusal {
            super::admission::Refusal::QueueFull(_) => FrontError::QueueFull(refusal.to_string()),
            super::admission::Refusal::Deadline(_) => FrontError::NoSlot(refusal.to_string()),
        })
}

/// Whether `node` answers `api` itself (the gateway translates nothing).
fn speaks(node: &NodeSnapshot, api: Api) -> bool {
    match api {
        Api::OllamaChat | Api::OllamaGenerate | Api::OllamaEmbed => {
            super::forward::Dialect::of(node) == super::forward::Dialect::Ollama
        }
        Api::AnthropicMessages => super::anthropic::speaks_anthropic(node.runtime),
        _ => true,
    }
}

/// The policy's cluster for a gateway request: the nodes of `view` that speak `api` and, with
/// a `subset` hint, whose runtime endpoint is in it (in-flight counts live, as always). The
/// whole view when nothing is left out; none is a 503.
fn within(
    front: &super::Front,
    view: &Published,
    api: Api,
    subset: Option<&[String]>,
) -> Result<Arc<PreparedSnapshot>, FrontError> {
    let in_subset = |node: &NodeSnapshot| {
        subset.is_none_or(|subset| view.endpoint(&node.name).is_some_and(|e| subset.iter().any(|s| s == e)))
    };
    let nodes = &view.snapshot().nodes;
    if nodes.iter().all(|n| speaks(n, api) && in_subset(n)) {
        return Ok(view.prepared.clone());
    }
    let kept: Vec<NodeSnapshot> = nodes
        .iter()
        .filter(|n| speaks(n, api) && in_subset(n))
        .cloned()
        .collect();
    if kept.is_empty() {
        return Err(FrontError::Exhausted(match subset {
            Some(subset) if !nodes.iter().any(in_subset) => format!(
                "no node's endpoint is in the gateway's subset hint [{}]",
                subset.join(", ")
            ),
            _ => format!(
                "no node speaks the {} API itself, and the gateway passes requests on untranslated",
                api.as_str()
            ),
        }));
    }
    let live: Arc<dyn crate::policy::LiveLoad> = front.admission.clone();
    Ok(Arc::new(
        PreparedSnapshot::from(ClusterSnapshot { nodes: kept }).with_live_load(Some(live)),
    ))
}

/// The error as the front door would answer it, in the shape of the client's API: status,
/// headers (`Retry-After` where trying again may help) and body, for the gateway's immediate
/// response.
pub async fn render(path: &str, error: &FrontError) -> (u16, HeaderMap, Bytes) {
    use http_body_util::BodyExt;
    let client = Api::from_path(path).map(client_api).unwrap_or(super::ClientApi::OpenAi);
    let (parts, body) = client.render(error).into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    (parts.status.as_u16(), parts.headers, body)
}
