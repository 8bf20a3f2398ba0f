//! A stream that survives its node: when the node serving a streamed chat answer is lost
//! mid-answer (its link or its runtime broke), the request goes to another node with what the
//! client has already received as a prefilled assistant turn (vLLM's
//! `continue_final_message`; llama.cpp, Ollama and the simulator continue a final assistant
//! message by themselves), and the new node's tokens are spliced into the same stream: the
//! first stream's id, no second role chunk, usage that adds up, and the hand-off marked in the
//! first spliced chunk (`switchyard.continued`). What it covers: streams whose node answers
//! OpenAI chat SSE (OpenAI chat clients everywhere; Ollama and Anthropic clients where the
//! controller translates), one choice, no tool-call or reasoning fragments yet. A timeout is
//! not a loss: the work may still be running, and it is never sent twice.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_protocol::{NodeSnapshot, RuntimeKind, Target};

use super::Front;
use super::admission::Flow;
use super::forward::{Dispatch, Outbound, Upstream, forward};
use crate::node_table::Published;

/// Builds what a node receives for this request: the client's request, translated where the
/// node does not speak the client's API.
pub type Plan = Box<dyn Fn(&NodeSnapshot, &str) -> Result<Outbound, super::FrontError> + Send + Sync>;

/// The path every continuation is sent to.
const CHAT_PATH: &str = "/v1/chat/completions";

/// One hand-off, for the decision record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handoff {
    /// The node that was lost.
    pub from: String,
    /// The node the answer continued on.
    pub to: String,
    /// Content tokens the client had received when `from` was lost.
    pub after_tokens: u32,
}

/// What the client has received of the answer so far.
#[derive(Debug, Default)]
struct Received {
    /// The answer's text.
    text: String,
    /// Content deltas (a runtime streams one token a delta).
    tokens: u32,
    /// The first stream's chunk id and creation time: spliced chunks carry them too.
    id: Option<Value>,
    created: Option<Value>,
    /// A fragment no prefill can carry (a tool call, reasoning, a second choice) passed.
    uncontinuable: bool,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    created: Option<Value>,
    #[serde(default)]
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Option<Delta>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    reasoning_content: Option<serde::de::IgnoredAny>,
}

impl Received {
    /// Read one event of the node's OpenAI stream on its way to the client.
    fn observe(&mut self, data: &str) {
        if data == "[DONE]" {
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Chunk>(data) else {
            return;
        };
        if self.id.is_none() {
            self.id = chunk.id;
            self.created = chunk.created;
        }
        for choice in chunk.choices {
            let Some(delta) = choice.delta else { continue };
            if choice.index != 0 || delta.tool_calls.is_some() || delta.reasoning_content.is_some() {
                self.uncontinuable = true;
            }
            if let Some(content) = delta.content.filter(|c| !c.is_empty()) {
                self.text.push_str(&content);
                self.tokens += 1;
            }
        }
    }
}

/// A streamed answer's way to continue elsewhere.
pub struct Continuation {
    front: Arc<Front>,
    plan: Plan,
    /// Which nodes answer this request's stream as OpenAI chat SSE.
    eligible: fn(&NodeSnapshot) -> bool,
    /// The policy's targets, in its order.
    targets: Vec<Target>,
    /// The logical model: a node outside the policy's targets must serve it.
    model: String,
    dispatch: Dispatch,
    flow: Flow,
    /// Hand-offs still allowed.
    left: u32,
    received: Received,
    /// Nodes lost so far, and the hand-offs made.
    pub handoffs: Vec<Handoff>,
    /// Content tokens received before the latest hand-off (what the latest node's usage
    /// does not count), and whether its first chunk is still to be marked.
    spliced_after: Option<u32>,
    mark_next: bool,
    /// The answer so far, while the continuing node may still be repeating it (llama.cpp's
    /// server sends the prefilled text back before its new tokens).
    echo: Option<Echo>,
}

/// The prefilled text a continuing node may send back first: held while it matches, dropped
/// once whole, given back if the node's text turns out to be new.
#[derive(Debug)]
struct Echo {
    expected: String,
    held: String,
}

impl Echo {
    /// What of the continuing node's `content` is sent on (the repeated prefill taken out),
    /// and whether the echo is settled (the prefill came back whole, or the text is new).
    fn strip(&mut self, content: &str) -> (String, bool) {
        let rest = &self.expected[self.held.len()..];
        if rest.starts_with(content) && content.len() < rest.len() {
            self.held.push_str(content);
            return (String::new(), false);
        }
        if let Some(new) = content.strip_prefix(rest) {
            return (new.to_owned(), true);
        }
        (format!("{}{content}", self.held), true)
    }
}

impl std::fmt::Debug for Continuation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Continuation")
            .field("left", &self.left)
            .field("tokens", &self.received.tokens)
            .field("handoffs", &self.handoffs)
            .finish_non_exhaustive()
    }
}

