//! Runtime drivers behind one async trait: Ollama (through `ollama-rs`), any
//! OpenAI-compatible server (vLLM, `mlx_lm.server`, llama.cpp's server, LM Studio), and the
//! simulated runtime's loopback server. A driver probes its runtime and manages its models;
//! requests reach the runtime through [`crate::relay`], never through a driver (the typed
//! requests and events here serve `switchyard-agent bench` and the drivers' own tests).

pub mod ollama;
pub mod openai;
pub mod simulated;

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use serde::{Deserialize, Serialize};
use switchyard_protocol::LoadedModel;

use crate::config::{AgentConfig, RuntimeKind};
use crate::simulator::{Profile, Simulator};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// Sampling parameters shared by chat and completions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sampling {
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Vec<String>,
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The runtime's (node-local) model name.
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub sampling: Sampling,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: String,
    pub sampling: Sampling,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmbedRequest {
    pub model: String,
    pub input: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Prompt tokens the runtime found in its prefix cache (0 where it does not say).
    #[serde(default)]
    pub cached_tokens: u32,
}

/// One event of a generation.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Generated text (usually one token).
    Delta(String),
    /// The end: why it stopped (`stop` or `length`) and the token counts.
    Done { finish_reason: String, usage: Usage },
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, DriverError>> + Send>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum DriverError {
    #[error("the runtime at {url} is unreachable: {message}")]
    Unreachable { url: String, message: String },
    #[error("the runtime does not serve model {0:?}")]
    ModelNotFound(String),
    #[error("the runtime answered {status}: {message}")]
    Upstream { status: u16, message: String },
    #[error("the runtime's reply could not be understood: {0}")]
    Protocol(String),
    #[error("the runtime cannot do this: {0}")]
    Unsupported(String),
}

impl DriverError {
    /// The HTTP status the agent answers with.
    pub fn status(&self) -> u16 {
        match self {
            DriverError::Unreachable { .. } => 502,
            DriverError::ModelNotFound(_) => 404,
            DriverError::Upstream { status, .. } => *status,
            DriverError::Protocol(_) => 502,
            DriverError::Unsupported(_) => 501,
        }
    }

    /// The status and OpenAI error `type` of the answer that reports this error.
    pub fn answer(&self) -> (http::StatusCode, &'static str) {
        let status = http::StatusCode::from_u16(self.status()).unwrap_or(http::StatusCode::BAD_GATEWAY);
        let kind = if status == http::StatusCode::NOT_FOUND {
            "model_not_found"
        } else {
            "runtime_error"
        };
        (status, kind)
    }
}

/// What the runtime says about its own work.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeProbe {
    pub healthy: bool,
    pub error: Option<String>,
    /// `None` when the runtime does not report it (the agent's own count is used).
    pub running: Option<u32>,
    pub waiting: Option<u32>,
    pub kv_cache_usage_pct: Option<f32>,
    pub loaded: Vec<LoadedModel>,
    /// The runtime's own thermal verdict (the simulated M4's heat model).
    pub thermal_throttled: Option<bool>,
}

#[async_trait::async_trait]
pub trait RuntimeDriver: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> RuntimeKind;
    fn base_url(&self) -> String;
    /// Names of the models the runtime has.
    async fn models(&self) -> Result<Vec<String>, DriverError>;
    async fn chat(&self, request: ChatRequest) -> Result<EventStream, DriverError>;
    async fn complete(&self, request: CompletionRequest) -> Result<EventStream, DriverError>;
    async fn embed(&self, request: EmbedRequest) -> Result<Vec<Vec<f32>>, DriverError>;
    /// Health, queue and loaded models, from the runtime's own endpoints.
    async fn probe(&self) -> RuntimeProbe;
    /// Make `model` available when the runtime can fetch it (Ollama's pull on demand);
    /// true if it was fetched and a refused request is worth sending again.
    async fn ensure_model(&self, _model: &str) -> Result<bool, DriverError> {
        Ok(false)
    }
    /// Load `model` into memory now (Ollama: a generation with no prompt).
    async fn load_model(&self, model: &str) -> Result<(), DriverError> {
        Err(DriverError::Unsupported(format!(
            "this {} runtime loads and unloads {model:?} itself",
            self.kind().as_str()
        )))
    }
    /// Unload `model` now (Ollama: `keep_alive: 0`).
    async fn unload_model(&self, model: &str) -> Result<(), DriverError> {
        Err(DriverError::Unsupported(format!(
            "this {} runtime loads and unloads {model:?} itself",
            self.kind().as_str()
        )))
    }
}

/// The HTTP client drivers talk to their runtime with: no Nagle delay, a bounded connect,
/// and `read_timeout` between bytes (a generation may stream for minutes).
pub fn runtime_client(read_timeout: std::time::Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(std::time::Duration::from_secs(5))
        .read_timeout(read_timeout)
        .build()
        .unwrap_or_default()
}

/// The driver a config asks for (a simulated runtime's server is started here).
pub async fn from_config(config: &AgentConfig) -> std::io::Result<Arc<dyn RuntimeDriver>> {
    let timeout = std::time::Duration::from_secs(config.runtime.request_timeout_s);
    Ok(match config.runtime.kind {
        RuntimeKind::Ollama => Arc::new(ollama::OllamaDriver::new(
            &config.base_url(),
            config.runtime.keep_alive.clone(),
            if config.runtime.pull_on_demand {
                config.models.iter().map(|m| m.local.clone()).collect()
            } else {
                Vec::new()
            },
            timeout,
        )),
        RuntimeKind::Simulated => {
            let profile =
                Profile::named(config.runtime.profile.as_deref().unwrap_or_default()).unwrap_or_else(Profile::xeon);
            let simulator = Simulator::with_time_scale(
                profile,
                config.models.iter().map(|m| m.local.clone()).collect(),
                config.runtime.time_scale.unwrap_or(1.0),
            );
            Arc::new(simulated::SimulatedDriver::start(simulator).await?)
        }
        kind => Arc::new(openai::OpenAiDriver::new(kind, &config.base_url(), timeout)),
    })
}

/// Collect a stream into the whole text and its end.
pub async fn collect(mut stream: EventStream) -> Result<(String, String, Usage), DriverError> {
    use futures_util::StreamExt;
    let mut text = String::new();
    while let Some(event) = stream.next().await {
        match event? {
            Event::Delta(delta) => text.push_str(&delta),
            Event::Done { finish_reason, usage } => return Ok((text, finish_reason, usage)),
        }
    }
    Err(DriverError::Protocol("the stream ended without a final event".into()))
}
