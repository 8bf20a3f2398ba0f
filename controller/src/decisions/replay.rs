//! Replay: recorded requests, each against the snapshot it was decided on (with the live
//! in-flight counts its policy saw), through a candidate policy in a local engine. The same
//! records and policy give the same report on every run. A decision changed when its first
//! target's node differs from the recorded one (or one refused where the other routed).

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use switchyard_protocol::{ClusterSnapshot, Decision};

use super::record::DecisionRecord;
use super::store::ExportLine;
use crate::policy::{LiveLoad, Policies, PreparedSnapshot, Routed};

/// A node that failed a request (5xx) this close in time counts as failed for a replayed
/// decision that would have gone to it.
const FAILED_NEAR_MS: u64 = 5_000;

/// What a replay found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplayReport {
    /// `name@hash` of the replayed policy.
    pub policy: String,
    pub records: u64,
    pub same: u64,
    pub changed: u64,
    /// The replayed policy faulted (the fallback decided).
    pub faults: u64,
    /// Records skipped because their snapshot was missing.
    pub skipped: u64,
    /// "recorded -> replayed" first node (`reject 503` for a refusal): how many.
    pub moves: BTreeMap<String, u64>,
    /// Changed decisions by the request's task (`-` without one).
    pub changed_by_task: BTreeMap<String, u64>,
    /// Changed decisions by the replayed reason's first words.
    pub changed_by_reason: BTreeMap<String, u64>,
    /// Replayed decisions whose node failed a request within 5 s of that record.
    pub onto_failed_nodes: u64,
    /// Up to ten of those: record id and node.
    pub onto_failed_examples: Vec<String>,
}

/// The live in-flight counts of the record being replayed.
#[derive(Debug, Default)]
struct Recorded {
    in_flight: Mutex<HashMap<String, u32>>,
}

impl LiveLoad for Recorded {
    fn in_flight(&self, node: &str) -> u32 {
        let loads = self.in_flight.lock();
        loads.get(node).copied().unwrap_or(0)
    }
}

/// A reason's kind: its words up to the first `:`, `(` or digit, at most 48 characters.
fn reason_kind(decision: &Decision) -> String {
    let reason = match decision {
        Decision::Route(route) => route.reason.as_str(),
        Decision::Reject(reject) => reject.message.as_str(),
    };
    let end = reason
        .find(|c: char| c == ':' || c == '(' || c == ';' || c.is_ascii_digit())
        .unwrap_or(reason.len());
    reason[..end].trim().chars().take(48).collect()
}

/// Replay `lines` (an export) through the policy in `policy_file`.
pub fn replay_lines(policy_file: &Path, lines: Vec<ExportLine>) -> anyhow::Result<ReplayReport> {
    let policies = Policies::new(Default::default())?;
    let loaded = policies
        .registry
        .load_file(policy_file, &ClusterSnapshot::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    policies
        .registry
        .activate(&loaded.id)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (snapshots, records) = split_export(lines);
    let failures = FailureTimes::of(&records);
    let live = Arc::new(Recorded::default());
    let mut prepared: HashMap<&str, Arc<PreparedSnapshot>> = HashMap::new();
    let mut report = ReplayReport {
        policy: loaded.id.to_string(),
        ..ReplayReport::default()
    };
    for record in &records {
        let Some(snapshot) = snapshots.get(&record.snapshot) else {
            report.skipped += 1;
            continue;
        };
        let view = prepared
            .entry(record.snapshot.as_str())
            .or_insert_with(|| {
                let live: Arc<dyn LiveLoad> = live.clone();
                Arc::new(PreparedSnapshot::from(snapshot.clone()).with_live_load(Some(live)))
            })
            .clone();
        {
            let mut loads = live.in_flight.lock();
            loads.clear();
            loads.extend(record.in_flight.iter().cloned());
        }
        let routed = policies.engine.decide_blocking(&record.request, &view);
        report.count(record, &routed, &failures);
    }
    Ok(report)
}

/// An export's snapshots by key, and its records in the order they were decided.
fn split_export(lines: Vec<ExportLine>) -> (HashMap<String, ClusterSnapshot>, Vec<DecisionRecord>) {
    let mut snapshots = HashMap::new();
    let mut records: Vec<DecisionRecord> = Vec::new();
    for line in lines {
        match line {
            ExportLine::Snapshot { key, snapshot } => {
                snapshots.insert(key, snapshot);
            }
            ExportLine::Record(record) => records.push(*record),
            ExportLine::Event(_) => {}
        }
    }
    records.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
    (snapshots, records)
}

/// When each node failed a request, for "would have gone to a node that then failed".
struct FailureTimes<'a>(BTreeMap<&'a str, Vec<u64>>);

