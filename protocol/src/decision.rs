//! Routing decisions: an ordered list of targets with a reason, or a rejection.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A node and the model name local to it. Shared strings: a decision names up to dozens of
/// targets per request, and the names come from the snapshot, where they already live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub node: Arc<str>,
    pub model: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub targets: Vec<Target>,
    pub reason: String,
    /// Wait for a slot on the first target when it is full, rather than take a free one
    /// further down; the others are then only for when the first refuses before any work.
    #[serde(default)]
    pub wait_for_first: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reject {
    pub status: u16,
    pub message: String,
}

/// What a policy (or the built-in fallback) decided for one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Decision {
    Route(Route),
    Reject(Reject),
}

impl Decision {
    pub fn first_node(&self) -> Option<&str> {
        match self {
            Decision::Route(route) => route.targets.first().map(|t| &*t.node),
            Decision::Reject(_) => None,
        }
    }

    /// Where it sends the request, as reports compare decisions: the first node, or
    /// `reject <status>`.
    pub fn destination(&self) -> String {
        match self {
            Decision::Route(route) => route
                .targets
                .first()
                .map_or_else(|| "no target".to_owned(), |t| t.node.to_string()),
            Decision::Reject(reject) => format!("reject {}", reject.status),
        }
    }
}
