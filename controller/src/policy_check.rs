//! `switchyard policy check POLICY`: drive a policy with generated clusters and requests
//! (seeded: the same seed checks the same cases) and check what every policy must do. It
//! never routes to a node that cannot serve the request (unhealthy, without the model,
//! `max_tokens` above its limit, prompt and `max_tokens` beyond the context); it answers
//! whenever some node could serve; it never faults (deadline, memory, trap, an invalid
//! decision). A failure is shrunk (nodes removed while it still fails) and written as a
//! fixture that `switchyard policy test` runs, and fails on, until the policy is fixed.

use std::path::{Path, PathBuf};

use switchyard_protocol::{ClusterSnapshot, Decision, GpuSample, ModelVariant, NodeSnapshot, RequestInfo};

use crate::policy::{Policies, PreparedSnapshot, Rehearsal};
use crate::rng::Rng;

/// How many cases, from which seed, and where failures go.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub cases: u32,
    pub seed: u64,
    /// At most this many nodes per generated cluster.
    pub max_nodes: u32,
    /// Where failing cases are written as fixtures.
    pub out: PathBuf,
    /// The policy may refuse work some node could serve (by design: seed-rules keeps batch
    /// work off the laptop); every other property still holds.
    pub allow_reject: bool,
}

/// One property a case broke, shrunk, and the fixture written for it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub case: u32,
    pub property: String,
    pub nodes: usize,
    pub fixture: PathBuf,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub policy: String,
    pub cases: u32,
    pub violations: Vec<Violation>,
    /// Cases whose policy call faulted once and then answered well twice on the same input:
    /// timing on a loaded machine (a deadline), not the rule. Reported, not counted.
    pub transient: Vec<String>,
}

const MODELS: [&str; 3] = ["m-a", "m-b", "m-c"];
const NAMES: [&str; 12] = [
    "m4", "ryzen", "xeon", "n3", "n4", "n5", "n6", "n7", "n8", "n9", "n10", "n11",
];
const TASKS: [Option<&str>; 6] = [
    None,
    Some("development"),
    Some("production"),
    Some("batch"),
    Some("testing"),
    Some("preprocessing"),
];

/// A generated cluster of `1..=max_nodes` nodes, each serving some of [`MODELS`].
pub fn cluster(rng: &mut Rng, max_nodes: u32) -> ClusterSnapshot {
    let count = 1 + rng.below(u64::from(max_nodes.clamp(1, NAMES.len() as u32))) as usize;
    let nodes = (0..count)
        .map(|i| {
            let max_concurrency = 1 + rng.below(4) as u32;
            let mut models: Vec<ModelVariant> = Vec::new();
            for model in MODELS {
                if !rng.chance(60) {
                    continue;
                }
                let loaded = rng.chance(70);
                let measured = rng.chance(70);
                models.push(ModelVariant {
                    logical: model.to_owned(),
                    local: format!("{model}-{}", NAMES[i]),
                    quantization: None,
                    context_length: *rng.pick(&[256, 2048, 8192, 32768]),
                    loaded,
                    load_ms: (!loaded && measured).then(|| rng.below(60_000) as u32),
                });
            }
            if models.is_empty() {
                models.push(ModelVariant {
                    logical: MODELS[0].to_owned(),
                    local: format!("{}-{}", MODELS[0], NAMES[i]),
                    quantization: None,
                    context_length: 8192,
                    loaded: true,
                    load_ms: None,
                });
            }
            NodeSnapshot {
                name: NAMES[i].to_owned(),
                labels: vec![(
                    "role".to_owned(),
                    (*rng.pick(&["development", "production", "batch"])).to_owned(),
                )],
                runtime: switchyard_protocol::RuntimeKind::Simulated,
                healthy: rng.chance(75),
                in_flight: rng.below(u64::from(max_concurrency) + 2) as u32,
                queued: rng.below(3) as u32,
                max_concurrency,
                max_tokens: *rng.pick(&[512, 2048, 4096, 8192]),
                cpu_util_pct: rng.below(100) as f32,
                mem_used_mb: rng.below(64_000),
                mem_total_mb: 64_000,
                gpus: (0..rng.below(3))
                    .map(|g| GpuSample {
                        name: format!("gpu{g}"),
                        util_pct: rng.below(100) as f32,
                        mem_used_mb: rng.below(24_000),
                        mem_total_mb: 24_000,
                        temp_c: Some(40.0 + rng.below(50) as f32),
                        power_w: Some(rng.below(400) as f32),
                        throttled: rng.chance(10),
                    })
                    .collect(),
                on_battery: *rng.pick(&[None, Some(false), Some(true)]),
                thermal_throttled: rng.chance(10),
                tokens_per_sec: rng.chance(80).then(|| 5.0 + rng.below(60) as f32),
                ttft_ms: rng.chance(80).then(|| 20.0 + rng.below(2000) as f32),
                prefill_tokens_per_sec: rng.chance(70).then(|| 100.0 + rng.below(8000) as f32),
                models,
                last_seen_ms: rng.below(3000),
            }
        })
        .collect();
    ClusterSnapshot { nodes }
}

