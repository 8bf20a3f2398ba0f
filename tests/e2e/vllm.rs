//! A real vLLM (on the CPU) behind an agent: the agent subscribes to its KV-cache events on
//! loopback and keeps a copy of its prefix cache, so the controller's cache estimate for the
//! node is the runtime's own account (`precise`): it matches the `cached_tokens` vLLM reports
//! on every turn of a shared-prefix session, follows evictions (`BlockRemoved`), and starts
//! again when vLLM restarts. The agent reads vLLM's Prometheus metrics for real, and the
//! Anthropic Messages API is relayed to vLLM as it is.

use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::process::{Agent, Controller, curl_with_key, eventually};
use crate::runtimes::{Vllm, VllmPorts, repo};

const KEY: &str = "e2e-vllm-key-0123456789";
/// Blocks in vLLM's cache: 5,120 tokens, enough for one 4,096-token request, few enough that
/// four long unrelated prompts evict a session's prefix.
const CACHE_BLOCKS: u32 = 160;

/// A system prompt of ~900 tokens for the tiny model's tokenizer, shared by every turn.
fn system_prompt() -> String {
    let mut text = String::from("You are a careful coding agent working in a Rust repository. ");
    for rule in 0..24 {
        text.push_str(&format!(
            "Rule {rule}: read the code before changing it, keep every test green, and say what you measured. "
        ));
    }
    text
}

fn start_agent(cluster: &Cluster, controller: &Controller, vllm: &Vllm) -> Agent {
    let bundle = cluster.issue("ryzen", &[]);
    let config = cluster.dir.path().join("ryzen.toml");
    std::fs::write(
        &config,
        format!(
            "node = \"ryzen\"\nmax_concurrency = 4\nmax_tokens = 4096\ntelemetry_interval_ms = 200\n\
             [runtime]\nkind = \"vllm\"\nbase_url = \"{url}\"\n\
             [runtime.kv_events]\nendpoint = \"tcp://127.0.0.1:{events}\"\nreplay_endpoint = \"tcp://127.0.0.1:{replay}\"\n\
             [[models]]\nlogical = \"qwen25-coder-7b\"\nlocal = \"tiny\"\ncontext_length = 4096\n\
             [controller]\naddress = \"{address}\"\nserver_name = \"localhost\"\n\
             ca = \"{b}/ca.pem\"\ncert = \"{b}/node.pem\"\nkey = \"{b}/node.key\"\n",
            url = vllm.url,
            events = vllm.ports.events,
            replay = vllm.ports.replay,
            address = controller.agents.as_deref().expect("agents listen"),
            b = bundle.display()
        ),
    )
    .expect("agent config");
    Agent::start(&config, None)
}

