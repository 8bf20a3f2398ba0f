//! Sending a request to the decision's targets: a slot through admission, the request over
//! the node's link, and the next target only while no runtime can have started on it: the
//! link was down or the request never left, or the agent says the runtime refused it before
//! any work (`x-switchyard-retryable`: unreachable, 429, 503), or while the node is lost
//! before its answer began (its link broke: nothing reached the client, and the lost node
//! can finish nothing). A timeout is not a loss (the work may still be running): it is a 504
//! naming the node, never sent again. Whole (non-streamed) answers get a wait that fits their
//! size, not a first-byte limit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use switchyard_protocol::{NodeSnapshot, RuntimeKind, Target};

use super::Front;
use super::admission::{Flow, Permit, Refusal};
use super::error::FrontError;
use crate::node_table::{AgentSender, NodeTable, Published};

/// The agent's mark on an answer that no runtime started on.
const RETRYABLE: &str = "x-switchyard-retryable";

/// Which API a node's runtime speaks natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI's (vLLM, `mlx_lm.server`, llama.cpp, LM Studio, the simulated runtime).
    OpenAi,
    /// Ollama's native API, and OpenAI's under `/v1`.
    Ollama,
}

impl Dialect {
    pub fn of(node: &NodeSnapshot) -> Dialect {
        if node.runtime == RuntimeKind::Ollama {
            Dialect::Ollama
        } else {
            Dialect::OpenAi
        }
    }
}

/// What to send to one node: the agent path and the body, built for its dialect.
#[derive(Debug)]
pub struct Outbound {
    pub path: String,
    pub body: Bytes,
}

/// A node's answer head, with the slot it holds.
#[derive(Debug)]
pub struct Upstream {
    pub node: String,
    pub local_model: String,
    pub dialect: Dialect,
    pub runtime: RuntimeKind,
    pub response: Response<Incoming>,
    pub permit: Permit,
    pub retries: u32,
    /// Nodes lost before their answer began, in order (the request went on to the next).
    pub lost: Vec<String>,
}

/// What the request needs from the forwarder besides its targets.
#[derive(Debug, Clone, Copy)]
pub struct Dispatch {
    pub priority: u8,
    pub stream: bool,
    pub max_tokens: Option<u32>,
    /// The policy's `wait-for-first`: queue for the first target when it is full; the
    /// others only after it refused.
    pub wait_for_first: bool,
}

/// Send to the targets in order; `plan(node, local_model)` builds what a node receives.
pub async fn forward(
    nodes: &NodeTable,
    front: &Front,
    decided_on: Arc<Published>,
    targets: &[Target],
    dispatch: Dispatch,
    flow: &Flow,
    plan: impl Fn(&NodeSnapshot, &str) -> Result<Outbound, FrontError>,
) -> Result<Upstream, FrontError> {
    let mut remaining: Vec<Target> = targets.to_vec();
    let mut last_error = "no target node".to_owned();
    let mut retries = 0;
    let mut lost = Vec::new();
    let mut first_attempt = true;
    // The node table as the policy saw it; a retry reads it afresh.
    let mut view = Some(decided_on);
    loop {
        let view = view.take().unwrap_or_else(|| nodes.published());
        let snapshot = view.snapshot();
        let candidates = linked_candidates(&view, &remaining);
        if candidates.is_empty() {
            return Err(FrontError::Exhausted(last_error));
        }
        let first_only = std::mem::replace(&mut first_attempt, false) && dispatch.wait_for_first;
        let permit = acquire(front, candidates, &remaining, (dispatch.priority, flow), first_only).await?;
        let node = permit.node.clone();
        let local_model = remaining
            .iter()
            .find(|t| *t.node == *node)
            .map(|t| t.model.to_string())
            .unwrap_or_default();
        remaining.retain(|t| *t.node != *node);
        let Some(node_snapshot) = snapshot.node(&node) else {
            last_error = format!("node {node} left the cluster");
            continue;
        };
        let wait = answer_wait(&front.limits, dispatch, node_snapshot);
        let outbound = plan(node_snapshot, &local_model)?;
        let Some(sender) = view.sender(&node) else {
            last_error = format!("node {node} disconnected");
            continue;
        };
        let started = Instant::now();
        match attempt(sender, &node, outbound, wait, !remaining.is_empty()).await? {
            Attempt::Answered(response) => {
                front.metrics.ttfb.observe(started.elapsed());
                return Ok(Upstream {
                    dialect: Dialect::of(node_snapshot),
                    runtime: node_snapshot.runtime,
                    node,
                    local_model,
                    response,
                    permit,
                    retries,
                    lost,
                });
            }
            Attempt::Untouched(why) => last_error = why,
            Attempt::Lost(why) => {
                last_error = why;
                lost.push(node.clone());
                front.metrics.continuations.fetch_add(1, Ordering::Relaxed);
            }
        }
        tracing::warn!(%node, "{last_error}; trying the next target");
        drop(permit);
        if remaining.is_empty() {
            return Err(FrontError::Exhausted(last_error));
        }
        retries += 1;
        front.metrics.retries.fetch_add(1, Ordering::Relaxed);
    }
}

