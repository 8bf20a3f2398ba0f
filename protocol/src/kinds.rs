//! The closed sets on the wire, as enums: the API a request came through, the kind of
//! runtime a node fronts, a supervised runtime's phase, and where speed figures came from.
//! Their text forms (kebab-case) are what the JSON, TOML and WIT strings have always said.

use serde::{Deserialize, Serialize};

/// Which API a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Api {
    #[default]
    #[serde(rename = "openai-chat")]
    OpenAiChat,
    #[serde(rename = "openai-completions")]
    OpenAiCompletions,
    #[serde(rename = "openai-embeddings")]
    OpenAiEmbeddings,
    /// Any other `POST /v1/...` with a `model` (responses, rerank, score, ...).
    #[serde(rename = "openai-other")]
    OpenAiOther,
    /// Anthropic's Messages API (`/v1/messages`, `/v1/messages/count_tokens`).
    #[serde(rename = "anthropic-messages")]
    AnthropicMessages,
    #[serde(rename = "ollama-chat")]
    OllamaChat,
    #[serde(rename = "ollama-generate")]
    OllamaGenerate,
    #[serde(rename = "ollama-embed")]
    OllamaEmbed,
}

impl Api {
    /// The API a `POST` to `path` is for; `None` when the front door does not serve it.
    pub fn from_path(path: &str) -> Option<Api> {
        Some(match path {
            "/v1/chat/completions" => Api::OpenAiChat,
            "/v1/completions" => Api::OpenAiCompletions,
            "/v1/embeddings" => Api::OpenAiEmbeddings,
            "/api/chat" => Api::OllamaChat,
            "/api/generate" => Api::OllamaGenerate,
            "/api/embed" => Api::OllamaEmbed,
            "/v1/messages" | "/v1/messages/count_tokens" => Api::AnthropicMessages,
            path if path.starts_with("/v1/") => Api::OpenAiOther,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Api::OpenAiChat => "openai-chat",
            Api::OpenAiCompletions => "openai-completions",
            Api::OpenAiEmbeddings => "openai-embeddings",
            Api::OpenAiOther => "openai-other",
            Api::AnthropicMessages => "anthropic-messages",
            Api::OllamaChat => "ollama-chat",
            Api::OllamaGenerate => "ollama-generate",
            Api::OllamaEmbed => "ollama-embed",
        }
    }

    pub fn is_ollama(self) -> bool {
        matches!(self, Api::OllamaChat | Api::OllamaGenerate | Api::OllamaEmbed)
    }

    /// Whether the client gets a stream when it does not say (Ollama streams by default).
    pub fn streams_by_default(self) -> bool {
        matches!(self, Api::OllamaChat | Api::OllamaGenerate)
    }
}

/// The kind of runtime a node fronts. `None` is only ever shown for a node whose agent
/// reports no runtime; an agent's config must name one of the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeKind {
    Ollama,
    Vllm,
    Mlx,
    LlamaCpp,
    /// Any other OpenAI-compatible server (LM Studio, ...).
    Openai,
    /// Switchyard's simulated runtime: never mistaken for real hardware.
    Simulated,
    /// No runtime reported.
    #[default]
    None,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Ollama => "ollama",
            RuntimeKind::Vllm => "vllm",
            RuntimeKind::Mlx => "mlx",
            RuntimeKind::LlamaCpp => "llama-cpp",
            RuntimeKind::Openai => "openai",
            RuntimeKind::Simulated => "simulated",
            RuntimeKind::None => "none",
        }
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a supervised runtime's process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SupervisorPhase {
    Starting,
    Running,
    BackingOff,
    Stopped,
}

impl SupervisorPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            SupervisorPhase::Starting => "starting",
            SupervisorPhase::Running => "running",
            SupervisorPhase::BackingOff => "backing-off",
            SupervisorPhase::Stopped => "stopped",
        }
    }
}

/// Where an agent's speed figures came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PerformanceSource {
    /// Measured on the live requests the agent served.
    Served,
    /// From `switchyard-agent bench`.
    Bench,
    /// Not measured yet.
    #[default]
    None,
}

impl PerformanceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            PerformanceSource::Served => "served",
            PerformanceSource::Bench => "bench",
            PerformanceSource::None => "none",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_forms_are_the_serde_names() {
        for api in [
            Api::OpenAiChat,
            Api::OpenAiCompletions,
            Api::OpenAiEmbeddings,
            Api::OpenAiOther,
            Api::AnthropicMessages,
            Api::OllamaChat,
            Api::OllamaGenerate,
            Api::OllamaEmbed,
        ] {
            assert_eq!(serde_json::to_value(api).ok(), Some(api.as_str().into()));
        }
        for kind in [
            RuntimeKind::Ollama,
            RuntimeKind::Vllm,
            RuntimeKind::Mlx,
            RuntimeKind::LlamaCpp,
            RuntimeKind::Openai,
            RuntimeKind::Simulated,
            RuntimeKind::None,
        ] {
            assert_eq!(serde_json::to_value(kind).ok(), Some(kind.as_str().into()));
        }
        for phase in [
            SupervisorPhase::Starting,
            SupervisorPhase::Running,
            SupervisorPhase::BackingOff,
            SupervisorPhase::Stopped,
        ] {
            assert_eq!(serde_json::to_value(phase).ok(), Some(phase.as_str().into()));
        }
        for source in [
            PerformanceSource::Served,
            PerformanceSource::Bench,
            PerformanceSource::None,
        ] {
            assert_eq!(serde_json::to_value(source).ok(), Some(source.as_str().into()));
        }
    }

    #[test]
    fn an_unknown_kind_is_refused_with_the_known_ones_named() {
        let error = serde_json::from_str::<RuntimeKind>("\"vllm2\"")
            .err()
            .map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("vllm2") && e.contains("llama-cpp")),
            "{error:?}"
        );
    }
}
