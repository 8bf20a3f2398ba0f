//! A policy ready to run: its spec, identity (`name@hash`), compiled stage chain and
//! counters. Immutable once built; swapping policies swaps `Arc<LoadedPolicy>`s.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use serde::Serialize;
use switchyard_protocol::{Decision, RequestInfo};

use super::bindings;
use super::fault::{FaultKind, PolicyFault};
use super::prepared::{Candidate, PreparedSnapshot};
use super::spec::PolicySpec;
use super::stage::Stage;
use super::validate::{check_decision, check_shape};

/// How many of the latest live decisions the fault rate is taken over.
pub const FAULT_WINDOW: u32 = 20;

/// Counters of one policy version.
#[derive(Debug, Default)]
pub struct PolicyStats {
    pub decisions: AtomicU64,
    pub faults: [AtomicU64; FaultKind::ALL.len()],
    pub consecutive_faults: AtomicU32,
    /// The outcome of the last `FAULT_WINDOW` live decisions, one bit each (1: a fault),
    /// newest in the lowest bit.
    pub recent: AtomicU64,
    /// Set once a call of this version was slow or needed the host to block: its calls
    /// then run on the policy threads, never in place on an async worker.
    pub off_worker: std::sync::atomic::AtomicBool,
    /// Quick, clean calls made on the policy threads while on probation.
    pub quick_calls: AtomicU32,
}

/// Quick, clean calls a version makes on the policy threads before it may run in place.
pub const PROBATION_CALLS: u32 = 32;

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StatsView {
    pub decisions: u64,
    pub faults: std::collections::BTreeMap<String, u64>,
    pub consecutive_faults: u32,
}

impl PolicyStats {
    pub fn view(&self) -> StatsView {
        StatsView {
            decisions: self.decisions.load(Ordering::Relaxed),
            faults: FaultKind::ALL
                .iter()
                .map(|k| (k.as_str().to_owned(), self.faults[k.index()].load(Ordering::Relaxed)))
                .collect(),
            consecutive_faults: self.consecutive_faults.load(Ordering::Relaxed),
        }
    }

    /// Record a fault; returns the number of faults among the last `FAULT_WINDOW` decisions.
    pub fn record_fault(&self, kind: FaultKind) -> u32 {
        self.faults[kind.index()].fetch_add(1, Ordering::Relaxed);
        self.consecutive_faults.fetch_add(1, Ordering::Relaxed);
        self.push_outcome(true)
    }

    pub fn record_success(&self) {
        self.decisions.fetch_add(1, Ordering::Relaxed);
        if self.consecutive_faults.load(Ordering::Relaxed) != 0 {
            self.consecutive_faults.store(0, Ordering::Relaxed);
        }
        if self.recent.load(Ordering::Relaxed) != 0 {
            self.push_outcome(false);
        }
    }

    /// Whether calls may run in place on an async worker: probation passed, never slow.
    pub fn in_place(&self) -> bool {
        !self.off_worker.load(Ordering::Relaxed) && self.quick_calls.load(Ordering::Relaxed) >= PROBATION_CALLS
    }

    /// A call on the policy threads ended; `quick` if it was within the in-place budget and
    /// clean. A slow one ends the probation for good.
    pub fn record_pool_call(&self, quick: bool, policy: &str) {
        if quick {
            self.quick_calls.fetch_add(1, Ordering::Relaxed);
        } else if self.quick_calls.load(Ordering::Relaxed) < PROBATION_CALLS {
            self.move_off_worker(policy);
        }
    }

    /// Keep this version's calls on the policy threads from now on.
    pub fn move_off_worker(&self, policy: &str) {
        if !self.off_worker.swap(true, Ordering::Relaxed) {
            tracing::info!(%policy, "policy calls stay on the policy threads (a call was slow, faulted or printed)");
        }
    }

    /// Forget the fault history (after a revert or a re-activation).
    pub fn clear_faults(&self) {
        self.consecutive_faults.store(0, Ordering::Relaxed);
        self.recent.store(0, Ordering::Relaxed);
    }

