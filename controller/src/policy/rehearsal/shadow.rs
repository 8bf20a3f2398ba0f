//! Shadow: a candidate policy decides every live request beside the active one, off the
//! request path, and only its agreement is recorded. Requests are offered to a bounded
//! queue that one thread drains; a full queue drops shadow work (counted), it never delays a
//! request. The report says how often the candidate agreed, where it differs (by task,
//! model and node), and how it faulted.

use parking_lot::{Mutex, MutexGuard};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use serde::Serialize;
use switchyard_protocol::{Decision, RequestInfo};

use crate::policy::{LoadedPolicy, PreparedSnapshot};

/// Requests waiting for the shadow at most; beyond, shadow work is dropped.
pub const SHADOW_QUEUE: usize = 1024;
/// Differences listed in a report, most frequent first.
const LISTED: usize = 20;
/// Distinct differences counted one by one; any further kind is counted under
/// [`OTHER_DIFFERENCES`] (tasks and models are the clients' strings: unbounded in number).
const DISTINCT_DIFFERENCES: usize = 256;
const OTHER_DIFFERENCES: &str = "other differences (past the distinct ones counted)";

/// What the shadow found so far.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct ShadowReport {
    /// The candidate, `name@hash`.
    pub policy: String,
    pub since_unix_s: u64,
    /// Requests both policies decided.
    pub compared: u64,
    /// ... on which the candidate chose the active policy's node (or the same rejection).
    pub agreed: u64,
    /// Requests the shadow skipped because its queue was full.
    pub dropped: u64,
    /// The candidate's faults, by kind (the active policy served regardless).
    pub faults: BTreeMap<String, u64>,
    /// `task T, model M: active -> candidate`, with counts; the most frequent first.
    pub differences: Vec<(String, u64)>,
}

struct Job {
    req: RequestInfo,
    prepared: Arc<PreparedSnapshot>,
    active: Decision,
}

/// A running shadow.
pub struct Shadow {
    pub policy: Arc<LoadedPolicy>,
    queue: SyncSender<Job>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadow")
            .field("policy", &self.policy.id)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    report: ShadowReport,
    differences: BTreeMap<String, u64>,
}

impl State {
    fn count_difference(&mut self, key: String) {
        if let Some(count) = self.differences.get_mut(&key) {
            *count += 1;
        } else if self.differences.len() < DISTINCT_DIFFERENCES {
            self.differences.insert(key, 1);
        } else {
            *self.differences.entry(OTHER_DIFFERENCES.to_owned()).or_default() += 1;
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock()
}

impl Shadow {
    /// Start shadowing with `policy` (its instances are kept warm while it shadows).
    pub fn start(policy: Arc<LoadedPolicy>) -> std::io::Result<Arc<Self>> {
        policy.revive();
        let (queue, jobs) = sync_channel(SHADOW_QUEUE);
        let state = Arc::new(Mutex::new(State {
            report: ShadowReport {
                policy: policy.id.to_string(),
                since_unix_s: crate::clock::now_ms() / 1000,
                ..Default::default()
            },
            differences: BTreeMap::new(),
        }));
        let worker = (policy.clone(), state.clone());
        std::thread::Builder::new()
            .name("policy-shadow".into())
            .spawn(move || run(jobs, worker.0, worker.1))?;
        Ok(Arc::new(Self { policy, queue, state }))
    }

    /// Offer one live request: never blocks; a full queue counts a drop.
    pub fn offer(&self, req: &RequestInfo, prepared: Arc<PreparedSnapshot>, active: &Decision) {
        let job = Job {
            req: req.clone(),
            prepared,
            active: active.clone(),
        };
        if let Err(TrySendError::Full(_)) = self.queue.try_send(job) {
            lock(&self.state).report.dropped += 1;
        }
    }

    pub fn report(&self) -> ShadowReport {
        let state = lock(&self.state);
        let mut report = state.report.clone();
        let mut differences: Vec<(String, u64)> = state.differences.iter().map(|(k, v)| (k.clone(), *v)).collect();
        differences.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        differences.truncate(LISTED);
        report.differences = differences;
        report
    }
}

/// The shadow's thread: decide each offered request with the candidate and compare. It
/// ends when the shadow is dropped (its queue's sender goes away).
fn run(jobs: Receiver<Job>, policy: Arc<LoadedPolicy>, state: Arc<Mutex<State>>) {
    while let Ok(job) = jobs.recv() {
        let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| policy.decide(&job.req, &job.prepared)));
        let mut state = lock(&state);
        match decided {
            Ok(Ok(decision)) => {
                state.report.compared += 1;
                let (active, candidate) = (job.active.destination(), decision.destination());
                if active == candidate {
                    state.report.agreed += 1;
                } else {
                    let key = format!(
                        "task {}, model {}: {active} -> {candidate}",
                        job.req.task.as_deref().unwrap_or("none"),
                        job.req.model
                    );
                    state.count_difference(key);
                }
            }
            Ok(Err(fault)) => *state.report.faults.entry(fault.kind().as_str().to_owned()).or_default() += 1,
            Err(_) => *state.report.faults.entry("panic".to_owned()).or_default() += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_counted_for_a_bounded_number_of_distinct_kinds() {
        let mut state = State::default();
        for i in 0..10_000 {
            state.count_difference(format!("task t{i}, model m: a -> b"));
        }
        state.count_difference("task t0, model m: a -> b".to_owned());
        assert_eq!(state.differences.len(), DISTINCT_DIFFERENCES + 1);
        assert_eq!(
            state.differences["task t0, model m: a -> b"], 2,
            "a kind already counted goes on"
        );
        assert_eq!(
            state.differences[OTHER_DIFFERENCES],
            10_000 - DISTINCT_DIFFERENCES as u64,
            "the rest are counted together"
        );
        let total: u64 = state.differences.values().sum();
        assert_eq!(total, 10_001, "nothing is lost");
    }
}
