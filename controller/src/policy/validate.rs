//! Checks a policy's decision against the snapshot it was given before anyone acts on it:
//! every target must be a known, healthy node that serves the named model as a variant of
//! the requested one (and, in a chain, one the previous stage chose), and the output must
//! stay within sane sizes.

use switchyard_protocol::{ClusterSnapshot, Decision, Target};

use super::fault::PolicyFault;

pub const MAX_TARGETS: usize = 64;
pub const MAX_TEXT_BYTES: usize = 1024;

/// The checks that need no snapshot: a reject's status and message, a route's target count
/// and reason. A decision in candidate indices (contract 0.2.0 and later) needs only these: its
/// targets were resolved against the request's candidates, which serve the requested model
/// (and, in a chain, are the previous stage's choices), and checked healthy there.
pub fn check_shape(decision: &Decision) -> Result<(), PolicyFault> {
    let invalid = |msg: String| Err(PolicyFault::InvalidDecision(msg));
    match decision {
        Decision::Reject(reject) => {
            if !(400..=599).contains(&reject.status) {
                return invalid(format!("reject status {} is not a 4xx or 5xx", reject.status));
            }
            if reject.message.len() > MAX_TEXT_BYTES {
                return invalid(format!(
                    "reject message is {} bytes, limit {MAX_TEXT_BYTES}",
                    reject.message.len()
                ));
            }
            Ok(())
        }
        Decision::Route(route) => {
            if route.targets.is_empty() {
                return invalid("route has no targets".to_owned());
            }
            if route.targets.len() > MAX_TARGETS {
                return invalid(format!(
                    "route has {} targets, limit {MAX_TARGETS}",
                    route.targets.len()
                ));
            }
            if route.reason.len() > MAX_TEXT_BYTES {
                return invalid(format!(
                    "reason is {} bytes, limit {MAX_TEXT_BYTES}",
                    route.reason.len()
                ));
            }
            Ok(())
        }
    }
}

/// Every check, for a decision that names its targets (contract 0.1.0, and decisions read
/// back from elsewhere): [`check_shape`], and each target a known, healthy node serving a
/// variant of `logical` (among `allowed` in a chain).
pub fn check_decision(
    decision: &Decision,
    snapshot: &ClusterSnapshot,
    logical: &str,
    allowed: Option<&[Target]>,
) -> Result<(), PolicyFault> {
    check_shape(decision)?;
    let invalid = |msg: String| Err(PolicyFault::InvalidDecision(msg));
    match decision {
        Decision::Reject(_) => Ok(()),
        Decision::Route(route) => {
            for target in &route.targets {
                let Some(node) = snapshot.node(&target.node) else {
                    return invalid(format!("unknown node '{}'", truncate(&target.node)));
                };
                if !node.healthy {
                    return invalid(format!("node '{}' is not healthy", node.name));
                }
                if !node.serves_local(&target.model) {
                    return invalid(format!(
                        "node '{}' does not serve model '{}'",
                        node.name,
                        truncate(&target.model)
                    ));
                }
                // Bound to the request: a policy may pick the node and its variant of the
                // requested model, never another model (an API key may be limited to it).
                if !node
                    .models
                    .iter()
                    .any(|m| m.logical == logical && *m.local == *target.model)
                {
                    return invalid(format!(
                        "model '{}' on node '{}' is not a variant of the requested '{}'",
                        truncate(&target.model),
                        node.name,
                        truncate(logical)
                    ));
                }
                // A later stage of a chain chooses among the earlier stage's choices only.
                if let Some(allowed) = allowed
                    && !allowed.iter().any(|a| a.node == target.node && a.model == target.model)
                {
                    return invalid(format!(
                        "node '{}' was not among the previous stage's choices",
                        node.name
                    ));
                }
            }
            Ok(())
        }
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use switchyard_protocol::Route;

    use super::*;

    fn route(node: &str, model: &str) -> Decision {
        Decision::Route(Route {
            targets: vec![Target {
                node: node.into(),
                model: model.into(),
            }],
            reason: "test".to_owned(),
            wait_for_first: false,
        })
    }

    #[test]
    fn a_target_must_be_a_variant_of_the_requested_model_and_among_the_previous_stages_choices() {
        let cluster = crate::seed_cluster::seed_cluster();
        let qwen_on_ryzen = route("ryzen", "Qwen/Qwen2.5-Coder-7B-Instruct");
        assert_eq!(
            check_decision(&qwen_on_ryzen, &cluster, "qwen25-coder-7b", None),
            Ok(())
        );
        let bigger = route("ryzen", "llama2-70b-q4");
        let refused = check_decision(&bigger, &cluster, "qwen25-coder-7b", None);
        assert!(
            matches!(&refused, Err(PolicyFault::InvalidDecision(m)) if m.contains("not a variant of the requested")),
            "{refused:?}"
        );
        let earlier = [Target {
            node: "xeon".into(),
            model: "qwen2.5-coder:7b-instruct-q4_K_M".into(),
        }];
        let refused = check_decision(&qwen_on_ryzen, &cluster, "qwen25-coder-7b", Some(&earlier));
        assert!(
            matches!(&refused, Err(PolicyFault::InvalidDecision(m)) if m.contains("previous stage")),
            "{refused:?}"
        );
        let kept = route("xeon", "qwen2.5-coder:7b-instruct-q4_K_M");
        assert_eq!(
            check_decision(&kept, &cluster, "qwen25-coder-7b", Some(&earlier)),
            Ok(())
        );
    }
}
