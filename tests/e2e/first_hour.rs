//! The first hour, as an operator meets it: answers that say what to fix (a `max_tokens` no
//! node accepts, models a key may not use), Ollama clients that cannot send a key, a node
//! table that says why a node is unhealthy, draining a node for maintenance, and an agent
//! stopped mid-stream that tells its client at once.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::Cluster;
use crate::process::{Agent, Controller, curl_with_key, eventually};
use crate::runtimes::repo;

pub(crate) const KEY: &str = "e2e-prompt-key-0123456789";
const LIMITED_KEY: &str = "e2e-limited-key-0123456789";
const JOIN_WITHIN: Duration = Duration::from_secs(30);

/// A controller with the shipped policies (seed-rules active), two keys (one limited to
/// `qwen25-coder-7b`) and `extra` config.
pub(crate) fn controller(cluster: &Cluster, extra: &str) -> Controller {
    cluster.configure(&format!(
        "[policy]\ndir = {:?}\nactive = \"seed-rules\"\nwatch = false\n\
         [[api_keys]]\nname = \"e2e\"\nkey = \"{KEY}\"\n\
         [[api_keys]]\nname = \"limited\"\nkey = \"{LIMITED_KEY}\"\nmodels = [\"qwen25-coder-7b\"]\n{extra}",
        repo().join("policies").display().to_string()
    ));
    cluster.controller("127.0.0.1:0")
}

/// A simulated seed node (`profile` m4, ryzen or xeon) serving `models` (logical = local).
pub(crate) fn simulated(
    cluster: &Cluster,
    controller: &Controller,
    node: &str,
    profile: &str,
    models: &[&str],
) -> Agent {
    simulated_with(cluster, controller, node, profile, models, 2)
}

/// [`simulated`] taking `max_concurrency` requests at once.
pub(crate) fn simulated_with(
    cluster: &Cluster,
    controller: &Controller,
    node: &str,
    profile: &str,
    models: &[&str],
    max_concurrency: u32,
) -> Agent {
    simulated_env(cluster, controller, node, profile, models, max_concurrency, &[])
}

/// [`simulated_with`] with extra environment variables for the agent.
pub(crate) fn simulated_env(
    cluster: &Cluster,
    controller: &Controller,
    node: &str,
    profile: &str,
    models: &[&str],
    max_concurrency: u32,
    env: &[(&str, &str)],
) -> Agent {
    simulated_full(cluster, controller, node, profile, models, max_concurrency, "", env)
}

/// [`simulated_env`] with more lines for its `[runtime]` (say `time_scale = 0.01`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn simulated_full(
    cluster: &Cluster,
    controller: &Controller,
    node: &str,
    profile: &str,
    models: &[&str],
    max_concurrency: u32,
    runtime_extra: &str,
    env: &[(&str, &str)],
) -> Agent {
    let address = controller.agents.clone().expect("agents");
    let bundle = cluster.issue(node, &[]);
    let mut text = format!(
        "node = \"{node}\"\nmax_concurrency = {max_concurrency}\nmax_tokens = 2048\ntelemetry_interval_ms = 250\n\
         [runtime]\nkind = \"simulated\"\nprofile = \"{profile}\"\n{runtime_extra}"
    );
    for model in models {
        text.push_str(&format!(
            "[[models]]\nlogical = \"{model}\"\nlocal = \"{model}\"\ncontext_length = 8192\n"
        ));
    }
    text.push_str(&format!(
        "[controller]\naddress = \"{address}\"\nserver_name = \"localhost\"\n\
         ca = \"{b}/ca.pem\"\ncert = \"{b}/node.pem\"\nkey = \"{b}/node.key\"\n",
        b = bundle.display()
    ));
    let path = cluster.dir.path().join(format!("{node}.toml"));
    std::fs::write(&path, text).expect("agent config");
    let agent = Agent::start_with_env(&path, None, env);
    assert!(
        eventually(JOIN_WITHIN, || controller.node_healthy(node) == Some(true)),
        "{node} never joined: {}",
        controller.log_text()
    );
    agent
}

pub(crate) fn chat(model: &str, max_tokens: u32, stream: bool) -> String {
    format!(
        "{{\"model\": \"{model}\", \"max_tokens\": {max_tokens}, \"stream\": {stream}, \"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}]}}"
    )
}

/// A whole chat of `max_tokens` for `qwen25-coder-7b` as `task` work: its status and the
/// answer with its headers.
pub(crate) fn chat_as(url: &str, task: &str, max_tokens: u32) -> (u16, String) {
    let hint = format!("x-switchyard-task: {task}");
    curl_with_key(
        url,
        KEY,
        &["-H", &hint, "-d", &chat("qwen25-coder-7b", max_tokens, false)],
    )
}

