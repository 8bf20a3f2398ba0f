//! Guest-side SDK for Switchyard policies: the bindings generated from `wit/` (once, here),
//! the cluster cache behind the 0.4.0 contract (with each candidate's cache estimate,
//! [`cached_tokens`]), params decoding, and the eligibility checks
//! every policy needs. A policy crate implements [`Policy`] and calls [`export_policy!`].

pub mod bindings {
    wit_bindgen::generate!({
        path: "wit/policy.wit",
        world: "policy",
        pub_export_macro: true,
        export_macro_name: "export_policy_world",
        default_bindings_module: "switchyard_policy_sdk::bindings",
    });
}

#[cfg(any(target_arch = "wasm32", test))]
mod alloc;
pub mod cluster;
mod decision;
mod memcmp;

pub use bindings::switchyard::policy::host::{LogLevel, log};
pub use bindings::switchyard::policy::types::{Gpu, ModelVariant, Node, Request};
pub use cluster::{Candidates, cached_tokens};
pub use decision::{Decision, Reject, Route, Target};

/// A routing policy. The SDK keeps the cluster the host hands over once per snapshot
/// version and shows [`Policy::route`] the request's candidates, each with only its variant
/// of the requested model and its live load, without copying them per request.
pub trait Policy {
    /// Called once per instance with the policy's `[params]` as JSON; an error refuses them.
    fn configure(params: String) -> Result<(), String>;
    /// Decide where `req` goes among `nodes` (every node that serves its model, healthy or
    /// not; in a chain, the previous stage's choices).
    fn route(req: &Request, nodes: &[Node]) -> Decision;
}

/// Export a type implementing [`Policy`] as the component's policy world. The exports exist
/// only in the Wasm build: natively (unit tests, benchmarks) several policies can then be
/// linked into one binary.
#[macro_export]
macro_rules! export_policy {
    ($ty:ident) => {
        #[cfg(target_arch = "wasm32")]
        mod __switchyard_policy_export {
            pub struct Export;
            impl $crate::bindings::Guest for Export {
                fn configure(params: String) -> Result<(), String> {
                    <super::$ty as $crate::Policy>::configure(params)
                }
                fn set_cluster(version: u64, nodes: Vec<$crate::Node>) {
                    $crate::cluster::set(version, nodes);
                }
                fn route(req: $crate::Request, candidates: Vec<u32>) -> $crate::bindings::switchyard::policy::types::Decision {
                    let candidates = $crate::Candidates::new(&candidates);
                    $crate::cluster::with_candidates(&req.model, candidates, |nodes| {
                        <super::$ty as $crate::Policy>::route(&req, nodes)
                    })
                }
            }
            $crate::bindings::export_policy_world!(Export with_types_in $crate::bindings);
        }
    };
}

/// Define and export `$name`, a policy that is one function of its `[params]`:
/// `decide(&params, req, nodes)`. The params are decoded (unknown fields refused) and, with a
/// fourth argument `fn(&Params) -> Result<(), String>`, checked when an instance is
/// configured, then kept in that instance; an instance never configured refuses every request
/// with a 503.
#[macro_export]
macro_rules! export_params_policy {
    ($name:ident, $params:ty, $decide:path) => {
        $crate::export_params_policy!($name, $params, $decide, |_: &$params| Ok(()));
    };
    ($name:ident, $params:ty, $decide:path, $check:expr) => {
        pub struct $name;

        thread_local! {
            static __SWITCHYARD_PARAMS: ::core::cell::RefCell<Option<$params>> =
                const { ::core::cell::RefCell::new(None) };
        }

        impl $crate::Policy for $name {
            fn configure(params: String) -> Result<(), String> {
                let params: $params = $crate::decode_params(&params)?;
                let check: fn(&$params) -> Result<(), String> = $check;
                check(&params)?;
                __SWITCHYARD_PARAMS.with(|c| *c.borrow_mut() = Some(params));
                Ok(())
            }

            fn route(req: &$crate::Request, nodes: &[$crate::Node]) -> $crate::Decision {
                __SWITCHYARD_PARAMS.with(|c| match c.borrow().as_ref() {
                    Some(params) => $decide(params, req, nodes),
                    None => $crate::no_capacity(req, &[]),
                })
            }
        }

        $crate::export_policy!($name);
    };
}

/// How long a request for `node`'s variant of the requested model waits before the node can
/// start on it: nothing when resident, else the node's estimate of the load (30 s when it
/// has never measured one).
pub fn load_delay_ms(node: &Node, req: &Request) -> u32 {
    match variant(node, &req.model) {
        Some(v) if !v.loaded => v.load_ms.unwrap_or(UNMEASURED_LOAD_MS),
        _ => 0,
    }
}

/// The load delay assumed for a cold model that was never measured.
pub const UNMEASURED_LOAD_MS: u32 = 30_000;

