//! The one place `bindgen!` runs on `wit/`: the current contract (`wit/policy.wit`,
//! `switchyard:policy@0.4.0`) and the three before it (`wit/legacy/`: 0.3.0, 0.2.0 and
//! 0.1.0), whose components still load. The generated types stay private here; this module converts
//! between them and the wire types in `switchyard-protocol`. Only the fields the WIT
//! declares are marshalled.

use switchyard_protocol::{Decision, ModelVariant, NodeSnapshot, Reject, RequestInfo, Route, Target};

mod current {
    wasmtime::component::bindgen!({
        path: "../wit/policy.wit",
        world: "policy",
    });
}

mod legacy_v3 {
    wasmtime::component::bindgen!({
        path: "../wit/legacy/policy-0.3.0.wit",
        world: "policy",
    });
}

mod legacy_v2 {
    wasmtime::component::bindgen!({
        path: "../wit/legacy/policy-0.2.0.wit",
        world: "policy",
    });
}

mod legacy {
    wasmtime::component::bindgen!({
        path: "../wit/legacy/policy-0.1.0.wit",
        world: "policy",
    });
}

pub(crate) use current::switchyard::policy::host::{Host, LogLevel};
pub(crate) use current::switchyard::policy::types as wit;
pub(crate) use current::switchyard::policy::types::Host as TypesHost;
pub(crate) use current::{Policy, PolicyPre};

/// The 0.3.0 contract: four numbers per candidate (no cache estimate), no prefill speed.
pub(crate) mod v3 {
    pub(crate) use super::legacy_v3::switchyard::policy::host::{Host, LogLevel};
    pub(crate) use super::legacy_v3::switchyard::policy::types as wit;
    pub(crate) use super::legacy_v3::switchyard::policy::types::Host as TypesHost;
    pub(crate) use super::legacy_v3::{Policy, PolicyPre};
}

/// The 0.2.0 contract: candidates as a list of records.
pub(crate) mod v2 {
    pub(crate) use super::legacy_v2::switchyard::policy::host::{Host, LogLevel};
    pub(crate) use super::legacy_v2::switchyard::policy::types as wit;
    pub(crate) use super::legacy_v2::switchyard::policy::types::Host as TypesHost;
    pub(crate) use super::legacy_v2::{Policy, PolicyPre};
}

/// The 0.1.0 contract: every call lowers the candidate nodes whole.
pub(crate) mod v1 {
    pub(crate) use super::legacy::switchyard::policy::host::{Host, LogLevel};
    pub(crate) use super::legacy::switchyard::policy::types as wit;
    pub(crate) use super::legacy::switchyard::policy::types::Host as TypesHost;
    pub(crate) use super::legacy::{Policy, PolicyPre};
}

/// The request, GPU and node records of every contract have the same fields (0.1.0's node and
/// model variant lack only `load-ms`), and so do the protocol's types they are made from: one
/// macro per record copies any of them into a given contract's generated type.
macro_rules! request_record {
    ($req:expr => $($contract:ident)::+) => {{
        let req = $req;
        $($contract)::+::Request {
            id: req.id.clone(),
            api: req.api.as_str().to_owned(),
            model: req.model.clone(),
            stream: req.stream,
            prompt_tokens: req.prompt_tokens,
            max_tokens: req.max_tokens,
            priority: req.priority,
            task: req.task.clone(),
            session: req.session.clone(),
            tags: req.tags.clone(),
        }
    }};
}

macro_rules! gpu_record {
    ($gpu:expr => $($contract:ident)::+) => {{
        let gpu = $gpu;
        $($contract)::+::Gpu {
            name: gpu.name.clone(),
            util_pct: gpu.util_pct,
            mem_used_mb: gpu.mem_used_mb,
            mem_total_mb: gpu.mem_total_mb,
            temp_c: gpu.temp_c,
            power_w: gpu.power_w,
            throttled: gpu.throttled,
        }
    }};
}

/// A node record with `models` and its load (`in_flight`, `queued`) given, and any fields
/// only its contract has.
macro_rules! node_record {
    ($node:expr => $($contract:ident)::+, models: $models:expr, in_flight: $in_flight:expr, queued: $queued:expr $(, $extra:ident: $value:expr)*) => {{
        let node = $node;
        $($contract)::+::Node {
            name: node.name.clone(),
            labels: node.labels.clone(),
            runtime: node.runtime.as_str().to_owned(),
            healthy: node.healthy,
            in_flight: $in_flight,
            queued: $queued,
            max_concurrency: node.max_concurrency,
            max_tokens: node.max_tokens,
            cpu_util_pct: node.cpu_util_pct,
            mem_used_mb: node.mem_used_mb,
            mem_total_mb: node.mem_total_mb,
            gpus: node.gpus.iter().map(|gpu| gpu_record!(gpu => $($contract)::+)).collect(),
            on_battery: node.on_battery,
            thermal_throttled: node.thermal_throttled,
            tokens_per_sec: node.tokens_per_sec,
            ttft_ms: node.ttft_ms,
            models: $models,
            last_seen_ms: node.last_seen_ms,
            $($extra: $value,)*
        }
    }};
}

