//! Checks a policy's decision against the snapshot it was given before anyone acts on it:
//! every target must be a known, healthy node that serves the named model, and the output
//! must stay within sane sizes.

use switchyard_protocol::{ClusterSnapshot, Decision};

use super::fault::PolicyFault;

pub const MAX_TARGETS: usize = 64;
pub const MAX_TEXT_BYTES: usize = 1024;

pub fn check_decision(decision: &Decision, snapshot: &ClusterSnapshot) -> Result<(), PolicyFault> {
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
            }
            Ok(())
        }
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}