    fn push_outcome(&self, fault: bool) -> u32 {
        let mask = (1u64 << FAULT_WINDOW) - 1;
        let previous = self
            .recent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some(((bits << 1) | u64::from(fault)) & mask)
            })
            .unwrap_or_default();
        (((previous << 1) | u64::from(fault)) & mask).count_ones()
    }
}

#[derive(Debug)]
pub struct LoadedPolicy {
    pub spec: PolicySpec,
    /// `name@<12 hex of sha256(policy text, components)>`.
    pub id: Arc<str>,
    pub hash: String,
    /// Where it came from: a file path, or `upload`.
    pub origin: String,
    pub stages: Vec<Stage>,
    pub stats: PolicyStats,
}

impl LoadedPolicy {
    /// Drop every stage's warm instances: the version is not active.
    pub fn retire(&self) {
        self.stages.iter().for_each(Stage::retire);
    }

    /// Keep instances warm: the version is active.
    pub fn revive(&self) {
        self.stages.iter().for_each(Stage::revive);
    }

    /// Instances kept warm across the stages.
    pub fn warm_instances(&self) -> usize {
        self.stages.iter().map(Stage::warm_instances).sum()
    }

    pub fn name(&self) -> &str {
        self.spec.name.as_str()
    }

    /// Run the chain on `req`. The decision is checked against `snapshot` after each stage.
    pub fn decide(&self, req: &RequestInfo, prepared: &PreparedSnapshot) -> Result<Decision, PolicyFault> {
        let snapshot = prepared.snapshot();
        let wit_req = bindings::request_to_wit(req);
        let mut candidates: Vec<Candidate> = prepared.candidates_for(&req.model);
        with_cache_estimates(&mut candidates, req, prepared);
        let mut reasons: Vec<String> = Vec::new();
        let mut previous: Option<Vec<switchyard_protocol::Target>> = None;
        // A stage that asked to wait for its first target keeps asking, while that node is
        // still the first (a later stage may reorder).
        let mut waits_for: Option<std::sync::Arc<str>> = None;
        for (index, stage) in self.stages.iter().enumerate() {
            let decision = stage.route(&wit_req, prepared, &candidates)?;
            if stage.names_targets() {
                check_decision(&decision, snapshot, &req.model, previous.as_deref())?;
            } else {
                check_shape(&decision)?;
            }
            let route = match decision {
                Decision::Reject(_) => return Ok(decision),
                Decision::Route(route) => route,
            };
            let first = route.targets.first().map(|t| t.node.clone());
            let wait_for_first = route.wait_for_first || (waits_for.is_some() && waits_for == first);
            if index + 1 == self.stages.len() {
                if reasons.is_empty() {
                    return Ok(Decision::Route(switchyard_protocol::Route {
                        wait_for_first,
                        ..route
                    }));
                }
                reasons.push(route.reason);
                return Ok(Decision::Route(switchyard_protocol::Route {
                    targets: route.targets,
                    reason: reasons.join("; "),
                    wait_for_first,
                }));
            }
            if route.wait_for_first {
                waits_for = first;
            }
            // The next stage sees only the chosen nodes, each with only the chosen model.
            candidates = route
                .targets
                .iter()
                .filter_map(|target| prepared.candidate(&req.model, &target.node, &target.model))
                .collect();
            with_cache_estimates(&mut candidates, req, prepared);
            previous = Some(route.targets);
            reasons.push(route.reason);
        }
        Err(PolicyFault::InvalidDecision("policy has no stages".to_owned()))
    }
}

/// Write the request's cache estimate for each candidate's node into it.
fn with_cache_estimates(candidates: &mut [Candidate], req: &RequestInfo, prepared: &PreparedSnapshot) {
    if req.cached.is_empty() {
        return;
    }
    let nodes = prepared.nodes();
    for candidate in candidates {
        let name = &nodes[candidate.node as usize].name;
        candidate.cached_tokens = req
            .cached
            .iter()
            .find(|estimate| &estimate.node == name)
            .map_or(0, |estimate| estimate.tokens);
    }
}
