//! The agent's TOML configuration (`agent.toml`). Unknown keys are errors naming the file
//! and key; every field is documented in docs/agent.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the agent config: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid agent config: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: field `{field}`: {message}")]
    Invalid {
        path: String,
        field: String,
        message: String,
    },
}

/// `agent.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This node's name, e.g. `xeon`. Once agents join over mTLS it must match the
    /// certificate's name.
    pub node: String,
    /// Free-form labels policies can read, e.g. `role = "batch"`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Requests this node runs at once (the seed: m4 1, ryzen 4, xeon 2).
    pub max_concurrency: u32,
    /// The largest `max_tokens` this node accepts (the seed: m4 2048, ryzen 4096, xeon 2048).
    pub max_tokens: u32,
    /// How often telemetry is sampled, in milliseconds (default 1000, at least 100).
    #[serde(default = "default_interval")]
    pub telemetry_interval_ms: u64,
    pub runtime: RuntimeConfig,
    /// Logical model name -> what this node's runtime serves it as.
    #[serde(default, rename = "models")]
    pub models: Vec<ModelEntry>,
    /// The controller to join over mTLS. Absent: the agent serves only its local API.
    #[serde(default)]
    pub controller: Option<ControllerLink>,
    /// The machine's power draw, for energy figures where no GPU measures it.
    #[serde(default)]
    pub energy: Option<EnergyConfig>,
}

/// `[energy]`: the whole machine's draw as the operator knows it (a wall meter, the spec
/// sheet). Used only where NVML measures nothing; reported as `declared`, never as measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergyConfig {
    /// Watts while the node serves requests.
    pub watts: f32,
    /// Watts while it is idle (default 0: idle draw is not counted).
    #[serde(default)]
    pub idle_watts: f32,
}

/// How the agent reaches the controller. The paths are relative to the config file; they
/// are read again at every connection attempt, so replaced certificates take effect at the
/// next handshake.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerLink {
    /// `host:port` of the controller's agent endpoint, e.g. `controller.lan:7443`.
    pub address: String,
    /// The name the controller's certificate must carry (default: the host of `address`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// The cluster CA (`ca.pem` of the bundle from `switchyard certs issue`).
    pub ca: PathBuf,
    /// This node's certificate and key (`node.pem`, `node.key`).
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ControllerLink {
    pub fn server_name(&self) -> String {
        self.server_name.clone().unwrap_or_else(|| {
            let host = self.address.rsplit_once(':').map(|(h, _)| h).unwrap_or(&self.address);
            host.trim_start_matches('[').trim_end_matches(']').to_owned()
        })
    }
}

fn default_interval() -> u64 {
    1000
}

/// The runtime the agent drives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    pub kind: RuntimeKind,
    /// Where the runtime listens, e.g. `http://127.0.0.1:11434` (Ollama) or
    /// `http://127.0.0.1:8000` (vLLM). Not used by `simulated`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Start and supervise the runtime: the command and its arguments.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Ollama: pull a catalog model that is missing when a request needs it.
    #[serde(default)]
    pub pull_on_demand: bool,
    /// Ollama: how long a model stays loaded after a request (e.g. `"30m"`, `"-1"`).
    #[serde(default)]
    pub keep_alive: Option<String>,
    /// `simulated`: which seed machine to imitate (`m4`, `ryzen`, `xeon`).
    #[serde(default)]
    pub profile: Option<String>,
    /// `simulated`: real seconds per simulated second (default 1.0; 0 generates at once,
    /// for measuring the routing path itself).
    #[serde(default)]
    pub time_scale: Option<f32>,
    /// Per-request timeout towards the runtime, in seconds (default 600).
    #[serde(default = "default_timeout")]
    pub request_timeout_s: u64,
    /// Memory the models the agent starts may use together, in MB (default: the VRAM of all
    /// NVIDIA GPUs, else the RAM; unified memory on Apple Silicon).
    #[serde(default)]
    pub memory_budget_mb: Option<u64>,
    /// How long a model's runtime may take to answer its readiness probe, in seconds
    /// (default 300).
    #[serde(default = "default_load_timeout")]
    pub load_timeout_s: u64,
    /// vLLM: subscribe to its KV-cache events (`--kv-events-config`), so the controller's
    /// cache estimate for this node comes from the runtime's own account.
    #[serde(default)]
    pub kv_events: Option<KvEventsConfig>,
}