pub(crate) fn request_to_wit(req: &RequestInfo) -> wit::Request {
    request_record!(req => wit)
}

fn variant_to_wit(model: &ModelVariant) -> wit::ModelVariant {
    wit::ModelVariant {
        logical: model.logical.clone(),
        local: model.local.clone(),
        quantization: model.quantization.clone(),
        context_length: model.context_length,
        loaded: model.loaded,
        load_ms: if model.loaded { None } else { model.load_ms },
    }
}

pub(crate) fn node_to_wit(node: &NodeSnapshot) -> wit::Node {
    node_record!(node => wit,
        models: node.models.iter().map(variant_to_wit).collect(),
        in_flight: node.in_flight,
        queued: node.queued,
        prefill_tokens_per_sec: node.prefill_tokens_per_sec)
}

/// The conversions for an earlier contract whose records have the current one's fields
/// (less any the current one added): a node, a request, and a decision back.
macro_rules! earlier_contract {
    ($node_fn:ident, $request_fn:ident, $decision_fn:ident, $($contract:ident)::+) => {
        pub(crate) fn $node_fn(node: &wit::Node) -> $($contract)::+::Node {
            node_record!(node => $($contract)::+,
                models: node
                    .models
                    .iter()
                    .map(|m| $($contract)::+::ModelVariant {
                        logical: m.logical.clone(),
                        local: m.local.clone(),
                        quantization: m.quantization.clone(),
                        context_length: m.context_length,
                        loaded: m.loaded,
                        load_ms: m.load_ms,
                    })
                    .collect(),
                in_flight: node.in_flight,
                queued: node.queued)
        }

        pub(crate) fn $request_fn(req: &wit::Request) -> $($contract)::+::Request {
            request_record!(req => $($contract)::+)
        }

        /// Its decision, in the current contract's types (the same shape).
        pub(crate) fn $decision_fn(decision: $($contract)::+::Decision) -> wit::Decision {
            match decision {
                $($contract)::+::Decision::Route(route) => wit::Decision::Route(wit::Route {
                    targets: route.targets,
                    reason: route.reason,
                    wait_for_first: route.wait_for_first,
                }),
                $($contract)::+::Decision::Reject(reject) => wit::Decision::Reject(wit::Reject {
                    status: reject.status,
                    message: reject.message,
                }),
            }
        }
    };
}

// 0.3.0: the current contract less the cache estimate and the prefill speed.
earlier_contract!(node_to_v3, request_to_v3, decision_from_v3, v3::wit);
// 0.2.0: the same records; candidates as a list of records (`candidates::candidates_to_v2`).
earlier_contract!(node_to_v2, request_to_v2, decision_from_v2, v2::wit);

/// The 0.1.0 request.
pub(crate) fn request_to_v1(req: &wit::Request) -> v1::wit::Request {
    request_record!(req => v1::wit)
}

/// A 0.1.0 decision (targets by name).
pub(crate) fn decision_from_v1(decision: v1::wit::Decision) -> Decision {
    match decision {
        v1::wit::Decision::Route(route) => Decision::Route(Route {
            targets: route
                .targets
                .into_iter()
                .map(|t| Target {
                    node: t.node.into(),
                    model: t.model.into(),
                })
                .collect(),
            reason: route.reason,
            wait_for_first: false,
        }),
        v1::wit::Decision::Reject(reject) => Decision::Reject(Reject {
            status: reject.status,
            message: reject.message,
        }),
    }
}

/// A 0.1.0 node: `node` with only `variant` of its models and its live load.
pub(crate) fn node_to_v1(node: &wit::Node, variant: &wit::ModelVariant, in_flight: u32, queued: u32) -> v1::wit::Node {
    node_record!(node => v1::wit,
        models: vec![v1::wit::ModelVariant {
            logical: variant.logical.clone(),
            local: variant.local.clone(),
            quantization: variant.quantization.clone(),
            context_length: variant.context_length,
            loaded: variant.loaded,
        }],
        in_flight: in_flight,
        queued: queued)
}
