//! What the cluster serves, in each API's shape: OpenAI's `/v1/models`, Ollama's
//! `/api/tags` (merged across nodes) and `/api/ps` (loaded models across nodes).

use std::collections::BTreeMap;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::http::{ResponseBody, json};

use super::keys::Grant;
use super::{ClientApi, Front};

/// Logical model -> (nodes serving it, nodes where it is loaded), for the models `grant` allows.
fn models(front: &Front, grant: &Grant) -> BTreeMap<String, (Vec<Value>, Vec<String>)> {
    let mut out: BTreeMap<String, (Vec<Value>, Vec<String>)> = BTreeMap::new();
    for node in &front.nodes.snapshot().nodes {
        for model in node.models.iter().filter(|m| grant.allows(&m.logical)) {
            let entry = out.entry(model.logical.clone()).or_default();
            entry.0.push(json!({ "node": node.name, "local": model.local, "healthy": node.healthy, "runtime": node.runtime, "quantization": model.quantization }));
            if model.loaded && node.healthy {
                entry.1.push(node.name.clone());
            }
        }
    }
    out
}

/// The caller's grant, or the 401 in its API's shape.
fn grant(front: &Front, request: &Request<Incoming>, client: ClientApi) -> Result<Grant, super::FrontError> {
    front
        .keys
        .check(request.headers(), super::peer(request.extensions()), client)
        .map_err(|message| super::FrontError::Unauthorized(message.to_owned()))
}

pub fn openai_models(front: &Front, request: &Request<Incoming>) -> Response<ResponseBody> {
    let grant = match grant(front, request, ClientApi::OpenAi) {
        Ok(grant) => grant,
        Err(error) => return ClientApi::OpenAi.render(&error),
    };
    let data: Vec<Value> = models(front, &grant)
        .into_iter()
        .map(|(id, (nodes, _))| json!({ "id": id, "object": "model", "created": 0, "owned_by": "switchyard", "served_by": nodes }))
        .collect();
    json(StatusCode::OK, &json!({ "object": "list", "data": data }))
}

pub fn ollama_tags(front: &Front, request: &Request<Incoming>) -> Response<ResponseBody> {
    let grant = match grant(front, request, ClientApi::Ollama) {
        Ok(grant) => grant,
        Err(error) => return ClientApi::Ollama.render(&error),
    };
    let now = super::ollama::now_rfc3339();
    let list: Vec<Value> = models(front, &grant)
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

pub fn ollama_ps(front: &Front, request: &Request<Incoming>) -> Response<ResponseBody> {
    let grant = match grant(front, request, ClientApi::Ollama) {
        Ok(grant) => grant,
        Err(error) => return ClientApi::Ollama.render(&error),
    };
    let list: Vec<Value> = models(front, &grant)
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
