//! Ollama's API in front of any runtime: requests become OpenAI chat or embedding requests
//! for the agent, and the agent's SSE stream becomes Ollama's NDJSON, translated
//! incrementally, ending in the `done` object with its counters.

use serde_json::{Value, json};

/// `/api/chat` or `/api/generate` as an OpenAI chat body for the node's `local` model.
pub fn to_openai_chat(body: &Value, local: &str, generate: bool) -> Value {
    let messages = if generate {
        let mut messages = Vec::new();
        if let Some(system) = body["system"].as_str() {
            messages.push(json!({ "role": "system", "content": system }));
        }
        messages.push(json!({ "role": "user", "content": body["prompt"].as_str().unwrap_or_default() }));
        Value::Array(messages)
    } else {
        body["messages"].clone()
    };
    let options = &body["options"];
    let mut out = json!({ "model": local, "messages": messages, "stream": true });
    if let Some(n) = options["num_predict"].as_i64().filter(|n| *n > 0) {
        out["max_tokens"] = json!(n);
    }
    for key in ["temperature", "top_p", "seed", "stop"] {
        if !options[key].is_null() {
            out[key] = options[key].clone();
        }
    }
    out
}

/// `/api/embed` (`input`: a string or a list) as an OpenAI embeddings body.
pub fn to_openai_embeddings(body: &Value, local: &str) -> Value {
    json!({ "model": local, "input": body["input"].clone() })
}

/// OpenAI's embeddings reply as `/api/embed`'s.
pub fn from_openai_embeddings(reply: &Value, logical: &str) -> Value {
    let embeddings: Vec<Value> = reply["data"]
        .as_array()
        .map(|d| d.iter().map(|e| e["embedding"].clone()).collect())
        .unwrap_or_default();
    json!({ "model": logical, "embeddings": embeddings })
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Translates the agent's OpenAI SSE events into Ollama NDJSON lines.
#[derive(Debug)]
pub struct NdjsonTranslator {
    logical: String,
    generate: bool,
    started: std::time::Instant,
    first_token: Option<std::time::Instant>,
    text: String,
    finish_reason: Option<String>,
    prompt_tokens: u64,
    completion_tokens: u64,
    deltas: u64,
}

impl NdjsonTranslator {
    pub fn new(logical: &str, generate: bool, started: std::time::Instant) -> Self {
        Self {
            logical: logical.to_owned(),
            generate,
            started,
            first_token: None,
            text: String::new(),
            finish_reason: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            deltas: 0,
        }
    }

    fn piece(&self, content: &str, done: bool) -> Value {
        if self.generate {
            json!({ "model": self.logical, "created_at": now_rfc3339(), "response": content, "done": done })
        } else {
            json!({ "model": self.logical, "created_at": now_rfc3339(), "message": { "role": "assistant", "content": content }, "done": done })
        }
    }

    /// One SSE event's data -> the NDJSON line to send now, if any. Also keeps the whole text.
    pub fn event(&mut self, data: &str) -> Result<Option<Value>, String> {
        if data == "[DONE]" {
            return Ok(None);
        }
        let value: Value = serde_json::from_str(data).map_err(|e| format!("unreadable event from the node: {e}"))?;
        if let Some(error) = value.get("error") {
            return Err(error["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| error.to_string()));
        }
        if let Some(usage) = value.get("usage").filter(|u| !u.is_null()) {
            self.prompt_tokens = usage["prompt_tokens"].as_u64().unwrap_or(self.prompt_tokens);
            self.completion_tokens = usage["completion_tokens"].as_u64().unwrap_or(self.completion_tokens);
        }
        let choice = &value["choices"][0];
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish_reason = Some(reason.to_owned());
        }
        match choice["delta"]["content"].as_str().filter(|t| !t.is_empty()) {
            Some(content) => {
                self.first_token.get_or_insert_with(std::time::Instant::now);
                self.deltas += 1;
                self.text.push_str(content);
                Ok(Some(self.piece(content, false)))
            }
            None => Ok(None),
        }
    }

    /// The final `done` object (streaming), or the whole reply (not streaming).
    pub fn done(&self, whole: bool) -> Value {
        let now = std::time::Instant::now();
        let first = self.first_token.unwrap_or(now);
        let nanos = |d: std::time::Duration| d.as_nanos() as u64;
        let mut last = self.piece(if whole { &self.text } else { "" }, true);
        last["done_reason"] = json!(self.finish_reason.as_deref().unwrap_or("stop"));
        last["total_duration"] = json!(nanos(now - self.started));
        last["load_duration"] = json!(0);
        last["prompt_eval_count"] = json!(self.prompt_tokens);
        last["prompt_eval_duration"] = json!(nanos(first - self.started));
        last["eval_count"] = json!(if self.completion_tokens > 0 {
            self.completion_tokens
        } else {
            self.deltas
        });
        last["eval_duration"] = json!(nanos(now - first));
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_becomes_a_chat_with_the_system_prompt_and_options_map_to_openai_fields() {
        let body = json!({ "model": "m", "prompt": "hi", "system": "be brief", "options": { "num_predict": 7, "temperature": 0.0, "stop": ["\n"] } });
        let chat = to_openai_chat(&body, "local-m", true);
        assert_eq!(chat["model"], "local-m");
        assert_eq!(chat["messages"][0]["role"], "system");
        assert_eq!(chat["messages"][1]["content"], "hi");
        assert_eq!(chat["max_tokens"], 7);
        assert_eq!(chat["stop"][0], "\n");
        assert_eq!(chat["stream"], true);
    }

    #[test]
    fn sse_chunks_become_ndjson_lines_and_a_done_object_with_counters() {
        let mut t = NdjsonTranslator::new("qwen", false, std::time::Instant::now());
        let line = t
            .event(r#"{"choices":[{"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}"#)
            .expect("ok")
            .expect("line");
        assert_eq!(line["message"]["content"], "Hel");
        assert_eq!(line["done"], false);
        t.event(r#"{"choices":[{"delta":{"content":"lo"},"finish_reason":null}]}"#)
            .expect("ok");
        t.event(
            r#"{"choices":[{"delta":{},"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#,
        )
        .expect("ok");
        assert!(t.event("[DONE]").expect("ok").is_none());
        let done = t.done(true);
        assert_eq!(done["message"]["content"], "Hello");
        assert_eq!(done["done_reason"], "length");
        assert_eq!(done["eval_count"], 2);
        assert_eq!(done["prompt_eval_count"], 5);
        assert!(t.event(r#"{"error":{"message":"node died"}}"#).is_err());
    }
}