/// A generated request for one of [`MODELS`] (now and then one no node serves).
pub fn request(rng: &mut Rng, case: u32) -> RequestInfo {
    let model = if rng.chance(5) {
        "unknown-model"
    } else {
        *rng.pick(&MODELS)
    };
    let mut req = RequestInfo::for_model(model.to_owned());
    req.id = format!("check-{case}");
    req.task = rng.pick(&TASKS).map(str::to_owned);
    req.priority = rng.below(10) as u8;
    req.prompt_tokens = rng.below(3000) as u32;
    req.max_tokens = *rng.pick(&[None, Some(16), Some(256), Some(1024), Some(3000), Some(9000)]);
    req.stream = rng.chance(50);
    req
}

/// Why `node` cannot serve `req`, or `None` when it can.
fn cannot_serve(node: &NodeSnapshot, req: &RequestInfo) -> Option<String> {
    if !node.healthy {
        return Some("unhealthy".to_owned());
    }
    let Some(variant) = node.variant(&req.model) else {
        return Some("does not serve the model".to_owned());
    };
    let max = req.max_tokens.unwrap_or(0);
    if max > node.max_tokens {
        return Some(format!("max_tokens {max} above its {}", node.max_tokens));
    }
    if req.prompt_tokens.saturating_add(max) > variant.context_length {
        return Some(format!("context {} too small", variant.context_length));
    }
    None
}

/// How a fault reads among the broken properties.
const FAULTED: &str = "the policy faulted";

/// The property `req` on `snapshot` breaks under the active policy, if any.
fn broken(
    rehearsal: &Rehearsal,
    policy: &str,
    snapshot: &ClusterSnapshot,
    req: &RequestInfo,
    allow_reject: bool,
) -> Option<String> {
    let prepared = PreparedSnapshot::from(snapshot.clone());
    let routed = match rehearsal.explain_with(policy, req, &prepared) {
        Ok(routed) => routed,
        Err(e) => return Some(format!("could not be asked: {e}")),
    };
    if let Some(fault) = routed.fault {
        return Some(format!("{FAULTED}: {fault}"));
    }
    match routed.decision {
        Decision::Route(route) => route.targets.iter().find_map(|target| {
            let node = snapshot.node(&target.node)?;
            cannot_serve(node, req).map(|why| format!("routed to {}, which cannot serve it ({why})", target.node))
        }),
        Decision::Reject(_) if allow_reject => None,
        Decision::Reject(reject) => snapshot
            .nodes
            .iter()
            .find(|n| cannot_serve(n, req).is_none())
            .map(|n| format!("rejected ({}) although {} could serve it", reject.status, n.name)),
    }
}

/// The smallest cluster found (nodes removed one at a time) that still breaks a property.
fn shrink(
    rehearsal: &Rehearsal,
    policy: &str,
    snapshot: &ClusterSnapshot,
    req: &RequestInfo,
    allow_reject: bool,
) -> ClusterSnapshot {
    let mut current = snapshot.clone();
    loop {
        let smaller = (0..current.nodes.len()).find_map(|i| {
            let mut candidate = current.clone();
            candidate.nodes.remove(i);
            (!candidate.nodes.is_empty() && broken(rehearsal, policy, &candidate, req, allow_reject).is_some())
                .then_some(candidate)
        });
        match smaller {
            Some(smaller) => current = smaller,
            None => return current,
        }
    }
}

