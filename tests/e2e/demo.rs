//! The demo: seed policy active over the seed cluster, explained through the CLI, swapped
//! through the CLI, stopped cleanly by SIGTERM; and a real runtime added as the `local` node
//! served under the default policy.

use std::process::Command;

use crate::process::{Controller, policies_copy};

/// The README's chat prompt for `task`, through the demo: the whole answer, headers included,
/// lowercased.
fn prompt(demo: &Controller, key: &str, task: &str, max_tokens: u32) -> String {
    let body = format!(
        "{{\"model\": \"qwen25-coder-7b\", \"max_tokens\": {max_tokens}, \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}"
    );
    let hint = format!("x-switchyard-task: {task}");
    let (_, text) = crate::process::curl_with_key(
        &format!("{}/v1/chat/completions", demo.url),
        key,
        &["-H", &hint, "-d", &body],
    );
    text.to_ascii_lowercase()
}

fn first_node(explanation: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(explanation).expect("explain JSON");
    value["decision"]["route"]["targets"][0]["node"]
        .as_str()
        .unwrap_or("none")
        .to_owned()
}

#[test]
fn the_demo_routes_development_production_and_batch_work_to_the_seed_machines() {
    let policies = policies_copy();
    let demo = Controller::demo(policies.path());
    assert!(demo.active().starts_with("seed-rules@"), "{}", demo.active());
    for (task, node) in [("development", "m4"), ("production", "ryzen"), ("batch", "xeon")] {
        let out = demo.cli_ok(&[
            "route",
            "explain",
            "--model",
            "qwen25-coder-7b",
            "--task",
            task,
            "--max-tokens",
            "256",
        ]);
        assert_eq!(first_node(&out), node, "task {task}: {out}");
    }
    let status = demo.stop();
    assert!(status.success(), "demo exit: {status:?}");
}

#[test]
fn the_demo_answers_a_chat_completion_from_each_seed_machine_chosen_by_the_seed_policy() {
    let policies = policies_copy();
    let demo = Controller::demo(policies.path());
    let key = demo.api_key.clone().expect("the demo prints an API key");
    for (task, node) in [("development", "m4"), ("production", "ryzen"), ("batch", "xeon")] {
        let text = prompt(&demo, &key, task, 4);
        assert!(text.starts_with("http/1.1 200"), "{task}: {text}");
        assert!(text.contains(&format!("x-switchyard-node: {node}")), "{task}: {text}");
        assert!(text.contains(&format!("[simulated {node}]")), "{task}: {text}");
        assert!(text.contains("x-switchyard-policy: seed-rules@"), "{task}: {text}");
    }
    // The live log shows each routed request once, as the README shows it (same policy
    // hash), with no colour codes; and Ctrl-C (SIGTERM) stops agents and all.
    assert!(demo.wait_for(std::time::Duration::from_secs(5), |d| {
        d.stdout_text().contains("-> xeon")
    }));
    let routed: Vec<String> = demo
        .stdout_text()
        .lines()
        .filter(|l| l.starts_with("req-"))
        .map(str::to_owned)
        .collect();
    assert_eq!(routed.len(), 3, "one line per request: {routed:?}");
    let log = demo.log_text();
    assert!(
        !log.contains(" routed "),
        "the per-request log line is the demo's own, once:\n{log}"
    );
    assert!(
        !log.contains('\u{1b}') && !demo.stdout_text().contains('\u{1b}'),
        "no ANSI codes into a pipe"
    );
    let readme = std::fs::read_to_string(crate::runtimes::repo().join("README.md")).expect("README");
    let batch = routed.iter().find(|l| l.contains("-> xeon")).expect("batch line");
    let shown = batch.split_once(' ').map(|(_, rest)| rest).expect("id");
    assert!(
        readme.contains(shown),
        "the README's sample lines must match the demo's (policy hash included):\n{batch}"
    );
    let status = demo.stop();
    assert!(status.success(), "demo exit: {status:?}");
}

#[test]
fn the_admin_api_refuses_requests_without_the_admin_token() {
    let policies = policies_copy();
    let demo = Controller::demo(policies.path());
    let output = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"])
        .arg(format!("{}/admin/policies", demo.url))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "401");
    let wrong = Command::new(crate::process::BIN)
        .args(["policy", "list"])
        .env("SWITCHYARD_CONTROLLER", &demo.url)
        .env("SWITCHYARD_ADMIN_TOKEN", "not-the-token")
        .output()
        .expect("cli");
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}

#[test]
fn the_readmes_development_prompt_sent_twice_in_a_row_goes_to_the_free_m4_both_times() {
    // The m4 takes one request at a time. Its telemetry still shows the first request in
    // flight for up to a second after it ended; the policy must see the controller's own
    // live count, which says the m4 is free again.
    let policies = policies_copy();
    let demo = Controller::demo(policies.path());
    let key = demo.api_key.clone().expect("the demo prints an API key");
    for attempt in 0..3 {
        let text = prompt(&demo, &key, "development", 16);
        assert!(text.starts_with("http/1.1 200"), "#{attempt}: {text}");
        assert!(text.contains("x-switchyard-node: m4"), "#{attempt}: {text}");
    }
    assert!(demo.stop().success());
}

#[test]
fn a_real_local_runtime_added_to_the_demo_serves_under_the_default_policy() {
    let llama = crate::runtimes::Runtime::start("llama-cpp");
    let model = llama.model();
    let policies = policies_copy();
    let demo = Controller::demo_with(
        policies.path(),
        &["--local-runtime", &llama.url, "--local-model", &model],
    );
    let key = demo.api_key.clone().expect("key");
    assert!(demo.active().starts_with("seed-rules@"), "{}", demo.active());
    assert!(
        demo.wait_for(std::time::Duration::from_secs(30), |d| d.node_healthy("local")
            == Some(true)),
        "the local node never became healthy: {}",
        demo.admin("/admin/nodes")
    );
    // Untagged, development and batch work for the model only the local node serves: the
    // seed rules name m4, ryzen and xeon, and their "*" reaches the node they don't name.
    for task in [None, Some("development"), Some("batch")] {
        let body = format!(
            "{{\"model\": \"{model}\", \"max_tokens\": 4, \"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}]}}"
        );
        let mut args = vec!["-d".to_owned(), body];
        if let Some(task) = task {
            args.extend(["-H".to_owned(), format!("x-switchyard-task: {task}")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, text) = crate::process::curl_with_key(&format!("{}/v1/chat/completions", demo.url), &key, &args);
        let lower = text.to_ascii_lowercase();
        assert_eq!(status, 200, "{task:?}: {text}");
        assert!(lower.contains("x-switchyard-node: local"), "{task:?}: {text}");
        assert!(!lower.contains("[simulated"), "a real runtime answered: {text}");
        assert!(lower.contains("\"completion_tokens\""), "{text}");
    }
}
