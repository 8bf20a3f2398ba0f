//! Each hostile component, built from source by `plugins/artifacts`, passes validation and
//! then misbehaves on a tagged request. Routing must still answer, through the fallback,
//! within a bounded time; the policies keeps serving; the fault shows in logs and counters.

use std::time::{Duration, Instant};

use switchyard_controller::policy::FaultKind;
use switchyard_protocol::Decision;

use crate::support::*;

/// Far above every limit involved (100 ms deadline), far below a hung test.
const BOUND: Duration = Duration::from_secs(5);

fn assert_contained(mode: &str, expected: FaultKind) {
    let policies = policies();
    let policy = policies
        .registry
        .load_text(&hostile_policy(&policies, mode), "hostile test", None, &cluster())
        .unwrap_or_else(|e| panic!("hostile {mode} should pass validation: {e}"));
    policies.registry.activate(&policy.id).expect("activate");

    let started = Instant::now();
    let (routed, logs) = with_captured_logs(|| policies.engine.decide_snapshot(&trigger(), &cluster()));
    let elapsed = started.elapsed();

    assert!(elapsed < BOUND, "{mode}: decision took {elapsed:?}");
    let fault = routed.fault.unwrap_or_else(|| panic!("{mode}: expected a fault"));
    assert_eq!(fault.kind(), expected, "{mode}: {fault}");
    assert_eq!(
        &*routed.policy_id, &*policy.id,
        "the decision names the policy that faulted"
    );
    match &routed.decision {
        Decision::Route(route) => {
            assert!(route.reason.starts_with("fallback least-loaded"), "{}", route.reason);
            assert_eq!(
                &*route.targets[0].node, "ryzen",
                "least loaded of the seed cluster is the ryzen (0/4, fastest)"
            );
        }
        Decision::Reject(r) => panic!("{mode}: the fallback should route, got {r:?}"),
    }
    assert!(
        logs.contains("policy fault, fallback decides"),
        "{mode}: log was:\n{logs}"
    );
    assert!(
        logs.contains(&*policy.id),
        "{mode}: log names the policy version:\n{logs}"
    );

    let view = policies.registry.view();
    let stats = &view.policies[0].stats;
    assert_eq!(stats.faults[expected.as_str()], 1, "{mode}: {stats:?}");
    assert_eq!(view.fallback_decisions, 1);

    // The host is unharmed: the same policy still answers an ordinary request itself.
    let routed = policies.engine.decide_snapshot(&request(Some("batch")), &cluster());
    assert!(routed.fault.is_none(), "{mode}: {:?}", routed.fault);
    assert_eq!(
        routed.decision.first_node(),
        Some("m4"),
        "hostile policy routes to the first eligible node"
    );
}

#[test]
fn an_infinite_loop_is_stopped_by_the_epoch_deadline() {
    assert_contained("spin", FaultKind::Deadline);
}

#[test]
fn a_memory_bomb_is_stopped_by_the_memory_cap() {
    assert_contained("memory-bomb", FaultKind::Memory);
}

#[test]
fn a_panicking_policy_traps_and_the_fallback_decides() {
    assert_contained("panic", FaultKind::Trap);
}

#[test]
fn a_sleeping_policy_traps_at_once_instead_of_waiting() {
    // A guest sleep would be a host-side wait no epoch deadline interrupts (the hostile
    // guest sleeps a minute); the clock's subscriptions trap instead, well inside BOUND.
    assert_contained("sleep", FaultKind::Trap);
}

#[test]
fn a_policy_that_sleeps_while_loading_is_refused_at_once() {
    let policies = policies();
    let started = Instant::now();
    let refused = policies
        .registry
        .load_text(
            &hostile_policy(&policies, "sleep-in-configure"),
            "hostile test",
            None,
            &cluster(),
        )
        .expect_err("a configure that waits must not load");
    assert!(started.elapsed() < BOUND, "loading took {:?}", started.elapsed());
    assert!(refused.to_string().contains("may not wait"), "{refused}");
}

#[test]
fn a_decision_naming_an_unknown_node_is_refused() {
    assert_contained("unknown-node", FaultKind::InvalidDecision);
}

#[test]
fn a_decision_naming_another_model_than_the_requested_one_is_refused() {
    assert_contained("other-model", FaultKind::InvalidDecision);
}

#[test]
fn an_enormous_decision_is_refused() {
    assert_contained("huge-output", FaultKind::InvalidDecision);
}

#[test]
fn endless_printing_is_bounded_and_then_stopped_by_the_deadline() {
    assert_contained("chatty", FaultKind::Deadline);
}

