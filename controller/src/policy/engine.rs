//! The policy engine: loads and validates policies, holds the active one behind an
//! `ArcSwap` (the hot path takes no lock), swaps and rolls back atomically, and turns every
//! policy fault into a fallback decision, reverting to the last known good policy after
//! repeated faults.

use parking_lot::{Mutex, MutexGuard};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use serde::Serialize;
use sha2::{Digest, Sha256};
use switchyard_protocol::{ClusterSnapshot, Decision, RequestInfo};

use super::error::PolicyError;
use super::fallback;
use super::fault::PolicyFault;
use super::in_place;
use super::loaded::{LoadedPolicy, PolicyStats, StatsView};
use super::pool::{PolicyPool, panic_message, quiet_panics};
use super::prepared::PreparedSnapshot;
use super::sandbox::Sandbox;
use super::smoke;
use super::spec::{ComponentRef, PolicySpec};
use super::stage::{Stage, compile_component};
use wasmtime::component::Component;

/// Identity reported when the built-in fallback decided with no policy active.
pub const FALLBACK_ID: &str = "builtin-fallback";

/// What a panic in a policy call means to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnPanic {
    /// A fault of the policy.
    Fault,
    /// Nothing yet: the caller decides again elsewhere.
    GiveBack,
}

/// Whether a decision counts towards a policy's statistics and automatic revert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accounting {
    /// A request being routed.
    Live,
    /// An explanation: nothing counts.
    Rehearsal,
}

/// The longest a policy call may take in place on an async worker before its version is
/// moved to the policy threads.
const IN_PLACE_BUDGET: std::time::Duration = std::time::Duration::from_millis(2);
/// The longest a call tried in place may hold the async worker before it is cut short and
/// given to a policy thread (every stage's deadline is cut to what is left of it).
const IN_PLACE_CUT: std::time::Duration = std::time::Duration::from_millis(5);

/// Decisions that may wait for a policy thread before the fallback decides instead.
const DECISION_QUEUE: usize = 256;

/// How much longer than the policy's own deadlines a request waits for its decision.
const DECISION_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// Components that may be uploaded at once (each up to `MAX_COMPONENT_BYTES`, together up
/// to `MAX_UPLOAD_BYTES`).
pub const MAX_UPLOADS: usize = 32;

/// Bytes all uploaded components may take together (they are kept in memory): a handful of
/// interpreted ones, dozens of compiled ones.
pub const MAX_UPLOAD_BYTES: usize = 256 * 1024 * 1024;

/// One uploaded component, for `GET /admin/components`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct UploadView {
    pub component: String,
    pub bytes: usize,
    pub used_by: Vec<String>,
}

/// How many loaded versions and activations are remembered.
const HISTORY: usize = 32;

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

#[derive(Debug, Default)]
pub(super) struct Registry {
    /// Every loaded version, oldest first.
    loaded: Vec<Arc<LoadedPolicy>>,
    /// Earlier active policies, most recent last: the rollback chain.
    previous: Vec<Arc<LoadedPolicy>>,
    /// Components uploaded through the admin API, by sha256 hex.
    uploads: HashMap<String, Arc<[u8]>>,
    /// Compiled components by sha256 of their bytes: each is compiled once.
    compiled: HashMap<[u8; 32], Component>,
}

