//! `finish-time`: each request goes where it is expected to be served soonest, estimated
//! from every candidate's live load, measured speed and time to first token, with the seed's
//! roles as preferences worth a few seconds rather than walls.
//!
//! A request belongs to a class (its task, priority and streaming):
//! - **interactive** (development work, or an untagged stream): ordered by the estimated time
//!   to its first token. Every node whose estimate is within `race_s` of the best is a target,
//!   so while all are full the request takes whichever slot frees first (the controller's
//!   queue), instead of waiting on one node's queue.
//! - **production** (the production task, or priority >= `high_priority`): the preferred
//!   nodes (the ryzen) while one is healthy, waited for when full (the seed: "Ryzen
//!   exclusively"); the others only when it refuses or is down.
//! - **batch** (batch, preprocessing, testing, ...): ordered by estimated time to finish;
//!   never a laptop; a node can keep `reserve` slots free of batch work for interactive and
//!   production requests (none by default).
//! - **other**: ordered by estimated time to finish, preferred nodes first.
//!
//! A laptop (`laptops`) is skipped while on battery or throttled, and takes interactive work
//! only when it would finish within `laptop_max_minutes`.
//!
//! **Caches.** A request's first token includes the prefill of the prompt tokens the node
//! does not hold yet (the host's cache estimate per candidate, over the node's measured
//! prefill speed): a coding agent's 20k-token turn is seconds on a node that holds its
//! prefix and much longer on one that does not. So interactive work stays where its prefix
//! is (it waits for that node's slot, `wait_for_first`) while that is still expected to be
//! sooner than a cold node with a free slot by `sticky_margin_s`; once the warm node is
//! saturated (its queue costs more than the prefill it saves) the request moves.

use std::collections::BTreeMap;

use serde::Deserialize;
use switchyard_policy_sdk::{self as sdk, Decision, Node, Request, Route};

sdk::export_params_policy!(FinishTime, Params, decide, Params::validate);

/// What kind of work a request is, which decides what is minimised for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    Interactive,
    Production,
    Batch,
    Other,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Interactive => "interactive",
            Class::Production => "production",
            Class::Batch => "batch",
            Class::Other => "other",
        }
    }
}

/// The policy's `[params]`; every field has the seed's default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub interactive_tasks: Vec<String>,
    pub production_tasks: Vec<String>,
    pub batch_tasks: Vec<String>,
    /// Requests at or above this priority are production work whatever their task.
    pub high_priority: u8,
    /// Per class, the nodes the seed assigns it, in order of preference.
    pub prefer: BTreeMap<Class, Vec<String>>,
    /// Per class, what being a preferred node is worth, in seconds of estimated time (it
    /// orders the nodes that have a free slot; a request takes the first of those).
    pub preference_s: BTreeMap<Class, f32>,
    /// Interactive work races every node whose first token is expected within this many
    /// seconds of the best one's.
    pub race_s: f32,
    /// Production work waits for a full preferred node while one is healthy.
    pub production_waits: bool,
    /// Batch work that finds no free slot waits for the node it would finish soonest on
    /// (the seed's batch queue on the xeon) instead of taking whichever slot frees first, so
    /// freed slots go to interactive and production work (off by default: measured at 85 %
    /// load it halves interactive TTFT p95 but costs a fifth of batch goodput).
    pub batch_waits: bool,
    /// Machines that are laptops: never batch work, not on battery, not while throttled.
    pub laptops: Vec<String>,
    /// A laptop takes interactive work only when it would finish within this many minutes.
    pub laptop_max_minutes: f32,
    /// Per node, slots that batch work leaves free.
    pub reserve: BTreeMap<String, u32>,
    /// Output tokens assumed for a request that sets no `max_tokens`.
    pub default_max_tokens: u32,
    /// Output tokens assumed for each request a node is already serving, to estimate when
    /// its next slot frees.
    pub typical_tokens: u32,
    /// Prompt tokens per second assumed for a node that has measured neither its prefill
    /// nor its decode speed.
    pub unmeasured_prefill_tokens_per_sec: f32,
    /// For a node that has measured its decode speed but not its prefill: prefill assumed at
    /// this many times its decode speed.
    pub unmeasured_prefill_per_decode: f32,
    /// Interactive work waits for a full node that holds its prefix when that is expected
    /// to give the first token at least this many seconds sooner than the best free node.
    pub sticky_margin_s: f32,
}