impl<'a> FailureTimes<'a> {
    fn of(records: &'a [DecisionRecord]) -> FailureTimes<'a> {
        let mut failures: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for record in records {
            if let Some(node) = record.outcome.node.as_deref()
                && record.outcome.status >= 500
            {
                failures.entry(node).or_default().push(record.at_ms);
            }
        }
        FailureTimes(failures)
    }

    /// Whether `node` failed a request within `FAILED_NEAR_MS` of `at`.
    fn near(&self, node: &str, at: u64) -> bool {
        self.0.get(node).is_some_and(|times| {
            let i = times.partition_point(|&t| t + FAILED_NEAR_MS < at);
            times.get(i).is_some_and(|&t| t <= at + FAILED_NEAR_MS)
        })
    }
}

impl ReplayReport {
    /// Count one replayed decision against the recorded one.
    fn count(&mut self, record: &DecisionRecord, routed: &Routed, failures: &FailureTimes<'_>) {
        self.records += 1;
        if routed.fault.is_some() {
            self.faults += 1;
        }
        let was = record.decided.decision.destination();
        let now = routed.decision.destination();
        if let Decision::Route(_) = &routed.decision
            && failures.near(&now, record.at_ms)
        {
            self.onto_failed_nodes += 1;
            if self.onto_failed_examples.len() < 10 {
                self.onto_failed_examples.push(format!("{} -> {now}", record.id));
            }
        }
        if was == now {
            self.same += 1;
            return;
        }
        self.changed += 1;
        *self.moves.entry(format!("{was} -> {now}")).or_default() += 1;
        let task = record.request.task.clone().unwrap_or_else(|| "-".to_owned());
        *self.changed_by_task.entry(task).or_default() += 1;
        *self.changed_by_reason.entry(reason_kind(&routed.decision)).or_default() += 1;
    }
}

/// The report as an operator reads it.
pub fn format_report(report: &ReplayReport) -> String {
    let mut out = format!(
        "{}: {} record(s) replayed, {} same, {} changed ({:.1} %), {} fault(s)",
        report.policy,
        report.records,
        report.same,
        report.changed,
        if report.records == 0 {
            0.0
        } else {
            report.changed as f64 * 100.0 / report.records as f64
        },
        report.faults
    );
    if report.skipped > 0 {
        out.push_str(&format!(", {} skipped (snapshot missing)", report.skipped));
    }
    out.push('\n');
    let section = |out: &mut String, title: &str, rows: &BTreeMap<String, u64>| {
        if rows.is_empty() {
            return;
        }
        out.push_str(title);
        out.push('\n');
        let mut rows: Vec<_> = rows.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        for (what, count) in rows {
            out.push_str(&format!("  {count:>8}  {what}\n"));
        }
    };
    section(&mut out, "changed (recorded -> replayed first node):", &report.moves);
    section(&mut out, "changed by task:", &report.changed_by_task);
    section(&mut out, "changed by the replayed reason:", &report.changed_by_reason);
    if report.onto_failed_nodes > 0 {
        out.push_str(&format!(
            "{} decision(s) would have gone to a node that failed a request within 5 s (e.g. {})\n",
            report.onto_failed_nodes,
            report.onto_failed_examples.join(", ")
        ));
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decisions::{Outcome, RecordedDecision};
    use switchyard_protocol::{RequestInfo, Route, Target};

    fn repo(path: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
    }

    fn record(
        id: &str,
        at_ms: u64,
        model: &str,
        task: &str,
        recorded: Option<&str>,
        status: u16,
        in_flight: &[(&str, u32)],
    ) -> ExportLine {
        let mut request = RequestInfo::for_model(model);
        request.id = id.to_owned();
        request.task = Some(task.to_owned());
        request.max_tokens = Some(256);
        let decision = match recorded {
            Some(node) => Decision::Route(Route {
                targets: vec![Target {
                    node: node.into(),
                    model: "whatever".into(),
                }],
                reason: "recorded".to_owned(),
                wait_for_first: false,
            }),
            None => Decision::Reject(switchyard_protocol::Reject {
                status: 503,
                message: "recorded refusal".to_owned(),
            }),
        };
        ExportLine::Record(Box::new(DecisionRecord {
            id: id.to_owned(),
            at_ms,
            request,
            snapshot: "s1".to_owned(),
            in_flight: in_flight.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect(),
            decided: RecordedDecision {
                policy: "seed-rules@x".to_owned(),
                decision,
                fault: None,
                fallback: false,
                canary: false,
            },
            outcome: Outcome {
                node: recorded.map(str::to_owned),
                status,
                duration_ms: 100,
                ..Outcome::default()
            },
        }))
    }

    /// A hand-made record: four decisions seed-rules makes itself, one it would not make
    /// (batch work on the laptop), one refusal it would not make (development work with the
    /// m4 busy goes to the ryzen), and a failure of the xeon.
    fn hand_made() -> Vec<ExportLine> {
        let text = std::fs::read_to_string(repo("policies/fixtures/seed-cluster.toml")).expect("snapshot");
        let snapshot: ClusterSnapshot = toml::from_str(&text).expect("parses");
        vec![
            ExportLine::Snapshot {
                key: "s1".to_owned(),
                snapshot,
            },
            record("r1", 1000, "qwen25-coder-7b", "development", Some("m4"), 200, &[]),
            record("r2", 2000, "qwen25-coder-7b", "batch", Some("xeon"), 200, &[]),
            record("r3", 3000, "qwen25-coder-32b", "production", Some("ryzen"), 200, &[]),
            record("r4", 4000, "qwen25-coder-7b", "batch", Some("m4"), 200, &[]),
            record("r5", 5000, "qwen25-coder-7b", "development", None, 503, &[("m4", 1)]),
            record("r6", 20_000, "qwen25-coder-7b", "batch", Some("xeon"), 502, &[]),
        ]
    }

    #[test]
    fn a_hand_made_record_replays_with_exactly_the_expected_changes() {
        let report = replay_lines(&repo("policies/seed-rules.toml"), hand_made()).expect("replays");
        assert_eq!((report.records, report.same, report.changed), (6, 4, 2), "{report:#?}");
        assert_eq!(
            report.moves,
            BTreeMap::from([("m4 -> xeon".to_owned(), 1), ("reject 503 -> ryzen".to_owned(), 1)])
        );
        assert_eq!(
            report.changed_by_task,
            BTreeMap::from([("batch".to_owned(), 1), ("development".to_owned(), 1)])
        );
        // Only r6 goes to the xeon within 5 s of its failure.
        assert_eq!(report.onto_failed_nodes, 1, "{report:#?}");
        assert_eq!(report.faults, 0);
        // Deterministic: the same input gives the same report.
        let again = replay_lines(&repo("policies/seed-rules.toml"), hand_made()).expect("replays");
        assert_eq!(report, again);
        assert!(
            format_report(&report).contains("1  m4 -> xeon"),
            "{}",
            format_report(&report)
        );
    }

    #[test]
    fn a_record_whose_snapshot_is_missing_is_skipped_and_counted() {
        let mut lines = hand_made();
        lines.remove(0);
        let report = replay_lines(&repo("policies/seed-rules.toml"), lines).expect("replays");
        assert_eq!((report.records, report.skipped), (0, 6));
    }
}
