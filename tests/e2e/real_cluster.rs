//! The whole system on real inference: a controller and two agents, one in front of
//! `mlx_lm.server` (the M4's runtime) and one in front of llama.cpp's server (the Xeon's
//! engine), both serving the generated tiny model. A steady stream of prompts through the
//! OpenAI and Ollama APIs keeps flowing while the policy is hot-swapped, an agent is killed
//! and comes back, and the controller restarts; every prompt ends in an answer or an
//! explicit, retryable error.

use std::time::Duration;

use crate::cluster::Cluster;
use crate::process::{Agent, Controller, eventually, served_by};
use crate::runtimes::Runtime;

const KEY: &str = "e2e-prompt-key-0123456789";

fn prompt(url: &str, api: &str, task: &str) -> (u16, String) {
    let (path, body) = match api {
        "openai" => (
            "/v1/chat/completions",
            "{\"model\": \"qwen25-coder-7b\", \"max_tokens\": 6, \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}",
        ),
        _ => (
            "/api/chat",
            "{\"model\": \"qwen25-coder-7b\", \"stream\": false, \"options\": {\"num_predict\": 6}, \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}",
        ),
    };
    let hint = format!("x-switchyard-task: {task}");
    let (status, text) = crate::process::curl_with_key(&format!("{url}{path}"), KEY, &["-H", &hint, "-d", body]);
    (status, text.to_ascii_lowercase())
}

#[test]
fn prompts_keep_flowing_on_real_runtimes_through_a_policy_swap_an_agent_kill_and_a_controller_restart() {
    let mlx = Runtime::start("mlx");
    let llama = Runtime::start("llama-cpp");
    let cluster = Cluster::new(&[]);
    let controller = crate::first_hour::controller(&cluster, "");
    let address = controller.agents.clone().expect("agents");
    let head = |kind: &str, url: &str| {
        format!(
            "max_concurrency = 2\ntelemetry_interval_ms = 300\n[runtime]\nkind = \"{kind}\"\nbase_url = \"{url}\"\n"
        )
    };
    let _m4 = cluster.agent("m4", &address, &head("mlx", &mlx.url), &mlx.model());
    let xeon = cluster.dir.path().join("xeon.toml");
    let mut xeon_agent = cluster.agent("xeon", &address, &head("llama-cpp", &llama.url), "tiny");
    let both_up = |c: &Controller| c.node_healthy("m4") == Some(true) && c.node_healthy("xeon") == Some(true);
    assert!(eventually(Duration::from_secs(30), || both_up(&controller)));

    // The seed policy: development work to the m4 (MLX), batch work to the xeon (llama.cpp),
    // through both APIs.
    for (api, task, node) in [
        ("openai", "development", "m4"),
        ("ollama", "development", "m4"),
        ("openai", "batch", "xeon"),
        ("ollama", "batch", "xeon"),
    ] {
        let (status, text) = prompt(&controller.url, api, task);
        assert_eq!(status, 200, "{api} {task}: {text}");
        assert_eq!(served_by(&text), node, "{api} {task}: {text}");
    }

    // Hot-swap the policy back and forth while prompts flow: none fails, and each is
    // answered by the node the policy active at the time chose.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flow = {
        let (url, stop) = (controller.url.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut answered = 0;
            for i in 0..200 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let api = if i % 2 == 0 { "openai" } else { "ollama" };
                let (status, text) = prompt(&url, api, "development");
                assert_eq!(status, 200, "prompt {i} during the swaps: {text}");
                // Decided by one of the two versions being swapped, and where that one sends
                // development work (seed-rules: the m4; least-loaded: a node serving it).
                let policy = text
                    .lines()
                    .find_map(|l| l.strip_prefix("x-switchyard-policy: "))
                    .unwrap_or("none")
                    .trim()
                    .to_owned();
                let node = served_by(&text);
                match policy.split('@').next() {
                    Some("seed-rules") => assert_eq!(node, "m4", "prompt {i}: {text}"),
                    Some("least-loaded") => assert!(["m4", "xeon"].contains(&node.as_str()), "prompt {i}: {text}"),
                    _ => panic!("prompt {i} decided by {policy:?}, not a swapped policy: {text}"),
                }
                answered += 1;
            }
            answered
        })
    };
    for round in 0..10 {
        let next = if round % 2 == 0 { "least-loaded" } else { "seed-rules" };
        controller.cli_ok(&["policy", "activate", next]);
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = flow.join().expect("no prompt failed during the swaps");
    assert!(answered >= 5, "only {answered} prompts during the swaps");
    assert!(controller.active_id().starts_with("seed-rules@"));

    // Kill the xeon's agent mid-run: batch work is refused rather than sent to the laptop
    // (the seed offloads heavy work to the other machines, and this cluster has no other),
    // development work still flows, and the xeon serves again once its agent is back.
    xeon_agent.kill_hard();
    assert!(eventually(Duration::from_secs(5), || controller.node_healthy("xeon")
        == Some(false)));
    let (status, text) = prompt(&controller.url, "openai", "batch");
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("keeps this work on its own nodes"), "{text}");
    let (status, text) = prompt(&controller.url, "openai", "development");
    assert_eq!((status, served_by(&text).as_str()), (200, "m4"), "{text}");
    let _xeon_again = Agent::start(&xeon, None);
    assert!(eventually(Duration::from_secs(30), || controller.node_healthy("xeon")
        == Some(true)));
    let (status, text) = prompt(&controller.url, "ollama", "batch");
    assert_eq!((status, served_by(&text).as_str()), (200, "xeon"), "{text}");

    // Restart the controller on the same addresses: the agents come back by themselves.
    let agents_address = address.clone();
    assert!(controller.stop().success());
    let controller = cluster.controller(&agents_address);
    assert!(
        eventually(Duration::from_secs(30), || both_up(&controller)),
        "{}",
        controller.log_text()
    );
    for (task, node) in [("development", "m4"), ("batch", "xeon")] {
        let (status, text) = prompt(&controller.url, "openai", task);
        assert_eq!((status, served_by(&text).as_str()), (200, node), "{text}");
    }
}
