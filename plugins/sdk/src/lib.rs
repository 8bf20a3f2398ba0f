//! Guest-side SDK for Switchyard policies: the bindings generated from `wit/` (once, here),
//! params decoding, and the eligibility checks every policy needs. A policy crate depends
//! on this, implements [`Guest`] and calls [`export_policy!`].

pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "policy",
        pub_export_macro: true,
        export_macro_name: "export_policy_world",
        default_bindings_module: "switchyard_policy_sdk::bindings",
    });
}

pub use bindings::Guest;
pub use bindings::switchyard::policy::host::{LogLevel, log};
pub use bindings::switchyard::policy::types::{Decision, Gpu, ModelVariant, Node, Reject, Request, Route, Target};

/// Export a type implementing [`Guest`] as the component's policy world. The exports exist
/// only in the Wasm build: natively (unit tests, benchmarks) several policies can then be
/// linked into one binary.
#[macro_export]
macro_rules! export_policy {
    ($ty:ident) => {
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::export_policy_world!($ty with_types_in $crate::bindings);
    };
}

/// Targets worth returning: the first is the choice, the rest are retries before the first
/// byte. More than a handful only costs marshalling (the host refuses more than 64).
pub const MAX_TARGETS: usize = 8;

/// Decode `configure`'s JSON params into a typed config; the error names what was wrong.
pub fn decode_params<T: serde::de::DeserializeOwned>(params: &str) -> Result<T, String> {
    let params = if params.trim().is_empty() { "{}" } else { params };
    serde_json::from_str(params).map_err(|e| format!("invalid [params]: {e}"))
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
            models: models
                .iter()
                .map(|(logical, local)| ModelVariant {
                    logical: (*logical).to_owned(),
                    local: (*local).to_owned(),
                    quantization: None,
                    context_length: 8192,
                    loaded: true,
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
