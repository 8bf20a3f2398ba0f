//! Ollama, through `ollama-rs`: chat (streamed), model list, embeddings, pull on demand,
//! `keep_alive`. Two endpoints go around it, on the same HTTP client: `/api/ps` (which
//! ollama-rs 0.3.6 does not wrap) and streamed `/api/generate` (ollama-rs parses each
//! network chunk on its own and drops a JSON line split across two chunks; the reader here
//! buffers lines).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ollama_rs::Ollama;
use ollama_rs::generation::chat::request::ChatMessageRequest;
use ollama_rs::generation::chat::{ChatMessage as OllamaMessage, MessageRole};
use ollama_rs::generation::embeddings::request::{EmbeddingsInput, GenerateEmbeddingsRequest};
use ollama_rs::generation::parameters::{KeepAlive, TimeUnit};
use ollama_rs::models::ModelOptions;
use serde_json::{Value, json};

use super::{
    ChatRequest, CompletionRequest, DriverError, EmbedRequest, Event, EventStream, RuntimeDriver, RuntimeProbe,
    Sampling, Usage,
};
use crate::config::RuntimeKind;
use crate::telemetry::runtime_state;

#[derive(Debug, Clone)]
pub struct OllamaDriver {
    base: String,
    ollama: Ollama,
    http: reqwest::Client,
    keep_alive: Option<String>,
    /// Catalog models that may be pulled when missing (empty: never pull).
    pullable: Vec<String>,
}

impl OllamaDriver {
    pub fn new(base_url: &str, keep_alive: Option<String>, pullable: Vec<String>, timeout: Duration) -> Self {
        let base = base_url.trim_end_matches('/').to_owned();
        let http = super::runtime_client(timeout);
        let (host, port) = split_host_port(&base);
        let ollama = Ollama::builder()
            .host(host)
            .port(port)
            .reqwest_client(http.clone())
            .build();
        Self {
            base,
            ollama,
            http,
            keep_alive,
            pullable,
        }
    }

    fn unreachable(&self, message: impl std::fmt::Display) -> DriverError {
        DriverError::Unreachable {
            url: self.base.clone(),
            message: message.to_string(),
        }
    }

    fn options(sampling: &Sampling) -> ModelOptions {
        let mut options = ModelOptions::default();
        if let Some(n) = sampling.max_tokens {
            options = options.num_predict(n.min(i32::MAX as u32) as i32);
        }
        if let Some(t) = sampling.temperature {
            options = options.temperature(t);
        }
        if let Some(p) = sampling.top_p {
            options = options.top_p(p);
        }
        if !sampling.stop.is_empty() {
            options = options.stop(sampling.stop.clone());
        }
        if let Some(seed) = sampling.seed {
            options = options.seed(seed as i32);
        }
        options
    }

    fn keep_alive(&self) -> Option<KeepAlive> {
        parse_keep_alive(self.keep_alive.as_deref()?)
    }

    /// Ollama's documented way to load or unload a model: a generation with no prompt,
    /// with the `keep_alive` to apply.
    async fn empty_generation(&self, model: &str, keep_alive: Option<KeepAlive>) -> Result<(), DriverError> {
        let mut request = ollama_rs::generation::completion::request::GenerationRequest::new(model.to_owned(), "");
        if let Some(keep_alive) = keep_alive {
            request = request.keep_alive(keep_alive);
        }
        self.ollama
            .generate(request)
            .await
            .map(drop)
            .map_err(|e| classify(e, model, &self.base))
    }

    /// Pull `model` if it is a catalog model and pulling is allowed; true if it was pulled.
    async fn pull_if_allowed(&self, model: &str) -> Result<bool, DriverError> {
        if !self.pullable.iter().any(|m| m == model) {
            return Ok(false);
        }
        tracing::info!(%model, "model missing from Ollama; pulling it");
        self.ollama
            .pull_model(model.to_owned(), false)
            .await
            .map_err(|e| DriverError::Upstream {
                status: 502,
                message: format!("pull of {model} failed: {e}"),
            })?;
        Ok(true)
    }