impl Registry {
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

/// A summary of one loaded policy for `list`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PolicyView {
    pub id: String,
    pub name: String,
    pub hash: String,
    pub description: String,
    pub origin: String,
    pub components: Vec<String>,
    pub active: bool,
    pub stats: StatsView,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct EngineView {
    pub active: Option<String>,
    /// Rollback chain, most recent first.
    pub previous: Vec<String>,
    pub policies: Vec<PolicyView>,
    pub fallback_decisions: u64,
    pub reverts: u64,
}

#[derive(Debug)]
pub struct PolicyEngine {
    sandbox: Sandbox,
    /// Where request-path decisions run: never on an async worker.
    pub(super) pool: PolicyPool,
    options: EngineOptions,
    active: ArcSwapOption<LoadedPolicy>,
    registry: Mutex<Registry>,
    fallback_decisions: AtomicU64,
    reverts: AtomicU64,
    fallback_id: Arc<str>,
    /// A candidate deciding beside the active policy, off the request path.
    shadow: arc_swap::ArcSwapOption<super::shadow::Shadow>,
    /// A candidate deciding a share of live requests, and what became of it.
    pub(super) canaries: super::canary::CanarySlot,
}

/// One stage's component: its bytes and their SHA-256.
type StageComponent = (Arc<[u8]>, [u8; 32]);

impl PolicyEngine {
    pub fn new(options: EngineOptions) -> anyhow::Result<Self> {
        quiet_panics::install();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
        Ok(Self {
            sandbox: Sandbox::new(options.compile_cache.as_deref())?,
            pool: PolicyPool::new(threads, DECISION_QUEUE)?,
            options,
            active: ArcSwapOption::empty(),
            registry: Mutex::new(Registry::default()),
            fallback_decisions: AtomicU64::new(0),
            reverts: AtomicU64::new(0),
            fallback_id: Arc::from(FALLBACK_ID),
            shadow: arc_swap::ArcSwapOption::empty(),
            canaries: super::canary::CanarySlot::default(),
        })
    }

    pub(super) fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock()
    }

    /// Store an uploaded component; returns its `sha256:<hex>` reference.
    pub fn upload_component(&self, bytes: Vec<u8>) -> Result<String, PolicyError> {
        let hex = hex::encode(Sha256::digest(&bytes));
        let mut registry = self.registry();
        if !registry.uploads.contains_key(&hex) {
            if registry.uploads.len() >= MAX_UPLOADS {
                return Err(PolicyError::TooManyUploads { limit: MAX_UPLOADS });
            }
            let would = registry.uploads.values().map(|b| b.len()).sum::<usize>() + bytes.len();
            if would > MAX_UPLOAD_BYTES {
                return Err(PolicyError::UploadsTooLarge {
                    would,
                    limit: MAX_UPLOAD_BYTES,
                });
            }
        }
        registry.uploads.insert(hex.clone(), Arc::from(bytes));
        Ok(format!("sha256:{hex}"))
    }

    /// The uploaded components, with their size and the loaded policies that use them.
    pub fn uploads(&self) -> Vec<UploadView> {
        let registry = self.registry();
        let mut views: Vec<UploadView> = registry
            .uploads
            .iter()
            .map(|(hex, bytes)| {
                let component = format!("sha256:{hex}");
                UploadView {
                    used_by: users(&registry.loaded, &component),
                    component,
                    bytes: bytes.len(),
                }
            })
            .collect();
        views.sort_by(|a, b| a.component.cmp(&b.component));
        views
    }

    /// Forget an uploaded component (and its compiled code) no loaded policy uses.
    pub fn delete_upload(&self, component: &str) -> Result<(), PolicyError> {
        let hex = component
            .strip_prefix("sha256:")
            .unwrap_or(component)
            .to_ascii_lowercase();
        let reference = format!("sha256:{hex}");
        let mut registry = self.registry();
        if !registry.uploads.contains_key(&hex) {
            return Err(PolicyError::UnknownComponent(reference));
        }
        let policies = users(&registry.loaded, &reference);
        if !policies.is_empty() {
            return Err(PolicyError::ComponentInUse {
                component: reference,
                policies,
            });
        }
        registry.uploads.remove(&hex);
        if let Ok(digest) = <[u8; 32]>::try_from(hex::decode(&hex).unwrap_or_default()) {
            registry.compiled.remove(&digest);
        }
        Ok(())
    }