/// The remaining targets the publication knows and holds a link to, with their slots.
fn linked_candidates(view: &Published, remaining: &[Target]) -> Vec<(String, u32)> {
    remaining
        .iter()
        .filter_map(|t| {
            let node = view.snapshot().node(&t.node)?;
            view.sender(&t.node)
                .map(|_| (t.node.to_string(), node.max_concurrency.max(1)))
        })
        .collect()
}

/// A slot on one of `candidates`. With `first_only` (the policy's `wait-for-first`, on the
/// first attempt) it waits for the first target while that one is linked.
async fn acquire(
    front: &Front,
    candidates: Vec<(String, u32)>,
    remaining: &[Target],
    (priority, flow): (u8, &Flow),
    first_only: bool,
) -> Result<Permit, FrontError> {
    let first_is_linked = remaining
        .first()
        .zip(candidates.first())
        .is_some_and(|(t, c)| *t.node == *c.0);
    let candidates = if first_only && first_is_linked {
        candidates[..1].to_vec()
    } else {
        candidates
    };
    front
        .admission
        .acquire(&candidates, priority, flow, front.limits.queue_timeout)
        .await
        .map_err(|refusal| match refusal {
            Refusal::QueueFull(_) => FrontError::QueueFull(refusal.to_string()),
            Refusal::Deadline(_) => FrontError::NoSlot(refusal.to_string()),
        })
}

/// What one attempt on one node came to.
enum Attempt {
    /// The node's answer head: a runtime may have started, so this is the answer.
    Answered(Response<Incoming>),
    /// No runtime can have started on it: why, for the next target.
    Untouched(String),
    /// The node was lost (its link broke) before its answer began: why, for the next target.
    Lost(String),
}

