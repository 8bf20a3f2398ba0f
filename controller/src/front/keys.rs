//! API keys for prompt submission: each key has a name, the logical models it may use, and
//! a cap on the priority it may ask for. No keys configured means an open endpoint (the
//! controller says so at start). Requests without a key from `[[keyless]]` networks get
//! that entry's grant (see [`super::keyless`]).

use std::path::PathBuf;

use std::net::IpAddr;

use http::HeaderMap;
use serde::Deserialize;

use super::ClientApi;
pub use super::grant::Grant;
use super::key_share::{Charge, KeyFull, KeyShares, KeySlot, OverBudget};
use super::keyless::{KeylessConfig, KeylessRule};

/// One `[[api_keys]]` entry of the controller config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Shown in logs and metrics, never the key itself.
    pub name: String,
    /// The key, inline (prefer `key_file`).
    #[serde(default)]
    pub key: Option<String>,
    /// A file holding the key (one line), relative to the config file.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Logical models this key may use; `["*"]` (the default) for all.
    #[serde(default = "all_models")]
    pub models: Vec<String>,
    /// Highest priority (0-9) requests with this key may ask for (default 9).
    #[serde(default = "max_priority")]
    pub max_priority: u8,
    /// Requests of this key that may be in flight at once (queued or answering); one more
    /// is refused with 429 and `Retry-After`. Absent: no limit.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// This key's share of the queue beside other keys waiting at the same priority: a key of
    /// weight 3 is admitted three times as often as one of weight 1 (1-1000, default 1).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Tokens (prompt and answer) this key may use a minute; a request that would go over is
    /// refused with 429 and `Retry-After` (when enough of the last minute has passed).
    /// Absent: no budget.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    /// Whether this key's streams continue on another node when their node is lost mid-answer
    /// (default true; `false` for a client that would rather see the error and retry itself).
    #[serde(default = "continue_streams")]
    pub continue_streams: bool,
}

fn continue_streams() -> bool {
    true
}

fn default_weight() -> u32 {
    1
}

fn all_models() -> Vec<String> {
    vec!["*".to_owned()]
}

fn max_priority() -> u8 {
    9
}