/// A streamed chat for `qwen25-coder-7b` with `headers`, read up to its first event.
pub(crate) fn stream_started(
    url: &str,
    headers: &[&str],
    max_tokens: u32,
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut curl = Command::new("curl")
        .args([
            "-sS",
            "-N",
            "--max-time",
            "60",
            "-H",
            &format!("Authorization: Bearer {KEY}"),
        ])
        .args(headers)
        .args(["-d", &chat("qwen25-coder-7b", max_tokens, true)])
        .arg(url)
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut reader = BufReader::new(curl.stdout.take().expect("stdout"));
    let mut first = String::new();
    reader.read_line(&mut first).expect("first event");
    assert!(first.starts_with("data: "), "{first}");
    (curl, reader)
}

fn body_json(text: &str) -> Value {
    let body = text.split("\r\n\r\n").last().unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn max_tokens_no_node_accepts_is_a_400_and_models_list_only_what_the_key_may_use() {
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "");
    let _xeon = simulated(
        &cluster,
        &controller,
        "xeon",
        "xeon",
        &["qwen25-coder-7b", "mistral-7b"],
    );
    let url = format!("{}/v1/chat/completions", controller.url);

    // A model no node serves: 404 in OpenAI's shape, naming it.
    let (status, text) = curl_with_key(&url, KEY, &["-d", &chat("gpt-5", 4, false)]);
    assert_eq!(status, 404, "{text}");
    assert!(
        text.contains("\"type\": \"model_not_found\"") && text.contains("gpt-5"),
        "{text}"
    );

    let (status, text) = curl_with_key(&url, KEY, &["-d", &chat("qwen25-coder-7b", 5000, false)]);
    assert_eq!(status, 400, "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("retry-after"),
        "retrying cannot help: {text}"
    );
    let error = body_json(&text);
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(
        error["error"]["message"],
        "max_tokens 5000 is more than any node serving model 'qwen25-coder-7b' accepts (the most is 2048, on xeon); lower max_tokens"
    );
    let (status, _) = curl_with_key(&url, KEY, &["-d", &chat("qwen25-coder-7b", 4, false)]);
    assert_eq!(status, 200);

    let models = |key: &str| -> Vec<String> {
        let (status, text) = curl_with_key(&format!("{}/v1/models", controller.url), key, &[]);
        assert_eq!(status, 200, "{text}");
        let mut ids: Vec<String> = body_json(&text)["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|m| m["id"].as_str().expect("id").to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(models(KEY), ["mistral-7b", "qwen25-coder-7b"]);
    assert_eq!(
        models(LIMITED_KEY),
        ["qwen25-coder-7b"],
        "a key sees only what it may use"
    );
}

#[test]
fn ollama_clients_need_no_key_from_a_keyless_network_and_everyone_else_still_does() {
    let cluster = Cluster::new(&[]);
    let controller = controller(
        &cluster,
        "[[keyless]]\nname = \"this-machine\"\nnetworks = [\"127.0.0.0/8\"]\nmodels = [\"qwen25-coder-7b\"]\n",
    );
    let _xeon = simulated(
        &cluster,
        &controller,
        "xeon",
        "xeon",
        &["qwen25-coder-7b", "mistral-7b"],
    );
    let keyless = |path: &str, body: Option<&str>| -> (u16, String) {
        let mut command = Command::new("curl");
        command.args(["-sS", "-i", "--max-time", "30"]);
        if let Some(body) = body {
            command.args(["-d", body]);
        }
        let output = command.arg(format!("{}{path}", controller.url)).output().expect("curl");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, text)
    };
    let ollama_chat = |model: &str| {
        format!(
            "{{\"model\": \"{model}\", \"stream\": false, \"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}]}}"
        )
    };
    // What `ollama run` does: no Authorization header.
    let (status, text) = keyless("/api/chat", Some(&ollama_chat("qwen25-coder-7b")));
    assert_eq!(status, 200, "{text}\n{}", controller.log_text());
    assert_eq!(body_json(&text)["done"], true);
    let (status, text) = keyless("/api/tags", None);
    assert_eq!(status, 200, "{text}");
    assert_eq!(body_json(&text)["models"].as_array().map(Vec::len), Some(1), "{text}");
    // The keyless grant's models still bind it.
    let (status, text) = keyless("/api/chat", Some(&ollama_chat("mistral-7b")));
    assert_eq!(status, 403, "{text}");
    // OpenAI clients can send keys: keyless does not cover them unless configured.
    let (status, text) = keyless("/v1/chat/completions", Some(&chat("qwen25-coder-7b", 4, false)));
    assert_eq!(status, 401, "{text}");
    // A key sent is checked as a key, wherever the client is.
    let (status, _) = curl_with_key(
        &format!("{}/api/chat", controller.url),
        "wrong-key-0123456789abcdef",
        &["-d", &ollama_chat("qwen25-coder-7b")],
    );
    assert_eq!(status, 401);
}

#[test]
fn an_ollama_client_outside_the_keyless_networks_is_told_how_to_get_in() {
    let cluster = Cluster::new(&[]);
    let controller = controller(
        &cluster,
        "[[keyless]]\nname = \"lan\"\nnetworks = [\"192.168.77.0/24\"]\n",
    );
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-d", "{\"model\": \"qwen25-coder-7b\"}"])
        .arg(format!("{}/api/chat", controller.url))
        .output()
        .expect("curl");
    let error: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(
        error["error"],
        "missing API key: send `Authorization: Bearer <key>`, or ask the operator to list your network in the controller's [[keyless]] (Ollama clients cannot send keys)"
    );
}