impl Default for Params {
    fn default() -> Self {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Self {
            interactive_tasks: strings(&["development", "prototype", "code-review", "interactive", "learning"]),
            production_tasks: strings(&["production"]),
            batch_tasks: strings(&["batch", "preprocessing", "testing", "evaluation", "validation"]),
            high_priority: 8,
            prefer: BTreeMap::from([
                (Class::Interactive, strings(&["m4"])),
                (Class::Production, strings(&["ryzen"])),
                (Class::Batch, strings(&["xeon"])),
                (Class::Other, strings(&["ryzen", "xeon"])),
            ]),
            preference_s: BTreeMap::from([
                (Class::Interactive, 2.0),
                (Class::Production, 30.0),
                (Class::Batch, 60.0),
                (Class::Other, 5.0),
            ]),
            race_s: 60.0,
            production_waits: true,
            batch_waits: false,
            laptops: strings(&["m4"]),
            laptop_max_minutes: 5.0,
            reserve: BTreeMap::new(),
            default_max_tokens: 512,
            typical_tokens: 512,
            unmeasured_prefill_tokens_per_sec: 1000.0,
            unmeasured_prefill_per_decode: 20.0,
            sticky_margin_s: 0.5,
        }
    }
}

impl Params {
    fn validate(&self) -> Result<(), String> {
        let preferences = self
            .preference_s
            .iter()
            .map(|(class, value)| (format!("preference_s.{}", class.name()), *value));
        let scalars = [
            ("race_s".to_owned(), self.race_s),
            ("laptop_max_minutes".to_owned(), self.laptop_max_minutes),
            ("sticky_margin_s".to_owned(), self.sticky_margin_s),
        ];
        for (name, value) in [
            (
                "unmeasured_prefill_tokens_per_sec",
                self.unmeasured_prefill_tokens_per_sec,
            ),
            ("unmeasured_prefill_per_decode", self.unmeasured_prefill_per_decode),
        ] {
            if !(value > 0.0 && value.is_finite()) {
                return Err(format!("[params] {name} must be a number above zero, not {value}"));
            }
        }
        for (name, value) in preferences.chain(scalars) {
            if !(value >= 0.0 && value.is_finite()) {
                return Err(format!("[params] {name} must be a number of zero or more, not {value}"));
            }
        }
        if self.high_priority > 9 {
            return Err(format!(
                "[params] high_priority must be 0-9 (request priorities), not {}",
                self.high_priority
            ));
        }
        if self.default_max_tokens == 0 || self.typical_tokens == 0 {
            return Err("[params] default_max_tokens and typical_tokens must be at least 1".to_owned());
        }
        Ok(())
    }

    pub fn class_of(&self, req: &Request) -> Class {
        let task = req.task.as_deref();
        let listed = |list: &[String]| task.is_some_and(|t| list.iter().any(|l| l == t));
        if listed(&self.production_tasks) || req.priority >= self.high_priority {
            Class::Production
        } else if listed(&self.interactive_tasks) || (task.is_none() && req.stream) {
            Class::Interactive
        } else if listed(&self.batch_tasks) {
            Class::Batch
        } else {
            Class::Other
        }
    }

    fn preferred(&self, class: Class, node: &str) -> bool {
        self.prefer
            .get(&class)
            .is_some_and(|nodes| nodes.iter().any(|n| n == node))
    }

    fn is_laptop(&self, node: &str) -> bool {
        self.laptops.iter().any(|l| l == node)
    }
}

/// Speed assumed for a node that has not measured one yet.
const UNMEASURED_TOKENS_PER_SEC: f32 = 20.0;
/// Time to first token assumed for a node that has not measured one yet.
const UNMEASURED_TTFT_S: f32 = 0.5;
/// Uncached prompt tokens whose prefill the measured time to first token already holds
/// (the agent samples prefill speed on prompts longer than this).
const PREFILL_IN_TTFT_TOKENS: u32 = 256;

/// One candidate's estimates for one request, in seconds from now.
#[derive(Debug, Clone, Copy)]
pub struct Estimate {
    /// A slot is free now.
    pub free: bool,
    /// Until a slot is free (0 when one is) plus any model load.
    pub start_s: f32,
    /// Prefill of the prompt tokens the node does not hold.
    pub prefill_s: f32,
    pub first_token_s: f32,
    pub finish_s: f32,
}

