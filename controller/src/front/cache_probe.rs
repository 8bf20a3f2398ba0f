//! The precise cache estimate: each candidate node whose agent follows its runtime's
//! KV-cache events is asked (`POST /cache/probe`, over its link) how many of this prompt's
//! tokens the runtime holds, as the runtime tokenizes it; the answer replaces the prefix
//! index's guess for that node. The nodes are asked together, only for prompts long enough
//! to fill a cache block, within a short deadline: a node that has not answered by then
//! keeps the approximate figure.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};
use switchyard_protocol::{CacheSource, CachedPrefix};

use crate::node_table::{AgentSender, Published};

/// How long the request waits for the agents' answers.
pub const PROBE_DEADLINE: Duration = Duration::from_millis(250);
/// Prompts estimated shorter than this are not probed: they fill no cache block worth a
/// detour (vLLM's blocks are 16 to 128 tokens).
pub const MIN_PROMPT_TOKENS: u32 = 64;

/// Replace `cached`'s figures with the agents' own for the nodes that answer probes.
pub async fn refine(view: &Published, model: &str, body: &Value, prompt_tokens: u32, cached: &mut Vec<CachedPrefix>) {
    if prompt_tokens < MIN_PROMPT_TOKENS {
        return;
    }
    let mut asks = tokio::task::JoinSet::new();
    for node in &view.snapshot().nodes {
        if !node.healthy || !view.answers_cache_probes(&node.name) {
            continue;
        }
        let (Some(variant), Some(sender)) = (node.variant(model).filter(|v| v.loaded), view.sender(&node.name)) else {
            continue;
        };
        let question = Bytes::from(json!({"model": variant.local, "body": body}).to_string());
        asks.spawn(tokio::time::timeout(
            PROBE_DEADLINE,
            ask(sender, node.name.clone(), question),
        ));
    }
    while let Some(answer) = asks.join_next().await {
        let Ok(Ok(Some((node, tokens)))) = answer else { continue };
        cached.retain(|c| c.node != node);
        if tokens > 0 {
            cached.push(CachedPrefix {
                node,
                tokens,
                source: CacheSource::Precise,
            });
        }
    }
}

/// One node's answer: its name and the runtime's cached tokens (`None` if it could not say).
async fn ask(mut sender: AgentSender, node: String, question: Bytes) -> Option<(String, u32)> {
    let request = Request::builder()
        .method(Method::POST)
        .uri("http://agent/cache/probe")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(question))
        .ok()?;
    let outcome = async {
        sender.ready().await.map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let answer: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        match answer["cached_tokens"].as_u64() {
            Some(tokens) if status.is_success() => Ok(tokens.min(u64::from(u32::MAX)) as u32),
            _ => Err(format!(
                "{status}: {}",
                answer["error"]["message"].as_str().unwrap_or("no figure")
            )),
        }
    }
    .await;
    match outcome {
        Ok(tokens) => Some((node, tokens)),
        Err(why) => {
            tracing::debug!(%node, "cache probe unanswered: {why}");
            None
        }
    }
}
