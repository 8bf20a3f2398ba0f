//! Request metadata: what a policy learns about a prompt (never the prompt itself).

use serde::{Deserialize, Serialize};

use crate::Api;

/// The metadata of one prompt, as the front door extracted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestInfo {
    #[serde(default)]
    pub id: String,
    /// `openai-chat`, `openai-completions`, `openai-embeddings`, `ollama-chat`, ...
    #[serde(default)]
    pub api: Api,
    pub model: String,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub prompt_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// 0 (lowest) to 9 (highest).
    #[serde(default = "default_priority")]
    pub priority: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// The controller's estimate of the prompt tokens each node already holds in its prefix
    /// cache (nodes holding none are left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cached: Vec<CachedPrefix>,
}

/// Prompt tokens of one request that a node is estimated to hold already.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachedPrefix {
    pub node: String,
    pub tokens: u32,
    /// Where the figure comes from (omitted when approximate).
    #[serde(default, skip_serializing_if = "CacheSource::is_approximate")]
    pub source: CacheSource,
}

/// Where a cache estimate comes from, best first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheSource {
    /// The runtime's own account (vLLM's KV-cache events), matched against the prompt as the
    /// runtime tokenizes it.
    Precise,
    /// The controller's prefix index: the prompts it sent the node, at message boundaries.
    #[default]
    Approximate,
}

impl CacheSource {
    pub fn is_approximate(&self) -> bool {
        *self == CacheSource::Approximate
    }
}

pub const DEFAULT_PRIORITY: u8 = 5;

fn default_priority() -> u8 {
    DEFAULT_PRIORITY
}

impl RequestInfo {
    /// A request for `model` with every optional field at its default.
    pub fn for_model(model: impl Into<String>) -> Self {
        Self {
            id: String::new(),
            api: Api::default(),
            model: model.into(),
            stream: false,
            prompt_tokens: 0,
            max_tokens: None,
            priority: DEFAULT_PRIORITY,
            task: None,
            session: None,
            tags: Vec::new(),
            cached: Vec::new(),
        }
    }
}
