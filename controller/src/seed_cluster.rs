//! The seed document's three machines as a snapshot with simulated telemetry
//! (`policies/fixtures/seed-cluster.toml`, embedded): the demo's cluster and the policy
//! engine's smoke-test input.

use switchyard_protocol::ClusterSnapshot;

pub const SEED_CLUSTER_TOML: &str = include_str!("../../policies/fixtures/seed-cluster.toml");

pub fn seed_cluster() -> ClusterSnapshot {
    toml::from_str(SEED_CLUSTER_TOML).expect("the embedded seed cluster is valid (tested)")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_seed_cluster_parses_with_three_nodes() {
        let cluster = super::seed_cluster();
        let names: Vec<_> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["m4", "ryzen", "xeon"]);
    }
}
