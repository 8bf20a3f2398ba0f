//! The cluster as the host handed it over (`set-cluster`, once per snapshot version), and
//! per requested model the candidate list a policy sees: built once per version from the
//! host's candidate indices (each node with only its variant of the model), then reused
//! with only each candidate's live load written in. A request whose candidates differ from
//! the cached list (a later stage of a chain) gets its own list.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::bindings::switchyard::policy::types as wit;
use crate::{Decision, Node};

/// A request's candidates as the host passes them (contract 0.4.0): five numbers each, the
/// node's index in the cluster, its variant's index among the node's models, the node's
/// live in-flight and queued counts, and the request's prompt tokens it is estimated to hold.
#[derive(Debug, Clone, Copy)]
pub struct Candidates<'a> {
    packed: &'a [u32],
}

impl<'a> Candidates<'a> {
    /// A trailing partial candidate (a host bug) is ignored.
    pub fn new(packed: &'a [u32]) -> Self {
        Self { packed }
    }

    fn rows(&self) -> impl Iterator<Item = &'a [u32]> + 'a {
        self.packed.chunks_exact(5)
    }

    /// (node index, variant index) of each candidate.
    fn pairs(&self) -> impl Iterator<Item = (u32, u32)> + 'a {
        self.rows().map(|row| (row[0], row[1]))
    }
}

/// FNV-1a: names are short, and SipHash's per-call setup cost more than the lookup.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        let mut hash = self.0;
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FnvMap<V> = HashMap<String, V, BuildHasherDefault<Fnv>>;

/// A candidate list built for some (node index, variant index) pairs.
struct View {
    pairs: Vec<(u32, u32)>,
    nodes: Vec<Node>,
    /// Each node's first position in `nodes`: a target's index without a scan.
    by_name: FnvMap<u32>,
}

impl View {
    fn new(cluster: &[Node], candidates: Candidates<'_>) -> Self {
        let nodes = view(cluster, candidates);
        let mut by_name = FnvMap::default();
        for (index, node) in nodes.iter().enumerate() {
            by_name.entry(node.name.clone()).or_insert(index as u32);
        }
        Self {
            pairs: candidates.pairs().collect(),
            nodes,
            by_name,
        }
    }

    /// `target`'s position among the nodes, or `None` when it is not one of them.
    fn position(&self, node: &str, model: &str) -> Option<u32> {
        let first = *self.by_name.get(node)?;
        if self.nodes[first as usize]
            .models
            .first()
            .is_some_and(|m| m.local == model)
        {
            return Some(first);
        }
        // The same node again with another variant of the model (rare): scan.
        position(&self.nodes, node, model)
    }
}

/// `node`'s variant `model` among `nodes`, by scanning.
pub(crate) fn position(nodes: &[Node], node: &str, model: &str) -> Option<u32> {
    nodes
        .iter()
        .position(|n| n.name == node && n.models.first().is_some_and(|m| m.local == model))
        .map(|i| i as u32)
}

#[derive(Default)]
struct Cluster {
    version: u64,
    nodes: Vec<Node>,
    /// Per logical model: the list built for the first request of this version.
    views: FnvMap<View>,
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
            views: FnvMap::default(),
        }
    });
}

/// The snapshot version this instance holds.
pub fn version() -> u64 {
    CLUSTER.with(|c| c.borrow().version)
}

fn view(nodes: &[Node], candidates: Candidates<'_>) -> Vec<Node> {
    candidates
        .pairs()
        .filter_map(|(node, model)| {
            let node = nodes.get(node as usize)?;
            let variant = node.models.get(model as usize)?.clone();
            let mut view = Node {
                models: Vec::new(),
                ..node.clone()
            };
            view.models.push(variant);
            Some(view)
        })
        .collect()
}

/// Run `decide` on the candidates for `model`, each with only that variant and its live load,
/// and answer in the contract's form (targets as candidate indices).
pub fn with_candidates(
    model: &str,
    candidates: Candidates<'_>,
    decide: impl FnOnce(&[Node]) -> Decision,
) -> wit::Decision {
    CLUSTER.with(|cell| {
        let mut cluster = cell.borrow_mut();
        let cluster = &mut *cluster;
        // Compared in place: the usual request (a first stage) allocates nothing here.
        let same = |cached: &[(u32, u32)]| cached.iter().copied().eq(candidates.pairs());
        let cached = match cluster.views.get(model).map(|view| same(&view.pairs)) {
            Some(true) => cluster.views.get_mut(model),
            // The first list asked for since the version changed: the one to keep.
            None => Some(
                cluster
                    .views
                    .entry(model.to_owned())
                    .or_insert_with(|| View::new(&cluster.nodes, candidates)),
            ),
            // Another subset (a chain's later stage): its own list, the cached one stays.
            Some(false) => None,
        };
        match cached {
            Some(view) => {
                live_load(&mut view.nodes, candidates);
                let view = &*view;
                decide(&view.nodes).to_wit(|node, model| view.position(node, model))
            }
            None => {
                let mut own = view(&cluster.nodes, candidates);
                live_load(&mut own, candidates);
                decide(&own).to_wit(|node, model| position(&own, node, model))
            }
        }
    })
}

