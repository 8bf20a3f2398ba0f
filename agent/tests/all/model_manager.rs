//! Many models on one node, on REAL runtimes: two llama.cpp servers (two tiny models) and one
//! `mlx_lm.server`, each started by the agent when a request needs it, within a memory budget
//! that holds only one of the llama.cpp models. Requests alternating between models are all
//! answered; concurrent requests for a cold model cause one load; a stream in flight is never
//! cut by an eviction; the loads and evictions show in telemetry and in the log; the operator
//! loads and unloads; a model larger than the budget is refused; the agent's stop stops them.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// The agent's config: budget 1000 MB, `tiny-a` and `tiny-b` (llama.cpp, 600 MB each),
/// `tiny-mlx` (400 MB), and `huge` (5000 MB, never started).
fn config(models: &Path) -> String {
    let python = python().display().to_string();
    // Two model files: the tiny model twice, each runtime told its own alias.
    for name in ["tiny-a", "tiny-b"] {
        std::fs::copy(models.join("tiny.gguf"), models.join(format!("{name}.gguf"))).expect("copy model");
    }
    let cache = models.join("hf-cache");
    std::fs::create_dir_all(&cache).expect("hf cache");
    let llama = |name: &str| {
        json!([
            python,
            "-m",
            "llama_cpp.server",
            "--model",
            models.join(format!("{name}.gguf")),
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
    let mlx_path = models.join("tiny-hf").display().to_string();
    let mlx = json!([
        "env",
        format!("HF_HUB_CACHE={}", cache.display()),
        "HF_HUB_OFFLINE=1",
        python,
        "-m",
        "mlx_lm.server",
        "--model",
        mlx_path,
        "--host",
        "127.0.0.1",
        "--port",
        "{port}"
    ]);
    format!(
        "node = \"xeon\"\nmax_concurrency = 4\nmax_tokens = 256\ntelemetry_interval_ms = 200\n\
         [runtime]\nkind = \"llama-cpp\"\nmemory_budget_mb = 1000\nload_timeout_s = 120\n\
         [[models]]\nlogical = \"tiny-a\"\nlocal = \"tiny-a\"\ncontext_length = 256\nmemory_mb = 600\ncommand = {a}\n\
         [[models]]\nlogical = \"tiny-b\"\nlocal = \"tiny-b\"\ncontext_length = 256\nmemory_mb = 600\ncommand = {b}\n\
         [[models]]\nlogical = \"tiny-mlx\"\nlocal = {mlx_path:?}\ncontext_length = 256\nmemory_mb = 400\ncommand = {mlx}\n\
         [[models]]\nlogical = \"huge\"\nlocal = \"huge\"\ncontext_length = 256\nmemory_mb = 5000\ncommand = {a}\n",
        a = llama("tiny-a"),
        b = llama("tiny-b"),
    )
}

fn chat(model: &str, max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": model, "max_tokens": max_tokens, "stream": stream, "temperature": 0,
        "messages": [{ "role": "user", "content": "Tell me about routing." }]
    })
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = client.post(url).json(body).send().await.expect("send");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let value = response.json().await.unwrap_or(Value::Null);
    (status, value, headers)
}

/// The first telemetry sample (published every 200 ms) for which `holds` is true, or the last
/// one after 10 s.
async fn telemetry_when(client: &reqwest::Client, agent: &str, holds: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let sample = telemetry(client, agent).await;
        if holds(&sample) || std::time::Instant::now() > deadline {
            return sample;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn state<'a>(telemetry: &'a Value, local: &str) -> &'a Value {
    telemetry["model_states"]
        .as_array()
        .and_then(|states| states.iter().find(|s| s["local"] == local))
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_runs_many_models_loading_on_demand_and_evicting_to_fit() {
    let models = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(model_dir()).expect("model dir").flatten() {
        let target = models.path().join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            for file in std::fs::read_dir(entry.path()).expect("hf dir").flatten() {
                std::fs::copy(file.path(), target.join(file.file_name())).expect("copy");
            }
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
    let mlx_local = models.path().join("tiny-hf").display().to_string();
    let (mut agent, _dir) = agent(&config(models.path()));
    let client = reqwest::Client::new();
    let chat_url = format!("{}/v1/chat/completions", agent.url);

    let cold = telemetry(&client, &agent.url).await;
    assert_eq!(state(&cold, "tiny-a")["state"], "cold", "{cold}");
    assert_eq!(cold["memory_budget_mb"], 1000);

    // Three requests at once for a cold model: one load, three answers.
    let request = chat("tiny-a", 8, false);
    let (one, two, three) = tokio::join!(
        post(&client, &chat_url, &request),
        post(&client, &chat_url, &request),
        post(&client, &chat_url, &request),
    );
    for (status, body, _) in [&one, &two, &three] {
        assert_eq!(*status, 200, "{body}\n{}", agent.log());
        assert_eq!(body["model"], "tiny-a", "{body}");
    }
    let after = telemetry_when(&client, &agent.url, |t| state(t, "tiny-a")["state"] == "ready").await;
    assert_eq!(
        state(&after, "tiny-a")["loads"],
        1,
        "one load for concurrent requests: {after}"
    );
    assert_eq!(state(&after, "tiny-a")["state"], "ready");

    // The MLX model fits beside it (600 + 400 = 1000 MB): nothing is evicted.
    let (status, body, _) = post(&client, &chat_url, &chat(&mlx_local, 8, false)).await;
    assert_eq!(status, 200, "{body}\n{}", agent.log());
    let both = telemetry_when(&client, &agent.url, |t| state(t, &mlx_local)["state"] == "ready").await;
    assert_eq!(state(&both, "tiny-a")["state"], "ready", "{both}");
    assert_eq!(state(&both, &mlx_local)["state"], "ready", "{both}");

    // A stream on tiny-a, and meanwhile a request for tiny-b, which needs tiny-a's memory:
    // the stream finishes whole, then tiny-b loads.
    let stream = client
        .post(&chat_url)
        .json(&chat("tiny-a", 200, true))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let b = tokio::spawn({
        let client = client.clone();
        let url = chat_url.clone();
        async move { post(&client, &url, &chat("tiny-b", 8, false)).await }
    });
    let streamed = stream.text().await.expect("whole stream");
    assert!(
        streamed.trim_end().ends_with("data: [DONE]"),
        "cut mid-stream:\n{streamed}"
    );
    let (status, body, _) = b.await.expect("tiny-b");
    assert_eq!(status, 200, "{body}\n{}", agent.log());
    assert_eq!(body["model"], "tiny-b");

    // Alternating between the two llama.cpp models: every request answered.
    for round in 0..4 {
        let model = if round % 2 == 0 { "tiny-a" } else { "tiny-b" };
        let (status, body, _) = post(&client, &chat_url, &chat(model, 8, false)).await;
        assert_eq!(status, 200, "round {round} ({model}): {body}\n{}", agent.log());
        assert_eq!(body["model"], model);
    }
    let after = telemetry_when(&client, &agent.url, |t| state(t, "tiny-b")["loads"] == 3).await;
    let loads = |m: &str| state(&after, m)["loads"].as_u64().unwrap_or(0);
    let evictions = |m: &str| state(&after, m)["evictions"].as_u64().unwrap_or(0);
    assert!(loads("tiny-a") >= 3 && loads("tiny-b") >= 2, "{after}");
    assert!(evictions("tiny-a") >= 2 && evictions("tiny-b") >= 2, "{after}");
    assert!(
        state(&after, "tiny-a")["load_ms"].as_u64().is_some(),
        "load time measured: {after}"
    );
    // The node's catalog says which variant is warm, and how long a cold one takes to load.
    let variants = after["models"].as_array().expect("models");
    let variant = |m: &str| variants.iter().find(|v| v["local"] == m).expect("variant");
    assert_eq!(variant("tiny-b")["loaded"], true, "{after}");
    assert_eq!(variant("tiny-a")["loaded"], false, "{after}");
    assert!(variant("tiny-a")["load_ms"].as_u64().is_some(), "{after}");
    let log = agent.log();
    assert!(log.contains("evicting (idle) to make room for tiny-b"), "{log}");
    assert!(log.contains("loaded"), "{log}");

    // The operator unloads and loads.
    let unload = format!("{}/models/unload", agent.url);
    let load = format!("{}/models/load", agent.url);
    let (status, body, _) = post(&client, &unload, &json!({ "model": "tiny-b" })).await;
    assert_eq!((status, body["result"].as_str()), (200, Some("unloaded")), "{body}");
    let (status, body, _) = post(&client, &load, &json!({ "model": "tiny-a" })).await;
    assert_eq!((status, body["result"].as_str()), (200, Some("loaded")), "{body}");
    let loaded = telemetry_when(&client, &agent.url, |t| state(t, "tiny-a")["state"] == "ready").await;
    assert_eq!(state(&loaded, "tiny-b")["state"], "cold", "{loaded}");

    // Larger than the whole budget: refused at once, and marked so another node may serve it.
    let (status, body, headers) = post(&client, &chat_url, &chat("huge", 8, false)).await;
    assert_eq!(status, 507, "{body}");
    assert_eq!(
        body["error"]["message"],
        "model 'huge' needs 5000 MB, more than this node's model memory budget of 1000 MB (runtime.memory_budget_mb)"
    );
    assert!(headers.contains_key("x-switchyard-retryable"));

    // Stopping the agent stops every model's runtime.
    let pids: Vec<u32> = telemetry(&client, &agent.url).await["model_states"]
        .as_array()
        .expect("states")
        .iter()
        .filter_map(|s| s["pid"].as_u64().map(|p| p as u32))
        .collect();
    assert!(!pids.is_empty());
    assert!(agent.terminate().is_some_and(|s| s.success()), "{}", agent.log());
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "runtime {pid} outlived the agent"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_the_agent_started_dies_with_the_agent_even_on_sigkill() {
    let models = tempfile::tempdir().expect("tempdir");
    std::fs::copy(model_dir().join("tiny.gguf"), models.path().join("tiny.gguf")).expect("copy");
    let command = json!([
        python(),
        "-m",
        "llama_cpp.server",
        "--model",
        models.path().join("tiny.gguf"),
        "--model_alias",
        "tiny",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--n_threads",
        "1"
    ]);
    let (agent, _dir) = agent(&format!(
        "node = \"xeon\"\nmax_concurrency = 1\nmax_tokens = 64\ntelemetry_interval_ms = 200\n\
         [runtime]\nkind = \"llama-cpp\"\n\
         [[models]]\nlogical = \"tiny\"\nlocal = \"tiny\"\ncontext_length = 256\nmemory_mb = 100\npreload = true\ncommand = {command}\n"
    ));
    let client = reqwest::Client::new();
    let ready = telemetry_when(&client, &agent.url, |t| state(t, "tiny")["state"] == "ready").await;
    let pid = state(&ready, "tiny")["pid"].as_u64().expect("preloaded at start") as u32;
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &agent.pid().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert!(
        eventually(Duration::from_secs(10), || async {
            !Path::new(&format!("/proc/{pid}")).exists()
        })
        .await,
        "runtime {pid} outlived its SIGKILLed agent"
    );
}