/// `[runtime.kv_events]`: where vLLM publishes its KV-cache events. The endpoints are the ones
/// given to vLLM's `--kv-events-config` (`endpoint`, `replay_endpoint`, `topic`); loopback
/// only. With a `tcp://` endpoint vLLM connects and the agent binds it; with `ipc://` vLLM
/// binds and the agent connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvEventsConfig {
    pub endpoint: String,
    /// vLLM's replay endpoint: missed batches are fetched again from it (without it, a gap
    /// throws the agent's copy away).
    #[serde(default)]
    pub replay_endpoint: Option<String>,
    #[serde(default = "default_kv_topic")]
    pub topic: String,
}

fn default_kv_topic() -> String {
    "kv".to_owned()
}

fn default_load_timeout() -> u64 {
    300
}

fn default_timeout() -> u64 {
    600
}

/// The runtime kinds an agent drives (the config's `runtime.kind`); `none` is refused.
pub use switchyard_protocol::RuntimeKind;

/// One catalog entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The cluster-wide name clients use, e.g. `qwen25-coder-7b`.
    pub logical: String,
    /// The runtime's name for it, e.g. `qwen2.5-coder:7b-instruct-q4_K_M`.
    pub local: String,
    #[serde(default)]
    pub quantization: Option<String>,
    /// Context window in tokens.
    pub context_length: u32,
    /// `best`, `good` or `fast`: what policies may prefer for quality.
    #[serde(default)]
    pub tier: Option<String>,
    /// Start this model's own runtime on demand: the command, with `{port}` where the
    /// agent puts the port it chose (e.g. `["vllm", "serve", "Qwen/...", "--port", "{port}"]`).
    /// Absent: the model is served by `[runtime]`'s server.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Memory the model's runtime needs, in MB (absent: measured at its first load).
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// How long the model may stay idle before its runtime is stopped (`"90s"`, `"30m"`,
    /// `"2h"`; absent or `"-1"`: until memory is needed for another model).
    #[serde(default)]
    pub keep_alive: Option<String>,
    /// Start it when the agent starts.
    #[serde(default)]
    pub preload: bool,
}

impl ModelEntry {
    /// Whether the agent starts this model's runtime itself.
    pub fn managed(&self) -> bool {
        self.command.is_some()
    }
}

/// A keep-alive duration: `"90s"`, `"30m"`, `"2h"`, `"0"`; `None` for `"-1"` (forever).
pub fn parse_keep_alive(text: &str) -> Result<Option<std::time::Duration>, String> {
    let text = text.trim();
    if text == "-1" {
        return Ok(None);
    }
    if text == "0" {
        return Ok(Some(std::time::Duration::ZERO));
    }
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; use e.g. \"90s\", \"30m\", \"2h\", \"0\" or \"-1\""))?;
    let seconds = match unit {
        "s" => value,
        "m" => value * 60,
        "h" => value * 3600,
        _ => {
            return Err(format!(
                "{text:?} is not a duration; use e.g. \"90s\", \"30m\", \"2h\", \"0\" or \"-1\""
            ));
        }
    };
    Ok(Some(std::time::Duration::from_secs(seconds)))
}

