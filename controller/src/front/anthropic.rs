//! Anthropic's Messages API in front of a runtime that does not speak it (`mlx_lm.server`,
//! llama.cpp's Python server, the simulated runtime): a request becomes an OpenAI chat
//! request (system prompt, text and image blocks, tool use and tool results, tools and tool
//! choice, sampling), and the node's SSE stream becomes Anthropic's events (`message_start`,
//! a `content_block_*` triple per text or tool-use block, `message_delta` with the stop
//! reason and usage, `message_stop`), translated incrementally; or one `message` object when
//! the client did not ask for a stream. Runtimes that speak it (vLLM, Ollama, llama.cpp's own
//! server) receive the client's bytes instead.

use serde_json::{Value, json};

/// Whether a node's runtime answers `/v1/messages` itself. llama.cpp's own server
/// (`llama-server`, configured as an `openai` runtime), vLLM and Ollama (0.14 and later) do;
/// `mlx_lm.server`, llama.cpp's Python server and the simulated runtime do not.
pub fn speaks_anthropic(runtime: switchyard_protocol::RuntimeKind) -> bool {
    use switchyard_protocol::RuntimeKind;
    !matches!(
        runtime,
        RuntimeKind::Mlx | RuntimeKind::LlamaCpp | RuntimeKind::Simulated
    )
}

