//! One routing decision through the Wasm sandbox versus the same policy code compiled
//! natively, for 3, 16 and 256 nodes. The Wasm side is the policies's full request-path
//! decision (`decide_prepared`: lowering the request and its candidates into the guest, the
//! sandboxed call, lifting and validating the decision), for the current contract (0.4.0:
//! the cluster handed to each instance once per snapshot version, candidates as one list of
//! numbers, five each), for the least-loaded component as built for 0.2.0
//! (`tests/fixtures/least-loaded-0.2.0.wasm`: candidates as a list of records) and for 0.1.0
//! (`tests/fixtures/least-loaded-0.1.0.wasm`: every candidate node lowered whole per call);
//! the native side calls the policy crate's `decide` on the same inputs, already in memory.
//! The Python and JavaScript ports of least-loaded (`plugins/python/least-loaded`,
//! `plugins/js/least-loaded`, built here with the toolchains tests/runtimes/setup.sh
//! installs; each skipped with a note where it is missing) run on the same Wasm path.
//! Results: BENCHMARKS.md.

use criterion::{BenchmarkId, Criterion, black_box, criterion_group, criterion_main};
use switchyard_controller::policy::{EngineOptions, Policies, PreparedSnapshot};
use switchyard_controller::seed_cluster::seed_cluster;
use switchyard_policy_sdk as sdk;
use switchyard_protocol::{ClusterSnapshot, NodeSnapshot, RequestInfo};

/// `n` nodes: the seed machines, then copies of them under new names with varied load.
fn cluster(n: usize) -> ClusterSnapshot {
    let seed = seed_cluster();
    let mut nodes: Vec<NodeSnapshot> = Vec::with_capacity(n);
    for i in 0..n {
        let mut node = seed.nodes[i % seed.nodes.len()].clone();
        if i >= seed.nodes.len() {
            node.name = format!("{}-{i}", node.name);
            node.in_flight = (i % 3) as u32;
            node.tokens_per_sec = Some(10.0 + (i % 17) as f32);
        }
        nodes.push(node);
    }
    ClusterSnapshot { nodes }
}

fn request(task: &str) -> RequestInfo {
    let mut req = RequestInfo::for_model("qwen25-coder-7b");
    req.id = "bench".to_owned();
    req.task = Some(task.to_owned());
    req.prompt_tokens = 200;
    req.max_tokens = Some(256);
    req
}

fn to_sdk_request(req: &RequestInfo) -> sdk::Request {
    sdk::Request {
        id: req.id.clone(),
        api: req.api.as_str().to_owned(),
        model: req.model.clone(),
        stream: req.stream,
        prompt_tokens: req.prompt_tokens,
        max_tokens: req.max_tokens,
        priority: req.priority,
        task: req.task.clone(),
        session: req.session.clone(),
        tags: req.tags.clone(),
    }
}

fn to_sdk_node(node: &NodeSnapshot) -> sdk::Node {
    sdk::Node {
        name: node.name.clone(),
        labels: node.labels.clone(),
        runtime: node.runtime.as_str().to_owned(),
        healthy: node.healthy,
        in_flight: node.in_flight,
        queued: node.queued,
        max_concurrency: node.max_concurrency,
        max_tokens: node.max_tokens,
        cpu_util_pct: node.cpu_util_pct,
        mem_used_mb: node.mem_used_mb,
        mem_total_mb: node.mem_total_mb,
        gpus: node
            .gpus
            .iter()
            .map(|g| sdk::Gpu {
                name: g.name.clone(),
                util_pct: g.util_pct,
                mem_used_mb: g.mem_used_mb,
                mem_total_mb: g.mem_total_mb,
                temp_c: g.temp_c,
                power_w: g.power_w,
                throttled: g.throttled,
            })
            .collect(),
        on_battery: node.on_battery,
        thermal_throttled: node.thermal_throttled,
        tokens_per_sec: node.tokens_per_sec,
        ttft_ms: node.ttft_ms,
        prefill_tokens_per_sec: node.prefill_tokens_per_sec,
        models: node
            .models
            .iter()
            .map(|m| sdk::ModelVariant {
                logical: m.logical.clone(),
                local: m.local.clone(),
                quantization: m.quantization.clone(),
                context_length: m.context_length,
                loaded: m.loaded,
                load_ms: m.load_ms,
            })
            .collect(),
        last_seen_ms: node.last_seen_ms,
    }
}

fn policies_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

fn seed_params() -> seed_rules::Params {
    let text = std::fs::read_to_string(policies_dir().join("seed-rules.toml")).expect("seed-rules.toml");
    let spec: toml::Table = toml::from_str(&text).expect("toml");
    let params = &spec["stage"].as_array().expect("stages")[0]["params"];
    serde_json::from_value(serde_json::to_value(params).expect("json")).expect("params")
}