/// Write each candidate's live load into its node, and keep its cache estimate.
fn live_load(nodes: &mut [Node], candidates: Candidates<'_>) {
    for (node, row) in nodes.iter_mut().zip(candidates.rows()) {
        node.in_flight = row[2];
        node.queued = row[3];
    }
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        cached.clear();
        cached.extend(candidates.rows().map(|row| row[4]));
    });
}

pub(crate) fn set_cached_tokens(per_candidate: &[u32]) {
    CACHED.with(|cached| *cached.borrow_mut() = per_candidate.to_vec());
}

thread_local! {
    static CACHED: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// How many of the request's prompt tokens candidate `index` (its position in the `nodes`
/// that [`crate::Policy::route`] was given) is estimated to hold in its prefix cache already;
/// 0 when none or unknown. A policy prices a miss as `(prompt_tokens - cached) / prefill
/// speed` (the node's `prefill_tokens_per_sec`).
pub fn cached_tokens(index: usize) -> u32 {
    CACHED.with(|cached| cached.borrow().get(index).copied().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::switchyard::policy::types as wit;
    use crate::fixture::node;
    use crate::{Route, Target};

    /// Run `decide` on candidates given as (node, variant, in-flight) rows.
    fn with_rows(rows: &[(u32, u32, u32)], decide: impl FnOnce(&[Node]) -> Decision) -> wit::Decision {
        let packed: Vec<u32> = rows
            .iter()
            .flat_map(|&(node, model, in_flight)| [node, model, in_flight, 0, in_flight * 100])
            .collect();
        with_candidates("n", Candidates::new(&packed), decide)
    }

    fn reject() -> Decision {
        Decision::Reject(crate::Reject {
            status: 503,
            message: String::new(),
        })
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
        let seen = |rows: &[(u32, u32, u32)]| {
            let mut out = Vec::new();
            with_rows(rows, |nodes| {
                out = nodes
                    .iter()
                    .map(|n| (n.name.clone(), n.models[0].local.clone(), n.models.len(), n.in_flight))
                    .collect();
                reject()
            });
            out
        };
        assert_eq!(
            seen(&[(0, 1, 1), (1, 0, 0)]),
            [("a".into(), "n-a".into(), 1, 1), ("b".into(), "n-b".into(), 1, 0)]
        );
        // The cached list, with the new live load written in, and the cache estimates.
        assert_eq!(seen(&[(0, 1, 2), (1, 0, 1)])[0].3, 2);
        assert_eq!((cached_tokens(0), cached_tokens(1), cached_tokens(2)), (200, 100, 0));
        // A different candidate set (a chain's later stage) gets its own list; the cached
        // one stays for the next first stage.
        assert_eq!(seen(&[(1, 0, 0)]), [("b".into(), "n-b".into(), 1, 0)]);
        assert_eq!(seen(&[(0, 1, 0), (1, 0, 0)]).len(), 2);
    }

    #[test]
    fn targets_become_candidate_indices_also_for_a_node_with_two_variants_of_the_model() {
        set(
            8,
            vec![
                node("a", &[("n", "n-small"), ("n", "n-large")], 2),
                node("b", &[("n", "n-b")], 2),
            ],
        );
        let target = |node: &str, model: &str| Target {
            node: node.into(),
            model: model.into(),
        };
        let decided = with_rows(&[(0, 0, 0), (0, 1, 0), (1, 0, 0)], |_| {
            Decision::Route(Route {
                targets: vec![
                    target("b", "n-b"),
                    target("a", "n-large"),
                    target("a", "n-small"),
                    target("c", "n"),
                ],
                reason: "r".into(),
                wait_for_first: false,
            })
        });
        match decided {
            wit::Decision::Route(route) => assert_eq!(route.targets, [2, 1, 0, u32::MAX]),
            wit::Decision::Reject(_) => panic!("a route"),
        }
    }
}
