//! What the cluster serves, in each API's shape: OpenAI's `/v1/models`, Ollama's
//! `/api/tags` (merged across nodes) and `/api/ps` (loaded models across nodes).

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{HeaderMap, Response, StatusCode};
use serde_json::{Value, json};

use crate::app::App;
use crate::http::{ResponseBody, json};

/// Logical model -> (nodes serving it, nodes where it is loaded), healthy nodes first.
fn models(app: &Arc<App>) -> BTreeMap<String, (Vec<Value>, Vec<String>)> {
    let mut out: BTreeMap<String, (Vec<Value>, Vec<String>)> = BTreeMap::new();
    for node in &app.nodes.snapshot().nodes {
        for model in &node.models {
            let entry = out.entry(model.logical.clone()).or_default();
            entry.0.push(json!({ "node": node.name, "local": model.local, "healthy": node.healthy, "runtime": node.runtime, "quantization": model.quantization }));
            if model.loaded && node.healthy {
                entry.1.push(node.name.clone());
            }
        }
    }
    out
}

fn unauthorized(app: &Arc<App>, headers: &HeaderMap, ollama: bool) -> Option<Response<ResponseBody>> {
    let message = app.front.keys.check(headers).err()?;
    Some(if ollama {
        json(StatusCode::UNAUTHORIZED, &json!({ "error": message }))
    } else {
        crate::http::error_json(StatusCode::UNAUTHORIZED, "authentication_error", message)
    })
}

pub fn openai_models(app: &Arc<App>, headers: &HeaderMap) -> Response<ResponseBody> {
    if let Some(reply) = unauthorized(app, headers, false) {
        return reply;
    }
    let data: Vec<Value> = models(app)
        .into_iter()
        .map(|(id, (nodes, _))| json!({ "id": id, "object": "model", "created": 0, "owned_by": "switchyard", "served_by": nodes }))
        .collect();
    json(StatusCode::OK, &json!({ "object": "list", "data": data }))
}

pub fn ollama_tags(app: &Arc<App>, headers: &HeaderMap) -> Response<ResponseBody> {
    if let Some(reply) = unauthorized(app, headers, true) {
        return reply;
    }
    let now = super::ollama::now_rfc3339();
    let list: Vec<Value> = models(app)
        .into_iter()
        .map(|(name, (nodes, _))| {
            json!({
                "name": name, "model": name, "modified_at": now, "size": 0, "digest": "",
                "details": { "format": "", "family": "", "families": null, "parameter_size": "", "quantization_level": "" },
                "served_by": nodes,
            })
        })
        .collect();
    json(StatusCode::OK, &json!({ "models": list }))
}

pub fn ollama_ps(app: &Arc<App>, headers: &HeaderMap) -> Response<ResponseBody> {
    if let Some(reply) = unauthorized(app, headers, true) {
        return reply;
    }
    let list: Vec<Value> = models(app)
        .into_iter()
        .filter(|(_, (_, loaded))| !loaded.is_empty())
        .map(|(name, (_, loaded))| {
            json!({
                "name": name, "model": name, "size": 0, "size_vram": 0, "digest": "",
                "expires_at": "0001-01-01T00:00:00Z",
                "details": { "format": "", "family": "", "families": null, "parameter_size": "", "quantization_level": "" },
                "loaded_on": loaded,
            })
        })
        .collect();
    json(StatusCode::OK, &json!({ "models": list }))
}
