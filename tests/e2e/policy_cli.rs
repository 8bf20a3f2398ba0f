//! The three ways to swap a policy on a running controller (CLI/admin API, upload of a new
//! component, the watched folder), and `switchyard policy test`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::{BIN, Controller, policies_copy};

const SWAP_WITHIN: Duration = Duration::from_secs(60);

#[test]
fn activate_and_rollback_through_the_cli_swap_the_running_policy() {
    let policies = policies_copy();
    let demo = Controller::demo(policies.path());
    let seed = demo.active();
    let out = demo.cli_ok(&["policy", "activate", "least-loaded"]);
    assert!(out.contains("least-loaded@"), "{out}");
    assert!(demo.active().starts_with("least-loaded@"));
    let explained = explain_development(&demo, &[]);
    assert!(explained.contains("least loaded"), "{explained}");
    demo.cli_ok(&["policy", "rollback"]);
    assert_eq!(demo.active(), seed);
    let listed = demo.cli_ok(&["policy", "list"]);
    assert!(listed.contains(&format!("* {seed}")), "{listed}");
}

#[test]
fn any_loaded_policy_can_be_asked_before_it_serves_and_the_active_one_stays() {
    let policies = policies_copy();
    let demo = Controller::demo(policies.path());
    let active = demo.active();
    let ask = |extra: &[&str]| {
        let out = explain_development(&demo, extra);
        serde_json::from_str::<serde_json::Value>(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    let candidate = ask(&["--policy", "least-loaded"]);
    assert!(
        candidate["policy"]
            .as_str()
            .is_some_and(|p| p.starts_with("least-loaded@")),
        "{candidate}"
    );
    assert!(
        candidate["decision"]["route"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("least loaded")),
        "{candidate}"
    );
    let current = ask(&[]);
    assert_eq!(
        current["policy"],
        active.as_str(),
        "the active policy answers without --policy"
    );
    assert_eq!(demo.active(), active, "asking a candidate changes nothing");
    let unknown = demo.cli(&[
        "route",
        "explain",
        "--model",
        "qwen25-coder-7b",
        "--policy",
        "no-such-policy",
    ]);
    assert!(!unknown.status.success());
    let message = String::from_utf8_lossy(&unknown.stderr);
    assert!(message.contains("no-such-policy"), "{message}");
}

#[test]
fn uploading_a_policy_with_its_own_component_file_activates_it() {
    let policies = policies_copy();
    let demo = Controller::demo(policies.path());
    let work = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        switchyard_policy_artifacts::LEAST_LOADED,
        work.path().join("my-balancer.wasm"),
    )
    .expect("copy wasm");
    let policy = work.path().join("mine.toml");
    std::fs::write(
        &policy,
        "name = \"mine\"\ndescription = \"uploaded\"\n[[stage]]\ncomponent = \"my-balancer.wasm\"\n",
    )
    .expect("write");
    let out = demo.cli_ok(&["policy", "upload", policy.to_str().expect("utf-8 path"), "--activate"]);
    assert!(out.contains("mine@"), "{out}");
    assert!(demo.active().starts_with("mine@"), "{}", demo.active());
    let components = demo.policies()["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .find(|p| p["name"] == "mine")
        .map(|p| p["components"][0].as_str().unwrap_or_default().to_owned())
        .expect("mine listed");
    assert!(components.starts_with("sha256:"), "{components}");

    // A broken upload is refused with the reason, and the active policy stays.
    std::fs::write(
        &policy,
        "name = \"mine\"\n[[stage]]\ncomponent = \"builtin:seed-rules\"\n[stage.params]\nrules = []\n",
    )
    .expect("write");
    let refused = demo.cli(&["policy", "upload", policy.to_str().expect("utf-8 path"), "--activate"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("at least one rule is needed"), "{stderr}");
    assert!(demo.active().starts_with("mine@"));
}

#[test]
fn editing_the_active_policy_file_swaps_it_in_and_a_broken_edit_is_refused() {
    let policies = policies_copy();
    let demo = Controller::demo(policies.path());
    let before = demo.active();
    let file = policies.path().join("seed-rules.toml");
    let text = std::fs::read_to_string(&file).expect("read");
    // Send development work to the xeon instead of the m4.
    let edited = text.replacen("nodes = [\"m4\"]", "nodes = [\"xeon\"]", 1);
    assert_ne!(edited, text);
    std::fs::write(&file, &edited).expect("edit");
    assert!(
        demo.wait_for(SWAP_WITHIN, |d| d.active() != before),
        "edit was not picked up; log:\n{}",
        demo.log_text()
    );
    let after = demo.active();
    assert!(after.starts_with("seed-rules@"), "{after}");
    let explained = explain_development(&demo, &[]);
    assert!(explained.contains("\"node\": \"xeon\""), "{explained}");

    std::fs::write(
        &file,
        edited.replace("[[stage.params.rules]]", "[[stage.params.rulez]]"),
    )
    .expect("break");
    assert!(
        demo.wait_for(SWAP_WITHIN, |d| d
            .log_text()
            .contains("changed policy refused, the active policy stays")),
        "log:\n{}",
        demo.log_text()
    );
    assert!(demo.log_text().contains("unknown field `rulez`"), "{}", demo.log_text());
    assert_eq!(demo.active(), after);

    // A new file that does not load is logged too, with the file and the reason.
    std::fs::write(
        policies.path().join("new-and-broken.toml"),
        "name = \"new-and-broken\"\nstages = 3\n",
    )
    .expect("write");
    assert!(
        demo.wait_for(SWAP_WITHIN, |d| d.log_text().contains("new-and-broken.toml")
            && d.log_text().contains("policy refused")),
        "log:\n{}",
        demo.log_text()
    );
    assert_eq!(demo.active(), after);
}

fn policy_test(policy: &Path, fixtures: &[&Path]) -> std::process::Output {
    Command::new(BIN)
        .args(["policy", "test"])
        .arg(policy)
        .args(fixtures)
        .output()
        .expect("run policy test")
}

#[test]
fn policy_test_passes_the_shipped_fixtures_and_fails_a_wrong_expectation() {
    let repo = crate::runtimes::repo();
    for name in [
        "seed-rules",
        "least-loaded",
        "thermal-guard",
        "seed-then-thermal",
        "session-affinity",
        "finish-time",
        "round-robin",
        "lowest-cost",
    ] {
        let out = policy_test(
            &repo.join(format!("policies/{name}.toml")),
            &[&repo.join(format!("policies/fixtures/{name}.cases.toml"))],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    }
    // The seed-rules fixtures do not hold for least-loaded: the runner must say so.
    let out = policy_test(
        &repo.join("policies/least-loaded.toml"),
        &[&repo.join("policies/fixtures/seed-rules.cases.toml")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("FAIL") && stdout.contains("short development work goes to the m4"),
        "{stdout}"
    );
}

#[test]
fn a_shadow_decides_beside_the_active_policy_and_reports_where_it_differs() {
    let policies = policies_copy();
    let demo = Controller::demo(policies.path());
    let key = demo.api_key.clone().expect("key");
    let active = demo.active();
    let started = demo.cli_ok(&["policy", "shadow", "least-loaded"]);
    assert!(started.contains("shadow least-loaded@"), "{started}");
    // seed-rules sends development to the m4 and batch to the xeon; least-loaded weighs load
    // and speed, and decides on the live load a moment later (the request itself in flight).
    let body = "{\"model\": \"qwen25-coder-7b\", \"max_tokens\": 2, \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}";
    let mut served = Vec::new();
    for task in ["development", "development", "development", "batch", "batch"] {
        let hint = format!("x-switchyard-task: {task}");
        let (status, text) = crate::process::curl_with_key(
            &format!("{}/v1/chat/completions", demo.url),
            &key,
            &["-H", &hint, "-d", body],
        );
        assert_eq!(status, 200, "{text}");
        let node = text
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("x-switchyard-node: ")
                    .map(|n| n.trim().to_owned())
            })
            .expect("node");
        served.push((task, node));
    }
    assert!(
        demo.wait_for(SWAP_WITHIN, |d| d.admin("/admin/shadow")["compared"] == 5),
        "{}",
        demo.admin("/admin/shadow")
    );
    let report = demo.admin("/admin/shadow");
    let differences = report["differences"].as_array().expect("differences");
    let differing: u64 = differences.iter().map(|d| d[1].as_u64().unwrap_or(0)).sum();
    let agreed = report["agreed"].as_u64().expect("agreed");
    assert_eq!(
        agreed + differing,
        5,
        "every compared request agreed or differed: {report}"
    );
    assert!(
        differing > 0,
        "least-loaded differs from seed-rules on this traffic: {report}"
    );
    for difference in differences {
        let text = difference[0].as_str().expect("text");
        // `task T, model M: active -> candidate`: the active side is what really served.
        assert!(
            served
                .iter()
                .any(|(task, node)| text.starts_with(&format!("task {task}, model qwen25-coder-7b: {node} -> "))),
            "{text} does not match what served: {served:?}"
        );
    }
    let shown = demo.cli_ok(&["policy", "shadow", "--report"]);
    assert!(shown.contains(&format!("5 compared, {agreed} agreed")), "{shown}");
    let stopped = demo.cli_ok(&["policy", "shadow", "--stop"]);
    assert!(stopped.contains("(stopped)"), "{stopped}");
    assert_eq!(demo.active(), active, "the active policy served throughout");
    let none = demo.cli(&["policy", "shadow", "--report"]);
    assert!(!none.status.success());
}

/// What the active policy (or the one `extra` names) decides for a development request for
/// `qwen25-coder-7b`.
fn explain_development(demo: &Controller, extra: &[&str]) -> String {
    let mut args = vec![
        "route",
        "explain",
        "--model",
        "qwen25-coder-7b",
        "--task",
        "development",
    ];
    args.extend_from_slice(extra);
    demo.cli_ok(&args)
}