/// [`load_ratio`] with the model's warmth counted in: a node that must load the model first
/// counts a quarter of a full node's load more, plus a full node's per 10 s of estimated
/// load time. An idle warm node beats any cold one; a cold node that loads in seconds beats
/// a full warm one; a 40 s load loses to anything short of a deep queue.
pub fn effective_load(node: &Node, req: &Request) -> f32 {
    let delay = load_delay_ms(node, req);
    let cold = if delay > 0 { 0.25 + delay as f32 / 10_000.0 } else { 0.0 };
    load_ratio(node) + cold
}

/// Targets worth returning: the first is the choice, the rest are retries before the first
/// byte. More than a handful only costs marshalling (the host refuses more than 64).
pub const MAX_TARGETS: usize = 8;

/// Decode `configure`'s JSON params into a typed config; the error names what was wrong.
/// The error names the key's path (`rules[1].min_priority`), never a position in the JSON the
/// host made from the TOML: the host points at the TOML file's line.
pub fn decode_params<T: serde::de::DeserializeOwned>(params: &str) -> Result<T, String> {
    let params = if params.trim().is_empty() { "{}" } else { params };
    let mut json = serde_json::Deserializer::from_str(params);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let mut path = e.path().to_string();
        let inner = e.into_inner();
        let mut message = inner.to_string();
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
        // An unknown field's path ends with the field itself, which the message names.
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
            && let Some(parent) = path.strip_suffix(field)
        {
            path = parent.trim_end_matches('.').to_owned();
        }
        if path == "." || path.is_empty() {
            format!("invalid [params]: {message}")
        } else {
            format!("invalid [params] at {path}: {message}")
        }
    })
}

/// The variant of the request's logical model that `node` serves, if any.
pub fn variant<'n>(node: &'n Node, logical: &str) -> Option<&'n ModelVariant> {
    node.models.iter().find(|m| m.logical == logical)
}

/// Why a node cannot take a request, or `None` when it can.
pub fn ineligibility(node: &Node, req: &Request) -> Option<&'static str> {
    if !node.healthy {
        return Some("offline");
    }
    let Some(variant) = variant(node, &req.model) else {
        return Some("does not serve the model");
    };
    if let Some(max) = req.max_tokens {
        if max > node.max_tokens {
            return Some("max_tokens above the node's limit");
        }
        if req.prompt_tokens.saturating_add(max) > variant.context_length {
            return Some("prompt + max_tokens exceed the context length");
        }
    } else if req.prompt_tokens > variant.context_length {
        return Some("prompt exceeds the context length");
    }
    None
}

/// `in-flight + queued` relative to `max-concurrency`.
pub fn load_ratio(node: &Node) -> f32 {
    (node.in_flight + node.queued) as f32 / node.max_concurrency.max(1) as f32
}

pub fn has_free_slot(node: &Node) -> bool {
    node.in_flight < node.max_concurrency
}

/// A target for `node` serving the request's model (the caller checked eligibility).
pub fn target_for(node: &Node, req: &Request) -> Target {
    let model = variant(node, &req.model)
        .map(|v| v.local.clone())
        .unwrap_or_else(|| req.model.clone());
    Target {
        node: node.name.clone(),
        model,
    }
}

/// The rejection for a request no node can take: 404 if no node serves the model at all,
/// 503 if some do but none can take it now.
pub fn no_capacity(req: &Request, nodes: &[Node]) -> Decision {
    if nodes.iter().any(|n| variant(n, &req.model).is_some()) {
        Decision::Reject(Reject {
            status: 503,
            message: format!("no healthy node can serve model '{}' right now", req.model),
        })
    } else {
        Decision::Reject(Reject {
            status: 404,
            message: format!("model '{}' is not served by any node", req.model),
        })
    }
}

/// Builders for tests of policy logic, native or in the host.
pub mod fixture {
    use super::*;

    /// Give the next native `route` calls these cache estimates, one per candidate (what
    /// the host passes as each candidate's fifth number).
    pub fn set_cached_tokens(per_candidate: &[u32]) {
        crate::cluster::set_cached_tokens(per_candidate);
    }

    pub fn node(name: &str, models: &[(&str, &str)], max_concurrency: u32) -> Node {
        Node {
            name: name.to_owned(),
            labels: Vec::new(),
            runtime: "simulated".to_owned(),
            healthy: true,
            in_flight: 0,
            queued: 0,
            max_concurrency,
            max_tokens: 4096,
            cpu_util_pct: 0.0,
            mem_used_mb: 0,
            mem_total_mb: 0,
            gpus: Vec::new(),
            on_battery: None,
            thermal_throttled: false,
            tokens_per_sec: None,
            ttft_ms: None,
            prefill_tokens_per_sec: None,
            models: models
                .iter()
                .map(|(logical, local)| ModelVariant {
                    logical: (*logical).to_owned(),
                    local: (*local).to_owned(),
                    quantization: None,
                    context_length: 8192,
                    loaded: true,
                    load_ms: None,
                })
                .collect(),
            last_seen_ms: 0,
        }
    }

    pub fn request(model: &str) -> Request {
        Request {
            id: "test".to_owned(),
            api: "openai-chat".to_owned(),
            model: model.to_owned(),
            stream: false,
            prompt_tokens: 100,
            max_tokens: Some(256),
            priority: 5,
            task: None,
            session: None,
            tags: Vec::new(),
        }
    }
}
