//! `lowest-cost`: every eligible node, cheapest per generated token first. A node's cost per
//! hour is its electricity (watts x price per kWh) plus its capital amortised over its years
//! of service; divided by the tokens it makes per hour at its measured speed, that is its cost
//! per token. The seed's figures (watts, capital, $0.12/kWh, three years) are the defaults.
//! A node the params do not list is costed from its GPUs' live power draw and no capital,
//! and said so in the reason; one with neither goes last.

use std::collections::BTreeMap;

use serde::Deserialize;
use switchyard_policy_sdk::{self as sdk, Decision, Node, Request, Route};

sdk::export_params_policy!(LowestCost, Params, decide, Params::validate);

/// One machine's costs.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// Whole-machine draw while generating, in watts.
    pub watts: f32,
    /// What the machine cost, in the same currency as `price_per_kwh`.
    pub capital: f32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub price_per_kwh: f32,
    /// Years over which a machine's capital is spread.
    pub amortisation_years: f32,
    /// Hours per year a machine is counted as in service (8760: always on).
    pub hours_per_year: f32,
    pub nodes: BTreeMap<String, Machine>,
}

impl Default for Params {
    fn default() -> Self {
        // The seed's "Cost Analysis": power at $0.12/kWh, capital at current market prices.
        Self {
            price_per_kwh: 0.12,
            amortisation_years: 3.0,
            hours_per_year: 8760.0,
            nodes: BTreeMap::from([
                (
                    "m4".to_owned(),
                    Machine {
                        watts: 30.0,
                        capital: 2500.0,
                    },
                ),
                (
                    "ryzen".to_owned(),
                    Machine {
                        watts: 525.0,
                        capital: 900.0,
                    },
                ),
                (
                    "xeon".to_owned(),
                    Machine {
                        watts: 260.0,
                        capital: 1200.0,
                    },
                ),
            ]),
        }
    }
}

impl Params {
    fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, v: f32| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(format!("[params] {name} must be a positive number, not {v}"))
            }
        };
        positive("price_per_kwh", self.price_per_kwh)?;
        positive("amortisation_years", self.amortisation_years)?;
        positive("hours_per_year", self.hours_per_year)?;
        if self.hours_per_year > 8784.0 {
            return Err(format!(
                "[params] hours_per_year must be at most 8784 (a leap year), not {}",
                self.hours_per_year
            ));
        }
        for (name, machine) in &self.nodes {
            if !(machine.watts >= 0.0 && machine.watts.is_finite()) {
                return Err(format!(
                    "[params] nodes.{name}.watts must be zero or more, not {}",
                    machine.watts
                ));
            }
            if !(machine.capital >= 0.0 && machine.capital.is_finite()) {
                return Err(format!(
                    "[params] nodes.{name}.capital must be zero or more, not {}",
                    machine.capital
                ));
            }
        }
        Ok(())
    }
}

/// Speed assumed for a node that has not measured one yet.
const UNMEASURED_TOKENS_PER_SEC: f32 = 20.0;

/// A node's cost per million tokens, and whether it was costed from live power alone.
pub fn cost_per_million(params: &Params, node: &Node) -> Option<(f32, bool)> {
    let (machine, live) = match params.nodes.get(&node.name) {
        Some(machine) => (*machine, false),
        None => {
            let watts: f32 = node.gpus.iter().filter_map(|g| g.power_w).sum();
            if watts <= 0.0 {
                return None;
            }
            (Machine { watts, capital: 0.0 }, true)
        }
    };
    let per_hour = machine.watts / 1000.0 * params.price_per_kwh
        + machine.capital / (params.amortisation_years * params.hours_per_year);
    let speed = node
        .tokens_per_sec
        .filter(|s| *s > 0.0 && s.is_finite())
        .unwrap_or(UNMEASURED_TOKENS_PER_SEC);
    Some((per_hour / (speed * 3600.0) * 1_000_000.0, live))
}

