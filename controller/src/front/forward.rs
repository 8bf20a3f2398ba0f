//! Sending a request to the decision's targets: a slot through admission, the request over
//! the node's link, and, while nothing has reached the client, the next target when one
//! fails (unreachable, link gone, 5xx). A 4xx from a node is the client's problem and is
//! returned as is.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use switchyard_protocol::Target;

use super::admission::{Permit, Refusal};
use crate::app::App;

/// A node's answer head, with the slot it holds.
#[derive(Debug)]
pub struct Upstream {
    pub node: String,
    pub local_model: String,
    pub response: Response<Incoming>,
    pub permit: Permit,
    pub retries: u32,
}

/// Why no node answered.
#[derive(Debug)]
pub enum ForwardError {
    /// Admission refused (queue full or deadline).
    Refused(Refusal),
    /// Every target failed; the last failure.
    Exhausted(String),
}

/// Send to the targets in order. `body_for(local_model)` builds the body for a node.
pub async fn forward(
    app: &Arc<App>,
    targets: &[Target],
    path: &str,
    priority: u8,
    body_for: impl Fn(&str) -> Bytes,
) -> Result<Upstream, ForwardError> {
    let front = &app.front;
    let mut remaining: Vec<Target> = targets.to_vec();
    let mut last_error = "no target node".to_owned();
    let mut retries = 0;
    loop {
        let snapshot = app.nodes.snapshot();
        let candidates: Vec<(String, u32)> = remaining
            .iter()
            .filter_map(|t| {
                let node = snapshot.node(&t.node)?;
                app.nodes
                    .sender(&t.node)
                    .map(|_| (t.node.clone(), node.max_concurrency.max(1)))
            })
            .collect();
        if candidates.is_empty() {
            return Err(ForwardError::Exhausted(last_error));
        }
        let permit = app
            .front
            .admission
            .acquire(&candidates, priority, front.limits.queue_timeout)
            .await
            .map_err(ForwardError::Refused)?;
        let node = permit.node.clone();
        let local_model = remaining
            .iter()
            .find(|t| t.node == node)
            .map(|t| t.model.clone())
            .unwrap_or_default();
        remaining.retain(|t| t.node != node);
        let Some(mut sender) = app.nodes.sender(&node) else {
            last_error = format!("node {node} disconnected");
            continue;
        };
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("http://agent{path}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body_for(&local_model)));
        let request = match request {
            Ok(request) => request,
            Err(e) => return Err(ForwardError::Exhausted(format!("cannot build the request: {e}"))),
        };
        let started = Instant::now();
        let sent = tokio::time::timeout(front.limits.first_byte_timeout, async {
            sender.ready().await?;
            sender.send_request(request).await
        })
        .await;
        match sent {
            Ok(Ok(response)) if !response.status().is_server_error() => {
                app.front.metrics.ttfb.observe(started.elapsed());
                return Ok(Upstream {
                    node,
                    local_model,
                    response,
                    permit,
                    retries,
                });
            }
            Ok(Ok(response)) => last_error = format!("node {node} answered {}", response.status()),
            Ok(Err(e)) => last_error = format!("node {node} failed: {e}"),
            Err(_) => last_error = format!("node {node} sent nothing within {:?}", front.limits.first_byte_timeout),
        }
        tracing::warn!(%node, "{last_error}; trying the next target");
        drop(permit);
        if remaining.is_empty() {
            return Err(ForwardError::Exhausted(last_error));
        }
        retries += 1;
        app.front.metrics.retries.fetch_add(1, Ordering::Relaxed);
    }
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
    /// The longest a node may take to start answering.
    pub first_byte_timeout: Duration,
    /// The longest a whole response may take.
    pub total_timeout: Duration,
}

impl Default for FrontLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            queue_capacity: 64,
            queue_timeout: Duration::from_secs(30),
            first_byte_timeout: Duration::from_secs(60),
            total_timeout: Duration::from_secs(600),
        }
    }
}
