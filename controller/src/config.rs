//! The controller's TOML configuration. Every field is documented in docs/configuration.md; unknown
//! keys are errors that name the file and the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the controller config: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid controller config: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: field `{field}`: {message}")]
    Invalid {
        path: String,
        field: &'static str,
        message: String,
    },
}

/// `controller.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// Address of the HTTP endpoint (prompts, admin API, metrics). Default 127.0.0.1:8080.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    pub admin: AdminConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Where agents connect (mTLS). Absent: no agents, only the static snapshot.
    #[serde(default)]
    pub agents: Option<AgentsConfig>,
    /// Keys for the prompt API; none: the API is open.
    #[serde(default)]
    pub api_keys: Vec<crate::front::keys::ApiKeyConfig>,
    /// Networks whose clients may call without a key (Ollama clients cannot send one).
    #[serde(default)]
    pub keyless: Vec<crate::front::keyless::KeylessConfig>,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The decision record: one record per routed request in an embedded database.
    #[serde(default)]
    pub decisions: DecisionsConfig,
    /// When a canary policy is rolled back automatically (each overridable per canary).
    #[serde(default)]
    pub canary: crate::policy::canary::CanaryRules,
    /// Serve the policies as a gateway's endpoint picker too (Envoy's ext_proc).
    #[serde(default)]
    pub gateway: Option<GatewayConfig>,
}

/// `[gateway]`: the endpoint picker (issue #23).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where the ext_proc gRPC service listens, e.g. `127.0.0.1:9002` (Envoy's `grpc_service`
    /// cluster points here).
    pub picker_listen: SocketAddr,
    /// The highest `x-switchyard-priority` the gateway's clients may ask for (0-9, default 9:
    /// the gateway authenticates them).
    #[serde(default = "gateway_max_priority")]
    pub max_priority: u8,
    /// The gateway's share of the queue beside the API keys waiting at the same priority
    /// (1-1000, default 1).
    #[serde(default = "gateway_weight")]
    pub weight: u32,
}

fn gateway_max_priority() -> u8 {
    9
}

fn gateway_weight() -> u32 {
    1
}

impl GatewayConfig {
    /// What the gateway's requests are decided as: every model, this priority cap and weight,
    /// queued as one key, `gateway`; `Err` says which field is out of range.
    pub fn grant(&self) -> Result<crate::front::keys::Grant, String> {
        if self.max_priority > 9 {
            return Err(format!(
                "field `gateway.max_priority`: {} is not 0-9",
                self.max_priority
            ));
        }
        if !(1..=1000).contains(&self.weight) {
            return Err(format!("field `gateway.weight`: {} is not 1-1000", self.weight));
        }
        Ok(crate::front::keys::Grant {
            name: "gateway".to_owned(),
            models: vec!["*".to_owned()],
            max_priority: self.max_priority,
            weight: self.weight,
            continue_streams: true,
        })
    }
}

/// `[decisions]`: where the decision record is kept and how much of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionsConfig {
    /// Keep a record of every routed request (default true).
    pub enabled: bool,
    /// The database file, relative to this config's folder (default `decisions.redb`).
    pub path: std::path::PathBuf,
    /// Records kept at most; the oldest go first (default 1,000,000).
    pub max_records: u64,
    /// Records older than this many hours go (default 168, a week).
    pub max_age_hours: u64,
    /// The most the records may take on disk, in MiB (default 1024); the oldest go first.
    pub max_mb: u64,
}

impl Default for DecisionsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "decisions.redb".into(),
            max_records: 1_000_000,
            max_age_hours: 168,
            max_mb: 1024,
        }
    }
}

impl DecisionsConfig {
    pub fn options(&self) -> Option<crate::decisions::StoreOptions> {
        self.enabled.then(|| crate::decisions::StoreOptions {
            path: self.path.clone(),
            max_records: self.max_records,
            max_age: std::time::Duration::from_secs(self.max_age_hours.saturating_mul(3600)),
            max_bytes: self.max_mb.saturating_mul(1024 * 1024),
        })
    }
}

/// Front-door limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest prompt request body, in bytes (default 1 MiB).
    pub max_body_bytes: usize,
    /// Requests that may wait for a node slot at once (default 64).
    pub queue_capacity: usize,
    /// The longest a request waits for a node slot, in ms (default 30000).
    pub queue_timeout_ms: u64,
    /// The longest a node may take to start answering, in ms (default 60000).
    pub first_byte_timeout_ms: u64,
    /// The longest a whole response may take, in ms (default 600000).
    pub total_timeout_ms: u64,
    /// Client connections open at once on the front door and admin API (default 1024);
    /// more wait in the kernel's backlog. Keep it under the process's open-file limit.
    pub max_connections: usize,
    /// The longest a client may take to send a request's headers, in ms (default 10000);
    /// a slower (or silent) connection is closed. An HTTP/2 connection that opens no stream
    /// within it is closed too.
    pub header_read_timeout_ms: u64,
    /// Client connections open at once from one address (default 256): more from it are
    /// closed at once, so one client cannot take every connection.
    pub max_connections_per_address: usize,
    /// The longest a connection may stay open with no request after its last one, in ms
    /// (default 60000).
    pub idle_timeout_ms: u64,
    /// The longest a prompt's body may take to arrive after its headers, in ms (default
    /// 30000); a slower one is answered 408.
    pub body_read_timeout_ms: u64,
    /// How many times one stream may continue on another node when its node is lost
    /// mid-answer (default 2; 0 turns continuation off).
    pub max_continuations: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = crate::front::forward::FrontLimits::default();
        Self {
            max_body_bytes: d.max_body_bytes,
            queue_capacity: d.queue_capacity,
            queue_timeout_ms: d.queue_timeout.as_millis() as u64,
            first_byte_timeout_ms: d.first_byte_timeout.as_millis() as u64,
            total_timeout_ms: d.total_timeout.as_millis() as u64,
            max_connections: d.max_connections,
            header_read_timeout_ms: d.header_read_timeout.as_millis() as u64,
            max_connections_per_address: d.max_connections_per_address,
            idle_timeout_ms: d.idle_timeout.as_millis() as u64,
            body_read_timeout_ms: d.body_read_timeout.as_millis() as u64,
            max_continuations: d.max_continuations,
        }
    }
}

