//! `switchyard-agent bench`: time the local runtime on each catalog model, at concurrency 1
//! and at the node's `max_concurrency` (time to first token, tokens/s per request and in
//! aggregate), print a table, and save the results beside the config. `run` seeds the
//! speeds it reports with them until live requests replace them.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::config::AgentConfig;
use crate::driver::{ChatMessage, ChatRequest, Event, RuntimeDriver, Sampling};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    pub concurrency: u32,
    pub requests: u32,
    pub ttft_ms: f32,
    /// Decode speed of one request.
    pub tokens_per_sec: f32,
    /// All requests' tokens over the wall time.
    pub aggregate_tokens_per_sec: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelResult {
    pub logical: String,
    pub local: String,
    pub single: Measurement,
    pub loaded: Measurement,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchResults {
    pub node: String,
    pub runtime: String,
    pub max_tokens: u32,
    pub models: Vec<ModelResult>,
}

impl BenchResults {
    /// The figures the agent reports before it has served anything: the first model's
    /// single-request speed and time to first token.
    pub fn seed(&self) -> (Option<f32>, Option<f32>) {
        self.models
            .first()
            .map(|m| (Some(m.single.tokens_per_sec), Some(m.single.ttft_ms)))
            .unwrap_or((None, None))
    }

    pub fn load(path: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    pub fn table(&self) -> String {
        let mut out = format!(
            "{} ({}), {} tokens per request\n| model | concurrency | TTFT | tokens/s per request | tokens/s aggregate |\n|---|---|---|---|---|\n",
            self.node, self.runtime, self.max_tokens
        );
        for m in &self.models {
            for r in [&m.single, &m.loaded] {
                out.push_str(&format!(
                    "| {} | {} | {:.0} ms | {:.1} | {:.1} |\n",
                    m.logical, r.concurrency, r.ttft_ms, r.tokens_per_sec, r.aggregate_tokens_per_sec
                ));
            }
        }
        out
    }
}

/// One timed request: (TTFT ms, decode tokens/s, tokens).
async fn one(driver: Arc<dyn RuntimeDriver>, model: String, max_tokens: u32) -> anyhow::Result<(f32, f32, u32)> {
    let request = ChatRequest {
        model,
        messages: vec![ChatMessage {
            role: "user".into(),
            content: "Write a short note about routing LLM prompts.".into(),
        }],
        sampling: Sampling {
            max_tokens: Some(max_tokens),
            temperature: Some(0.0),
            ..Default::default()
        },
    };
    let started = Instant::now();
    let mut stream = driver.chat(request).await?;
    let mut first = None;
    while let Some(event) = stream.next().await {
        match event? {
            Event::Delta(_) => {
                first.get_or_insert_with(Instant::now);
            }
            Event::Done { usage, .. } => {
                let end = Instant::now();
                let first = first.unwrap_or(end);
                let ttft = first.duration_since(started).as_secs_f32() * 1000.0;
                let decode = end.duration_since(first).as_secs_f32();
                let speed = if usage.completion_tokens > 1 && decode > 0.0 {
                    (usage.completion_tokens - 1) as f32 / decode
                } else {
                    0.0
                };
                return Ok((ttft, speed, usage.completion_tokens));
            }
        }
    }
    anyhow::bail!("the runtime's stream ended without a final event")
}

async fn measure(
    driver: &Arc<dyn RuntimeDriver>,
    model: &str,
    concurrency: u32,
    rounds: u32,
    max_tokens: u32,
) -> anyhow::Result<Measurement> {
    let started = Instant::now();
    let (mut ttft, mut speed, mut tokens, mut count) = (0.0f32, 0.0f32, 0u64, 0u32);
    for _ in 0..rounds {
        let batch: Vec<_> = (0..concurrency)
            .map(|_| tokio::spawn(one(driver.clone(), model.to_owned(), max_tokens)))
            .collect();
        for handle in batch {
            let (t, s, n) = handle.await??;
            ttft += t;
            speed += s;
            tokens += u64::from(n);
            count += 1;
        }
    }
    let wall = started.elapsed().as_secs_f32().max(1e-6);
    Ok(Measurement {
        concurrency,
        requests: count,
        ttft_ms: ttft / count.max(1) as f32,
        tokens_per_sec: speed / count.max(1) as f32,
        aggregate_tokens_per_sec: tokens as f32 / wall,
    })
}

pub async fn run(
    config: &AgentConfig,
    driver: Arc<dyn RuntimeDriver>,
    rounds: u32,
    max_tokens: u32,
) -> anyhow::Result<BenchResults> {
    anyhow::ensure!(!config.models.is_empty(), "the config lists no [[models]] to time");
    let mut models = Vec::new();
    for model in &config.models {
        // One untimed request loads the model.
        one(driver.clone(), model.local.clone(), 2)
            .await
            .map_err(|e| anyhow::anyhow!("model {}: {e}", model.local))?;
        let single = measure(&driver, &model.local, 1, rounds, max_tokens).await?;
        let loaded = measure(&driver, &model.local, config.max_concurrency, rounds, max_tokens).await?;
        models.push(ModelResult {
            logical: model.logical.clone(),
            local: model.local.clone(),
            single,
            loaded,
        });
    }
    Ok(BenchResults {
        node: config.node.clone(),
        runtime: driver.kind().as_str().to_owned(),
        max_tokens,
        models,
    })
}
