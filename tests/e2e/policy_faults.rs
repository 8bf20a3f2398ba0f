//! A policy that panics, prints without end or sleeps, activated on a running controller and
//! hit through its real front door: every request still gets an answer (the fallback
//! decides), the fault is counted against the policy, and the server stays responsive.

use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::process::{curl_with_key, eventually};

const KEY: &str = "e2e-prompt-key-0123456789";

fn hostile(dir: &std::path::Path, mode: &str) {
    // A policy names its component inside its own folder.
    std::fs::copy(switchyard_policy_artifacts::HOSTILE, dir.join("hostile.wasm")).expect("copy hostile.wasm");
    std::fs::write(
        dir.join(format!("hostile-{mode}.toml")),
        format!(
            "name = \"hostile-{mode}\"\n[limits]\ndeadline_ms = 100\nmemory_mib = 32\n\
             [[stage]]\ncomponent = \"hostile.wasm\"\n[stage.params]\nmode = \"{mode}\"\n"
        ),
    )
    .expect("policy file");
}

#[test]
fn a_policy_that_panics_prints_or_sleeps_never_leaves_a_request_without_an_answer() {
    let policies = tempfile::tempdir().expect("tempdir");
    for mode in ["panic", "chatty", "sleep"] {
        hostile(policies.path(), mode);
    }
    let cluster = Cluster::new(&[]);
    cluster.configure(&format!(
        "[policy]\ndir = {:?}\nactive = \"hostile-panic\"\nwatch = false\nrevert_after_faults = 0\n\
         [[api_keys]]\nname = \"e2e\"\nkey = \"{KEY}\"\n",
        policies.path().display().to_string()
    ));
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    let head = "max_concurrency = 4\ntelemetry_interval_ms = 250\n[runtime]\nkind = \"simulated\"\nprofile = \"xeon\"\ntime_scale = 0.0\n";
    let _xeon = cluster.agent("xeon", &address, head, "qwen2.5-coder:7b");
    assert!(eventually(Duration::from_secs(30), || controller.node_healthy("xeon")
        == Some(true)));

    let body = "{\"model\": \"qwen25-coder-7b\", \"max_tokens\": 4, \"metadata\": {\"hostile\": \"go\"}, \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}";
    let url = format!("{}/v1/chat/completions", controller.url);
    for mode in ["panic", "chatty", "sleep"] {
        if mode != "panic" {
            controller.cli_ok(&["policy", "activate", &format!("hostile-{mode}")]);
        }
        for attempt in 0..3 {
            let started = Instant::now();
            let (status, text) = curl_with_key(&url, KEY, &["-d", body]);
            let lower = text.to_ascii_lowercase();
            assert_eq!(status, 200, "{mode} #{attempt}: {text}\n{}", controller.log_text());
            assert!(lower.contains("x-switchyard-node: xeon"), "{mode}: {text}");
            assert!(lower.contains("x-switchyard-reason: fallback"), "{mode}: {text}");
            assert!(
                lower.contains(&format!("x-switchyard-policy: hostile-{mode}@")),
                "{mode}: {text}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{mode}: {:?}",
                started.elapsed()
            );
        }
        // While a policy thread sleeps, the server still answers at once.
        let (status, _) = curl_with_key(&format!("{}/healthz", controller.url), KEY, &[]);
        assert_eq!(status, 200);
    }
    let (_, metrics) = curl_with_key(&format!("{}/metrics", controller.url), KEY, &[]);
    for (mode, kind) in [("panic", "trap"), ("chatty", "deadline"), ("sleep", "trap")] {
        let faults = metrics
            .lines()
            .filter(|l| l.starts_with("switchyard_policy_faults_total") && l.contains(&format!("hostile-{mode}@")))
            .filter(|l| l.contains(&format!("kind=\"{kind}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>();
        assert!(faults >= 3, "{mode}: {kind} faults {faults}\n{metrics}");
    }
}
