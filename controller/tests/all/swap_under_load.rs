//! Many threads decide while the active policy is swapped hundreds of times: no decision
//! fails, and each one is attributable to exactly one policy version, by its id and by the
//! shape of its reason (each policy words its reasons differently).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use switchyard_protocol::Decision;

use crate::support::*;

#[test]
fn swapping_the_active_policy_200_times_under_load_fails_no_decision() {
    let policies = Arc::new(policies());
    let least = policies
        .registry
        .load_file(&repo_path("policies/least-loaded.toml"), &cluster())
        .expect("least-loaded");
    let seed = policies
        .registry
        .load_file(&repo_path("policies/seed-rules.toml"), &cluster())
        .expect("seed-rules");
    policies.registry.activate(&least.id).expect("activate");

    let stop = Arc::new(AtomicBool::new(false));
    let decided = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let (policies, stop, decided) = (policies.clone(), stop.clone(), decided.clone());
            let (least_id, seed_id) = (least.id.clone(), seed.id.clone());
            std::thread::spawn(move || {
                let snapshot = cluster();
                let mut req = request(Some("development"));
                let mut seen = [0u64; 2];
                // Bounded: stops when told, or after 200k decisions at most.
                for i in 0..200_000u64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    req.id = format!("w{worker}-{i}");
                    let routed = policies.engine.decide_snapshot(&req, &snapshot);
                    assert!(
                        routed.fault.is_none(),
                        "decision {} faulted: {:?}",
                        req.id,
                        routed.fault
                    );
                    let Decision::Route(route) = &routed.decision else {
                        panic!("decision {} rejected: {:?}", req.id, routed.decision);
                    };
                    if routed.policy_id == least_id {
                        assert!(
                            route.reason.starts_with("least loaded:"),
                            "{}: {}",
                            least_id,
                            route.reason
                        );
                        seen[0] += 1;
                    } else if routed.policy_id == seed_id {
                        assert!(
                            route.reason.starts_with("rule 'development'"),
                            "{}: {}",
                            seed_id,
                            route.reason
                        );
                        assert_eq!(&*route.targets[0].node, "m4");
                        seen[1] += 1;
                    } else {
                        panic!("decision {} names an unknown policy {}", req.id, routed.policy_id);
                    }
                    decided.fetch_add(1, Ordering::Relaxed);
                }
                seen
            })
        })
        .collect();

    // Wait until the workers are deciding, then swap back and forth.
    while decided.load(Ordering::Relaxed) < 100 {
        std::thread::yield_now();
    }
    let swaps = 200;
    for i in 0..swaps {
        let next = if i % 2 == 0 { &seed.id } else { &least.id };
        policies.registry.activate(next).expect("swap");
        // Let some decisions land on each version.
        let mark = decided.load(Ordering::Relaxed);
        while decided.load(Ordering::Relaxed) < mark + 20 {
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut totals = [0u64; 2];
    for worker in workers {
        let seen = worker.join().expect("worker panicked");
        totals[0] += seen[0];
        totals[1] += seen[1];
    }
    assert!(totals[0] > 0 && totals[1] > 0, "both versions decided: {totals:?}");
    let view = policies.registry.view();
    assert_eq!(view.fallback_decisions, 0);
    let counted: u64 = view.policies.iter().map(|p| p.stats.decisions).sum();
    assert_eq!(
        counted,
        totals[0] + totals[1],
        "every decision is counted against exactly one version"
    );
}
