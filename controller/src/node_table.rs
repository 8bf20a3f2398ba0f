//! The node table: the cluster snapshot that policies see, swapped whole behind an
//! `ArcSwap` so that the request path reads it without a lock. Agents feed it (issue #4);
//! until then it holds a static snapshot.

use std::sync::Arc;

use arc_swap::ArcSwap;
use switchyard_protocol::ClusterSnapshot;

#[derive(Debug, Default)]
pub struct NodeTable {
    snapshot: ArcSwap<ClusterSnapshot>,
}

impl NodeTable {
    pub fn new(snapshot: ClusterSnapshot) -> Self {
        Self { snapshot: ArcSwap::from_pointee(snapshot) }
    }

    pub fn snapshot(&self) -> Arc<ClusterSnapshot> {
        self.snapshot.load_full()
    }

    pub fn replace(&self, snapshot: ClusterSnapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }
}