    async fn chat_once(&self, request: &ChatRequest) -> Result<EventStream, DriverError> {
        let messages = request
            .messages
            .iter()
            .map(|m| {
                let role = match m.role.as_str() {
                    "system" => MessageRole::System,
                    "assistant" => MessageRole::Assistant,
                    "tool" => MessageRole::Tool,
                    _ => MessageRole::User,
                };
                OllamaMessage::new(role, m.content.clone())
            })
            .collect();
        let mut chat =
            ChatMessageRequest::new(request.model.clone(), messages).options(Self::options(&request.sampling));
        if let Some(keep_alive) = self.keep_alive() {
            chat = chat.keep_alive(keep_alive);
        }
        let mut stream = self
            .ollama
            .send_chat_messages_stream(chat)
            .await
            .map_err(|e| classify(e, &request.model, &self.base))?;
        let max_tokens = request.sampling.max_tokens;
        let events = async_stream::try_stream! {
            while let Some(item) = stream.next().await {
                let response = item.map_err(|()| DriverError::Protocol("Ollama's chat stream broke off".into()))?;
                if !response.message.content.is_empty() {
                    yield Event::Delta(response.message.content.clone());
                }
                if response.done {
                    let data = response.final_data.as_ref();
                    let usage = Usage {
                        prompt_tokens: data.map(|d| d.prompt_eval_count as u32).unwrap_or(0),
                        completion_tokens: data.map(|d| d.eval_count as u32).unwrap_or(0),
                        cached_tokens: 0,
                    };
                    yield Event::Done { finish_reason: finish_reason(None, usage, max_tokens), usage };
                    return;
                }
            }
            Err(DriverError::Protocol("Ollama's chat stream ended without done".into()))?;
        };
        Ok(Box::pin(events))
    }

    async fn generate_once(&self, request: &CompletionRequest) -> Result<EventStream, DriverError> {
        let mut body = json!({
            "model": request.model,
            "prompt": request.prompt,
            "stream": true,
            "options": serde_json::to_value(Self::options(&request.sampling)).unwrap_or_default(),
        });
        if let Some(keep_alive) = &self.keep_alive {
            body["keep_alive"] = json!(keep_alive);
        }
        let response = self
            .http
            .post(format!("{}/api/generate", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(ollama_error(status.as_u16(), &text, &request.model));
        }
        let max_tokens = request.sampling.max_tokens;
        let mut bytes = response.bytes_stream();
        let events = async_stream::try_stream! {
            let mut buffer: Vec<u8> = Vec::new();
            while let Some(chunk) = bytes.next().await {
                let chunk = chunk.map_err(|e| DriverError::Protocol(format!("Ollama's stream broke: {e}")))?;
                buffer.extend_from_slice(&chunk);
                while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let value: Value = serde_json::from_slice(&line).map_err(|e| DriverError::Protocol(format!("bad NDJSON line: {e}")))?;
                    if let Some(error) = value["error"].as_str() {
                        Err(DriverError::Upstream { status: 500, message: error.to_owned() })?;
                    }
                    if let Some(text) = value["response"].as_str().filter(|t| !t.is_empty()) {
                        yield Event::Delta(text.to_owned());
                    }
                    if value["done"].as_bool() == Some(true) {
                        let usage = Usage {
                            prompt_tokens: value["prompt_eval_count"].as_u64().unwrap_or(0) as u32,
                            completion_tokens: value["eval_count"].as_u64().unwrap_or(0) as u32,
                            cached_tokens: 0,
                        };
                        yield Event::Done { finish_reason: finish_reason(value["done_reason"].as_str(), usage, max_tokens), usage };
                        return;
                    }
                }
            }
            Err(DriverError::Protocol("Ollama's generate stream ended without done".into()))?;
        };
        Ok(Box::pin(events))
    }
}

/// `http://host:port` -> (`http://host`, port); Ollama's default port when none is given.
fn split_host_port(base: &str) -> (String, u16) {
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    match base[after_scheme..].rsplit_once(':') {
        Some((host, port)) => match port.parse() {
            Ok(port) => (format!("{}{host}", &base[..after_scheme]), port),
            Err(_) => (base.to_owned(), 11434),
        },
        None => (base.to_owned(), 11434),
    }
}

/// Ollama's `done_reason` when present; otherwise `length` if the generation used every
/// allowed token, else `stop`.
fn finish_reason(done_reason: Option<&str>, usage: Usage, max_tokens: Option<u32>) -> String {
    match done_reason {
        Some(reason) if !reason.is_empty() => reason.to_owned(),
        _ if max_tokens.is_some_and(|max| usage.completion_tokens >= max) => "length".to_owned(),
        _ => "stop".to_owned(),
    }
}

/// `"30m"`, `"2h"`, `"90s"`, `"0"` (unload after the request) or `"-1"` (keep forever).
pub fn parse_keep_alive(text: &str) -> Option<KeepAlive> {
    let text = text.trim();
    match text {
        "0" => return Some(KeepAlive::UnloadOnCompletion),
        "-1" => return Some(KeepAlive::Indefinitely),
        _ => {}
    }
    let (number, unit) = text.split_at(text.len().checked_sub(1)?);
    let time: u64 = number.parse().ok()?;
    let unit = match unit {
        "s" => TimeUnit::Seconds,
        "m" => TimeUnit::Minutes,
        "h" => TimeUnit::Hours,
        _ => return None,
    };
    Some(KeepAlive::Until { time, unit })
}

