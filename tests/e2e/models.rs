//! Many models on one node, through the controller: an agent that starts two real llama.cpp
//! models on demand within a budget that holds one; requests alternating between them,
//! through the front door, are all answered; the node table shows which is warm and what a
//! cold one costs to load; `switchyard models` lists them and loads and unloads one.

use std::time::Duration;

use crate::cluster::Cluster;
use crate::process::{Agent, curl_with_key, eventually};
use crate::runtimes::python;

const KEY: &str = "e2e-prompt-key-0123456789";

#[test]
fn models_load_on_demand_behind_the_controller_and_the_operator_sees_and_moves_them() {
    let cluster = Cluster::new(&[]);
    let controller = crate::first_hour::controller(&cluster, "");
    let address = controller.agents.clone().expect("agents");
    let bundle = cluster.issue("xeon", &[]);

    let models = cluster.dir.path().join("models");
    std::fs::create_dir_all(&models).expect("mkdir");
    let source = crate::runtimes::model_dir().join("tiny.gguf");
    let command = |name: &str| {
        let file = models.join(format!("{name}.gguf"));
        std::fs::copy(&source, &file).expect("copy model");
        serde_json::json!([
            python(),
            "-m",
            "llama_cpp.server",
            "--model",
            file,
            "--model_alias",
            name,
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--interrupt_requests",
            "False",
            "--n_threads",
            "1"
        ])
    };
    let config = cluster.dir.path().join("xeon.toml");
    std::fs::write(
        &config,
        format!(
            "node = \"xeon\"\nmax_concurrency = 2\nmax_tokens = 256\ntelemetry_interval_ms = 200\n\
             [runtime]\nkind = \"llama-cpp\"\nmemory_budget_mb = 1000\n\
             [[models]]\nlogical = \"tiny-a\"\nlocal = \"tiny-a\"\ncontext_length = 256\nmemory_mb = 600\ncommand = {}\n\
             [[models]]\nlogical = \"tiny-b\"\nlocal = \"tiny-b\"\ncontext_length = 256\nmemory_mb = 600\ncommand = {}\n\
             [controller]\naddress = \"{address}\"\nserver_name = \"localhost\"\n\
             ca = \"{b}/ca.pem\"\ncert = \"{b}/node.pem\"\nkey = \"{b}/node.key\"\n",
            command("tiny-a"),
            command("tiny-b"),
            b = bundle.display()
        ),
    )
    .expect("config");
    let _agent = Agent::start(&config, None);
    assert!(eventually(Duration::from_secs(30), || controller.node_healthy("xeon")
        == Some(true)));

    let url = format!("{}/v1/chat/completions", controller.url);
    for round in 0..4 {
        let model = if round % 2 == 0 { "tiny-a" } else { "tiny-b" };
        let body = format!(
            "{{\"model\": \"{model}\", \"max_tokens\": 8, \"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}]}}"
        );
        let (status, text) = curl_with_key(&url, KEY, &["-d", &body]);
        assert_eq!(status, 200, "round {round}: {text}\n{}", controller.log_text());
        assert!(text.contains(&format!("\"model\":\"{model}\"")), "{text}");
    }

    // The node table: tiny-b warm, tiny-a cold with its measured load time.
    let warm_and_cold = |view: &serde_json::Value| {
        let models = &view["snapshot"]["nodes"][0]["models"];
        let variant = |m: &str| {
            models
                .as_array()
                .and_then(|all| all.iter().find(|v| v["local"] == m))
                .cloned()
                .unwrap_or_default()
        };
        variant("tiny-b")["loaded"] == true
            && variant("tiny-a")["loaded"] == false
            && variant("tiny-a")["load_ms"].as_u64().is_some()
    };
    assert!(
        eventually(Duration::from_secs(5), || warm_and_cold(
            &controller.admin("/admin/nodes")
        )),
        "{}",
        controller.admin("/admin/nodes")
    );

    let listed = controller.cli_ok(&["models"]);
    assert!(listed.contains("tiny-b") && listed.contains("ready"), "{listed}");
    assert!(listed.contains("cold"), "{listed}");
    assert!(
        listed.contains("xeon: 600 of 1000 MB of model memory in use"),
        "{listed}"
    );

    let unloaded = controller.cli_ok(&["models", "unload", "xeon", "tiny-b"]);
    assert_eq!(unloaded.trim(), "xeon: tiny-b unloaded");
    let loaded = controller.cli_ok(&["models", "load", "xeon", "tiny-a"]);
    assert_eq!(loaded.trim(), "xeon: tiny-a loaded");
    let unknown = controller.cli(&["models", "load", "xeon", "gpt-5"]);
    assert!(!unknown.status.success());
    let message = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        message.contains("model \"gpt-5\" is not in node xeon's catalog"),
        "{message}"
    );
}
