//! A cluster snapshot prepared for policies: marshalled into the WIT types once per snapshot
//! (telemetry changes it about once a second; requests read it thousands of times), and
//! grouped by logical model. A policy is shown only the nodes that serve the requested
//! model, each with only its variant of that model: every other node or model could not be
//! a valid target, and marshalling them is most of a decision's cost. Each node's in-flight
//! count comes, per request, from the controller's own live count ([`LiveLoad`]) where there
//! is one: telemetry is up to a second old, and a node it still shows busy may be free.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use switchyard_protocol::ClusterSnapshot;

use super::bindings::{self, wit};

/// The requests in flight on each node right now, as the controller counts them.
pub trait LiveLoad: Send + Sync + std::fmt::Debug {
    fn in_flight(&self, node: &str) -> u32;
}

#[derive(Debug)]
pub struct PreparedSnapshot {
    snapshot: Arc<ClusterSnapshot>,
    by_model: HashMap<String, Vec<wit::Node>>,
    live: Option<Arc<dyn LiveLoad>>,
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
        Self {
            snapshot,
            by_model,
            live: None,
        }
    }

    /// Show policies `live`'s in-flight counts instead of the telemetry's.
    pub fn with_live_load(mut self, live: Option<Arc<dyn LiveLoad>>) -> Self {
        self.live = live;
        self
    }

    pub fn snapshot(&self) -> &ClusterSnapshot {
        &self.snapshot
    }

    pub fn shared(&self) -> Arc<ClusterSnapshot> {
        self.snapshot.clone()
    }

    /// The nodes a policy sees for a request for `model`: marshalled once, copied only when
    /// a live in-flight count differs from the prepared one.
    pub(crate) fn nodes_for(&self, model: &str) -> Cow<'_, [wit::Node]> {
        let nodes = self.by_model.get(model).map(Vec::as_slice).unwrap_or(&[]);
        let Some(live) = &self.live else {
            return Cow::Borrowed(nodes);
        };
        let counts: Vec<u32> = nodes.iter().map(|n| live.in_flight(&n.name)).collect();
        if nodes.iter().zip(&counts).all(|(n, c)| n.in_flight == *c) {
            return Cow::Borrowed(nodes);
        }
        Cow::Owned(
            nodes
                .iter()
                .zip(counts)
                .map(|(node, in_flight)| {
                    let mut node = node.clone();
                    node.in_flight = in_flight;
                    node
                })
                .collect(),
        )
    }
}

impl From<ClusterSnapshot> for PreparedSnapshot {
    fn from(snapshot: ClusterSnapshot) -> Self {
        Self::new(Arc::new(snapshot))
    }
}
