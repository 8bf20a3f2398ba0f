//! A request's candidates across the sandbox's boundary: as the 0.2.0 and 0.1.0 contracts
//! take them, and a decision's target indices resolved back against them.

use switchyard_protocol::{Decision, Reject, Route};

use super::bindings::{v2, wit};
use super::prepared::{Candidate, PreparedSnapshot};

/// The decision with each target index resolved against the `candidates` of the call;
/// `Err` names an index that is not one of them, or a candidate that is not healthy (a
/// candidate serves the requested model by construction, and in a chain is one of the
/// previous stage's choices: what is left to check needs no name lookups).
pub(crate) fn decision_from_wit(
    decision: wit::Decision,
    candidates: &[Candidate],
    prepared: &PreparedSnapshot,
) -> Result<Decision, String> {
    let nodes = prepared.nodes();
    Ok(match decision {
        wit::Decision::Route(route) => Decision::Route(Route {
            targets: route
                .targets
                .iter()
                .enumerate()
                .map(|(position, &index)| {
                    let candidate = candidates.get(index as usize).ok_or_else(|| {
                        format!(
                            "target #{} is not one of the request's {} candidates (a node that does not serve the model, or none at all)",
                            position + 1,
                            candidates.len()
                        )
                    })?;
                    let node = &nodes[candidate.node as usize];
                    if !node.healthy {
                        return Err(format!("node '{}' is not healthy", node.name));
                    }
                    Ok(prepared.target(candidate))
                })
                .collect::<Result<_, String>>()?,
            reason: route.reason,
            wait_for_first: route.wait_for_first,
        }),
        wit::Decision::Reject(reject) => Decision::Reject(Reject {
            status: reject.status,
            message: reject.message,
        }),
    })
}

/// 0.2.0 candidates: a list of records.
pub(crate) fn candidates_to_v2(candidates: &[Candidate]) -> Vec<v2::wit::Candidate> {
    candidates
        .iter()
        .map(|c| v2::wit::Candidate {
            node: c.node,
            model: c.model,
            load: v2::wit::Load {
                in_flight: c.in_flight,
                queued: c.queued,
            },
        })
        .collect()
}
