//! Rehearsals: a candidate policy tried against live traffic before it serves, composed with
//! the engine rather than part of it. A shadow decides every request beside the active
//! policy, off the request path; a canary decides a share of live requests and is rolled back
//! when its share breaks the rules; a candidate's explanation answers one request. The
//! canary itself (its share, window and verdict) is `canary.rs`, the shadow `shadow.rs`.

pub mod canary;
pub mod shadow;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use switchyard_protocol::{Decision, RequestInfo};

use canary::{Canary, CanaryReport, CanaryRules, CanaryState, CanaryView, EventSink, PolicyEventKind, lock};

use super::fallback;
use super::fault::PolicyFault;
use super::pool::panic_message;
use super::state::{Routed, Shared};
use super::{PolicyError, PolicyRegistry, PreparedSnapshot};

/// Starts, stops and reports shadows and canaries; the admin API holds one.
#[derive(Debug, Clone)]
pub struct Rehearsal {
    shared: Arc<Shared>,
    /// Promoting a canary activates it.
    registry: PolicyRegistry,
}

impl Rehearsal {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self {
            registry: PolicyRegistry::new(shared.clone()),
            shared,
        }
    }

    /// Let the loaded policy `id_or_name` decide every live request beside the active one,
    /// off the request path (replacing any shadow already running).
    pub fn start_shadow(&self, id_or_name: &str) -> Result<shadow::ShadowReport, PolicyError> {
        let policy = self.shared.versions().find(id_or_name)?;
        let shadow = shadow::Shadow::start(policy).map_err(|e| PolicyError::Invalid {
            origin: id_or_name.to_owned(),
            field: "shadow".to_owned(),
            message: format!("cannot start the shadow's thread: {e}"),
        })?;
        let report = shadow.report();
        tracing::info!(policy = %shadow.policy.id, "shadowing: it decides every request beside the active policy");
        if let Some(previous) = self.shared.shadow.swap(Some(shadow)) {
            self.shared.retire_unless_used(&previous.policy);
        }
        Ok(report)
    }

    /// Stop the shadow; its last report.
    pub fn stop_shadow(&self) -> Option<shadow::ShadowReport> {
        let shadow = self.shared.shadow.swap(None)?;
        self.shared.retire_unless_used(&shadow.policy);
        Some(shadow.report())
    }

    /// The running shadow's report.
    pub fn shadow_report(&self) -> Option<shadow::ShadowReport> {
        self.shared.shadow.load().as_ref().map(|s| s.report())
    }

    /// Offer a request and the active policy's decision to the shadow, if one runs (never
    /// waits). [`super::PolicyEngine::decide`] offers every live decision itself.
    pub fn offer_shadow(&self, req: &RequestInfo, prepared: &Arc<PreparedSnapshot>, decision: &Decision) {
        if let Some(shadow) = self.shared.shadow.load().as_ref() {
            shadow.offer(req, prepared.clone(), decision);
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
        let policy = self.shared.versions().find(id_or_name)?;
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

    /// Where every policy event goes besides the log (set once).
    pub fn on_policy_event(&self, sink: EventSink) {
        let _ = self.shared.canaries.sink.set(sink);
    }

    /// Let the loaded policy `id_or_name` decide `percent` % of live requests (sticky per
    /// session), replacing any canary already running.
    pub fn start_canary(&self, id_or_name: &str, percent: u8, rules: CanaryRules) -> Result<CanaryReport, PolicyError> {
        let invalid = PolicyError::Canary;
        if !(1..=100).contains(&percent) {
            return Err(invalid(format!("percent = {percent} must be 1 to 100")));
        }
        rules.validate().map_err(invalid)?;
        let policy = self.shared.versions().find(id_or_name)?;
        let active = self.shared.active.load_full().ok_or_else(|| {
            invalid("no policy is active: activate one first, a canary is compared against it".to_owned())
        })?;
        if Arc::ptr_eq(&active, &policy) {
            return Err(invalid(format!("{} is the active policy already", policy.id)));
        }
        policy.revive();
        let canary = Arc::new(Canary::new(policy.clone(), active.id.to_string(), percent, rules, {
            let rehearsal = Arc::downgrade(&self.shared);
            Box::new(move |canary: &Canary, why: String| {
                if let Some(shared) = rehearsal.upgrade() {
                    roll_back_canary(&shared, canary, why);
                }
            })
        }));
        if let Some(previous) = self.shared.canaries.running.swap(Some(canary.clone()))
            && previous.end(CanaryState::Stopped)
        {
            self.shared.retire_unless_used(&previous.policy);
            self.shared.canaries.emit(
                PolicyEventKind::CanaryStopped,
                &previous.policy.id,
                format!("replaced by {}", policy.id),
            );
        }
        *lock(&self.shared.canaries.last) = Some(canary.clone());
        tracing::info!(policy = %policy.id, percent, "canary: it decides {percent} % of live requests");
        self.shared.canaries.emit(
            PolicyEventKind::CanaryStarted,
            &policy.id,
            format!("{percent} % of requests, against {}; rules {rules:?}", active.id),
        );
        Ok(canary.report())
    }

    /// Stop the running canary by hand; its last report.
    pub fn stop_canary(&self) -> Option<CanaryReport> {
        let canary = self.shared.canaries.running.load_full()?;
        if !self.shared.canaries.take(&canary, CanaryState::Stopped) {
            return None;
        }
        self.shared.retire_unless_used(&canary.policy);
        tracing::info!(policy = %canary.policy.id, "canary stopped");
        self.shared.canaries.emit(
            PolicyEventKind::CanaryStopped,
            &canary.policy.id,
            "stopped by an operator".to_owned(),
        );
        Some(canary.report())
    }

    /// Make the running canary the active policy.
    pub fn promote_canary(&self) -> Result<CanaryReport, PolicyError> {
        let canary = self
            .shared
            .canaries
            .running
            .load_full()
            .ok_or_else(|| PolicyError::Canary("no canary is running".to_owned()))?;
        if !self.shared.canaries.take(&canary, CanaryState::Promoted) {
            return Err(PolicyError::Canary(format!(
                "the canary {} ended before it could be promoted",
                canary.policy.id
            )));
        }
        self.registry.activate(&canary.policy.id)?;
        self.shared.canaries.emit(
            PolicyEventKind::CanaryPromoted,
            &canary.policy.id,
            format!("promoted to active in place of {}", canary.active_id),
        );
        Ok(canary.report())
    }

    pub fn canary_view(&self) -> CanaryView {
        CanaryView {
            canary: lock(&self.shared.canaries.last).as_ref().map(|c| c.report()),
            rollbacks: self.shared.canaries.rollbacks.load(Ordering::Relaxed),
            events: lock(&self.shared.canaries.events).iter().cloned().collect(),
        }
    }

    /// Canaries rolled back automatically since the controller started.
    pub fn canary_rollbacks(&self) -> u64 {
        self.shared.canaries.rollbacks.load(Ordering::Relaxed)
    }

    /// The share the running canary decides, 0 when none runs.
    pub fn canary_percent(&self) -> u8 {
        self.shared.canaries.running.load().as_ref().map_or(0, |c| c.percent)
    }
}

/// Called by a canary whose share broke the rules.
fn roll_back_canary(shared: &Shared, canary: &Canary, why: String) {
    if !shared.canaries.take(canary, CanaryState::RolledBack(why.clone())) {
        return;
    }
    shared.retire_unless_used(&canary.policy);
    shared.canaries.rollbacks.fetch_add(1, Ordering::Relaxed);
    tracing::error!(policy = %canary.policy.id, active = %canary.active_id, "canary rolled back: {why}; the active policy decides every request");
    shared
        .canaries
        .emit(PolicyEventKind::CanaryRolledBack, &canary.policy.id, why);
}
