//! The watched policy folder: every `*.toml` in it is loaded and validated; when a file
//! changes, its new version is loaded, and if it is the active policy's file the new
//! version is swapped in. A file that fails validation is logged and the active policy
//! stays.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::node_table::NodeTable;
use crate::policy::PolicyRegistry;

#[derive(Debug, Default)]
pub struct ScanReport {
    /// Files loaded (new or changed) and the policy id each produced.
    pub loaded: Vec<(PathBuf, String)>,
    /// Files refused, with the error.
    pub refused: Vec<(PathBuf, String)>,
    /// Ids activated because they replaced the active policy's file.
    pub activated: Vec<String>,
}

#[derive(Debug)]
pub struct PolicyDirWatcher {
    dir: PathBuf,
    registry: PolicyRegistry,
    nodes: Arc<NodeTable>,
    interval: Duration,
    /// Last seen (modified time, length) of each file.
    seen: HashMap<PathBuf, (SystemTime, u64)>,
    /// The policy name each file declared when it last loaded.
    names: HashMap<PathBuf, String>,
}

impl PolicyDirWatcher {
    pub fn new(dir: PathBuf, registry: PolicyRegistry, nodes: Arc<NodeTable>, interval: Duration) -> Self {
        Self {
            dir,
            registry,
            nodes,
            interval,
            seen: HashMap::new(),
            names: HashMap::new(),
        }
    }

    fn policy_files(dir: &Path) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        files
    }

    /// Load every new or changed file once. Blocking (compiles components).
    pub fn scan(&mut self) -> ScanReport {
        let mut report = ScanReport::default();
        if !self.dir.is_dir() {
            tracing::error!(folder = %self.dir.display(), "policy folder does not exist");
            report
                .refused
                .push((self.dir.clone(), "policy folder does not exist".to_owned()));
            return report;
        }
        for path in Self::policy_files(&self.dir) {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let stamp = (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len());
            if self.seen.get(&path) == Some(&stamp) {
                continue;
            }
            self.seen.insert(path.clone(), stamp);
            let first_time = !self.names.contains_key(&path);
            match self.registry.load_file(&path, &self.nodes.snapshot()) {
                Ok(policy) => {
                    report.loaded.push((path.clone(), policy.id.to_string()));
                    self.names.insert(path.clone(), policy.name().to_owned());
                    let active = self.registry.active();
                    let replaces_active = !first_time
                        && active
                            .as_ref()
                            .is_some_and(|a| a.name() == policy.name() && a.id != policy.id);
                    if replaces_active {
                        match self.registry.activate(&policy.id) {
                            Ok(_) => {
                                tracing::info!(file = %path.display(), policy = %policy.id, "policy file changed; new version active");
                                report.activated.push(policy.id.to_string());
                            }
                            Err(e) => report.refused.push((path.clone(), e.to_string())),
                        }
                    }
                }
                Err(e) => {
                    if first_time {
                        tracing::error!(file = %path.display(), "policy refused: {e}");
                    } else {
                        tracing::error!(file = %path.display(), "changed policy refused, the active policy stays: {e}");
                    }
                    report.refused.push((path.clone(), e.to_string()));
                }
            }
        }
        report
    }

    /// Scan every `interval` until cancelled.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let watcher = self;
            let Ok(returned) = tokio::task::spawn_blocking(move || {
                let mut watcher = watcher;
                watcher.scan();
                watcher
            })
            .await
            else {
                tracing::error!("policy folder scan panicked; watching stops");
                return;
            };
            self = returned;
        }
    }
}
