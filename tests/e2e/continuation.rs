//! The answer survives its node: a stream whose node is lost mid-answer continues on another
//! node, spliced into the same stream, and says so.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::first_hour::{KEY, controller, simulated};
use crate::process::{Agent, Controller, eventually};

/// A streamed request read as it comes: its headers, then each event's data.
struct Stream {
    curl: std::process::Child,
    reader: BufReader<std::process::ChildStdout>,
    headers: String,
}

impl Stream {
    fn start(controller: &Controller, path: &str, body: &Value, headers: &[&str]) -> Stream {
        let mut curl = Command::new("curl")
            .args(["-sS", "-N", "-i", "--max-time", "60"])
            .args(headers)
            .args(["-d", &body.to_string()])
            .arg(format!("{}{path}", controller.url))
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl");
        let mut reader = BufReader::new(curl.stdout.take().expect("stdout"));
        let mut headers = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("a header line");
            if line.trim().is_empty() {
                break;
            }
            headers.push_str(&line.to_ascii_lowercase());
        }
        Stream { curl, reader, headers }
    }

    fn header(&self, name: &str) -> String {
        self.headers
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// The next event's data (`None` at the end of the stream).
    fn next_event(&mut self) -> Option<String> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).expect("read") == 0 {
                return None;
            }
            if let Some(data) = line.trim_end().strip_prefix("data: ") {
                return Some(data.to_owned());
            }
        }
    }

    /// The rest of the stream, and how long after `fault` its hand-off (the first event
    /// marked `switchyard`) came, if it came.
    fn rest_and_handoff_after(&mut self, fault: std::time::Instant) -> (Vec<String>, Option<Duration>) {
        let mut gap = None;
        let mut events = Vec::new();
        while let Some(event) = self.next_event() {
            if gap.is_none() && event.contains("\"switchyard\"") {
                gap = Some(fault.elapsed());
            }
            events.push(event);
        }
        let _ = self.curl.wait();
        (events, gap)
    }

    fn rest(&mut self) -> Vec<String> {
        let events: Vec<String> = std::iter::from_fn(|| self.next_event()).collect();
        let _ = self.curl.wait();
        events
    }
}

fn content(event: &str) -> String {
    let value: Value = serde_json::from_str(event).unwrap_or_default();
    value["choices"][0]["delta"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn chat(max_tokens: u32) -> Value {
    json!({
        "model": "qwen25-coder-7b", "max_tokens": max_tokens, "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "write a long story"}],
    })
}

/// Two simulated nodes serving the same model (the xeon's profile both: 22 tokens/s).
fn two_nodes(cluster: &Cluster, controller: &Controller) -> Vec<(String, Agent)> {
    ["ryzen", "xeon"]
        .into_iter()
        .map(|node| {
            let agent = simulated(cluster, controller, node, "xeon", &["qwen25-coder-7b"]);
            (node.to_owned(), agent)
        })
        .collect()
}

#[test]
fn a_stream_whose_agent_is_killed_continues_on_the_other_node_with_the_same_words() {
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "");
    let mut nodes = two_nodes(&cluster, &controller);
    let bearer = format!("Authorization: Bearer {KEY}");
    let mut stream = Stream::start(&controller, "/v1/chat/completions", &chat(120), &["-H", &bearer]);
    let first = stream.header("x-switchyard-node");
    let (lost, survivor) = match first.as_str() {
        "ryzen" => (0, 1),
        "xeon" => (1, 0),
        other => panic!("served by {other:?}: {}", stream.headers),
    };
    let mut events: Vec<String> = Vec::new();
    while events.iter().filter(|e| !content(e).is_empty()).count() < 20 {
        events.push(stream.next_event().expect("an event before the cut"));
    }
    nodes[lost].1.kill_hard();
    events.extend(stream.rest());

    let text: String = events.iter().map(|e| content(e)).collect();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:#?}");
    assert!(!events.iter().any(|e| e.contains("\"error\"")), "{events:#?}");
    // The words go on where they stopped: the client's text is the text the other node gives
    // uninterrupted (the simulator's words follow from the prompt; both nodes run the xeon's
    // profile, whose name the label carries).
    let survivor_name = &nodes[survivor].0;
    let whole = whole_answer(&controller, &bearer, 120);
    assert_eq!(text, whole, "spliced:\n{text}\nuninterrupted:\n{whole}");
    // One stream: the first stream's id throughout, no second opening chunk, the hand-off marked once,
    // and usage that counts every token the client received.
    let chunks: Vec<Value> = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).expect("json"))
        .collect();
    let ids: std::collections::BTreeSet<String> = chunks.iter().map(|c| c["id"].to_string()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let openings = chunks
        .iter()
        .filter(|c| {
            let delta = &c["choices"][0]["delta"];
            delta.get("role").is_some() && delta["content"].as_str().is_none_or(str::is_empty)
        })
        .count();
    assert!(openings <= 1, "{events:#?}");
    let marks: Vec<&Value> = chunks.iter().filter_map(|c| c.get("switchyard")).collect();
    assert_eq!(marks.len(), 1, "{events:#?}");
    assert_eq!(marks[0]["continued"]["from"], first);
    assert_eq!(marks[0]["continued"]["to"], survivor_name.as_str());
    let cut_at = marks[0]["continued"]["after_tokens"].as_u64().expect("after_tokens");
    assert!(cut_at >= 20, "{marks:?}");
    let usage = &chunks.iter().rev().find(|c| c["usage"].is_object()).expect("usage")["usage"];
    assert_eq!(usage["completion_tokens"], 120, "{usage}");

    // Recorded and counted.
    assert!(eventually(Duration::from_secs(10), || {
        let records = controller.admin("/admin/decisions?limit=10");
        records["records"].as_array().is_some_and(|records| {
            records
                .iter()
                .any(|r| r["outcome"]["continued"][0]["to"] == survivor_name.as_str())
        })
    }));
    let (_, metrics) = crate::process::curl_with_key(&format!("{}/metrics", controller.url), KEY, &[]);
    assert!(metrics.contains("switchyard_stream_continuations_total 1"), "{metrics}");
}