    /// Load and validate the policy file at `path` (components resolve against its folder).
    pub fn load_file(&self, path: &Path, live: &ClusterSnapshot) -> Result<Arc<LoadedPolicy>, PolicyError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            origin: origin.clone(),
            source,
        })?;
        // A bare file name's folder is the current one (`Path::parent` says "").
        let base = match path.parent() {
            Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
            Some(parent) => parent,
            None => Path::new("."),
        };
        self.load_text(&text, &origin, Some(base), live)
    }

    /// Load and validate a policy document. It is compiled, instantiated, configured and
    /// smoke-tested; only then is it added to the loaded set (not activated).
    pub fn load_text(
        &self,
        text: &str,
        origin: &str,
        base: Option<&Path>,
        live: &ClusterSnapshot,
    ) -> Result<Arc<LoadedPolicy>, PolicyError> {
        let spec = PolicySpec::parse(text, origin)?;
        let (components, hash) = self.stage_components(text, &spec, origin, base)?;
        let id: Arc<str> = Arc::from(format!("{}@{hash}", spec.name));
        {
            // The same document again (a file edited back): it becomes the newest version
            // of its name, the one `activate NAME` picks.
            let mut registry = self.registry();
            if let Some(position) = registry.loaded.iter().position(|p| p.id == id) {
                let existing = registry.loaded.remove(position);
                registry.loaded.push(existing.clone());
                return Ok(existing);
            }
        }

        let mut stages = Vec::with_capacity(components.len());
        for (index, (stage, (bytes, digest))) in spec.stages.iter().zip(&components).enumerate() {
            let params_json = serde_json::to_string(&stage.params).map_err(|e| PolicyError::Invalid {
                origin: origin.to_owned(),
                field: format!("stage[{index}].params"),
                message: e.to_string(),
            })?;
            let compile_error = |message| PolicyError::Compile {
                origin: origin.to_owned(),
                stage: index,
                component: stage.component.clone(),
                message,
            };
            let component = self.compiled(bytes, digest).map_err(compile_error)?;
            let compiled = Stage::compile(&self.sandbox, &component, params_json, spec.limits, id.clone())
                .map_err(compile_error)?;
            compiled.configure_check().map_err(|message| PolicyError::Configure {
                origin: match super::params_line::params_line(text, index, &message) {
                    Some(line) => format!("{origin}:{line}"),
                    None => origin.to_owned(),
                },
                stage: index,
                message,
            })?;
            stages.push(compiled);
        }
        let policy = Arc::new(LoadedPolicy {
            spec,
            id,
            hash,
            origin: origin.to_owned(),
            stages,
            stats: PolicyStats::default(),
        });
        smoke::check(&policy, live).map_err(|message| PolicyError::Smoke {
            origin: origin.to_owned(),
            message,
        })?;
        let mut registry = self.registry();
        // Not active yet: it keeps no instances warm until it is.
        policy.retire();
        registry.loaded.push(policy.clone());
        let active = self.active.load_full();
        trim_history(&mut registry.loaded, active.as_ref());
        tracing::info!(policy = %policy.id, %origin, "policy loaded and validated");
        Ok(policy)
    }

    /// Each stage's component bytes with their digest, and the policy's hash (over the
    /// document and every component).
    fn stage_components(
        &self,
        text: &str,
        spec: &PolicySpec,
        origin: &str,
        base: Option<&Path>,
    ) -> Result<(Vec<StageComponent>, String), PolicyError> {
        let mut hasher = Sha256::new();
        hasher.update(text.as_bytes());
        let mut components = Vec::with_capacity(spec.stages.len());
        for (index, stage) in spec.stages.iter().enumerate() {
            let bytes = self.component_bytes(&stage.component, origin, index, base)?;
            let digest: [u8; 32] = Sha256::digest(&bytes).into();
            hasher.update(digest);
            components.push((bytes, digest));
        }
        Ok((components, hex::encode(&hasher.finalize()[..6])))
    }

    /// The compiled component for `bytes`, compiled once per digest.
    fn compiled(&self, bytes: &[u8], digest: &[u8; 32]) -> Result<wasmtime::component::Component, String> {
        if let Some(component) = self.registry().compiled.get(digest).cloned() {
            return Ok(component);
        }
        let component = compile_component(&self.sandbox, bytes)?;
        self.registry().compiled.insert(*digest, component.clone());
        Ok(component)
    }

    fn component_bytes(
        &self,
        raw: &str,
        origin: &str,
        stage: usize,
        base: Option<&Path>,
    ) -> Result<Arc<[u8]>, PolicyError> {
        let invalid = |message: String| PolicyError::Invalid {
            origin: origin.to_owned(),
            field: format!("stage[{stage}].component"),
            message,
        };
        match ComponentRef::parse(raw, base).map_err(invalid)? {
            ComponentRef::Builtin(name) => {
                switchyard_policy_artifacts::builtin(&name)
                    .map(Arc::from)
                    .ok_or_else(|| {
                        let known: Vec<_> = switchyard_policy_artifacts::builtin_names().collect();
                        invalid(format!(
                            "no builtin component {name:?}; builtins are {}",
                            known.join(", ")
                        ))
                    })
            }
            ComponentRef::Uploaded(hex) => self.registry().uploads.get(&hex).cloned().ok_or_else(|| {
                invalid(format!(
                    "no component sha256:{hex} was uploaded to this controller; POST it to /admin/components first"
                ))
            }),
            ComponentRef::File(path) => {
                read_component_file(&path, base)
                    .map(Arc::from)
                    .map_err(|source| PolicyError::ComponentRead {
                        origin: origin.to_owned(),
                        stage,
                        component: raw.to_owned(),
                        source,
                    })
            }
        }
    }

    /// Make the loaded policy `id_or_name` active (an exact `name@hash`, or a name for its
    /// newest version). Requests already deciding finish on the policy they started with.
    /// A canary or shadow running this very policy ends: it would only compare the active
    /// policy with itself.
    pub fn activate(&self, id_or_name: &str) -> Result<Arc<LoadedPolicy>, PolicyError> {
        let mut registry = self.registry();
        let policy = registry.find(id_or_name)?;
        policy.revive();
        let old = self.active.swap(Some(policy.clone()));
        if let Some(old) = old
            && !Arc::ptr_eq(&old, &policy)
        {
            self.retire_unless_used(&old);
            registry.previous.push(old);
            let excess = registry.previous.len().saturating_sub(HISTORY);
            registry.previous.drain(..excess);
        }
        drop(registry);
        policy.stats.clear_faults();
        tracing::info!(policy = %policy.id, "policy activated");
        self.end_canary_of(&policy, "activated directly: it decides every request now");
        if self
            .shadow
            .load()
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(&s.policy, &policy))
        {
            self.shadow.store(None);
            tracing::info!(policy = %policy.id, "shadow stopped: it is the active policy now");
        }
        Ok(policy)
    }

    /// Re-activate the policy that was active before the current one.
    pub fn rollback(&self) -> Result<Arc<LoadedPolicy>, PolicyError> {
        let mut registry = self.registry();
        let previous = registry.previous.pop().ok_or(PolicyError::NoPrevious)?;
        previous.stats.clear_faults();
        previous.revive();
        if let Some(current) = self.active.swap(Some(previous.clone())) {
            self.retire_unless_used(&current);
        }
        tracing::info!(policy = %previous.id, "rolled back");
        Ok(previous)
    }

    pub fn active(&self) -> Option<Arc<LoadedPolicy>> {
        self.active.load_full()
    }

    /// Decide on a snapshot not prepared in advance (tools and tests; the request path uses
    /// [`Self::decide_prepared`] with the node table's prepared snapshot).
    pub fn decide(&self, req: &RequestInfo, snapshot: &ClusterSnapshot) -> Routed {
        self.decide_prepared(req, &PreparedSnapshot::from(snapshot.clone()))
    }

    /// Decide where `req` goes. Never fails: a policy fault yields the fallback's decision.
    pub fn decide_prepared(&self, req: &RequestInfo, prepared: &PreparedSnapshot) -> Routed {
        match self.decide_inner(req, prepared, OnPanic::Fault, Accounting::Live) {
            Some(routed) => routed,
            None => self.fallback_without_policy(req, prepared.snapshot(), None),
        }
    }

    /// What the active policy would decide, for `route explain`: nothing is counted and a
    /// fault never reverts the policy (a bad snapshot in an explain query must not take the
    /// live policy down).
    pub fn explain(&self, req: &RequestInfo, prepared: &PreparedSnapshot) -> Routed {
        match self.decide_inner(req, prepared, OnPanic::Fault, Accounting::Rehearsal) {
            Some(routed) => routed,
            None => self.fallback_without_policy(req, prepared.snapshot(), None),
        }
    }

    /// Let the loaded policy `id_or_name` decide every live request beside the active one,
    /// off the request path (replacing any shadow already running).
    pub fn start_shadow(&self, id_or_name: &str) -> Result<super::shadow::ShadowReport, PolicyError> {
        let policy = self.registry().find(id_or_name)?;
        let shadow = super::shadow::Shadow::start(policy).map_err(|e| PolicyError::Invalid {
            origin: id_or_name.to_owned(),
            field: "shadow".to_owned(),
            message: format!("cannot start the shadow's thread: {e}"),
        })?;
        let report = shadow.report();
        tracing::info!(policy = %shadow.policy.id, "shadowing: it decides every request beside the active policy");
        if let Some(previous) = self.shadow.swap(Some(shadow)) {
            self.retire_unless_used(&previous.policy);
        }
        Ok(report)
    }

    /// Stop the shadow; its last report.
    pub fn stop_shadow(&self) -> Option<super::shadow::ShadowReport> {
        let shadow = self.shadow.swap(None)?;
        self.retire_unless_used(&shadow.policy);
        Some(shadow.report())
    }

    /// The running shadow's report.
    pub fn shadow_report(&self) -> Option<super::shadow::ShadowReport> {
        self.shadow.load().as_ref().map(|s| s.report())
    }

    /// Offer a live request and the active decision to the shadow, if one runs (never waits).
    pub fn offer_shadow(&self, req: &RequestInfo, prepared: &Arc<PreparedSnapshot>, decision: &Decision) {
        if let Some(shadow) = self.shadow.load().as_ref() {
            shadow.offer(req, prepared.clone(), decision);
        }
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
        if !active && !shadow && !self.is_canary(policy) {
            policy.retire();
        }
    }

    /// What the loaded policy `id_or_name` (its newest version for a name) would decide, active
    /// or not: rehearsing a candidate before it serves. Nothing is counted; a fault is
    /// reported with the fallback's decision, as for the active policy.
    pub fn explain_with(
        &self,
        id_or_name: &str,
        req: &RequestInfo,
        prepared: &PreparedSnapshot,
    ) -> Result<Routed, PolicyError> {
        let policy = self.registry().find(id_or_name)?;
        let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| policy.decide(req, prepared)))
            .unwrap_or_else(|panic| {
                Err(PolicyFault::Trap(format!(
                    "the policy call panicked in the host: {}",
                    panic_message(&*panic)
                )))
            });
        Ok(match decided {
            Ok(decision) => Routed {
                decision,
                policy_id: policy.id.clone(),
                fault: None,
            },
            Err(fault) => Routed {
                decision: fallback::least_loaded(req, prepared.snapshot(), fault.kind().as_str()),
                policy_id: policy.id.clone(),
                fault: Some(fault),
            },
        })
    }

    /// The active policy's decision. A panic in the call is a fault, or (`GiveBack`) `None`
    /// with nothing counted, for the caller to decide another way.
    fn decide_inner(
        &self,
        req: &RequestInfo,
        prepared: &PreparedSnapshot,
        on_panic: OnPanic,
        accounting: Accounting,
    ) -> Option<Routed> {
        let snapshot = prepared.snapshot();
        let guard = self.active.load();
        let Some(policy) = guard.as_ref() else {
            return Some(self.fallback_without_policy(req, snapshot, None));
        };
        let decided = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| policy.decide(req, prepared))) {
            // Cut short in place: not the policy's fault; the caller asks a policy thread.
            Ok(Err(PolicyFault::Deadline { .. })) if on_panic == OnPanic::GiveBack && in_place::cut_short() => {
                return None;
            }
            Ok(decided) => decided,
            Err(_) if on_panic == OnPanic::GiveBack => return None,
            Err(panic) => Err(PolicyFault::Trap(format!(
                "the policy call panicked in the host: {}",
                panic_message(&*panic)
            ))),
        };
        Some(match decided {
            Ok(decision) => {
                if accounting == Accounting::Live {
                    policy.stats.record_success();
                }
                Routed {
                    decision,
                    policy_id: policy.id.clone(),
                    fault: None,
                }
            }
            Err(fault) if accounting == Accounting::Rehearsal => Routed {
                decision: fallback::least_loaded(req, snapshot, fault.kind().as_str()),
                policy_id: policy.id.clone(),
                fault: Some(fault),
            },
            Err(fault) => {
                let policy = policy.clone();
                drop(guard);
                self.fault(&policy, req, snapshot, fault)
            }
        })
    }

    fn fallback_without_policy(
        &self,
        req: &RequestInfo,
        snapshot: &ClusterSnapshot,
        fault: Option<PolicyFault>,
    ) -> Routed {
        self.fallback_decisions.fetch_add(1, Ordering::Relaxed);
        Routed {
            decision: fallback::least_loaded(req, snapshot, "no policy active"),
            policy_id: self.fallback_id.clone(),
            fault,
        }
    }

    /// Decide on the request path, from async code. A policy call is synchronous. A new
    /// version starts on the policy threads; once `PROBATION_CALLS` of its calls were quick
    /// (within `IN_PLACE_BUDGET`) and clean, its calls run in place on this worker, with no
    /// thread hop. A call in place that is slow, or that made the host block (WASI's
    /// synchronous adapter waits on a runtime to print, which panics on a Tokio worker: that
    /// panic stops the call, quietly, before any effect), sends the version back to the
    /// policy threads for good, where a slow call holds a policy thread, not a worker
    /// serving connections. Either way a panic, an overrun or a full pool is a fault the
    /// fallback answers for.
    pub async fn decide_off_worker(self: &Arc<Self>, req: &RequestInfo, prepared: Arc<PreparedSnapshot>) -> Routed {
        if let Some(canary) = self.canaries.deciding(req) {
            return self.decide_canary(&canary, req, prepared).await;
        }
        let active = self.active.load_full();
        let Some(policy) = active.as_ref().filter(|p| p.stats.in_place()) else {
            return self.decide_on_pool(req, prepared).await;
        };
        let started = std::time::Instant::now();
        let attempt = in_place::run(IN_PLACE_CUT, || {
            quiet_panics::inline(|| self.decide_inner(req, &prepared, OnPanic::GiveBack, Accounting::Live))
        });
        if attempt.is_none() || started.elapsed() > IN_PLACE_BUDGET {
            policy.stats.move_off_worker(&policy.id);
        }
        match attempt {
            Some(routed) => routed,
            None => self.decide_on_pool(req, prepared).await,
        }
    }

    /// Decide on a policy thread; the caller waits asynchronously, bounded by the policy's
    /// deadlines and a grace once a thread runs the call (time waiting for a thread is the
    /// host's, not the policy's). A fault is charged to the version that was called, not to
    /// whichever is active when the wait ends.
    pub async fn decide_on_pool(self: &Arc<Self>, req: &RequestInfo, prepared: Arc<PreparedSnapshot>) -> Routed {
        let called = self.active.load_full();
        let wait = decision_wait(called.as_deref());
        let engine = self.clone();
        let request = req.clone();
        let snapshot = prepared.clone();
        let answered = self
            .on_pool(wait, move || {
                let started = std::time::Instant::now();
                let routed = engine.decide_prepared(&request, &snapshot);
                (routed, started.elapsed())
            })
            .await;
        let fault = match answered {
            Ok((routed, took)) => {
                // A version on probation earns its place on the workers with quick calls.
                if let Some(policy) = self.active.load().as_ref()
                    && *policy.id == *routed.policy_id
                {
                    policy
                        .stats
                        .record_pool_call(took <= IN_PLACE_BUDGET && routed.fault.is_none(), &policy.id);
                }
                return routed;
            }
            Err(fault) => fault,
        };
        match called {
            Some(policy) => self.fault(&policy, req, prepared.snapshot(), fault),
            None => self.fallback_without_policy(req, prepared.snapshot(), Some(fault)),
        }
    }

    /// Run `call` on a policy thread: wait at most `wait` for a thread to start it (else
    /// [`PolicyFault::Busy`], and the call is dropped unrun), then at most `wait` for its
    /// answer. A panic, a thread that ends without an answer or an overrun is a fault.
    pub(super) async fn on_pool<R: Send + 'static>(
        &self,
        wait: std::time::Duration,
        call: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, PolicyFault> {
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let skip = abandoned.clone();
        let job = move || {
            if skip.load(Ordering::Acquire) {
                return None;
            }
            let _ = started_tx.send(());
            Some(call())
        };
        let answer = self
            .pool
            .submit(job)
            .map_err(|busy| PolicyFault::Busy(busy.to_string()))?;
        match tokio::time::timeout(wait, started).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(PolicyFault::Trap(
                    "the policy thread ended without an answer".to_owned(),
                ));
            }
            Err(_) => {
                abandoned.store(true, Ordering::Release);
                return Err(PolicyFault::Busy(format!(
                    "every policy thread stayed busy for {} ms",
                    wait.as_millis()
                )));
            }
        }
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(Ok(Some(value)))) => Ok(value),
            Ok(Ok(Ok(None))) => Err(PolicyFault::Busy("the call was given up before it ran".to_owned())),
            Ok(Ok(Err(panic))) => Err(PolicyFault::Trap(format!(
                "the policy call panicked in the host: {panic}"
            ))),
            Ok(Err(_)) => Err(PolicyFault::Trap(
                "the policy thread ended without an answer".to_owned(),
            )),
            Err(_) => Err(PolicyFault::Overdue {
                waited_ms: wait.as_millis() as u32,
            }),
        }
    }

    /// Count `fault` against `policy`, revert it when it keeps faulting, and let the
    /// fallback decide.
    fn fault(
        &self,
        policy: &Arc<LoadedPolicy>,
        req: &RequestInfo,
        snapshot: &ClusterSnapshot,
        fault: PolicyFault,
    ) -> Routed {
        self.fallback_decisions.fetch_add(1, Ordering::Relaxed);
        if !fault.is_policys() {
            tracing::debug!(policy = %policy.id, request = %req.id, "fallback decides (not counted here against the policy): {fault}");
            return Routed {
                decision: fallback::least_loaded(req, snapshot, fault.kind().as_str()),
                policy_id: policy.id.clone(),
                fault: Some(fault),
            };
        }
        let recent = policy.stats.record_fault(fault.kind());
        tracing::warn!(policy = %policy.id, request = %req.id, kind = fault.kind().as_str(), recent, "policy fault, fallback decides: {fault}");
        if self.options.revert_after_faults > 0 && recent >= self.options.revert_after_faults {
            self.revert_from(policy, recent);
        }
        Routed {
            decision: fallback::least_loaded(req, snapshot, fault.kind().as_str()),
            policy_id: policy.id.clone(),
            fault: Some(fault),
        }
    }

    /// Replace a repeatedly faulting active policy with the last known good one.
    fn revert_from(&self, failing: &Arc<LoadedPolicy>, recent: u32) {
        let mut registry = self.registry();
        let still_active = self.active.load().as_ref().is_some_and(|a| Arc::ptr_eq(a, failing));
        if !still_active {
            return;
        }
        match registry.previous.pop() {
            Some(good) => {
                good.stats.clear_faults();
                good.revive();
                self.active.store(Some(good.clone()));
                self.retire_unless_used(failing);
                self.reverts.fetch_add(1, Ordering::Relaxed);
                tracing::error!(failing = %failing.id, reverted_to = %good.id, recent, "policy reverted to last known good after repeated faults");
            }
            None => {
                tracing::error!(failing = %failing.id, recent, "policy keeps faulting and there is no earlier policy to revert to; the fallback decides meanwhile");
            }
        }
    }

    pub fn view(&self) -> EngineView {
        let registry = self.registry();
        let active = self.active.load_full();
        EngineView {
            active: active.as_ref().map(|p| p.id.to_string()),
            previous: registry.previous.iter().rev().map(|p| p.id.to_string()).collect(),
            policies: registry
                .loaded
                .iter()
                .map(|p| PolicyView {
                    id: p.id.to_string(),
                    name: p.name().to_owned(),
                    hash: p.hash.clone(),
                    description: p.spec.description.clone(),
                    origin: p.origin.clone(),
                    components: p.spec.stages.iter().map(|s| s.component.clone()).collect(),
                    active: active.as_ref().is_some_and(|a| Arc::ptr_eq(a, p)),
                    stats: p.stats.view(),
                })
                .collect(),
            fallback_decisions: self.fallback_decisions.load(Ordering::Relaxed),
            reverts: self.reverts.load(Ordering::Relaxed),
        }
    }

    /// Total faults per kind across all loaded policies, for `/metrics`.
    pub fn fallback_decisions(&self) -> u64 {
        self.fallback_decisions.load(Ordering::Relaxed)
    }

    pub fn reverts(&self) -> u64 {
        self.reverts.load(Ordering::Relaxed)
    }
}

