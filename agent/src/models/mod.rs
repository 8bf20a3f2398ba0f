//! The models this agent runs itself (`[[models]]` with a `command`): each gets its own
//! runtime process, started when a request needs it and stopped when it has been idle past
//! its keep-alive or its memory is needed for another model (least recently used first,
//! never one with requests in flight). Requests for a model that is loading wait for that
//! one load; a model larger than the budget is refused with the figures. Load times and
//! memory are measured and kept beside the config for the next estimate.

mod estimates;
mod plan;
pub mod process;

use parking_lot::{Mutex, MutexGuard};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_protocol::{ModelLoadState, ModelState};
use tokio::process::Child;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, parse_keep_alive};
use estimates::Estimates;
pub use plan::{Plan, Resident, plan};

/// Why a model could not be made ready for a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error(
        "model '{model}' needs {need_mb} MB, more than this node's model memory budget of {budget_mb} MB (runtime.memory_budget_mb)"
    )]
    TooLarge {
        model: String,
        need_mb: u64,
        budget_mb: u64,
    },
    #[error("model '{model}' could not be loaded: {message}")]
    Failed { model: String, message: String },
    #[error(
        "model '{model}' could not be loaded within {waited:?}: the memory it needs is held by models with requests in flight"
    )]
    NoRoom { model: String, waited: Duration },
    #[error("model '{model}' is not one this agent starts")]
    Unknown { model: String },
    #[error("model '{model}' has {in_flight} request(s) in flight; it is unloaded only when idle")]
    Busy { model: String, in_flight: u32 },
}

/// A catalog model the agent starts.
#[derive(Debug, Clone)]
struct Managed {
    command: Vec<String>,
    declared_mb: Option<u64>,
    keep_alive: Option<Duration>,
    preload: bool,
}

#[derive(Debug)]
enum Phase {
    Cold,
    Loading,
    Ready {
        port: u16,
        pid: Option<u32>,
        child: Box<Child>,
    },
    Stopping,
}

#[derive(Debug)]
struct Entry {
    phase: Phase,
    in_flight: u32,
    last_used: Instant,
    loads: u32,
    evictions: u32,
    /// Incremented at each load start; a failed load records its number, so that the
    /// requests that waited for it fail with it instead of starting another.
    attempt: u64,
    failed: Option<(u64, String)>,
}

/// The models the agent starts, their processes and the memory budget they share.
#[derive(Debug)]
pub struct ModelManager {
    catalog: HashMap<String, Managed>,
    budget_mb: u64,
    load_timeout: Duration,
    client: reqwest::Client,
    entries: Mutex<HashMap<String, Entry>>,
    estimates: Mutex<Estimates>,
    estimates_file: Option<PathBuf>,
    changes: watch::Sender<u64>,
}

/// A request's hold on a ready model: while it lives the model is not evicted.
#[derive(Debug)]
pub struct Lease {
    manager: Arc<ModelManager>,
    local: String,
    /// Where the model's runtime listens.
    pub base_url: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.manager.release(&self.local);
    }
}

enum Action {
    /// The model is ready: use it under this lease.
    Use(Lease),
    Wait {
        attempt: Option<u64>,
    },
    Load {
        evict: Vec<(String, Box<Child>)>,
    },
}

impl ModelManager {
    /// The manager for `config`'s models with a `command`; `None` when there are none.
    /// `budget_mb` applies when the config gives none; `estimates_file` keeps measurements.
    pub fn from_config(config: &AgentConfig, budget_mb: u64, estimates_file: Option<PathBuf>) -> Option<Arc<Self>> {
        let catalog: HashMap<String, Managed> = config
            .models
            .iter()
            .filter_map(|m| {
                Some((
                    m.local.clone(),
                    Managed {
                        command: m.command.clone()?,
                        declared_mb: m.memory_mb,
                        keep_alive: m.keep_alive.as_deref().and_then(|k| parse_keep_alive(k).ok().flatten()),
                        preload: m.preload,
                    },
                ))
            })
            .collect();
        if catalog.is_empty() {
            return None;
        }
        let entries = catalog
            .keys()
            .map(|local| {
                (
                    local.clone(),
                    Entry {
                        phase: Phase::Cold,
                        in_flight: 0,
                        last_used: Instant::now(),
                        loads: 0,
                        evictions: 0,
                        attempt: 0,
                        failed: None,
                    },
                )
            })
            .collect();
        let estimates = estimates_file.as_deref().map(Estimates::load).unwrap_or_default();
        Some(Arc::new(Self {
            catalog,
            budget_mb: config.runtime.memory_budget_mb.unwrap_or(budget_mb),
            load_timeout: Duration::from_secs(config.runtime.load_timeout_s),
            client: crate::driver::runtime_client(Duration::from_secs(5)),
            entries: Mutex::new(entries),
            estimates: Mutex::new(estimates),
            estimates_file,
            changes: watch::channel(0).0,
        }))
    }

