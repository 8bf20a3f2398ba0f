//! `switchyard policy test`: run a policy against fixture files without a cluster, in the
//! spirit of `opa test`. A fixture file names a snapshot and lists cases; each case is a
//! request, optional changes to the snapshot, and the expected decision.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchyard_protocol::{ClusterSnapshot, Decision, RequestInfo};

use crate::policy::Policies;

/// A fixture file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureFile {
    /// Snapshot file (`[[nodes]]`), relative to the fixture file.
    pub snapshot: PathBuf,
    #[serde(rename = "case")]
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub request: RequestInfo,
    /// Changes applied to the snapshot for this case only.
    #[serde(default)]
    pub patch: Vec<NodePatch>,
    pub expect: Expect,
}

/// Changes to one node of the snapshot.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodePatch {
    pub node: String,
    /// Add `node` as a copy of this snapshot node (a machine the policy's rules don't name).
    pub copy_of: Option<String>,
    pub healthy: Option<bool>,
    pub in_flight: Option<u32>,
    pub queued: Option<u32>,
    pub on_battery: Option<bool>,
    pub thermal_throttled: Option<bool>,
    /// Sets every GPU's temperature.
    pub gpu_temp_c: Option<f32>,
    /// Sets every model variant's `loaded` (resident or cold).
    pub loaded: Option<bool>,
    /// Sets every model variant's load-time estimate, in milliseconds.
    pub load_ms: Option<u32>,
    pub tokens_per_sec: Option<f32>,
}

/// What the decision must look like; every field given is checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The first target's node.
    pub node: Option<String>,
    /// The first target's node-local model.
    pub model: Option<String>,
    /// Every target's node, in order.
    pub targets: Option<Vec<String>>,
    /// A rejection with this status (without it, any rejection fails the case).
    pub reject: Option<u16>,
    pub reason_contains: Option<String>,
    /// Nodes none of the targets may be (`switchyard policy check` writes the ones that
    /// could not serve the request).
    #[serde(default)]
    pub avoid: Vec<String>,
    /// Whether the request waits for its first target when that one is full.
    pub waits: Option<bool>,
    /// Whether the fallback decided (a policy fault). Default: it must not have.
    #[serde(default)]
    pub fallback: bool,
}

#[derive(Debug)]
pub struct CaseResult {
    pub file: String,
    pub name: String,
    /// `None`: passed; otherwise what differed.
    pub failure: Option<String>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub results: Vec<CaseResult>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.failure.is_none()).count()
    }
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid fixture: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: patch names node {node:?}, which the snapshot does not have")]
    UnknownNode { path: String, node: String },
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, FixtureError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| FixtureError::Read {
        path: shown.clone(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| FixtureError::Parse {
        path: shown,
        message: e.to_string(),
    })
}

/// Load `policy` into a fresh engine and run every case of every fixture file.
pub fn run(policy: &Path, fixtures: &[PathBuf]) -> Result<Report, FixtureError> {
    let policies = Policies::new(Default::default()).map_err(|e| FixtureError::Parse {
        path: policy.display().to_string(),
        message: format!("sandbox failed to start: {e:#}"),
    })?;
    let loaded = policies.registry.load_file(policy, &ClusterSnapshot::default())?;
    policies.registry.activate(&loaded.id)?;
    let mut report = Report::default();
    for fixture_path in fixtures {
        let file: FixtureFile = read_toml(fixture_path)?;
        let base = fixture_path.parent().unwrap_or(Path::new("."));
        let snapshot: ClusterSnapshot = read_toml(&base.join(&file.snapshot))?;
        for case in file.cases {
            let mut snapshot = snapshot.clone();
            for patch in &case.patch {
                apply(&mut snapshot, patch).map_err(|node| FixtureError::UnknownNode {
                    path: fixture_path.display().to_string(),
                    node,
                })?;
            }
            let routed = policies.engine.decide_snapshot(&case.request, &snapshot);
            let failure = check(
                &case.expect,
                &routed.decision,
                routed.fault.is_some(),
                routed.fault.as_ref(),
            );
            report.results.push(CaseResult {
                file: fixture_path.display().to_string(),
                name: case.name,
                failure,
            });
        }
    }
    Ok(report)
}