/// The longest a request waits for `policy`'s decision: its stages' deadlines and a grace.
pub(super) fn decision_wait(policy: Option<&LoadedPolicy>) -> std::time::Duration {
    let deadlines: u64 = policy
        .map(|p| u64::from(p.spec.limits.deadline_ms) * p.spec.stages.len() as u64)
        .unwrap_or(0);
    std::time::Duration::from_millis(deadlines) + DECISION_GRACE
}

/// The ids of the loaded policies whose stages use `component`.
fn users(loaded: &[Arc<LoadedPolicy>], component: &str) -> Vec<String> {
    loaded
        .iter()
        .filter(|p| p.spec.stages.iter().any(|s| s.component == component))
        .map(|p| p.id.to_string())
        .collect()
}

/// Largest component a policy may use, from a policy folder or uploaded: room for the
/// interpreters a Python (componentize-py, ~19 MB) or JavaScript (StarlingMonkey, ~12 MB)
/// policy carries, and still a bound.
pub const MAX_COMPONENT_BYTES: usize = 48 * 1024 * 1024;
const COMPONENT_FILE_LIMIT: u64 = MAX_COMPONENT_BYTES as u64;

/// Read a component file that must be a regular file of bounded size inside `base` (after
/// following links): never a device, a FIFO or a file elsewhere a link points to.
fn read_component_file(path: &Path, base: Option<&Path>) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    let real = path.canonicalize()?;
    if let Some(base) = base
        && !real.starts_with(base.canonicalize()?)
    {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!("it resolves to {}, outside the policy's folder", real.display()),
        ));
    }
    // Before opening: opening a FIFO waits for a writer, which would wedge the caller.
    if !std::fs::metadata(&real)?.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "it is not a regular file"));
    }
    let file = std::fs::File::open(&real)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "it is not a regular file"));
    }
    if metadata.len() > COMPONENT_FILE_LIMIT {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "it is {} bytes, over the {COMPONENT_FILE_LIMIT}-byte limit",
                metadata.len()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(COMPONENT_FILE_LIMIT + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Forget the oldest loaded versions beyond `HISTORY`, never the active one.
fn trim_history(loaded: &mut Vec<Arc<LoadedPolicy>>, active: Option<&Arc<LoadedPolicy>>) {
    while loaded.len() > HISTORY {
        let Some(position) = loaded.iter().position(|p| !active.is_some_and(|a| Arc::ptr_eq(a, p))) else {
            return;
        };
        loaded.remove(position);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_named_as_a_component_is_refused_at_once_not_waited_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("policy.wasm");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let (done, answer) = std::sync::mpsc::channel();
        let (path, base) = (fifo.clone(), dir.path().to_owned());
        std::thread::spawn(move || {
            let _ = done.send(
                read_component_file(&path, Some(&base))
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            );
        });
        let read = answer
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading a FIFO must not wait for a writer");
        let error = read.expect_err("a FIFO is no component");
        assert!(error.contains("not a regular file"), "{error}");
    }
}
