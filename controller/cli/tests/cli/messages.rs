//! Every message the first-hour work added or changed, as the operator or client reads it,
//! against the reviewed text in `tests/ui/messages/` (`BLESS=1` rewrites them after a
//! deliberate change): the 503 for a node no rule names, the 400 for an impossible
//! `max_tokens`, keyless refusals, the node table, `certs issue`'s steps, `route explain
//! --help` and a failing `policy test`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use http::HeaderMap;
use switchyard_controller::admin::NodesView;
use switchyard_controller::front::keyless::{KeylessConfig, KeylessRule};
use switchyard_controller::front::keys::{ApiKeys, Grant};
use switchyard_controller::front::{ClientApi, FrontError};
use switchyard_controller::node_table::LinkView;
use switchyard_controller::policy::PreparedSnapshot;
use switchyard_protocol::tls::CertInfo;
use switchyard_protocol::{ClusterSnapshot, Decision};

use crate::support::{cluster, policies, repo_path, request};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// Compare `actual` with `tests/ui/messages/<name>` (or write it under `BLESS`).
fn check(name: &str, actual: &str) {
    let path = repo_path("controller/tests/ui/messages").join(name);
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, actual).expect("bless");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        actual, expected,
        "tests/ui/messages/{name} differs (review, then BLESS=1 to accept)"
    );
}

fn run(args: &[&str], dir: &Path) -> String {
    let output = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("SWITCHYARD_CONTROLLER")
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .env("SWITCHYARD_LOG", "warn")
        .output()
        .expect("switchyard");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn a_healthy_node_that_no_rule_names_is_named_in_the_503() {
    let policies = policies();
    let text = std::fs::read_to_string(repo_path("policies/seed-rules.toml"))
        .expect("policy")
        .replace(", \"*\"", "");
    let policy = policies
        .registry
        .load_text(&text, "no-wildcard.toml", Some(&repo_path("policies")), &cluster())
        .expect("loads");
    let mut snapshot: ClusterSnapshot = cluster();
    let mut gpu4 = snapshot.node("xeon").expect("xeon").clone();
    gpu4.name = "gpu4".into();
    for node in &mut snapshot.nodes {
        node.healthy = false;
    }
    snapshot.nodes.push(gpu4);
    policies.registry.activate(&policy.id).expect("activate");
    let routed = policies
        .engine
        .explain(&request(None), &PreparedSnapshot::from(snapshot));
    let Decision::Reject(reject) = routed.decision else {
        panic!("{:?}", routed.decision)
    };
    check(
        "reject-unnamed-node.txt",
        &format!("{} {}\n", reject.status, reject.message),
    );
}

#[test]
fn client_errors_say_what_to_fix() {
    let mut out = String::new();
    let too_many = FrontError::TooManyTokens {
        model: "qwen25-coder-7b".into(),
        requested: 5000,
        largest: 4096,
        node: "ryzen".into(),
    };
    out.push_str(&format!(
        "{} {}: {too_many}\n",
        too_many.status().as_u16(),
        too_many.kind()
    ));

    let keys = ApiKeys::new(vec![(
        "a-key-of-sixteen-or-more".into(),
        Grant {
            name: "k".into(),
            models: vec!["*".into()],
            max_priority: 9,
            weight: 1,
            continue_streams: true,
        },
    )]);
    for api in [ClientApi::OpenAi, ClientApi::Ollama] {
        let error = keys
            .check(&HeaderMap::new(), Some("10.1.2.3".parse().expect("ip")), api)
            .expect_err("no key");
        out.push_str(&format!("{api:?} without a key: {error}\n"));
    }
    let entry = |networks: &[&str]| KeylessConfig {
        name: "lan".into(),
        networks: networks.iter().map(|s| (*s).to_owned()).collect(),
        apis: Vec::new(),
        models: vec!["*".into()],
        max_priority: 5,
    };
    for networks in [&["192.168.1.0/33"][..], &["0.0.0.0/0"], &[]] {
        let error = KeylessRule::from_config(1, &entry(networks)).expect_err("refused");
        out.push_str(&format!("keyless {networks:?}: {error}\n"));
    }
    let error = ApiKeys::from_config(&[], &[entry(&["10.0.0.0/8"])]).expect_err("no keys");
    out.push_str(&format!("keyless without keys: {error}\n"));
    check("client-errors.txt", &out);
}

#[test]
fn the_node_table_reads_as_an_operator_needs() {
    use switchyard_protocol::{EnergySource, EnergyTelemetry};
    let mut snapshot = cluster();
    for node in &mut snapshot.nodes {
        node.last_seen_ms = 250;
    }
    if let Some(m4) = snapshot.nodes.iter_mut().find(|n| n.name == "m4") {
        m4.on_battery = Some(true);
        m4.thermal_throttled = true;
    }
    if let Some(ryzen) = snapshot.nodes.iter_mut().find(|n| n.name == "ryzen") {
        ryzen.healthy = false;
        ryzen.in_flight = 0;
    }
    let link = |node: &str, connected: bool, days: i64| LinkView {
        node: node.into(),
        connected,
        peer: "192.168.1.20:51000".into(),
        since_unix_s: 0,
        telemetry_age_ms: 250,
        cert: CertInfo {
            common_name: node.into(),
            serial: "01".into(),
            not_before: String::new(),
            not_after: String::new(),
            expires_in_s: days * 86_400 + 3600,
        },
        last_error: None,
        runtime: Some(switchyard_protocol::RuntimeKind::Simulated),
        simulated: true,
        battery_pct: (node == "m4").then_some(41.0),
        thermal_pressure: (node == "m4").then(|| "heavy".to_owned()),
        models: Vec::new(),
        memory_budget_mb: None,
        resident: Vec::new(),
        // The xeon's runtime found 62.5 % of its prompt tokens in its prefix cache.
        prefix_cache_hit_pct: (node == "xeon").then_some(62.5),
        // The ryzen's agent follows vLLM's KV-cache events (the precise estimate).
        kv_events: (node == "ryzen").then(|| switchyard_protocol::KvEventsTelemetry {
            current: true,
            blocks: 1200,
            block_size: 16,
            ..Default::default()
        }),
        endpoint: None,
        // The m4's figure is the seed's (assumed); the xeon's is measured by NVML.
        energy: match node {
            "m4" => Some(EnergyTelemetry {
                source: EnergySource::SeedFigure,
                joules_total: 3600.0,
                watts: 30.0,
                tokens_total: 2160,
                joules_per_token: Some(1.67),
            }),
            "xeon" => Some(EnergyTelemetry {
                source: EnergySource::NvmlCounter,
                joules_total: 52000.0,
                watts: 150.0,
                tokens_total: 7600,
                joules_per_token: Some(6.84),
            }),
            _ => None,
        },
    };
    let view = NodesView {
        snapshot,
        links: vec![link("m4", true, 80), link("ryzen", false, 60), link("xeon", true, 9)],
        unhealthy: BTreeMap::from([(
            "ryzen".to_owned(),
            "runtime vllm unhealthy: http://127.0.0.1:8000/metrics: error sending request".to_owned(),
        )]),
    };
    check("nodes-table.txt", &format!("{}\n", switchyard_cli::format_nodes(&view)));
}

#[test]
fn certs_issue_prints_the_steps_that_make_a_node_join() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(
        &["certs", "init", "--dir", "certs", "--san", "controller.lan"],
        dir.path(),
    );
    let known = run(&["certs", "issue", "--dir", "certs", "--node", "xeon"], dir.path());
    let local = tempfile::tempdir().expect("tempdir");
    run(&["certs", "init", "--dir", "certs"], local.path());
    let unknown = run(&["certs", "issue", "--dir", "certs", "--node", "gpu4"], local.path());
    let bad = run(
        &[
            "certs",
            "issue",
            "--dir",
            "certs",
            "--node",
            "gpu4",
            "--controller-address",
            "controller.lan",
        ],
        local.path(),
    );
    let nothing = run(&["certs", "renew", "--dir", "certs"], dir.path());
    let ghost = run(&["certs", "renew", "--dir", "certs", "--node", "ghost"], dir.path());
    check(
        "certs-issue.txt",
        &format!("{known}---\n{unknown}---\n{bad}---\n{nothing}---\n{ghost}"),
    );
}

