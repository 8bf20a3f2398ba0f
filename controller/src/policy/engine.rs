//! The policy engine: the request path's one way to a decision. The active policy decides
//! (in place on the async worker once its calls proved quick, else on the policy threads),
//! or the running canary for its share; every fault becomes the built-in fallback's decision,
//! and repeated faults revert the active policy to the last known good one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use switchyard_protocol::{ClusterSnapshot, RequestInfo};

use super::fallback;
use super::fault::PolicyFault;
use super::in_place;
use super::loaded::LoadedPolicy;
use super::pool::{panic_message, quiet_panics};
use super::prepared::PreparedSnapshot;
use super::rehearsal::canary::{Canary, Share};
use super::state::{Routed, Shared};

/// The longest a policy call may take in place on an async worker before its version is
/// moved to the policy threads.
const IN_PLACE_BUDGET: std::time::Duration = std::time::Duration::from_millis(2);
/// The longest a call tried in place may hold the async worker before it is cut short and
/// given to a policy thread (every stage's deadline is cut to what is left of it).
const IN_PLACE_CUT: std::time::Duration = std::time::Duration::from_millis(5);

/// How much longer than the policy's own deadlines a request waits for its decision.
const DECISION_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

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

/// Decides and explains; the front door and the endpoint picker hold one.
#[derive(Debug, Clone)]
pub struct PolicyEngine {
    shared: Arc<Shared>,
}

impl PolicyEngine {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Decide where a live request goes, from async code. Never fails: a fault yields the
    /// fallback's decision. A new version starts on the policy threads; once
    /// `PROBATION_CALLS` of its calls were quick (within `IN_PLACE_BUDGET`) and clean, its
    /// calls run in place on this worker, with no thread hop. A call in place that is slow,
    /// or that made the host block (WASI's synchronous adapter waits on a runtime to print,
    /// which panics on a Tokio worker: that panic stops the call, quietly, before any
    /// effect), sends the version back to the policy threads for good, where a slow call
    /// holds a policy thread, not a worker serving connections. Either way a panic, an
    /// overrun or a full pool is a fault the fallback answers for. The running canary
    /// decides its share; the running shadow is offered the request and the decision.
    pub async fn decide(&self, req: &RequestInfo, prepared: Arc<PreparedSnapshot>) -> Routed {
        let routed = self.decide_off_worker(req, prepared.clone()).await;
        if let Some(shadow) = self.shared.shadow.load().as_ref() {
            shadow.offer(req, prepared, &routed.decision);
        }
        routed
    }

    /// Decide a live request on this thread (tools, benchmarks, replay, and the policy threads
    /// themselves): counted as [`Self::decide`] is, with no canary and no shadow.
    pub fn decide_blocking(&self, req: &RequestInfo, prepared: &PreparedSnapshot) -> Routed {
        match self.decide_inner(req, prepared, OnPanic::Fault, Accounting::Live) {
            Some(routed) => routed,
            None => self.fallback_without_policy(req, prepared.snapshot(), None),
        }
    }