/// Send `outbound` over `node`'s link and wait up to `wait` for the answer head. A refusal
/// the agent marks retryable is `Untouched` only while another target remains.
async fn attempt(
    mut sender: AgentSender,
    node: &str,
    outbound: Outbound,
    wait: Duration,
    another_target: bool,
) -> Result<Attempt, FrontError> {
    let mut request = Request::new(Full::new(outbound.body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = format!("http://agent{}", outbound.path)
        .parse()
        .map_err(|e| FrontError::BadRequest(format!("cannot forward to {}: {e}", outbound.path)))?;
    request
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Err(e) = sender.ready().await {
        return Ok(Attempt::Untouched(format!("the link to node {node} is down: {e}")));
    }
    let mut response = match tokio::time::timeout(wait, sender.send_request(request)).await {
        Err(_) => {
            return Err(FrontError::Timeout {
                node: node.to_owned(),
                limit: wait,
            });
        }
        Ok(Err(e)) if e.is_canceled() => {
            return Ok(Attempt::Untouched(format!(
                "node {node} closed its link before the request was sent: {e}"
            )));
        }
        Ok(Err(e)) if another_target => {
            return Ok(Attempt::Lost(format!(
                "node {node} was lost before its answer began: {e}"
            )));
        }
        Ok(Err(e)) => {
            return Err(FrontError::NodeFailed {
                node: node.to_owned(),
                message: e.to_string(),
            });
        }
        Ok(Ok(response)) => response,
    };
    if let Some(why) = response.headers().get(RETRYABLE).filter(|_| another_target) {
        return Ok(Attempt::Untouched(format!(
            "node {node} answered {} before starting ({})",
            response.status(),
            why.to_str().unwrap_or("refused")
        )));
    }
    response.headers_mut().remove(RETRYABLE);
    Ok(Attempt::Answered(response))
}

/// How long to wait for a node's answer head. A stream's head comes before the first token:
/// `first_byte_timeout`. A whole answer's head comes after the last token: a wait fitted to
/// `max_tokens` at the node's measured speed (three times the expected time, at least
/// `first_byte_timeout`), and `total_timeout` when either is unknown.
pub fn answer_wait(limits: &FrontLimits, dispatch: Dispatch, node: &NodeSnapshot) -> Duration {
    if dispatch.stream {
        return limits.first_byte_timeout;
    }
    let (Some(tokens), Some(speed)) = (dispatch.max_tokens, node.tokens_per_sec.filter(|s| *s > 0.0)) else {
        return limits.total_timeout;
    };
    let ttft = Duration::from_secs_f32(node.ttft_ms.unwrap_or(0.0).max(0.0) / 1000.0);
    let expected = ttft + Duration::from_secs_f32(tokens as f32 / speed);
    (expected * 3).clamp(
        limits.first_byte_timeout,
        limits.total_timeout.max(limits.first_byte_timeout),
    )
}

/// Time limits of the front door.
#[derive(Debug, Clone, Copy)]
pub struct FrontLimits {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Requests that may wait for a node slot at once.
    pub queue_capacity: usize,
    /// The longest a request waits for a slot.
    pub queue_timeout: Duration,
    /// The longest a node may take to start a streamed answer, and the least a whole one
    /// is given.
    pub first_byte_timeout: Duration,
    /// The longest a whole response may take.
    pub total_timeout: Duration,
    /// Client connections open at once.
    pub max_connections: usize,
    /// The longest a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Client connections open at once from one address.
    pub max_connections_per_address: usize,
    /// The longest a connection may stay open with no request after its last one.
    pub idle_timeout: Duration,
    /// The longest a prompt's body may take to arrive once its headers have.
    pub body_read_timeout: Duration,
    /// How many times one stream may continue on another node when its node is lost.
    pub max_continuations: u32,
}

impl Default for FrontLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            queue_capacity: 64,
            queue_timeout: Duration::from_secs(30),
            first_byte_timeout: Duration::from_secs(60),
            total_timeout: Duration::from_secs(600),
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            max_connections_per_address: 256,
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            max_continuations: 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(speed: Option<f32>) -> NodeSnapshot {
        let mut node: NodeSnapshot = serde_json::from_value(serde_json::json!({
            "name": "xeon", "runtime": "llama-cpp", "healthy": true, "max_concurrency": 2, "max_tokens": 4096,
        }))
        .expect("node");
        node.tokens_per_sec = speed;
        node.ttft_ms = Some(500.0);
        node
    }

    #[test]
    fn a_whole_answer_waits_for_its_size_and_a_stream_for_its_first_byte() {
        let limits = FrontLimits::default();
        let whole = |max_tokens| Dispatch {
            wait_for_first: false,
            priority: 5,
            stream: false,
            max_tokens,
        };
        // 3000 tokens at 25 tokens/s: 120.5 s expected, 361.5 s allowed (the old 60 s cut it).
        let wait = answer_wait(&limits, whole(Some(3000)), &node(Some(25.0)));
        assert_eq!(wait.as_millis(), 361_500);
        assert_eq!(
            answer_wait(&limits, whole(Some(10)), &node(Some(25.0))),
            limits.first_byte_timeout
        );
        assert_eq!(
            answer_wait(&limits, whole(Some(100_000)), &node(Some(1.0))),
            limits.total_timeout
        );
        assert_eq!(
            answer_wait(&limits, whole(None), &node(Some(25.0))),
            limits.total_timeout
        );
        assert_eq!(answer_wait(&limits, whole(Some(10)), &node(None)), limits.total_timeout);
        let stream = Dispatch {
            wait_for_first: false,
            stream: true,
            ..whole(Some(3000))
        };
        assert_eq!(
            answer_wait(&limits, stream, &node(Some(25.0))),
            limits.first_byte_timeout
        );
    }
}
