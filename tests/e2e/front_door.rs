//! The front door end to end: real clients (the official `openai` and `ollama` Python
//! packages) through a real controller and real agents to real inference (llama.cpp with the
//! tiny model; Ollama's API through the agent's ollama driver and the Ollama double in front
//! of llama.cpp), plus the failure paths: bad input, retries, a node dying mid-stream,
//! cancellation reaching the runtime, a full queue and an expired queue deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::Cluster;
use crate::process::{Agent, Controller, eventually};
use crate::runtimes::{Runtime, ollama_double, python, repo};

const KEY: &str = "e2e-prompt-key-0123456789";
const JOIN_WITHIN: Duration = Duration::from_secs(30);

fn with_keys_and_policy(cluster: &Cluster, extra: &str) {
    let policies = repo().join("policies");
    cluster.configure(&format!(
        "[policy]\ndir = {:?}\nactive = \"seed-rules\"\nwatch = false\n\
         [[api_keys]]\nname = \"e2e\"\nkey = \"{KEY}\"\n{extra}",
        policies.display().to_string()
    ));
}

fn link_head(kind: &str, url: &str, interval_ms: u64) -> String {
    format!(
        "max_concurrency = 2\ntelemetry_interval_ms = {interval_ms}\n[runtime]\nkind = \"{kind}\"\nbase_url = \"{url}\"\n"
    )
}

/// Run the Python client `script` of `tests/e2e/clients` against `controller` (with the
/// e2e key and `qwen25-coder-7b`, then `tasks`); the one JSON document it prints.
pub(crate) fn run_client(script: &str, controller: &Controller, tasks: &[&str]) -> Value {
    let output = Command::new(python())
        .arg(repo().join("tests/e2e/clients").join(script))
        .args([&controller.url, KEY, "qwen25-coder-7b"])
        .args(tasks)
        .output()
        .expect("run the Python client");
    assert!(
        output.status.success(),
        "{script} failed:\n{}\ncontroller log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        controller.log_text()
    );
    serde_json::from_slice(&output.stdout).expect("one JSON document")
}

fn printable(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c == '\n' || (' '..='~').contains(&c))
}

/// `curl` with the prompt key; returns (status, headers and body).
fn curl(controller: &Controller, path: &str, args: &[&str]) -> (u16, String) {
    crate::process::curl_with_key(&format!("{}{path}", controller.url), KEY, args)
}