/// What the continuation needs of the request.
pub struct Request {
    pub plan: Plan,
    pub eligible: fn(&NodeSnapshot) -> bool,
    pub targets: Vec<Target>,
    pub model: String,
    pub dispatch: Dispatch,
    pub flow: Flow,
    pub max_continuations: u32,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("model", &self.model)
            .field("targets", &self.targets)
            .field("max_continuations", &self.max_continuations)
            .finish_non_exhaustive()
    }
}

impl Continuation {
    pub fn new(front: Arc<Front>, request: Request) -> Self {
        Self {
            front,
            plan: request.plan,
            eligible: request.eligible,
            targets: request.targets,
            model: request.model,
            dispatch: request.dispatch,
            flow: request.flow,
            left: request.max_continuations,
            received: Received::default(),
            handoffs: Vec::new(),
            spliced_after: None,
            mark_next: false,
            echo: None,
        }
    }

    /// What an answer on `node` watches to learn that it must move off it.
    pub fn watch(&self, node: &str) -> tokio_util::sync::CancellationToken {
        self.front.handover.watch(node)
    }

    /// Read one event of the stream on its way to the client (before any hand-off).
    pub fn observe(&mut self, data: &str) {
        self.received.observe(data);
    }

    /// Whether the answer may continue on another node.
    pub fn possible(&self) -> bool {
        self.left > 0 && !self.received.uncontinuable
    }

    /// Send the request again, to a node other than those lost, with the answer so far as a
    /// prefilled assistant turn. `Err` says why none could take it.
    pub async fn resume(&mut self, lost: &str) -> Result<Upstream, String> {
        self.left = self.left.saturating_sub(1);
        let view = self.front.nodes.published();
        let targets = self.next_targets(&view, lost);
        if targets.is_empty() {
            return Err(format!("no other node serves {} now", self.model));
        }
        let dispatch = Dispatch {
            wait_for_first: false,
            stream: true,
            max_tokens: self
                .dispatch
                .max_tokens
                .map(|m| m.saturating_sub(self.received.tokens).max(1)),
            ..self.dispatch
        };
        let (plan, received) = (&self.plan, &self.received);
        let upstream = forward(
            &self.front.nodes,
            &self.front,
            view,
            &targets,
            dispatch,
            &self.flow,
            |node, local| prefilled(plan(node, local)?, node, received),
        )
        .await
        .map_err(|e| e.to_string())?;
        if !upstream.response.status().is_success() {
            return Err(format!(
                "node {} answered {} to the continuation",
                upstream.node,
                upstream.response.status()
            ));
        }
        self.handoffs.push(Handoff {
            from: lost.to_owned(),
            to: upstream.node.clone(),
            after_tokens: self.received.tokens,
        });
        self.spliced_after = Some(self.received.tokens);
        self.mark_next = true;
        self.echo = (!self.received.text.is_empty()).then(|| Echo {
            expected: self.received.text.clone(),
            held: String::new(),
        });
        Ok(upstream)
    }

    /// The policy's targets not yet lost; with none left, every other healthy node serving
    /// the model that answers this stream's shape, least busy first.
    fn next_targets(&self, view: &Published, lost: &str) -> Vec<Target> {
        let gone = |node: &str| node == lost || self.handoffs.iter().any(|h| h.from == node);
        let snapshot = view.snapshot();
        let usable = |node: &str| {
            snapshot
                .node(node)
                .is_some_and(|n| n.healthy && (self.eligible)(n) && view.sender(node).is_some())
        };
        let mut targets: Vec<Target> = self
            .targets
            .iter()
            .filter(|t| !gone(&t.node) && usable(&t.node))
            .cloned()
            .collect();
        if targets.is_empty() {
            let mut others: Vec<(&NodeSnapshot, &str)> = snapshot
                .nodes
                .iter()
                .filter(|n| !gone(&n.name) && usable(&n.name))
                .filter_map(|n| Some((n, n.variant(&self.model)?.local.as_str())))
                .collect();
            others.sort_by_key(|(n, _)| self.front.admission.in_use(&n.name));
            targets = others
                .into_iter()
                .map(|(n, local)| Target {
                    node: n.name.as_str().into(),
                    model: local.into(),
                })
                .collect();
        }
        targets
    }