/// When `node` would start, answer and finish `req`, given `slots` usable slots and the
/// `cached` prompt tokens it is estimated to hold.
pub fn estimate(params: &Params, node: &Node, req: &Request, slots: u32, cached: u32) -> Estimate {
    estimate_with(
        params,
        node,
        req,
        slots,
        cached,
        params.unmeasured_prefill_tokens_per_sec,
    )
}

/// [`estimate`], with `unmeasured_prefill` the prefill speed assumed where the node has
/// measured none.
fn estimate_with(
    params: &Params,
    node: &Node,
    req: &Request,
    slots: u32,
    cached: u32,
    unmeasured_prefill: f32,
) -> Estimate {
    let speed = node
        .tokens_per_sec
        .filter(|s| *s > 0.0 && s.is_finite())
        .unwrap_or(UNMEASURED_TOKENS_PER_SEC);
    let ttft_s = node
        .ttft_ms
        .filter(|t| *t >= 0.0 && t.is_finite())
        .map_or(UNMEASURED_TTFT_S, |t| t / 1000.0);
    let busy = node.in_flight + node.queued;
    // Each request ahead of this one holds a slot for about a typical request's time; with
    // `slots` served at once, the queue drains that many at a time.
    let typical_s = ttft_s + params.typical_tokens as f32 / speed;
    let wait_s = if busy < slots {
        0.0
    } else {
        (busy - slots + 1) as f32 * typical_s / slots.max(1) as f32
    };
    let start_s = wait_s + sdk::load_delay_ms(node, req) as f32 / 1000.0;
    let prefill_speed = node
        .prefill_tokens_per_sec
        .filter(|s| *s > 0.0 && s.is_finite())
        .unwrap_or(unmeasured_prefill);
    // The measured time to first token already holds a short prompt's prefill.
    let uncached = req.prompt_tokens.saturating_sub(cached);
    let prefill_s = uncached.saturating_sub(PREFILL_IN_TTFT_TOKENS) as f32 / prefill_speed;
    let first_token_s = start_s + ttft_s + prefill_s;
    let tokens = req.max_tokens.unwrap_or(params.default_max_tokens).min(node.max_tokens);
    Estimate {
        free: busy < slots,
        start_s,
        prefill_s,
        first_token_s,
        finish_s: first_token_s + tokens as f32 / speed,
    }
}

/// The prefill speed assumed for a node that has not measured one: its measured decode speed
/// times `unmeasured_prefill_per_decode` (20: the lowest ratio of the seed's machines, the
/// M4's 380 / 18; a 3090 has ~90), else `unmeasured_prefill_tokens_per_sec`. Tied to the
/// node's own speed, so that one slow node's figure never makes the others look slow too
/// (every session would then stay wherever the first shared prefix landed).
fn unmeasured_prefill(params: &Params, node: &Node) -> f32 {
    node.tokens_per_sec
        .filter(|s| *s > 0.0 && s.is_finite())
        .map_or(params.unmeasured_prefill_tokens_per_sec, |decode| {
            decode * params.unmeasured_prefill_per_decode
        })
}

/// Why `node` is not a candidate for this class of work, or `None`.
fn excluded(
    params: &Params,
    class: Class,
    node: &Node,
    req: &Request,
    cached: u32,
    unmeasured_prefill: f32,
) -> Option<String> {
    if let Some(why) = sdk::ineligibility(node, req) {
        return Some(why.to_owned());
    }
    if params.is_laptop(&node.name) {
        if class == Class::Batch {
            return Some("a laptop (no batch work)".to_owned());
        }
        if node.on_battery == Some(true) {
            return Some("on battery".to_owned());
        }
        if node.thermal_throttled || node.gpus.iter().any(|g| g.throttled) {
            return Some("thermally throttled".to_owned());
        }
        let minutes =
            estimate_with(params, node, req, node.max_concurrency, cached, unmeasured_prefill).finish_s / 60.0;
        if minutes > params.laptop_max_minutes {
            return Some(format!(
                "would take about {minutes:.1} min (over {})",
                params.laptop_max_minutes
            ));
        }
    }
    None
}