#[test]
fn a_drained_node_finishes_its_stream_takes_no_new_work_and_says_why() {
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "");
    let _xeon = simulated(&cluster, &controller, "xeon", "xeon", &["qwen25-coder-7b"]);
    let _ryzen = simulated(&cluster, &controller, "ryzen", "ryzen", &["qwen25-coder-7b"]);
    let url = format!("{}/v1/chat/completions", controller.url);
    let batch = |max_tokens: u32| -> String {
        let (status, text) = curl_with_key(
            &url,
            KEY,
            &[
                "-H",
                "x-switchyard-task: batch",
                "-d",
                &chat("qwen25-coder-7b", max_tokens, false),
            ],
        );
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("x-switchyard-node: ")
                    .map(|n| n.trim().to_owned())
            })
            .expect("node header")
    };
    assert_eq!(batch(4), "xeon");

    // A batch stream on the xeon (22 tokens/s: 60 tokens take about 3 s), then drain it.
    let (mut curl, mut reader) = stream_started(&url, &["-H", "x-switchyard-task: batch"], 60);
    let drained = controller.cli_ok(&["node", "drain", "xeon"]);
    assert!(drained.contains("node xeon drained"), "{drained}");

    assert_eq!(batch(4), "ryzen", "no new work for a drained node");
    let table = controller.cli_ok(&["nodes"]);
    assert!(table.contains("draining"), "{table}");
    assert!(
        table.contains("xeon: drained by the operator (`switchyard node undrain xeon` to end it)"),
        "{table}"
    );
    let mut rest = String::new();
    reader.read_to_string(&mut rest).expect("rest");
    let _ = curl.wait();
    assert!(
        rest.trim_end().ends_with("data: [DONE]"),
        "the stream in flight finished:\n{rest}"
    );

    let waited = controller.cli_ok(&["node", "drain", "xeon", "--wait"]);
    assert!(waited.contains("nothing in flight"), "{waited}");
    let undrained = controller.cli_ok(&["node", "undrain", "xeon"]);
    assert!(undrained.contains("takes new work again"), "{undrained}");
    assert!(eventually(Duration::from_secs(5), || batch(4) == "xeon"));

    let unknown = controller.cli(&["node", "drain", "ghost"]);
    assert!(!unknown.status.success());
    let message = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        message.contains("no node 'ghost'; the nodes are: ryzen, xeon"),
        "{message}"
    );
}

#[test]
fn the_node_table_says_why_a_node_is_unhealthy() {
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "");
    let address = controller.agents.clone().expect("agents");
    // An Ollama node whose Ollama is not running: a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let bundle = cluster.issue("xeon", &[]);
    let config = cluster.agent_config_with(
        "xeon.toml",
        "xeon",
        &bundle,
        &address,
        &format!(
            "max_concurrency = 2\ntelemetry_interval_ms = 250\n[runtime]\nkind = \"ollama\"\nbase_url = \"http://127.0.0.1:{port}\"\n"
        ),
        "qwen2.5-coder:7b",
    );
    let _agent = Agent::start(&config, None);
    assert!(eventually(JOIN_WITHIN, || controller.node_healthy("xeon") == Some(false)));
    let view = controller.admin("/admin/nodes");
    let reason = view["unhealthy"]["xeon"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.starts_with("runtime ollama unhealthy: ") && reason.contains(&format!("127.0.0.1:{port}")),
        "{view}"
    );
    let table = controller.cli_ok(&["nodes"]);
    assert!(table.contains("UNHEALTHY"), "{table}");
    assert!(table.contains(&format!("xeon: {reason}")), "{table}");
}

