//! OpenAI's request and response shapes as the simulated runtime's server speaks them:
//! parsing chat, completion and embedding requests, and rendering replies, SSE chunks and
//! errors.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::driver::{ChatMessage, ChatRequest, CompletionRequest, EmbedRequest, Sampling, Usage};

#[derive(Debug, Deserialize)]
pub struct ChatBody {
    pub model: String,
    pub messages: Vec<MessageBody>,
    #[serde(default)]
    pub stream: bool,
    #[serde(flatten)]
    pub sampling: SamplingBody,
}

#[derive(Debug, Deserialize)]
pub struct MessageBody {
    pub role: String,
    #[serde(default)]
    pub content: Content,
}

/// A message's content: a string, or a list of parts of which the text ones count.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Value>),
    #[default]
    Missing,
}

impl Content {
    fn text(&self) -> String {
        match self {
            Content::Text(text) => text.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(""),
            Content::Missing => String::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct SamplingBody {
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Option<Stop>,
    pub seed: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl SamplingBody {
    fn sampling(&self) -> Sampling {
        Sampling {
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            temperature: self.temperature,
            top_p: self.top_p,
            stop: match &self.stop {
                Some(Stop::One(s)) => vec![s.clone()],
                Some(Stop::Many(v)) => v.clone(),
                None => Vec::new(),
            },
            seed: self.seed,
        }
    }
}

impl ChatBody {
    pub fn request(&self) -> ChatRequest {
        ChatRequest {
            model: self.model.clone(),
            messages: self
                .messages
                .iter()
                .map(|m| ChatMessage {
                    role: m.role.clone(),
                    content: m.content.text(),
                })
                .collect(),
            sampling: self.sampling.sampling(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct CompletionBody {
    pub model: String,
    pub prompt: Prompt,
    #[serde(default)]
    pub stream: bool,
    #[serde(flatten)]
    pub sampling: SamplingBody,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    One(String),
    Many(Vec<String>),
}

impl CompletionBody {
    pub fn request(&self) -> CompletionRequest {
        let prompt = match &self.prompt {
            Prompt::One(p) => p.clone(),
            Prompt::Many(v) => v.join("\n"),
        };
        CompletionRequest {
            model: self.model.clone(),
            prompt,
            sampling: self.sampling.sampling(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct EmbeddingBody {
    pub model: String,
    pub input: Prompt,
}

impl EmbeddingBody {
    pub fn request(&self) -> EmbedRequest {
        let input = match &self.input {
            Prompt::One(p) => vec![p.clone()],
            Prompt::Many(v) => v.clone(),
        };
        EmbedRequest {
            model: self.model.clone(),
            input,
        }
    }
}

/// The kind of generation, for ids and object names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

/// `usage` as vLLM writes it with `--enable-prompt-tokens-details`.
pub fn usage_json(usage: Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": { "cached_tokens": usage.cached_tokens },
    })
}

pub fn whole_reply(
    kind: Kind,
    id: &str,
    created: u64,
    model: &str,
    text: &str,
    finish_reason: &str,
    usage: Usage,
) -> Value {
    match kind {
        Kind::Chat => json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": finish_reason }],
            "usage": usage_json(usage),
        }),
        Kind::Completion => json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{ "index": 0, "text": text, "finish_reason": finish_reason, "logprobs": null }],
            "usage": usage_json(usage),
        }),
    }
}

/// One SSE chunk carrying `text` (and `finish_reason` on the last).
pub fn chunk(
    kind: Kind,
    id: &str,
    created: u64,
    model: &str,
    text: Option<&str>,
    finish_reason: Option<&str>,
) -> Value {
    match kind {
        Kind::Chat => {
            let delta = match text {
                Some(t) => json!({ "role": "assistant", "content": t }),
                None => json!({}),
            };
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish_reason }],
            })
        }
        Kind::Completion => json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{ "index": 0, "text": text.unwrap_or(""), "finish_reason": finish_reason, "logprobs": null }],
        }),
    }
}

pub fn error_body(message: &str, kind: &str, code: u16) -> Value {
    json!({ "error": { "message": message, "type": kind, "code": code } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_bodies_accept_string_and_part_contents_and_both_token_limits() {
        let body: ChatBody = serde_json::from_value(json!({
            "model": "m", "stream": true, "max_completion_tokens": 7, "stop": "x", "user": "ignored",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]}],
        }))
        .expect("parses");
        let req = body.request();
        assert_eq!(req.messages[1].content, "hi");
        assert_eq!(req.sampling.max_tokens, Some(7));
        assert_eq!(req.sampling.stop, ["x"]);
        assert!(body.stream);
    }
}
