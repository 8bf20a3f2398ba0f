//! What an agent reports about its machine and runtime: one JSON document per sample.
//! `switchyard-agent telemetry --once` prints it; the controller turns it into the
//! policy-facing [`crate::NodeSnapshot`].

use serde::{Deserialize, Serialize};

use crate::{ModelVariant, PerformanceSource, RuntimeKind, SupervisorPhase};

/// The version of the agent link's protocol (the telemetry document, the agent's HTTP API
/// over the link) this build speaks. Raise it with any change an older peer cannot read.
pub const LINK_PROTOCOL: u32 = 1;

fn first_link_protocol() -> u32 {
    1
}

/// One telemetry sample of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentTelemetry {
    /// The node's name (the certificate's, once agents connect over mTLS).
    pub node: String,
    /// Milliseconds since the Unix epoch when the sample was taken.
    pub sampled_at_ms: u64,
    pub agent_version: String,
    /// The agent link's protocol version ([`LINK_PROTOCOL`] of the agent's build; absent
    /// from agents built before the field, which spoke version 1). The controller refuses
    /// an agent whose version differs from its own, saying which to upgrade.
    #[serde(default = "first_link_protocol")]
    pub link_protocol: u32,
    #[serde(default)]
    pub labels: Vec<(String, String)>,
    pub host: HostInfo,
    pub system: SystemTelemetry,
    /// Empty when the machine has no NVIDIA GPU or no driver; `gpu_status` says which.
    #[serde(default)]
    pub gpus: Vec<GpuTelemetry>,
    /// `ok (driver 580.x, 1 GPU)` or why NVML is unavailable.
    pub gpu_status: String,
    pub power: PowerTelemetry,
    /// Absent when the agent has no runtime configured (`telemetry --once` without config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeTelemetry>,
    pub limits: NodeLimits,
    #[serde(default)]
    pub models: Vec<ModelVariant>,
    pub performance: Performance,
    /// The runtimes the agent starts per model (`[[models]] command`): what is resident,
    /// loading or cold, with memory, idleness and load-time estimates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_states: Vec<ModelState>,
    /// The memory those runtimes may use together, in MB (when the agent starts any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_budget_mb: Option<u64>,
    /// Energy the node used and per token generated, and where the figure comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy: Option<EnergyTelemetry>,
}

/// Where a node's energy figure comes from, from measured to assumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnergySource {
    /// NVML's total energy counter of every GPU: measured, GPUs only.
    NvmlCounter,
    /// NVML's power readings integrated over time (GPUs without the counter): measured, GPUs only.
    NvmlPower,
    /// The operator's `[energy] watts` for the whole machine, while it serves, times time.
    Declared,
    /// The seed document's figure for a simulated machine, times time: not a measurement.
    SeedFigure,
}

impl EnergySource {
    pub fn as_str(self) -> &'static str {
        match self {
            EnergySource::NvmlCounter => "nvml-counter",
            EnergySource::NvmlPower => "nvml-power",
            EnergySource::Declared => "declared",
            EnergySource::SeedFigure => "seed-figure",
        }
    }
}

/// A node's energy since its agent started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergyTelemetry {
    pub source: EnergySource,
    /// Joules used since the agent started.
    pub joules_total: f64,
    /// Average draw since the previous sample, in watts.
    pub watts: f32,
    /// Tokens generated since the agent started.
    pub tokens_total: u64,
    /// Joules per generated token over the recent samples that generated any (weighted
    /// towards the newest); absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joules_per_token: Option<f32>,
}

/// Where a model the agent starts itself stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelLoadState {
    /// Not running; a request starts it.
    Cold,
    /// Its runtime is starting (requests for it wait for this one load).
    Loading,
    /// Resident and serving.
    Ready,
    /// Being stopped (idle past its keep-alive, or evicted to make room).
    Stopping,
}

