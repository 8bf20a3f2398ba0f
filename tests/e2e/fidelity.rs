//! The data plane is a relay: the same request sent to a real runtime directly and through
//! controller + agent gives the same answer (ids, timestamps and the model name aside). Real
//! llama.cpp (with a tool-calling chat format and embeddings), real `mlx_lm.server`, and the
//! Ollama double (backed by the same llama.cpp) for Ollama's native API; plus a recording
//! runtime that shows the bytes a runtime receives are the client's, `model` aside.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::Cluster;
use crate::process::{Controller, curl_with_key, eventually};
use crate::runtimes::{Process, Runtime, python, repo};

const KEY: &str = "e2e-prompt-key-0123456789";
const LOGICAL: &str = "qwen25-coder-7b";

fn head(kind: &str, url: &str) -> String {
    format!("max_concurrency = 4\ntelemetry_interval_ms = 250\n[runtime]\nkind = \"{kind}\"\nbase_url = \"{url}\"\n")
}

fn cluster_with_keys() -> Cluster {
    let cluster = Cluster::new(&[]);
    cluster.configure(&format!(
        "[policy]\ndir = {:?}\nactive = \"seed-rules\"\nwatch = false\n[[api_keys]]\nname = \"e2e\"\nkey = \"{KEY}\"\n",
        repo().join("policies").display().to_string()
    ));
    cluster
}

/// POST `body` (JSON text) to `url`; the status, the content type and the body.
fn post(url: &str, body: &str, extra: &[&str]) -> (u16, String, String) {
    let mut args = vec!["-H", "content-type: application/json", "--data-binary", body];
    args.extend_from_slice(extra);
    let (status, text) = curl_with_key(url, KEY, &args);
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let content_type = headers
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_owned))
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// The response headers of POSTing `body` to `url`, names lower-cased.
fn headers_of(url: &str, body: &str, extra: &[&str]) -> BTreeMap<String, String> {
    let mut args = vec!["-H", "content-type: application/json", "--data-binary", body];
    args.extend_from_slice(extra);
    let (_, text) = curl_with_key(url, KEY, &args);
    let head = text.split_once("\r\n\r\n").map_or(text.as_str(), |(h, _)| h);
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .filter(|(n, _)| !n.starts_with("x-switchyard-"))
        .collect()
}

/// Drop what legitimately differs between two calls: ids (and every echo of them), creation
/// times, model names, fingerprints, prompt-cache hits and Ollama's wall-clock timings.
fn normalize(mut value: Value) -> Value {
    let id = value["id"].as_str().unwrap_or_default().to_owned();
    if let Value::Object(map) = &mut value {
        for key in ["id", "created", "model", "system_fingerprint", "created_at"] {
            map.remove(key);
        }
        map.retain(|key, _| !key.ends_with("_duration"));
        // The second of two identical calls finds its prompt in mlx_lm's cache.
        if let Some(Value::Object(usage)) = map.get_mut("usage") {
            usage.remove("prompt_tokens_details");
        }
    }
    round_floats(&mut value);
    let mut text = value.to_string();
    if let Some(unique) = id.split_once('-').map(|(_, rest)| rest).filter(|u| u.len() >= 8) {
        text = text.replace(unique, "<id>");
    }
    serde_json::from_str(&text).unwrap_or(value)
}

/// llama.cpp's log-probabilities differ in the 7th digit between two identical calls (its
/// prompt cache changes the evaluation order): compare them to 4 decimals.
fn round_floats(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            let rounded = (n.as_f64().unwrap_or_default() * 1e4).round() / 1e4;
            if let Some(r) = serde_json::Number::from_f64(rounded) {
                *n = r;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(round_floats),
        Value::Object(map) => map.values_mut().for_each(round_floats),
        _ => {}
    }
}

