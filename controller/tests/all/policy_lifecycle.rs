//! Loading, validating, activating, chaining and rolling back policies; the shipped
//! policies load; every bad policy in `tests/ui/` is refused with the reviewed message in
//! its `.err` file (set `BLESS=1` to rewrite them) and the active policy stays.

use std::path::Path;

use switchyard_controller::policy::PolicyError;
use switchyard_protocol::Decision;

use crate::support::*;

#[test]
fn every_shipped_policy_loads_validates_and_routes_the_seed_cluster() {
    let policies = policies();
    for name in ["seed-rules", "least-loaded", "thermal-guard", "seed-then-thermal"] {
        let policy = policies
            .registry
            .load_file(&repo_path(&format!("policies/{name}.toml")), &cluster())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(policy.name(), name);
        assert!(
            policy.id.starts_with(&format!("{name}@")) && policy.id.len() == name.len() + 13,
            "{}",
            policy.id
        );
        policies.registry.activate(&policy.id).expect("activate");
        let routed = policies.engine.decide_snapshot(&request(Some("batch")), &cluster());
        assert!(routed.fault.is_none(), "{name}: {:?}", routed.fault);
        assert!(
            matches!(routed.decision, Decision::Route(_)),
            "{name}: {:?}",
            routed.decision
        );
    }
}

#[test]
fn seed_rules_sends_each_task_class_where_the_seed_says() {
    let policies = policies();
    policies
        .registry
        .load_file(&repo_path("policies/seed-rules.toml"), &cluster())
        .expect("loads");
    policies.registry.activate("seed-rules").expect("activate by name");
    for (task, node) in [
        (Some("development"), "m4"),
        (Some("production"), "ryzen"),
        (Some("batch"), "xeon"),
        (None, "ryzen"),
    ] {
        let routed = policies.engine.decide_snapshot(&request(task), &cluster());
        assert_eq!(
            routed.decision.first_node(),
            Some(node),
            "task {task:?}: {:?}",
            routed.decision
        );
    }
}

#[test]
fn a_chain_narrows_with_the_first_stage_and_orders_with_the_second() {
    let policies = policies();
    let policy = policies
        .registry
        .load_file(&repo_path("policies/seed-then-thermal.toml"), &cluster())
        .expect("loads");
    policies.registry.activate(&policy.id).expect("activate");
    let mut hot = cluster();
    // The xeon's GPU overheats: thermal-guard moves it behind the ryzen for batch work.
    hot.nodes[2].gpus[0].temp_c = Some(91.0);
    let routed = policies.engine.decide_snapshot(&request(Some("batch")), &hot);
    let Decision::Route(route) = routed.decision else {
        panic!("{:?}", routed.decision)
    };
    let order: Vec<_> = route.targets.iter().map(|t| &*t.node).collect();
    assert_eq!(order, ["ryzen", "xeon"]);
    assert!(
        route.reason.contains("rule 'batch'") && route.reason.contains("avoided xeon GPU at 91C"),
        "{}",
        route.reason
    );
    assert_eq!(&*route.targets[0].model, "Qwen/Qwen2.5-Coder-7B-Instruct");
}

#[test]
fn rollback_restores_the_previous_policy_and_fails_with_no_history() {
    let policies = policies();
    assert!(matches!(policies.registry.rollback(), Err(PolicyError::NoPrevious)));
    let least = policies
        .registry
        .load_file(&repo_path("policies/least-loaded.toml"), &cluster())
        .expect("loads");
    let seed = policies
        .registry
        .load_file(&repo_path("policies/seed-rules.toml"), &cluster())
        .expect("loads");
    policies.registry.activate(&least.id).expect("activate");
    policies.registry.activate(&seed.id).expect("activate");
    assert_eq!(policies.registry.view().previous, vec![least.id.to_string()]);
    let back = policies.registry.rollback().expect("rollback");
    assert_eq!(back.id, least.id);
    assert_eq!(policies.registry.view().active.as_deref(), Some(&*least.id));
}

#[test]
fn the_same_document_loads_to_the_same_id_and_an_edit_to_a_new_one() {
    let policies = policies();
    let text = std::fs::read_to_string(repo_path("policies/least-loaded.toml")).expect("read");
    let a = policies
        .registry
        .load_text(&text, "a", None, &cluster())
        .expect("loads");
    let b = policies
        .registry
        .load_text(&text, "b", None, &cluster())
        .expect("loads");
    assert_eq!(a.id, b.id);
    let edited = text.replace("ties go to the faster node", "edited");
    let c = policies
        .registry
        .load_text(&edited, "c", None, &cluster())
        .expect("loads");
    assert_ne!(a.id, c.id);
    assert_eq!(policies.registry.view().policies.len(), 2);
}