    /// One event of the stream, as the client receives it. Before a hand-off it is read on the
    /// way and passes as it is. After one: `None` to drop (the continuing node's opening role
    /// chunk), else the event's data rewritten to continue the first
    /// stream (its id, usage counting the tokens before the hand-off, the hand-off marked).
    pub fn splice<'a>(&mut self, data: &'a str) -> Option<Cow<'a, str>> {
        let Some(before) = self.spliced_after else {
            self.received.observe(data);
            return Some(Cow::Borrowed(data));
        };
        if data == "[DONE]" {
            return Some(Cow::Borrowed(data));
        }
        let Ok(mut event) = serde_json::from_str::<Value>(data) else {
            return Some(Cow::Borrowed(data));
        };
        if event.get("error").is_some() {
            return Some(Cow::Borrowed(data));
        }
        if opening_role_chunk(&event) {
            return None;
        }
        if let Some(echo) = self.echo.as_mut()
            && let Some(content) = event["choices"][0]["delta"]["content"].as_str()
        {
            let (content, settled) = echo.strip(content);
            if settled {
                self.echo = None;
            }
            if content.is_empty() && event["choices"][0]["finish_reason"].is_null() && event["usage"].is_null() {
                return None;
            }
            event["choices"][0]["delta"]["content"] = Value::String(content);
        }
        if let Some(id) = &self.received.id {
            event["id"] = id.clone();
        }
        if let Some(created) = &self.received.created {
            event["created"] = created.clone();
        }
        if let Some(usage) = event.get_mut("usage").filter(|u| u.is_object()) {
            add_earlier_tokens(usage, before);
        }
        if std::mem::take(&mut self.mark_next)
            && let Some(handoff) = self.handoffs.last()
        {
            event["switchyard"] = json!({ "continued": handoff });
        }
        let event = event.to_string();
        self.received.observe(&event);
        Some(Cow::Owned(event))
    }
}

/// A chunk that only opens the assistant's turn (a role, no content, no finish): the client
/// has had one already.
fn opening_role_chunk(event: &Value) -> bool {
    let Some(choice) = event["choices"].as_array().and_then(|c| c.first()) else {
        return false;
    };
    let delta = &choice["delta"];
    delta.get("role").is_some()
        && delta["content"].as_str().is_none_or(str::is_empty)
        && delta.get("tool_calls").is_none()
        && choice["finish_reason"].is_null()
        && event["usage"].is_null()
}

/// The continuing node counts the earlier tokens as prompt (they were its prefill); the client
/// received them as answer.
fn add_earlier_tokens(usage: &mut Value, before: u32) {
    let before = u64::from(before);
    let prompt = usage["prompt_tokens"].as_u64().unwrap_or(0).saturating_sub(before);
    let completion = usage["completion_tokens"].as_u64().unwrap_or(0) + before;
    usage["prompt_tokens"] = json!(prompt);
    usage["completion_tokens"] = json!(completion);
    usage["total_tokens"] = json!(prompt + completion);
}

