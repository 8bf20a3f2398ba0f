//! The node table: the cluster snapshot that policies see, prepared for them once per
//! change and swapped whole behind an `ArcSwap`, so that the request path reads it without
//! a lock. Agents feed it (issue #4); until then it holds a static snapshot.

use std::sync::Arc;

use arc_swap::ArcSwap;
use switchyard_protocol::ClusterSnapshot;

use crate::policy::PreparedSnapshot;

#[derive(Debug)]
pub struct NodeTable {
    prepared: ArcSwap<PreparedSnapshot>,
}

impl NodeTable {
    pub fn new(snapshot: ClusterSnapshot) -> Self {
        Self {
            prepared: ArcSwap::from_pointee(PreparedSnapshot::from(snapshot)),
        }
    }

    pub fn snapshot(&self) -> Arc<ClusterSnapshot> {
        self.prepared.load().shared()
    }

    pub fn prepared(&self) -> Arc<PreparedSnapshot> {
        self.prepared.load_full()
    }

    pub fn replace(&self, snapshot: ClusterSnapshot) {
        self.prepared
            .store(Arc::new(PreparedSnapshot::from(snapshot)));
    }
}