fn apply(snapshot: &mut ClusterSnapshot, patch: &NodePatch) -> Result<(), String> {
    if let Some(source) = &patch.copy_of {
        let mut copy = snapshot
            .nodes
            .iter()
            .find(|n| &n.name == source)
            .cloned()
            .ok_or_else(|| source.clone())?;
        copy.name = patch.node.clone();
        snapshot.nodes.push(copy);
    }
    let node = snapshot
        .nodes
        .iter_mut()
        .find(|n| n.name == patch.node)
        .ok_or_else(|| patch.node.clone())?;
    if let Some(v) = patch.healthy {
        node.healthy = v;
    }
    if let Some(v) = patch.in_flight {
        node.in_flight = v;
    }
    if let Some(v) = patch.queued {
        node.queued = v;
    }
    if let Some(v) = patch.on_battery {
        node.on_battery = Some(v);
    }
    if let Some(v) = patch.thermal_throttled {
        node.thermal_throttled = v;
    }
    if let Some(v) = patch.tokens_per_sec {
        node.tokens_per_sec = Some(v);
    }
    if let Some(v) = patch.gpu_temp_c {
        node.gpus.iter_mut().for_each(|g| g.temp_c = Some(v));
    }
    if let Some(v) = patch.loaded {
        node.models.iter_mut().for_each(|m| m.loaded = v);
    }
    if let Some(v) = patch.load_ms {
        node.models.iter_mut().for_each(|m| m.load_ms = Some(v));
    }
    Ok(())
}

fn check(
    expect: &Expect,
    decision: &Decision,
    fell_back: bool,
    fault: Option<&crate::policy::PolicyFault>,
) -> Option<String> {
    let mut problems = Vec::new();
    if fell_back != expect.fallback {
        match fault {
            Some(fault) => problems.push(format!("the policy faulted ({fault}) and the fallback decided")),
            None => problems.push("expected a policy fault and the fallback, but the policy decided".to_owned()),
        }
    }
    match decision {
        Decision::Reject(reject) => {
            if expect.reject != Some(reject.status) {
                problems.push(format!("rejected with {} ({})", reject.status, reject.message));
            }
        }
        Decision::Route(route) => {
            if let Some(waits) = expect.waits
                && waits != route.wait_for_first
            {
                problems.push(if waits {
                    "it does not wait for its first target".to_owned()
                } else {
                    "it waits for its first target".to_owned()
                });
            }
            for target in &route.targets {
                if expect.avoid.iter().any(|a| **a == *target.node) {
                    problems.push(format!("routed to {}, which it must avoid", target.node));
                }
            }
            let first = route.targets.first();
            let first_node = first.map_or("no node", |t| &*t.node);
            if let Some(status) = expect.reject {
                problems.push(format!("expected reject {status}, but it routed to {first_node}"));
            }
            if let Some(node) = &expect.node
                && first.map(|t| &*t.node) != Some(node.as_str())
            {
                problems.push(format!("first node is {first_node}, expected {node}"));
            }
            if let Some(model) = &expect.model
                && first.map(|t| &*t.model) != Some(model.as_str())
            {
                problems.push(format!(
                    "first model is {}, expected {model}",
                    first.map_or("none", |t| &*t.model)
                ));
            }
            if let Some(targets) = &expect.targets {
                let actual: Vec<&str> = route.targets.iter().map(|t| &*t.node).collect();
                if actual.iter().copied().ne(targets.iter().map(|s| s.as_str())) {
                    problems.push(format!(
                        "targets are [{}], expected [{}]",
                        actual.join(", "),
                        targets.join(", ")
                    ));
                }
            }
            if let Some(needle) = &expect.reason_contains
                && !route.reason.contains(needle.as_str())
            {
                problems.push(format!("reason \"{}\" does not contain \"{needle}\"", route.reason));
            }
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

#[cfg(test)]
mod generated_tests {
    use super::*;

    #[test]
    fn mutated_fixture_and_snapshot_files_parse_or_are_refused_never_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shipped = [
            include_str!("../../policies/fixtures/seed-rules.cases.toml"),
            include_str!("../../policies/fixtures/seed-cluster.toml"),
        ];
        let mut rng = crate::generated::Rng::new(0x00f1_7e55);
        for case in 0..1000 {
            let path = dir.path().join("mutated.toml");
            std::fs::write(&path, rng.mutate(shipped[case % 2])).expect("write");
            let parsed = if case % 2 == 0 {
                read_toml::<FixtureFile>(&path).map(|_| ())
            } else {
                read_toml::<ClusterSnapshot>(&path).map(|_| ())
            };
            if let Err(error) = parsed {
                assert!(error.to_string().contains("mutated.toml"), "case {case}: {error}");
            }
        }
    }
}
