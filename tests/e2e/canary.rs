//! The canary drill: a candidate that sends everything to the slowest node decides a share
//! of live traffic on the demo cluster, is rolled back automatically within its window, and
//! the rollback is in the log, the metrics and the decision record, while the active policy
//! answers every request it decides; and a healthy canary is promoted with one command.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::process::{Controller, curl_with_key, policies_copy};

/// Every request goes to the laptop (one slot, the slowest first token) and waits for it.
const LAPTOP_ONLY: &str = r#"
name = "laptop-only"
description = "A bad candidate: everything to the m4, queued"

[[stage]]
component = "builtin:seed-rules"

[[stage.params.rules]]
name = "laptop"
queue = true
wait = true
nodes = ["m4"]
"#;

/// The window the drill configures: the rollback must come within it.
const WINDOW_S: u64 = 20;

fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[test]
fn a_canary_that_sends_everything_to_the_slowest_node_is_rolled_back_and_the_active_policy_keeps_serving() {
    let policies = policies_copy();
    std::fs::write(policies.path().join("laptop-only.toml"), LAPTOP_ONLY).expect("write policy");
    let demo = Controller::demo(policies.path());
    let key = demo.api_key.clone().expect("key");
    let active = demo.active();
    assert!(active.starts_with("seed-rules@"), "{active}");

    // Bad starts are refused, saying why, and start nothing.
    for (args, says) in [
        (vec!["laptop-only", "--percent", "0"], "percent = 0 must be 1 to 100"),
        (vec!["seed-rules", "--percent", "10"], "is the active policy already"),
        (vec!["no-such-policy", "--percent", "10"], "no-such-policy"),
        (
            vec!["laptop-only", "--percent", "10", "--max-ttft-p95-ratio", "0.5"],
            "max_ttft_p95_ratio",
        ),
    ] {
        let mut argv = vec!["policy", "canary"];
        argv.extend(args);
        let out = demo.cli(&argv);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "{argv:?}: {stderr}");
    }
    assert!(demo.admin("/admin/canary")["canary"].is_null());

    let started = demo.cli_ok(&[
        "policy",
        "canary",
        "laptop-only",
        "--percent",
        "50",
        "--window-s",
        &WINDOW_S.to_string(),
        "--min-requests",
        "5",
    ]);
    assert!(
        started.contains("canary laptop-only@") && started.contains("running"),
        "{started}"
    );
    let began = Instant::now();

    // Production traffic: seed-rules sends it to the ryzen (four slots, quick first token);
    // the canary's share queues on the laptop. Eight clients, each request its own session.
    let url = format!("{}/v1/chat/completions", demo.url);
    let body = r#"{"model": "qwen25-coder-7b", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}"#;
    let rolled_back = Arc::new(AtomicBool::new(false));
    let answers: Arc<Mutex<Vec<(u16, String)>>> = Arc::default();
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let (url, key, rolled_back, answers) = (url.clone(), key.clone(), rolled_back.clone(), answers.clone());
            std::thread::spawn(move || {
                for i in 0..60 {
                    if rolled_back.load(Ordering::Relaxed) || began.elapsed() > Duration::from_secs(2 * WINDOW_S) {
                        break;
                    }
                    let session = format!("x-switchyard-session: drill-{client}-{i}");
                    let (status, text) = curl_with_key(
                        &url,
                        &key,
                        &["-H", "x-switchyard-task: production", "-H", &session, "-d", body],
                    );
                    let policy = header(&text, "x-switchyard-policy").unwrap_or("none").to_owned();
                    answers.lock().expect("answers").push((status, policy));
                }
            })
        })
        .collect();
    let ended = demo.wait_for(Duration::from_secs(2 * WINDOW_S), |d| {
        d.admin("/admin/canary")["canary"]["state"] == "rolled-back"
    });
    let took = began.elapsed();
    rolled_back.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("client");
    }
    let view = demo.admin("/admin/canary");
    eprintln!("rolled back after {took:?}: {}", view["canary"]);
    assert!(ended, "the canary was not rolled back: {view:#}");
    assert!(
        took < Duration::from_secs(WINDOW_S),
        "rolled back after {took:?}, beyond its {WINDOW_S} s window: {view:#}"
    );
    let why = view["canary"]["why"].as_str().unwrap_or_default();
    assert!(why.starts_with("TTFT p95") || why.starts_with("error rate"), "{view:#}");
    assert_eq!(view["rollbacks"], 1, "{view:#}");

    // The active policy served throughout: every request it decided was answered.
    let answers = answers.lock().expect("answers").clone();
    let by_active: Vec<&(u16, String)> = answers.iter().filter(|(_, p)| *p == active).collect();
    let by_canary = answers.iter().filter(|(_, p)| p.starts_with("laptop-only@")).count();
    assert!(!by_active.is_empty() && by_canary > 0, "{answers:?}");
    assert!(by_active.iter().all(|(status, _)| *status == 200), "{answers:?}");
    assert!(
        answers.iter().all(|(status, _)| *status != 0),
        "a request got no answer: {answers:?}"
    );
    assert_eq!(demo.active(), active);

    // After the rollback, the active policy decides everything.
    for i in 0..6 {
        let session = format!("x-switchyard-session: after-{i}");
        let (status, text) = curl_with_key(
            &url,
            &key,
            &["-H", "x-switchyard-task: production", "-H", &session, "-d", body],
        );
        assert_eq!(
            (status, header(&text, "x-switchyard-policy")),
            (200, Some(active.as_str())),
            "{text}"
        );
    }

    // In the log, the metrics and the decision record.
    assert!(
        demo.wait_for(Duration::from_secs(5), |d| d.log_text().contains("canary rolled back")),
        "{}",
        demo.log_text()
    );
    let metrics = std::process::Command::new("curl")
        .args(["-sS", &format!("{}/metrics", demo.url)])
        .output()
        .expect("curl");
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(metrics.contains("switchyard_canary_rollbacks_total 1"), "{metrics}");
    assert!(metrics.contains("switchyard_canary_percent 0"), "{metrics}");
    let events = demo.admin("/admin/decisions/events");
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["canary-started", "canary-rolled-back"], "{events:#}");
    let records = demo.admin("/admin/decisions?policy=laptop-only&limit=1000");
    let records = records["records"].as_array().expect("records");
    assert!(
        !records.is_empty() && records.iter().all(|r| r["decided"]["canary"] == true),
        "{records:?}"
    );
    let shown = demo.cli_ok(&["policy", "canary", "--report"]);
    assert!(
        shown.contains("ROLLED BACK") && shown.contains("canary-rolled-back"),
        "{shown}"
    );

    // A canary that does no harm is promoted with one command.
    demo.cli_ok(&["policy", "canary", "least-loaded", "--percent", "20"]);
    let promoted = demo.cli_ok(&["policy", "canary", "--promote"]);
    assert!(promoted.contains("promoted to active"), "{promoted}");
    assert!(demo.active().starts_with("least-loaded@"), "{}", demo.active());
    let refused = demo.cli(&["policy", "canary", "--promote"]);
    assert!(!refused.status.success(), "nothing left to promote");
}