fn ollama_error(status: u16, body: &str, model: &str) -> DriverError {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(300).collect());
    if status == 404 || message.contains("not found") {
        DriverError::ModelNotFound(model.to_owned())
    } else {
        DriverError::Upstream { status, message }
    }
}

fn classify(error: ollama_rs::error::OllamaError, model: &str, base: &str) -> DriverError {
    match error {
        ollama_rs::error::OllamaError::ReqwestError(e) => DriverError::Unreachable {
            url: base.to_owned(),
            message: e.to_string(),
        },
        ollama_rs::error::OllamaError::Other(text) => ollama_error(500, &text, model),
        other => DriverError::Upstream {
            status: 502,
            message: other.to_string(),
        },
    }
}

#[async_trait::async_trait]
impl RuntimeDriver for OllamaDriver {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Ollama
    }

    fn base_url(&self) -> String {
        self.base.clone()
    }

    async fn models(&self) -> Result<Vec<String>, DriverError> {
        let models = self
            .ollama
            .list_local_models()
            .await
            .map_err(|e| classify(e, "", &self.base))?;
        Ok(models.into_iter().map(|m| m.name).collect())
    }

    async fn ensure_model(&self, model: &str) -> Result<bool, DriverError> {
        self.pull_if_allowed(model).await
    }

    async fn load_model(&self, model: &str) -> Result<(), DriverError> {
        self.empty_generation(model, self.keep_alive()).await
    }

    async fn unload_model(&self, model: &str) -> Result<(), DriverError> {
        self.empty_generation(model, Some(KeepAlive::UnloadOnCompletion)).await
    }

    async fn chat(&self, request: ChatRequest) -> Result<EventStream, DriverError> {
        match self.chat_once(&request).await {
            Err(DriverError::ModelNotFound(model)) if self.pull_if_allowed(&model).await? => {
                self.chat_once(&request).await
            }
            other => other,
        }
    }

    async fn complete(&self, request: CompletionRequest) -> Result<EventStream, DriverError> {
        match self.generate_once(&request).await {
            Err(DriverError::ModelNotFound(model)) if self.pull_if_allowed(&model).await? => {
                self.generate_once(&request).await
            }
            other => other,
        }
    }

    async fn embed(&self, request: EmbedRequest) -> Result<Vec<Vec<f32>>, DriverError> {
        let input = EmbeddingsInput::Multiple(request.input.clone());
        let response = self
            .ollama
            .generate_embeddings(GenerateEmbeddingsRequest::new(request.model.clone(), input))
            .await
            .map_err(|e| classify(e, &request.model, &self.base))?;
        Ok(response.embeddings)
    }

    async fn probe(&self) -> RuntimeProbe {
        let started = Instant::now();
        let mut probe = RuntimeProbe::default();
        let ps = async {
            let response = self
                .http
                .get(format!("{}/api/ps", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await?;
            response.error_for_status()?.json::<Value>().await
        };
        match ps.await {
            Ok(value) => {
                probe.healthy = true;
                probe.loaded = runtime_state::parse_ollama_ps(&value);
            }
            Err(e) => probe.error = Some(format!("{}/api/ps: {e}", self.base)),
        }
        tracing::trace!(elapsed = ?started.elapsed(), "ollama probe");
        probe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_split_into_host_and_port() {
        assert_eq!(
            split_host_port("http://127.0.0.1:11434"),
            ("http://127.0.0.1".to_owned(), 11434)
        );
        assert_eq!(
            split_host_port("http://xeon.lan"),
            ("http://xeon.lan".to_owned(), 11434)
        );
    }

    #[test]
    fn keep_alive_durations_parse_like_ollamas() {
        assert!(matches!(
            parse_keep_alive("30m"),
            Some(KeepAlive::Until {
                time: 30,
                unit: TimeUnit::Minutes
            })
        ));
        assert!(matches!(parse_keep_alive("-1"), Some(KeepAlive::Indefinitely)));
        assert!(matches!(parse_keep_alive("0"), Some(KeepAlive::UnloadOnCompletion)));
        assert!(parse_keep_alive("soon").is_none());
    }

    #[test]
    fn finish_reason_falls_back_to_length_when_every_token_was_used() {
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 16,
            cached_tokens: 0,
        };
        assert_eq!(finish_reason(None, usage, Some(16)), "length");
        assert_eq!(finish_reason(None, usage, Some(64)), "stop");
        assert_eq!(finish_reason(Some("stop"), usage, Some(16)), "stop");
    }
}