#[test]
fn route_explain_help_documents_every_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let help = run(&["route", "explain", "--help"], dir.path());
    let drain = run(&["node", "drain", "--help"], dir.path());
    check("route-explain-help.txt", &format!("{help}---\n{drain}"));
}

#[test]
fn a_failing_policy_test_speaks_plainly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures = dir.path().join("wrong.cases.toml");
    std::fs::write(
        &fixtures,
        format!(
            "snapshot = {:?}\n\
             [[case]]\nname = \"batch expected on the ryzen\"\n\
             request = {{ model = \"qwen25-coder-7b\", task = \"batch\", max_tokens = 1024 }}\n\
             expect = {{ node = \"ryzen\", targets = [\"ryzen\"], reason_contains = \"production\" }}\n\
             [[case]]\nname = \"an unknown model routed\"\n\
             request = {{ model = \"gpt-5\" }}\n\
             expect = {{ node = \"xeon\" }}\n",
            repo_path("policies/fixtures/seed-cluster.toml").display().to_string()
        ),
    )
    .expect("fixtures");
    let output = run(
        &[
            "policy",
            "test",
            repo_path("policies/seed-rules.toml").to_str().expect("utf-8"),
            fixtures.to_str().expect("utf-8"),
        ],
        dir.path(),
    );
    let output = output.replace(&dir.path().display().to_string(), "<dir>");
    check("policy-test-failure.txt", &output);
}