/// A node that stops answering without breaking anything (its agent stopped, as a laptop
/// that sleeps): the link's pings go unanswered, the link ends, and the stream goes on.
#[test]
fn a_stream_whose_agent_is_stopped_continues_once_the_links_pings_go_unanswered() {
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "");
    let nodes = two_nodes(&cluster, &controller);
    let bearer = format!("Authorization: Bearer {KEY}");
    let mut stream = Stream::start(&controller, "/v1/chat/completions", &chat(80), &["-H", &bearer]);
    let lost = usize::from(stream.header("x-switchyard-node") == "xeon");
    let mut events: Vec<String> = Vec::new();
    while events.iter().filter(|e| !content(e).is_empty()).count() < 10 {
        events.push(stream.next_event().expect("an event before the stop"));
    }
    let pid = nodes[lost].1.pid().to_string();
    let stopped = std::time::Instant::now();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let (rest, gap) = stream.rest_and_handoff_after(stopped);
    events.extend(rest);
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:#?}");
    let text: String = events.iter().map(|e| content(e)).collect();
    assert_eq!(text, whole_answer(&controller, &bearer, 80));
    // Within the link's ping timeout (1 s after a ping every 0.8 s), not a request's time limit.
    let gap = gap.expect("the hand-off is marked");
    eprintln!("the stream went on {} ms after the agent stopped", gap.as_millis());
    assert!(
        gap < Duration::from_secs(10),
        "the stream went on {gap:?} after the agent stopped"
    );
}

#[test]
fn with_no_other_node_or_with_continuation_off_the_stream_ends_with_an_explicit_error() {
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "[limits]\nmax_continuations = 0\n");
    let mut nodes = two_nodes(&cluster, &controller);
    let bearer = format!("Authorization: Bearer {KEY}");
    let mut stream = Stream::start(&controller, "/v1/chat/completions", &chat(120), &["-H", &bearer]);
    let lost = usize::from(stream.header("x-switchyard-node") == "xeon");
    for _ in 0..5 {
        stream.next_event().expect("an event before the cut");
    }
    nodes[lost].1.kill_hard();
    let rest = stream.rest();
    assert!(
        rest.last()
            .is_some_and(|e| e.contains("\"error\"") && e.contains("failed mid-response")),
        "{rest:#?}"
    );
    assert!(!rest.iter().any(|e| e == "[DONE]"), "{rest:#?}");
}