#[test]
fn real_openai_and_ollama_clients_get_real_inference_through_the_controller() {
    let llama = Runtime::start("llama-cpp-tools");
    let double = ollama_double(&llama, &[]);
    let cluster = Cluster::new(&[]);
    with_keys_and_policy(&cluster, "");
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    // The seed policy sends production work to the ryzen (here: llama.cpp through the openai
    // driver) and batch work to the xeon (here: Ollama's API through the ollama driver).
    let _ryzen = cluster.agent("ryzen", &address, &link_head("llama-cpp", &llama.url, 500), "tiny");
    let _xeon = cluster.agent("xeon", &address, &link_head("ollama", &double.url, 500), "tiny");
    assert!(eventually(JOIN_WITHIN, || controller.node_healthy("ryzen")
        == Some(true)
        && controller.node_healthy("xeon") == Some(true)));

    let openai = run_client("openai_client.py", &controller, &["production"]);
    assert_eq!(openai["models"], serde_json::json!(["qwen25-coder-7b"]));
    assert_eq!(openai["headers"]["x-switchyard-node"], "ryzen");
    assert!(
        openai["headers"]["x-switchyard-policy"]
            .as_str()
            .unwrap_or_default()
            .starts_with("seed-rules@"),
        "{openai}"
    );
    assert!(
        openai["headers"]["x-switchyard-reason"]
            .as_str()
            .unwrap_or_default()
            .contains("production"),
        "{openai}"
    );
    assert!(
        printable(openai["chat"]["content"].as_str().unwrap_or_default()),
        "{openai}"
    );
    assert_eq!(openai["chat"]["finish"], "length");
    assert_eq!(openai["chat"]["completion_tokens"], 8);
    assert!(openai["stream"]["chunks"].as_u64().is_some_and(|n| n > 3), "{openai}");
    assert_eq!(openai["stream"]["finish"], "length");
    assert_eq!(openai["completion"]["finish"], "length");
    assert_eq!(openai["unknown_model"]["status"], 404, "{openai}");
    assert!(
        openai["unknown_model"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no-such-model")
    );
    assert_eq!(openai["bad_key"]["status"], 401);
    assert_eq!(openai["tool_call"]["finish"], "tool_calls", "{openai}");
    assert_eq!(
        openai["tool_call"]["names"],
        serde_json::json!(["get_weather"]),
        "{openai}"
    );
    assert!(
        openai["json_mode"]["content"]
            .as_str()
            .is_some_and(|c| c.starts_with('{')),
        "{openai}"
    );

    // Batch work goes to the Ollama node (native API); production work to llama.cpp, where
    // the controller translates Ollama's API.
    let ollama = run_client("ollama_client.py", &controller, &["batch", "production"]);
    assert_eq!(ollama["chat"]["done"], true);
    assert_eq!(ollama["chat"]["done_reason"], "length");
    assert_eq!(ollama["chat"]["eval_count"], 8);
    assert!(
        printable(ollama["chat"]["content"].as_str().unwrap_or_default()),
        "{ollama}"
    );
    assert!(
        ollama["chat_stream"]["parts"].as_u64().is_some_and(|n| n > 3),
        "{ollama}"
    );
    assert_eq!(ollama["chat_stream"]["last_done"], true);
    assert_eq!(ollama["generate"]["done"], true);
    assert_eq!(ollama["generate"]["eval_count"], 6);
    assert_eq!(ollama["tags"], serde_json::json!(["qwen25-coder-7b"]));
    assert_eq!(ollama["embed"], 2);
    assert_eq!(ollama["unknown_model"]["status"], 404, "{ollama}");
    assert_eq!(ollama["images_tools_format"]["done"], true, "{ollama}");
    let schema: Value = serde_json::from_str(ollama["schema"]["content"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("format=schema must give JSON: {e}: {ollama}"));
    assert!(schema["a"].is_i64(), "{ollama}");
    assert_eq!(ollama["tools"]["done"], true, "{ollama}");
    // The translated answer is llama.cpp's own for the same request: its tool calls when it
    // calls one, else its text (the tiny model decides; temperature 0 makes it repeatable).
    let (_, direct) = crate::process::curl_with_key(
        &format!("{}/v1/chat/completions", llama.url),
        KEY,
        &[
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"model": "tiny", "temperature": 0, "max_tokens": 24, "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]}"#,
        ],
    );
    let direct: Value =
        serde_json::from_str(direct.split_once("\r\n\r\n").map_or("", |(_, b)| b)).expect("llama.cpp's answer");
    let message = &direct["choices"][0]["message"];
    let direct_calls: Vec<&str> = message["tool_calls"]
        .as_array()
        .map(|calls| calls.iter().filter_map(|c| c["function"]["name"].as_str()).collect())
        .unwrap_or_default();
    let translated_calls: Vec<&str> = ollama["tools"]["calls"]
        .as_array()
        .map(|calls| calls.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(translated_calls, direct_calls, "tool calls: {ollama}\ndirect: {direct}");
    if direct_calls.is_empty() {
        assert_eq!(
            ollama["tools"]["content"], message["content"],
            "{ollama}\ndirect: {direct}"
        );
    }

    // Where each went, by the metrics.
    let (_, metrics) = curl(&controller, "/metrics", &[]);
    assert!(
        metrics.contains("switchyard_requests_total{node=\"ryzen\",model=\"qwen25-coder-7b\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_requests_total{node=\"xeon\",model=\"qwen25-coder-7b\",status=\"200\"}"),
        "{metrics}"
    );
    drop(double);
}

#[test]
fn bad_requests_get_clear_errors_in_openai_shape() {
    let cluster = Cluster::new(&[]);
    with_keys_and_policy(&cluster, "[limits]\nmax_body_bytes = 4096\n");
    let controller = cluster.controller("127.0.0.1:0");

    let output = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "-d", "{}"])
        .arg(format!("{}/v1/chat/completions", controller.url))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(text.contains("missing API key"), "{text}");

    let (status, text) = curl(
        &controller,
        "/v1/chat/completions",
        &["-d", "{\"model\": \"qwen25-coder-7b\", "],
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("malformed JSON"), "{text}");

    let big = format!(
        "{{\"model\": \"qwen25-coder-7b\", \"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}",
        "x".repeat(8000)
    );
    let (status, text) = curl(&controller, "/v1/chat/completions", &["-d", &big]);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("4096-byte limit"), "{text}");

    let (status, text) = curl(
        &controller,
        "/v1/chat/completions",
        &["-d", "{\"model\": \"gpt-5\", \"messages\": []}"],
    );
    // No node has joined this controller: not "no such model" (a client would give up on a
    // model that exists once the agents link, as after a restart), but a 503 to retry. (With
    // nodes, a model none serves is a 404: `hostile_clients`, `routing`.)
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("no node has joined this controller yet"), "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after: "), "{text}");

    let (status, text) = curl(
        &controller,
        "/v1/chat/completions",
        &["-H", "x-switchyard-priority: urgent", "-d", "{\"model\": \"m\"}"],
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("x-switchyard-priority"), "{text}");
}

