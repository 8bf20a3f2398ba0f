//! How long `switchyard policy replay` takes on a large record: generates an export of N
//! records (default 1,000,000) over the seed's three machines (64 snapshots with varied
//! health and load, every task, model and size), then times parsing it and replaying it
//! through a policy, as the CLI does.
//!   cargo run --release -p switchyard-controller --example replay_bench -- [N] [POLICY]

#![allow(clippy::print_stdout)] // a benchmark's report is its output

use std::time::Instant;

use switchyard_controller::decisions::replay::replay_lines;
use switchyard_controller::decisions::store::parse_export;
use switchyard_controller::decisions::{DecisionRecord, ExportLine, Outcome, RecordedDecision};
use switchyard_protocol::{ClusterSnapshot, Decision, Reject, RequestInfo};

/// An export of `count` records over 64 snapshots of the seed cluster, as NDJSON.
fn generate(seed: &ClusterSnapshot, count: u64) -> anyhow::Result<String> {
    let mut text = String::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for s in 0..64u32 {
        let mut snapshot = seed.clone();
        for (i, node) in snapshot.nodes.iter_mut().enumerate() {
            node.healthy = !(s as usize + i).is_multiple_of(11);
            node.on_battery = (node.name == "m4").then_some(s % 7 == 0);
            node.tokens_per_sec = node.tokens_per_sec.map(|t| t * (0.8 + (s % 5) as f32 * 0.1));
        }
        let line = ExportLine::Snapshot {
            key: format!("bench-{s}"),
            snapshot,
        };
        text.push_str(&serde_json::to_string(&line)?);
        text.push('\n');
    }
    let tasks = [Some("development"), Some("production"), Some("batch"), None];
    let models = ["qwen25-coder-7b", "qwen25-coder-32b", "mistral-7b"];
    for i in 0..count {
        let r = next();
        let mut request = RequestInfo::for_model(models[(r % 3) as usize]);
        request.id = format!("req-{i}");
        request.task = tasks[((r >> 8) % 4) as usize].map(str::to_owned);
        request.max_tokens = Some(64 + ((r >> 16) % 2000) as u32);
        request.prompt_tokens = ((r >> 32) % 4000) as u32;
        request.priority = ((r >> 40) % 10) as u8;
        let record = DecisionRecord {
            id: request.id.clone(),
            at_ms: 1_700_000_000_000 + i,
            snapshot: format!("bench-{}", (i / 1000) % 64),
            in_flight: vec![
                ("m4".to_owned(), ((r >> 44) % 2) as u32),
                ("ryzen".to_owned(), ((r >> 46) % 5) as u32),
                ("xeon".to_owned(), ((r >> 49) % 3) as u32),
            ],
            request,
            decided: RecordedDecision {
                policy: "recorded@0".to_owned(),
                decision: Decision::Reject(Reject {
                    status: 503,
                    message: "recorded".to_owned(),
                }),
                fault: None,
                fallback: false,
                canary: false,
            },
            outcome: Outcome {
                status: 200,
                duration_ms: 1000,
                ..Outcome::default()
            },
        };
        text.push_str(&serde_json::to_string(&ExportLine::Record(Box::new(record)))?);
        text.push('\n');
    }
    Ok(text)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let count: u64 = args.get(1).map(|n| n.parse()).transpose()?.unwrap_or(1_000_000);
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let policy = args
        .get(2)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo.join("policies/seed-rules.toml"));
    let seed: ClusterSnapshot = toml::from_str(&std::fs::read_to_string(
        repo.join("policies/fixtures/seed-cluster.toml"),
    )?)?;

    let generated = Instant::now();
    let text = generate(&seed, count)?;
    println!(
        "generated {count} records ({:.0} MB of NDJSON) in {:.1} s",
        text.len() as f64 / 1e6,
        generated.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let lines: Vec<ExportLine> = parse_export(&text)?.into_iter().map(|(_, line)| line).collect();
    let parsed = started.elapsed();
    drop(text);
    let replayed_at = Instant::now();
    let report = replay_lines(&policy, lines)?;
    let replayed = replayed_at.elapsed();
    println!(
        "{}: {} records: parse {:.1} s, replay {:.1} s, total {:.1} s ({:.1} µs per record); {} changed, {} faults",
        report.policy,
        report.records,
        parsed.as_secs_f64(),
        replayed.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64() * 1e6 / report.records.max(1) as f64,
        report.changed,
        report.faults
    );
    Ok(())
}
