//! The policy engine's canary controls: start a candidate deciding a share of live requests,
//! stop it, promote it, roll it back when its share breaks the rules, and decide the
//! canary's share. The canary itself (its share, window and verdict) is `canary.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use switchyard_protocol::RequestInfo;

use super::canary::{
    Canary, CanaryReport, CanaryRules, CanaryState, CanaryView, EventSink, PolicyEventKind, Share, lock,
};
use super::engine::decision_wait;
use super::fault::PolicyFault;
use super::{LoadedPolicy, PolicyEngine, PolicyError, PreparedSnapshot, Routed, fallback};

impl PolicyEngine {
    /// Where every policy event goes besides the log (set once).
    pub fn on_policy_event(&self, sink: EventSink) {
        let _ = self.canaries.sink.set(sink);
    }

    /// Let the loaded policy `id_or_name` decide `percent` % of live requests (sticky per
    /// session), replacing any canary already running.
    pub fn start_canary(
        self: &Arc<Self>,
        id_or_name: &str,
        percent: u8,
        rules: CanaryRules,
    ) -> Result<CanaryReport, PolicyError> {
        let invalid = PolicyError::Canary;
        if !(1..=100).contains(&percent) {
            return Err(invalid(format!("percent = {percent} must be 1 to 100")));
        }
        rules.validate().map_err(invalid)?;
        let policy = self.registry().find(id_or_name)?;
        let active = self.active().ok_or_else(|| {
            invalid("no policy is active: activate one first, a canary is compared against it".to_owned())
        })?;
        if Arc::ptr_eq(&active, &policy) {
            return Err(invalid(format!("{} is the active policy already", policy.id)));
        }
        policy.revive();
        let canary = Arc::new(Canary::new(policy.clone(), active.id.to_string(), percent, rules, {
            let engine = Arc::downgrade(self);
            Box::new(move |canary: &Canary, why: String| {
                if let Some(engine) = engine.upgrade() {
                    engine.roll_back_canary(canary, why);
                }
            })
        }));
        if let Some(previous) = self.canaries.running.swap(Some(canary.clone()))
            && previous.end(CanaryState::Stopped)
        {
            self.retire_unless_used(&previous.policy);
            self.canaries.emit(
                PolicyEventKind::CanaryStopped,
                &previous.policy.id,
                format!("replaced by {}", policy.id),
            );
        }
        *lock(&self.canaries.last) = Some(canary.clone());
        tracing::info!(policy = %policy.id, percent, "canary: it decides {percent} % of live requests");
        self.canaries.emit(
            PolicyEventKind::CanaryStarted,
            &policy.id,
            format!("{percent} % of requests, against {}; rules {rules:?}", active.id),
        );
        Ok(canary.report())
    }

    /// Stop the running canary by hand; its last report.
    pub fn stop_canary(&self) -> Option<CanaryReport> {
        let canary = self.canaries.running.load_full()?;
        if !self.canaries.take(&canary, CanaryState::Stopped) {
            return None;
        }
        self.retire_unless_used(&canary.policy);
        tracing::info!(policy = %canary.policy.id, "canary stopped");
        self.canaries.emit(
            PolicyEventKind::CanaryStopped,
            &canary.policy.id,
            "stopped by an operator".to_owned(),
        );
        Some(canary.report())
    }

    /// Make the running canary the active policy.
    pub fn promote_canary(&self) -> Result<CanaryReport, PolicyError> {
        let canary = self
            .canaries
            .running
            .load_full()
            .ok_or_else(|| PolicyError::Canary("no canary is running".to_owned()))?;
        if !self.canaries.take(&canary, CanaryState::Promoted) {
            return Err(PolicyError::Canary(format!(
                "the canary {} ended before it could be promoted",
                canary.policy.id
            )));
        }
        self.activate(&canary.policy.id)?;
        self.canaries.emit(
            PolicyEventKind::CanaryPromoted,
            &canary.policy.id,
            format!("promoted to active in place of {}", canary.active_id),
        );
        Ok(canary.report())
    }

    /// Whether `policy` is the running canary's.
    pub(super) fn is_canary(&self, policy: &Arc<LoadedPolicy>) -> bool {
        self.canaries
            .running
            .load()
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.policy, policy))
    }

    /// End the running canary as promoted if it runs `policy` (just made active).
    pub(super) fn end_canary_of(&self, policy: &Arc<LoadedPolicy>, why: &str) {
        let Some(canary) = self.canaries.running.load_full() else {
            return;
        };
        if Arc::ptr_eq(&canary.policy, policy) && self.canaries.take(&canary, CanaryState::Promoted) {
            tracing::info!(policy = %policy.id, "canary ended: {why}");
            self.canaries
                .emit(PolicyEventKind::CanaryPromoted, &policy.id, why.to_owned());
        }
    }

    /// Called by a canary whose share broke the rules.
    pub(super) fn roll_back_canary(&self, canary: &Canary, why: String) {
        if !self.canaries.take(canary, CanaryState::RolledBack(why.clone())) {
            return;
        }
        self.retire_unless_used(&canary.policy);
        self.canaries.rollbacks.fetch_add(1, Ordering::Relaxed);
        tracing::error!(policy = %canary.policy.id, active = %canary.active_id, "canary rolled back: {why}; the active policy decides every request");
        self.canaries
            .emit(PolicyEventKind::CanaryRolledBack, &canary.policy.id, why);
    }

    pub fn canary_view(&self) -> CanaryView {
        CanaryView {
            canary: lock(&self.canaries.last).as_ref().map(|c| c.report()),
            rollbacks: self.canaries.rollbacks.load(Ordering::Relaxed),
            events: lock(&self.canaries.events).iter().cloned().collect(),
        }
    }

    /// Canaries rolled back automatically since the controller started.
    pub fn canary_rollbacks(&self) -> u64 {
        self.canaries.rollbacks.load(Ordering::Relaxed)
    }

    /// The share the running canary decides, 0 when none runs.
    pub fn canary_percent(&self) -> u8 {
        self.canaries.running.load().as_ref().map_or(0, |c| c.percent)
    }

    /// The running canary and the share a decision by `policy_id` belongs to.
    pub fn canary_share(&self, policy_id: &str) -> Option<(Arc<Canary>, Share)> {
        self.canaries.share_of(policy_id)
    }

    /// The candidate's decision on a policy thread; a fault counts against the canary and
    /// the built-in fallback decides the request.
    pub(super) async fn decide_canary(
        &self,
        canary: &Arc<Canary>,
        req: &RequestInfo,
        prepared: Arc<PreparedSnapshot>,
    ) -> Routed {
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