/// The text of a `system` field or a content list's text blocks.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// A Messages request as an OpenAI chat request for the node's `local` model, streamed with
/// its usage (the answer is translated from the stream either way).
pub fn to_openai_chat(body: &Value, local: &str) -> Value {
    let mut messages = Vec::new();
    let system = text_of(&body["system"]);
    if !system.is_empty() {
        messages.push(json!({ "role": "system", "content": system }));
    }
    for message in body["messages"].as_array().into_iter().flatten() {
        messages.extend(to_openai_messages(message));
    }
    let mut out =
        json!({ "model": local, "messages": messages, "stream": true, "stream_options": { "include_usage": true } });
    for (anthropic, openai) in [
        ("max_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("stop_sequences", "stop"),
    ] {
        if !body[anthropic].is_null() {
            out[openai] = body[anthropic].clone();
        }
    }
    if let Some(tools) = body["tools"].as_array() {
        out["tools"] = Value::Array(
            tools
                .iter()
                .filter(|t| !t["name"].is_null())
                .map(|t| {
                    json!({ "type": "function", "function": {
                        "name": t["name"], "description": t["description"].as_str().unwrap_or_default(),
                        "parameters": if t["input_schema"].is_null() { json!({"type": "object"}) } else { t["input_schema"].clone() },
                    }})
                })
                .collect(),
        );
    }
    let choice = &body["tool_choice"];
    match choice["type"].as_str() {
        Some("auto") => out["tool_choice"] = json!("auto"),
        Some("any") => out["tool_choice"] = json!("required"),
        Some("none") => out["tool_choice"] = json!("none"),
        Some("tool") => out["tool_choice"] = json!({ "type": "function", "function": { "name": choice["name"] } }),
        _ => {}
    }
    if choice["disable_parallel_tool_use"] == true {
        out["parallel_tool_calls"] = json!(false);
    }
    out
}

/// One Anthropic message as OpenAI messages: a user turn's tool results become `tool`
/// messages (before the rest of its content), an assistant turn's `tool_use` blocks its
/// `tool_calls`.
fn to_openai_messages(message: &Value) -> Vec<Value> {
    let role = message["role"].as_str().unwrap_or("user");
    let blocks = match &message["content"] {
        Value::String(text) => return vec![json!({ "role": role, "content": text })],
        Value::Array(blocks) => blocks,
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    let mut parts = Vec::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block["type"].as_str() {
            Some("text") => parts.push(json!({ "type": "text", "text": block["text"] })),
            Some("image") => {
                let source = &block["source"];
                let url = match source["type"].as_str() {
                    Some("base64") => format!(
                        "data:{};base64,{}",
                        source["media_type"].as_str().unwrap_or("image/png"),
                        source["data"].as_str().unwrap_or_default()
                    ),
                    _ => source["url"].as_str().unwrap_or_default().to_owned(),
                };
                parts.push(json!({ "type": "image_url", "image_url": { "url": url } }));
            }
            Some("tool_use") => tool_calls.push(json!({
                "id": block["id"], "type": "function",
                "function": { "name": block["name"], "arguments": block["input"].to_string() },
            })),
            Some("tool_result") => {
                let content = text_of(&block["content"]);
                let content = if block["is_error"] == true {
                    format!("Error: {content}")
                } else {
                    content
                };
                out.push(json!({ "role": "tool", "tool_call_id": block["tool_use_id"], "content": content }));
            }
            // `thinking` and other blocks have no OpenAI equivalent: not sent.
            _ => {}
        }
    }
    let content = match parts.as_slice() {
        // A turn of tool calls only: an empty text (some servers refuse a null content).
        [] if !tool_calls.is_empty() => json!(""),
        [] => Value::Null,
        [only] if only["type"] == "text" => only["text"].clone(),
        _ => Value::Array(parts),
    };
    if !content.is_null() || !tool_calls.is_empty() {
        let mut message = json!({ "role": role, "content": content });
        if !tool_calls.is_empty() {
            message["tool_calls"] = Value::Array(tool_calls);
        }
        out.push(message);
    }
    out
}

/// The node's SSE events as Anthropic's, one event at a time; also keeps the whole message.
#[derive(Debug)]
pub struct AnthropicTranslator {
    id: String,
    logical: String,
    started: bool,
    /// The content blocks so far (text, or tool use with its JSON input as text).
    blocks: Vec<Block>,
    /// Which block each of the node's tool-call indices writes to.
    tool_blocks: Vec<Option<usize>>,
    finish_reason: Option<String>,
    input_tokens: u64,
    output_tokens: u64,
    cached_tokens: u64,
    /// Whether the node sent a `usage` object (llama.cpp's Python server never does).
    saw_usage: bool,
    /// Pieces of text and tool input streamed: the output tokens without a `usage`.
    pieces: u64,
    saw_done: bool,
}

#[derive(Debug)]
enum Block {
    Text(String),
    ToolUse { id: String, name: String, input: String },
}

fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

impl AnthropicTranslator {
    /// `estimated_input_tokens`: the controller's estimate of the prompt, reported where the
    /// node sends no `usage`.
    pub fn new(logical: &str, request_id: &str, estimated_input_tokens: u32) -> Self {
        Self {
            id: format!("msg_{}", request_id.replace('-', "_")),
            logical: logical.to_owned(),
            started: false,
            blocks: Vec::new(),
            tool_blocks: Vec::new(),
            finish_reason: None,
            input_tokens: u64::from(estimated_input_tokens),
            output_tokens: 0,
            cached_tokens: 0,
            saw_usage: false,
            pieces: 0,
            saw_done: false,
        }
    }

    /// Whether the node's stream ended properly (a finish reason or `[DONE]`).
    pub fn finished(&self) -> bool {
        self.saw_done || self.finish_reason.is_some()
    }

    fn usage(&self) -> Value {
        let output_tokens = if self.saw_usage {
            self.output_tokens
        } else {
            self.pieces
        };
        json!({
            "input_tokens": self.input_tokens.saturating_sub(self.cached_tokens),
            "output_tokens": output_tokens,
            "cache_read_input_tokens": self.cached_tokens,
            "cache_creation_input_tokens": 0,
        })
    }

    fn start(&mut self, out: &mut String) {
        if !self.started {
            self.started = true;
            let message = json!({
                "id": self.id, "type": "message", "role": "assistant", "model": self.logical,
                "content": [], "stop_reason": null, "stop_sequence": null, "usage": self.usage(),
            });
            out.push_str(&event(
                "message_start",
                &json!({ "type": "message_start", "message": message }),
            ));
        }
    }

    /// Close the last block (its `content_block_stop`).
    fn close_last(&self, out: &mut String) {
        if !self.blocks.is_empty() {
            let index = self.blocks.len() - 1;
            out.push_str(&event(
                "content_block_stop",
                &json!({ "type": "content_block_stop", "index": index }),
            ));
        }
    }

    fn text(&mut self, text: &str, out: &mut String) {
        if !matches!(self.blocks.last(), Some(Block::Text(_))) {
            self.close_last(out);
            self.blocks.push(Block::Text(String::new()));
            let index = self.blocks.len() - 1;
            out.push_str(&event(
                "content_block_start",
                &json!({ "type": "content_block_start", "index": index, "content_block": { "type": "text", "text": "" } }),
            ));
        }
        let index = self.blocks.len() - 1;
        if let Some(Block::Text(whole)) = self.blocks.last_mut() {
            whole.push_str(text);
        }
        out.push_str(&event(
            "content_block_delta",
            &json!({ "type": "content_block_delta", "index": index, "delta": { "type": "text_delta", "text": text } }),
        ));
    }

    fn tool_call(&mut self, call: &Value, out: &mut String) {
        let slot = call["index"].as_u64().unwrap_or(0).min(64) as usize;
        if self.tool_blocks.len() <= slot {
            self.tool_blocks.resize(slot + 1, None);
        }
        let index = match self.tool_blocks[slot] {
            Some(index) => index,
            None => {
                self.close_last(out);
                let id = call["id"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("toolu_{}_{slot}", self.id));
                let name = call["function"]["name"].as_str().unwrap_or_default().to_owned();
                self.blocks.push(Block::ToolUse {
                    id: id.clone(),
                    name: name.clone(),
                    input: String::new(),
                });
                let index = self.blocks.len() - 1;
                self.tool_blocks[slot] = Some(index);
                out.push_str(&event(
                    "content_block_start",
                    &json!({ "type": "content_block_start", "index": index,
                             "content_block": { "type": "tool_use", "id": id, "name": name, "input": {} } }),
                ));
                index
            }
        };
        if let Some(arguments) = call["function"]["arguments"].as_str().filter(|a| !a.is_empty()) {
            if let Some(Block::ToolUse { input, .. }) = self.blocks.get_mut(index) {
                input.push_str(arguments);
            }
            out.push_str(&event(
                "content_block_delta",
                &json!({ "type": "content_block_delta", "index": index,
                         "delta": { "type": "input_json_delta", "partial_json": arguments } }),
            ));
        }
    }

    /// One SSE event's data from the node -> Anthropic's events to send now (possibly none).
    pub fn event(&mut self, data: &str) -> Result<String, String> {
        let Some(value) = super::relay::openai_event(data)? else {
            self.saw_done = true;
            return Ok(String::new());
        };
        let mut out = String::new();
        self.start(&mut out);
        if let Some(usage) = value.get("usage").filter(|u| !u.is_null()) {
            self.saw_usage = true;
            self.input_tokens = usage["prompt_tokens"].as_u64().unwrap_or(self.input_tokens);
            self.output_tokens = usage["completion_tokens"].as_u64().unwrap_or(self.output_tokens);
            self.cached_tokens = usage["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap_or(self.cached_tokens);
        }
        let choice = &value["choices"][0];
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            self.pieces += 1;
            self.text(text, &mut out);
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            self.pieces += 1;
            self.tool_call(call, &mut out);
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish_reason = Some(reason.to_owned());
        }
        Ok(out)
    }

    fn stop_reason(&self) -> &'static str {
        match self.finish_reason.as_deref() {
            Some("length") => "max_tokens",
            Some("tool_calls") => "tool_use",
            _ if self.blocks.iter().any(|b| matches!(b, Block::ToolUse { .. })) => "tool_use",
            _ => "end_turn",
        }
    }

    /// The stream's last events (the open block's stop, `message_delta`, `message_stop`).
    pub fn end(&mut self) -> String {
        let mut out = String::new();
        self.start(&mut out);
        self.close_last(&mut out);
        out.push_str(&event(
            "message_delta",
            &json!({ "type": "message_delta", "delta": { "stop_reason": self.stop_reason(), "stop_sequence": null },
                     "usage": self.usage() }),
        ));
        out.push_str(&event("message_stop", &json!({ "type": "message_stop" })));
        out
    }

    /// `count_tokens`' answer: the prompt's tokens as the runtime counted them.
    pub fn count(&self) -> Value {
        json!({ "input_tokens": self.input_tokens })
    }

    /// The whole message, for a client that did not ask for a stream.
    pub fn message(&self) -> Value {
        let content: Vec<Value> = self
            .blocks
            .iter()
            .map(|block| match block {
                Block::Text(text) => json!({ "type": "text", "text": text }),
                Block::ToolUse { id, name, input } => {
                    let input: Value = serde_json::from_str(input).unwrap_or_else(|_| json!({}));
                    json!({ "type": "tool_use", "id": id, "name": name, "input": input })
                }
            })
            .collect();
        json!({
            "id": self.id, "type": "message", "role": "assistant", "model": self.logical,
            "content": content, "stop_reason": self.stop_reason(), "stop_sequence": null, "usage": self.usage(),
        })
    }
}