#[test]
fn a_target_that_fails_before_the_first_byte_is_retried_on_the_next() {
    let llama = Runtime::start("llama-cpp");
    let dead = Runtime::start("llama-cpp");
    let cluster = Cluster::new(&[]);
    with_keys_and_policy(&cluster, "");
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    // Production goes to the ryzen first; its runtime is stopped after it reported healthy
    // (telemetry every 60 s, so the node table still says healthy): the xeon must answer.
    let _ryzen = cluster.agent("ryzen", &address, &link_head("llama-cpp", &dead.url, 60_000), "tiny");
    let _xeon = cluster.agent("xeon", &address, &link_head("llama-cpp", &llama.url, 60_000), "tiny");
    assert!(eventually(JOIN_WITHIN, || controller.node_healthy("ryzen")
        == Some(true)
        && controller.node_healthy("xeon") == Some(true)));
    dead.stop();

    let (status, text) = curl(
        &controller,
        "/v1/chat/completions",
        &[
            "-H",
            "x-switchyard-task: production",
            "-d",
            "{\"model\": \"qwen25-coder-7b\", \"max_tokens\": 4, \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}",
        ],
    );
    assert_eq!(status, 200, "{text}\n{}", controller.log_text());
    assert!(text.to_ascii_lowercase().contains("x-switchyard-node: xeon"), "{text}");
    assert!(
        controller.log_text().contains("trying the next target"),
        "{}",
        controller.log_text()
    );
    let (_, metrics) = curl(&controller, "/metrics", &[]);
    assert!(metrics.contains("switchyard_retries_total 1"), "{metrics}");
}

#[test]
fn a_node_that_dies_mid_stream_ends_the_stream_with_an_explicit_error_event() {
    let cluster = Cluster::new(&[]);
    with_keys_and_policy(&cluster, "");
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    let config = cluster.agent_config("xeon.toml", "xeon", &cluster.issue("xeon", &[]), &address);
    let mut agent = Agent::start(&config, None);
    assert!(eventually(JOIN_WITHIN, || controller.node_healthy("xeon") == Some(true)));

    // The simulated xeon streams 22 tokens/s: 200 tokens take about 9 s.
    let url = format!("{}/v1/chat/completions", controller.url);
    let (mut child, mut reader) = crate::first_hour::stream_started(&url, &[], 200);
    agent.kill_hard();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).expect("rest");
    let _ = child.wait();
    assert!(
        rest.contains("\"error\"") && rest.contains("failed mid-response"),
        "expected an error event, got:\n{rest}"
    );
    assert!(!rest.contains("[DONE]"), "{rest}");
}

