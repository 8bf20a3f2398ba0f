//! OpenAI-compatible servers: vLLM, `mlx_lm.server`, llama.cpp's server, LM Studio.
//! Generations are always requested as streams (the agent measures time to first token on
//! them) and collected when the client asked for a whole reply.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::{
    ChatRequest, CompletionRequest, DriverError, EmbedRequest, Event, EventStream, RuntimeDriver, RuntimeProbe,
    Sampling, Usage,
};
use crate::config::RuntimeKind;
use crate::telemetry::runtime_state;
use switchyard_protocol::sse::SseDecoder;

#[derive(Debug, Clone)]
pub struct OpenAiDriver {
    kind: RuntimeKind,
    base: String,
    client: reqwest::Client,
    probe_client: reqwest::Client,
}

impl OpenAiDriver {
    pub fn new(kind: RuntimeKind, base_url: &str, timeout: Duration) -> Self {
        let client = super::runtime_client(timeout);
        let probe_client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        Self {
            kind,
            base: base_url.trim_end_matches('/').to_owned(),
            client,
            probe_client,
        }
    }

    fn unreachable(&self, e: reqwest::Error) -> DriverError {
        DriverError::Unreachable {
            url: self.base.clone(),
            message: e.to_string(),
        }
    }

    async fn stream(&self, path: &str, model: &str, mut body: Value, chat: bool) -> Result<EventStream, DriverError> {
        body["stream"] = json!(true);
        body["stream_options"] = json!({ "include_usage": true });
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(upstream_error(status.as_u16(), &text, model));
        }
        let mut bytes = response.bytes_stream();
        let stream = async_stream::try_stream! {
            let mut decoder = SseDecoder::default();
            let mut finish: Option<String> = None;
            let mut usage = Usage::default();
            let mut deltas = 0u32;
            'read: while let Some(chunk) = bytes.next().await {
                let chunk = chunk.map_err(|e| DriverError::Protocol(format!("stream broke: {e}")))?;
                for data in decoder.push(&chunk) {
                    if data == "[DONE]" {
                        break 'read;
                    }
                    let value: Value = serde_json::from_str(&data)
                        .map_err(|e| DriverError::Protocol(format!("bad SSE event {data:?}: {e}")))?;
                    if let Some(error) = value.get("error") {
                        Err(DriverError::Upstream { status: 500, message: error.to_string() })?;
                    }
                    if let Some(u) = value.get("usage").filter(|u| !u.is_null()) {
                        usage.prompt_tokens = u["prompt_tokens"].as_u64().unwrap_or(0) as u32;
                        usage.completion_tokens = u["completion_tokens"].as_u64().unwrap_or(0) as u32;
                    }
                    let Some(choice) = value["choices"].get(0) else { continue };
                    let text = if chat { choice["delta"]["content"].as_str() } else { choice["text"].as_str() };
                    if let Some(text) = text.filter(|t| !t.is_empty()) {
                        deltas += 1;
                        yield Event::Delta(text.to_owned());
                    }
                    if let Some(reason) = choice["finish_reason"].as_str() {
                        finish = Some(reason.to_owned());
                    }
                }
            }
            if usage.completion_tokens == 0 {
                // llama.cpp's Python server ignores include_usage: one event is one token.
                usage.completion_tokens = deltas;
            }
            let finish_reason = finish.ok_or_else(|| DriverError::Protocol("the stream ended without a finish_reason".into()))?;
            yield Event::Done { finish_reason, usage };
        };
        Ok(Box::pin(stream))
    }
}

fn sampling_json(body: &mut Value, sampling: &Sampling) {
    if let Some(v) = sampling.max_tokens {
        body["max_tokens"] = json!(v);
    }
    if let Some(v) = sampling.temperature {
        body["temperature"] = json!(v);
    }
    if let Some(v) = sampling.top_p {
        body["top_p"] = json!(v);
    }
    if !sampling.stop.is_empty() {
        body["stop"] = json!(sampling.stop);
    }
    if let Some(v) = sampling.seed {
        body["seed"] = json!(v);
    }
}

