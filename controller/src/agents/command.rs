//! Operator commands sent to an agent over its link (the controller is the HTTP/2 client on
//! it): `POST /models/load` and `/models/unload`. The agent's answer comes back as it is.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

use crate::node_table::NodeTable;

/// Why a command did not reach the agent.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("node '{0}' is not linked now")]
    NotLinked(String),
    #[error("node '{node}' did not answer: {message}")]
    Link { node: String, message: String },
}

/// How long a load may take before the operator's command gives up waiting (the load goes on).
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// `POST path` with a JSON `body` to `node`'s agent; its status and JSON answer.
pub async fn post(
    nodes: &NodeTable,
    node: &str,
    path: &str,
    body: &serde_json::Value,
) -> Result<(StatusCode, serde_json::Value), CommandError> {
    let mut sender = nodes
        .sender(node)
        .ok_or_else(|| CommandError::NotLinked(node.to_owned()))?;
    let failed = |message: String| CommandError::Link {
        node: node.to_owned(),
        message,
    };
    sender.ready().await.map_err(|e| failed(e.to_string()))?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://agent{path}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| failed(e.to_string()))?;
    let response = tokio::time::timeout(COMMAND_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| failed(format!("no answer within {COMMAND_TIMEOUT:?}")))?
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    let bytes = Limited::new(response.into_body(), 1024 * 1024)
        .collect()
        .await
        .map_err(|e| failed(e.to_string()))?
        .to_bytes();
    Ok((status, serde_json::from_slice(&bytes).unwrap_or_default()))
}