/// least-loaded activated, then a policy that panics on triggered requests activated over it.
fn good_then_panicking(
    policies: &switchyard_controller::policy::Policies,
) -> (
    std::sync::Arc<switchyard_controller::policy::LoadedPolicy>,
    std::sync::Arc<switchyard_controller::policy::LoadedPolicy>,
) {
    let good = policies
        .registry
        .load_file(&repo_path("policies/least-loaded.toml"), &cluster())
        .expect("least-loaded loads");
    policies.registry.activate(&good.id).expect("activate good");
    let bad = policies
        .registry
        .load_text(&hostile_policy(policies, "panic"), "hostile test", None, &cluster())
        .expect("loads");
    policies.registry.activate(&bad.id).expect("activate bad");
    (good, bad)
}

#[test]
fn repeated_faults_revert_to_the_last_known_good_policy() {
    let policies = policies();
    let (good, bad) = good_then_panicking(&policies);

    let revert_after = 5;
    for i in 0..revert_after {
        let routed = policies.engine.decide_snapshot(&trigger(), &cluster());
        assert!(routed.fault.is_some(), "fault {i}");
        assert_eq!(&*routed.policy_id, &*bad.id);
    }
    let view = policies.registry.view();
    assert_eq!(view.active.as_deref(), Some(&*good.id), "{view:?}");
    assert_eq!(view.reverts, 1);
    let routed = policies.engine.decide_snapshot(&trigger(), &cluster());
    assert!(routed.fault.is_none());
    assert_eq!(&*routed.policy_id, &*good.id);
}

#[test]
fn a_policy_faulting_on_every_other_request_is_reverted_and_explaining_never_reverts() {
    let policies = policies();
    let (good, bad) = good_then_panicking(&policies);

    // Explaining a faulting request, any number of times, leaves the live policy alone.
    let prepared = switchyard_controller::policy::PreparedSnapshot::from(cluster());
    for _ in 0..20 {
        assert!(policies.engine.explain(&trigger(), &prepared).fault.is_some());
    }
    assert_eq!(policies.registry.view().active.as_deref(), Some(&*bad.id));
    assert_eq!(policies.registry.view().reverts, 0);

    // Faults on half the live requests (never five in a row) revert it.
    for i in 0..10 {
        let request = if i % 2 == 0 { trigger() } else { request(None) };
        policies.engine.decide_snapshot(&request, &cluster());
    }
    let view = policies.registry.view();
    assert_eq!(view.active.as_deref(), Some(&*good.id), "{view:?}");
    assert_eq!(view.reverts, 1);
}

/// What this shows is the policies's bookkeeping (probation, off-worker flag) and the answers;
/// that the async worker is really free is observed by
/// `a_version_in_place_that_turns_slow_holds_the_async_worker_for_milliseconds_not_its_deadline`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_policys_probation_keeps_it_on_the_policy_threads_and_it_keeps_getting_answers() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use switchyard_controller::policy::PreparedSnapshot;

    let policies = Arc::new(policies());
    let prepared = Arc::new(PreparedSnapshot::from(cluster()));
    let quick = least_loaded(&policies);
    policies.registry.activate(&quick.id).expect("activate");
    assert!(!quick.stats.in_place(), "a new version starts on the policy threads");
    // (Whether it then moves in place depends on the machine not pausing a policy thread
    // for 2 ms; only its answers are asserted.)
    for _ in 0..50 {
        let routed = policies.engine.decide(&trigger(), prepared.clone()).await;
        assert!(routed.fault.is_none());
    }

    // A version whose calls spin to their deadline never runs in place (its probation fails
    // on the policy threads), and its requests still get the fallback's answer.
    let slow = policies
        .registry
        .load_text(&hostile_policy(&policies, "spin"), "test", None, &cluster())
        .expect("hostile spin passes validation");
    policies.registry.activate(&slow.id).expect("activate");
    for _ in 0..3 {
        let routed = policies.engine.decide(&trigger(), prepared.clone()).await;
        assert_eq!(routed.fault.map(|f| f.kind()), Some(FaultKind::Deadline));
    }
    assert!(
        slow.stats.off_worker.load(Ordering::Relaxed) && !slow.stats.in_place(),
        "a slow policy stays off the workers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_busy_policy_thread_is_not_the_policys_fault_and_nothing_is_reverted() {
    use std::sync::Arc;

    use switchyard_controller::policy::PreparedSnapshot;

    let policies = Arc::new(policies());
    let prepared = Arc::new(PreparedSnapshot::from(cluster()));
    let earlier = least_loaded(&policies);
    policies.registry.activate(&earlier.id).expect("activate");
    // Some milliseconds a call, within its 100 ms deadline.
    let slow = policies
        .registry
        .load_text(&hostile_policy(&policies, "slow"), "test", None, &cluster())
        .expect("hostile slow passes validation");
    policies.registry.activate(&slow.id).expect("activate");
    // How long one call takes here (explaining counts nothing against the policy).
    assert!(
        policies.engine.explain(&trigger(), &prepared).fault.is_none(),
        "a warm instance"
    );
    let started = Instant::now();
    assert!(policies.engine.explain(&trigger(), &prepared).fault.is_none());
    let call = started.elapsed().max(Duration::from_millis(1));
    // Enough at once (within the policy threads' queue of 256) that the last wait for a
    // thread longer than the policy's deadline and grace (200 ms), through no fault of the
    // policy's.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8) as u32;
    let at_once = (threads * (Duration::from_millis(600).as_micros() / call.as_micros()) as u32).clamp(32, 250);
    let calls: Vec<_> = (0..at_once)
        .map(|_| {
            let policies = policies.clone();
            let prepared = prepared.clone();
            tokio::spawn(async move { policies.engine.decide_on_pool(&trigger(), prepared).await })
        })
        .collect();
    let mut busy = 0;
    for call in calls {
        let routed = call.await.expect("joined");
        match routed.fault.map(|f| f.kind()) {
            None => {}
            Some(FaultKind::Busy) => busy += 1,
            Some(other) => panic!("a fault charged to the policy: {other:?}"),
        }
        assert_eq!(&*routed.policy_id, &*slow.id);
    }
    let view = policies.registry.view();
    assert_eq!(view.active.as_deref(), Some(&*slow.id), "{view:?}");
    assert_eq!(view.reverts, 0);
    let stats = slow.stats.view();
    assert!(stats.faults.values().all(|n| *n == 0), "{stats:?}");
    assert!(busy < at_once, "some calls were answered by the policy");
    eprintln!("{at_once} calls of {call:?} at once: {busy} found no policy thread in time");
}

