//! `round-robin`: the baseline every load balancer ships. Each request goes to the next
//! eligible node in turn and waits for it when it is full, like nginx's upstream round
//! robin; the other nodes follow only for when it refuses before any work. No params.
//!
//! The turn is kept per warm instance: with several instances serving at once, each turns
//! on its own, so the rotation is even overall but not strictly alternating.

use std::cell::Cell;

use switchyard_policy_sdk::{self as sdk, Decision, Node, Policy, Request, Route};

pub struct RoundRobin;

thread_local! {
    static TURN: Cell<u64> = const { Cell::new(0) };
}

impl Policy for RoundRobin {
    fn configure(params: String) -> Result<(), String> {
        let _: Params = sdk::decode_params(&params)?;
        Ok(())
    }

    fn route(req: &Request, nodes: &[Node]) -> Decision {
        let turn = TURN.with(|t| {
            let turn = t.get();
            t.set(turn.wrapping_add(1));
            turn
        });
        decide(turn, req, nodes)
    }
}

sdk::export_policy!(RoundRobin);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {}

/// The decision for the `turn`-th request, callable natively as well as from the export.
pub fn decide(turn: u64, req: &Request, nodes: &[Node]) -> Decision {
    let mut eligible: Vec<&Node> = nodes.iter().filter(|n| sdk::ineligibility(n, req).is_none()).collect();
    if eligible.is_empty() {
        return sdk::no_capacity(req, nodes);
    }
    // A fixed order (by name), rotated by the turn: independent of the order nodes arrive in.
    eligible.sort_by(|a, b| a.name.cmp(&b.name));
    let start = (turn % eligible.len() as u64) as usize;
    eligible.rotate_left(start);
    Decision::Route(Route {
        targets: eligible
            .iter()
            .take(sdk::MAX_TARGETS)
            .map(|n| sdk::target_for(n, req))
            .collect(),
        reason: format!("round robin: {}", eligible[0].name),
        wait_for_first: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sdk::fixture::{node, request};

    fn first(decision: Decision) -> String {
        match decision {
            Decision::Route(route) => {
                assert!(route.wait_for_first);
                route.targets[0].node.clone()
            }
            Decision::Reject(r) => panic!("rejected: {}", r.message),
        }
    }

    #[test]
    fn turns_through_the_eligible_nodes_whatever_their_load() {
        let mut busy = node("b", &[("m", "m")], 1);
        busy.in_flight = 1;
        let mut down = node("d", &[("m", "m")], 1);
        down.healthy = false;
        let nodes = [node("c", &[("m", "m")], 1), busy, node("a", &[("m", "m")], 1), down];
        let seen: Vec<String> = (0..6).map(|turn| first(decide(turn, &request("m"), &nodes))).collect();
        assert_eq!(seen, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn no_eligible_node_is_a_rejection() {
        match decide(0, &request("m"), &[node("x", &[("other", "o")], 1)]) {
            Decision::Reject(r) => assert_eq!(r.status, 404),
            other => panic!("{other:?}"),
        }
    }
}
