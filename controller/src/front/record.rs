//! The front door's side of the decision record: a draft made when the policy decides,
//! filled in as the request runs, and handed to the store when the answer ends (or fails);
//! the same outcome goes to a running canary, which compares its share against the active
//! policy's.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use switchyard_protocol::{ClusterSnapshot, RequestInfo};

use crate::decisions::{DecisionRecord, DecisionStore, Draft, Outcome, RecordedDecision};
use crate::policy::canary::{Canary, Share};
use crate::policy::{PreparedSnapshot, Routed};

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
        let record = DecisionRecord {
            id: info.id.clone(),
            at_ms: arrived_ms,
            request: info.clone(),
            snapshot: snapshot_key(view),
            in_flight,
            decided: RecordedDecision {
                policy: routed.policy_id.to_string(),
                decision: routed.decision.clone(),
                fault: routed.fault.as_ref().map(|f| f.to_string()),
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