#[test]
fn a_client_that_disconnects_cancels_the_generation_at_the_runtime() {
    let llama = Runtime::start("llama-cpp");
    let double = ollama_double(&llama, &[]);
    let cluster = Cluster::new(&[]);
    with_keys_and_policy(&cluster, "");
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    let _xeon = cluster.agent("xeon", &address, &link_head("ollama", &double.url, 500), "tiny");
    assert!(eventually(JOIN_WITHIN, || controller.node_healthy("xeon") == Some(true)));
    let stats = || -> Value {
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .arg(format!("{}/_double/stats", double.url))
            .output()
            .expect("curl");
        serde_json::from_slice(&output.stdout).unwrap_or_default()
    };
    assert_eq!(stats()["cancelled"], 0);

    let address = controller.url.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&address).expect("connect");
    let body = "{\"model\": \"qwen25-coder-7b\", \"stream\": true, \"options\": {\"num_predict\": 230}, \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}";
    write!(
        stream,
        "POST /api/chat HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {KEY}\r\nx-switchyard-task: batch\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    while !serde_json::from_str::<Value>(&line).is_ok_and(|v| v["done"] == false) {
        line.clear();
        reader.read_line(&mut line).expect("read");
        assert!(!line.is_empty(), "stream ended before the first token");
    }
    stream.shutdown(std::net::Shutdown::Both).expect("disconnect");
    drop(reader);
    assert!(
        eventually(Duration::from_secs(15), || stats()["cancelled"]
            .as_u64()
            .is_some_and(|n| n >= 1)),
        "the runtime never saw the cancellation: {}\ncontroller log:\n{}",
        stats(),
        controller.log_text()
    );
    assert!(eventually(Duration::from_secs(5), || curl(
        &controller,
        "/metrics",
        &[]
    )
    .1
    .contains("switchyard_cancelled_total 1")));
}