impl LimitsConfig {
    pub fn limits(&self) -> crate::front::forward::FrontLimits {
        use std::time::Duration;
        crate::front::forward::FrontLimits {
            max_body_bytes: self.max_body_bytes,
            queue_capacity: self.queue_capacity,
            queue_timeout: Duration::from_millis(self.queue_timeout_ms),
            first_byte_timeout: Duration::from_millis(self.first_byte_timeout_ms),
            total_timeout: Duration::from_millis(self.total_timeout_ms),
            max_connections: self.max_connections.max(1),
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms.max(1)),
            max_connections_per_address: self.max_connections_per_address.max(1),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms.max(1)),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms.max(1)),
            max_continuations: self.max_continuations,
        }
    }
}

/// The agents' link endpoint and its certificates (from `switchyard certs init`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsConfig {
    /// Address agents dial, e.g. `0.0.0.0:7443`.
    pub listen: SocketAddr,
    /// The cluster CA (`ca.pem`): agents' certificates must chain to it.
    pub ca: PathBuf,
    /// The controller's certificate and key (`controller.pem`, `controller.key`).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, only these node names may join (any certificate from the CA otherwise).
    #[serde(default)]
    pub nodes: Option<Vec<String>>,
    /// Serials of node certificates that may no longer join (`switchyard nodes` and the
    /// controller's log show each node's serial).
    #[serde(default)]
    pub revoked_serials: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// File holding the admin bearer token (one line). Relative to this config file.
    pub token_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Folder of policy files (`*.toml`), loaded at start. Relative to this config file.
    pub dir: Option<PathBuf>,
    /// Name of the policy to activate at start (it must be in `dir`).
    pub active: Option<String>,
    /// Reload changed files in `dir` while running; a changed active policy is swapped in.
    pub watch: bool,
    /// How often the folder is scanned, in milliseconds.
    pub watch_interval_ms: u64,
    /// Faults among the active policy's last 20 live decisions after which it is replaced by
    /// the previous one (0 disables). `route explain` never counts.
    pub revert_after_faults: u32,
    /// Where compiled policy code is kept across restarts, relative to this config file
    /// (default: `$XDG_CACHE_HOME/switchyard/policy-code` or `~/.cache/switchyard/policy-code`;
    /// the environment's `SWITCHYARD_COMPILE_CACHE=off` disables it).
    pub compile_cache: Option<PathBuf>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            dir: None,
            active: None,
            watch: true,
            watch_interval_ms: 500,
            revert_after_faults: 5,
            compile_cache: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// A snapshot file (`[[nodes]]`, as in `policies/fixtures/seed-cluster.toml`) used as
    /// the node table: for policy development without agents.
    pub static_snapshot: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl ControllerConfig {
    /// Read `path`; relative paths inside become relative to its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut config: ControllerConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.admin.token_file = base.join(&config.admin.token_file);
        config.policy.dir = config.policy.dir.map(|d| base.join(d));
        config.policy.compile_cache = config.policy.compile_cache.map(|d| base.join(d));
        config.cluster.static_snapshot = config.cluster.static_snapshot.map(|s| base.join(s));
        config.decisions.path = base.join(&config.decisions.path);
        if config.decisions.max_records == 0 {
            return Err(ConfigError::Invalid {
                path: shown,
                field: "decisions.max_records",
                message: "must be at least 1; to keep no record, set `enabled = false`".into(),
            });
        }
        if config.decisions.max_mb == 0 {
            return Err(ConfigError::Invalid {
                path: shown,
                field: "decisions.max_mb",
                message: "must be at least 1 (MiB); to keep no record, set `enabled = false`".into(),
            });
        }
        for key in &mut config.api_keys {
            key.key_file = key.key_file.as_ref().map(|f| base.join(f));
        }
        if let Some(agents) = &mut config.agents {
            agents.ca = base.join(&agents.ca);
            agents.cert = base.join(&agents.cert);
            agents.key = base.join(&agents.key);
        }
        if config.policy.active.is_some() && config.policy.dir.is_none() {
            return Err(ConfigError::Invalid {
                path: shown,
                field: "policy.active",
                message: "names a policy but `policy.dir` is not set; add `dir = \"policies\"`".into(),
            });
        }
        if let Err(message) = config.canary.validate() {
            return Err(ConfigError::Invalid {
                path: shown,
                field: "canary",
                message,
            });
        }
        if config.policy.watch_interval_ms < 50 {
            return Err(ConfigError::Invalid {
                path: shown,
                field: "policy.watch_interval_ms",
                message: "must be at least 50".into(),
            });
        }
        Ok(config)
    }
}
