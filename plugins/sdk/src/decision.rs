//! What a policy answers, in names (`Target { node, model }`), and its translation into the
//! contract's answer in candidate indices: names are for policy authors, indices keep
//! strings off the boundary. A target that is not one of the candidates becomes an index
//! past the end, which the host refuses as an invalid decision (and the fallback decides).

use crate::bindings::switchyard::policy::types as wit;

/// Where to send a request: a node, and the model name local to that node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub node: String,
    pub model: String,
}

/// Send the request to `targets`, in order (the next is tried when one fails before the
/// first byte), for the short human-readable `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub targets: Vec<Target>,
    pub reason: String,
    /// Wait for a slot on the first target when it is full, rather than take a free one
    /// further down; the others are then only for when the first refuses before any work.
    pub wait_for_first: bool,
}

/// Refuse the request with an HTTP `status` and a `message` for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Route(Route),
    Reject(Reject),
}

impl Decision {
    /// The contract's form: each target as its index among the candidates the policy was
    /// shown, found by `position(node, model)`; one that is not a candidate becomes an index
    /// past the end.
    pub fn to_wit(self, position: impl Fn(&str, &str) -> Option<u32>) -> wit::Decision {
        match self {
            Decision::Route(route) => wit::Decision::Route(wit::Route {
                targets: route
                    .targets
                    .iter()
                    .map(|target| position(&target.node, &target.model).unwrap_or(u32::MAX))
                    .collect(),
                reason: route.reason,
                wait_for_first: route.wait_for_first,
            }),
            Decision::Reject(reject) => wit::Decision::Reject(wit::Reject {
                status: reject.status,
                message: reject.message,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::node;

    #[test]
    fn targets_become_candidate_indices_and_strangers_an_index_past_the_end() {
        let candidates = [node("a", &[("m", "m-a")], 1), node("b", &[("m", "m-b")], 1)];
        let decision = Decision::Route(Route {
            targets: vec![
                Target {
                    node: "b".into(),
                    model: "m-b".into(),
                },
                Target {
                    node: "a".into(),
                    model: "m-a".into(),
                },
                Target {
                    node: "b".into(),
                    model: "other".into(),
                },
            ],
            reason: "r".into(),
            wait_for_first: false,
        });
        match decision.to_wit(|node, model| crate::cluster::position(&candidates, node, model)) {
            wit::Decision::Route(route) => assert_eq!(route.targets, [1, 0, u32::MAX]),
            wit::Decision::Reject(_) => panic!("a route"),
        }
    }
}