/// A body as comparable values: one per SSE event or NDJSON line, or the one document.
fn comparable(content_type: &str, body: &str) -> Vec<Value> {
    let parse = |s: &str| {
        serde_json::from_str::<Value>(s)
            .map(normalize)
            .unwrap_or_else(|_| Value::String(s.to_owned()))
    };
    if content_type.starts_with("text/event-stream") {
        body.split("\n\n")
            .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data:")))
            .map(|data| parse(data.trim()))
            .collect()
    } else if content_type.starts_with("application/x-ndjson") {
        body.lines().filter(|l| !l.trim().is_empty()).map(parse).collect()
    } else {
        vec![parse(body)]
    }
}

/// Send `body` (with `{model}` in place of the model name) to the runtime directly and
/// through the controller; assert both answers are the same.
fn same_answer(
    controller: &Controller,
    runtime_url: &str,
    local: &str,
    path: &str,
    task: &str,
    case: &str,
    body: &str,
) -> Vec<Value> {
    let direct = post(&format!("{runtime_url}{path}"), &body.replace("{model}", local), &[]);
    let hint = format!("x-switchyard-task: {task}");
    let through = post(
        &format!("{}{path}", controller.url),
        &body.replace("{model}", LOGICAL),
        &["-H", &hint],
    );
    assert_eq!(
        through.0, direct.0,
        "{case}: status\ndirect: {}\nthrough: {}",
        direct.2, through.2
    );
    let media = |t: &str| t.split(';').next().unwrap_or_default().trim().to_owned();
    assert_eq!(media(&through.1), media(&direct.1), "{case}: content type");
    // Every end-to-end header the runtime sent reaches the client with its value (except
    // each hop's framing headers; per-call values must be there).
    let (direct_headers, through_headers) = (
        headers_of(&format!("{runtime_url}{path}"), &body.replace("{model}", local), &[]),
        headers_of(
            &format!("{}{path}", controller.url),
            &body.replace("{model}", LOGICAL),
            &["-H", &hint],
        ),
    );
    for (name, value) in &direct_headers {
        if ["content-length", "transfer-encoding", "connection", "keep-alive"].contains(&name.as_str()) {
            continue;
        }
        // Per-call values (each call gets its own): they must be there, not the same.
        if ["date", "x-request-id", "openai-processing-ms"].contains(&name.as_str()) {
            assert!(
                through_headers.contains_key(name),
                "{case}: header {name} did not reach the client"
            );
            continue;
        }
        assert_eq!(
            through_headers.get(name),
            Some(value),
            "{case}: header {name} from the runtime\ndirect: {direct_headers:?}\nthrough: {through_headers:?}"
        );
    }
    let (direct_values, through_values) = (comparable(&direct.1, &direct.2), comparable(&through.1, &through.2));
    assert_eq!(
        through_values, direct_values,
        "{case}\ndirect: {}\nthrough: {}",
        direct.2, through.2
    );
    direct_values
}

const WEATHER_TOOL: &str = r#"[{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]"#;

