//! The simulated runtime's Responses API (`POST /v1/responses`), stateful as vLLM's and
//! OpenAI's are: each response is stored (the last [`STORED`]), and a request naming a
//! `previous_response_id` continues that conversation; one the runtime never produced (or
//! no longer holds) is a 404 with OpenAI's `previous_response_not_found`.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;
use serde_json::{Value, json};

/// Responses kept for `previous_response_id`.
pub const STORED: usize = 10_000;

/// The conversations behind the responses this runtime produced.
#[derive(Debug, Default)]
pub struct StoredResponses {
    inner: Mutex<Stored>,
}

#[derive(Debug, Default)]
struct Stored {
    next: u64,
    text: HashMap<String, String>,
    order: VecDeque<String>,
}

/// A Responses request as the simulator reads it.
#[derive(Debug)]
pub struct ResponsesRequest {
    pub model: String,
    pub stream: bool,
    pub max_output_tokens: Option<u32>,
    pub previous: Option<String>,
    /// The instructions and the new input, as text.
    pub text: String,
}

impl ResponsesRequest {
    pub fn parse(body: &Value) -> Result<Self, String> {
        let model = body["model"].as_str().ok_or("the request needs a `model`")?.to_owned();
        let mut text = String::new();
        if let Some(instructions) = body["instructions"].as_str() {
            text.push_str(instructions);
            text.push('\n');
        }
        match &body["input"] {
            Value::String(input) => text.push_str(input),
            Value::Array(items) => {
                for item in items {
                    match &item["content"] {
                        Value::String(content) => text.push_str(content),
                        Value::Array(parts) => {
                            for part in parts {
                                text.push_str(part["text"].as_str().unwrap_or_default());
                            }
                        }
                        _ => text.push_str(item["output"].as_str().unwrap_or_default()),
                    }
                    text.push('\n');
                }
            }
            _ => return Err("the request needs an `input`".to_owned()),
        }
        Ok(Self {
            model,
            stream: body["stream"].as_bool().unwrap_or(false),
            max_output_tokens: body["max_output_tokens"]
                .as_u64()
                .map(|n| n.min(u64::from(u32::MAX)) as u32),
            previous: body["previous_response_id"].as_str().map(str::to_owned),
            text,
        })
    }
}

impl StoredResponses {
    /// The whole prompt of a request: the stored conversation it continues, then its text;
    /// `Err` names a previous response this runtime does not hold.
    pub fn prompt(&self, request: &ResponsesRequest) -> Result<String, String> {
        match &request.previous {
            None => Ok(request.text.clone()),
            Some(previous) => {
                let inner = self.inner.lock();
                let before = inner
                    .text
                    .get(previous)
                    .ok_or_else(|| format!("Previous response with id '{previous}' not found."))?;
                Ok(format!("{before}\n{}", request.text))
            }
        }
    }

    /// Store a new response's prompt under a new id (its output is added when it ends).
    pub fn store(&self, node: &str, prompt: String) -> String {
        let mut inner = self.inner.lock();
        inner.next += 1;
        let id = format!("resp_{node}_{:08x}", inner.next);
        inner.text.insert(id.clone(), prompt);
        inner.order.push_back(id.clone());
        while inner.order.len() > STORED {
            if let Some(oldest) = inner.order.pop_front() {
                inner.text.remove(&oldest);
            }
        }
        id
    }

    /// The response's output, after its prompt.
    pub fn finish(&self, id: &str, output: &str) {
        if let Some(text) = self.inner.lock().text.get_mut(id) {
            text.push('\n');
            text.push_str(output);
        }
    }
}

/// The `response` object.
pub fn response_object(id: &str, model: &str, status: &str, text: &str, input: u32, output: u32, cached: u32) -> Value {
    json!({
        "id": id, "object": "response", "status": status, "model": model,
        "output": [{ "type": "message", "id": format!("msg_{id}"), "status": status, "role": "assistant",
                     "content": [{ "type": "output_text", "text": text, "annotations": [] }] }],
        "usage": { "input_tokens": input, "output_tokens": output, "total_tokens": input + output,
                   "input_tokens_details": { "cached_tokens": cached } },
    })
}

/// OpenAI's error for a previous response the runtime does not hold.
pub fn not_found(message: &str) -> Value {
    json!({ "error": { "message": message, "type": "invalid_request_error", "param": "previous_response_id",
                       "code": "previous_response_not_found" } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_continues_the_conversation_it_names_and_an_unknown_one_is_not_found() {
        let stored = StoredResponses::default();
        let first = ResponsesRequest::parse(&json!({"model": "m", "instructions": "Be brief.", "input": "Hi"}))
            .expect("parses");
        let prompt = stored.prompt(&first).expect("no previous");
        let id = stored.store("xeon", prompt);
        stored.finish(&id, "Hello!");
        assert!(id.starts_with("resp_xeon_"));
        let second = ResponsesRequest::parse(&json!({"model": "m", "previous_response_id": id,
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "And then?"}]}]}))
        .expect("parses");
        let prompt = stored.prompt(&second).expect("continues");
        assert!(prompt.starts_with("Be brief.\nHi\nHello!\nAnd then?"), "{prompt}");
        let unknown =
            ResponsesRequest::parse(&json!({"model": "m", "previous_response_id": "resp_other", "input": "x"}))
                .expect("parses");
        assert!(stored.prompt(&unknown).expect_err("not stored").contains("resp_other"));
        assert!(ResponsesRequest::parse(&json!({"model": "m"})).is_err());
    }
}