/// A `ConfigError::Invalid` for `field` of the config file `shown`.
fn invalid_field(shown: &str, field: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        path: shown.to_owned(),
        field: field.to_owned(),
        message,
    }
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut config = Self::parse(&text, &shown)?;
        // Certificate paths are relative to the config file.
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(link) = &mut config.controller {
            link.ca = base.join(&link.ca);
            link.cert = base.join(&link.cert);
            link.key = base.join(&link.key);
        }
        Ok(config)
    }

    pub fn parse(text: &str, shown: &str) -> Result<Self, ConfigError> {
        let config: AgentConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: shown.to_owned(),
            message: e.to_string(),
        })?;
        config.validate(shown)?;
        Ok(config)
    }

    fn validate(&self, shown: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| invalid_field(shown, field, message);
        self.validate_energy(shown)?;
        self.validate_node(shown)?;
        self.validate_limits(shown)?;
        self.validate_runtime(shown)?;
        if let Some(link) = &self.controller
            && !link.address.contains(':')
        {
            return Err(invalid(
                "controller.address",
                format!("{:?} needs a port, e.g. \"controller.lan:7443\"", link.address),
            ));
        }
        self.validate_models(shown)?;
        if self.runtime.memory_budget_mb == Some(0) {
            return Err(invalid("runtime.memory_budget_mb", "must be at least 1".into()));
        }
        Ok(())
    }

    /// Checks `[energy]`: both wattages are finite, non-negative power draws.
    fn validate_energy(&self, shown: &str) -> Result<(), ConfigError> {
        if let Some(energy) = &self.energy {
            for (field, watts) in [("energy.watts", energy.watts), ("energy.idle_watts", energy.idle_watts)] {
                if !(watts >= 0.0 && watts.is_finite() && watts < 100_000.0) {
                    return Err(invalid_field(
                        shown,
                        field,
                        format!("{watts} is not a power draw; give the machine's watts, e.g. 260.0"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks that `node` is 1-63 lowercase letters, digits and '-'.
    fn validate_node(&self, shown: &str) -> Result<(), ConfigError> {
        let name_ok = !self.node.is_empty()
            && self.node.len() <= 63
            && self
                .node
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(invalid_field(
                shown,
                "node",
                format!("{:?}: use 1-63 lowercase letters, digits and '-'", self.node),
            ));
        }
        Ok(())
    }

    /// Checks the lower bounds of `max_concurrency`, `max_tokens` and `telemetry_interval_ms`.
    fn validate_limits(&self, shown: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| invalid_field(shown, field, message);
        if self.max_concurrency == 0 {
            return Err(invalid("max_concurrency", "must be at least 1".into()));
        }
        if self.max_tokens == 0 {
            return Err(invalid("max_tokens", "must be at least 1".into()));
        }
        if self.telemetry_interval_ms < 100 {
            return Err(invalid("telemetry_interval_ms", "must be at least 100".into()));
        }
        Ok(())
    }

    /// Checks `[runtime]`: the simulated profile or the base URL, then `runtime.command`.
    fn validate_runtime(&self, shown: &str) -> Result<(), ConfigError> {
        match self.runtime.kind {
            RuntimeKind::None => {
                return Err(invalid_field(
                    shown,
                    "runtime.kind",
                    "is \"none\", which only the controller shows for a node that reports no runtime; \
                     name the runtime this agent fronts: ollama, vllm, mlx, llama-cpp, openai or simulated"
                        .into(),
                ));
            }
            RuntimeKind::Simulated => self.validate_simulated_profile(shown)?,
            _ => self.validate_base_url(shown)?,
        }
        if let Some(command) = &self.runtime.command
            && command.is_empty()
        {
            return Err(invalid_field(
                shown,
                "runtime.command",
                "is empty; give the program and its arguments".into(),
            ));
        }
        self.validate_kv_events(shown)
    }

    /// Checks `[runtime.kv_events]`: vLLM only, loopback endpoints only.
    fn validate_kv_events(&self, shown: &str) -> Result<(), ConfigError> {
        let Some(kv) = &self.runtime.kv_events else {
            return Ok(());
        };
        if self.runtime.kind != RuntimeKind::Vllm {
            return Err(invalid_field(
                shown,
                "runtime.kv_events",
                format!(
                    "is for vLLM's KV-cache events, and this runtime is {}; remove the table",
                    self.runtime.kind.as_str()
                ),
            ));
        }
        let endpoints = [
            ("runtime.kv_events.endpoint", Some(&kv.endpoint)),
            ("runtime.kv_events.replay_endpoint", kv.replay_endpoint.as_ref()),
        ];
        for (field, endpoint) in endpoints {
            if let Some(endpoint) = endpoint
                && !crate::kv_events::is_local_endpoint(endpoint)
            {
                return Err(invalid_field(
                    shown,
                    field,
                    format!(
                        "{endpoint:?} is not a loopback endpoint; use the one given to vLLM's --kv-events-config, \
                         e.g. \"tcp://127.0.0.1:5557\" or \"ipc:///run/vllm/kv-events\""
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks that a simulated runtime names a known simulated machine.
    fn validate_simulated_profile(&self, shown: &str) -> Result<(), ConfigError> {
        let profile = self.runtime.profile.as_deref().unwrap_or_default();
        if crate::simulator::Profile::named(profile).is_none() {
            return Err(invalid_field(
                shown,
                "runtime.profile",
                format!("{profile:?} is not a simulated machine; use \"m4\", \"ryzen\" or \"xeon\""),
            ));
        }
        Ok(())
    }

    /// Checks that a real runtime has an http(s) base URL, unless every model runs its own.
    fn validate_base_url(&self, shown: &str) -> Result<(), ConfigError> {
        let every_model_managed = !self.models.is_empty() && self.models.iter().all(ModelEntry::managed);
        let url = match &self.runtime.base_url {
            Some(url) => url,
            None if every_model_managed => "http://127.0.0.1",
            None => {
                return Err(invalid_field(
                    shown,
                    "runtime.base_url",
                    "is required for this runtime kind, e.g. \"http://127.0.0.1:11434\" (or give every model its own `command`)".into(),
                ));
            }
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid_field(
                shown,
                "runtime.base_url",
                format!("{url:?} must start with http:// or https://"),
            ));
        }
        Ok(())
    }

    /// Checks every `[[models]]` entry, in order, and that no logical name is listed twice.
    fn validate_models(&self, shown: &str) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for (i, model) in self.models.iter().enumerate() {
            if !seen.insert(&model.logical) {
                return Err(invalid_field(
                    shown,
                    &format!("models[{i}].logical"),
                    format!("{:?} is listed twice", model.logical),
                ));
            }
            self.validate_model(shown, i, model)?;
        }
        Ok(())
    }

    /// Checks one `[[models]]` entry (`models[i]`) other than its name's uniqueness.
    fn validate_model(&self, shown: &str, i: usize, model: &ModelEntry) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| invalid_field(shown, field, message);
        if model.context_length == 0 {
            return Err(invalid(
                &format!("models[{i}].context_length"),
                "must be at least 1".into(),
            ));
        }
        if let Some(command) = &model.command {
            self.validate_model_command(shown, i, command)?;
        } else if model.preload || model.memory_mb.is_some() {
            return Err(invalid(
                &format!("models[{i}]"),
                "`preload` and `memory_mb` need a `command`: the agent only loads the models it starts".into(),
            ));
        }
        if let Some(keep_alive) = &model.keep_alive
            && let Err(message) = parse_keep_alive(keep_alive)
        {
            return Err(invalid(&format!("models[{i}].keep_alive"), message));
        }
        if model.memory_mb == Some(0) {
            return Err(invalid(&format!("models[{i}].memory_mb"), "must be at least 1".into()));
        }
        Ok(())
    }

    /// Checks a per-model `command`: allowed for this runtime kind, and with a `{port}`.
    fn validate_model_command(&self, shown: &str, i: usize, command: &[String]) -> Result<(), ConfigError> {
        if matches!(self.runtime.kind, RuntimeKind::Ollama | RuntimeKind::Simulated) {
            return Err(invalid_field(
                shown,
                &format!("models[{i}].command"),
                format!(
                    "the {} runtime loads its models itself; per-model commands are for vllm, mlx, llama-cpp and openai",
                    self.runtime.kind.as_str()
                ),
            ));
        }
        if command.is_empty() || !command.iter().any(|arg| arg.contains("{port}")) {
            return Err(invalid_field(
                shown,
                &format!("models[{i}].command"),
                "must give the program and its arguments, with \"{port}\" where the agent puts the port, e.g. [\"vllm\", \"serve\", \"MODEL\", \"--port\", \"{port}\"]".into(),
            ));
        }
        Ok(())
    }

    /// The shared runtime's address (with a runtime per model and none shared, a placeholder
    /// that nothing is sent to).
    pub fn base_url(&self) -> String {
        self.runtime
            .base_url
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1".to_owned())
            .trim_end_matches('/')
            .to_owned()
    }

    /// The catalog as the wire type, with `loaded` from the runtime's list (Ollama names an
    /// untagged model `name:latest`).
    pub fn variants(&self, loaded: &[String]) -> Vec<switchyard_protocol::ModelVariant> {
        self.models
            .iter()
            .map(|m| switchyard_protocol::ModelVariant {
                logical: m.logical.clone(),
                local: m.local.clone(),
                quantization: m.quantization.clone(),
                context_length: m.context_length,
                loaded: loaded
                    .iter()
                    .any(|l| l == &m.local || l.strip_suffix(":latest") == Some(m.local.as_str())),
                load_ms: None,
            })
            .collect()
    }

    /// Where `switchyard-agent bench` keeps its results, beside the config file.
    pub fn bench_file(config_path: &Path) -> PathBuf {
        config_path.with_extension("bench.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_paths_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "node = \"xeon\"\nmax_concurrency = 1\nmax_tokens = 1\n[runtime]\nkind = \"simulated\"\nprofile = \"xeon\"\n\
             [controller]\naddress = \"c:1\"\nca = \"certs/ca.pem\"\ncert = \"/abs/node.pem\"\nkey = \"certs/node.key\"\n",
        )
        .expect("write");
        let link = AgentConfig::load(&path).expect("loads").controller.expect("link");
        assert_eq!(link.ca, dir.path().join("certs/ca.pem"));
        assert_eq!(link.cert, PathBuf::from("/abs/node.pem"));
        assert_eq!(link.key, dir.path().join("certs/node.key"));
        assert_eq!(link.server_name(), "c");
    }
}