#[test]
fn bad_policies_are_refused_with_the_reviewed_message_and_the_active_policy_stays() {
    let policies = policies();
    let good = policies
        .registry
        .load_file(&repo_path("policies/least-loaded.toml"), &cluster())
        .expect("loads");
    policies.registry.activate(&good.id).expect("activate");
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let bless = std::env::var_os("BLESS").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&ui)
        .expect("tests/ui exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 6, "expected the ui cases, found {cases:?}");
    let mut mismatches = Vec::new();
    for case in cases {
        let relative = format!(
            "tests/ui/{}",
            case.file_name().and_then(|n| n.to_str()).unwrap_or_default()
        );
        let text = std::fs::read_to_string(&case).expect("read case");
        let error = match policies.registry.load_text(&text, &relative, case.parent(), &cluster()) {
            Ok(policy) => panic!("{relative} was accepted as {}", policy.id),
            Err(e) => format!("{e}\n"),
        };
        let expected_path = case.with_extension("err");
        if bless {
            std::fs::write(&expected_path, &error).expect("bless");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != error {
            mismatches.push(format!("{relative}\n  expected: {expected}  actual:   {error}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "messages changed (BLESS=1 to accept):\n{}",
        mismatches.join("\n")
    );
    assert_eq!(policies.registry.view().active.as_deref(), Some(&*good.id));
}

#[test]
fn a_component_link_pointing_outside_the_policys_folder_is_not_read() {
    let policies = policies();
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(
        switchyard_policy_artifacts::LEAST_LOADED,
        dir.path().join("linked.wasm"),
    )
    .expect("symlink");
    std::fs::write(
        dir.path().join("linked.toml"),
        "name = \"linked\"\n[[stage]]\ncomponent = \"linked.wasm\"\n",
    )
    .expect("policy");
    let refused = policies
        .registry
        .load_file(&dir.path().join("linked.toml"), &cluster())
        .expect_err("a link out of the folder must not be followed");
    assert!(refused.to_string().contains("outside the policy's folder"), "{refused}");
    // The same component copied into the folder loads.
    std::fs::remove_file(dir.path().join("linked.wasm")).expect("unlink");
    std::fs::copy(
        switchyard_policy_artifacts::LEAST_LOADED,
        dir.path().join("linked.wasm"),
    )
    .expect("copy");
    policies
        .registry
        .load_file(&dir.path().join("linked.toml"), &cluster())
        .expect("a component inside the folder loads");
}

#[test]
fn only_the_active_version_keeps_instances_warm() {
    let policies = policies();
    let seed = policies
        .registry
        .load_file(&repo_path("policies/seed-rules.toml"), &cluster())
        .expect("seed-rules");
    let least = policies
        .registry
        .load_file(&repo_path("policies/least-loaded.toml"), &cluster())
        .expect("least-loaded");
    assert_eq!(
        (seed.warm_instances(), least.warm_instances()),
        (0, 0),
        "loaded, not active: nothing warm"
    );
    policies.registry.activate(&seed.id).expect("activate");
    for _ in 0..5 {
        policies.engine.decide_snapshot(&request(None), &cluster());
    }
    assert!(seed.warm_instances() > 0);
    policies.registry.activate(&least.id).expect("activate");
    assert_eq!(
        seed.warm_instances(),
        0,
        "the version swapped out released its instances"
    );
    for _ in 0..5 {
        policies.engine.decide_snapshot(&request(None), &cluster());
    }
    assert!(least.warm_instances() > 0);
    policies.registry.rollback().expect("rollback");
    assert_eq!(least.warm_instances(), 0);
    assert_eq!(
        &*policies.engine.decide_snapshot(&request(None), &cluster()).policy_id,
        &*seed.id
    );
}

#[test]
fn uploads_are_capped_listed_and_deleted_unless_a_loaded_policy_uses_them() {
    use switchyard_controller::policy::MAX_UPLOADS;

    let policies = policies();
    let used = policies
        .registry
        .upload_component(std::fs::read(switchyard_policy_artifacts::LEAST_LOADED).expect("wasm"))
        .expect("upload");
    let policy = policies
        .registry
        .load_text(
            &format!("name = \"uploaded\"\n[[stage]]\ncomponent = \"{used}\"\n"),
            "upload",
            None,
            &cluster(),
        )
        .expect("loads");
    let spare: Vec<String> = (1..MAX_UPLOADS)
        .map(|i| {
            policies
                .registry
                .upload_component(vec![i as u8; 16])
                .expect("under the cap")
        })
        .collect();
    let refused = policies
        .registry
        .upload_component(vec![0xff; 16])
        .expect_err("over the cap");
    assert!(matches!(refused, PolicyError::TooManyUploads { .. }), "{refused}");
    assert!(refused.to_string().contains("DELETE /admin/components"), "{refused}");
    // The same bytes again are not a new upload.
    assert_eq!(
        policies.registry.upload_component(vec![1u8; 16]).expect("same bytes"),
        spare[0]
    );

    let listed = policies.registry.uploads();
    assert_eq!(listed.len(), MAX_UPLOADS);
    let entry = listed.iter().find(|u| u.component == used).expect("listed");
    assert_eq!(entry.used_by, vec![policy.id.to_string()]);

    let in_use = policies.registry.delete_upload(&used).expect_err("in use");
    assert!(matches!(in_use, PolicyError::ComponentInUse { .. }), "{in_use}");
    policies.registry.delete_upload(&spare[0]).expect("unused: deleted");
    assert!(matches!(
        policies.registry.delete_upload(&spare[0]),
        Err(PolicyError::UnknownComponent(_))
    ));
    policies.registry.upload_component(vec![0xff; 16]).expect("room again");
}

#[test]
fn components_built_for_the_0_1_0_0_2_0_and_0_3_0_contracts_still_load_and_route() {
    // The least-loaded component as it was built for each earlier contract (0.1.0: every
    // candidate node lowered whole per call; 0.2.0: candidates as a list of records; 0.3.0:
    // four numbers per candidate, no cache estimate): users' existing .wasm files keep
    // working, each on a new snapshot too.
    let policies = policies();
    let fixtures = repo_path("controller/tests/fixtures");
    for version in ["0.1.0", "0.2.0", "0.3.0"] {
        let policy = policies
            .registry
            .load_text(
                &format!(
                    "name = \"least-loaded-{}\"\n[[stage]]\ncomponent = \"least-loaded-{version}.wasm\"\n",
                    version.replace('.', "-")
                ),
                "old-least-loaded.toml",
                Some(&fixtures),
                &cluster(),
            )
            .unwrap_or_else(|e| panic!("a {version} component loads: {e}"));
        assert_eq!(policy.stages[0].contract(), format!("switchyard:policy@{version}"));
        policies.registry.activate(&policy.id).expect("activate");
        for free in ["xeon", "ryzen", "xeon"] {
            let mut snapshot = cluster();
            for node in &mut snapshot.nodes {
                node.in_flight = if node.name == free { 0 } else { 1 };
                node.models.iter_mut().for_each(|m| m.loaded = true);
            }
            let routed = policies.engine.decide_snapshot(&request(None), &snapshot);
            assert!(routed.fault.is_none(), "{version}: {:?}", routed.fault);
            assert_eq!(
                routed.decision.first_node(),
                Some(free),
                "{version}: {:?}",
                routed.decision
            );
        }
    }

    let current = policies
        .registry
        .load_file(&repo_path("policies/least-loaded.toml"), &cluster())
        .expect("loads");
    assert_eq!(current.stages[0].contract(), "switchyard:policy@0.4.0");
}

#[test]
fn each_warm_instance_sees_every_new_snapshot_before_it_decides_on_it() {
    let policies = policies();
    let policy = policies
        .registry
        .load_file(&repo_path("policies/least-loaded.toml"), &cluster())
        .expect("loads");
    policies.registry.activate(&policy.id).expect("activate");
    let mut healthy = cluster();
    for node in &mut healthy.nodes {
        node.models.iter_mut().for_each(|m| m.loaded = true);
    }
    let mut ryzen_down = healthy.clone();
    for node in &mut ryzen_down.nodes {
        node.healthy = node.name != "ryzen";
    }
    // Alternate snapshots many times: every warm instance must drop what it held.
    for round in 0..40 {
        let (snapshot, expected) = if round % 2 == 0 {
            (&healthy, "ryzen")
        } else {
            (&ryzen_down, "xeon")
        };
        let routed = policies.engine.decide_snapshot(&request(Some("batch")), snapshot);
        assert!(routed.fault.is_none(), "round {round}: {:?}", routed.fault);
        assert_eq!(routed.decision.first_node(), Some(expected), "round {round}");
    }
}

#[test]
fn a_document_loaded_again_becomes_the_version_its_name_activates() {
    let policies = policies();
    let text = std::fs::read_to_string(repo_path("policies/least-loaded.toml")).expect("policy");
    let first = policies
        .registry
        .load_text(&text, "a.toml", Some(&repo_path("policies")), &cluster())
        .expect("first");
    let edited = text.replace("description = ", "# edited\ndescription = ");
    let second = policies
        .registry
        .load_text(&edited, "a.toml", Some(&repo_path("policies")), &cluster())
        .expect("second");
    assert_ne!(first.id, second.id);
    assert_eq!(
        policies.registry.activate("least-loaded").expect("by name").id,
        second.id
    );
    // The file is edited back: the first version is loaded again, and is now the newest.
    let again = policies
        .registry
        .load_text(&text, "a.toml", Some(&repo_path("policies")), &cluster())
        .expect("again");
    assert_eq!(again.id, first.id);
    assert_eq!(
        policies.registry.activate("least-loaded").expect("by name").id,
        first.id
    );
}

#[test]
fn a_shadow_never_blocks_the_request_path_and_accounts_for_every_request() {
    let policies = policies();
    let active = policies
        .registry
        .load_file(&repo_path("policies/seed-rules.toml"), &cluster())
        .expect("seed-rules");
    policies.registry.activate(&active.id).expect("activate");
    policies
        .registry
        .load_file(&repo_path("policies/least-loaded.toml"), &cluster())
        .expect("least-loaded");
    policies.rehearsal.start_shadow("least-loaded").expect("shadow");
    let prepared = std::sync::Arc::new(switchyard_controller::policy::PreparedSnapshot::from(cluster()));
    let req = request(Some("batch"));
    let decision = policies.engine.decide_snapshot(&req, &cluster()).decision;
    for _ in 0..5000 {
        policies.rehearsal.offer_shadow(&req, &prepared, &decision);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let settled = loop {
        let report = policies.rehearsal.shadow_report().expect("running");
        let seen = report.compared + report.dropped + report.faults.values().sum::<u64>();
        if seen == 5000 || std::time::Instant::now() > deadline {
            break report;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(settled.compared + settled.dropped, 5000, "{settled:?}");
    assert!(
        settled.dropped > 0,
        "5000 offers at once overflow the 1024-deep queue: {settled:?}"
    );
    let last = policies.rehearsal.stop_shadow().expect("stopped");
    assert_eq!(last.compared, settled.compared);
    assert!(policies.rehearsal.shadow_report().is_none());
}

#[test]
fn a_policy_still_shadowing_keeps_its_instances_and_activating_the_canary_ends_it() {
    use std::sync::Arc;

    use switchyard_controller::policy::PreparedSnapshot;
    use switchyard_controller::policy::canary::CanaryRules;

    let policies = Arc::new(policies());
    let load = |name: &str| {
        policies
            .registry
            .load_file(&repo_path(&format!("policies/{name}.toml")), &cluster())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let active = load("seed-rules");
    policies.registry.activate(&active.id).expect("activate");
    let candidate = load("least-loaded");
    policies.rehearsal.start_shadow(&candidate.id).expect("shadow");
    policies
        .rehearsal
        .start_canary(&candidate.id, 50, CanaryRules::default())
        .expect("canary");
    let prepared = PreparedSnapshot::from(cluster());
    candidate.decide(&request(Some("batch")), &prepared).expect("decides");
    assert!(candidate.warm_instances() > 0);

    // The canary stops; the same policy still shadows: its instances stay warm.
    policies.rehearsal.stop_canary().expect("a canary ran");
    candidate.decide(&request(Some("batch")), &prepared).expect("decides");
    assert!(
        candidate.warm_instances() > 0,
        "a policy still shadowing must keep its instances"
    );

    // Activating the policy that runs as the canary ends the canary (and the shadow): it
    // would only compare the active policy with itself.
    policies
        .rehearsal
        .start_canary(&candidate.id, 50, CanaryRules::default())
        .expect("canary again");
    assert_eq!(policies.rehearsal.canary_percent(), 50);
    policies.registry.activate(&candidate.id).expect("activate");
    assert_eq!(policies.rehearsal.canary_percent(), 0, "the canary ended");
    assert!(policies.rehearsal.shadow_report().is_none(), "the shadow ended");
    let view = policies.rehearsal.canary_view();
    assert!(
        view.events
            .iter()
            .any(|e| e.policy == *candidate.id && format!("{:?}", e.kind).contains("Promoted")),
        "{:?}",
        view.events
    );
    // The policy it replaced keeps nothing warm; the new active one does.
    assert_eq!(active.warm_instances(), 0);
    candidate.decide(&request(Some("batch")), &prepared).expect("decides");
    assert!(candidate.warm_instances() > 0);
}
