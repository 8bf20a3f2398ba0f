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
        (&Method::POST, ["nodes", node, "drain"]) => drain(admin, node, request).await,
        (&Method::POST, ["nodes", node, "undrain"]) => undrain(admin, node),
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

/// `POST /admin/nodes/NODE/drain`, with an optional `{"deadline_s": N}`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    /// When the node's streams still running move to other nodes (absent: they finish there).
    #[serde(default)]
    deadline_s: Option<u32>,
}

/// No new work for `node`; with a deadline, the streams still running on it when the deadline
/// passes continue on other nodes (those that cannot end with an explicit error).
async fn drain(admin: &Admin, node: &str, request: Request<Incoming>) -> Answer {
    let raw = body::bytes(request, body::SMALL_LIMIT).await?;
    let asked: DrainBody = if raw.iter().all(u8::is_ascii_whitespace) {
        DrainBody::default()
    } else {
        serde_json::from_slice(&raw)
            .map_err(|e| AdminError::BadRequest(format!("{e}; send nothing, or {{\"deadline_s\": SECONDS}}")))?
    };
    admin.nodes.set_drained(node, true).map_err(AdminError::NotFound)?;
    match asked.deadline_s {
        Some(seconds) => {
            tracing::info!(%node, seconds, "drained: no new work; streams still running in {seconds} s move to other nodes");
            let (nodes, handover, name) = (admin.nodes.clone(), admin.handover.clone(), node.to_owned());
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(u64::from(seconds))).await;
                if nodes.is_drained(&name) {
                    tracing::info!(node = %name, "the drain's deadline passed: its answers move to other nodes");
                    handover.move_off(&name);
                }
            });
        }
        None => tracing::info!(%node, "drained: no new work; in-flight requests finish"),
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "node": node, "drained": true, "in_flight": admin.admission.in_use(node), "deadline_s": asked.deadline_s,
        }),
    ))
}

fn undrain(admin: &Admin, node: &str) -> Answer {
    admin.nodes.set_drained(node, false).map_err(AdminError::NotFound)?;
    tracing::info!(%node, "undrained: takes work again");
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "node": node, "drained": false, "in_flight": admin.admission.in_use(node) }),
    ))
}
