//! `least-loaded`: every eligible node, ordered by `(in-flight + queued) / max-concurrency`
//! with the model's warmth counted in (a node that must load it first counts a quarter node
//! more, plus a full node per 10 s of its estimated load: [`sdk::effective_load`]), ties
//! broken by measured tokens/s (faster first), then by name. No params.

use switchyard_policy_sdk::{self as sdk, Decision, Node, Policy, Request, Route};

pub struct LeastLoaded;

impl Policy for LeastLoaded {
    fn configure(params: String) -> Result<(), String> {
        let _: Params = sdk::decode_params(&params)?;
        Ok(())
    }

    fn route(req: &Request, nodes: &[Node]) -> Decision {
        decide(req, nodes)
    }
}

sdk::export_policy!(LeastLoaded);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {}

/// The whole policy, callable natively (tests, benchmarks) as well as from the export.
pub fn decide(req: &Request, nodes: &[Node]) -> Decision {
    let eligible: Vec<&Node> = nodes.iter().filter(|n| sdk::ineligibility(n, req).is_none()).collect();
    if eligible.is_empty() {
        return sdk::no_capacity(req, nodes);
    }
    // Each node's key once (not per comparison): the sort is most of the work at 256 nodes.
    let mut keyed: Vec<(f32, f32, &Node)> = eligible
        .iter()
        .map(|n| (sdk::effective_load(n, req), n.tokens_per_sec.unwrap_or(0.0), *n))
        .collect();
    keyed.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then_with(|| b.1.total_cmp(&a.1))
            .then_with(|| a.2.name.cmp(&b.2.name))
    });
    let eligible: Vec<&Node> = keyed.into_iter().map(|(_, _, n)| n).collect();
    let best = eligible[0];
    let warmth = match sdk::load_delay_ms(best, req) {
        0 => String::new(),
        ms => format!(", must load the model first (about {:.1} s)", f64::from(ms) / 1000.0),
    };
    let reason = format!(
        "least loaded: {} at {}/{}{warmth}",
        best.name,
        best.in_flight + best.queued,
        best.max_concurrency
    );
    Decision::Route(Route {
        targets: eligible
            .iter()
            .take(sdk::MAX_TARGETS)
            .map(|n| sdk::target_for(n, req))
            .collect(),
        reason,
        wait_for_first: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sdk::fixture::{node, request};

    fn first(decision: &Decision) -> &str {
        match decision {
            Decision::Route(route) => &route.targets[0].node,
            Decision::Reject(r) => panic!("rejected: {}", r.message),
        }
    }

    #[test]
    fn picks_the_node_with_the_lowest_load_ratio() {
        let mut a = node("a", &[("m", "m-a")], 4);
        a.in_flight = 2;
        let mut b = node("b", &[("m", "m-b")], 1);
        b.in_flight = 1;
        let c = node("c", &[("m", "m-c")], 2);
        let decision = decide(&request("m"), &[a, b, c]);
        assert_eq!(first(&decision), "c");
        let Decision::Route(route) = decision else {
            unreachable!()
        };
        let order: Vec<_> = route.targets.iter().map(|t| t.node.as_str()).collect();
        assert_eq!(order, ["c", "a", "b"]);
        assert_eq!(route.targets[0].model, "m-c");
    }

    #[test]
    fn breaks_ties_by_measured_speed() {
        let mut slow = node("slow", &[("m", "m")], 2);
        slow.tokens_per_sec = Some(10.0);
        let mut fast = node("fast", &[("m", "m")], 2);
        fast.tokens_per_sec = Some(40.0);
        assert_eq!(first(&decide(&request("m"), &[slow, fast])), "fast");
    }

    #[test]
    fn skips_unhealthy_nodes_and_nodes_without_the_model() {
        let mut down = node("down", &[("m", "m")], 8);
        down.healthy = false;
        let other = node("other", &[("x", "x")], 8);
        let busy = {
            let mut n = node("busy", &[("m", "m")], 1);
            n.in_flight = 5;
            n
        };
        assert_eq!(first(&decide(&request("m"), &[down, other, busy])), "busy");
    }

    #[test]
    fn rejects_with_404_for_an_unknown_model_and_503_when_all_are_down() {
        let mut down = node("down", &[("m", "m")], 8);
        down.healthy = false;
        match decide(&request("nope"), std::slice::from_ref(&down)) {
            Decision::Reject(r) => assert_eq!(r.status, 404),
            other => panic!("{other:?}"),
        }
        match decide(&request("m"), &[down]) {
            Decision::Reject(r) => assert_eq!(r.status, 503),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_warm_node_wins_a_prompt_over_a_cold_one_unless_it_is_full() {
        let warm = node("warm", &[("m", "m-warm")], 2);
        let mut cold = node("cold", &[("m", "m-cold")], 2);
        cold.models[0].loaded = false;
        cold.models[0].load_ms = Some(40_000);
        cold.tokens_per_sec = Some(100.0);
        assert_eq!(first(&decide(&request("m"), &[cold.clone(), warm.clone()])), "warm");

        // A quick load beats a full warm node; a 40 s one does not.
        let mut full = warm;
        full.in_flight = 2;
        assert_eq!(first(&decide(&request("m"), &[cold.clone(), full.clone()])), "warm");
        cold.models[0].load_ms = Some(3_000);
        let decision = decide(&request("m"), &[cold, full]);
        assert_eq!(first(&decision), "cold");
        let Decision::Route(route) = decision else {
            unreachable!()
        };
        assert!(
            route.reason.ends_with("must load the model first (about 3.0 s)"),
            "{}",
            route.reason
        );
    }
}
