//! The built-in fallback: native Rust, no sandbox, cannot fail. When a policy faults, the
//! least-loaded healthy node that serves the model decides.

use switchyard_protocol::{ClusterSnapshot, Decision, NodeSnapshot, Reject, RequestInfo, Route, Target};

/// Route `req` to every healthy node serving its model that fits its token limits, least
/// loaded first (ties: faster, then by name); reject with 404/503 when there is none.
pub fn least_loaded(req: &RequestInfo, snapshot: &ClusterSnapshot, why: &str) -> Decision {
    let fits = |node: &NodeSnapshot| {
        node.healthy && node.variant(&req.model).is_some() && req.max_tokens.is_none_or(|max| max <= node.max_tokens)
    };
    let mut eligible: Vec<&NodeSnapshot> = snapshot.nodes.iter().filter(|n| fits(n)).collect();
    if eligible.is_empty() {
        let (status, message) = if snapshot.nodes.iter().any(|n| n.variant(&req.model).is_some()) {
            (
                503,
                format!("no healthy node can serve model '{}' right now", req.model),
            )
        } else {
            (404, format!("model '{}' is not served by any node", req.model))
        };
        return Decision::Reject(Reject { status, message });
    }
    eligible.sort_by(|a, b| {
        a.load_ratio()
            .total_cmp(&b.load_ratio())
            .then_with(|| {
                b.tokens_per_sec
                    .unwrap_or(0.0)
                    .total_cmp(&a.tokens_per_sec.unwrap_or(0.0))
            })
            .then_with(|| a.name.cmp(&b.name))
    });
    let targets = eligible
        .iter()
        .filter_map(|n| {
            n.variant(&req.model).map(|v| Target {
                node: n.name.as_str().into(),
                model: v.local.as_str().into(),
            })
        })
        .collect();
    Decision::Route(Route {
        targets,
        reason: format!("fallback least-loaded ({why})"),
        wait_for_first: false,
    })
}
