//! The cluster snapshot: what the controller knows about each node at decision time.

use serde::{Deserialize, Serialize};

use crate::RuntimeKind;

/// One GPU as NVML reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSample {
    pub name: String,
    pub util_pct: f32,
    pub mem_used_mb: u64,
    pub mem_total_mb: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_c: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_w: Option<f32>,
    #[serde(default)]
    pub throttled: bool,
}

/// One model a node serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelVariant {
    /// Cluster-wide name clients ask for, e.g. `qwen25-coder-7b`.
    pub logical: String,
    /// Name the node's runtime knows, e.g. `qwen2.5-coder:7b-instruct-q4_K_M`.
    pub local: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    pub context_length: u32,
    /// Resident now: a request starts at once. False for a model that must load first.
    #[serde(default)]
    pub loaded: bool,
    /// For a model that is not resident: how long loading it takes, estimated from its
    /// previous loads (absent when never measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_ms: Option<u32>,
}

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSnapshot {
    pub name: String,
    #[serde(default)]
    pub labels: Vec<(String, String)>,
    pub runtime: RuntimeKind,
    pub healthy: bool,
    #[serde(default)]
    pub in_flight: u32,
    #[serde(default)]
    pub queued: u32,
    pub max_concurrency: u32,
    pub max_tokens: u32,
    #[serde(default)]
    pub cpu_util_pct: f32,
    #[serde(default)]
    pub mem_used_mb: u64,
    #[serde(default)]
    pub mem_total_mb: u64,
    #[serde(default)]
    pub gpus: Vec<GpuSample>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_battery: Option<bool>,
    #[serde(default)]
    pub thermal_throttled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_sec: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f32>,
    /// Recent prompt-processing speed (uncached prompt tokens per second to the first token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_tokens_per_sec: Option<f32>,
    #[serde(default)]
    pub models: Vec<ModelVariant>,
    #[serde(default)]
    pub last_seen_ms: u64,
}

impl NodeSnapshot {
    /// The variant of `logical` this node serves, if any.
    pub fn variant(&self, logical: &str) -> Option<&ModelVariant> {
        self.models.iter().find(|m| m.logical == logical)
    }

    /// Whether `local` is a model name this node's runtime knows.
    pub fn serves_local(&self, local: &str) -> bool {
        self.models.iter().any(|m| m.local == local)
    }

    /// Requests admitted or waiting, relative to the node's concurrency.
    pub fn load_ratio(&self) -> f32 {
        (self.in_flight + self.queued) as f32 / self.max_concurrency.max(1) as f32
    }

    pub fn has_free_slot(&self) -> bool {
        self.in_flight < self.max_concurrency
    }
}

/// All nodes the controller knows, healthy or not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSnapshot {
    #[serde(default)]
    pub nodes: Vec<NodeSnapshot>,
}

impl ClusterSnapshot {
    pub fn node(&self, name: &str) -> Option<&NodeSnapshot> {
        self.nodes.iter().find(|n| n.name == name)
    }
}