#[test]
fn a_version_in_place_that_turns_slow_holds_the_async_worker_for_milliseconds_not_its_deadline() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use switchyard_controller::policy::PreparedSnapshot;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let policies = Arc::new(policies());
    let prepared = Arc::new(PreparedSnapshot::from(cluster()));
    // Spins to a 1 s deadline on a tagged request, quick otherwise.
    let text = hostile_policy(&policies, "spin").replace("deadline_ms = 100", "deadline_ms = 1000");
    let policy = policies
        .registry
        .load_text(&text, "test", None, &cluster())
        .expect("hostile spin passes validation");
    policies.registry.activate(&policy.id).expect("activate");
    // As if its probation had passed: its calls now run in place on the one worker.
    policy.stats.quick_calls.store(1000, Ordering::Relaxed);
    assert!(policy.stats.in_place());

    runtime.block_on(async {
        // A task on the same (only) worker that notes the longest gap between its ticks.
        let longest_gap = Arc::new(std::sync::Mutex::new(Duration::ZERO));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticker = tokio::spawn({
            let longest_gap = longest_gap.clone();
            let stop = stop.clone();
            async move {
                let mut last = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let gap = last.elapsed();
                    last = Instant::now();
                    let mut longest = longest_gap.lock().expect("lock");
                    *longest = (*longest).max(gap);
                }
            }
        });
        tokio::task::yield_now().await;
        let routed = policies.engine.decide(&trigger(), prepared.clone()).await;
        stop.store(true, Ordering::Relaxed);
        ticker.await.expect("ticker");
        // The policy's own deadline, reached on a policy thread, is its fault, counted once.
        assert_eq!(routed.fault.map(|f| f.kind()), Some(FaultKind::Deadline));
        // (Where the request stopped waiting first, the policy thread charges the fault
        // when the deadline stops the call: wait for it, and for no second count.)
        let deadline_faults = || policy.stats.view().faults["deadline"];
        let charged = Instant::now();
        while deadline_faults() == 0 && charged.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(deadline_faults(), 1);
        assert!(!policy.stats.in_place(), "it stays off the workers from now on");
        let longest = *longest_gap.lock().expect("lock");
        // Cut at 5 ms in place; generous for a loaded machine, far below the 1 s it ran.
        assert!(
            longest < Duration::from_millis(500),
            "the worker was held for {longest:?}"
        );
    });
}

/// The shipped `least-loaded` policy, loaded into `policies` (not activated).
fn least_loaded(
    policies: &switchyard_controller::policy::Policies,
) -> std::sync::Arc<switchyard_controller::policy::LoadedPolicy> {
    policies
        .registry
        .load_text(
            &std::fs::read_to_string(repo_path("policies/least-loaded.toml")).expect("policy"),
            "test",
            None,
            &cluster(),
        )
        .expect("least-loaded loads")
}