/// Whether interactive work should wait for a full node (the one holding its prefix): the
/// best full candidate is expected to answer sooner than the best free one by the margin.
fn worth_waiting(params: &Params, ranked: &[Ranked<'_>]) -> bool {
    let best = |free: bool| {
        ranked
            .iter()
            .filter(|r| r.1.free == free)
            .map(|r| r.0)
            .fold(f32::INFINITY, f32::min)
    };
    best(false) + params.sticky_margin_s < best(true)
}

/// A candidate as the policy ranks it: (objective, estimate, node), lower objective first.
type Ranked<'a> = (f32, Estimate, &'a Node);

/// The whole policy, callable natively as well as from the export.
pub fn decide(params: &Params, req: &Request, nodes: &[Node]) -> Decision {
    let class = params.class_of(req);
    let (mut ranked, skipped) = rank(params, class, req, nodes);
    if ranked.is_empty() {
        return match sdk::no_capacity(req, nodes) {
            Decision::Reject(mut reject) if reject.status == 503 && !skipped.is_empty() => {
                reject.message = format!("{} ({})", reject.message, skipped.join(", "));
                Decision::Reject(reject)
            }
            other => other,
        };
    }
    // Nodes with a free slot first: the controller gives the request to the first target
    // with one, so that is the order it is served in; the full ones follow, for the request to
    // take whichever frees first.
    ranked.sort_by(|a, b| {
        (!a.1.free)
            .cmp(&!b.1.free)
            .then_with(|| a.0.total_cmp(&b.0))
            .then_with(|| a.2.name.cmp(&b.2.name))
    });
    let sticky = class == Class::Interactive && worth_waiting(params, &ranked);
    if sticky {
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.2.name.cmp(&b.2.name)));
    }
    let chosen = choose(params, class, &ranked);
    let (_, best_estimate, best) = chosen[0];
    let waits = match class {
        Class::Production => params.production_waits && params.preferred(class, &best.name) && !best_estimate.free,
        Class::Batch => params.batch_waits && !best_estimate.free,
        Class::Interactive => sticky,
        Class::Other => false,
    };
    Decision::Route(Route {
        targets: chosen
            .iter()
            .take(sdk::MAX_TARGETS)
            .map(|(_, _, n)| sdk::target_for(n, req))
            .collect(),
        reason: reason(class, best_estimate, best, &skipped),
        wait_for_first: waits,
    })
}

/// Every eligible node with its estimate and objective, and why the others were left out.
/// Batch work goes to a node at its reserve only when no other node can take it.
fn rank<'a>(params: &Params, class: Class, req: &Request, nodes: &'a [Node]) -> (Vec<Ranked<'a>>, Vec<String>) {
    let mut skipped: Vec<String> = Vec::new();
    let mut ranked: Vec<Ranked<'a>> = Vec::with_capacity(nodes.len());
    let mut reserved: Vec<Ranked<'a>> = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        let cached = sdk::cached_tokens(index);
        let unmeasured_prefill = unmeasured_prefill(params, node);
        if let Some(why) = excluded(params, class, node, req, cached, unmeasured_prefill) {
            skipped.push(format!("{} {why}", node.name));
            continue;
        }
        let reserve = if class == Class::Batch {
            params.reserve.get(&node.name).copied().unwrap_or(0)
        } else {
            0
        };
        // A node with no slot beyond its reserve is estimated on all of them (it is only
        // used when nothing else is left, below).
        let slots = match node.max_concurrency.saturating_sub(reserve) {
            0 => node.max_concurrency,
            slots => slots,
        };
        let estimate = estimate_with(params, node, req, slots, cached, unmeasured_prefill);
        let mut objective = match class {
            Class::Interactive => estimate.first_token_s,
            _ => estimate.finish_s,
        };
        if params.preferred(class, &node.name) {
            objective -= params.preference_s.get(&class).copied().unwrap_or(0.0);
        }
        // Batch work does not take a reserved slot: a node at its batch limit is not a target
        // (the request waits for one that is) unless it is the only node left.
        if reserve > 0 && node.in_flight + node.queued + reserve >= node.max_concurrency {
            reserved.push((objective, estimate, node));
            continue;
        }
        ranked.push((objective, estimate, node));
    }
    if ranked.is_empty() {
        return (reserved, skipped);
    }
    skipped.extend(reserved.iter().map(|(_, _, node)| {
        format!(
            "{} keeps {} slot(s) for other work ({}/{})",
            node.name,
            params.reserve.get(&node.name).copied().unwrap_or(0),
            node.in_flight,
            node.max_concurrency
        )
    }));
    (ranked, skipped)
}

