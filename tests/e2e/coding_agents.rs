//! Coding agents as they connect today: Claude Code's key header and session header, Codex's
//! turn metadata, through a real controller and simulated nodes. The session reaches the
//! policy (a session stays on one node under `session-affinity`) and the decision record
//! (with where it came from).

use crate::cluster::Cluster;
use crate::first_hour::{KEY, controller, simulated};
use crate::process::served_by;

/// Simulated xeon and ryzen nodes serving `qwen25-coder-7b`, both healthy.
fn xeon_and_ryzen(cluster: &Cluster, controller: &crate::process::Controller) -> [crate::process::Agent; 2] {
    let nodes = [
        simulated(cluster, controller, "xeon", "xeon", &["qwen25-coder-7b"]),
        simulated(cluster, controller, "ryzen", "ryzen", &["qwen25-coder-7b"]),
    ];
    assert!(crate::process::eventually(std::time::Duration::from_secs(30), || {
        controller.node_healthy("xeon") == Some(true) && controller.node_healthy("ryzen") == Some(true)
    }));
    nodes
}

/// POST a chat for `qwen25-coder-7b` with `headers` (no `Authorization`); status and text.
fn chat_with(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut command = std::process::Command::new("curl");
    command.args(["-sS", "-i", "--max-time", "30"]);
    for (name, value) in headers {
        command.args(["-H", &format!("{name}: {value}")]);
    }
    let output = command
        .args([
            "-d",
            r#"{"model": "qwen25-coder-7b", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}"#,
        ])
        .arg(format!("{url}/v1/chat/completions"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[test]
fn claude_codes_key_and_session_headers_are_understood_and_each_session_stays_on_one_node() {
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "");
    let _nodes = xeon_and_ryzen(&cluster, &controller);
    controller.cli_ok(&["policy", "activate", "session-affinity"]);

    // Claude Code sends its key as `x-api-key` and its session in its own header. Ten
    // sessions of three turns: each session's turns stay on one node, and the sessions spread
    // over both (with the session unseen, every request took the candidates' first node).
    let mut used = std::collections::BTreeSet::new();
    for session in 0..10 {
        let id = format!("cc-session-{session}");
        let claude = [("x-api-key", KEY), ("x-claude-code-session-id", id.as_str())];
        let nodes: Vec<String> = (0..3)
            .map(|turn| {
                let (status, text) = chat_with(&controller.url, &claude);
                assert_eq!(status, 200, "{id} turn {turn}: {text}");
                served_by(&text)
            })
            .collect();
        assert!(nodes.iter().all(|n| *n == nodes[0]), "{id}'s turns moved: {nodes:?}");
        used.insert(nodes[0].clone());
    }
    assert_eq!(used.len(), 2, "the sessions all went to {used:?}");
    // A wrong key in the same header is refused.
    let (status, _) = chat_with(&controller.url, &[("x-api-key", "not-a-key")]);
    assert_eq!(status, 401);

    // Codex's turn metadata: its session and the parent thread of a sub-agent.
    let codex = [
        ("x-api-key", KEY),
        (
            "x-codex-turn-metadata",
            r#"{"session_id": "cx-77", "thread_id": "t-2", "parent_thread_id": "t-1", "turn_id": "u-1"}"#,
        ),
    ];
    assert_eq!(chat_with(&controller.url, &codex).0, 200);

    // The record keeps each session and where it came from.
    let view = controller.admin("/admin/decisions?limit=100");
    let records = view["records"].as_array().expect("records");
    let tag = |record: &serde_json::Value, name: &str| {
        record["request"]["tags"]
            .as_array()
            .and_then(|tags| tags.iter().find(|t| t[0] == name))
            .map(|t| t[1].as_str().unwrap_or_default().to_owned())
    };
    let claude_turns: Vec<_> = records
        .iter()
        .filter(|r| r["request"]["session"] == "cc-session-0")
        .collect();
    assert_eq!(claude_turns.len(), 3, "{view:#}");
    assert!(
        claude_turns
            .iter()
            .all(|r| tag(r, "session-source").as_deref() == Some("claude-code"))
    );
    let codex_turn = records
        .iter()
        .find(|r| r["request"]["session"] == "cx-77")
        .expect("the codex turn");
    assert_eq!(tag(codex_turn, "session-source").as_deref(), Some("codex"));
    assert_eq!(tag(codex_turn, "session-parent").as_deref(), Some("t-1"));
}

/// POST `body` to `url` with `headers`; status and the JSON body.
fn post_json(url: &str, headers: &[(&str, &str)], body: &str) -> (u16, serde_json::Value) {
    let mut command = std::process::Command::new("curl");
    command.args([
        "-sS",
        "--max-time",
        "60",
        "-w",
        "\n%{http_code}",
        "-H",
        "content-type: application/json",
    ]);
    for (name, value) in headers {
        command.args(["-H", &format!("{name}: {value}")]);
    }
    let output = command.args(["-d", body, url]).output().expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (json, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        status.trim().parse().unwrap_or(0),
        serde_json::from_str(json).unwrap_or_default(),
    )
}

#[test]
fn the_anthropic_messages_api_reaches_a_real_llama_server_and_switchyards_own_errors_take_its_shape() {
    let server = crate::runtimes::Runtime::start("llama-server");
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "");
    let address = controller.agents.clone().expect("agents");
    let head = format!(
        "max_concurrency = 1\ntelemetry_interval_ms = 250\n[runtime]\nkind = \"openai\"\nbase_url = \"{}\"\n",
        server.url
    );
    let _xeon = cluster.agent("xeon", &address, &head, "tiny");
    assert!(crate::process::eventually(std::time::Duration::from_secs(30), || {
        controller.node_healthy("xeon") == Some(true)
    }));
    let messages = |model: &str| {
        format!(
            r#"{{"model": "{model}", "max_tokens": 8, "temperature": 0, "messages": [{{"role": "user", "content": "hi"}}]}}"#
        )
    };
    let claude = [
        ("x-api-key", KEY),
        ("anthropic-version", "2023-06-01"),
        ("x-claude-code-session-id", "cc-real"),
        ("x-switchyard-task", "batch"),
    ];
    // The same request direct and through Switchyard: llama-server's own Anthropic answer.
    let (status, direct) = post_json(&format!("{}/v1/messages", server.url), &claude, &messages("tiny"));
    assert_eq!(status, 200, "{direct}");
    let (status, through) = post_json(
        &format!("{}/v1/messages", controller.url),
        &claude,
        &messages("qwen25-coder-7b"),
    );
    assert_eq!(status, 200, "{through}");
    assert_eq!(through["type"], "message", "{through}");
    assert_eq!(
        through["content"], direct["content"],
        "direct: {direct}\nthrough: {through}"
    );
    assert_eq!(through["stop_reason"], direct["stop_reason"]);
    assert_eq!(through["usage"]["output_tokens"], direct["usage"]["output_tokens"]);
    let (status, counted) = post_json(
        &format!("{}/v1/messages/count_tokens", controller.url),
        &claude,
        r#"{"model": "qwen25-coder-7b", "messages": [{"role": "user", "content": "hi"}]}"#,
    );
    assert_eq!(status, 200, "{counted}");
    assert!(counted["input_tokens"].as_u64().is_some_and(|n| n > 0), "{counted}");

    // Switchyard's own errors on this API, in Anthropic's shape.
    let (status, missing) = post_json(
        &format!("{}/v1/messages", controller.url),
        &[],
        &messages("qwen25-coder-7b"),
    );
    assert_eq!(status, 401);
    assert_eq!(missing["type"], "error", "{missing}");
    assert_eq!(missing["error"]["type"], "authentication_error", "{missing}");
    let (status, unknown) = post_json(
        &format!("{}/v1/messages", controller.url),
        &claude,
        &messages("no-such-model"),
    );
    assert_eq!(status, 404);
    assert_eq!(unknown["error"]["type"], "not_found_error", "{unknown}");

    // The record saw the API and the session.
    let view = controller.admin("/admin/decisions?limit=10");
    let record = view["records"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["outcome"]["status"] == 200))
        .cloned()
        .expect("a served record");
    assert_eq!(record["request"]["api"], "anthropic-messages", "{record}");
    assert_eq!(record["request"]["session"], "cc-real", "{record}");

    // The official SDK, relayed to llama-server's own Messages API: whole, streamed,
    // counted. (Its tool calls are llama-server's: with the tiny model and no tool-call
    // grammar it answers text, so tools are checked through translation, below.)
    let report = anthropic_sdk(&controller, &[]);
    assert_sdk_answers(&report, "xeon");

    // The openai SDK's Responses API (Codex CLI's), relayed to llama-server's own: whole, and
    // streamed to its `response.completed` (no `[DONE]` in such a stream: the agent must know
    // that event as its end, or the client gets an error after it).
    let report = sdk_client("openai_responses.py", &controller, &[]);
    let create = &report["create"];
    assert_eq!(create["node"], "xeon", "{report:#}");
    assert_eq!(create["status"], "completed", "{report:#}");
    assert!(!create["text"].as_str().unwrap_or_default().is_empty(), "{report:#}");
    let stream = &report["stream"];
    assert_eq!(stream["first"], "response.created", "{report:#}");
    assert_eq!(stream["last"], "response.completed", "{report:#}");
    assert!(stream["deltas"].as_u64().is_some_and(|n| n > 0), "{report:#}");
    assert_eq!(stream["text"], stream["final_text"], "{report:#}");
}