#[test]
fn a_full_queue_is_a_429_and_an_expired_queue_deadline_a_503_both_with_retry_after() {
    let cluster = Cluster::new(&[]);
    with_keys_and_policy(&cluster, "[limits]\nqueue_capacity = 1\nqueue_timeout_ms = 1500\n");
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    let _agent = cluster.agent(
        "xeon",
        &address,
        "max_concurrency = 1\ntelemetry_interval_ms = 250\n[runtime]\nkind = \"simulated\"\nprofile = \"xeon\"\n",
        "qwen2.5-coder:7b",
    );
    assert!(eventually(JOIN_WITHIN, || controller.node_healthy("xeon") == Some(true)));
    let long = "{\"model\": \"qwen25-coder-7b\", \"max_tokens\": 200, \"stream\": true, \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}";
    let spawn = |body: &str| {
        Command::new("curl")
            .args([
                "-sS",
                "-i",
                "-N",
                "--max-time",
                "30",
                "-H",
                &format!("Authorization: Bearer {KEY}"),
                "-d",
                body,
            ])
            .arg(format!("{}/v1/chat/completions", controller.url))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("curl")
    };
    // The only slot: held by a 9-second stream.
    let mut holder = spawn(long);
    let mut first = String::new();
    BufReader::new(holder.stdout.as_mut().expect("stdout"))
        .read_line(&mut first)
        .expect("read");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // The one queue place: taken by a request that will wait out its deadline.
    let waiter = spawn(long);
    assert!(eventually(Duration::from_secs(5), || curl(
        &controller,
        "/metrics",
        &[]
    )
    .1
    .contains("switchyard_queue_depth 1")));
    // No place left: 429 at once.
    let (status, text) = curl(&controller, "/v1/chat/completions", &["-d", long]);
    assert_eq!(status, 429, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 2") && text.contains("queue is full"),
        "{text}"
    );
    // The waiter's deadline passes: 503.
    let output = waiter.wait_with_output().expect("waiter");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 5") && text.contains("stayed busy"),
        "{text}"
    );
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn idle_connections_are_bounded_and_timed_out_and_an_oversized_body_is_refused_before_it_is_read() {
    let cluster = Cluster::new(&[]);
    with_keys_and_policy(
        &cluster,
        "[limits]\nmax_connections = 8\nheader_read_timeout_ms = 1000\nmax_body_bytes = 4096\n",
    );
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.url.trim_start_matches("http://").to_owned();
    // Twenty connections that never send a byte (and two that stall after two): eight are
    // taken, the rest wait in the backlog; each taken one is closed after the header
    // timeout, so all drain.
    let mut idle: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(&address).expect("connect"))
        .collect();
    // Two that stall inside what could be HTTP/2's preface.
    for _ in 0..2 {
        let mut stalled = std::net::TcpStream::connect(&address).expect("connect");
        stalled.write_all(b"PR").expect("send");
        idle.push(stalled);
    }
    // The agents' listener is a different door: a node still links while the front door is
    // full.
    let agents = controller.agents.clone().expect("agents");
    let config = cluster.agent_config("xeon.toml", "xeon", &cluster.issue("xeon", &[]), &agents);
    let agent = Agent::start(&config, None);
    assert!(
        eventually(JOIN_WITHIN, || agent.log_text().contains("linked to the controller")),
        "{}",
        agent.log_text()
    );
    for mut socket in idle {
        socket.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
        let mut buffer = [0u8; 64];
        // Closed: an end of stream or a reset, not the read timeout.
        let read = socket.read(&mut buffer);
        let closed = match &read {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        };
        assert!(
            closed,
            "an idle connection must be closed by the header timeout: {read:?}"
        );
    }
    assert!(eventually(JOIN_WITHIN, || controller.node_healthy("xeon") == Some(true)));
    // A declared 10 GiB body is refused at once, without waiting for it.
    let mut stream = std::net::TcpStream::connect(&address).expect("connect");
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 10737418240\r\n\r\n{{"
    )
    .expect("send");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut head = String::new();
    BufReader::new(stream)
        .read_line(&mut head)
        .expect("an answer before the body");
    assert!(head.contains(" 413 "), "{head}");
}

#[test]
fn at_shutdown_a_short_answer_in_flight_finishes_whole_and_a_long_stream_runs_for_the_grace_before_its_error_event() {
    let cluster = Cluster::new(&[]);
    with_keys_and_policy(&cluster, "");
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    // The simulated xeon, four times slower than its seed speed (about 5 tokens/s): 200
    // tokens outlast the 10 s grace; 15 tokens (about 3 s) do not.
    let _agent = cluster.agent(
        "xeon",
        &address,
        "max_concurrency = 2\ntelemetry_interval_ms = 250\n[runtime]\nkind = \"simulated\"\nprofile = \"xeon\"\ntime_scale = 4.0\n",
        "qwen2.5-coder:7b",
    );
    assert!(eventually(JOIN_WITHIN, || controller.node_healthy("xeon") == Some(true)));
    let curl = |max_tokens: u32, stream: bool| {
        Command::new("curl")
            .args(["-sS", "-N", "--max-time", "40", "-H", &format!("Authorization: Bearer {KEY}")])
            .args(["-H", "x-switchyard-task: batch", "-d"])
            .arg(format!("{{\"model\": \"qwen25-coder-7b\", \"stream\": {stream}, \"max_tokens\": {max_tokens}, \"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}]}}"))
            .arg(format!("{}/v1/chat/completions", controller.url))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("curl")
    };
    let mut long = curl(200, true);
    let mut reader = BufReader::new(long.stdout.take().expect("stdout"));
    let mut first = String::new();
    reader.read_line(&mut first).expect("the stream starts");
    assert!(first.starts_with("data: "), "{first}");
    let short = curl(15, false);
    assert!(
        eventually(JOIN_WITHIN, || controller.log_text().matches("routed").count() >= 2),
        "{}",
        controller.log_text()
    );
    // SIGTERM with both in flight; read the long stream as it goes, timing each line.
    let signalled = std::time::Instant::now();
    let pid = controller.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let mut after_signal = Vec::new();
    let mut line = String::new();
    while reader.read_line(&mut line).expect("read") > 0 {
        if !line.trim().is_empty() {
            after_signal.push((signalled.elapsed(), line.trim().to_owned()));
        }
        line.clear();
    }
    // The short one finished whole: a 200 with its answer, not an error.
    let output = short.wait_with_output().expect("short");
    let whole: Value = serde_json::from_slice(&output.stdout).expect("a whole JSON answer");
    assert!(
        whole["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{whole}"
    );
    assert_eq!(whole["choices"][0]["finish_reason"], "length", "{whole}");
    // The long one kept streaming through the grace, then ended with an explicit error.
    let (ended_at, last) = after_signal.last().cloned().expect("lines after the signal");
    assert!(
        last.contains("shutting down"),
        "an explicit error event ends it: {last}"
    );
    let tokens_after = after_signal.iter().filter(|(_, l)| l.contains("\"delta\"")).count();
    assert!(
        tokens_after >= 10,
        "only {tokens_after} events after the signal: not drained"
    );
    assert!(
        ended_at >= Duration::from_secs(7),
        "the stream was cut {ended_at:?} after the signal, before the 10 s grace"
    );
    assert!(!after_signal.iter().any(|(_, l)| l.contains("[DONE]")));
    let _ = long.wait();
    assert!(controller.stop().success());
}

/// CPU seconds the process `pid` has used (user and system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the runtime's stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / 100.0
}