/// The targets in order: interactive work races every node within `race_s` of the best;
/// production waits for its preferred nodes while one is up (the others follow only for
/// when it refuses before any work); the rest go in ranked order.
fn choose<'r, 'a>(params: &Params, class: Class, ranked: &'r [Ranked<'a>]) -> Vec<&'r Ranked<'a>> {
    match class {
        Class::Interactive => {
            let best = ranked[0].0;
            ranked.iter().filter(|r| r.0 <= best + params.race_s).collect()
        }
        Class::Production if params.production_waits => {
            let (mut first, rest): (Vec<_>, Vec<_>) = ranked.iter().partition(|r| params.preferred(class, &r.2.name));
            first.extend(rest);
            first
        }
        _ => ranked.iter().collect(),
    }
}

/// The decision's reason: the class, the node, what it is expected to take, its load, and
/// the nodes left out.
fn reason(class: Class, estimate: &Estimate, best: &Node, skipped: &[String]) -> String {
    let measure = match class {
        Class::Interactive if estimate.prefill_s > 0.05 => format!(
            "first token in ~{:.1} s, {:.1} s of it prefill",
            estimate.first_token_s, estimate.prefill_s
        ),
        Class::Interactive => format!("first token in ~{:.1} s", estimate.first_token_s),
        _ => format!("done in ~{:.0} s", estimate.finish_s),
    };
    let wait = if estimate.start_s > 0.05 {
        format!(", starts in ~{:.1} s", estimate.start_s)
    } else {
        String::new()
    };
    let mut reason = format!(
        "finish-time {}: {} ({measure}{wait}, {}/{})",
        class.name(),
        best.name,
        best.in_flight + best.queued,
        best.max_concurrency
    );
    if !skipped.is_empty() {
        reason.push_str("; skipped ");
        reason.push_str(&skipped.join(", "));
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use sdk::fixture::{node, request};

    fn seed() -> Vec<Node> {
        let mut m4 = node("m4", &[("m", "m-mlx")], 1);
        m4.tokens_per_sec = Some(18.0);
        m4.ttft_ms = Some(350.0);
        m4.on_battery = Some(false);
        let mut ryzen = node("ryzen", &[("m", "m-vllm")], 4);
        ryzen.tokens_per_sec = Some(45.0);
        ryzen.ttft_ms = Some(120.0);
        let mut xeon = node("xeon", &[("m", "m-q4")], 2);
        xeon.tokens_per_sec = Some(22.0);
        xeon.ttft_ms = Some(200.0);
        vec![m4, ryzen, xeon]
    }

    fn with_task(task: &str, max_tokens: u32) -> Request {
        let mut req = request("m");
        req.task = Some(task.to_owned());
        req.max_tokens = Some(max_tokens);
        req
    }

    fn route(decision: Decision) -> Route {
        match decision {
            Decision::Route(route) => route,
            Decision::Reject(r) => panic!("rejected: {}", r.message),
        }
    }

    fn order(route: &Route) -> Vec<&str> {
        route.targets.iter().map(|t| t.node.as_str()).collect()
    }

    #[test]
    fn development_goes_to_a_free_laptop_and_races_the_others_when_it_is_busy() {
        let params = Params::default();
        let mut nodes = seed();
        let r = route(decide(&params, &with_task("development", 64), &nodes));
        assert_eq!(order(&r)[0], "m4", "{}", r.reason);
        assert!(!r.wait_for_first);

        nodes[0].in_flight = 1;
        let r = route(decide(&params, &with_task("development", 64), &nodes));
        assert_eq!(order(&r), ["ryzen", "xeon", "m4"], "{}", r.reason);
        assert!(r.reason.starts_with("finish-time interactive: ryzen"), "{}", r.reason);
    }

    #[test]
    fn a_laptop_on_battery_throttled_or_too_slow_gets_no_development_work() {
        let params = Params::default();
        let mut nodes = seed();
        nodes[0].on_battery = Some(true);
        let r = route(decide(&params, &with_task("development", 64), &nodes));
        assert!(!order(&r).contains(&"m4"));
        assert!(r.reason.contains("m4 on battery"), "{}", r.reason);

        let mut nodes = seed();
        nodes[0].thermal_throttled = true;
        let r = route(decide(&params, &with_task("development", 64), &nodes));
        assert!(!order(&r).contains(&"m4"), "{}", r.reason);

        // 2048 tokens at 18 tok/s is under 2 minutes; a limit of 1 minute excludes it.
        let params = Params {
            laptop_max_minutes: 1.0,
            ..Params::default()
        };
        let r = route(decide(&params, &with_task("development", 2048), &seed()));
        assert!(r.reason.contains("m4 would take about"), "{}", r.reason);
    }

    #[test]
    fn batch_never_reaches_the_laptop_and_leaves_a_reserved_ryzen_slot_free() {
        let params = Params {
            reserve: BTreeMap::from([("ryzen".to_owned(), 1)]),
            ..Params::default()
        };
        let mut nodes = seed();
        let r = route(decide(&params, &with_task("batch", 1500), &nodes));
        assert!(!order(&r).contains(&"m4"), "{}", r.reason);
        assert_eq!(order(&r)[0], "xeon", "{}", r.reason);

        // The xeon full, the ryzen with one of its four slots taken: a long job is done
        // sooner on the ryzen than after the xeon's queue.
        nodes[2].in_flight = 2;
        nodes[1].in_flight = 1;
        let r = route(decide(&params, &with_task("batch", 1500), &nodes));
        assert_eq!(order(&r)[0], "ryzen", "{}", r.reason);

        // At three of four the last slot is kept for interactive and production work.
        nodes[1].in_flight = 3;
        let r = route(decide(&params, &with_task("batch", 1500), &nodes));
        assert_eq!(order(&r), ["xeon"], "{}", r.reason);
        assert!(r.reason.contains("ryzen keeps 1 slot(s)"), "{}", r.reason);

        // With the xeon down the ryzen is all there is: the work queues there.
        nodes[2].healthy = false;
        let r = route(decide(&params, &with_task("batch", 1500), &nodes));
        assert_eq!(order(&r), ["ryzen"], "{}", r.reason);
    }

    #[test]
    fn with_batch_waits_full_nodes_make_batch_work_wait_for_its_best_node() {
        let mut nodes = seed();
        nodes[1].in_flight = 4;
        nodes[2].in_flight = 2;
        let r = route(decide(&Params::default(), &with_task("batch", 1500), &nodes));
        assert_eq!(order(&r)[0], "xeon", "{}", r.reason);
        assert!(!r.wait_for_first, "by default it takes whichever slot frees first");
        let params = Params {
            batch_waits: true,
            ..Params::default()
        };
        let r = route(decide(&params, &with_task("batch", 1500), &nodes));
        assert_eq!(order(&r)[0], "xeon", "{}", r.reason);
        assert!(r.wait_for_first);
        // A free slot anywhere is taken at once.
        nodes[1].in_flight = 3;
        let r = route(decide(&params, &with_task("batch", 1500), &nodes));
        assert_eq!(order(&r)[0], "ryzen", "{}", r.reason);
        assert!(!r.wait_for_first);
    }

    #[test]
    fn production_waits_for_a_full_ryzen_while_it_is_up() {
        let params = Params::default();
        let mut nodes = seed();
        nodes[1].in_flight = 4;
        let r = route(decide(&params, &with_task("production", 256), &nodes));
        assert_eq!(order(&r)[0], "ryzen", "{}", r.reason);
        assert!(r.wait_for_first);

        nodes[1].healthy = false;
        let r = route(decide(&params, &with_task("production", 256), &nodes));
        assert_eq!(order(&r)[0], "xeon", "{}", r.reason);
        assert!(!r.wait_for_first);
    }

    #[test]
    fn high_priority_is_production_and_an_untagged_stream_is_interactive() {
        let params = Params::default();
        let mut req = request("m");
        req.priority = 9;
        assert_eq!(params.class_of(&req), Class::Production);
        req.priority = 5;
        req.stream = true;
        assert_eq!(params.class_of(&req), Class::Interactive);
        req.stream = false;
        assert_eq!(params.class_of(&req), Class::Other);
    }

    #[test]
    fn estimates_count_the_queue_the_speed_and_a_cold_model() {
        let params = Params::default();
        let mut nodes = seed();
        let req = with_task("batch", 450);
        let idle = estimate(&params, &nodes[1], &req, 4, 0);
        assert!((idle.finish_s - (0.12 + 10.0)).abs() < 0.01, "{idle:?}");
        nodes[1].in_flight = 4;
        nodes[1].queued = 3;
        let queued = estimate(&params, &nodes[1], &req, 4, 0);
        // Four requests ahead of a free slot, four served at once: one typical request.
        let typical = 0.12 + 512.0 / 45.0;
        assert!((queued.start_s - 4.0 * typical / 4.0).abs() < 0.01, "{queued:?}");
        nodes[2].models[0].loaded = false;
        nodes[2].models[0].load_ms = Some(8000);
        assert!((estimate(&params, &nodes[2], &req, 2, 0).start_s - 8.0).abs() < 0.01);
    }

    #[test]
    fn a_coding_agent_s_turn_stays_where_its_prefix_is_until_that_node_is_saturated() {
        let params = Params::default();
        let mut nodes = seed();
        for node in &mut nodes {
            node.prefill_tokens_per_sec = Some(if node.name == "m4" { 380.0 } else { 3000.0 });
        }
        // A 20k-token turn whose first 19k tokens the xeon holds.
        for node in &mut nodes {
            node.models[0].context_length = 32_768;
        }
        let mut req = with_task("development", 200);
        req.prompt_tokens = 20_000;
        sdk::fixture::set_cached_tokens(&[0, 0, 19_000]);
        // All free: the xeon, warm, first (the ryzen would prefill 20k tokens: ~6.7 s).
        let all_free = route(decide(&params, &req, &nodes));
        assert_eq!(order(&all_free)[0], "xeon", "{}", all_free.reason);
        assert!(all_free.reason.contains("first token in ~0."), "{}", all_free.reason);
        // The xeon full: with typical requests of 512 tokens (23.5 s there, two at once) its
        // next slot is ~11.7 s away, so the free, cold ryzen (~6.8 s) wins: saturated. With
        // short typical requests (40 tokens: a slot in ~1 s) waiting for the warm xeon wins.
        nodes[2].in_flight = 2;
        let busy = route(decide(&params, &req, &nodes));
        assert_eq!(order(&busy)[0], "ryzen", "saturated: {}", busy.reason);
        assert!(!busy.wait_for_first);
        let short = Params {
            typical_tokens: 40,
            ..Params::default()
        };
        let sticky = route(decide(&short, &req, &nodes));
        assert_eq!(order(&sticky)[0], "xeon", "{}", sticky.reason);
        assert!(sticky.wait_for_first, "it waits for the warm node's slot");
        // Without the estimate, the same request goes to the free ryzen.
        sdk::fixture::set_cached_tokens(&[]);
        let blind = route(decide(&short, &req, &nodes));
        assert_eq!(order(&blind)[0], "ryzen", "{}", blind.reason);
    }

    #[test]
    fn no_node_left_is_a_503_that_says_why_and_an_unknown_model_a_404() {
        let params = Params::default();
        let nodes = vec![seed().remove(0)];
        match decide(&params, &with_task("batch", 64), &nodes) {
            Decision::Reject(r) => {
                assert_eq!(r.status, 503);
                assert!(r.message.contains("m4 a laptop (no batch work)"), "{}", r.message);
            }
            other => panic!("{other:?}"),
        }
        match decide(&params, &request("nope"), &seed()) {
            Decision::Reject(r) => assert_eq!(r.status, 404),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn params_are_checked() {
        assert!(sdk::decode_params::<Params>("{\"race\": 1}").is_err());
        let bad = Params {
            high_priority: 12,
            ..Params::default()
        };
        assert!(bad.validate().is_err());
        let parsed: Params = sdk::decode_params("{\"prefer\": {\"batch\": [\"big\"]}}").expect("parses");
        assert!(parsed.preferred(Class::Batch, "big"));
        assert!(sdk::decode_params::<Params>("{\"prefer\": {\"bulk\": []}}").is_err());
    }
}
