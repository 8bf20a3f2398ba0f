//! `thermal-guard`: a policy that only agent telemetry makes possible.
//!
//! Nodes whose GPU runs hotter than `max_gpu_temp_c`, whose VRAM is fuller than
//! `max_vram_pct`, that report thermal throttling, or (optionally) run on battery are
//! avoided: they go last, as retry targets only. The others are ordered by energy per
//! token: watts (the GPUs' live NVML power draw when reported, else the seed's figure for
//! the machine from `node_watts`) divided by the tokens/s the agent measured. Nodes with a
//! free slot come before full ones.

use std::collections::BTreeMap;

use serde::Deserialize;
use switchyard_policy_sdk::{self as sdk, Decision, Node, Request, Route};

sdk::export_params_policy!(ThermalGuard, Params, decide, Params::validate);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default = "default_max_temp")]
    pub max_gpu_temp_c: f32,
    #[serde(default = "default_max_vram")]
    pub max_vram_pct: f32,
    #[serde(default = "yes")]
    pub avoid_thermal_throttled: bool,
    #[serde(default = "yes")]
    pub avoid_on_battery: bool,
    /// Typical whole-machine draw under load, by node name (the seed: m4 30, ryzen 525,
    /// xeon 260). Nodes not listed use their GPUs' live power draw.
    #[serde(default)]
    pub node_watts: BTreeMap<String, f32>,
    /// Draw assumed for nodes in neither telemetry nor `node_watts`.
    #[serde(default = "default_watts")]
    pub default_watts: f32,
}

fn default_max_temp() -> f32 {
    80.0
}
fn default_max_vram() -> f32 {
    95.0
}
fn default_watts() -> f32 {
    300.0
}
fn yes() -> bool {
    true
}

/// Why a node should be avoided right now, if it should.
fn overheated(params: &Params, node: &Node) -> Option<String> {
    if params.avoid_thermal_throttled && node.thermal_throttled {
        return Some(format!("{} thermal-throttled", node.name));
    }
    if params.avoid_on_battery && node.on_battery == Some(true) {
        return Some(format!("{} on battery", node.name));
    }
    for gpu in &node.gpus {
        if gpu.temp_c.is_some_and(|t| t > params.max_gpu_temp_c) {
            return Some(format!("{} GPU at {:.0}C", node.name, gpu.temp_c.unwrap_or(0.0)));
        }
        if gpu.mem_total_mb > 0 {
            let pct = gpu.mem_used_mb as f32 * 100.0 / gpu.mem_total_mb as f32;
            if pct > params.max_vram_pct {
                return Some(format!("{} VRAM {pct:.0}%", node.name));
            }
        }
        if gpu.throttled && params.avoid_thermal_throttled {
            return Some(format!("{} GPU throttled", node.name));
        }
    }
    None
}

/// Joules per generated token; unknown speed counts as 1 token/s (expensive).
fn joules_per_token(params: &Params, node: &Node) -> f32 {
    let reported: f32 = node.gpus.iter().filter_map(|g| g.power_w).sum();
    let watts = match params.node_watts.get(&node.name) {
        Some(watts) => *watts,
        None if reported > 0.0 => reported,
        None => params.default_watts,
    };
    watts / node.tokens_per_sec.unwrap_or(1.0).max(0.001)
}

pub fn decide(params: &Params, req: &Request, nodes: &[Node]) -> Decision {
    let mut ranked: Vec<(u8, f32, &Node)> = Vec::new();
    let mut avoided: Vec<String> = Vec::new();
    for node in nodes.iter().filter(|n| sdk::ineligibility(n, req).is_none()) {
        let tier = match overheated(params, node) {
            Some(why) => {
                avoided.push(why);
                2
            }
            None if sdk::has_free_slot(node) => 0,
            None => 1,
        };
        ranked.push((tier, joules_per_token(params, node), node));
    }
    if ranked.is_empty() {
        return sdk::no_capacity(req, nodes);
    }
    ranked.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.name.cmp(&b.2.name)));
    let (_, cost, best) = ranked[0];
    let mut reason = format!("cheapest cool node: {} at {cost:.1} J/token", best.name);
    if !avoided.is_empty() {
        reason.push_str(&format!("; avoided {}", avoided.join(", ")));
    }
    Decision::Route(Route {
        targets: ranked
            .iter()
            .take(sdk::MAX_TARGETS)
            .map(|(_, _, n)| sdk::target_for(n, req))
            .collect(),
        reason,
        wait_for_first: false,
    })
}

