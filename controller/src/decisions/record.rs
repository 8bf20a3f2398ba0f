//! One request's record, as stored and exported (NDJSON, one object per line).

use serde::{Deserialize, Serialize};
use switchyard_protocol::{Decision, RequestInfo};

/// What the policy decided, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedDecision {
    /// `name@hash` of the policy that decided (the active one; the fallback's when it faulted).
    pub policy: String,
    pub decision: Decision,
    /// The policy's fault, when the built-in fallback decided instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    #[serde(default)]
    pub fallback: bool,
    /// Decided by a canary (a candidate deciding a share of live requests), not the active
    /// policy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub canary: bool,
}

/// How the request turned out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// The node that answered (absent when none did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The HTTP status the client got (499: it went away first).
    pub status: u16,
    /// From arrival to the node's first byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u32>,
    /// From arrival to the end of the answer.
    pub duration_ms: u32,
    /// Targets tried before the one that answered.
    #[serde(default)]
    pub retries: u32,
    #[serde(default)]
    pub cancelled: bool,
    /// The energy estimate sent in `x-switchyard-energy-mj`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_mj: Option<u64>,
    /// The prompt tokens the runtime reported it found in its prefix cache (its own count,
    /// from the answer's `usage`), beside the controller's estimate in `request.cached`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u32>,
    /// Where a streamed answer continued when its node was lost, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub continued: Vec<crate::front::continuation::Handoff>,
}

/// One routed request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRecord {
    /// The controller's request id (`req-17`), unique per controller run.
    pub id: String,
    /// Milliseconds since the Unix epoch when the request arrived.
    pub at_ms: u64,
    /// The request's metadata as the policy saw it (never the prompt).
    pub request: RequestInfo,
    /// The snapshot the policy saw (see the `snapshots` lines of an export).
    pub snapshot: String,
    /// Each node's live in-flight count when the decision was made (what the policy saw in
    /// place of the snapshot's).
    #[serde(default)]
    pub in_flight: Vec<(String, u32)>,
    pub decided: RecordedDecision,
    pub outcome: Outcome,
}

/// A record being filled in while its request runs.
#[derive(Debug, Clone)]
pub struct Draft {
    pub record: DecisionRecord,
    pub started: std::time::Instant,
}

impl Draft {
    /// The record with its outcome: `status`, whether the client went away, and the time now.
    pub fn finish(mut self, status: u16, cancelled: bool) -> DecisionRecord {
        let outcome = &mut self.record.outcome;
        outcome.status = if cancelled { 499 } else { status };
        outcome.cancelled = cancelled;
        outcome.duration_ms = self.started.elapsed().as_millis().min(u128::from(u32::MAX)) as u32;
        self.record
    }
}
