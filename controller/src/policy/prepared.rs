//! A cluster snapshot prepared for policies: marshalled into the WIT types once per snapshot
//! (telemetry changes it about once a second; requests read it thousands of times), and
//! grouped by logical model. A policy is shown only the nodes that serve the requested
//! model, each with only its variant of that model: every other node or model could not be
//! a valid target, and marshalling them is most of a decision's cost.

use std::collections::HashMap;
use std::sync::Arc;

use switchyard_protocol::ClusterSnapshot;

use super::bindings::{self, wit};

#[derive(Debug)]
pub struct PreparedSnapshot {
    snapshot: Arc<ClusterSnapshot>,
    by_model: HashMap<String, Vec<wit::Node>>,
}

impl PreparedSnapshot {
    pub fn new(snapshot: Arc<ClusterSnapshot>) -> Self {
        let mut by_model: HashMap<String, Vec<wit::Node>> = HashMap::new();
        for node in &snapshot.nodes {
            let marshalled = bindings::node_to_wit(node);
            for (index, model) in node.models.iter().enumerate() {
                let mut view = marshalled.clone();
                view.models = vec![marshalled.models[index].clone()];
                by_model.entry(model.logical.clone()).or_default().push(view);
            }
        }
        Self { snapshot, by_model }
    }

    pub fn snapshot(&self) -> &ClusterSnapshot {
        &self.snapshot
    }

    pub fn shared(&self) -> Arc<ClusterSnapshot> {
        self.snapshot.clone()
    }

    /// The nodes a policy sees for a request for `model`.
    pub(crate) fn nodes_for(&self, model: &str) -> &[wit::Node] {
        self.by_model.get(model).map(Vec::as_slice).unwrap_or(&[])
    }
}

impl From<ClusterSnapshot> for PreparedSnapshot {
    fn from(snapshot: ClusterSnapshot) -> Self {
        Self::new(Arc::new(snapshot))
    }
}