#[test]
fn a_client_that_leaves_an_openai_stream_stops_the_real_runtime_generating() {
    let llama = Runtime::start("llama-cpp");
    let cluster = Cluster::new(&[]);
    with_keys_and_policy(&cluster, "");
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    // The tiny model's whole context (2048), so that a long answer is allowed.
    let bundle = cluster.issue("xeon", &[]);
    let config = cluster.agent_config_with(
        "xeon.toml",
        "xeon",
        &bundle,
        &address,
        &link_head("llama-cpp", &llama.url, 500),
        "tiny",
    );
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, text.replace("context_length = 256", "context_length = 2048")).expect("config");
    let _xeon = Agent::start(&config, None);
    assert!(eventually(JOIN_WITHIN, || controller.node_healthy("xeon") == Some(true)));

    // 2000 tokens: several CPU seconds of llama.cpp's work here (it runs to the length limit).
    let front = controller.url.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&front).expect("connect");
    let body = "{\"model\": \"qwen25-coder-7b\", \"stream\": true, \"max_tokens\": 2000, \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}";
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {front}\r\nAuthorization: Bearer {KEY}\r\nx-switchyard-task: batch\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    let mut seen = String::new();
    while !line.starts_with("data: {") {
        line.clear();
        reader.read_line(&mut line).expect("read");
        seen.push_str(&line);
        assert!(!line.is_empty(), "the stream ended before its first token: {seen}");
    }
    let generating = cpu_seconds(llama.pid);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        cpu_seconds(llama.pid) > generating,
        "the runtime is generating while the client reads"
    );
    // The client leaves: the runtime stops, rather than spending seconds on tokens nobody reads.
    stream.shutdown(std::net::Shutdown::Both).expect("disconnect");
    drop(reader);
    std::thread::sleep(Duration::from_millis(500));
    let left = cpu_seconds(llama.pid);
    std::thread::sleep(Duration::from_millis(2500));
    let spent = cpu_seconds(llama.pid) - left;
    assert!(
        spent < 0.5,
        "the runtime spent {spent:.2} CPU seconds in the 2.5 s after its client left"
    );
}