#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    keys: Vec<(String, Grant)>,
    keyless: Vec<KeylessRule>,
    shares: KeyShares,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ApiKeys {
    pub fn new(keys: Vec<(String, Grant)>) -> Self {
        Self {
            keys,
            keyless: Vec::new(),
            shares: KeyShares::default(),
        }
    }

    /// Also grant keyless requests as `keyless` says.
    pub fn with_keyless(mut self, keyless: Vec<KeylessRule>) -> Self {
        self.keyless = keyless;
        self
    }

    /// Resolve `[[api_keys]]` (reading key files) and `[[keyless]]`; errors name the entry.
    pub fn from_config(entries: &[ApiKeyConfig], keyless: &[KeylessConfig]) -> anyhow::Result<Self> {
        let keyless = keyless
            .iter()
            .enumerate()
            .map(|(i, entry)| KeylessRule::from_config(i, entry))
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            keyless.is_empty() || !entries.is_empty(),
            "keyless: without any [[api_keys]] the API is open to everyone already; add a key, or remove [[keyless]]"
        );
        let mut keys = Vec::new();
        let mut shares = KeyShares::default();
        for (i, entry) in entries.iter().enumerate() {
            let key = match (&entry.key, &entry.key_file) {
                (Some(key), None) => key.clone(),
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "api_keys[{i}] ({}): cannot read key_file {}: {e}",
                            entry.name,
                            path.display()
                        )
                    })?
                    .trim()
                    .to_owned(),
                _ => anyhow::bail!(
                    "api_keys[{i}] ({}): give exactly one of `key` and `key_file`",
                    entry.name
                ),
            };
            anyhow::ensure!(
                key.len() >= 16,
                "api_keys[{i}] ({}): the key must be at least 16 characters",
                entry.name
            );
            anyhow::ensure!(
                entry.max_priority <= 9,
                "api_keys[{i}] ({}): max_priority must be 0-9",
                entry.name
            );
            anyhow::ensure!(
                (1..=1000).contains(&entry.weight),
                "api_keys[{i}] ({}): weight must be 1-1000",
                entry.name
            );
            if let Some(budget) = entry.tokens_per_minute {
                anyhow::ensure!(
                    budget >= 1,
                    "api_keys[{i}] ({}): tokens_per_minute must be at least 1 (leave it out for no budget)",
                    entry.name
                );
                shares.budget(&entry.name, budget);
            }
            if let Some(limit) = entry.max_concurrent {
                anyhow::ensure!(
                    limit >= 1,
                    "api_keys[{i}] ({}): max_concurrent must be at least 1 (leave it out for no limit)",
                    entry.name
                );
                shares.limit(&entry.name, limit);
            }
            keys.push((
                key,
                Grant {
                    name: entry.name.clone(),
                    models: entry.models.clone(),
                    max_priority: entry.max_priority,
                    weight: entry.weight,
                    continue_streams: entry.continue_streams,
                },
            ));
        }
        Ok(Self { keys, keyless, shares })
    }

    /// The keys' shares (shared counters: a clone sees the live figures).
    pub fn shares(&self) -> &KeyShares {
        &self.shares
    }

    /// A place for one more request of the key `grant` names, within its `max_concurrent`.
    pub fn enter(&self, grant: &Grant) -> Result<Option<KeySlot>, KeyFull> {
        self.shares.enter(&grant.name)
    }

    /// Reserve `tokens` of the budget of the key `grant` names, within its `tokens_per_minute`.
    pub fn charge(&self, grant: &Grant, tokens: u64) -> Result<Option<Charge>, OverBudget> {
        self.shares.charge(&grant.name, tokens)
    }

    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// The grant for the request's bearer key, or for a keyless request from `peer` on `api`
    /// that a `[[keyless]]` entry covers; `Err` explains what is missing or wrong.
    pub fn check(&self, headers: &HeaderMap, peer: Option<IpAddr>, api: ClientApi) -> Result<Grant, &'static str> {
        if self.keys.is_empty() {
            return Ok(Grant::open());
        }
        // `Authorization: Bearer <key>`, or `x-api-key: <key>` as Anthropic's clients (Claude
        // Code) send it.
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or_default().trim());
        let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim);
        let Some(token) = bearer.or(api_key) else {
            if let Some(grant) = peer.and_then(|peer| self.keyless.iter().find_map(|k| k.grant_for(peer, api))) {
                return Ok(grant.clone());
            }
            return Err(match api {
                ClientApi::OpenAi => "missing API key: send `Authorization: Bearer <key>` (or `x-api-key: <key>`)",
                ClientApi::Anthropic => "missing API key: send `x-api-key: <key>` (or `Authorization: Bearer <key>`)",
                ClientApi::Ollama => {
                    "missing API key: send `Authorization: Bearer <key>`, or ask the operator to list your network in the controller's [[keyless]] (Ollama clients cannot send keys)"
                }
            });
        };
        self.keys
            .iter()
            .find(|(key, _)| constant_time_eq(key.as_bytes(), token.as_bytes()))
            .map(|(_, grant)| grant.clone())
            .ok_or("invalid API key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_taken_from_a_bearer_token_or_from_x_api_key_as_claude_code_sends_it() {
        let keys = ApiKeys::new(vec![(
            "coding-key-0123456789".to_owned(),
            Grant {
                name: "laptop".to_owned(),
                models: vec!["*".to_owned()],
                max_priority: 9,
                weight: 1,
                continue_streams: true,
            },
        )]);
        let with = |name: &str, value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
            keys.check(&headers, None, ClientApi::OpenAi)
        };
        assert_eq!(
            with("authorization", "Bearer coding-key-0123456789").map(|g| g.name),
            Ok("laptop".to_owned())
        );
        assert_eq!(
            with("x-api-key", "coding-key-0123456789").map(|g| g.name),
            Ok("laptop".to_owned())
        );
        assert_eq!(with("x-api-key", "wrong").map(|g| g.name), Err("invalid API key"));
        let missing = keys
            .check(&HeaderMap::new(), None, ClientApi::OpenAi)
            .expect_err("no key");
        assert!(missing.contains("x-api-key"), "{missing}");
    }
}
