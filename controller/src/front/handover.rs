//! Moving answers off a node that is going away: when a drained node's deadline passes
//! (`POST /admin/nodes/NODE/drain {"deadline_s": N}`), the streams still running on it are
//! ended there and continue on another node (see [`super::continuation`]); those that
//! cannot continue end with an explicit error, as for any lost node.

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// One cancellation per node that answers are running on: cancelled when they must move.
#[derive(Debug, Default)]
pub struct Handover {
    nodes: Mutex<HashMap<String, CancellationToken>>,
}

impl Handover {
    /// What an answer running on `node` watches: cancelled when it must move off.
    pub fn watch(&self, node: &str) -> CancellationToken {
        self.nodes.lock().entry(node.to_owned()).or_default().clone()
    }

    /// Move every answer now running on `node` off it; answers that start there later are
    /// not affected.
    pub fn move_off(&self, node: &str) {
        if let Some(token) = self.nodes.lock().remove(node) {
            token.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_answers_running_when_a_node_is_moved_off_are_told() {
        let handover = Handover::default();
        let running = handover.watch("ryzen");
        let elsewhere = handover.watch("xeon");
        handover.move_off("ryzen");
        assert!(running.is_cancelled());
        assert!(!elsewhere.is_cancelled());
        assert!(!handover.watch("ryzen").is_cancelled(), "a later answer starts clean");
        handover.move_off("m4");
    }
}
