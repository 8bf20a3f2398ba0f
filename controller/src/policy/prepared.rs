//! A cluster snapshot prepared for policies: marshalled into the WIT types once per snapshot
//! (telemetry changes it at most ten times a second; requests read it thousands of times)
//! under a version number that each warm policy instance receives once (`set-cluster`),
//! and indexed by logical model, so that a request names its candidates by index with their
//! live load instead of copying nodes into the sandbox. A policy is shown only the nodes
//! that serve the requested model, each with only its variant of that model: every other
//! node or model could not be a valid target. Each node's in-flight count comes, per
//! request, from the controller's own live count ([`LiveLoad`]) where there is one:
//! telemetry is up to a second old, and a node it still shows busy may be free.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use switchyard_protocol::{ClusterSnapshot, Target};

use super::bindings::{self, wit};

/// The requests in flight on each node right now, as the controller counts them.
pub trait LiveLoad: Send + Sync + std::fmt::Debug {
    fn in_flight(&self, node: &str) -> u32;
}

/// One node a request may go to: the node's index in the snapshot, the index of its variant
/// of the requested model among the node's models, and the node's live load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub node: u32,
    pub model: u32,
    pub in_flight: u32,
    pub queued: u32,
    /// The request's prompt tokens the node is estimated to hold (0: none or unknown).
    pub cached_tokens: u32,
}

/// Versions are unique in the process: an instance that saw one never mistakes another
/// snapshot for it.
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

#[derive(Debug)]
pub struct PreparedSnapshot {
    snapshot: Arc<ClusterSnapshot>,
    version: u64,
    /// Every node, with every model, in the snapshot's order (what `set-cluster` hands over).
    nodes: Vec<wit::Node>,
    /// Each node's name and its models' local names, shared: what a decision's targets hold.
    names: Vec<(Arc<str>, Vec<Arc<str>>)>,
    /// Per logical model: (node index, variant index) of each node serving it.
    by_model: HashMap<String, Vec<(u32, u32)>>,
    live: Option<Arc<dyn LiveLoad>>,
}

impl PreparedSnapshot {
    pub fn new(snapshot: Arc<ClusterSnapshot>) -> Self {
        let nodes: Vec<wit::Node> = snapshot.nodes.iter().map(bindings::node_to_wit).collect();
        let mut by_model: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
        for (n, node) in snapshot.nodes.iter().enumerate() {
            for (m, model) in node.models.iter().enumerate() {
                by_model
                    .entry(model.logical.clone())
                    .or_default()
                    .push((n as u32, m as u32));
            }
        }
        let names = snapshot
            .nodes
            .iter()
            .map(|node| {
                let locals = node.models.iter().map(|m| Arc::from(m.local.as_str())).collect();
                (Arc::from(node.name.as_str()), locals)
            })
            .collect();
        Self {
            snapshot,
            version: NEXT_VERSION.fetch_add(1, Ordering::Relaxed),
            nodes,
            names,
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

    /// This snapshot's version, unique in the process.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Every node, marshalled.
    pub(crate) fn nodes(&self) -> &[wit::Node] {
        &self.nodes
    }

    /// The target a candidate stands for (the caller checked that it is one of this
    /// snapshot's: candidates come from `candidates_for` or `candidate`).
    pub(crate) fn target(&self, candidate: &Candidate) -> Target {
        let (node, locals) = &self.names[candidate.node as usize];
        Target {
            node: node.clone(),
            model: locals[candidate.model as usize].clone(),
        }
    }

    /// Candidate `node`'s variant `model`, with the node's live load.
    fn candidate_at(&self, node: u32, model: u32) -> Candidate {
        let wit_node = &self.nodes[node as usize];
        Candidate {
            node,
            model,
            in_flight: self
                .live
                .as_ref()
                .map_or(wit_node.in_flight, |live| live.in_flight(&wit_node.name)),
            queued: wit_node.queued,
            cached_tokens: 0,
        }
    }

    /// The candidates for a request for `model`: every node serving it, with its live load.
    pub(crate) fn candidates_for(&self, model: &str) -> Vec<Candidate> {
        self.by_model
            .get(model)
            .map(|pairs| {
                pairs
                    .iter()
                    .map(|&(node, model)| self.candidate_at(node, model))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The candidate for `node`'s variant `local` of `model` (a chain's next stage).
    pub(crate) fn candidate(&self, model: &str, node: &str, local: &str) -> Option<Candidate> {
        let pairs = self.by_model.get(model)?;
        pairs
            .iter()
            .find(|&&(n, m)| {
                let wit_node = &self.nodes[n as usize];
                wit_node.name == node && wit_node.models[m as usize].local == local
            })
            .map(|&(node, model)| self.candidate_at(node, model))
    }
}

impl From<ClusterSnapshot> for PreparedSnapshot {
    fn from(snapshot: ClusterSnapshot) -> Self {
        Self::new(Arc::new(snapshot))
    }
}