impl Params {
    fn validate(&self) -> Result<(), String> {
        if !(0.0..=100.0).contains(&self.max_vram_pct) {
            return Err("[params] max_vram_pct must be between 0 and 100".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sdk::Gpu;
    use sdk::fixture::{node, request};

    fn params() -> Params {
        sdk::decode_params(r#"{"node_watts": {"ryzen": 525, "xeon": 260, "m4": 30}}"#).unwrap()
    }

    fn gpu(temp: f32, used: u64, total: u64) -> Gpu {
        Gpu {
            name: "RTX".to_owned(),
            util_pct: 50.0,
            mem_used_mb: used,
            mem_total_mb: total,
            temp_c: Some(temp),
            power_w: None,
            throttled: false,
        }
    }

    fn cluster() -> Vec<Node> {
        let mut m4 = node("m4", &[("m", "m")], 1);
        m4.tokens_per_sec = Some(18.0); // 30 W / 18 = 1.7 J/token
        let mut ryzen = node("ryzen", &[("m", "m")], 4);
        ryzen.tokens_per_sec = Some(45.0); // 525 / 45 = 11.7
        ryzen.gpus = vec![gpu(65.0, 10_000, 24_576)];
        let mut xeon = node("xeon", &[("m", "m")], 2);
        xeon.tokens_per_sec = Some(22.0); // 260 / 22 = 11.8
        xeon.gpus = vec![gpu(55.0, 4_000, 16_384)];
        vec![m4, ryzen, xeon]
    }

    fn order(d: &Decision) -> Vec<&str> {
        match d {
            Decision::Route(r) => r.targets.iter().map(|t| t.node.as_str()).collect(),
            Decision::Reject(r) => panic!("rejected: {}", r.message),
        }
    }

    #[test]
    fn orders_cool_nodes_by_energy_per_token() {
        assert_eq!(
            order(&decide(&params(), &request("m"), &cluster())),
            ["m4", "ryzen", "xeon"]
        );
    }

    #[test]
    fn a_hot_gpu_or_full_vram_or_battery_moves_a_node_to_the_back() {
        let mut nodes = cluster();
        nodes[1].gpus[0].temp_c = Some(86.0);
        nodes[0].on_battery = Some(true);
        let d = decide(&params(), &request("m"), &nodes);
        assert_eq!(order(&d), ["xeon", "m4", "ryzen"]);
        let Decision::Route(r) = d else { unreachable!() };
        assert!(r.reason.contains("ryzen GPU at 86C"), "{}", r.reason);

        let mut nodes = cluster();
        nodes[2].gpus[0].mem_used_mb = 16_000;
        nodes[0].thermal_throttled = true;
        assert_eq!(
            order(&decide(&params(), &request("m"), &nodes)),
            ["ryzen", "m4", "xeon"]
        );
    }

    #[test]
    fn live_gpu_power_is_used_for_nodes_without_a_figure() {
        let mut nodes = cluster();
        nodes.remove(0);
        nodes[0].name = "new-box".to_owned();
        nodes[0].gpus[0].power_w = Some(150.0); // 150 / 45 = 3.3 J/token, below the xeon's 11.8
        assert_eq!(order(&decide(&params(), &request("m"), &nodes)), ["new-box", "xeon"]);
    }

    #[test]
    fn full_nodes_come_after_free_ones() {
        let mut nodes = cluster();
        nodes[0].in_flight = 1;
        assert_eq!(
            order(&decide(&params(), &request("m"), &nodes)),
            ["ryzen", "xeon", "m4"]
        );
    }
}
