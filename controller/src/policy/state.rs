//! What the registry, the engine and the rehearsals share: the loaded versions, the active
//! policy behind an `ArcSwap` (the request path takes no lock), the running shadow and canary,
//! the sandbox and the policy threads. Each of the three receives a handle to it and owns
//! its own operations; nothing else reaches it.

use parking_lot::{Mutex, MutexGuard};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arc_swap::ArcSwapOption;
use switchyard_protocol::Decision;
use wasmtime::component::Component;

use super::error::PolicyError;
use super::fault::PolicyFault;
use super::loaded::LoadedPolicy;
use super::pool::{PolicyPool, quiet_panics};
use super::rehearsal::canary::CanarySlot;
use super::rehearsal::shadow::Shadow;
use super::sandbox::Sandbox;
use super::{PolicyEngine, PolicyRegistry, Rehearsal};

/// Identity reported when the built-in fallback decided with no policy active.
pub const FALLBACK_ID: &str = "builtin-fallback";

/// Decisions that may wait for a policy thread before the fallback decides instead.
const DECISION_QUEUE: usize = 256;

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Faults among the active policy's last 20 live decisions that trigger a revert (0: never).
    pub revert_after_faults: u32,
    /// Where compiled policy code is kept across restarts (`None`: compiled at every start).
    pub compile_cache: Option<PathBuf>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            revert_after_faults: 5,
            compile_cache: super::compile_cache::default_dir(),
        }
    }
}

/// The outcome of routing one request.
#[derive(Debug, Clone)]
pub struct Routed {
    pub decision: Decision,
    /// `name@hash` of the policy that was active for this request.
    pub policy_id: Arc<str>,
    /// Set when the policy faulted and the fallback decided.
    pub fault: Option<PolicyFault>,
}

/// The policies of one controller, as its three rooms see them: the registry (load, upload,
/// activate, roll back), the engine (decide and explain on the request path) and the
/// rehearsals (shadow, canary, a candidate's explanation). Each is a cheap handle.
#[derive(Debug, Clone)]
pub struct Policies {
    pub registry: PolicyRegistry,
    pub engine: PolicyEngine,
    pub rehearsal: Rehearsal,
}

impl Policies {
    pub fn new(options: EngineOptions) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared::new(options)?);
        Ok(Self {
            registry: PolicyRegistry::new(shared.clone()),
            engine: PolicyEngine::new(shared.clone()),
            rehearsal: Rehearsal::new(shared),
        })
    }
}

/// The loaded versions and what they were made from.
#[derive(Debug, Default)]
pub(super) struct Versions {
    /// Every loaded version, oldest first.
    pub(super) loaded: Vec<Arc<LoadedPolicy>>,
    /// Earlier active policies, most recent last: the rollback chain.
    pub(super) previous: Vec<Arc<LoadedPolicy>>,
    /// Components uploaded through the admin API, by sha256 hex.
    pub(super) uploads: HashMap<String, Arc<[u8]>>,
    /// Compiled components by sha256 of their bytes: each is compiled once.
    pub(super) compiled: HashMap<[u8; 32], Component>,
}

impl Versions {
    /// The loaded policy `id_or_name`: an exact `name@hash`, or a name's newest version.
    pub(super) fn find(&self, id_or_name: &str) -> Result<Arc<LoadedPolicy>, PolicyError> {
        self.loaded
            .iter()
            .rev()
            .find(|p| &*p.id == id_or_name || p.name() == id_or_name)
            .cloned()
            .ok_or_else(|| PolicyError::Unknown(id_or_name.to_owned()))
    }
}

/// The state behind the three handles.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) sandbox: Sandbox,
    /// Where request-path decisions run: never on an async worker.
    pub(super) pool: PolicyPool,
    pub(super) options: EngineOptions,
    pub(super) active: ArcSwapOption<LoadedPolicy>,
    versions: Mutex<Versions>,
    pub(super) fallback_decisions: AtomicU64,
    pub(super) reverts: AtomicU64,
    pub(super) fallback_id: Arc<str>,
    /// A candidate deciding beside the active policy, off the request path.
    pub(super) shadow: ArcSwapOption<Shadow>,
    /// A candidate deciding a share of live requests, and what became of it.
    pub(super) canaries: CanarySlot,
}

impl Shared {
    fn new(options: EngineOptions) -> anyhow::Result<Self> {
        quiet_panics::install();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
        Ok(Self {
            sandbox: Sandbox::new(options.compile_cache.as_deref())?,
            pool: PolicyPool::new(threads, DECISION_QUEUE)?,
            options,
            active: ArcSwapOption::empty(),
            versions: Mutex::new(Versions::default()),
            fallback_decisions: AtomicU64::new(0),
            reverts: AtomicU64::new(0),
            fallback_id: Arc::from(FALLBACK_ID),
            shadow: ArcSwapOption::empty(),
            canaries: CanarySlot::default(),
        })
    }

    pub(super) fn versions(&self) -> MutexGuard<'_, Versions> {
        self.versions.lock()
    }

    /// Let `policy`'s warm instances go unless it still decides: as the active policy, the
    /// running canary or the running shadow.
    pub(super) fn retire_unless_used(&self, policy: &Arc<LoadedPolicy>) {
        let active = self.active.load().as_ref().is_some_and(|a| Arc::ptr_eq(a, policy));
        let shadow = self
            .shadow
            .load()
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(&s.policy, policy));
        let canary = self
            .canaries
            .running
            .load()
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.policy, policy));
        if !active && !shadow && !canary {
            policy.retire();
        }
    }
}