pub fn decide(params: &Params, req: &Request, nodes: &[Node]) -> Decision {
    let mut ranked: Vec<(Option<(f32, bool)>, &Node)> = nodes
        .iter()
        .filter(|n| sdk::ineligibility(n, req).is_none())
        .map(|n| (cost_per_million(params, n), n))
        .collect();
    if ranked.is_empty() {
        return sdk::no_capacity(req, nodes);
    }
    ranked.sort_by(|a, b| {
        let cost = |c: &Option<(f32, bool)>| c.map_or(f32::INFINITY, |(v, _)| v);
        cost(&a.0).total_cmp(&cost(&b.0)).then_with(|| a.1.name.cmp(&b.1.name))
    });
    let costs: Vec<String> = ranked
        .iter()
        .map(|(cost, node)| match cost {
            Some((v, false)) => format!("{} {v:.2}", node.name),
            Some((v, true)) => format!("{} {v:.2} (live GPU power only)", node.name),
            None => format!("{} unknown", node.name),
        })
        .collect();
    Decision::Route(Route {
        targets: ranked
            .iter()
            .take(sdk::MAX_TARGETS)
            .map(|(_, n)| sdk::target_for(n, req))
            .collect(),
        reason: format!("lowest cost per 1M tokens: {}", costs.join(", ")),
        wait_for_first: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sdk::fixture::{node, request};

    fn seed() -> Vec<Node> {
        let speeds = [("m4", 18.0), ("ryzen", 45.0), ("xeon", 22.0)];
        speeds
            .iter()
            .map(|(name, speed)| {
                let mut n = node(name, &[("m", "m")], 2);
                n.tokens_per_sec = Some(*speed);
                n
            })
            .collect()
    }

    #[test]
    fn the_seed_figures_make_the_laptop_dearest_per_token() {
        let params = Params::default();
        let cost = |name: &str| {
            let nodes = seed();
            let n = nodes.iter().find(|n| n.name == name).expect("node").clone();
            cost_per_million(&params, &n).expect("costed").0
        };
        // m4: (30 W x $0.12/kWh + $2500 / 26280 h) / (18 tok/s x 3600) = $1.52 per 1M.
        assert!((cost("m4") - 1.523).abs() < 0.01, "{}", cost("m4"));
        // ryzen: (525 W -> $0.063 + $0.0342) / (45 x 3600) = $0.60; xeon: $0.97.
        assert!((cost("ryzen") - 0.600).abs() < 0.01, "{}", cost("ryzen"));
        assert!((cost("xeon") - 0.971).abs() < 0.01, "{}", cost("xeon"));
        let Decision::Route(route) = decide(&params, &request("m"), &seed()) else {
            panic!("rejected")
        };
        let order: Vec<_> = route.targets.iter().map(|t| t.node.as_str()).collect();
        assert_eq!(order, ["ryzen", "xeon", "m4"], "{}", route.reason);
    }

    #[test]
    fn an_unlisted_node_is_costed_from_live_gpu_power_and_says_so() {
        let params = Params::default();
        let mut gpu4 = node("gpu4", &[("m", "m")], 2);
        gpu4.tokens_per_sec = Some(50.0);
        gpu4.gpus.push(sdk::Gpu {
            name: "g".into(),
            util_pct: 90.0,
            mem_used_mb: 0,
            mem_total_mb: 0,
            temp_c: None,
            power_w: Some(300.0),
            throttled: false,
        });
        let unknown = node("mystery", &[("m", "m")], 2);
        let Decision::Route(route) = decide(&params, &request("m"), &[unknown, gpu4]) else {
            panic!("rejected")
        };
        assert_eq!(route.targets[0].node, "gpu4");
        assert!(route.reason.contains("live GPU power only"), "{}", route.reason);
        assert!(route.reason.contains("mystery unknown"), "{}", route.reason);
    }

    #[test]
    fn params_are_checked() {
        let bad = Params {
            price_per_kwh: -1.0,
            ..Params::default()
        };
        assert!(bad.validate().is_err());
        assert!(sdk::decode_params::<Params>("{\"nodes\": {\"x\": {\"watt\": 1}}}").is_err());
    }
}