/// The ryzen's link as `/admin/nodes` shows it.
fn link(controller: &Controller) -> Value {
    let nodes = controller.admin("/admin/nodes");
    nodes["links"]
        .as_array()
        .and_then(|links| links.iter().find(|l| l["node"] == "ryzen"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Event batches the agent has applied, as its last telemetry says.
fn batches(controller: &Controller) -> u64 {
    link(controller)["kv_events"]["batches"].as_u64().unwrap_or(0)
}

/// One chat turn through the controller; the runtime's cached tokens from its usage, and
/// the controller's estimate for the ryzen with its source from the decision record.
fn turn(controller: &Controller, messages: &[Value]) -> (u64, u64, String) {
    let written = |c: &Controller| c.admin("/admin/decisions?limit=1")["written"].as_u64().unwrap_or(0);
    let before = written(controller);
    let body = json!({"model": "qwen25-coder-7b", "max_tokens": 2, "temperature": 0, "messages": messages});
    let (status, text) = curl_with_key(
        &format!("{}/v1/chat/completions", controller.url),
        KEY,
        &["-d", &body.to_string()],
    );
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(text.rsplit("\r\n\r\n").next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    let actual = answer["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or_else(|| panic!("no cached_tokens: {answer}"));
    assert!(
        eventually(Duration::from_secs(10), || written(controller) > before),
        "the turn left no decision record"
    );
    let records = controller.admin("/admin/decisions?limit=1");
    let record = &records["records"][0];
    let estimate = record["request"]["cached"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["node"] == "ryzen"))
        .cloned()
        .unwrap_or(json!({"tokens": 0, "source": "none"}));
    (
        actual,
        estimate["tokens"].as_u64().unwrap_or(0),
        estimate["source"].as_str().unwrap_or("approximate").to_owned(),
    )
}

/// Wait until the agent has applied more event batches than `before` (the previous turn's
/// blocks are in its copy).
fn settle(controller: &Controller, before: u64) -> u64 {
    assert!(
        eventually(Duration::from_secs(10), || batches(controller) > before),
        "no KV-cache event batch arrived: {:#}",
        link(controller)
    );
    batches(controller)
}

#[test]
fn a_real_vllms_kv_cache_events_make_the_cache_estimate_exact_through_evictions_and_a_restart() {
    let ports = VllmPorts::free();
    let mut vllm = Vllm::start(ports, Some(CACHE_BLOCKS));
    let cluster = Cluster::new(&[]);
    cluster.configure(&format!(
        "[policy]\ndir = {:?}\nactive = \"least-loaded\"\nwatch = false\n[[api_keys]]\nname = \"e2e\"\nkey = \"{KEY}\"\n",
        repo().join("policies").display().to_string()
    ));
    let controller = cluster.controller("127.0.0.1:0");
    let agent = start_agent(&cluster, &controller, &vllm);
    assert!(
        eventually(Duration::from_secs(30), || {
            controller.node_healthy("ryzen") == Some(true) && link(&controller)["kv_events"]["current"] == true
        }),
        "the agent never followed vLLM's events: {:#}\n{}",
        link(&controller),
        agent.log_text()
    );

    // A session of five turns over one system prompt: from the second turn on, the
    // estimate is vLLM's own count, exactly.
    let mut messages = vec![json!({"role": "system", "content": system_prompt()})];
    let mut seen = batches(&controller);
    let mut hits = Vec::new();
    for n in 0..5 {
        messages.push(json!({"role": "user", "content": format!("Turn {n}: fix the failing test in module {n} and explain the change.")}));
        let (actual, estimate, source) = turn(&controller, &messages);
        if n == 0 {
            assert_eq!((actual, estimate), (0, 0), "a cold cache");
        } else {
            assert!(actual >= 512, "turn {n}: vLLM found only {actual} tokens cached");
            assert_eq!((estimate, source.as_str()), (actual, "precise"), "turn {n}");
        }
        hits.push(actual);
        messages.push(json!({"role": "assistant", "content": format!("Done with module {n}: the test passes.")}));
        seen = settle(&controller, seen);
    }
    assert!(
        hits.windows(2).all(|w| w[0] <= w[1]),
        "the prefix grows turn by turn: {hits:?}"
    );
    let figures = link(&controller)["kv_events"].clone();
    assert!(figures["blocks"].as_u64().unwrap_or(0) >= 20, "{figures:#}");
    assert_eq!(figures["block_size"], Vllm::BLOCK_SIZE, "{figures:#}");

    // The agent reads vLLM's own Prometheus metrics: its queue and KV-cache usage.
    let telemetry: Value = {
        let url = agent
            .url
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .expect("agent url");
        let output = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "5", &format!("{url}/telemetry")])
            .output()
            .expect("curl");
        serde_json::from_slice(&output.stdout).expect("telemetry")
    };
    let runtime = &telemetry["runtime"];
    assert_eq!(
        (runtime["kind"].as_str(), runtime["healthy"].as_bool()),
        (Some("vllm"), Some(true)),
        "{runtime:#}"
    );
    // vLLM counts only the blocks of running requests as used: idle, it says 0 %.
    assert!(runtime["kv_cache_usage_pct"].as_f64().is_some(), "{runtime:#}");
    assert_eq!(
        (runtime["running"].as_u64(), runtime["waiting"].as_u64()),
        (Some(0), Some(0)),
        "{runtime:#}"
    );

    // Four long unrelated prompts fill the cache: vLLM evicts the session's blocks, the
    // agent's copy follows, and the estimate is again vLLM's own figure.
    for filler in 0..4 {
        let text: String = (0..150)
            .map(|i| format!("unrelated filler {filler} line {i}. "))
            .collect();
        turn(&controller, &[json!({"role": "user", "content": text})]);
        seen = settle(&controller, seen);
    }
    messages.push(json!({"role": "user", "content": "One more turn after the cache filled up."}));
    let (actual, estimate, _) = turn(&controller, &messages);
    assert_eq!(estimate, actual, "after evictions");
    assert!(
        actual < *hits.last().expect("hits"),
        "nothing was evicted: {actual} cached"
    );
    settle(&controller, seen);

    // vLLM restarts (same ports): the agent's copy starts again, so the estimate is vLLM's
    // cold cache, not the old one, and then follows the new cache.
    let purges_before = link(&controller)["kv_events"]["purges"].as_u64().unwrap_or(0);
    vllm.stop();
    assert!(
        eventually(Duration::from_secs(20), || controller.node_healthy("ryzen")
            == Some(false)),
        "the controller never saw vLLM go: {:#}",
        link(&controller)
    );
    drop(vllm);
    let _vllm = Vllm::start(ports, Some(CACHE_BLOCKS));
    assert!(eventually(Duration::from_secs(30), || {
        controller.node_healthy("ryzen") == Some(true) && link(&controller)["kv_events"]["current"] == true
    }));
    assert!(link(&controller)["kv_events"]["purges"].as_u64().unwrap_or(0) > purges_before);
    let (actual, estimate, _) = turn(&controller, &messages);
    assert_eq!((actual, estimate), (0, 0), "a restarted vLLM starts cold");
    settle(&controller, 0);
    let (actual, estimate, source) = turn(&controller, &messages);
    assert!(actual >= 512, "{actual}");
    assert_eq!((estimate, source.as_str()), (actual, "precise"), "after the restart");

    // The Anthropic Messages API is relayed to vLLM (which speaks it): 200, with its own
    // cache-read count.
    let anthropic = json!({"model": "qwen25-coder-7b", "max_tokens": 2, "system": system_prompt(),
                           "messages": [{"role": "user", "content": "Turn 0: fix the failing test in module 0 and explain the change."}]});
    let (status, text) = curl_with_key(
        &format!("{}/v1/messages", controller.url),
        KEY,
        &["-H", "anthropic-version: 2023-06-01", "-d", &anthropic.to_string()],
    );
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"cache_read_input_tokens\""), "{text}");
    assert!(text.to_ascii_lowercase().contains("x-switchyard-node: ryzen"), "{text}");
}
