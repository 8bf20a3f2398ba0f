//! The decision record through a real controller: every routed request (refusals included)
//! leaves one record with its outcome and never its prompt; the record exports, imports
//! elsewhere once however often it is imported, and replays through the policy that made it
//! with every decision the same.

use crate::cluster::Cluster;
use crate::first_hour::{KEY, chat, controller, simulated};
use crate::process::curl_with_key;

const SECRET: &str = "the prompt text stays out of the record";

fn ask(url: &str, task: Option<&str>, model: &str) -> u16 {
    let body = chat(model, 4, false).replace("\"hi\"", &format!("\"{SECRET}\""));
    let mut args: Vec<String> = Vec::new();
    if let Some(task) = task {
        args.extend(["-H".to_owned(), format!("x-switchyard-task: {task}")]);
    }
    args.extend(["-d".to_owned(), body]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    curl_with_key(url, KEY, &args).0
}

#[test]
fn every_routed_request_leaves_a_record_that_exports_imports_once_and_replays_the_same() {
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "");
    let _m4 = simulated(&cluster, &controller, "m4", "m4", &["qwen25-coder-7b", "phi-3-mini"]);
    let _xeon = simulated(&cluster, &controller, "xeon", "xeon", &["qwen25-coder-7b"]);
    let url = format!("{}/v1/chat/completions", controller.url);
    let statuses = [
        ask(&url, Some("development"), "qwen25-coder-7b"),
        ask(&url, Some("batch"), "qwen25-coder-7b"),
        ask(&url, Some("development"), "qwen25-coder-7b"),
        ask(&url, None, "qwen25-coder-7b"),
        ask(&url, Some("batch"), "qwen25-coder-7b"),
        // Only the laptop serves it, and seed-rules keeps batch work off the laptop.
        ask(&url, Some("batch"), "phi-3-mini"),
    ];
    assert_eq!(statuses, [200, 200, 200, 200, 200, 503]);

    let view = controller.admin("/admin/decisions?limit=100");
    let records = view["records"].as_array().expect("records").clone();
    assert_eq!(records.len(), 6, "{view:#}");
    let nodes: Vec<&str> = records
        .iter()
        .map(|r| r["outcome"]["node"].as_str().unwrap_or("none"))
        .collect();
    assert_eq!(nodes, ["m4", "xeon", "m4", "xeon", "xeon", "none"], "{view:#}");
    for record in &records[..5] {
        assert_eq!(record["outcome"]["status"], 200, "{record:#}");
        assert!(record["outcome"]["ttft_ms"].as_u64().is_some(), "{record:#}");
        assert!(
            record["decided"]["policy"]
                .as_str()
                .is_some_and(|p| p.starts_with("seed-rules@"))
        );
        assert!(record["decided"]["decision"]["route"]["reason"].as_str().is_some());
    }
    assert_eq!(records[5]["outcome"]["status"], 503);
    assert_eq!(records[5]["decided"]["decision"]["reject"]["status"], 503);
    assert_eq!(records[3]["request"]["task"], serde_json::Value::Null);
    let filtered = controller.admin("/admin/decisions?node=m4&policy=seed-rules");
    assert_eq!(filtered["records"].as_array().map(Vec::len), Some(2), "{filtered:#}");

    // The export: each snapshot once, then the records; never the prompt.
    let export = cluster.dir.path().join("decisions.ndjson");
    controller.cli_ok(&["decisions", "export", "--out", export.to_str().expect("utf-8")]);
    let text = std::fs::read_to_string(&export).expect("export");
    assert!(!text.contains(SECRET), "the prompt leaked into the record");
    assert_eq!(text.lines().filter(|l| l.starts_with("{\"record\"")).count(), 6);
    assert!(
        text.lines().next().is_some_and(|l| l.starts_with("{\"snapshot\"")),
        "{text}"
    );
    let listed = controller.cli_ok(&["decisions", "list"]);
    assert_eq!(listed.lines().count(), 6, "{listed}");
    assert!(listed.contains("rejected 503"), "{listed}");

    // Replayed through the policy that decided: every decision the same.
    let replay = controller.cli_ok(&[
        "policy",
        "replay",
        crate::runtimes::repo()
            .join("policies/seed-rules.toml")
            .to_str()
            .expect("utf-8"),
        "--from",
        export.to_str().expect("utf-8"),
    ]);
    assert!(replay.contains("6 record(s) replayed, 6 same, 0 changed"), "{replay}");
    // Through least-loaded, straight from the controller's record: the laptop's batch
    // refusal becomes a route to the laptop (least-loaded has no such rule).
    let replay = controller.cli_ok(&[
        "policy",
        "replay",
        crate::runtimes::repo()
            .join("policies/least-loaded.toml")
            .to_str()
            .expect("utf-8"),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&replay).expect("json");
    assert_eq!(report["records"], 6, "{report:#}");
    assert_eq!(report["moves"]["reject 503 -> m4"], 1, "{report:#}");

    // Imported into another controller: added once, however often it is imported.
    let elsewhere_cluster = Cluster::new(&[]);
    let elsewhere = controller_elsewhere(&elsewhere_cluster);
    let import = || -> serde_json::Value {
        let out = elsewhere.cli_ok(&["decisions", "import", export.to_str().expect("utf-8")]);
        serde_json::from_str(&out).expect("json")
    };
    let first = import();
    assert_eq!(
        (first["records_added"].as_u64(), first["records_present"].as_u64()),
        (Some(6), Some(0))
    );
    let again = import();
    assert_eq!(
        (again["records_added"].as_u64(), again["records_present"].as_u64()),
        (Some(0), Some(6))
    );
    assert_eq!(
        elsewhere.admin("/admin/decisions")["records"].as_array().map(Vec::len),
        Some(6)
    );
    // A broken line refuses the whole import and names the line.
    let broken = elsewhere_cluster.dir.path().join("broken.ndjson");
    std::fs::write(&broken, format!("{text}{{\"record\": 1}}\n")).expect("write");
    let refused = elsewhere.cli(&["decisions", "import", broken.to_str().expect("utf-8")]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("line 13 of the import") && stderr.contains("nothing was imported"),
        "{stderr}"
    );
}

fn controller_elsewhere(cluster: &Cluster) -> crate::process::Controller {
    controller(cluster, "")
}

#[test]
fn answers_that_end_while_the_controller_drains_are_in_the_record_after_it_starts_again() {
    let cluster = Cluster::new(&[]);
    let first = controller(&cluster, "");
    let xeon = simulated(&cluster, &first, "xeon", "xeon", &["qwen25-coder-7b"]);
    let url = format!("{}/v1/chat/completions", first.url);
    // Two streams of about 2 s (the xeon streams 22 tokens/s), in flight when SIGTERM comes:
    // they end during the drain, and the controller exits right after the last one.
    let streams: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let body = chat("qwen25-coder-7b", 40, true);
                curl_with_key(&url, KEY, &["-H", "x-switchyard-task: batch", "-d", &body])
            })
        })
        .collect();
    assert!(crate::process::eventually(std::time::Duration::from_secs(10), || {
        first.admin("/admin/nodes")["snapshot"]["nodes"][0]["in_flight"].as_u64() == Some(2)
    }));
    let exit = first.stop();
    assert!(exit.success(), "{exit:?}");
    for stream in streams {
        let (status, text) = stream.join().expect("client");
        assert_eq!(status, 200);
        assert!(text.contains("[DONE]"), "the drain lets it finish: {text}");
    }
    drop(xeon);
    let again = cluster.controller("127.0.0.1:0");
    let view = again.admin("/admin/decisions?limit=100");
    let records = view["records"].as_array().expect("records");
    assert_eq!(records.len(), 2, "{view:#}");
}