    /// [`Self::decide_blocking`] on a snapshot not prepared in advance (tools and tests).
    pub fn decide_snapshot(&self, req: &RequestInfo, snapshot: &ClusterSnapshot) -> Routed {
        self.decide_blocking(req, &PreparedSnapshot::from(snapshot.clone()))
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

    /// The policy deciding live requests now.
    pub fn active(&self) -> Option<Arc<LoadedPolicy>> {
        self.shared.active.load_full()
    }

    /// Whether the policy that made a decision (`policy_id`: the active one, the canary, or the
    /// fallback) lets its streams continue on another node.
    pub fn continues_streams(&self, policy_id: &str) -> bool {
        let active = self.shared.active.load();
        if let Some(policy) = active.as_ref().filter(|p| *p.id == *policy_id) {
            return policy.spec.continue_streams;
        }
        let canary = self.shared.canaries.running.load();
        match canary.as_ref().filter(|c| *c.policy.id == *policy_id) {
            Some(canary) => canary.policy.spec.continue_streams,
            None => true,
        }
    }

    /// The running canary and the share a decision by `policy_id` belongs to, for the
    /// request's outcome.
    pub fn canary_share(&self, policy_id: &str) -> Option<(Arc<Canary>, Share)> {
        self.shared.canaries.share_of(policy_id)
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
        let guard = self.shared.active.load();
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
        self.shared.fallback_decisions.fetch_add(1, Ordering::Relaxed);
        Routed {
            decision: fallback::least_loaded(req, snapshot, "no policy active"),
            policy_id: self.shared.fallback_id.clone(),
            fault,
        }
    }

    /// The canary's decision for its share; else the active policy's, in place or on a
    /// policy thread (see [`Self::decide`]).
    async fn decide_off_worker(&self, req: &RequestInfo, prepared: Arc<PreparedSnapshot>) -> Routed {
        if let Some(canary) = self.shared.canaries.deciding(req) {
            return self.decide_canary(&canary, req, prepared).await;
        }
        let active = self.shared.active.load_full();
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
    /// whichever is active when the wait ends. [`Self::decide`] comes here unless the version
    /// runs in place; public so that tests can hold the policy threads busy.
    pub async fn decide_on_pool(&self, req: &RequestInfo, prepared: Arc<PreparedSnapshot>) -> Routed {
        let called = self.shared.active.load_full();
        let wait = decision_wait(called.as_deref());
        let engine = self.clone();
        let request = req.clone();
        let snapshot = prepared.clone();
        let answered = self
            .on_pool(wait, move || {
                let started = std::time::Instant::now();
                let routed = engine.decide_blocking(&request, &snapshot);
                (routed, started.elapsed())
            })
            .await;
        let fault = match answered {
            Ok((routed, took)) => {
                // A version on probation earns its place on the workers with quick calls.
                if let Some(policy) = self.shared.active.load().as_ref()
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
    async fn on_pool<R: Send + 'static>(
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
            .shared
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
        self.shared.fallback_decisions.fetch_add(1, Ordering::Relaxed);
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
        if self.shared.options.revert_after_faults > 0 && recent >= self.shared.options.revert_after_faults {
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
        let mut versions = self.shared.versions();
        let still_active = self
            .shared
            .active
            .load()
            .as_ref()
            .is_some_and(|a| Arc::ptr_eq(a, failing));
        if !still_active {
            return;
        }
        match versions.previous.pop() {
            Some(good) => {
                good.stats.clear_faults();
                good.revive();
                self.shared.active.store(Some(good.clone()));
                self.shared.retire_unless_used(failing);
                self.shared.reverts.fetch_add(1, Ordering::Relaxed);
                tracing::error!(failing = %failing.id, reverted_to = %good.id, recent, "policy reverted to last known good after repeated faults");
            }
            None => {
                tracing::error!(failing = %failing.id, recent, "policy keeps faulting and there is no earlier policy to revert to; the fallback decides meanwhile");
            }
        }
    }

    /// The candidate's decision on a policy thread; a fault counts against the canary and
    /// the built-in fallback decides the request.
    async fn decide_canary(&self, canary: &Arc<Canary>, req: &RequestInfo, prepared: Arc<PreparedSnapshot>) -> Routed {
        let policy = canary.policy.clone();
        let request = req.clone();
        let snapshot = prepared.clone();
        let call = policy.clone();
        let answered = self
            .on_pool(decision_wait(Some(&policy)), move || call.decide(&request, &snapshot))
            .await;
        let fault = match answered.and_then(|decided| decided) {
            Ok(decision) => {
                return Routed {
                    decision,
                    policy_id: policy.id.clone(),
                    fault: None,
                };
            }
            Err(fault) => fault,
        };
        tracing::warn!(policy = %policy.id, request = %req.id, kind = fault.kind().as_str(), "canary fault, fallback decides: {fault}");
        // The canary's calls count nothing themselves: an overdue call is the canary's
        // fault here; a busy host is not.
        if !matches!(fault, PolicyFault::Busy(_)) {
            canary.fault();
        }
        Routed {
            decision: fallback::least_loaded(req, prepared.snapshot(), fault.kind().as_str()),
            policy_id: policy.id.clone(),
            fault: Some(fault),
        }
    }
}

/// The longest a request waits for `policy`'s decision: its stages' deadlines and a grace.
fn decision_wait(policy: Option<&LoadedPolicy>) -> std::time::Duration {
    let deadlines: u64 = policy
        .map(|p| u64::from(p.spec.limits.deadline_ms) * p.spec.stages.len() as u64)
        .unwrap_or(0);
    std::time::Duration::from_millis(deadlines) + DECISION_GRACE
}
