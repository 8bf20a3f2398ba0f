//! `seed-rules`: the seed document's task routing guide and load-balancing flowchart as an
//! ordered rule table in the policy's params.
//!
//! Each rule matches on the request (task, priority, size) and names preferred nodes. The
//! first matching rule with a node that can take the request now (online, serves the model,
//! within its max tokens and context, a free concurrency slot) wins; otherwise the request
//! falls through to the next matching rule. A rule with `queue = true` (the seed's
//! "fallback queue") accepts its nodes even when they are full: the controller queues there.
//! Nodes of later matching rules follow as retry targets. `"*"` in a rule's nodes stands for
//! every node that no rule names (a fourth machine, the demo's `local` node), least loaded
//! first; a healthy node that no rule can reach is named in the rejection, so the operator
//! knows to add it.

use serde::Deserialize;
use switchyard_policy_sdk::{self as sdk, Decision, Node, Request, Route, Target};

mod others;
use others::Others;

sdk::export_params_policy!(SeedRules, Params, decide, Params::validate);

/// The policy's `[params]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Evaluated in order; the first that yields a node wins.
    pub rules: Vec<Rule>,
}

/// One line of the routing guide.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Shown in the decision's reason.
    pub name: String,
    /// Task classes (`x-switchyard-task`) this rule takes; empty or absent: any task.
    #[serde(default)]
    pub tasks: Vec<String>,
    /// Only requests with at least this priority (0-9).
    #[serde(default)]
    pub min_priority: Option<u8>,
    /// Only requests whose prompt + max_tokens estimate is at most this ("short" work).
    #[serde(default)]
    pub max_total_tokens: Option<u32>,
    /// Only nodes expected to finish the request within this many minutes: its tokens
    /// (prompt + `max_tokens`, or the node's own limit when the request sets none) over the
    /// node's measured speed, plus its time to first token ("only if < 5 min").
    #[serde(default)]
    pub max_minutes: Option<f32>,
    /// Skip nodes that report running on battery.
    #[serde(default)]
    pub avoid_on_battery: bool,
    /// Skip nodes that are thermally throttled (the OS's verdict, or a throttled GPU).
    #[serde(default)]
    pub avoid_throttled: bool,
    /// Accept a node even when all its slots are busy (the controller queues there).
    #[serde(default)]
    pub queue: bool,
    /// With `queue`: when this rule's node is full, the request waits for it rather than
    /// take a free node further down the targets; those are kept for when it refuses before
    /// any work ("Production: Ryzen exclusively").
    #[serde(default)]
    pub wait: bool,
    /// Whether later rules add their nodes (as retry targets, or as the choice when this
    /// rule has none): `always` (default), `if-none` (only when this rule has no node, so
    /// work waits for this rule's nodes while they are up), `never` (this rule's nodes or
    /// nothing, e.g. batch work never reaches the laptop).
    #[serde(default)]
    pub fall_through: FallThrough,
    /// Preferred nodes, best first; `"*"`: every node no rule names, least loaded first.
    pub nodes: Vec<String>,
    /// Among this rule's named nodes, those estimated to hold at least this many of the
    /// prompt's tokens in their prefix cache go first, most first (a coding agent's next turn
    /// returns to the node that holds its conversation); the others keep their order after
    /// them. Absent: the listed order.
    #[serde(default)]
    pub prefer_cached: Option<u32>,
}

/// What happens after a matching rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FallThrough {
    #[default]
    Always,
    IfNone,
    Never,
}

/// The speed assumed for a node that has not measured one yet (tokens per second).
const UNMEASURED_TOKENS_PER_SEC: f32 = 10.0;

impl Params {
    fn validate(&self) -> Result<(), String> {
        if self.rules.is_empty() {
            return Err("[params] rules: at least one rule is needed".to_owned());
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.nodes.is_empty() {
                return Err(format!("[params] rules[{i}] ('{}'): nodes is empty", rule.name));
            }
            if rule.min_priority.is_some_and(|p| p > 9) {
                return Err(format!(
                    "[params] rules[{i}] ('{}'): min_priority must be 0-9",
                    rule.name
                ));
            }
            if rule.wait && !rule.queue {
                return Err(format!(
                    "[params] rules[{i}] ('{}'): wait needs queue = true (a full node is only accepted with queue)",
                    rule.name
                ));
            }
            if rule.prefer_cached == Some(0) {
                return Err(format!(
                    "[params] rules[{i}] ('{}'): prefer_cached must be at least 1 (tokens held in the cache)",
                    rule.name
                ));
            }
            if rule.max_minutes.is_some_and(|m| !(m > 0.0 && m.is_finite())) {
                return Err(format!(
                    "[params] rules[{i}] ('{}'): max_minutes must be a positive number",
                    rule.name
                ));
            }
        }
        Ok(())
    }
}

