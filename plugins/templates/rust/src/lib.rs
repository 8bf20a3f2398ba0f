//! `{{name}}`: every eligible node, ordered by `(in-flight + queued) / max-concurrency`
//! with the model's warmth counted in (a node that must load it first counts a quarter node
//! more, plus a full node per 10 s of its estimated load: [`sdk::effective_load`]), ties
//! broken by measured tokens/s (faster first), then by name. No params.

use switchyard_policy_sdk::{self as sdk, Decision, Node, Policy, Request, Route};

pub struct Rule;

impl Policy for Rule {
    fn configure(params: String) -> Result<(), String> {
        let _: Params = sdk::decode_params(&params)?;
        Ok(())
    }

    fn route(req: &Request, nodes: &[Node]) -> Decision {
        decide(req, nodes)
    }
}

sdk::export_policy!(Rule);

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
