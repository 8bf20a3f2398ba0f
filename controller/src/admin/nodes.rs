//! The nodes over the admin API: the node table with why a node is unhealthy, loading and
//! unloading models on a node, draining, and the nodes' certificates.

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use switchyard_protocol::ClusterSnapshot;

use super::{Admin, AdminError, Answer, Route, body};
use crate::http::json;

/// `GET /admin/nodes`: the snapshot policies see, and every agent link.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct NodesView {
    pub snapshot: ClusterSnapshot,
    pub links: Vec<crate::node_table::LinkView>,
    /// Why each unhealthy or drained node takes no new work.
    #[serde(default)]
    pub unhealthy: std::collections::BTreeMap<String, String>,
}

/// `{"model": NAME}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelNamed {
    model: String,
}

pub(super) async fn handle(admin: &Admin, route: &Route<'_>, request: Request<Incoming>) -> Option<Answer> {
    Some(match (route.method, route.segments.as_slice()) {
        (&Method::GET, ["nodes"]) => Ok(json(
            StatusCode::OK,
            &NodesView {
                snapshot: with_admitted(admin),
                links: admin.nodes.links(),
                unhealthy: admin.nodes.health_reasons(),
            },
        )),
        (&Method::POST, ["nodes", node, "models", action @ ("load" | "unload")]) => {
            model_command(admin, node, action, request).await
        }
        (&Method::POST, ["nodes", node, action @ ("drain" | "undrain")]) => drain(admin, node, *action == "drain"),
        (&Method::GET, ["certs"]) => {
            let links: Vec<_> = admin
                .nodes
                .links()
                .into_iter()
                .map(|l| serde_json::json!({ "node": l.node, "cert": l.cert }))
                .collect();
            Ok(json(StatusCode::OK, &serde_json::json!({ "nodes": links })))
        }
        _ => return None,
    })
}

/// The node table, with each node's in-flight count at least what the controller itself has
/// sent there and not yet seen finish.
fn with_admitted(admin: &Admin) -> ClusterSnapshot {
    let mut snapshot = (*admin.nodes.snapshot()).clone();
    for node in &mut snapshot.nodes {
        node.in_flight = node.in_flight.max(admin.admission.in_use(&node.name));
    }
    snapshot
}

/// `POST /admin/nodes/NODE/models/load|unload`: passed to the node's agent.
async fn model_command(admin: &Admin, node: &str, action: &str, request: Request<Incoming>) -> Answer {
    let named: ModelNamed = body::json(request, "send {\"model\": NAME} (the logical name or the node's own)").await?;
    let body = serde_json::json!({ "model": named.model });
    let (status, answer) = crate::agents::command::post(&admin.nodes, node, &format!("/models/{action}"), &body)
        .await
        .map_err(|e| AdminError::NodeUnreachable(e.to_string()))?;
    if !status.is_success() {
        return Err(AdminError::Node {
            status,
            message: answer["error"]["message"]
                .as_str()
                .map_or_else(|| format!("node {node} answered {status}"), str::to_owned),
        });
    }
    Ok(json(StatusCode::OK, &answer))
}

fn drain(admin: &Admin, node: &str, drain: bool) -> Answer {
    admin.nodes.set_drained(node, drain).map_err(AdminError::NotFound)?;
    tracing::info!(%node, "{}", if drain { "drained: no new work; in-flight requests finish" } else { "undrained: takes work again" });
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "node": node, "drained": drain, "in_flight": admin.admission.in_use(node) }),
    ))
}