#[test]
fn an_anthropic_clients_translated_stream_continues_too() {
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "");
    let mut nodes = two_nodes(&cluster, &controller);
    let body = json!({
        "model": "qwen25-coder-7b", "max_tokens": 80, "stream": true,
        "messages": [{"role": "user", "content": "write a long story"}],
    });
    let key = format!("x-api-key: {KEY}");
    let mut stream = Stream::start(
        &controller,
        "/v1/messages",
        &body,
        &["-H", &key, "-H", "anthropic-version: 2023-06-01"],
    );
    let lost = usize::from(stream.header("x-switchyard-node") == "xeon");
    let text_of = |events: &[String]| -> String {
        events
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .filter_map(|v| v["delta"]["text"].as_str().map(str::to_owned))
            .collect()
    };
    let mut events: Vec<String> = Vec::new();
    while text_of(&events).split_whitespace().count() < 10 {
        events.push(stream.next_event().expect("an event before the cut"));
    }
    nodes[lost].1.kill_hard();
    events.extend(stream.rest());
    let types: Vec<String> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .map(|v| v["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(types.iter().filter(|t| *t == "message_start").count(), 1, "{types:?}");
    assert_eq!(types.last().map(String::as_str), Some("message_stop"), "{events:#?}");
    assert!(!types.iter().any(|t| t == "error"), "{events:#?}");
    let stop = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .find(|v| v["type"] == "message_delta")
        .expect("message_delta");
    assert_eq!(stop["usage"]["output_tokens"], 80, "{stop}");
    assert_eq!(
        text_of(&events).split_whitespace().count(),
        80 + 1,
        "{}",
        text_of(&events)
    );
}

/// The answer the surviving node gives uninterrupted.
fn whole_answer(controller: &Controller, bearer: &str, max_tokens: u32) -> String {
    let mut body = chat(max_tokens);
    body["stream"] = json!(false);
    post_whole(
        &format!("{}/v1/chat/completions", controller.url),
        &["-H", bearer],
        &body,
    )
}

/// An agent in front of a llama.cpp server at `url` serving the wide tiny model as `tiny`.
fn llama_server_agent(cluster: &Cluster, address: &str, node: &str, url: &str) -> Agent {
    let head = format!(
        "max_concurrency = 1\ntelemetry_interval_ms = 250\n[runtime]\nkind = \"openai\"\nbase_url = \"{url}\"\n"
    );
    let bundle = cluster.issue(node, &[]);
    let config = cluster.agent_config_with(&format!("{node}.toml"), node, &bundle, address, &head, "tiny");
    // The wide model's context.
    let text = std::fs::read_to_string(&config).expect("agent config");
    std::fs::write(&config, text.replace("context_length = 256", "context_length = 8192")).expect("agent config");
    Agent::start(&config, None)
}

/// Across runtimes: a stream from a real llama.cpp server whose agent is killed continues on
/// a simulated node (or the other way round, as the policy chose), marked, in one stream.
#[test]
fn a_stream_continues_across_runtimes_between_llama_cpp_and_the_simulator() {
    let server = crate::runtimes::Runtime::start_with("llama-server", crate::runtimes::wide_model_dir());
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "");
    let address = controller.agents.clone().expect("agents");
    let llama = llama_server_agent(&cluster, &address, "ryzen", &server.url);
    let simulated = simulated(&cluster, &controller, "xeon", "xeon", &["qwen25-coder-7b"]);
    assert!(eventually(Duration::from_secs(30), || controller.node_healthy("ryzen")
        == Some(true)));
    let mut agents = [("ryzen", llama), ("xeon", simulated)];
    let bearer = format!("Authorization: Bearer {KEY}");
    // Long enough on either: 2,000 tokens of llama.cpp (~1 s), of the simulated xeon (~90 s).
    let mut stream = Stream::start(&controller, "/v1/chat/completions", &chat(2000), &["-H", &bearer]);
    let lost = usize::from(stream.header("x-switchyard-node") == "xeon");
    let mut events: Vec<String> = Vec::new();
    while events.iter().filter(|e| !content(e).is_empty()).count() < 10 {
        events.push(stream.next_event().expect("an event before the cut"));
    }
    agents[lost].1.kill_hard();
    // Enough of the other runtime's answer to see it go on, then leave (the client hangs up).
    let mut after = String::new();
    let mut mark = None;
    while let Some(event) = stream.next_event() {
        if mark.is_none() && event.contains("\"switchyard\"") {
            mark = Some(serde_json::from_str::<Value>(&event).expect("json"));
        }
        if mark.is_some() {
            after.push_str(&content(&event));
        }
        assert!(!event.contains("\"error\""), "{event}");
        if after.split_whitespace().count() >= 20 || event == "[DONE]" {
            break;
        }
    }
    let _ = stream.curl.kill();
    let mark = mark.expect("the hand-off is marked");
    assert_eq!(mark["switchyard"]["continued"]["from"], agents[lost].0);
    assert_eq!(mark["switchyard"]["continued"]["to"], agents[1 - lost].0);
    assert!(!after.trim().is_empty(), "the other runtime went on");
}

