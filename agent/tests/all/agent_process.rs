//! The real `switchyard-agent` process in front of a real llama.cpp server, and in front of
//! the simulated M4: its OpenAI-shaped API, streaming, errors, and its telemetry.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

fn llama_config(url: &str) -> String {
    format!(
        "node = \"xeon\"\nmax_concurrency = 2\nmax_tokens = 2048\ntelemetry_interval_ms = 200\n\
         [labels]\nrole = \"batch\"\n\
         [runtime]\nkind = \"llama-cpp\"\nbase_url = \"{url}\"\n\
         [[models]]\nlogical = \"qwen25-coder-7b\"\nlocal = \"tiny\"\ncontext_length = 256\n"
    )
}

#[tokio::test]
async fn the_agent_serves_chat_whole_and_streamed_and_reports_what_it_measured() {
    let runtime = Runtime::start("llama-cpp");
    let (agent, _dir) = agent(&llama_config(&runtime.url));
    let client = reqwest::Client::new();

    let response = client
        .post(format!("{}/v1/chat/completions", agent.url))
        .json(&json!({ "model": "tiny", "max_tokens": 10, "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .expect("chat");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-switchyard-node"], "xeon");
    assert_eq!(response.headers()["x-switchyard-runtime"], "llama-cpp");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 10);
    assert!(
        printable(body["choices"][0]["message"]["content"].as_str().unwrap_or_default()),
        "{body}"
    );

    let response = client
        .post(format!("{}/v1/chat/completions", agent.url))
        .json(&json!({ "model": "tiny", "max_tokens": 16, "stream": true, "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .expect("stream");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let text = response.text().await.expect("body");
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.last().copied(), Some("data: [DONE]"), "{text}");
    let last: Value = serde_json::from_str(events[events.len() - 2].trim_start_matches("data: ")).expect("last chunk");
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert!(events.len() > 10, "{} events", events.len());

    // The agent relays, it does not judge: a body the runtime refuses gets the runtime's own
    // answer, status and bytes, exactly as a direct call does.
    let refused = |url: String| {
        let client = client.clone();
        async move {
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .body("{not json")
                .send()
                .await
                .expect("bad");
            (response.status(), response.text().await.expect("text"))
        }
    };
    let through = refused(format!("{}/v1/chat/completions", agent.url)).await;
    let direct = refused(format!("{}/v1/chat/completions", runtime.url)).await;
    assert!(
        through.0.is_client_error() || through.0.is_server_error(),
        "{through:?}"
    );
    assert_eq!(through, direct);

    // Telemetry: the runtime's state, the catalog, and speeds from the requests above.
    let seen = eventually(Duration::from_secs(10), || async {
        let t = telemetry(&client, &agent.url).await;
        t["performance"]["samples"].as_u64() == Some(2)
    })
    .await;
    assert!(seen);
    let t = telemetry(&client, &agent.url).await;
    assert_eq!(t["node"], "xeon");
    assert_eq!(t["runtime"]["kind"], "llama-cpp");
    assert_eq!(t["runtime"]["healthy"], true);
    assert_eq!(t["runtime"]["simulated"], false);
    assert_eq!(t["models"][0]["logical"], "qwen25-coder-7b");
    assert_eq!(t["models"][0]["loaded"], true);
    assert_eq!(t["limits"]["max_concurrency"], 2);
    assert!(
        t["performance"]["tokens_per_sec"].as_f64().is_some_and(|s| s > 0.0),
        "{t}"
    );
    assert!(t["performance"]["ttft_ms"].as_f64().is_some_and(|s| s > 0.0), "{t}");
    assert_eq!(t["performance"]["source"], "served");
    assert!(t["system"]["mem_total_mb"].as_u64().is_some_and(|m| m > 0));
}

#[tokio::test]
async fn a_runtime_that_dies_mid_stream_ends_the_stream_with_an_explicit_error_event() {
    let runtime = Runtime::start("llama-cpp");
    let (agent, _dir) = agent(&llama_config(&runtime.url));
    let client = reqwest::Client::new();
    let mut response = client
        .post(format!("{}/v1/chat/completions", agent.url))
        // 1500 tokens: about 1.3 s of the tiny model here (it always runs to the length
        // limit), far longer than stopping the runtime takes.
        .json(&json!({ "model": "tiny", "max_tokens": 1500, "stream": true, "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .expect("stream");
    let first = response.chunk().await.expect("first chunk").expect("some bytes");
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    let health = || async {
        client
            .get(format!("{}/health", agent.url))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(
        health().await,
        200,
        "GET /health, as vLLM answers it, while the runtime answers"
    );
    runtime.stop();
    assert!(
        eventually(Duration::from_secs(10), || async { health().await == 503 }).await,
        "GET /health says 503 once the runtime is gone"
    );
    let mut rest = String::new();
    let broke = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => rest.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(
        !rest.contains("[DONE]"),
        "the stream finished before the runtime was stopped: this test proved nothing"
    );
    // The agent relays bytes: a cut stream stays cut (the HTTP body ends in an error, never
    // a clean end), and the controller turns that into an error event for its client.
    assert!(broke, "the stream must end in an error, got a clean end after: {rest}");
}

#[tokio::test]
async fn the_simulated_m4_labels_its_replies_and_its_telemetry() {
    let (agent, _dir) = agent(
        "node = \"m4\"\nmax_concurrency = 1\nmax_tokens = 2048\n\
         [runtime]\nkind = \"simulated\"\nprofile = \"m4\"\n\
         [[models]]\nlogical = \"qwen25-coder-7b\"\nlocal = \"qwen25-coder-7b-mlx\"\ncontext_length = 32768\n",
    );
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/v1/chat/completions", agent.url))
        .json(&json!({ "model": "qwen25-coder-7b-mlx", "max_tokens": 3, "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .expect("chat");
    assert_eq!(response.headers()["x-switchyard-simulated"], "true");
    let body: Value = response.json().await.expect("json");
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .starts_with("[simulated m4]"),
        "{body}"
    );
    let t = telemetry(&client, &agent.url).await;
    assert_eq!(t["runtime"]["simulated"], true);
    assert_eq!(t["runtime"]["kind"], "simulated");
}

#[test]
fn telemetry_once_prints_one_snapshot_and_says_when_there_is_no_gpu() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard-agent"))
        .args(["telemetry", "--once"])
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let t: switchyard_protocol::AgentTelemetry =
        serde_json::from_slice(&output.stdout).expect("one AgentTelemetry document");
    assert!(t.system.mem_total_mb > 0);
    if t.gpus.is_empty() {
        assert!(t.gpu_status.starts_with("no NVIDIA GPU visible"), "{}", t.gpu_status);
    }
    assert!(t.runtime.is_none(), "no config, no runtime section");
}

#[tokio::test]
async fn bench_times_each_model_and_run_reports_its_figures_until_it_serves() {
    let runtime = Runtime::start("llama-cpp");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("xeon.toml");
    std::fs::write(&config, llama_config(&runtime.url)).expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard-agent"))
        .args(["bench", "--rounds", "1", "--max-tokens", "8", "--config"])
        .arg(&config)
        .output()
        .expect("bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("| qwen25-coder-7b | 1 |") && stdout.contains("| qwen25-coder-7b | 2 |"),
        "{stdout}"
    );
    let saved: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("xeon.bench.json")).expect("saved")).expect("json");
    let speed = saved["models"][0]["single"]["tokens_per_sec"].as_f64().expect("speed");
    assert!(speed > 0.0);

    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard-agent"));
    command
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config);
    let agent = Process::spawn(command, Duration::from_secs(60));
    let t = telemetry(&reqwest::Client::new(), &agent.url).await;
    assert_eq!(t["performance"]["source"], "bench", "{t}");
    let reported = t["performance"]["tokens_per_sec"].as_f64().expect("reported");
    assert!(
        (reported - speed).abs() < 0.01 * speed.max(1.0),
        "{reported} vs {speed}"
    );
}

#[test]
fn the_telemetry_recorded_on_a_real_h100_parses_and_carries_nvml_figures() {
    // Printed by `switchyard-agent telemetry --once` on the project's GPU machine (see docs/agent.md).
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/telemetry-h100.json");
    let t: switchyard_protocol::AgentTelemetry =
        serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("valid AgentTelemetry");
    assert!(t.gpu_status.starts_with("ok (NVML"), "{}", t.gpu_status);
    assert_eq!(t.gpus.len(), 1);
    let gpu = &t.gpus[0];
    assert_eq!(gpu.name, "NVIDIA H100 80GB HBM3");
    assert!(gpu.mem_total_mb > 80_000 && gpu.temp_c.is_some() && gpu.power_w.is_some_and(|w| w > 0.0));
}
