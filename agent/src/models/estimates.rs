//! What earlier loads measured, per model: how long a load took (a moving average) and the
//! memory its runtime held, kept in a JSON file beside the config (or in systemd's
//! `$STATE_DIRECTORY`) so that estimates survive restarts. A file that cannot be read or
//! written costs the estimates, never the agent.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Estimates {
    #[serde(default)]
    models: BTreeMap<String, Measured>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Measured {
    #[serde(default)]
    load_ms: Option<u32>,
    #[serde(default)]
    memory_mb: Option<u64>,
    #[serde(default)]
    loads: u32,
}

impl Estimates {
    pub fn load(path: &Path) -> Self {
        std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, path: &Path) {
        let Ok(text) = serde_json::to_vec_pretty(self) else {
            return;
        };
        let temporary = path.with_extension("tmp");
        if let Err(e) = std::fs::write(&temporary, text).and_then(|()| std::fs::rename(&temporary, path)) {
            tracing::debug!(path = %path.display(), "load estimates not saved: {e}");
        }
    }

    /// One more load of `local` that took `load_ms`, with the memory measured after it.
    pub fn record_load(&mut self, local: &str, load_ms: u32, memory_mb: Option<u64>) {
        let entry = self.models.entry(local.to_owned()).or_default();
        entry.load_ms = Some(match entry.load_ms {
            // Recent loads count more: the cache may be warm now, the disk may have changed.
            Some(previous) => ((u64::from(previous) + u64::from(load_ms)) / 2) as u32,
            None => load_ms,
        });
        if let Some(memory) = memory_mb {
            entry.memory_mb = Some(entry.memory_mb.map_or(memory, |m| m.max(memory)));
        }
        entry.loads += 1;
    }

    pub fn load_ms(&self, local: &str) -> Option<u32> {
        self.models.get(local)?.load_ms
    }

    pub fn memory_mb(&self, local: &str) -> Option<u64> {
        self.models.get(local)?.memory_mb
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_average_loads_keep_the_largest_memory_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.models.json");
        let mut estimates = Estimates::load(&path);
        assert_eq!(estimates.load_ms("a"), None);
        estimates.record_load("a", 1000, Some(300));
        estimates.record_load("a", 2000, Some(250));
        estimates.save(&path);
        let again = Estimates::load(&path);
        assert_eq!(again.load_ms("a"), Some(1500));
        assert_eq!(again.memory_mb("a"), Some(300));
        std::fs::write(&path, "not json").expect("write");
        assert_eq!(
            Estimates::load(&path).load_ms("a"),
            None,
            "a bad file costs only the estimates"
        );
    }
}