/// Two real llama.cpp servers (the same tiny model) behind agents: a stream at temperature 0
/// whose agent is killed after about 100 tokens continues on the other node from a prefilled
/// assistant turn. The client receives, byte for byte, what it had plus exactly what the
/// surviving llama.cpp answers to that prefilled turn; and where the model reproduces its own
/// tokens (a trained model nearly always does) that is the uninterrupted answer. The
/// random-weight test model often does not: it emits token sequences its own tokenizer would
/// split differently, so a prefill of the same text is not the same tokens (measured: the
/// continuation equals the uninterrupted text for 5-26 more bytes, then differs).
#[test]
fn a_real_llama_server_stream_whose_agent_is_killed_continues_on_the_other_node() {
    continues_after(Fault::AgentKilled);
}

/// The same when the runtime itself dies (its agent stays up and reports the broken answer).
#[test]
fn a_real_llama_server_stream_whose_runtime_is_killed_continues_on_the_other_node() {
    continues_after(Fault::RuntimeKilled);
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    AgentKilled,
    RuntimeKilled,
}

fn continues_after(fault: Fault) {
    let models = crate::runtimes::wide_model_dir();
    let servers = [
        crate::runtimes::Runtime::start_with("llama-server", models),
        crate::runtimes::Runtime::start_with("llama-server", models),
    ];
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "");
    let address = controller.agents.clone().expect("agents");
    let mut agents: Vec<(String, Agent)> = ["ryzen", "xeon"]
        .into_iter()
        .zip(&servers)
        .map(|(node, server)| {
            (
                node.to_owned(),
                llama_server_agent(&cluster, &address, node, &server.url),
            )
        })
        .collect();
    assert!(eventually(Duration::from_secs(30), || {
        agents
            .iter()
            .all(|(node, _)| controller.node_healthy(node) == Some(true))
    }));
    let bearer = format!("Authorization: Bearer {KEY}");
    // About a second of tokens on this machine (the nodes' limit is 2048): the cut lands
    // well inside it.
    const MAX_TOKENS: u64 = 2000;
    let mut body = chat(MAX_TOKENS as u32);
    body["temperature"] = json!(0);

    let mut stream = Stream::start(&controller, "/v1/chat/completions", &body, &["-H", &bearer]);
    let lost = usize::from(stream.header("x-switchyard-node") == "xeon");
    let survivor = &servers[1 - lost];
    let mut events: Vec<String> = Vec::new();
    while events.iter().filter(|e| !content(e).is_empty()).count() < 100 {
        let event = stream.next_event();
        events.push(event.unwrap_or_else(|| {
            panic!(
                "the stream ended before the cut: {}{events:#?}\n{}",
                stream.headers,
                controller.log_text()
            )
        }));
    }
    let killed = std::time::Instant::now();
    match fault {
        Fault::AgentKilled => agents[lost].1.kill_hard(),
        Fault::RuntimeKilled => {
            let status = Command::new("kill")
                .args(["-KILL", &servers[lost].pid.to_string()])
                .status()
                .expect("kill");
            assert!(status.success());
        }
    }
    // The gap the client sees: from the fault to the first token from the other node.
    let (rest, gap) = stream.rest_and_handoff_after(killed);
    events.extend(rest);
    let gap = gap.unwrap_or_else(|| panic!("{fault:?}: no hand-off: {events:#?}\n{}", controller.log_text()));
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:#?}");
    let marked = events
        .iter()
        .position(|e| e.contains("\"switchyard\""))
        .expect("the hand-off is marked");
    let handoff: Value =
        serde_json::from_str::<Value>(&events[marked]).expect("json")["switchyard"]["continued"].clone();
    let cut_at = handoff["after_tokens"].as_u64().expect("after_tokens");
    let before: String = events[..marked].iter().map(|e| content(e)).collect();
    let text: String = events.iter().map(|e| content(e)).collect();
    assert!((100..MAX_TOKENS).contains(&cut_at), "{handoff}");
    // Promptly, not after a time limit: the fault is seen when the link or the answer breaks.
    assert!(
        gap < Duration::from_secs(5),
        "{fault:?}: the next token came {gap:?} after the fault"
    );

    // What the surviving llama.cpp answers, asked directly, to the prefilled turn.
    let mut prefilled = body.clone();
    prefilled["stream"] = json!(false);
    prefilled["model"] = json!("tiny");
    prefilled["max_tokens"] = json!(MAX_TOKENS - cut_at);
    prefilled["messages"]
        .as_array_mut()
        .expect("messages")
        .push(json!({"role": "assistant", "content": before}));
    // From an empty cache, as the continuation was (the survivor had served nothing): a
    // random-weight model's near-tied logits flip when a cached prefix changes how the last
    // prompt token is evaluated.
    prefilled["cache_prompt"] = json!(false);
    let direct = post_whole(&format!("{}/v1/chat/completions", survivor.url), &[], &prefilled);
    // llama.cpp's server sends the prefilled text back before its new tokens: its content is
    // the whole answer, as the client's is.
    assert_eq!(text, direct, "continued after {cut_at} tokens");

    // The same request uninterrupted: the client's text agrees with it up to the cut.
    let mut whole_body = body.clone();
    whole_body["stream"] = json!(false);
    let whole = post_whole(
        &format!("{}/v1/chat/completions", controller.url),
        &["-H", &bearer],
        &whole_body,
    );
    assert_eq!(&whole[..before.len()], before, "what the client had before the cut");
    let agree = text.bytes().zip(whole.bytes()).take_while(|(a, b)| a == b).count();
    eprintln!(
        "{fault:?}: continued after {cut_at} tokens ({} bytes), next token {} ms after the fault; \
         equal to the uninterrupted answer for {agree} of {} bytes",
        before.len(),
        gap.as_millis(),
        whole.len()
    );
}