/// One model the agent starts itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelState {
    /// The runtime's name for it (the catalog's `local`).
    pub local: String,
    pub state: ModelLoadState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Declared, or measured at its last load (`memory_measured`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default)]
    pub memory_measured: bool,
    pub in_flight: u32,
    /// Seconds since its last request ended (resident and idle only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_s: Option<u64>,
    /// How long a load takes, from its previous loads (absent before the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_ms: Option<u32>,
    pub loads: u32,
    pub evictions: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostInfo {
    pub hostname: String,
    pub os: String,
    pub os_version: String,
    pub arch: String,
    pub cpu_brand: String,
    pub cpu_cores: u32,
    /// Apple Silicon (unified memory, MLX-capable).
    pub apple_silicon: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemTelemetry {
    pub cpu_util_pct: f32,
    pub mem_used_mb: u64,
    pub mem_total_mb: u64,
    pub swap_used_mb: u64,
    pub swap_total_mb: u64,
    pub load_1m: f64,
    pub load_5m: f64,
    pub load_15m: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuTelemetry {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub util_pct: f32,
    pub mem_util_pct: f32,
    pub mem_used_mb: u64,
    pub mem_total_mb: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_c: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_w: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_limit_w: Option<f32>,
    /// NVML's total energy counter: millijoules since the driver was loaded (Volta and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_mj: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sm_clock_mhz: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_clock_mhz: Option<u32>,
    /// NVML's active clock throttle reasons, e.g. `sw_thermal_slowdown`; `gpu_idle` is not
    /// a throttle and is left out.
    #[serde(default)]
    pub throttle_reasons: Vec<String>,
}

impl GpuTelemetry {
    /// A throttle that costs speed (power or thermal), as policies see it.
    pub fn throttled(&self) -> bool {
        self.throttle_reasons
            .iter()
            .any(|r| r.contains("thermal") || r.contains("power") || r.contains("slowdown"))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerTelemetry {
    /// `None` where the machine has no battery or the OS does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_battery: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_pct: Option<f32>,
    /// The OS's thermal pressure level where exposed (macOS: `nominal`, `moderate`,
    /// `heavy`, `trapping`, `sleeping`); on Linux, the hottest thermal zone above its trip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thermal_pressure: Option<String>,
    pub thermal_throttled: bool,
    /// The machine is going to sleep (its operator's hook said so): no new work.
    #[serde(default)]
    pub sleeping: bool,
    /// Where these figures came from (`pmset`, `/sys/class/power_supply`, ...).
    pub source: String,
}

/// The runtime's own view of its work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeTelemetry {
    pub kind: RuntimeKind,
    /// True for the simulated runtime: never mistaken for real hardware.
    pub simulated: bool,
    pub base_url: String,
    /// The runtime answered its last health probe.
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Requests the runtime reports running (vLLM, llama.cpp slots) or the agent counts.
    pub running: u32,
    /// Requests the runtime reports waiting in its own queue.
    pub waiting: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache_usage_pct: Option<f32>,
    /// Models resident in the runtime (Ollama `/api/ps`, vLLM and llama.cpp: the served one).
    #[serde(default)]
    pub loaded_models: Vec<LoadedModel>,
    /// Supervision state when the agent runs the runtime itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<SupervisorState>,
    /// The runtime's own account of its prefix cache (vLLM's KV-cache events), where the
    /// agent subscribes to it: the controller may then ask the agent, per request, how many
    /// prompt tokens the runtime holds (the precise source of the cache estimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_events: Option<KvEventsTelemetry>,
}

/// The agent's copy of the runtime's prefix cache, built from its KV-cache events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvEventsTelemetry {
    /// Event batches have arrived since the agent (re)subscribed and the copy is current:
    /// only then does the agent answer cache probes.
    pub current: bool,
    /// Blocks the runtime holds now, as far as its events tell.
    pub blocks: u64,
    /// Tokens per block.
    pub block_size: u32,
    /// Event batches received (replayed ones included).
    pub batches: u64,
    /// Batches missed and fetched again from the runtime's replay endpoint.
    pub replayed: u64,
    /// Times the copy was thrown away: a gap that could not be replayed, the runtime
    /// restarting (its sequence starting again), or its cache cleared.
    pub purges: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadedModel {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_mb: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorState {
    pub state: SupervisorPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeLimits {
    pub max_concurrency: u32,
    pub max_tokens: u32,
}

/// Speeds the agent measured on the requests it served (or `switchyard-agent bench`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Performance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_sec: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f32>,
    /// Prompt tokens processed per second to the first token, not counting those the runtime
    /// found in its prefix cache (from prompts with at least 256 such tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_tokens_per_sec: Option<f32>,
    /// Requests these figures are averaged over.
    pub samples: u64,
    pub source: PerformanceSource,
    /// Requests being served by the agent right now.
    pub in_flight: u32,
    /// Tokens generated since the agent started.
    #[serde(default)]
    pub tokens_total: u64,
    /// Prompt tokens of the answers that reported them since the agent started, and how many
    /// of those the runtime found in its prefix cache (its hit rate is the second over the
    /// first).
    #[serde(default)]
    pub prompt_tokens_total: u64,
    #[serde(default)]
    pub cached_prompt_tokens_total: u64,
}
