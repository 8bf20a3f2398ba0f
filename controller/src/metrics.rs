//! `/metrics` in the Prometheus text format: policy decisions, faults by kind, fallbacks,
//! reverts, and the node table's gauges.

use std::fmt::Write;
use std::sync::Arc;

use crate::front::admission::Admission;
use crate::front::metrics::FrontMetrics;
use crate::node_table::NodeTable;
use crate::policy::{PolicyRegistry, Rehearsal};
use crate::prometheus_text::{Label, header, scalar, series};

/// What `/metrics` reads, handed to it by the composition root (`app.rs`).
#[derive(Debug, Clone)]
pub struct Sources {
    pub registry: PolicyRegistry,
    pub rehearsal: Rehearsal,
    pub nodes: Arc<NodeTable>,
    pub front: Arc<FrontMetrics>,
    pub admission: Arc<Admission>,
    /// The API keys' shares (`max_concurrent`), live.
    pub keys: crate::front::key_share::KeyShares,
}

pub fn render(sources: &Sources) -> String {
    let mut out = String::new();
    policies(&mut out, &sources.registry.view());
    canary(&mut out, &sources.rehearsal);
    nodes(&mut out, &sources.nodes);
    sources.front.render(&mut out, sources.admission.queue_depth());
    keys(&mut out, &sources.keys);
    out
}

/// Each limited key's share: its limit, its requests in flight, its refusals.
fn keys(out: &mut String, shares: &crate::front::key_share::KeyShares) {
    use crate::front::key_share::KeyFigures;
    key_budgets(out, shares);
    let figures = shares.figures();
    if figures.is_empty() {
        return;
    }
    let metrics: [KeyMetric<KeyFigures>; 3] = [
        (
            "switchyard_key_max_concurrent",
            "gauge",
            "An API key's max_concurrent: its requests that may be in flight at once.",
            |f| u64::from(f.limit),
        ),
        (
            "switchyard_key_in_flight",
            "gauge",
            "An API key's requests in flight (queued or answering).",
            |f| u64::from(f.in_flight),
        ),
        (
            "switchyard_key_refused_total",
            "counter",
            "Requests refused (429) because their API key had max_concurrent in flight.",
            |f| f.refused,
        ),
    ];
    per_key(out, &metrics, &figures, |f| &f.key);
}

/// A per-key metric: its name, kind, help, and the figure of one key.
type KeyMetric<F> = (&'static str, &'static str, &'static str, fn(&F) -> u64);

/// One series per key of each of `metrics`: (name, kind, help, the figure).
fn per_key<F>(out: &mut String, metrics: &[KeyMetric<F>], figures: &[F], key: fn(&F) -> &String) {
    for (name, kind, help, value) in metrics {
        series(
            out,
            (name, kind, help),
            "key",
            figures.iter().map(|f| (key(f).as_str(), value(f))),
        );
    }
}

/// Each budgeted key's tokens a minute, tokens of the last minute, and refusals.
fn key_budgets(out: &mut String, shares: &crate::front::key_share::KeyShares) {
    let figures = shares.budget_figures();
    if figures.is_empty() {
        return;
    }
    let metrics: [KeyMetric<crate::front::key_share::BudgetFigures>; 3] = [
        (
            "switchyard_key_tokens_per_minute",
            "gauge",
            "An API key's token budget a minute.",
            |f| f.per_minute,
        ),
        (
            "switchyard_key_tokens_last_minute",
            "gauge",
            "Tokens an API key used (or holds reserved) over the last minute.",
            |f| f.last_minute,
        ),
        (
            "switchyard_key_over_budget_total",
            "counter",
            "Requests refused (429) because their API key's tokens_per_minute had no room.",
            |f| f.refused,
        ),
    ];
    per_key(out, &metrics, &figures, |f| &f.key);
}

/// Each policy version's decisions, faults and whether it is active; fallbacks and reverts.
fn policies(out: &mut String, view: &crate::policy::EngineView) {
    series(
        out,
        (
            "switchyard_policy_decisions_total",
            "counter",
            "Decisions a policy version made without a fault.",
        ),
        "policy",
        view.policies.iter().map(|p| (p.id.as_str(), p.stats.decisions)),
    );
    header(
        out,
        "switchyard_policy_faults_total",
        "counter",
        "Policy calls that faulted, by kind; the fallback decided.",
    );
    for p in &view.policies {
        for (kind, count) in &p.stats.faults {
            let _ = writeln!(
                out,
                "switchyard_policy_faults_total{{policy=\"{}\",kind=\"{kind}\"}} {count}",
                Label(&p.id)
            );
        }
    }
    series(
        out,
        (
            "switchyard_policy_active",
            "gauge",
            "Whether a policy version is the active one.",
        ),
        "policy",
        view.policies.iter().map(|p| (p.id.as_str(), u8::from(p.active))),
    );
    scalar(
        out,
        "switchyard_fallback_decisions_total",
        "counter",
        "Decisions made by the built-in fallback.",
        view.fallback_decisions,
    );
    scalar(
        out,
        "switchyard_policy_reverts_total",
        "counter",
        "Reverts to the last known good policy after repeated faults.",
        view.reverts,
    );
}

/// The canary's rollbacks and share.
fn canary(out: &mut String, rehearsal: &Rehearsal) {
    scalar(
        out,
        "switchyard_canary_rollbacks_total",
        "counter",
        "Canaries stopped automatically for doing worse than the active policy.",
        rehearsal.canary_rollbacks(),
    );
    scalar(
        out,
        "switchyard_canary_percent",
        "gauge",
        "The share of requests the running canary decides (0: none runs).",
        rehearsal.canary_percent(),
    );
}

/// Each node's health, load and energy.
fn nodes(out: &mut String, table: &NodeTable) {
    let published = table.published();
    let snapshot = published.snapshot();
    series(
        out,
        ("switchyard_node_healthy", "gauge", "Whether the node is in rotation."),
        "node",
        snapshot.nodes.iter().map(|n| (n.name.as_str(), u8::from(n.healthy))),
    );
    series(
        out,
        ("switchyard_node_in_flight", "gauge", "Requests running on the node."),
        "node",
        snapshot.nodes.iter().map(|n| (n.name.as_str(), n.in_flight)),
    );
    let energy: Vec<_> = snapshot
        .nodes
        .iter()
        .filter_map(|n| Some((n.name.as_str(), published.energy(&n.name)?)))
        .collect();
    header(
        out,
        "switchyard_node_energy_joules_total",
        "counter",
        "Energy the node used since its agent started; source says whether measured (nvml-counter, nvml-power) or assumed (declared, seed-figure).",
    );
    for (name, e) in &energy {
        let _ = writeln!(
            out,
            "switchyard_node_energy_joules_total{{node=\"{}\",source=\"{}\"}} {:.3}",
            Label(name),
            e.source.as_str(),
            e.joules_total
        );
    }
    header(
        out,
        "switchyard_node_joules_per_token",
        "gauge",
        "Recent energy per generated token on the node.",
    );
    for (name, e) in &energy {
        if let Some(per_token) = e.joules_per_token {
            let _ = writeln!(
                out,
                "switchyard_node_joules_per_token{{node=\"{}\",source=\"{}\"}} {per_token:.4}",
                Label(name),
                e.source.as_str()
            );
        }
    }
}