#[test]
fn a_key_at_its_max_concurrent_gets_a_429_and_another_key_is_not_held_back() {
    const LOOP_KEY: &str = "e2e-batch-loop-key-0123456789";
    let cluster = Cluster::new(&[]);
    with_keys_and_policy(
        &cluster,
        &format!("[[api_keys]]\nname = \"batch-loop\"\nkey = \"{LOOP_KEY}\"\nmax_concurrent = 1\n"),
    );
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    let _agent = cluster.agent(
        "xeon",
        &address,
        "max_concurrency = 2\ntelemetry_interval_ms = 250\n[runtime]\nkind = \"simulated\"\nprofile = \"xeon\"\n",
        "qwen2.5-coder:7b",
    );
    assert!(eventually(JOIN_WITHIN, || controller.node_healthy("xeon") == Some(true)));
    let long = "{\"model\": \"qwen25-coder-7b\", \"max_tokens\": 200, \"stream\": true, \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}";
    let short = "{\"model\": \"qwen25-coder-7b\", \"max_tokens\": 2, \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}";
    let url = format!("{}/v1/chat/completions", controller.url);
    // The loop's key holds its one place with a long stream.
    let mut holder = Command::new("curl")
        .args(["-sS", "-i", "-N", "--max-time", "30", "-H"])
        .arg(format!("Authorization: Bearer {LOOP_KEY}"))
        .args(["-d", long])
        .arg(&url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl");
    let mut first = String::new();
    BufReader::new(holder.stdout.as_mut().expect("stdout"))
        .read_line(&mut first)
        .expect("read");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    // Its next request is refused at once, in OpenAI's shape, with when to retry...
    let (status, text) = crate::process::curl_with_key(&url, LOOP_KEY, &["-d", short]);
    assert_eq!(status, 429, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 1")
            && text.contains("\"type\": \"rate_limit_error\"")
            && text.contains("API key 'batch-loop' has 1 request(s) in flight already, its max_concurrent"),
        "{text}"
    );
    // ...while another key's request is served beside it.
    let (status, text) = curl(&controller, "/v1/chat/completions", &["-d", short]);
    assert_eq!(status, 200, "{text}");
    let metrics = curl(&controller, "/metrics", &[]).1;
    for line in [
        "switchyard_key_max_concurrent{key=\"batch-loop\"} 1",
        "switchyard_key_in_flight{key=\"batch-loop\"} 1",
        "switchyard_key_refused_total{key=\"batch-loop\"} 1",
    ] {
        assert!(metrics.contains(line), "no {line} in:\n{metrics}");
    }

    // When the stream ends (here: its client goes away), the place comes back.
    holder.kill().expect("stop the holder");
    let _ = holder.wait();
    assert!(
        eventually(Duration::from_secs(10), || crate::process::curl_with_key(
            &url,
            LOOP_KEY,
            &["-d", short]
        )
        .0 == 200),
        "the key's place never came back"
    );
}

#[test]
fn one_keys_queued_loop_does_not_hold_back_another_keys_request() {
    const LOOP_KEY: &str = "e2e-batch-loop-key-0123456789";
    let cluster = Cluster::new(&[]);
    with_keys_and_policy(
        &cluster,
        &format!("[[api_keys]]\nname = \"batch-loop\"\nkey = \"{LOOP_KEY}\"\n"),
    );
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    // One slot, each answer ~0.15 s: the loop's eight requests queue behind each other.
    let _agent = cluster.agent(
        "xeon",
        &address,
        "max_concurrency = 1\ntelemetry_interval_ms = 250\n[runtime]\nkind = \"simulated\"\nprofile = \"xeon\"\ntime_scale = 0.25\n",
        "qwen2.5-coder:7b",
    );
    assert!(eventually(JOIN_WITHIN, || controller.node_healthy("xeon") == Some(true)));
    let url = format!("{}/v1/chat/completions", controller.url);
    let body = "{\"model\": \"qwen25-coder-7b\", \"max_tokens\": 8, \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}";
    let finished = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let send = |key: &'static str, who: &'static str| {
        let (url, finished) = (url.clone(), finished.clone());
        std::thread::spawn(move || {
            let (status, text) = crate::process::curl_with_key(&url, key, &["-d", body]);
            assert_eq!(status, 200, "{who}: {text}");
            finished.lock().expect("lock").push(who);
        })
    };
    let looped: Vec<_> = (0..8).map(|_| send(LOOP_KEY, "loop")).collect();
    let queued = |depth: usize| {
        let metrics = curl(&controller, "/metrics", &[]).1;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("switchyard_queue_depth "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .is_some_and(|d| d >= depth)
    };
    assert!(
        eventually(Duration::from_secs(10), || queued(5)),
        "the loop never queued"
    );
    // Another key's request arrives behind five or more of the loop's: it is served next
    // (first come, first served would put it behind all of them).
    let other = send(KEY, "other");
    other.join().expect("the other key's request");
    for request in looped {
        request.join().expect("the loop's request");
    }
    let order = finished.lock().expect("lock").clone();
    let after = order.iter().skip_while(|w| **w != "other").skip(1).count();
    assert!(
        after >= 4,
        "only {after} of the loop's requests finished after the other key's: {order:?}"
    );
}

#[test]
fn a_keys_token_budget_refuses_with_429_and_counts_what_answers_used() {
    const BUDGET_KEY: &str = "e2e-budget-key-0123456789";
    let cluster = Cluster::new(&[]);
    with_keys_and_policy(
        &cluster,
        &format!("[[api_keys]]\nname = \"budgeted\"\nkey = \"{BUDGET_KEY}\"\ntokens_per_minute = 600\n"),
    );
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    let _agent = cluster.agent(
        "xeon",
        &address,
        "max_concurrency = 2\ntelemetry_interval_ms = 250\n[runtime]\nkind = \"simulated\"\nprofile = \"xeon\"\ntime_scale = 0.01\n",
        "qwen2.5-coder:7b",
    );
    assert!(eventually(JOIN_WITHIN, || controller.node_healthy("xeon") == Some(true)));
    let url = format!("{}/v1/chat/completions", controller.url);
    let ask = |max_tokens: u32| {
        let body = format!(
            "{{\"model\": \"qwen25-coder-7b\", \"max_tokens\": {max_tokens}, \"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}]}}"
        );
        crate::process::curl_with_key(&url, BUDGET_KEY, &["-d", &body])
    };
    // Asking for more than the whole budget can never fit: said so, with a minute to wait.
    let (status, text) = ask(1000);
    assert_eq!(status, 429, "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(
        lower.contains("retry-after: 60") && text.contains("it can never fit"),
        "{text}"
    );
    // Two answers of 250 tokens fit in 600; the third would not: 429 with when to retry.
    for i in 0..2 {
        let (status, text) = ask(250);
        assert_eq!(status, 200, "answer {i}: {text}");
    }
    let (status, text) = ask(250);
    assert_eq!(status, 429, "{text}");
    assert!(
        text.contains("API key 'budgeted' may use 600 tokens a minute")
            && text.contains("\"type\": \"rate_limit_error\""),
        "{text}"
    );
    let retry: u64 = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after: ")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    // The refusals are counted, the minute's tokens are what the two answers' usage said,
    // and another key is unaffected.
    let metrics = curl(&controller, "/metrics", &[]).1;
    assert!(
        metrics.contains("switchyard_key_tokens_per_minute{key=\"budgeted\"} 600"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_key_over_budget_total{key=\"budgeted\"} 2"),
        "{metrics}"
    );
    let used = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_key_tokens_last_minute{key=\"budgeted\"} "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("tokens of the last minute");
    assert!(
        (500..=600).contains(&used),
        "the two answers used {used} tokens by their usage"
    );
    let (status, text) = curl(
        &controller,
        "/v1/chat/completions",
        &[
            "-d",
            r#"{"model": "qwen25-coder-7b", "max_tokens": 250, "messages": [{"role": "user", "content": "hi"}]}"#,
        ],
    );
    assert_eq!(status, 200, "another key: {text}");
}