    pub fn budget_mb(&self) -> u64 {
        self.budget_mb
    }

    /// Whether the agent starts `local` itself.
    pub fn manages(&self, local: &str) -> bool {
        self.catalog.contains_key(local)
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock()
    }

    fn estimates(&self) -> MutexGuard<'_, Estimates> {
        self.estimates.lock()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// What `local` needs: declared, else measured before, else the whole budget (first load).
    fn need_mb(&self, local: &str) -> u64 {
        self.catalog
            .get(local)
            .and_then(|m| m.declared_mb)
            .or_else(|| self.estimates().memory_mb(local))
            .unwrap_or(self.budget_mb)
    }

    /// A ready model for one request: loads it (evicting idle models to fit) or waits for
    /// the load already under way.
    pub async fn acquire(self: &Arc<Self>, local: &str) -> Result<Lease, LoadError> {
        if !self.manages(local) {
            return Err(LoadError::Unknown {
                model: local.to_owned(),
            });
        }
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.load_timeout + STOP_ALLOWANCE;
        loop {
            let mut changes = self.changes.subscribe();
            match self.next_action(local)? {
                Action::Use(lease) => return Ok(lease),
                Action::Load { evict } => {
                    let manager = self.clone();
                    let model = local.to_owned();
                    // Its own task: a request that gives up while waiting does not abandon
                    // the load the others wait for.
                    tokio::spawn(async move { manager.load(model, evict).await });
                }
                Action::Wait { attempt } => {
                    if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                        return Err(LoadError::NoRoom {
                            model: local.to_owned(),
                            waited: started.elapsed(),
                        });
                    }
                    if let Some(attempt) = attempt {
                        self.check_attempt(local, attempt)?;
                    }
                }
            }
        }
    }

    /// What a request for `local` does next, decided under the entries lock: use it when
    /// ready, wait, or start loading it (taking the victims out of service).
    fn next_action(self: &Arc<Self>, local: &str) -> Result<Action, LoadError> {
        let mut entries = self.entries();
        let residents = self.residents(&entries, local);
        let Some(entry) = entries.get_mut(local) else {
            return Err(LoadError::Unknown {
                model: local.to_owned(),
            });
        };
        match &entry.phase {
            Phase::Ready { port, .. } => {
                entry.in_flight += 1;
                entry.last_used = Instant::now();
                Ok(Action::Use(Lease {
                    manager: self.clone(),
                    local: local.to_owned(),
                    base_url: format!("http://127.0.0.1:{port}"),
                }))
            }
            Phase::Loading => Ok(Action::Wait {
                attempt: Some(entry.attempt),
            }),
            Phase::Stopping => Ok(Action::Wait { attempt: None }),
            Phase::Cold => match plan(self.need_mb(local), self.budget_mb, &residents) {
                Plan::TooLarge { need_mb, budget_mb } => Err(LoadError::TooLarge {
                    model: local.to_owned(),
                    need_mb,
                    budget_mb,
                }),
                Plan::Wait => Ok(Action::Wait { attempt: None }),
                plan => {
                    entry.phase = Phase::Loading;
                    entry.attempt += 1;
                    Ok(Action::Load {
                        evict: take_victims(&mut entries, plan),
                    })
                }
            },
        }
    }

    /// Fails with the load numbered `attempt` when it failed for `local`.
    fn check_attempt(&self, local: &str, attempt: u64) -> Result<(), LoadError> {
        let entries = self.entries();
        if let Some(Entry {
            phase: Phase::Cold,
            failed: Some((failed, message)),
            ..
        }) = entries.get(local)
            && *failed == attempt
        {
            return Err(LoadError::Failed {
                model: local.to_owned(),
                message: message.clone(),
            });
        }
        Ok(())
    }

    /// Everything resident or on its way, but `loading`, as the planner sees it.
    fn residents(&self, entries: &HashMap<String, Entry>, loading: &str) -> Vec<Resident> {
        entries
            .iter()
            .filter(|(name, e)| name.as_str() != loading && !matches!(e.phase, Phase::Cold))
            .map(|(name, e)| Resident {
                local: name.clone(),
                memory_mb: self.need_mb(name),
                in_flight: e.in_flight,
                evictable: matches!(e.phase, Phase::Ready { .. }),
                last_used: e.last_used,
            })
            .collect()
    }

    async fn load(self: Arc<Self>, local: String, evict: Vec<(String, Box<Child>)>) {
        let evicted: Vec<String> = evict.iter().map(|(name, _)| name.clone()).collect();
        let evicting = Instant::now();
        for (name, mut child) in evict {
            tracing::info!(model = %name, "evicting (idle) to make room for {local}");
            process::stop(&mut child).await;
            if let Some(entry) = self.entries().get_mut(&name) {
                entry.phase = Phase::Cold;
            }
            self.changed();
        }
        let evict_ms = evicting.elapsed().as_millis() as u64;
        let Some(managed) = self.catalog.get(&local).cloned() else {
            return;
        };
        tracing::info!(model = %local, ?evicted, "loading: starting its runtime");
        let started = Instant::now();
        match process::start(&managed.command, self.load_timeout, &self.client).await {
            Ok(running) => {
                let load_ms = started.elapsed().as_millis() as u32;
                let measured = match running.pid {
                    Some(pid) => tokio::task::spawn_blocking(move || process::memory_of_tree(pid))
                        .await
                        .ok(),
                    None => None,
                };
                tracing::info!(
                    model = %local, pid = ?running.pid, port = running.port, evict_ms, load_ms,
                    runtime_ready_ms = running.ready_after.as_millis() as u64, memory_mb = ?measured,
                    "loaded"
                );
                {
                    let mut entries = self.entries();
                    if let Some(entry) = entries.get_mut(&local) {
                        entry.phase = Phase::Ready {
                            port: running.port,
                            pid: running.pid,
                            child: Box::new(running.child),
                        };
                        entry.loads += 1;
                        entry.last_used = Instant::now();
                        entry.failed = None;
                    }
                }
                let snapshot = {
                    let mut estimates = self.estimates();
                    estimates.record_load(&local, load_ms, measured.filter(|_| managed.declared_mb.is_none()));
                    estimates.clone()
                };
                if let Some(path) = &self.estimates_file {
                    snapshot.save(path);
                }
            }
            Err(e) => {
                tracing::error!(model = %local, "load failed: {e}");
                if let Some(entry) = self.entries().get_mut(&local) {
                    entry.phase = Phase::Cold;
                    entry.failed = Some((entry.attempt, e.to_string()));
                }
            }
        }
        self.changed();
    }

    fn release(&self, local: &str) {
        if let Some(entry) = self.entries().get_mut(local) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            entry.last_used = Instant::now();
        }
        self.changed();
    }

    /// Load `local` without a request (preload, or the operator's `models load`).
    pub async fn load_now(self: &Arc<Self>, local: &str) -> Result<(), LoadError> {
        self.acquire(local).await.map(drop)
    }

    /// Stop `local` if it is resident and idle (the operator's `models unload`).
    pub async fn unload(&self, local: &str) -> Result<bool, LoadError> {
        let child = {
            let mut entries = self.entries();
            let Some(entry) = entries.get_mut(local) else {
                return Err(LoadError::Unknown {
                    model: local.to_owned(),
                });
            };
            if entry.in_flight > 0 {
                return Err(LoadError::Busy {
                    model: local.to_owned(),
                    in_flight: entry.in_flight,
                });
            }
            match std::mem::replace(&mut entry.phase, Phase::Stopping) {
                Phase::Ready { child, .. } => child,
                other => {
                    entry.phase = other;
                    return Ok(false);
                }
            }
        };
        self.stop_child(local, child, "unloaded by the operator").await;
        Ok(true)
    }

    async fn stop_child(&self, local: &str, mut child: Box<Child>, why: &str) {
        tracing::info!(model = %local, "{why}: stopping its runtime");
        process::stop(&mut child).await;
        if let Some(entry) = self.entries().get_mut(local) {
            entry.phase = Phase::Cold;
        }
        self.changed();
    }

    /// Stop models idle past their keep-alive, every second, until `shutdown`; then stop all.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        for (local, managed) in &self.catalog {
            if managed.preload {
                let manager = self.clone();
                let local = local.clone();
                tokio::spawn(async move {
                    if let Err(e) = manager.load_now(&local).await {
                        tracing::error!(model = %local, "preload failed: {e}");
                    }
                });
            }
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let expired: Vec<(String, Box<Child>)> = {
                let mut entries = self.entries();
                let mut out = Vec::new();
                for (local, entry) in entries.iter_mut() {
                    let Some(keep_alive) = self.catalog.get(local).and_then(|m| m.keep_alive) else {
                        continue;
                    };
                    if entry.in_flight == 0
                        && matches!(entry.phase, Phase::Ready { .. })
                        && entry.last_used.elapsed() >= keep_alive
                        && let Phase::Ready { child, .. } = std::mem::replace(&mut entry.phase, Phase::Stopping)
                    {
                        out.push((local.clone(), child));
                    }
                }
                out
            };
            for (local, child) in expired {
                self.stop_child(&local, child, "idle past its keep-alive").await;
            }
        }
        let all: Vec<(String, Box<Child>)> = {
            let mut entries = self.entries();
            entries
                .iter_mut()
                .filter_map(
                    |(local, entry)| match std::mem::replace(&mut entry.phase, Phase::Stopping) {
                        Phase::Ready { child, .. } => Some((local.clone(), child)),
                        other => {
                            entry.phase = other;
                            None
                        }
                    },
                )
                .collect()
        };
        for (local, child) in all {
            self.stop_child(&local, child, "the agent is stopping").await;
        }
    }

    /// Each model's state, for telemetry.
    pub fn states(&self) -> Vec<ModelState> {
        let entries = self.entries();
        let estimates = self.estimates().clone();
        let mut out: Vec<ModelState> = entries
            .iter()
            .map(|(local, e)| {
                let declared = self.catalog.get(local).and_then(|m| m.declared_mb);
                let (state, pid) = match &e.phase {
                    Phase::Cold => (ModelLoadState::Cold, None),
                    Phase::Loading => (ModelLoadState::Loading, None),
                    Phase::Ready { pid, .. } => (ModelLoadState::Ready, *pid),
                    Phase::Stopping => (ModelLoadState::Stopping, None),
                };
                ModelState {
                    local: local.clone(),
                    state,
                    pid,
                    memory_mb: declared.or_else(|| estimates.memory_mb(local)),
                    memory_measured: declared.is_none() && estimates.memory_mb(local).is_some(),
                    in_flight: e.in_flight,
                    idle_s: (state == ModelLoadState::Ready && e.in_flight == 0)
                        .then(|| e.last_used.elapsed().as_secs()),
                    load_ms: estimates.load_ms(local),
                    loads: e.loads,
                    evictions: e.evictions,
                    last_error: e.failed.as_ref().map(|(_, m)| m.clone()),
                }
            })
            .collect();
        out.sort_by(|a, b| a.local.cmp(&b.local));
        out
    }
}

/// The ready models `plan` evicts, marked stopping, with their processes to stop.
fn take_victims(entries: &mut HashMap<String, Entry>, plan: Plan) -> Vec<(String, Box<Child>)> {
    let evict = match plan {
        Plan::Evict(names) => names,
        _ => Vec::new(),
    };
    let mut children = Vec::new();
    for name in evict {
        if let Some(victim) = entries.get_mut(&name)
            && let Phase::Ready { child, .. } = std::mem::replace(&mut victim.phase, Phase::Stopping)
        {
            victim.evictions += 1;
            children.push((name, child));
        }
    }
    children
}

/// Beyond the load timeout, how long a request may wait for room (evicted runtimes get
/// their stop grace).
const STOP_ALLOWANCE: Duration = Duration::from_secs(15);