/// Write `snapshot` and a case for `req` that `switchyard policy test` fails on while the
/// property is broken: none of the nodes that cannot serve it may be a target, the policy
/// must decide (no fault), and it must reject only when no node can serve.
fn write_fixture(
    out: &Path,
    case: u32,
    property: &str,
    seed: u64,
    snapshot: &ClusterSnapshot,
    req: &RequestInfo,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    let snapshot_file = format!("check-{case}.snapshot.toml");
    std::fs::write(
        out.join(&snapshot_file),
        toml::to_string(snapshot).map_err(std::io::Error::other)?,
    )?;
    let avoid: Vec<toml::Value> = snapshot
        .nodes
        .iter()
        .filter(|n| cannot_serve(n, req).is_some())
        .map(|n| toml::Value::String(n.name.clone()))
        .collect();
    let mut expect = toml::Table::new();
    expect.insert("avoid".into(), toml::Value::Array(avoid));
    // Where no node can serve it, a correct policy rejects: 404 if none serves the model.
    if snapshot.nodes.iter().all(|n| n.variant(&req.model).is_none()) {
        expect.insert("reject".into(), toml::Value::Integer(404));
    } else if snapshot.nodes.iter().all(|n| cannot_serve(n, req).is_some()) {
        expect.insert("reject".into(), toml::Value::Integer(503));
    }
    let mut entry = toml::Table::new();
    entry.insert(
        "name".into(),
        toml::Value::String(format!("check case {case}: {property}")),
    );
    entry.insert(
        "request".into(),
        toml::Value::try_from(req).map_err(std::io::Error::other)?,
    );
    entry.insert("expect".into(), toml::Value::Table(expect));
    let mut file = toml::Table::new();
    file.insert("snapshot".into(), toml::Value::String(snapshot_file));
    file.insert("case".into(), toml::Value::Array(vec![toml::Value::Table(entry)]));
    let path = out.join(format!("check-{case}.cases.toml"));
    let text = format!(
        "# Found by `switchyard policy check --seed {seed}` (case {case}): {property}\n{}",
        toml::to_string(&file).map_err(std::io::Error::other)?
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Check the policy file at `policy` with `options`.
pub fn check(policy: &Path, options: &CheckOptions) -> anyhow::Result<CheckReport> {
    let policies = Policies::new(Default::default())?;
    let loaded = policies.registry.load_file(policy, &ClusterSnapshot::default())?;
    let id = loaded.id.to_string();
    let mut report = CheckReport {
        policy: id.clone(),
        ..Default::default()
    };
    let mut rng = Rng::new(options.seed);
    for case in 0..options.cases {
        let snapshot = cluster(&mut rng, options.max_nodes);
        let req = request(&mut rng, case);
        report.cases += 1;
        let allow = options.allow_reject;
        let Some(first) = broken(&policies.rehearsal, &id, &snapshot, &req, allow) else {
            continue;
        };
        if first.starts_with(FAULTED)
            && (0..2).all(|_| broken(&policies.rehearsal, &id, &snapshot, &req, allow).is_none())
        {
            report
                .transient
                .push(format!("case {case}: {first}; then answered well twice"));
            continue;
        }
        let shrunk = shrink(&policies.rehearsal, &id, &snapshot, &req, allow);
        let property = broken(&policies.rehearsal, &id, &shrunk, &req, allow).unwrap_or(first);
        let fixture = write_fixture(&options.out, case, &property, options.seed, &shrunk, &req)?;
        report.violations.push(Violation {
            case,
            property,
            nodes: shrunk.nodes.len(),
            fixture,
        });
        if report.violations.len() >= 5 {
            break;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_generates_the_same_cases() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(cluster(&mut a, 12), cluster(&mut b, 12));
        assert_eq!(request(&mut a, 1), request(&mut b, 1));
    }

    #[test]
    fn a_node_that_cannot_serve_says_why() {
        let mut rng = Rng::new(3);
        let mut node = cluster(&mut rng, 1).nodes.remove(0);
        node.healthy = true;
        node.max_tokens = 512;
        let mut req = RequestInfo::for_model(node.models[0].logical.clone());
        req.max_tokens = Some(1024);
        assert_eq!(
            cannot_serve(&node, &req).as_deref(),
            Some("max_tokens 1024 above its 512")
        );
        node.healthy = false;
        assert_eq!(cannot_serve(&node, &req).as_deref(), Some("unhealthy"));
    }
}