/// An answer's translation for an Anthropic client: its events, or one `message` (or
/// `count_tokens`' `{"input_tokens"}`) when the client did not ask for a stream.
#[derive(Debug)]
pub struct AnthropicTranslation {
    pub translator: AnthropicTranslator,
    pub stream: bool,
    pub count_only: bool,
}

impl super::relay::Translation for AnthropicTranslation {
    fn event(&mut self, data: &str) -> Result<Vec<u8>, String> {
        let events = self.translator.event(data)?;
        Ok(if self.stream { events.into_bytes() } else { Vec::new() })
    }

    fn finished(&self) -> bool {
        self.translator.finished()
    }

    fn end(&mut self) -> Vec<u8> {
        if self.stream {
            self.translator.end().into_bytes()
        } else if self.count_only {
            self.translator.count().to_string().into_bytes()
        } else {
            self.translator.message().to_string().into_bytes()
        }
    }

    fn failure(&self, message: &str) -> bytes::Bytes {
        bytes::Bytes::from(if self.stream {
            error_event(message)
        } else {
            json!({ "type": "error", "error": { "type": "api_error", "message": message } }).to_string()
        })
    }
}

/// An Anthropic error event, for a stream that fails after it started.
pub fn error_event(message: &str) -> String {
    event(
        "error",
        &json!({ "type": "error", "error": { "type": "api_error", "message": message } }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claude_code_turn_with_tools_and_tool_results_becomes_an_openai_chat() {
        let body = json!({
            "model": "qwen25-coder-7b", "max_tokens": 64, "temperature": 0, "stop_sequences": ["END"],
            "system": [{"type": "text", "text": "You are Claude Code."}, {"type": "text", "text": "Be brief."}],
            "tools": [{"name": "read_file", "description": "Read a file", "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}],
            "tool_choice": {"type": "any"},
            "messages": [
                {"role": "user", "content": "Open main.rs"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Reading it."},
                    {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {"path": "main.rs"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "fn main() {}"}]},
                    {"type": "text", "text": "What does it do?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
            ],
        });
        let out = to_openai_chat(&body, "local-7b");
        assert_eq!(out["model"], "local-7b");
        assert_eq!(out["stream"], true);
        assert_eq!(
            (out["max_tokens"].clone(), out["stop"].clone()),
            (json!(64), json!(["END"]))
        );
        assert_eq!(out["tool_choice"], "required");
        assert_eq!(out["tools"][0]["function"]["name"], "read_file");
        assert_eq!(
            out["tools"][0]["function"]["parameters"]["properties"]["path"]["type"],
            "string"
        );
        let messages = out["messages"].as_array().expect("messages");
        let roles: Vec<&str> = messages.iter().filter_map(|m| m["role"].as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
        assert_eq!(messages[0]["content"], "You are Claude Code.\nBe brief.");
        assert_eq!(messages[2]["content"], "Reading it.");
        assert_eq!(messages[2]["tool_calls"][0]["id"], "toolu_1");
        assert_eq!(
            messages[2]["tool_calls"][0]["function"]["arguments"],
            r#"{"path":"main.rs"}"#
        );
        assert_eq!(messages[3]["tool_call_id"], "toolu_1");
        assert_eq!(messages[3]["content"], "fn main() {}");
        assert_eq!(
            messages[4]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AAAA"
        );
    }

    fn chunk(delta: Value, finish: Option<&str>) -> String {
        json!({ "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] }).to_string()
    }

    fn names(events: &str) -> Vec<String> {
        events
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_stream_of_text_then_a_tool_call_becomes_anthropic_events_and_a_whole_message() {
        let mut translator = AnthropicTranslator::new("qwen25-coder-7b", "req-7", 5);
        let mut events = String::new();
        for data in [
            chunk(json!({"role": "assistant", "content": "Let me "}), None),
            chunk(json!({"content": "look."}), None),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "read_file", "arguments": "{\"pa"}}]}),
                None,
            ),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "th\": \"a.rs\"}"}}]}), None),
            chunk(json!({}), Some("tool_calls")),
            json!({"choices": [], "usage": {"prompt_tokens": 900, "completion_tokens": 12, "prompt_tokens_details": {"cached_tokens": 800}}}).to_string(),
            "[DONE]".to_owned(),
        ] {
            events.push_str(&translator.event(&data).expect("translates"));
        }
        assert!(translator.finished());
        events.push_str(&translator.end());
        assert_eq!(
            names(&events),
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(events.contains(r#""partial_json":"{\"pa""#), "{events}");
        let message = translator.message();
        assert_eq!(message["content"][0]["text"], "Let me look.");
        assert_eq!(message["content"][1]["input"]["path"], "a.rs");
        assert_eq!(message["content"][1]["id"], "call_1");
        assert_eq!(message["stop_reason"], "tool_use");
        assert_eq!(message["usage"]["input_tokens"], 100);
        assert_eq!(message["usage"]["cache_read_input_tokens"], 800);
        assert_eq!(message["usage"]["output_tokens"], 12);
    }

    #[test]
    fn errors_and_lengths_and_which_runtimes_need_it() {
        let mut translator = AnthropicTranslator::new("m", "req-1", 42);
        translator.event(&chunk(json!({"content": "a"}), None)).expect("ok");
        translator
            .event(&chunk(json!({"content": "b"}), Some("length")))
            .expect("ok");
        let message = translator.message();
        assert_eq!(message["stop_reason"], "max_tokens");
        // No usage from the node (llama.cpp's Python server): the pieces it streamed, and the
        // controller's estimate of the prompt.
        assert_eq!(
            (
                message["usage"]["output_tokens"].clone(),
                message["usage"]["input_tokens"].clone()
            ),
            (json!(2), json!(42))
        );
        assert!(translator.event(r#"{"error": {"message": "boom"}}"#).is_err());
        assert!(translator.event("not json").is_err());
        assert!(error_event("x").starts_with("event: error\n"));
        use switchyard_protocol::RuntimeKind;
        for runtime in [RuntimeKind::Mlx, RuntimeKind::LlamaCpp, RuntimeKind::Simulated] {
            assert!(!speaks_anthropic(runtime), "{runtime}");
        }
        for runtime in [RuntimeKind::Vllm, RuntimeKind::Ollama, RuntimeKind::Openai] {
            assert!(speaks_anthropic(runtime), "{runtime}");
        }
    }
}
