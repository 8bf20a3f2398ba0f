//! `POST /cache/probe`: how many of a request's prompt tokens the runtime holds. The agent
//! has the prompt tokenized by the runtime itself (vLLM's `POST /tokenize`, with the chat
//! template applied as for the request) and matches the tokens against its copy of the
//! runtime's cache.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::KvEvents;

/// What the controller asks: the request's body as the client sent it, and the model's
/// name on this node.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeRequest {
    pub model: String,
    pub body: Value,
}

/// The answer: the prompt's tokens and how many of them the runtime holds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeAnswer {
    pub prompt_tokens: u32,
    pub cached_tokens: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("this agent keeps no current copy of the runtime's cache")]
    NoCopy,
    #[error("the request has no prompt the runtime can tokenize")]
    NoPrompt,
    #[error("the runtime did not tokenize the prompt: {0}")]
    Tokenize(String),
}

/// vLLM's `/tokenize` request for the prompt of `body` (OpenAI chat or completions, or
/// Anthropic messages with their `system`), named `model`.
pub fn tokenize_request(model: &str, body: &Value) -> Option<Value> {
    if let Some(messages) = body["messages"].as_array() {
        let mut all = Vec::with_capacity(messages.len() + 1);
        match &body["system"] {
            Value::Null => {}
            Value::String(text) => all.push(json!({"role": "system", "content": text})),
            // Anthropic's system blocks: their text, as vLLM's Anthropic endpoint joins them.
            Value::Array(blocks) => {
                let text: Vec<&str> = blocks.iter().filter_map(|b| b["text"].as_str()).collect();
                all.push(json!({"role": "system", "content": text.join("\n")}));
            }
            _ => return None,
        }
        all.extend(messages.iter().cloned());
        let mut request = json!({"model": model, "messages": all, "add_generation_prompt": true});
        if body["tools"].is_array() {
            request["tools"] = body["tools"].clone();
        }
        return Some(request);
    }
    body["prompt"]
        .as_str()
        .map(|prompt| json!({"model": model, "prompt": prompt}))
}

/// Tokenize `request`'s prompt on the runtime at `base_url` and match it against `events`.
pub async fn probe(
    events: &KvEvents,
    client: &reqwest::Client,
    base_url: &str,
    request: &ProbeRequest,
) -> Result<ProbeAnswer, ProbeError> {
    if !events.figures().current {
        return Err(ProbeError::NoCopy);
    }
    let tokenize = tokenize_request(&request.model, &request.body).ok_or(ProbeError::NoPrompt)?;
    let failed = |e: reqwest::Error| ProbeError::Tokenize(e.to_string());
    let answer: Value = client
        .post(format!("{}/tokenize", base_url.trim_end_matches('/')))
        .json(&tokenize)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(failed)?
        .json()
        .await
        .map_err(failed)?;
    let tokens: Vec<u32> = answer["tokens"]
        .as_array()
        .and_then(|tokens| tokens.iter().map(|t| t.as_u64().map(|t| t as u32)).collect())
        .ok_or_else(|| ProbeError::Tokenize("its answer has no `tokens` list".into()))?;
    let cached_tokens = events.cached_tokens(&tokens).ok_or(ProbeError::NoCopy)?;
    Ok(ProbeAnswer {
        prompt_tokens: tokens.len().min(u32::MAX as usize) as u32,
        cached_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_anthropic_and_completion_prompts_become_tokenize_requests() {
        let chat = json!({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]});
        assert_eq!(
            tokenize_request("tiny", &chat),
            Some(json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                        "add_generation_prompt": true, "tools": [{"type": "function"}]}))
        );
        let anthropic = json!({"system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                               "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(
            tokenize_request("tiny", &anthropic).expect("a request")["messages"][0],
            json!({"role": "system", "content": "a\nb"})
        );
        assert_eq!(
            tokenize_request("tiny", &json!({"prompt": "once"})),
            Some(json!({"model": "tiny", "prompt": "once"}))
        );
        assert_eq!(tokenize_request("tiny", &json!({"input": "x"})), None);
    }
}