/// The content of a whole chat answer from `url`.
fn post_whole(url: &str, headers: &[&str], body: &Value) -> String {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "120"])
        .args(headers)
        .args(["-d", &body.to_string(), url])
        .output()
        .expect("curl");
    let value: Value = serde_json::from_slice(&output.stdout).expect("json");
    value["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("{value}"))
        .to_owned()
}

/// A node drained with a deadline: its streams still running when the deadline passes go on
/// on another node, and the client sees one stream.
#[test]
fn a_drain_with_a_deadline_moves_the_nodes_streams_to_another_node() {
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "");
    let _nodes = two_nodes(&cluster, &controller);
    let bearer = format!("Authorization: Bearer {KEY}");
    // 200 tokens at the xeon's 22 tokens/s: about 9 s, far past the 1 s deadline.
    let mut stream = Stream::start(&controller, "/v1/chat/completions", &chat(200), &["-H", &bearer]);
    let drained = stream.header("x-switchyard-node");
    stream.next_event().expect("the stream started");
    let said = controller.cli_ok(&["node", "drain", &drained, "--deadline-s", "1"]);
    assert!(said.contains("move to other nodes after 1 s"), "{said}");
    let events = stream.rest();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:#?}");
    let marks: Vec<Value> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| c.get("switchyard").cloned())
        .collect();
    assert_eq!(marks.len(), 1, "{events:#?}");
    assert_eq!(marks[0]["continued"]["from"], drained.as_str());
    let view = controller.admin("/admin/nodes");
    let nodes = view["snapshot"]["nodes"].as_array().expect("nodes");
    let left = nodes
        .iter()
        .find(|n| n["name"] == drained.as_str())
        .expect("the drained node");
    assert_eq!(left["in_flight"], 0, "{left}");
    // A bad deadline is refused, saying what to send.
    let (status, text) = crate::process::curl_with_key(
        &format!("{}/admin/nodes/{drained}/drain", controller.url),
        &cluster.token,
        &["-d", "{\"deadline\": 5}"],
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("deadline_s"), "{text}");
}

/// A policy may keep its streams from continuing (`continue_streams = false` in its
/// document): a lost node's stream then ends with the explicit error, as before.
#[test]
fn a_policy_that_says_continue_streams_false_keeps_its_streams_where_they_are() {
    let policies = crate::process::policies_copy();
    let seed = policies.path().join("seed-rules.toml");
    let text = std::fs::read_to_string(&seed).expect("seed-rules.toml");
    std::fs::write(&seed, format!("continue_streams = false\n{text}")).expect("seed-rules.toml");
    let cluster = Cluster::new(&[]);
    cluster.configure(&format!(
        "[policy]\ndir = {:?}\nactive = \"seed-rules\"\nwatch = false\n[[api_keys]]\nname = \"e2e\"\nkey = \"{KEY}\"\n",
        policies.path().display().to_string()
    ));
    let controller = cluster.controller("127.0.0.1:0");
    let mut nodes = two_nodes(&cluster, &controller);
    let bearer = format!("Authorization: Bearer {KEY}");
    let mut stream = Stream::start(&controller, "/v1/chat/completions", &chat(120), &["-H", &bearer]);
    let lost = usize::from(stream.header("x-switchyard-node") == "xeon");
    stream.next_event().expect("the stream started");
    nodes[lost].1.kill_hard();
    let rest = stream.rest();
    assert!(
        rest.last()
            .is_some_and(|e| e.contains("\"error\"") && e.contains("failed mid-response")),
        "{rest:#?}"
    );
    assert!(!rest.iter().any(|e| e.contains("\"switchyard\"")), "{rest:#?}");
}
