//! The cluster as the host handed it over (`set-cluster`, once per snapshot version), and
//! per requested model the candidate list a policy sees: built once per version from the
//! host's candidate indices (each node with only its variant of the model), then reused
//! with only each candidate's live load written in. A request whose candidates differ from
//! the cached list (a later stage of a chain) gets its own list.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::bindings::switchyard::policy::types::Decision;
use crate::{Candidate, Node};

/// A candidate list built for some (node index, variant index) pairs.
type View = (Vec<(u32, u32)>, Vec<Node>);

#[derive(Default)]
struct Cluster {
    version: u64,
    nodes: Vec<Node>,
    /// Per logical model: the pairs the list was built for, and the list.
    views: HashMap<String, View>,
}

thread_local! {
    static CLUSTER: RefCell<Cluster> = RefCell::new(Cluster::default());
}

/// The host's cluster for snapshot `version`.
pub fn set(version: u64, nodes: Vec<Node>) {
    CLUSTER.with(|c| {
        *c.borrow_mut() = Cluster {
            version,
            nodes,
            views: HashMap::new(),
        }
    });
}

/// The snapshot version this instance holds.
pub fn version() -> u64 {
    CLUSTER.with(|c| c.borrow().version)
}

fn view(nodes: &[Node], candidates: &[Candidate]) -> Vec<Node> {
    candidates
        .iter()
        .filter_map(|c| {
            let node = nodes.get(c.node as usize)?;
            let variant = node.models.get(c.model as usize)?.clone();
            let mut view = Node {
                models: Vec::new(),
                ..node.clone()
            };
            view.models.push(variant);
            Some(view)
        })
        .collect()
}

/// Run `decide` on the candidates for `model`, each with only that variant and its live load.
pub fn with_candidates(model: &str, candidates: &[Candidate], decide: impl FnOnce(&[Node]) -> Decision) -> Decision {
    CLUSTER.with(|cell| {
        let mut cluster = cell.borrow_mut();
        let cluster = &mut *cluster;
        // Compared in place: the usual request (a first stage) allocates nothing here.
        let same = |cached: &[(u32, u32)]| cached.iter().copied().eq(candidates.iter().map(|c| (c.node, c.model)));
        let mut own;
        let list: &mut Vec<Node> = match cluster.views.get(model).map(|(cached, _)| same(cached)) {
            Some(true) => &mut cluster.views.get_mut(model).expect("checked").1,
            // The first list asked for since the version changed: the one to keep.
            None => {
                let key: Vec<(u32, u32)> = candidates.iter().map(|c| (c.node, c.model)).collect();
                let list = view(&cluster.nodes, candidates);
                &mut cluster.views.entry(model.to_owned()).or_insert((key, list)).1
            }
            // Another subset (a chain's later stage): its own list, the cached one stays.
            Some(false) => {
                own = view(&cluster.nodes, candidates);
                &mut own
            }
        };
        for (node, candidate) in list.iter_mut().zip(candidates) {
            node.in_flight = candidate.load.in_flight;
            node.queued = candidate.load.queued;
        }
        decide(list)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Load;
    use crate::fixture::node;

    fn candidate(node: u32, model: u32, in_flight: u32) -> Candidate {
        Candidate {
            node,
            model,
            load: Load { in_flight, queued: 0 },
        }
    }

    #[test]
    fn candidates_show_one_variant_each_with_their_live_load() {
        set(
            7,
            vec![
                node("a", &[("m", "m-a"), ("n", "n-a")], 2),
                node("b", &[("n", "n-b")], 2),
            ],
        );
        assert_eq!(version(), 7);
        let seen = |candidates: &[Candidate]| {
            let mut out = Vec::new();
            with_candidates("n", candidates, |nodes| {
                out = nodes
                    .iter()
                    .map(|n| (n.name.clone(), n.models[0].local.clone(), n.models.len(), n.in_flight))
                    .collect();
                Decision::Reject(crate::bindings::switchyard::policy::types::Reject {
                    status: 503,
                    message: String::new(),
                })
            });
            out
        };
        assert_eq!(
            seen(&[candidate(0, 1, 1), candidate(1, 0, 0)]),
            [("a".into(), "n-a".into(), 1, 1), ("b".into(), "n-b".into(), 1, 0)]
        );
        // The cached list, with the new live load written in.
        assert_eq!(seen(&[candidate(0, 1, 2), candidate(1, 0, 1)])[0].3, 2);
        // A different candidate set (a chain's later stage) gets its own list; the cached
        // one stays for the next first stage.
        assert_eq!(seen(&[candidate(1, 0, 0)]), [("b".into(), "n-b".into(), 1, 0)]);
        assert_eq!(seen(&[candidate(0, 1, 0), candidate(1, 0, 0)]).len(), 2);
    }
}
