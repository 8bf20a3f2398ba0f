//! The smoke test a policy must pass before it can become active: a few typical requests
//! against the seed cluster and, when there is one, the live snapshot. Every call must
//! return a valid decision without a fault.

use switchyard_protocol::{ClusterSnapshot, RequestInfo};

use super::fault::PolicyFault;
use super::loaded::LoadedPolicy;
use super::prepared::PreparedSnapshot;

fn smoke_requests() -> Vec<RequestInfo> {
    let mut requests = Vec::new();
    for (task, model) in [
        (None, "qwen25-coder-7b"),
        (Some("development"), "qwen25-coder-7b"),
        (Some("production"), "qwen25-coder-32b"),
        (Some("batch"), "qwen25-coder-7b"),
        (None, "smoke-test-unknown-model"),
    ] {
        let mut req = RequestInfo::for_model(model);
        req.id = "smoke".to_owned();
        req.task = task.map(str::to_owned);
        req.prompt_tokens = 200;
        req.max_tokens = Some(256);
        requests.push(req);
    }
    requests
}

pub fn check(policy: &LoadedPolicy, live: &ClusterSnapshot) -> Result<(), String> {
    let seed = crate::seed_cluster::seed_cluster();
    let empty = ClusterSnapshot::default();
    let snapshots: Vec<(&str, &ClusterSnapshot)> = if live.nodes.is_empty() {
        vec![("seed cluster", &seed), ("empty cluster", &empty)]
    } else {
        vec![
            ("seed cluster", &seed),
            ("empty cluster", &empty),
            ("live cluster", live),
        ]
    };
    for (label, snapshot) in snapshots {
        let prepared = PreparedSnapshot::from(snapshot.clone());
        for req in smoke_requests() {
            // A deadline overrun can be the host's doing (a descheduled thread on a busy
            // machine): it must happen three times in a row to refuse the policy.
            let mut attempt = 0;
            loop {
                attempt += 1;
                match policy.decide(&req, &prepared) {
                    Ok(_) => break,
                    Err(PolicyFault::Deadline { .. }) if attempt < 3 => continue,
                    Err(fault) => {
                        return Err(format!(
                            "route(model {}, task {:?}) on the {label}: {fault}",
                            req.model, req.task
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}