fn upstream_error(status: u16, body: &str, model: &str) -> DriverError {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v["error"]["message"]
                .as_str()
                .or_else(|| v["error"].as_str())
                .or_else(|| v["detail"].as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| body.chars().take(300).collect());
    if status == 404 {
        DriverError::ModelNotFound(model.to_owned())
    } else {
        DriverError::Upstream { status, message }
    }
}

#[async_trait::async_trait]
impl RuntimeDriver for OpenAiDriver {
    fn kind(&self) -> RuntimeKind {
        self.kind
    }

    fn base_url(&self) -> String {
        self.base.clone()
    }

    async fn models(&self) -> Result<Vec<String>, DriverError> {
        let response = self
            .probe_client
            .get(format!("{}/v1/models", self.base))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let value: Value = response
            .json()
            .await
            .map_err(|e| DriverError::Protocol(format!("/v1/models: {e}")))?;
        if !status.is_success() {
            return Err(DriverError::Upstream {
                status: status.as_u16(),
                message: value.to_string(),
            });
        }
        Ok(runtime_state::parse_openai_models(&value))
    }

    async fn chat(&self, request: ChatRequest) -> Result<EventStream, DriverError> {
        let mut body = json!({ "model": request.model, "messages": request.messages });
        sampling_json(&mut body, &request.sampling);
        self.stream("/v1/chat/completions", &request.model, body, true).await
    }

    async fn complete(&self, request: CompletionRequest) -> Result<EventStream, DriverError> {
        let mut body = json!({ "model": request.model, "prompt": request.prompt });
        sampling_json(&mut body, &request.sampling);
        self.stream("/v1/completions", &request.model, body, false).await
    }

    async fn embed(&self, request: EmbedRequest) -> Result<Vec<Vec<f32>>, DriverError> {
        let response = self
            .client
            .post(format!("{}/v1/embeddings", self.base))
            .json(&json!({ "model": request.model, "input": request.input }))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(upstream_error(status.as_u16(), &text, &request.model));
        }
        let value: Value =
            serde_json::from_str(&text).map_err(|e| DriverError::Protocol(format!("embeddings: {e}")))?;
        value["data"]
            .as_array()
            .ok_or_else(|| DriverError::Protocol("embeddings reply has no data".into()))?
            .iter()
            .map(|item| {
                item["embedding"]
                    .as_array()
                    .map(|v| v.iter().filter_map(|x| x.as_f64().map(|f| f as f32)).collect())
                    .ok_or_else(|| DriverError::Protocol("embedding is not a list of numbers".into()))
            })
            .collect()
    }

    async fn probe(&self) -> RuntimeProbe {
        let mut probe = RuntimeProbe::default();
        match self.models().await {
            Ok(models) => {
                probe.healthy = true;
                probe.loaded = models
                    .into_iter()
                    .map(|name| switchyard_protocol::LoadedModel { name, vram_mb: None })
                    .collect();
            }
            Err(e) => {
                probe.error = Some(e.to_string());
                return probe;
            }
        }
        let metrics = self
            .probe_client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .ok();
        let metrics = match metrics {
            Some(r) if r.status().is_success() => r.text().await.ok(),
            _ => None,
        };
        let queue = match (self.kind, metrics) {
            (RuntimeKind::Vllm, Some(text)) => Some(runtime_state::parse_vllm_metrics(&text)),
            (_, Some(text)) if text.contains("llamacpp:") => Some(runtime_state::parse_llama_cpp_metrics(&text)),
            (_, Some(text)) if text.contains("vllm:") => Some(runtime_state::parse_vllm_metrics(&text)),
            _ => None,
        };
        if let Some(queue) = queue {
            probe.running = queue.running.map(|v| v as u32);
            probe.waiting = queue.waiting.map(|v| v as u32);
            probe.kv_cache_usage_pct = queue.kv_cache_usage_pct.map(|v| v as f32);
        } else if self.kind == RuntimeKind::LlamaCpp
            && let Ok(response) = self.probe_client.get(format!("{}/slots", self.base)).send().await
            && response.status().is_success()
            && let Ok(slots) = response.json::<Value>().await
        {
            probe.running = runtime_state::parse_llama_cpp_slots(&slots);
        }
        probe
    }
}