#[test]
fn a_coding_agents_turns_stay_on_the_node_that_holds_its_prefix_under_finish_time() {
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "");
    // Real time: the prefill the nodes measure is the seed's (xeon 2000, ryzen 4000 tok/s).
    let _xeon = crate::first_hour::simulated(&cluster, &controller, "xeon", "xeon", &["qwen25-coder-7b"]);
    let _ryzen = crate::first_hour::simulated(&cluster, &controller, "ryzen", "ryzen", &["qwen25-coder-7b"]);
    assert!(crate::process::eventually(std::time::Duration::from_secs(30), || {
        controller.node_healthy("xeon") == Some(true) && controller.node_healthy("ryzen") == Some(true)
    }));
    // A Claude-Code-like prompt: a 20 KB system prompt and tool list, then the history.
    let system = "You are a coding agent working in a Rust repository. Read before you edit. ".repeat(270);
    let url = format!("{}/v1/chat/completions", controller.url);
    let body_of = |system: &str, history: &[String], stream: bool| {
        let mut messages = vec![serde_json::json!({"role": "system", "content": system})];
        for (i, text) in history.iter().enumerate() {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            messages.push(serde_json::json!({"role": role, "content": text}));
        }
        serde_json::json!({"model": "qwen25-coder-7b", "max_tokens": 4, "stream": stream, "messages": messages})
    };
    // Streamed, as the agents send them: the node measures its prefill on the first token.
    let streamed = |task: &str, system: &str, history: &[String]| {
        let body = body_of(system, history, true);
        let output = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "60", "-H", &format!("x-api-key: {KEY}")])
            .args([
                "-H",
                &format!("x-switchyard-task: {task}"),
                "-H",
                "x-claude-code-session-id: cc-warm",
            ])
            .args(["-d", &body.to_string(), &url])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(text.contains("data: [DONE]"), "{text}");
        text
    };
    let turn = |task: &str, system: &str, history: &[String]| {
        let body = body_of(system, history, false);
        let headers = [
            ("x-api-key", KEY),
            ("x-claude-code-session-id", "cc-warm"),
            ("x-switchyard-task", task),
        ];
        let (status, answer) = post_json(&url, &headers, &body.to_string());
        assert_eq!(status, 200, "{answer}");
        answer
    };
    // The session's first turn goes to the xeon (the seed's rules send batch work there),
    // and another long prompt to the ryzen (production): both nodes have measured their
    // prefill, the ryzen twice as fast.
    let mut history = vec!["Find where the config is parsed.".to_owned()];
    let first = streamed("batch", &system, &history);
    assert!(first.contains(r#""cached_tokens":0"#), "{first}");
    let other = "An unrelated service prompt of the same length, for production. ".repeat(310);
    streamed("production", &other, &["Summarise the incident.".to_owned()]);
    assert!(crate::process::eventually(std::time::Duration::from_secs(10), || {
        let nodes = controller.admin("/admin/nodes");
        nodes.to_string().matches("prefill_tokens_per_sec").count() >= 2
    }));

    // Under finish-time, development work: blind to caches, the ryzen (twice the prefill
    // speed) would win, but the xeon holds the prompt's 5k-token prefix and a cold ryzen must
    // prefill it. Every later turn stays on the xeon, and the xeon's own cache says so (its
    // cached tokens grow with the history).
    controller.cli_ok(&["policy", "activate", "finish-time"]);
    let mut cached = Vec::new();
    for step in 0..4 {
        history.push(format!("Step {step}: I read the file; here is what it does."));
        history.push(format!("Now change part {step} and run the tests."));
        let answer = turn("development", &system, &history);
        cached.push(
            answer["usage"]["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap_or(0),
        );
    }
    assert!(
        cached.iter().all(|c| *c >= 5000),
        "each turn found the prefix in the xeon's cache: {cached:?}"
    );
    assert!(
        cached.windows(2).all(|w| w[1] > w[0]),
        "and the growing history too: {cached:?}"
    );
    // `switchyard nodes` shows the xeon's prefix-cache hit rate, as its runtime reported it:
    // four warm turns of ~5.1k tokens after one cold one.
    assert!(crate::process::eventually(std::time::Duration::from_secs(10), || {
        let nodes = controller.admin("/admin/nodes");
        nodes["links"]
            .as_array()
            .and_then(|links| links.iter().find(|l| l["node"] == "xeon"))
            .and_then(|xeon| xeon["prefix_cache_hit_pct"].as_f64())
            .is_some_and(|pct| pct > 70.0)
    }));
    let table = controller.cli_ok(&["nodes"]);
    assert!(table.contains("cache hit"), "{table}");

    // The record shows the estimate per node and where each turn went.
    let view = controller.admin("/admin/decisions?limit=20");
    let records = view["records"].as_array().expect("records");
    let developed: Vec<_> = records
        .iter()
        .filter(|r| r["request"]["task"] == "development")
        .collect();
    assert_eq!(developed.len(), 4, "{view:#}");
    for record in developed {
        assert_eq!(record["outcome"]["node"], "xeon", "{record:#}");
        let estimate = &record["request"]["cached"];
        assert_eq!(estimate[0]["node"], "xeon", "{record:#}");
        let estimated = estimate[0]["tokens"].as_u64().unwrap_or(0);
        assert!(estimated >= 5000, "{record:#}");
        // Beside it, the runtime's own count: how close the estimate was.
        let reported = record["outcome"]["cached_tokens"]
            .as_u64()
            .expect("the runtime's count");
        assert!(
            estimated.abs_diff(reported) * 10 <= reported,
            "{estimated} against {reported}"
        );
        assert!(
            record["decided"]["decision"]["route"]["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("xeon"),
            "{record:#}"
        );
    }
}

/// Run the official Anthropic SDK against `controller` (`extra`: `tools`); its JSON report.
fn anthropic_sdk(controller: &crate::process::Controller, extra: &[&str]) -> serde_json::Value {
    sdk_client("anthropic_client.py", controller, extra)
}

/// Run the Python client `script` of `tests/e2e/clients` against `controller`; its report.
fn sdk_client(script: &str, controller: &crate::process::Controller, extra: &[&str]) -> serde_json::Value {
    crate::front_door::run_client(script, controller, extra)
}

/// What every node must give the SDK, translated or not.
fn assert_sdk_answers(report: &serde_json::Value, node: &str) {
    let create = &report["create"];
    assert_eq!(create["node"], node, "{report:#}");
    assert_eq!(
        (create["type"].as_str(), create["role"].as_str()),
        (Some("message"), Some("assistant"))
    );
    assert_eq!(create["blocks"], serde_json::json!(["text"]), "{report:#}");
    assert!(!create["text"].as_str().unwrap_or_default().is_empty(), "{report:#}");
    assert_eq!(create["stop_reason"], "max_tokens", "{report:#}");
    assert!(create["input_tokens"].as_u64().is_some_and(|n| n > 0), "{report:#}");
    assert_eq!(create["output_tokens"], 8, "{report:#}");
    let stream = &report["stream"];
    assert_eq!(
        (stream["first"].as_str(), stream["last"].as_str()),
        (Some("message_start"), Some("message_stop"))
    );
    assert!(stream["deltas"].as_u64().is_some_and(|n| n > 1), "{report:#}");
    assert_eq!(stream["text"], stream["final_text"], "{report:#}");
    assert_eq!(stream["stop_reason"], "max_tokens", "{report:#}");
    assert_eq!(stream["output_tokens"], 12, "{report:#}");
    assert!(report["count_tokens"].as_u64().is_some_and(|n| n > 0), "{report:#}");
    assert_eq!(report["unknown_model"]["status"], 404, "{report:#}");
    assert_eq!(report["unknown_model"]["type"], "not_found_error", "{report:#}");
}

#[test]
fn the_anthropic_sdk_works_against_runtimes_without_the_messages_api_through_translation() {
    // Each runtime below speaks OpenAI's API only; Switchyard translates both ways.
    // The simulated runtime: OpenAI's API only.
    {
        let cluster = Cluster::new(&[]);
        let simulated_controller = controller(&cluster, "");
        let _xeon = simulated(&cluster, &simulated_controller, "xeon", "xeon", &["qwen25-coder-7b"]);
        let report = anthropic_sdk(&simulated_controller, &[]);
        assert_sdk_answers(&report, "xeon");
        assert!(
            report["create"]["text"]
                .as_str()
                .unwrap_or_default()
                .starts_with("[simulated xeon]")
        );
    }

    // A real mlx_lm.server (the M4's runtime): no Messages API either.
    let mlx = crate::runtimes::Runtime::start("mlx");
    let cluster = Cluster::new(&[]);
    let mlx_controller = controller(&cluster, "");
    let address = mlx_controller.agents.clone().expect("agents");
    let head = format!(
        "max_concurrency = 1\ntelemetry_interval_ms = 250\n[runtime]\nkind = \"mlx\"\nbase_url = \"{}\"\n",
        mlx.url
    );
    let _m4 = cluster.agent("m4", &address, &head, &mlx.model());
    assert!(crate::process::eventually(std::time::Duration::from_secs(30), || {
        mlx_controller.node_healthy("m4") == Some(true)
    }));
    let report = anthropic_sdk(&mlx_controller, &[]);
    assert_sdk_answers(&report, "m4");
    drop(mlx_controller);

    // llama.cpp's Python server with a tool-calling chat format (the Xeon's engine): the
    // SDK's forced tool call comes back as a `tool_use` block with its input as an object,
    // and the tool's result goes back to the runtime as OpenAI's `tool` message.
    let llama = crate::runtimes::Runtime::start("llama-cpp-tools");
    let cluster = Cluster::new(&[]);
    let tools_controller = controller(&cluster, "");
    let address = tools_controller.agents.clone().expect("agents");
    let head = format!(
        "max_concurrency = 1\ntelemetry_interval_ms = 250\n[runtime]\nkind = \"llama-cpp\"\nbase_url = \"{}\"\n",
        llama.url
    );
    let _xeon = cluster.agent("xeon", &address, &head, "tiny");
    assert!(crate::process::eventually(std::time::Duration::from_secs(30), || {
        tools_controller.node_healthy("xeon") == Some(true)
    }));
    let report = anthropic_sdk(&tools_controller, &["tools"]);
    assert_sdk_answers(&report, "xeon");
    let tool = &report["tool"];
    assert_eq!(tool["names"], serde_json::json!(["get_weather"]), "{report:#}");
    assert_eq!(tool["stop_reason"], "tool_use", "{report:#}");
    assert_eq!(tool["inputs_are_objects"], true, "{report:#}");
    assert!(tool["after_result"].is_string(), "{report:#}");
}

#[test]
fn a_responses_turn_with_previous_response_id_goes_to_the_node_that_produced_it() {
    // Two simulated nodes, each storing its own responses (as vLLM does), under round-robin:
    // left to the policy, every other turn would reach the node that never saw the
    // conversation and get `previous_response_not_found`.
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "");
    let _nodes = xeon_and_ryzen(&cluster, &controller);
    controller.cli_ok(&["policy", "activate", "round-robin"]);
    let url = format!("{}/v1/responses", controller.url);
    let turn = |previous: Option<&str>, stream: bool| {
        let mut body = serde_json::json!({"model": "qwen25-coder-7b", "max_output_tokens": 6, "stream": stream,
            "instructions": "You are Codex.", "input": [{"role": "user", "content": [{"type": "input_text", "text": "next step"}]}]});
        if let Some(previous) = previous {
            body["previous_response_id"] = serde_json::json!(previous);
        }
        // Codex sends its key as a bearer token and its session as `session-id`.
        let (status, text) =
            crate::process::curl_with_key(&url, KEY, &["-H", "session-id: cx-responses", "-d", &body.to_string()]);
        assert_eq!(status, 200, "{text}");
        let id = text
            .split("\"id\":\"")
            .find(|piece| piece.starts_with("resp_"))
            .and_then(|piece| piece.split('"').next())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no response id in {text}"));
        (crate::process::served_by(&text), id, text)
    };
    // A conversation of five turns, whole and streamed (a stream ends with
    // `response.completed`, no `[DONE]`: it must arrive whole).
    let (first_node, mut previous, _) = turn(None, false);
    for step in 0..4 {
        let stream = step % 2 == 1;
        let (node, id, text) = turn(Some(&previous), stream);
        assert_eq!(node, first_node, "turn {step} left the conversation's node: {text}");
        if stream {
            assert!(text.contains("event: response.completed"), "{text}");
            assert!(!text.contains("\"type\":\"error\""), "{text}");
        }
        assert!(
            text.contains("lives on"),
            "the reason names the previous response: {text}"
        );
        previous = id;
    }
    // A conversation Switchyard never saw is left to the policy, and the runtime that does
    // not hold it says so in OpenAI's shape.
    let body = r#"{"model": "qwen25-coder-7b", "input": "hi", "previous_response_id": "resp_never_seen"}"#;
    let (status, answer) = post_json(&url, &[("x-api-key", KEY)], body);
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"]["code"], "previous_response_not_found", "{answer}");
}