/// `outbound` (an OpenAI chat request) with the answer so far as a final assistant message,
/// and the tokens left to generate.
fn prefilled(outbound: Outbound, node: &NodeSnapshot, received: &Received) -> Result<Outbound, super::FrontError> {
    let mut chat: Value = serde_json::from_slice(&outbound.body)
        .map_err(|e| super::FrontError::BadRequest(format!("the request cannot be continued: {e}")))?;
    if !received.text.is_empty() {
        if let Some(messages) = chat["messages"].as_array_mut() {
            messages.push(json!({ "role": "assistant", "content": received.text }));
        }
        if node.runtime == RuntimeKind::Vllm {
            chat["continue_final_message"] = json!(true);
            chat["add_generation_prompt"] = json!(false);
        }
    }
    for field in ["max_tokens", "max_completion_tokens"] {
        if let Some(limit) = chat[field].as_u64() {
            chat[field] = json!(limit.saturating_sub(u64::from(received.tokens)).max(1));
        }
    }
    chat["stream"] = json!(true);
    Ok(Outbound {
        path: CHAT_PATH.to_owned(),
        body: bytes::Bytes::from(chat.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(delta: Value, finish: Option<&str>) -> String {
        json!({ "id": "chatcmpl-b", "created": 2, "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
            .to_string()
    }

    #[test]
    fn what_the_client_received_is_counted_and_a_tool_call_stops_continuation() {
        let mut received = Received::default();
        received.observe(&chunk(json!({"role": "assistant", "content": ""}), None));
        received.observe(&chunk(json!({"content": "Hello"}), None));
        received.observe(&chunk(json!({"content": ", world"}), None));
        received.observe("[DONE]");
        assert_eq!((received.text.as_str(), received.tokens), ("Hello, world", 2));
        assert_eq!(received.id, Some(json!("chatcmpl-b")));
        assert!(!received.uncontinuable);
        received.observe(&chunk(json!({"tool_calls": [{"index": 0}]}), None));
        assert!(received.uncontinuable);
    }

    #[test]
    fn the_prefill_is_the_answer_so_far_and_vllm_is_told_to_continue_it() {
        let node = |runtime: &str| -> NodeSnapshot {
            serde_json::from_value(
                json!({ "name": "b", "runtime": runtime, "healthy": true, "max_concurrency": 1, "max_tokens": 4096 }),
            )
            .expect("node")
        };
        let received = Received {
            text: "Once upon".to_owned(),
            tokens: 2,
            ..Received::default()
        };
        let outbound = || {
            Outbound {
            path: CHAT_PATH.to_owned(),
            body: bytes::Bytes::from(
                json!({ "model": "m", "messages": [{"role": "user", "content": "a story"}], "max_tokens": 10, "stream": true })
                    .to_string(),
            ),
        }
        };
        let sent = prefilled(outbound(), &node("llama-cpp"), &received).expect("prefilled");
        let chat: Value = serde_json::from_slice(&sent.body).expect("json");
        assert_eq!(
            chat["messages"][1],
            json!({"role": "assistant", "content": "Once upon"})
        );
        assert_eq!(chat["max_tokens"], 8);
        assert!(chat.get("continue_final_message").is_none());
        let sent = prefilled(outbound(), &node("vllm"), &received).expect("prefilled");
        let chat: Value = serde_json::from_slice(&sent.body).expect("json");
        assert_eq!(chat["continue_final_message"], true);
        assert_eq!(chat["add_generation_prompt"], false);
    }

    #[test]
    fn a_prefill_the_node_sends_back_is_dropped_and_new_text_is_not() {
        let whole = |content: &str| Echo {
            expected: content.to_owned(),
            held: String::new(),
        };
        // llama.cpp's server: the prefill comes back whole in the first delta.
        assert_eq!(whole("Once upon").strip("Once upon a"), (" a".to_owned(), true));
        // In pieces, then the new text.
        let mut echo = whole("Once upon");
        assert_eq!(echo.strip("Once"), (String::new(), false));
        assert_eq!(echo.strip(" upon"), (String::new(), true));
        // New text from the start (vLLM's `continue_final_message`): nothing is lost.
        let mut echo = whole("Once upon");
        assert_eq!(echo.strip("Once"), (String::new(), false));
        assert_eq!(echo.strip(" more"), ("Once more".to_owned(), true));
        assert_eq!(whole("Once upon").strip(" a time"), (" a time".to_owned(), true));
    }

    #[test]
    fn spliced_chunks_continue_the_first_stream_and_usage_adds_up() {
        let mut received = Received::default();
        received.observe(
            &json!({ "id": "chatcmpl-a", "created": 1, "choices": [{ "index": 0, "delta": {"content": "One"} }] })
                .to_string(),
        );
        let mut usage = json!({ "prompt_tokens": 30, "completion_tokens": 5 });
        add_earlier_tokens(&mut usage, 3);
        assert_eq!(
            usage,
            json!({ "prompt_tokens": 27, "completion_tokens": 8, "total_tokens": 35 })
        );
        assert!(opening_role_chunk(
            &serde_json::from_str(&chunk(json!({"role": "assistant", "content": null}), None)).expect("json")
        ));
        assert!(!opening_role_chunk(
            &serde_json::from_str(&chunk(json!({"role": "assistant", "content": " two"}), None)).expect("json")
        ));
        assert!(!opening_role_chunk(
            &serde_json::from_str(&chunk(json!({}), Some("stop"))).expect("json")
        ));
        assert_eq!(received.id, Some(json!("chatcmpl-a")));
    }
}