#[test]
fn openai_and_ollama_answers_through_switchyard_are_the_runtimes_own() {
    let llama = Runtime::start("llama-cpp-tools");
    let mlx = Runtime::start("mlx");
    let ollama = crate::runtimes::ollama_double(&llama, &[]);
    let cluster = cluster_with_keys();
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    // The seed policy: batch -> xeon (llama.cpp), development -> m4 (MLX), production ->
    // ryzen (here an Ollama node).
    let _xeon = cluster.agent("xeon", &address, &head("llama-cpp", &llama.url), "tiny");
    let _m4 = cluster.agent("m4", &address, &head("mlx", &mlx.url), &mlx.model());
    let _ryzen = cluster.agent("ryzen", &address, &head("ollama", &ollama.url), "tiny");
    assert!(eventually(Duration::from_secs(60), || ["xeon", "m4", "ryzen"]
        .iter()
        .all(|n| controller.node_healthy(n) == Some(true))));

    let tool_choice = r#"{"type": "function", "function": {"name": "get_weather"}}"#;
    let llama_cases: Vec<(&str, &str, String)> = vec![
        ("forced tool call", "/v1/chat/completions", format!(r#"{{"model": "{{model}}", "temperature": 0, "max_tokens": 24, "messages": [{{"role": "user", "content": "Weather in Paris?"}}], "tools": {WEATHER_TOOL}, "tool_choice": {tool_choice}}}"#)),
        ("forced tool call, streamed", "/v1/chat/completions", format!(r#"{{"model": "{{model}}", "stream": true, "temperature": 0, "max_tokens": 24, "messages": [{{"role": "user", "content": "Weather in Paris?"}}], "tools": {WEATHER_TOOL}, "tool_choice": {tool_choice}}}"#)),
        ("tool result turn", "/v1/chat/completions", format!(r#"{{"model": "{{model}}", "temperature": 0, "max_tokens": 8, "tools": {WEATHER_TOOL}, "messages": [{{"role": "user", "content": "Weather in Paris?"}}, {{"role": "assistant", "content": "", "tool_calls": [{{"id": "call_1", "type": "function", "function": {{"name": "get_weather", "arguments": "{{\"city\": \"Paris\"}}"}}}}]}}, {{"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}}]}}"#)),
        ("chat logprobs", "/v1/chat/completions", r#"{"model": "{model}", "temperature": 0, "max_tokens": 4, "logprobs": true, "top_logprobs": 2, "messages": [{"role": "user", "content": "hi"}]}"#.to_owned()),
        ("completions logprobs", "/v1/completions", r#"{"model": "{model}", "temperature": 0, "max_tokens": 4, "logprobs": 2, "prompt": "Once upon"}"#.to_owned()),
        ("json mode", "/v1/chat/completions", r#"{"model": "{model}", "temperature": 0, "max_tokens": 12, "response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "json please"}]}"#.to_owned()),
        ("json schema (llama.cpp's own error)", "/v1/chat/completions", r#"{"model": "{model}", "temperature": 0, "max_tokens": 12, "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}}, "messages": [{"role": "user", "content": "json"}]}"#.to_owned()),
        ("json schema, llama.cpp's extension", "/v1/chat/completions", r#"{"model": "{model}", "temperature": 0, "max_tokens": 12, "response_format": {"type": "json_object", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}, "messages": [{"role": "user", "content": "json"}]}"#.to_owned()),
        ("top_k, min_p and repeat_penalty", "/v1/chat/completions", r#"{"model": "{model}", "temperature": 1.5, "top_k": 1, "min_p": 0.05, "repeat_penalty": 1.3, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}"#.to_owned()),
        // llama-cpp-python's chat handler for tool calling ignores `seed` (two direct calls
        // differ), its completions honour it.
        ("seeded sampling", "/v1/completions", r#"{"model": "{model}", "temperature": 0.9, "seed": 42, "max_tokens": 8, "prompt": "hi"}"#.to_owned()),
        ("content parts", "/v1/chat/completions", r#"{"model": "{model}", "temperature": 0, "max_tokens": 6, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": " there"}]}]}"#.to_owned()),
        ("stream with include_usage", "/v1/chat/completions", r#"{"model": "{model}", "stream": true, "stream_options": {"include_usage": true}, "temperature": 0, "max_tokens": 6, "messages": [{"role": "user", "content": "hi"}]}"#.to_owned()),
        ("stream without include_usage", "/v1/chat/completions", r#"{"model": "{model}", "stream": true, "temperature": 0, "max_tokens": 6, "messages": [{"role": "user", "content": "hi"}]}"#.to_owned()),
        ("embeddings", "/v1/embeddings", r#"{"model": "{model}", "input": ["hello", "world"]}"#.to_owned()),
    ];
    for (case, path, body) in &llama_cases {
        let values = same_answer(&controller, &llama.url, "tiny", path, "batch", case, body);
        let answer = &values[0];
        match *case {
            "forced tool call" => {
                assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls", "{answer}");
                assert_eq!(
                    answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
                    "get_weather"
                );
                assert!(
                    answer["usage"]["prompt_tokens"].as_u64().is_some_and(|n| n > 0),
                    "{answer}"
                );
            }
            "chat logprobs" => assert!(
                answer["choices"][0]["logprobs"]["content"][0]["top_logprobs"][1].is_object(),
                "{answer}"
            ),
            "completions logprobs" => assert!(
                answer["choices"][0]["logprobs"]["top_logprobs"][0].is_object(),
                "{answer}"
            ),
            "json mode" => assert!(
                answer["choices"][0]["message"]["content"]
                    .as_str()
                    .is_some_and(|c| c.starts_with('{')),
                "{answer}"
            ),
            "json schema (llama.cpp's own error)" => assert!(answer["error"].is_object(), "{answer}"),
            "embeddings" => assert_eq!(answer["data"].as_array().map(Vec::len), Some(2), "{answer}"),
            "forced tool call, streamed" => {
                assert!(values.iter().any(|v| v["choices"][0]["delta"]["tool_calls"].is_array()))
            }
            _ => assert!(answer.get("error").is_none(), "{case}: {answer}"),
        }
    }

    // mlx_lm.server, the M4's runtime.
    let mlx_model = mlx.model();
    for (case, body) in [
        (
            "mlx whole",
            r#"{"model": "{model}", "temperature": 0, "max_tokens": 6, "messages": [{"role": "user", "content": "hi"}]}"#,
        ),
        (
            "mlx stream with usage",
            r#"{"model": "{model}", "stream": true, "stream_options": {"include_usage": true}, "temperature": 0, "max_tokens": 6, "messages": [{"role": "user", "content": "hi"}]}"#,
        ),
        (
            "mlx top_k and min_p",
            r#"{"model": "{model}", "temperature": 1.0, "top_k": 1, "min_p": 0.1, "max_tokens": 6, "messages": [{"role": "user", "content": "hi"}]}"#,
        ),
        (
            "mlx logprobs",
            r#"{"model": "{model}", "temperature": 0, "max_tokens": 3, "logprobs": true, "top_logprobs": 2, "messages": [{"role": "user", "content": "hi"}]}"#,
        ),
    ] {
        let values = same_answer(
            &controller,
            &mlx.url,
            &mlx_model,
            "/v1/chat/completions",
            "development",
            case,
            body,
        );
        assert!(values.iter().all(|v| v.get("error").is_none()), "{case}: {values:?}");
    }

    // Ollama's native API on an Ollama node: unchanged both ways.
    for (case, path, body) in [
        (
            "ollama chat",
            "/api/chat",
            r#"{"model": "{model}", "stream": false, "options": {"temperature": 0, "num_predict": 6}, "messages": [{"role": "user", "content": "hi"}]}"#,
        ),
        (
            "ollama chat streamed",
            "/api/chat",
            r#"{"model": "{model}", "options": {"temperature": 0, "num_predict": 6}, "messages": [{"role": "user", "content": "hi"}]}"#,
        ),
        (
            "ollama generate",
            "/api/generate",
            r#"{"model": "{model}", "stream": false, "prompt": "hi", "options": {"temperature": 0, "num_predict": 6}}"#,
        ),
        ("ollama embed", "/api/embed", r#"{"model": "{model}", "input": ["hi"]}"#),
        (
            "openai on an ollama node",
            "/v1/chat/completions",
            r#"{"model": "{model}", "temperature": 0, "max_tokens": 6, "messages": [{"role": "user", "content": "hi"}]}"#,
        ),
    ] {
        let values = same_answer(&controller, &ollama.url, "tiny", path, "production", case, body);
        assert!(values.iter().all(|v| v.get("error").is_none()), "{case}: {values:?}");
    }

    // An Ollama client in front of llama.cpp: translated, and the answer is llama.cpp's.
    let (status, _, body) = post(
        &format!("{}/api/chat", controller.url),
        &format!(
            r#"{{"model": "{LOGICAL}", "stream": false, "options": {{"temperature": 0, "num_predict": 24}}, "messages": [{{"role": "user", "content": "Weather in Paris?"}}], "tools": {WEATHER_TOOL}}}"#
        ),
        &["-H", "x-switchyard-task: batch"],
    );
    assert_eq!(status, 200, "{body}");
    let translated: Value = serde_json::from_str(&body).expect("ollama json");
    let (_, _, direct) = post(
        &format!("{}/v1/chat/completions", llama.url),
        &format!(
            r#"{{"model": "tiny", "temperature": 0, "max_tokens": 24, "messages": [{{"role": "user", "content": "Weather in Paris?"}}], "tools": {WEATHER_TOOL}}}"#
        ),
        &[],
    );
    let direct: Value = serde_json::from_str(&direct).expect("openai json");
    let direct_message = &direct["choices"][0]["message"];
    match direct_message["tool_calls"][0]["function"]["name"].as_str() {
        Some(name) => assert_eq!(
            translated["message"]["tool_calls"][0]["function"]["name"], name,
            "{body}"
        ),
        None => assert_eq!(translated["message"]["content"], direct_message["content"], "{body}"),
    }
    assert_eq!(translated["done"], true);
    assert_eq!(translated["eval_count"], direct["usage"]["completion_tokens"], "{body}");
}

/// The recording runtime: started with `args`, recording into `record`.
fn recording(record: &std::path::Path, args: &[&str]) -> Process {
    let mut command = Command::new(python());
    command
        .arg(repo().join("tests/runtimes/recording_runtime.py"))
        .args(["--model", "rec", "--record"])
        .arg(record)
        .args(args);
    Process::spawn(command, Duration::from_secs(20))
}

/// Send each `(path, body)` (with `MODEL` for the model) through the controller with `task`;
/// the runtime must have received exactly those bytes, with `local` for the model.
fn received_as_sent(
    controller: &Controller,
    task: &str,
    bodies: &[(&str, &str)],
    record: &std::path::Path,
    local: &str,
) -> Vec<Value> {
    let hint = format!("x-switchyard-task: {task}");
    for (path, body) in bodies {
        let (status, _, text) = post(
            &format!("{}{path}", controller.url),
            &body.replace("MODEL", LOGICAL),
            &["-H", &hint],
        );
        assert_eq!(status, 200, "{path}: {text}");
    }
    let seen = recorded(record);
    assert_eq!(seen.len(), bodies.len(), "{seen:?}");
    for ((path, body), seen) in bodies.iter().zip(&seen) {
        assert_eq!(seen["path"], *path);
        assert_eq!(seen["body"], body.replace("MODEL", local), "{path}");
    }
    seen
}

fn recorded(record: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("record line"))
        .collect()
}

#[test]
fn a_runtime_receives_the_clients_bytes_with_only_the_model_rewritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rec_openai, rec_ollama) = (dir.path().join("openai.jsonl"), dir.path().join("ollama.jsonl"));
    let runtime = recording(&rec_openai, &[]);
    let llama = Runtime::start("llama-cpp");
    let mut double = Command::new(python());
    double
        .arg(repo().join("tests/runtimes/ollama_double.py"))
        .args(["--backend", &llama.url, "--model", "tiny=tiny", "--quiet", "--record"])
        .arg(&rec_ollama);
    let double = Process::spawn(double, Duration::from_secs(30));
    let cluster = cluster_with_keys();
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    let _xeon = cluster.agent("xeon", &address, &head("openai", &runtime.url), "rec");
    let _ryzen = cluster.agent("ryzen", &address, &head("ollama", &double.url), "tiny");
    assert!(eventually(Duration::from_secs(30), || controller.node_healthy("xeon")
        == Some(true)
        && controller.node_healthy("ryzen") == Some(true)));

    // Odd spacing, key order, unknown fields, numbers as written, unicode escapes, a
    // multimodal part, a vendor extension: all must arrive as sent.
    let openai_bodies = [
        (
            "/v1/chat/completions",
            "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"caf\\u00e9 \\\"q\\\"\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0KGgo=\"}}]}],\n  \"model\" :  \"MODEL\", \"top_k\":40,\"min_p\":5e-2, \"guided_json\":{\"type\":\"object\"},\"x_vendor\":[1,2.50,null]}",
        ),
        (
            "/v1/chat/completions",
            "{\"model\":\"MODEL\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"logprobs\":true,\"top_logprobs\":3}",
        ),
        (
            "/v1/completions",
            "{\"prompt\":\"x\",\"model\":\"MODEL\",\"suffix\":\"y\",\"echo\":false}",
        ),
        (
            "/v1/rerank",
            "{\"model\":\"MODEL\",\"query\":\"q\",\"documents\":[\"a\",\"b\"]}",
        ),
    ];
    received_as_sent(&controller, "batch", &openai_bodies, &rec_openai, "rec");

    // Ollama's native API to an Ollama node: the body unchanged but for the model.
    let ollama_bodies = [
        (
            "/api/chat",
            "{\"model\":\"MODEL\",\"stream\":false,\"messages\":[{\"role\":\"user\",\"content\":\"hi\",\"images\":[\"iVBORw0KGgo=\"]}],\"format\":{\"type\":\"object\"},\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],\"options\":{\"num_predict\":3,\"top_k\":1,\"mirostat\":2},\"keep_alive\":\"10m\",\"think\":false}",
        ),
        (
            "/api/generate",
            "{\"model\":\"MODEL\", \"prompt\":\"hi\", \"stream\":false, \"raw\":true, \"options\":{\"num_predict\":2}}",
        ),
    ];
    let seen = received_as_sent(&controller, "production", &ollama_bodies, &rec_ollama, "tiny");
    let by_path: BTreeMap<String, usize> = seen.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(s["path"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
        m
    });
    assert_eq!(by_path.len(), 2);
    // Every relayed answer counted as complete, none as a client that went away.
    let (_, metrics) = curl_with_key(&format!("{}/metrics", controller.url), KEY, &[]);
    assert!(
        metrics.contains("switchyard_requests_total{node=\"xeon\",model=\"qwen25-coder-7b\",status=\"200\"} 4"),
        "{metrics}"
    );
    assert!(!metrics.contains("status=\"499\""), "{metrics}");
}

fn stats(url: &str) -> u64 {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(format!("{url}/_stats"))
        .output()
        .expect("curl");
    serde_json::from_slice::<Value>(&output.stdout).unwrap_or_default()["requests"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn a_slow_whole_answer_runs_once_and_a_refusing_node_hands_over_before_any_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A runtime that takes 4 s to answer, beyond the controller's 1 s first-byte limit.
    let slow = recording(&dir.path().join("slow.jsonl"), &["--delay", "4"]);
    // A runtime that refuses everything with 503 (full), and a healthy one behind it.
    let full = recording(&dir.path().join("full.jsonl"), &["--status", "503"]);
    let spare = recording(&dir.path().join("spare.jsonl"), &[]);
    let cluster = cluster_with_keys();
    cluster.configure("[limits]\nfirst_byte_timeout_ms = 1000\n");
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    let _slow_xeon = cluster.agent("xeon", &address, &head("openai", &slow.url), "rec");
    assert!(eventually(Duration::from_secs(30), || controller.node_healthy("xeon")
        == Some(true)));

    let body = format!("{{\"model\": \"{LOGICAL}\", \"messages\": [{{\"role\": \"user\", \"content\": \"long\"}}]}}");
    let (status, _, text) = post(
        &format!("{}/v1/chat/completions", controller.url),
        &body,
        &["-H", "x-switchyard-task: batch"],
    );
    assert_eq!(status, 200, "{text}\n{}", controller.log_text());
    assert!(text.contains("recorded"), "{text}");
    assert_eq!(stats(&slow.url), 1, "the slow request ran exactly once");

    // Production goes to the ryzen first, then (the seed's fallback queue) the xeon. A ryzen
    // whose runtime refuses with 503 before doing anything hands the request to the xeon,
    // once.
    let cluster = cluster_with_keys();
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    let _ryzen = cluster.agent("ryzen", &address, &head("openai", &full.url), "rec");
    let _xeon = cluster.agent("xeon", &address, &head("openai", &spare.url), "rec");
    assert!(eventually(Duration::from_secs(30), || controller.node_healthy("ryzen")
        == Some(true)
        && controller.node_healthy("xeon") == Some(true)));
    let (status, _, text) = post(
        &format!("{}/v1/chat/completions", controller.url),
        &body,
        &["-H", "x-switchyard-task: production"],
    );
    assert_eq!(status, 200, "{text}\n{}", controller.log_text());
    assert_eq!((stats(&full.url), stats(&spare.url)), (1, 1));
    assert!(
        controller.log_text().contains("before starting"),
        "{}",
        controller.log_text()
    );
}

#[test]
fn a_stream_the_node_ends_without_done_and_a_whole_ollama_answer_it_cuts_are_failures_not_clean_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let no_done = recording(&dir.path().join("a.jsonl"), &["--end", "no-done"]);
    let cut = recording(&dir.path().join("b.jsonl"), &["--end", "cut"]);
    let cluster = cluster_with_keys();
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    // seed-rules sends batch work to the xeon and development work to the m4.
    let _xeon = cluster.agent("xeon", &address, &head("openai", &no_done.url), "rec");
    let _m4 = cluster.agent("m4", &address, &head("openai", &cut.url), "rec");
    assert!(eventually(Duration::from_secs(30), || controller.node_healthy("xeon")
        == Some(true)
        && controller.node_healthy("m4") == Some(true)));

    // An OpenAI stream whose node ends it cleanly but without `data: [DONE]`: the client sees
    // an explicit error event last, not a clean end.
    let (status, _, body) = post(
        &format!("{}/v1/chat/completions", controller.url),
        &format!(r#"{{"model": "{LOGICAL}", "stream": true, "messages": [{{"role": "user", "content": "hi"}}]}}"#),
        &["-H", "x-switchyard-task: batch"],
    );
    assert_eq!(status, 200, "{body}");
    let last = body.trim_end().lines().last().unwrap_or_default();
    // (The agent's tap breaks such a stream: the controller relays the break as an error event.)
    assert!(last.starts_with("data: {\"error\"") && last.contains("xeon"), "{body}");

    // A whole Ollama answer, translated from a stream the node cuts: 502 in Ollama's shape.
    let (status, _, body) = post(
        &format!("{}/api/chat", controller.url),
        &format!(r#"{{"model": "{LOGICAL}", "stream": false, "messages": [{{"role": "user", "content": "hi"}}]}}"#),
        &["-H", "x-switchyard-task: development"],
    );
    assert_eq!(status, 502, "{body}");
    let value: Value = serde_json::from_str(&body).expect("json");
    assert!(value["error"].as_str().is_some_and(|m| m.contains("m4")), "{body}");
}

/// Requests each recording runtime received.
fn received(record: &std::path::Path) -> usize {
    recorded(record).len()
}

/// Two agents, each in front of a recording runtime that answers after `delay` seconds,
/// under `least-loaded` (which lists both nodes as targets), with a 1 s first-byte limit.
fn two_eligible_nodes(
    dir: &std::path::Path,
    delay: &str,
) -> (Cluster, Controller, [Process; 2], [crate::process::Agent; 2]) {
    let runtimes = [
        recording(&dir.join("a.jsonl"), &["--delay", delay]),
        recording(&dir.join("b.jsonl"), &["--delay", delay]),
    ];
    let cluster = Cluster::new(&[]);
    cluster.configure(&format!(
        "[policy]\ndir = {:?}\nactive = \"least-loaded\"\nwatch = false\n[[api_keys]]\nname = \"e2e\"\nkey = \"{KEY}\"\n\
         [limits]\nfirst_byte_timeout_ms = 1000\n",
        repo().join("policies").display().to_string()
    ));
    let controller = cluster.controller("127.0.0.1:0");
    let address = controller.agents.clone().expect("agents");
    let agents = [
        cluster.agent("xeon", &address, &head("openai", &runtimes[0].url), "rec"),
        cluster.agent("ryzen", &address, &head("openai", &runtimes[1].url), "rec"),
    ];
    assert!(eventually(Duration::from_secs(30), || controller.node_healthy("xeon")
        == Some(true)
        && controller.node_healthy("ryzen") == Some(true)));
    (cluster, controller, runtimes, agents)
}

#[test]
fn a_node_that_does_not_answer_in_time_is_a_504_and_the_second_eligible_node_never_gets_the_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cluster, controller, _runtimes, _agents) = two_eligible_nodes(dir.path(), "4");
    // A stream must start within the first-byte limit (1 s); the runtime takes 4 s.
    let (status, _, body) = post(
        &format!("{}/v1/chat/completions", controller.url),
        &format!(
            r#"{{"model": "{LOGICAL}", "max_tokens": 4, "stream": true, "messages": [{{"role": "user", "content": "hi"}}]}}"#
        ),
        &[],
    );
    assert_eq!(status, 504, "{body}");
    // A retry would have happened before the answer: the other runtime must not have seen it.
    let seen = [
        received(&dir.path().join("a.jsonl")),
        received(&dir.path().join("b.jsonl")),
    ];
    assert_eq!(seen.iter().sum::<usize>(), 1, "runtimes' requests {seen:?}: {body}");
}

#[test]
fn a_whole_answer_whose_link_breaks_before_it_began_goes_on_to_the_second_eligible_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_cluster, controller, _runtimes, mut agents) = two_eligible_nodes(dir.path(), "3");
    let url = format!("{}/v1/chat/completions", controller.url);
    let body =
        format!(r#"{{"model": "{LOGICAL}", "max_tokens": 4, "messages": [{{"role": "user", "content": "hi"}}]}}"#);
    let client = std::thread::spawn(move || {
        let args = [
            "-H",
            "content-type: application/json",
            "-H",
            "x-switchyard-task: batch",
            "--data-binary",
            &body,
        ];
        curl_with_key(&url, KEY, &args)
    });
    let records = [dir.path().join("a.jsonl"), dir.path().join("b.jsonl")];
    // Wait for a runtime to receive it (it answers 3 s later), then kill that node's agent:
    // the node is lost before any byte of its answer, so the request goes on to the other.
    assert!(eventually(Duration::from_secs(10), || records
        .iter()
        .any(|r| received(r) == 1)));
    let holder = usize::from(received(&records[0]) == 0);
    agents[holder].kill_hard();
    let (status, answer) = client.join().expect("client");
    assert_eq!(status, 200, "{answer}");
    let lost = ["xeon", "ryzen"][holder];
    let answer = answer.to_ascii_lowercase();
    assert!(
        answer.contains(&format!("x-switchyard-continued-from: {lost}")),
        "{answer}"
    );
    assert!(
        answer.contains(&format!("x-switchyard-node: {}", ["xeon", "ryzen"][1 - holder])),
        "{answer}"
    );
    assert_eq!(received(&records[1 - holder]), 1, "{answer}");
}