#[test]
fn an_agent_stopped_mid_stream_tells_its_client_within_a_second() {
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "");
    let xeon = simulated(&cluster, &controller, "xeon", "xeon", &["qwen25-coder-7b"]);
    // 200 tokens at the xeon's 22 tokens/s take about 9 s.
    let url = format!("{}/v1/chat/completions", controller.url);
    let (mut curl, mut reader) = stream_started(&url, &[], 200);

    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &xeon.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut rest = String::new();
    reader.read_to_string(&mut rest).expect("rest");
    let learned = signalled.elapsed();
    let _ = curl.wait();
    assert!(
        rest.contains("\"error\"") && !rest.contains("[DONE]"),
        "an explicit error event, not a silent end:\n{rest}"
    );
    // The issue's bound: the client learns within a second (it took 5 s before).
    assert!(
        learned < Duration::from_millis(1500),
        "the client learned after {learned:?}"
    );
    let exit = xeon.stop();
    assert!(exit.success(), "{exit:?}");
}

/// What `init` wrote, with its detected runtime and catalog replaced by a simulated one serving
/// `qwen25-coder-7b` (the operator's "review agent.toml"); the `[controller]` section stays.
fn with_simulated_runtime(config: &str) -> String {
    let head = &config[..config.find("[runtime]").expect("a [runtime] table")];
    let link = &config[config.find("[controller]").expect("a [controller] section")..];
    format!(
        "{head}[runtime]\nkind = \"simulated\"\nprofile = \"xeon\"\n\n\
         [[models]]\nlogical = \"qwen25-coder-7b\"\nlocal = \"qwen2.5-coder:7b\"\ncontext_length = 8192\n\n{link}"
    )
}

#[test]
fn a_new_node_joins_with_its_bundle_and_serves_under_the_default_policy() {
    let cluster = Cluster::new(&[]);
    let controller = controller(&cluster, "");
    let address = controller.agents.clone().expect("agents");

    // On the controller: the bundle, with the address the node dials, and the steps.
    let issued = Command::new(crate::process::BIN)
        .args(["certs", "issue", "--dir"])
        .arg(cluster.certs())
        .args(["--node", "gpu4", "--controller-address", &address])
        .output()
        .expect("certs issue");
    let steps = String::from_utf8_lossy(&issued.stdout).into_owned();
    assert!(
        issued.status.success(),
        "{steps}{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    assert!(
        steps.contains(&format!("for node 'gpu4', joining the controller at {address}")),
        "{steps}"
    );
    assert!(
        steps.contains("switchyard-agent init --bundle switchyard-bundle --output agent.toml"),
        "{steps}"
    );

    // On the node: the bundle copied over, then the one command.
    let machine = tempfile::tempdir().expect("the node's disk");
    let copied = machine.path().join("switchyard-bundle");
    std::fs::create_dir_all(&copied).expect("mkdir");
    for file in ["ca.pem", "node.pem", "node.key", "join.toml"] {
        std::fs::copy(cluster.certs().join("nodes/gpu4").join(file), copied.join(file)).expect("copy");
    }
    let config = machine.path().join("agent.toml");
    let init = Command::new(crate::process::agent_bin())
        .args(["init", "--bundle"])
        .arg(&copied)
        .arg("--output")
        .arg(&config)
        .output()
        .expect("init --bundle");
    assert!(
        init.status.success(),
        "{}{}",
        String::from_utf8_lossy(&init.stdout),
        String::from_utf8_lossy(&init.stderr)
    );
    let written = std::fs::read_to_string(&config).expect("agent.toml");
    assert!(written.contains("node = \"gpu4\""), "{written}");
    assert!(written.contains(&format!("address = \"{address}\"")), "{written}");
    // The test machine has no GPU runtime: point the config at a simulated one, as an
    // operator edits the runtime and models, and leave the rest as `init` wrote it. The
    // controller's certificate names localhost, which the address's host already is.
    std::fs::write(&config, with_simulated_runtime(&written)).expect("edit");

    let _gpu4 = Agent::start(&config, None);
    assert!(
        eventually(JOIN_WITHIN, || controller.node_healthy("gpu4") == Some(true)),
        "{}",
        controller.log_text()
    );
    // No rule of the shipped seed-rules names gpu4; the batch rule's "*" reaches it.
    let (status, text) = chat_as(&format!("{}/v1/chat/completions", controller.url), "batch", 4);
    assert_eq!(status, 200, "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("x-switchyard-node: gpu4"), "{text}");
    assert!(lower.contains("rule 'batch'"), "{text}");
}