impl Rule {
    fn matches(&self, req: &Request) -> bool {
        let task_ok = self.tasks.is_empty() || req.task.as_ref().is_some_and(|t| self.tasks.iter().any(|x| x == t));
        let priority_ok = self.min_priority.is_none_or(|min| req.priority >= min);
        let total = req.prompt_tokens.saturating_add(req.max_tokens.unwrap_or(0));
        let size_ok = self.max_total_tokens.is_none_or(|max| total <= max);
        task_ok && priority_ok && size_ok
    }

    fn accepts(&self, node: &Node, req: &Request) -> bool {
        self.why_not(node, req).is_none()
    }

    /// Why this rule cannot send `req` to `node` now, or `None` when it can.
    fn why_not(&self, node: &Node, req: &Request) -> Option<String> {
        if let Some(why) = sdk::ineligibility(node, req) {
            return Some(why.to_owned());
        }
        if self.avoid_on_battery && node.on_battery == Some(true) {
            return Some("on battery".to_owned());
        }
        if self.avoid_throttled && (node.thermal_throttled || node.gpus.iter().any(|g| g.throttled)) {
            return Some("thermally throttled".to_owned());
        }
        if let Some(limit) = self.max_minutes {
            let minutes = estimated_minutes(node, req);
            if minutes > limit {
                return Some(format!("would take about {minutes:.1} min (over {limit})"));
            }
        }
        if !self.queue && !sdk::has_free_slot(node) {
            return Some(format!("busy ({}/{})", node.in_flight, node.max_concurrency));
        }
        None
    }

    /// Why none of this rule's nodes could take `req`: `m4 on battery`, `ryzen busy (4/4)`.
    fn why_skipped(&self, params: &Params, req: &Request, nodes: &[Node]) -> String {
        let mut reasons: Vec<String> = Vec::new();
        for name in &self.nodes {
            if name == OTHERS {
                if !nodes.iter().any(|n| !params.names(&n.name)) {
                    reasons.push("no other node serves the model".to_owned());
                }
                continue;
            }
            match nodes.iter().find(|n| &n.name == name) {
                Some(node) => {
                    if let Some(why) = self.why_not(node, req) {
                        reasons.push(format!("{name} {why}"));
                    }
                }
                None => reasons.push(format!("{name} does not serve the model")),
            }
        }
        reasons.join(", ")
    }
}

/// The wildcard in a rule's `nodes`: every node no rule names.
pub const OTHERS: &str = "*";

impl Params {
    fn names(&self, node: &str) -> bool {
        self.rules.iter().any(|r| r.nodes.iter().any(|n| n == node))
    }

    /// Healthy nodes that could serve `req` but that no rule names and no `"*"` reaches.
    fn unreachable<'a>(&self, req: &Request, nodes: &'a [Node]) -> Vec<&'a str> {
        if self
            .rules
            .iter()
            .filter(|r| r.matches(req))
            .any(|r| r.nodes.iter().any(|n| n == OTHERS))
        {
            return Vec::new();
        }
        nodes
            .iter()
            .filter(|n| !self.names(&n.name) && sdk::ineligibility(n, req).is_none())
            .map(|n| n.name.as_str())
            .collect()
    }
}

/// How long `node` would take for `req`: its tokens over the node's measured speed, plus its
/// time to first token; without `max_tokens`, as many as the node allows.
/// How many of the prompt's tokens the node named `name` is estimated to hold (0: none, or
/// not a candidate).
fn cached_on(name: &str, nodes: &[Node]) -> u32 {
    nodes.iter().position(|n| n.name == name).map_or(0, sdk::cached_tokens)
}

/// `rule`'s nodes in the order they are offered: as listed, or with `prefer_cached` those
/// holding enough of the prompt first, most first (`"*"` and the rest keep their order).
fn offered_order<'a>(rule: &'a Rule, nodes: &[Node]) -> Vec<&'a str> {
    let mut names: Vec<&str> = rule.nodes.iter().map(String::as_str).collect();
    if let Some(min) = rule.prefer_cached {
        names.sort_by_key(|name| {
            let cached = if *name == OTHERS { 0 } else { cached_on(name, nodes) };
            std::cmp::Reverse(if cached >= min { cached } else { 0 })
        });
    }
    names
}

