//! Ollama's API in front of any runtime: requests become OpenAI chat or embedding requests
//! for the agent, and the agent's SSE stream becomes Ollama's NDJSON, translated
//! incrementally, ending in the `done` object with its counters.

use serde_json::{Value, json};

/// Ollama options with an OpenAI field or a runtime extension (vLLM, llama.cpp and
/// `mlx_lm.server` take `top_k`, `min_p` and `repeat_penalty` in the body).
const OPTIONS: [(&str, &str); 9] = [
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("top_k", "top_k"),
    ("min_p", "min_p"),
    ("seed", "seed"),
    ("stop", "stop"),
    ("repeat_penalty", "repeat_penalty"),
    ("presence_penalty", "presence_penalty"),
    ("frequency_penalty", "frequency_penalty"),
];

/// `/api/chat` or `/api/generate` as an OpenAI chat body for the node's `local` model:
/// messages (images as `image_url` data URIs, tool calls and tool results), tools, `format`
/// as `response_format`, and every option with an equivalent. Fields with none are named in
/// a debug log, never guessed at.
/// How a runtime takes a JSON schema for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaStyle {
    /// OpenAI's `{"type": "json_schema", "json_schema": {"name", "schema"}}` (vLLM, LM Studio).
    OpenAi,
    /// llama.cpp's server: `{"type": "json_object", "schema": ...}` (it refuses `json_schema`).
    LlamaCpp,
}

pub fn to_openai_chat(body: &Value, local: &str, generate: bool, schema_style: SchemaStyle) -> Value {
    let messages = if generate {
        let mut messages = Vec::new();
        if let Some(system) = body["system"].as_str() {
            messages.push(json!({ "role": "system", "content": system }));
        }
        let mut user = json!({ "role": "user", "content": body["prompt"].as_str().unwrap_or_default() });
        if let Some(images) = body["images"].as_array() {
            user["images"] = Value::Array(images.clone());
        }
        messages.push(to_openai_message(&user, &mut ToolCallIds::default()));
        Value::Array(messages)
    } else {
        let mut ids = ToolCallIds::default();
        Value::Array(
            body["messages"]
                .as_array()
                .map(|m| m.iter().map(|m| to_openai_message(m, &mut ids)).collect())
                .unwrap_or_default(),
        )
    };
    let options = &body["options"];
    let mut out =
        json!({ "model": local, "messages": messages, "stream": true, "stream_options": { "include_usage": true } });
    if let Some(n) = options["num_predict"].as_i64().filter(|n| *n > 0) {
        out["max_tokens"] = json!(n);
    }
    for (ollama, openai) in OPTIONS {
        if !options[ollama].is_null() {
            out[openai] = options[ollama].clone();
        }
    }
    if let Some(tools) = body["tools"].as_array() {
        out["tools"] = Value::Array(tools.clone());
    }
    match &body["format"] {
        Value::String(format) if format == "json" => out["response_format"] = json!({ "type": "json_object" }),
        schema @ Value::Object(_) => {
            out["response_format"] = match schema_style {
                SchemaStyle::OpenAi => {
                    json!({ "type": "json_schema", "json_schema": { "name": "format", "schema": schema } })
                }
                SchemaStyle::LlamaCpp => json!({ "type": "json_object", "schema": schema }),
            };
        }
        _ => {}
    }
    let untranslated: Vec<&str> = options
        .as_object()
        .map(|o| {
            o.keys()
                .map(String::as_str)
                .filter(|k| *k != "num_predict" && !OPTIONS.iter().any(|(o, _)| o == k))
                .collect()
        })
        .unwrap_or_default();
    let dropped: Vec<&str> = ["keep_alive", "think", "raw", "suffix", "template", "context"]
        .into_iter()
        .filter(|k| !body[*k].is_null())
        .chain(untranslated)
        .collect();
    if !dropped.is_empty() {
        tracing::debug!(
            ?dropped,
            "Ollama fields with no OpenAI equivalent were not sent to the node"
        );
    }
    out
}

/// Ids for tool calls: Ollama has none, OpenAI pairs each tool result with its call's id.
#[derive(Debug, Default)]
struct ToolCallIds {
    issued: usize,
    answered: usize,
}

