//! `session-affinity`: requests of one session (`x-switchyard-session`, or OpenAI's `user`)
//! stay on one node while it has room, so a runtime's prefix cache is reused; with bounded
//! loads, so a busy session spills over instead of piling up. Consistent hashing: each
//! eligible node has `points` places on a ring (a hash of its name), a session starts at its
//! own hash and takes the first node clockwise with a free slot, or, when none has, the
//! first on its ring (it queues there). Nodes come and go without moving other sessions.
//! Requests without a session keep the order they arrived in (the previous stage's, in a
//! chain; the candidates' otherwise). A chainable stage: `seed-then-session.toml` puts it
//! after seed-rules.

use serde::Deserialize;
use switchyard_policy_sdk::{self as sdk, Decision, Node, Policy, Request, Route, Target};

pub struct SessionAffinity;

thread_local! {
    static POINTS: std::cell::Cell<u32> = const { std::cell::Cell::new(DEFAULT_POINTS) };
}

/// Ring places per node when the params say nothing.
const DEFAULT_POINTS: u32 = 32;

/// The policy's `[params]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Places on the ring per node (1-256; more spread sessions more evenly).
    #[serde(default = "default_points")]
    pub points: u32,
}

fn default_points() -> u32 {
    DEFAULT_POINTS
}

impl Policy for SessionAffinity {
    fn configure(params: String) -> Result<(), String> {
        let params: Params = sdk::decode_params(&params)?;
        if !(1..=256).contains(&params.points) {
            return Err("[params] points must be 1-256".to_owned());
        }
        POINTS.with(|p| p.set(params.points));
        Ok(())
    }

    fn route(req: &Request, nodes: &[Node]) -> Decision {
        decide(req, nodes, POINTS.with(std::cell::Cell::get))
    }
}

sdk::export_policy!(SessionAffinity);

/// FNV-1a, 64 bits, then murmur3's finaliser (short, similar keys such as `s1`, `s2` would
/// otherwise land close together): the same on every machine and every run.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// The whole policy, callable natively as well as from the export.
pub fn decide(req: &Request, nodes: &[Node], points: u32) -> Decision {
    let eligible: Vec<&Node> = nodes.iter().filter(|n| sdk::ineligibility(n, req).is_none()).collect();
    if eligible.is_empty() {
        return sdk::no_capacity(req, nodes);
    }
    let Some(session) = req.session.as_deref().filter(|s| !s.is_empty()) else {
        return Decision::Route(Route {
            targets: eligible
                .iter()
                .take(sdk::MAX_TARGETS)
                .map(|n| sdk::target_for(n, req))
                .collect(),
            reason: "no session: order kept".to_owned(),
            wait_for_first: false,
        });
    };
    let mut ring: Vec<(u64, usize)> = Vec::with_capacity(eligible.len() * points as usize);
    for (index, node) in eligible.iter().enumerate() {
        for point in 0..points {
            ring.push((fnv1a(&[node.name.as_bytes(), b"#", &point.to_le_bytes()]), index));
        }
    }
    ring.sort_unstable();
    let start = fnv1a(&[session.as_bytes()]);
    let from = ring.partition_point(|(hash, _)| *hash < start);
    // The session's nodes in ring order, each once.
    let mut order: Vec<usize> = Vec::with_capacity(eligible.len());
    for (_, index) in ring[from..].iter().chain(&ring[..from]) {
        if !order.contains(index) {
            order.push(*index);
        }
    }
    let home = order[0];
    let chosen = order
        .iter()
        .copied()
        .find(|&i| sdk::has_free_slot(eligible[i]))
        .unwrap_or(home);
    let mut targets: Vec<Target> = vec![sdk::target_for(eligible[chosen], req)];
    targets.extend(
        order
            .iter()
            .filter(|&&i| i != chosen)
            .take(sdk::MAX_TARGETS - 1)
            .map(|&i| sdk::target_for(eligible[i], req)),
    );
    let reason = if chosen == home {
        format!("session's node {}", eligible[chosen].name)
    } else {
        format!(
            "session's node {} is full; next on its ring: {}",
            eligible[home].name, eligible[chosen].name
        )
    };
    Decision::Route(Route {
        targets,
        reason,
        wait_for_first: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sdk::fixture::{node, request};

    fn cluster(n: usize) -> Vec<Node> {
        (0..n).map(|i| node(&format!("node-{i}"), &[("m", "m")], 2)).collect()
    }

    fn session(id: &str) -> Request {
        let mut req = request("m");
        req.session = Some(id.to_owned());
        req
    }

    fn first(decision: &Decision) -> String {
        match decision {
            Decision::Route(route) => route.targets[0].node.clone(),
            Decision::Reject(r) => panic!("{}", r.message),
        }
    }

    #[test]
    fn a_session_stays_on_one_node_and_sessions_spread_over_the_cluster() {
        let nodes = cluster(4);
        let home = first(&decide(&session("alice"), &nodes, 32));
        for _ in 0..10 {
            assert_eq!(first(&decide(&session("alice"), &nodes, 32)), home);
        }
        let mut used: Vec<String> = (0..64)
            .map(|i| first(&decide(&session(&format!("s{i}")), &nodes, 32)))
            .collect();
        used.sort();
        used.dedup();
        assert_eq!(used.len(), 4, "64 sessions use all four nodes: {used:?}");
    }

    #[test]
    fn a_full_home_node_spills_to_the_next_on_the_ring_and_the_session_comes_back() {
        let mut nodes = cluster(4);
        let home = first(&decide(&session("alice"), &nodes, 32));
        let index = nodes.iter().position(|n| n.name == home).expect("home");
        nodes[index].in_flight = 2;
        let spilled = decide(&session("alice"), &nodes, 32);
        assert_ne!(first(&spilled), home);
        let Decision::Route(route) = &spilled else {
            unreachable!()
        };
        assert!(
            route.reason.contains(&format!("session's node {home} is full")),
            "{}",
            route.reason
        );
        nodes[index].in_flight = 1;
        assert_eq!(first(&decide(&session("alice"), &nodes, 32)), home);
    }

    #[test]
    fn removing_a_node_moves_only_its_own_sessions() {
        let nodes = cluster(5);
        let before: Vec<String> = (0..200)
            .map(|i| first(&decide(&session(&format!("s{i}")), &nodes, 32)))
            .collect();
        let fewer: Vec<Node> = nodes.iter().filter(|n| n.name != "node-2").cloned().collect();
        for (i, was) in before.iter().enumerate() {
            let now = first(&decide(&session(&format!("s{i}")), &fewer, 32));
            if was != "node-2" {
                assert_eq!(&now, was, "session s{i} moved although its node stayed");
            }
        }
    }

    #[test]
    fn without_a_session_the_order_is_kept_and_unhealthy_nodes_are_left_out() {
        let mut nodes = cluster(3);
        nodes[0].healthy = false;
        match decide(&request("m"), &nodes, 32) {
            Decision::Route(route) => {
                let order: Vec<&str> = route.targets.iter().map(|t| t.node.as_str()).collect();
                assert_eq!(order, ["node-1", "node-2"]);
            }
            Decision::Reject(r) => panic!("{}", r.message),
        }
    }
}