fn estimated_minutes(node: &Node, req: &Request) -> f32 {
    let tokens = req.prompt_tokens / 8 + req.max_tokens.unwrap_or(node.max_tokens);
    let speed = node
        .tokens_per_sec
        .filter(|s| *s > 0.0)
        .unwrap_or(UNMEASURED_TOKENS_PER_SEC);
    let first_token_s = node.ttft_ms.unwrap_or(0.0) / 1000.0;
    (tokens as f32 / speed + first_token_s) / 60.0
}

/// Add `node` to `targets` when `rule` accepts it and it is not there yet (the first added
/// is the winner); whether it was added.
fn offer<'a>(
    rule: &'a Rule,
    node: &'a Node,
    req: &Request,
    targets: &mut Vec<Target>,
    winner: &mut Option<(&'a Rule, &'a str)>,
) -> bool {
    if !rule.accepts(node, req) || targets.iter().any(|t| t.node == node.name) {
        return false;
    }
    targets.push(sdk::target_for(node, req));
    winner.get_or_insert((rule, node.name.as_str()));
    true
}

/// The whole policy, callable natively as well as from the export.
pub fn decide(params: &Params, req: &Request, nodes: &[Node]) -> Decision {
    let mut targets: Vec<Target> = Vec::new();
    let mut winner: Option<(&Rule, &str)> = None;
    let mut skipped: Vec<String> = Vec::new();
    let mut stopped_by: Option<&Rule> = None;
    let mut others = Others::new(params, req, nodes);
    for rule in params.rules.iter().filter(|r| r.matches(req)) {
        let mut yielded = false;
        for name in offered_order(rule, nodes) {
            if name == OTHERS {
                let mut index = 0;
                while targets.len() < sdk::MAX_TARGETS
                    && let Some(node) = others.get(index)
                {
                    index += 1;
                    yielded |= offer(rule, node, req, &mut targets, &mut winner);
                }
            } else if targets.len() < sdk::MAX_TARGETS
                && let Some(node) = nodes.iter().find(|n| n.name == name)
            {
                yielded |= offer(rule, node, req, &mut targets, &mut winner);
            }
        }
        if !yielded && winner.is_none() {
            skipped.push(format!("{} ({})", rule.name, rule.why_skipped(params, req, nodes)));
        }
        let stop = match rule.fall_through {
            FallThrough::Always => false,
            FallThrough::IfNone => yielded,
            FallThrough::Never => true,
        };
        if stop {
            stopped_by = Some(rule);
            break;
        }
        // Full: later rules could add nothing (and skips are kept only while no rule won).
        if targets.len() == sdk::MAX_TARGETS {
            break;
        }
    }
    let Some((rule, node)) = winner else {
        if let Some(rule) = stopped_by.filter(|_| nodes.iter().any(|n| sdk::ineligibility(n, req).is_none())) {
            return Decision::Reject(sdk::Reject {
                status: 503,
                message: format!(
                    "rule '{}' keeps this work on its own nodes and none can take it now ({}); retry later",
                    rule.name,
                    rule.why_skipped(params, req, nodes)
                ),
            });
        }
        let unreachable = params.unreachable(req, nodes);
        if !unreachable.is_empty() {
            return Decision::Reject(sdk::Reject {
                status: 503,
                message: format!(
                    "no node that the rules name can serve model '{}' right now; healthy node(s) {} serve it but no rule names them: add them to a rule's nodes in the policy's [params] (or \"*\" for every node the rules don't name)",
                    req.model,
                    unreachable.join(", ")
                ),
            });
        }
        return sdk::no_capacity(req, nodes);
    };
    let task = req.task.as_deref().unwrap_or("none");
    let mut reason = format!("rule '{}' (task {task}) -> {node}", rule.name);
    let cached = cached_on(node, nodes);
    if rule.prefer_cached.is_some_and(|min| cached >= min) {
        reason.push_str(&format!(" (holds ~{cached} of the prompt's tokens in its cache)"));
    }
    if !skipped.is_empty() {
        reason.push_str(&format!("; fell through {}", skipped.join(", ")));
    }
    Decision::Route(Route {
        targets,
        reason,
        wait_for_first: rule.wait,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sdk::Policy as _;
    use sdk::fixture::{node, request};

    /// The seed document's guide, exactly as `policies/seed-rules.toml` ships it.
    fn seed_params() -> Params {
        let file: toml::Table = toml::from_str(include_str!("../../../policies/seed-rules.toml")).expect("toml");
        let params = &file["stage"].as_array().expect("stages")[0]["params"];
        params.clone().try_into().expect("params")
    }

    fn cluster() -> Vec<Node> {
        let mut m4 = node("m4", &[("qwen25-coder-7b", "qwen-7b-mlx")], 1);
        m4.max_tokens = 2048;
        let mut ryzen = node(
            "ryzen",
            &[("qwen25-coder-7b", "qwen-7b"), ("qwen25-coder-32b", "qwen-32b")],
            4,
        );
        ryzen.max_tokens = 4096;
        let mut xeon = node("xeon", &[("qwen25-coder-7b", "qwen-7b-q4")], 2);
        xeon.max_tokens = 2048;
        vec![m4, ryzen, xeon]
    }

    fn with_task(task: &str) -> Request {
        let mut req = request("qwen25-coder-7b");
        req.task = Some(task.to_owned());
        req
    }

    fn route(decision: Decision) -> Route {
        match decision {
            Decision::Route(route) => route,
            Decision::Reject(r) => panic!("rejected: {} {}", r.status, r.message),
        }
    }

    fn order(route: &Route) -> Vec<&str> {
        route.targets.iter().map(|t| t.node.as_str()).collect()
    }

    #[test]
    fn development_work_goes_to_the_m4_with_its_local_model_name() {
        let route = route(decide(&seed_params(), &with_task("development"), &cluster()));
        assert_eq!(route.targets[0].node, "m4");
        assert_eq!(route.targets[0].model, "qwen-7b-mlx");
        assert!(route.reason.contains("rule 'development'"), "{}", route.reason);
    }

    #[test]
    fn development_work_the_laptop_cannot_finish_in_five_minutes_goes_elsewhere() {
        let mut nodes = cluster();
        nodes[0].tokens_per_sec = Some(5.0);
        let mut req = with_task("development");
        req.prompt_tokens = 1900;
        req.max_tokens = Some(1024);
        assert_eq!(
            route(decide(&seed_params(), &req, &nodes)).targets[0].node,
            "m4",
            "about 4.2 min"
        );
        req.max_tokens = Some(2000);
        let r = route(decide(&seed_params(), &req, &nodes));
        assert_eq!(r.targets[0].node, "ryzen");
        assert!(
            r.reason.contains("m4 would take about 7.5 min (over 5)"),
            "{}",
            r.reason
        );
        // No max_tokens: as many as the node allows (2048 at 5 tokens/s: too long).
        req.max_tokens = None;
        req.prompt_tokens = 100;
        assert_eq!(route(decide(&seed_params(), &req, &nodes)).targets[0].node, "ryzen");
    }

    #[test]
    fn a_throttled_laptop_gets_no_development_work() {
        let mut nodes = cluster();
        nodes[0].thermal_throttled = true;
        let r = route(decide(&seed_params(), &with_task("development"), &nodes));
        assert_eq!(r.targets[0].node, "ryzen");
        assert!(r.reason.contains("m4 thermally throttled"), "{}", r.reason);
    }

    #[test]
    fn production_and_untagged_work_prefer_the_ryzen_even_full_and_go_elsewhere_when_it_is_down() {
        let mut nodes = cluster();
        nodes[1].in_flight = 4;
        for req in [with_task("production"), request("qwen25-coder-7b")] {
            let r = route(decide(&seed_params(), &req, &nodes));
            assert_eq!(r.targets[0].node, "ryzen", "{:?}: {}", req.task, r.reason);
        }
        nodes[1].healthy = false;
        let r = route(decide(&seed_params(), &with_task("production"), &nodes));
        assert_eq!(r.targets[0].node, "xeon", "{}", r.reason);
        assert!(
            r.reason.contains("fell through production (ryzen offline)"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn batch_work_never_reaches_the_laptop() {
        // A model only the xeon and the m4 serve, with the xeon down.
        let mut nodes = cluster();
        nodes[1].models.retain(|m| m.logical != "qwen25-coder-7b");
        nodes[2].healthy = false;
        match decide(&seed_params(), &with_task("batch"), &nodes) {
            Decision::Reject(r) => {
                assert_eq!(r.status, 503);
                assert!(
                    r.message
                        .starts_with("rule 'batch-queue' keeps this work on its own nodes"),
                    "{}",
                    r.message
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn development_falls_through_when_the_m4_is_offline_or_on_battery() {
        let mut nodes = cluster();
        nodes[0].healthy = false;
        let r = route(decide(&seed_params(), &with_task("development"), &nodes));
        assert_eq!(r.targets[0].node, "ryzen");
        assert!(r.reason.contains("fell through development"), "{}", r.reason);

        assert!(
            r.reason.contains("fell through development (m4 offline)"),
            "{}",
            r.reason
        );

        let mut nodes = cluster();
        nodes[0].on_battery = Some(true);
        let r = route(decide(&seed_params(), &with_task("development"), &nodes));
        assert_eq!(r.targets[0].node, "ryzen");
        assert!(
            r.reason.ends_with("fell through development (m4 on battery)"),
            "{}",
            r.reason
        );

        let mut nodes = cluster();
        nodes[0].in_flight = 1;
        let r = route(decide(&seed_params(), &with_task("development"), &nodes));
        assert!(
            r.reason.ends_with("fell through development (m4 busy (1/1))"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn production_and_high_priority_go_to_the_ryzen() {
        assert_eq!(
            route(decide(&seed_params(), &with_task("production"), &cluster())).targets[0].node,
            "ryzen"
        );
        let mut req = request("qwen25-coder-7b");
        req.priority = 9;
        assert_eq!(route(decide(&seed_params(), &req, &cluster())).targets[0].node, "ryzen");
    }

    #[test]
    fn batch_goes_to_the_xeon_and_falls_back_to_the_ryzen_when_the_xeon_is_full() {
        let r = route(decide(&seed_params(), &with_task("batch"), &cluster()));
        assert_eq!(order(&r), ["xeon", "ryzen"], "never the laptop");

        let mut nodes = cluster();
        nodes[2].in_flight = 2;
        let r = route(decide(&seed_params(), &with_task("batch"), &nodes));
        assert_eq!(r.targets[0].node, "ryzen");
    }

    #[test]
    fn untagged_work_queues_on_the_ryzen_even_when_it_is_full() {
        let mut nodes = cluster();
        nodes[1].in_flight = 4;
        let r = route(decide(&seed_params(), &request("qwen25-coder-7b"), &nodes));
        assert_eq!(r.targets[0].node, "ryzen");
        assert!(r.reason.contains("fallback-queue"), "{}", r.reason);
    }

    #[test]
    fn respects_model_availability_and_node_token_limits() {
        let mut req = with_task("batch");
        req.model = "qwen25-coder-32b".to_owned();
        let r = route(decide(&seed_params(), &req, &cluster()));
        assert_eq!(order(&r), ["ryzen"]);
        assert_eq!(r.targets[0].model, "qwen-32b");

        let mut req = with_task("batch");
        req.max_tokens = Some(3000);
        let r = route(decide(&seed_params(), &req, &cluster()));
        assert_eq!(order(&r), ["ryzen"], "xeon and m4 cap max_tokens at 2048");
    }

    #[test]
    fn nodes_no_rule_names_serve_through_the_wildcard_least_loaded_first() {
        let mut nodes = cluster();
        let mut gpu4 = node("gpu4", &[("qwen25-coder-7b", "qwen-7b")], 2);
        gpu4.in_flight = 1;
        let local = node("local", &[("tinyllama", "tinyllama")], 1);
        nodes.extend([gpu4, local]);
        let r = route(decide(&seed_params(), &with_task("batch"), &nodes));
        assert_eq!(order(&r), ["xeon", "ryzen", "gpu4"], "batch: never the laptop");

        let mut req = request("tinyllama");
        req.task = Some("development".into());
        let r = route(decide(&seed_params(), &req, &nodes));
        assert_eq!(order(&r), ["local"], "a model only an unnamed node serves goes there");
        assert!(r.reason.contains("rule 'fallback'"), "{}", r.reason);
    }

    #[test]
    fn a_healthy_node_no_rule_can_reach_is_named_in_the_rejection() {
        let mut params = seed_params();
        params.rules.last_mut().expect("fallback").nodes = vec!["ryzen".into(), "xeon".into(), "m4".into()];
        let mut nodes = cluster();
        nodes.push(node("gpu4", &[("tinyllama", "tinyllama")], 2));
        match decide(&params, &request("tinyllama"), &nodes) {
            Decision::Reject(r) => {
                assert_eq!(r.status, 503);
                assert!(
                    r.message
                        .contains("healthy node(s) gpu4 serve it but no rule names them"),
                    "{}",
                    r.message
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_when_nothing_can_serve() {
        match decide(&seed_params(), &request("llama2-70b"), &cluster()) {
            Decision::Reject(r) => assert_eq!(r.status, 404),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn configure_refuses_an_empty_rule_table() {
        let err = SeedRules::configure(r#"{"rules": []}"#.to_owned()).unwrap_err();
        assert!(err.contains("at least one rule"), "{err}");
        let err =
            SeedRules::configure(r#"{"rules": [{"name": "x", "nodes": ["a"], "colour": 1}]}"#.to_owned()).unwrap_err();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }
}