fn to_openai_message(message: &Value, ids: &mut ToolCallIds) -> Value {
    let role = message["role"].as_str().unwrap_or("user");
    let text = message["content"].as_str().unwrap_or_default();
    let mut out = json!({ "role": role, "content": text });
    if let Some(images) = message["images"].as_array().filter(|i| !i.is_empty()) {
        let mut parts = vec![json!({ "type": "text", "text": text })];
        parts.extend(images.iter().filter_map(Value::as_str).map(|data| {
            json!({ "type": "image_url", "image_url": { "url": format!("data:{};base64,{data}", image_type(data)) } })
        }));
        out["content"] = Value::Array(parts);
    }
    if let Some(calls) = message["tool_calls"].as_array() {
        let calls: Vec<Value> = calls
            .iter()
            .map(|call| {
                let id = format!("call_{}", ids.issued);
                ids.issued += 1;
                let arguments = match &call["function"]["arguments"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                json!({ "id": id, "type": "function", "function": { "name": call["function"]["name"], "arguments": arguments } })
            })
            .collect();
        out["tool_calls"] = Value::Array(calls);
    }
    if role == "tool" {
        out["tool_call_id"] = json!(format!("call_{}", ids.answered));
        ids.answered += 1;
    }
    out
}

/// The media type of a base64 image, from its first bytes.
fn image_type(base64: &str) -> &'static str {
    match base64.as_bytes().get(..4) {
        Some(b"/9j/") => "image/jpeg",
        Some(b"R0lG") => "image/gif",
        Some(b"UklG") => "image/webp",
        _ => "image/png",
    }
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
    thinking: String,
    /// Streamed tool calls by index: (name, arguments so far).
    tool_calls: Vec<(String, String)>,
    saw_done: bool,
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
            thinking: String::new(),
            tool_calls: Vec::new(),
            saw_done: false,
        }
    }

    /// Whether the node's stream ended properly (a finish reason or `[DONE]`).
    pub fn finished(&self) -> bool {
        self.saw_done || self.finish_reason.is_some()
    }

    /// The tool calls collected so far, in Ollama's shape (arguments as JSON objects).
    fn ollama_tool_calls(&self) -> Value {
        Value::Array(
            self.tool_calls
                .iter()
                .map(|(name, arguments)| {
                    let arguments: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!(arguments));
                    json!({ "function": { "name": name, "arguments": arguments } })
                })
                .collect(),
        )
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
        let Some(value) = super::relay::openai_event(data)? else {
            self.saw_done = true;
            return Ok(None);
        };
        if let Some(usage) = value.get("usage").filter(|u| !u.is_null()) {
            self.prompt_tokens = usage["prompt_tokens"].as_u64().unwrap_or(self.prompt_tokens);
            self.completion_tokens = usage["completion_tokens"].as_u64().unwrap_or(self.completion_tokens);
        }
        let choice = &value["choices"][0];
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish_reason = Some(reason.to_owned());
        }
        let delta = &choice["delta"];
        if let Some(calls) = delta["tool_calls"].as_array() {
            for call in calls {
                let index = call["index"].as_u64().unwrap_or(0).min(64) as usize;
                if self.tool_calls.len() <= index {
                    self.tool_calls.resize(index + 1, Default::default());
                }
                let (name, arguments) = &mut self.tool_calls[index];
                if let Some(n) = call["function"]["name"].as_str() {
                    name.push_str(n);
                }
                if let Some(a) = call["function"]["arguments"].as_str() {
                    arguments.push_str(a);
                }
            }
        }
        let reasoning = delta["reasoning_content"]
            .as_str()
            .or_else(|| delta["reasoning"].as_str());
        if let Some(thinking) = reasoning.filter(|t| !t.is_empty()) {
            self.thinking.push_str(thinking);
        }
        match delta["content"].as_str().filter(|t| !t.is_empty()) {
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
        if !self.generate {
            if !self.tool_calls.is_empty() {
                last["message"]["tool_calls"] = self.ollama_tool_calls();
            }
            if whole && !self.thinking.is_empty() {
                last["message"]["thinking"] = json!(self.thinking);
            }
        } else if whole && !self.thinking.is_empty() {
            last["thinking"] = json!(self.thinking);
        }
        let reason = match self.finish_reason.as_deref() {
            Some("tool_calls") | None => "stop",
            Some(other) => other,
        };
        last["done_reason"] = json!(reason);
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

/// An answer's translation for an Ollama client: a line per delta and the `done` object, or
/// the one object when the client did not ask for a stream.
#[derive(Debug)]
pub struct OllamaTranslation {
    pub translator: NdjsonTranslator,
    pub stream: bool,
}

fn line(value: &Value) -> Vec<u8> {
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    line
}

impl super::relay::Translation for OllamaTranslation {
    fn event(&mut self, data: &str) -> Result<Vec<u8>, String> {
        Ok(match self.translator.event(data)? {
            Some(piece) if self.stream => line(&piece),
            _ => Vec::new(),
        })
    }

    fn finished(&self) -> bool {
        self.translator.finished()
    }

    fn end(&mut self) -> Vec<u8> {
        line(&self.translator.done(!self.stream))
    }

    fn failure(&self, message: &str) -> bytes::Bytes {
        bytes::Bytes::from(line(&json!({ "error": message })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_becomes_a_chat_with_the_system_prompt_and_options_map_to_openai_fields() {
        let body = json!({ "model": "m", "prompt": "hi", "system": "be brief", "options": { "num_predict": 7, "temperature": 0.0, "stop": ["\n"] } });
        let chat = to_openai_chat(&body, "local-m", true, SchemaStyle::OpenAi);
        assert_eq!(chat["model"], "local-m");
        assert_eq!(chat["messages"][0]["role"], "system");
        assert_eq!(chat["messages"][1]["content"], "hi");
        assert_eq!(chat["max_tokens"], 7);
        assert_eq!(chat["stop"][0], "\n");
        assert_eq!(chat["stream"], true);
    }

    #[test]
    fn tools_images_tool_results_format_and_options_carry_over_and_the_rest_is_not_guessed() {
        let body = json!({
            "model": "m",
            "messages": [
                { "role": "user", "content": "what is this?", "images": ["iVBORw0KGgo="] },
                { "role": "assistant", "content": "", "tool_calls": [{ "function": { "name": "look", "arguments": { "x": 1 } } }] },
                { "role": "tool", "content": "a cat", "tool_name": "look" },
            ],
            "tools": [{ "type": "function", "function": { "name": "look", "parameters": { "type": "object" } } }],
            "format": { "type": "object", "properties": { "a": { "type": "integer" } } },
            "options": { "top_k": 1, "min_p": 0.05, "repeat_penalty": 1.1, "presence_penalty": 0.5, "num_ctx": 4096 },
            "keep_alive": "5m",
        });
        let chat = to_openai_chat(&body, "local", false, SchemaStyle::OpenAi);
        assert_eq!(
            chat["messages"][0]["content"][0],
            json!({ "type": "text", "text": "what is this?" })
        );
        assert_eq!(
            chat["messages"][0]["content"][1]["image_url"]["url"],
            "data:image/png;base64,iVBORw0KGgo="
        );
        assert_eq!(
            chat["messages"][1]["tool_calls"][0]["function"]["arguments"],
            "{\"x\":1}"
        );
        assert_eq!(chat["messages"][1]["tool_calls"][0]["id"], "call_0");
        assert_eq!(chat["messages"][2]["tool_call_id"], "call_0");
        assert_eq!(chat["tools"], body["tools"]);
        assert_eq!(chat["response_format"]["type"], "json_schema");
        assert_eq!(chat["response_format"]["json_schema"]["schema"], body["format"]);
        for key in ["top_k", "min_p", "repeat_penalty", "presence_penalty"] {
            assert_eq!(chat[key], body["options"][key], "{key}");
        }
        assert!(chat.get("num_ctx").is_none() && chat.get("keep_alive").is_none());
        let llama = to_openai_chat(
            &json!({ "model": "m", "format": "json" }),
            "l",
            true,
            SchemaStyle::LlamaCpp,
        );
        assert_eq!(llama["response_format"], json!({ "type": "json_object" }));
        let llama = to_openai_chat(&body, "l", false, SchemaStyle::LlamaCpp);
        assert_eq!(
            llama["response_format"],
            json!({ "type": "json_object", "schema": body["format"] })
        );
    }

    #[test]
    fn generated_requests_and_stream_events_translate_without_panicking() {
        let mut rng = crate::generated::Rng::new(0x0001_1a3a);
        for case in 0..2000 {
            let body = rng.value(0);
            for style in [SchemaStyle::OpenAi, SchemaStyle::LlamaCpp] {
                let chat = to_openai_chat(&body, "local", rng.below(2) == 0, style);
                assert_eq!(chat["model"], "local", "case {case}");
                assert!(chat["messages"].is_array(), "case {case}");
            }
            let mut translator = NdjsonTranslator::new("m", rng.below(2) == 0, std::time::Instant::now());
            for _ in 0..rng.below(6) {
                let event = match rng.below(3) {
                    0 => rng.value(0).to_string(),
                    1 => serde_json::json!({ "choices": [{ "delta": rng.value(1), "finish_reason": rng.value(2) }], "usage": rng.value(2) })
                        .to_string(),
                    _ => rng.text(),
                };
                let _ = translator.event(&event);
            }
            let done = translator.done(rng.below(2) == 0);
            assert_eq!(done["done"], true, "case {case}");
        }
    }

    #[test]
    fn streamed_tool_calls_come_back_in_ollamas_shape() {
        let mut t = NdjsonTranslator::new("qwen", false, std::time::Instant::now());
        t.event(r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"look","arguments":"{\"x\""}}]}}]}"#)
            .expect("ok");
        t.event(r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":": 1}"}}]},"finish_reason":"tool_calls"}]}"#)
            .expect("ok");
        assert!(t.finished());
        let done = t.done(true);
        assert_eq!(done["message"]["tool_calls"][0]["function"]["name"], "look");
        assert_eq!(
            done["message"]["tool_calls"][0]["function"]["arguments"],
            json!({ "x": 1 })
        );
        assert_eq!(done["done_reason"], "stop");
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
