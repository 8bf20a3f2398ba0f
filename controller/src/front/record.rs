//! The front door's side of the decision record: a draft made when the policy decides,
//! filled in as the request runs, and handed to the store when the answer ends (or fails);
//! the same outcome goes to a running canary, which compares its share against the active
//! policy's.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use switchyard_protocol::{ClusterSnapshot, Decision, RequestInfo};

use crate::decisions::{DecisionRecord, DecisionStore, Draft, Outcome, RecordedDecision};
use crate::policy::canary::{Canary, Share};
use crate::policy::{PreparedSnapshot, Routed};

/// The most of a model name no node serves that a record keeps.
const UNKNOWN_MODEL_BYTES: usize = 64;
/// The most of a policy's reason, rejection message or fault that a record keeps.
const DECISION_TEXT_BYTES: usize = 512;

/// `text`, ending in `…` where it was clipped to `max` bytes.
fn clipped(text: &str, max: usize) -> String {
    let kept = super::clip::clip(text, max);
    if kept.len() == text.len() {
        text.to_owned()
    } else {
        format!("{kept}…")
    }
}

/// This controller run's start, in ms since the epoch: with a snapshot's version, a key no
/// other run of any controller reuses.
fn boot_ms() -> u64 {
    static BOOT: OnceLock<u64> = OnceLock::new();
    *BOOT.get_or_init(crate::clock::now_ms)
}

/// The store's key for a prepared snapshot.
pub fn snapshot_key(view: &PreparedSnapshot) -> String {
    format!("{:x}-{}", boot_ms(), view.version())
}

/// A record on its way: the draft, the store it goes to (when a record is kept) and the
/// snapshot it names, and the canary that wants the outcome (while one runs).
#[derive(Debug)]
pub struct RecordSink {
    store: Option<Arc<DecisionStore>>,
    canary: Option<(Arc<Canary>, Share)>,
    draft: Draft,
    snapshot: Arc<ClusterSnapshot>,
}

impl RecordSink {
    /// The draft for a decision just made (`arrived_ms`: when the request arrived).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Option<Arc<DecisionStore>>,
        canary: Option<(Arc<Canary>, Share)>,
        view: &PreparedSnapshot,
        in_flight: Vec<(String, u32)>,
        info: &RequestInfo,
        routed: &Routed,
        started: Instant,
        arrived_ms: u64,
    ) -> Self {
        let mut request = info.clone();
        if !view.snapshot().nodes.iter().any(|n| n.variant(&info.model).is_some()) {
            // No node serves it: a name the client chose, kept only as far as it helps.
            request.model = clipped(&info.model, UNKNOWN_MODEL_BYTES);
        }
        let mut decision = routed.decision.clone();
        match &mut decision {
            Decision::Route(route) => route.reason = clipped(&route.reason, DECISION_TEXT_BYTES),
            Decision::Reject(reject) => reject.message = clipped(&reject.message, DECISION_TEXT_BYTES),
        }
        let record = DecisionRecord {
            id: info.id.clone(),
            at_ms: arrived_ms,
            request,
            snapshot: snapshot_key(view),
            in_flight,
            decided: RecordedDecision {
                policy: routed.policy_id.to_string(),
                decision,
                fault: routed
                    .fault
                    .as_ref()
                    .map(|f| clipped(&f.to_string(), DECISION_TEXT_BYTES)),
                fallback: routed.fault.is_some(),
                canary: canary.as_ref().is_some_and(|(_, share)| *share == Share::Canary),
            },
            outcome: Outcome::default(),
        };
        Self {
            store,
            canary,
            draft: Draft { record, started },
            snapshot: view.shared(),
        }
    }

    pub fn outcome(&mut self) -> &mut Outcome {
        &mut self.draft.record.outcome
    }

    /// The answer ended with `status` (`cancelled`: the client went away first).
    pub fn finish(self, status: u16, cancelled: bool) {
        let record = self.draft.finish(status, cancelled);
        if let Some((canary, share)) = &self.canary {
            canary.observe(*share, status, record.outcome.ttft_ms, cancelled);
        }
        if let Some(store) = &self.store {
            store.submit(record, &self.snapshot);
        }
    }
}