/// A port of least-loaded built by `tool` (relative to the repository) with `args`, loaded;
/// `None` (said on stderr) where the tool is missing.
fn ported_least_loaded(
    policies: &Policies,
    name: &str,
    tool: &str,
    args: &[&str],
) -> Option<std::sync::Arc<switchyard_controller::policy::LoadedPolicy>> {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tool = repo.join(tool);
    if !tool.is_file() {
        eprintln!(
            "no {} (tests/runtimes/setup.sh installs it): {name} is left out",
            tool.display()
        );
        return None;
    }
    let out = repo.join("target/bench-policies");
    std::fs::create_dir_all(&out).expect("target/bench-policies");
    let status = std::process::Command::new(tool)
        .args(args)
        .arg(out.join(format!("{name}.wasm")))
        .current_dir(&repo)
        .status()
        .expect("the port's toolchain");
    assert!(status.success(), "building {name} failed");
    let loaded = policies
        .registry
        .load_text(
            &format!("name = \"{name}\"\n[[stage]]\ncomponent = \"{name}.wasm\"\n"),
            &format!("{name}.toml"),
            Some(&out),
            &ClusterSnapshot::default(),
        )
        .expect("the port loads");
    Some(loaded)
}

/// The Python and JavaScript ports of least-loaded, built and loaded, each where its
/// toolchain is installed.
fn ports(
    policies: &Policies,
) -> Vec<(
    &'static str,
    std::sync::Arc<switchyard_controller::policy::LoadedPolicy>,
)> {
    let python = ported_least_loaded(
        policies,
        "least-loaded-py",
        ".venv/bin/componentize-py",
        &[
            "-d",
            "wit/policy.wit",
            "-w",
            "policy",
            "componentize",
            "-p",
            "plugins/python",
            "-p",
            "plugins/python/least-loaded",
            "app",
            "-o",
        ],
    );
    let js = ported_least_loaded(
        policies,
        "least-loaded-js",
        "tests/runtimes/js/node_modules/.bin/jco",
        &[
            "componentize",
            "plugins/js/least-loaded/app.js",
            "--wit",
            "wit/policy.wit",
            "--world-name",
            "policy",
            "--disable",
            "all",
            "--bundle",
            "--bundle-config",
            "plugins/templates/js/bundle.config.mjs",
            "-o",
        ],
    );
    [("least-loaded/python", python), ("least-loaded/js", js)]
        .into_iter()
        .filter_map(|(kind, port)| Some((kind, port?)))
        .collect()
}

fn bench_decisions(c: &mut Criterion) {
    let policies = Policies::new(EngineOptions::default()).expect("policies");
    let least = policies
        .registry
        .load_file(&policies_dir().join("least-loaded.toml"), &ClusterSnapshot::default())
        .expect("least-loaded");
    let seed = policies
        .registry
        .load_file(&policies_dir().join("seed-rules.toml"), &ClusterSnapshot::default())
        .expect("seed-rules");
    let params = seed_params();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let legacy = |version: &str| {
        policies
            .registry
            .load_text(
                &format!(
                    "name = \"least-loaded-{}\"\n[[stage]]\ncomponent = \"least-loaded-{version}.wasm\"\n",
                    version.replace('.', "-")
                ),
                "least-loaded-legacy.toml",
                Some(&fixtures),
                &ClusterSnapshot::default(),
            )
            .expect("the legacy component loads")
    };
    // Every policy on the Wasm path, by benchmark name.
    let mut on_wasm = vec![
        ("least-loaded/wasm", least),
        ("least-loaded/wasm-0.2.0", legacy("0.2.0")),
        ("least-loaded/wasm-0.1.0", legacy("0.1.0")),
    ];
    on_wasm.extend(ports(&policies));
    on_wasm.push(("seed-rules/wasm", seed));

    let mut group = c.benchmark_group("decision");
    for n in [3usize, 16, 256] {
        let snapshot = cluster(n);
        let req = request("batch");
        let sdk_req = to_sdk_request(&req);
        // The same input the Wasm policy gets: nodes serving the model, with only that variant.
        let sdk_nodes: Vec<sdk::Node> = snapshot
            .nodes
            .iter()
            .filter(|n| n.variant(&req.model).is_some())
            .map(|n| {
                let mut node = to_sdk_node(n);
                node.models.retain(|m| m.logical == req.model);
                node
            })
            .collect();
        let prepared = PreparedSnapshot::from(snapshot.clone());

        for (kind, policy) in &on_wasm {
            policies.registry.activate(&policy.id).expect("activate");
            assert!(policies.engine.decide_snapshot(&req, &snapshot).fault.is_none());
            group.bench_with_input(BenchmarkId::new(*kind, n), &n, |b, _| {
                b.iter(|| policies.engine.decide_blocking(black_box(&req), black_box(&prepared)))
            });
        }
        group.bench_with_input(BenchmarkId::new("least-loaded/native", n), &n, |b, _| {
            b.iter(|| least_loaded::decide(black_box(&sdk_req), black_box(&sdk_nodes)))
        });
        group.bench_with_input(BenchmarkId::new("seed-rules/native", n), &n, |b, _| {
            b.iter(|| seed_rules::decide(black_box(&params), black_box(&sdk_req), black_box(&sdk_nodes)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2)).sample_size(50);
    targets = bench_decisions
}
criterion_main!(benches);
