//! The nodes `"*"` stands for (every node no rule names), least loaded first (warmth
//! counted: [`sdk::effective_load`], ties by name), put in order only as far as a decision
//! reads them. A decision stops at `sdk::MAX_TARGETS` targets, so at 256 nodes it reads a
//! handful: a heap yields them without sorting the rest, and every rule of the decision
//! that names `"*"` reads the same order.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use switchyard_policy_sdk::{self as sdk, Node, Request};

use crate::Params;

struct Keyed<'a> {
    load: f32,
    node: &'a Node,
    /// The node's position among the candidates: the last tie-break, so that the order is
    /// the stable sort's (a node that is a candidate twice, with two variants of the model,
    /// keeps its first variant first).
    position: usize,
}

impl Ord for Keyed<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.load
            .total_cmp(&other.load)
            .then_with(|| self.node.name.cmp(&other.node.name))
            .then_with(|| self.position.cmp(&other.position))
    }
}

impl PartialOrd for Keyed<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Keyed<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Keyed<'_> {}

/// The unnamed nodes of one decision, in order as far as read.
pub(crate) struct Others<'a> {
    params: &'a Params,
    req: &'a Request,
    nodes: &'a [Node],
    /// Built on the first read: a decision whose rules never reach `"*"` pays nothing.
    pending: Option<BinaryHeap<Reverse<Keyed<'a>>>>,
    ordered: Vec<&'a Node>,
}

impl<'a> Others<'a> {
    pub(crate) fn new(params: &'a Params, req: &'a Request, nodes: &'a [Node]) -> Self {
        Self {
            params,
            req,
            nodes,
            pending: None,
            ordered: Vec::new(),
        }
    }

    /// The `index`-th least loaded unnamed node, if there are that many.
    pub(crate) fn get(&mut self, index: usize) -> Option<&'a Node> {
        while self.ordered.len() <= index {
            let (params, req, nodes) = (self.params, self.req, self.nodes);
            let pending = self.pending.get_or_insert_with(|| {
                nodes
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| !params.names(&n.name))
                    .map(|(position, node)| {
                        Reverse(Keyed {
                            load: sdk::effective_load(node, req),
                            node,
                            position,
                        })
                    })
                    .collect()
            });
            let Reverse(next) = pending.pop()?;
            self.ordered.push(next.node);
        }
        Some(self.ordered[index])
    }
}

#[cfg(test)]
mod tests {
    use sdk::fixture::{node, request};

    use super::*;

    #[test]
    fn yields_the_unnamed_nodes_least_loaded_first_then_by_name_as_a_full_sort_would() {
        let params: Params = toml::from_str(r#"rules = [{ name = "r", nodes = ["named", "*"] }]"#).expect("params");
        let req = request("m");
        let loads = [3u32, 0, 2, 0, 1, 3, 0, 2];
        let mut nodes: Vec<Node> = loads
            .iter()
            .enumerate()
            .map(|(i, &in_flight)| {
                let mut n = node(&format!("n{}", 7 - i), &[("m", "m-local")], 4);
                n.in_flight = in_flight;
                n
            })
            .collect();
        nodes.push(node("named", &[("m", "m-local")], 4));
        let mut expected: Vec<&Node> = nodes.iter().filter(|n| n.name != "named").collect();
        expected.sort_by(|a, b| {
            sdk::effective_load(a, &req)
                .total_cmp(&sdk::effective_load(b, &req))
                .then_with(|| a.name.cmp(&b.name))
        });
        let mut others = Others::new(&params, &req, &nodes);
        let read: Vec<&str> = (0..).map_while(|i| others.get(i)).map(|n| n.name.as_str()).collect();
        let want: Vec<&str> = expected.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(read, want);
        // Reading again (another rule naming "*") gives the same order.
        assert_eq!(others.get(0).map(|n| n.name.as_str()), want.first().copied());
    }
}
