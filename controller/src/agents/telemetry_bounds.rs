//! What the controller accepts from an agent's telemetry, whatever the agent sends: lines of
//! bounded length (an endless line ends the link instead of growing memory), a bounded
//! number of models and labels, and self-reported figures clamped to what a machine can
//! have (a node claiming 4 billion slots or 3.4e38 tokens/s must not pull all traffic).

use switchyard_protocol::AgentTelemetry;

/// Longest telemetry line (one JSON sample).
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Model variants kept per node.
pub const MAX_MODELS: usize = 256;
/// Labels kept per node.
pub const MAX_LABELS: usize = 64;
/// Largest concurrency a node may claim.
pub const MAX_CONCURRENCY: u32 = 4096;
/// Fastest decode speed a node may claim, tokens/s.
pub const MAX_TOKENS_PER_SEC: f32 = 100_000.0;
/// The fastest prompt processing a node may claim (a whole rack of GPUs does less).
pub const MAX_PREFILL_TOKENS_PER_SEC: f32 = 10_000_000.0;

/// Splits an NDJSON byte stream into lines, refusing a line over [`MAX_LINE_BYTES`].
#[derive(Debug, Default)]
pub struct LineReader {
    buffer: Vec<u8>,
}

/// A line grew past the limit without ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a telemetry line is longer than {MAX_LINE_BYTES} bytes")]
pub struct LineTooLong;

impl LineReader {
    /// Feed bytes; the lines they complete.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, LineTooLong> {
        let mut lines = Vec::new();
        let mut rest = data;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            if self.buffer.len() + end > MAX_LINE_BYTES {
                return Err(LineTooLong);
            }
            let mut line = std::mem::take(&mut self.buffer);
            line.extend_from_slice(&rest[..end]);
            lines.push(line);
            rest = &rest[end + 1..];
        }
        if self.buffer.len() + rest.len() > MAX_LINE_BYTES {
            return Err(LineTooLong);
        }
        self.buffer.extend_from_slice(rest);
        Ok(lines)
    }
}

/// Clamp what an agent says about itself; returns what had to be changed, for the log.
pub fn clamp(telemetry: &mut AgentTelemetry) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if telemetry.models.len() > MAX_MODELS {
        telemetry.models.truncate(MAX_MODELS);
        changed.push("models");
    }
    if telemetry.labels.len() > MAX_LABELS {
        telemetry.labels.truncate(MAX_LABELS);
        changed.push("labels");
    }
    if telemetry.limits.max_concurrency > MAX_CONCURRENCY {
        telemetry.limits.max_concurrency = MAX_CONCURRENCY;
        changed.push("limits.max_concurrency");
    }
    let performance = &mut telemetry.performance;
    if let Some(speed) = performance.tokens_per_sec
        && !(speed.is_finite() && (0.0..=MAX_TOKENS_PER_SEC).contains(&speed))
    {
        performance.tokens_per_sec = speed.is_finite().then(|| speed.clamp(0.0, MAX_TOKENS_PER_SEC));
        changed.push("performance.tokens_per_sec");
    }
    if let Some(speed) = performance.prefill_tokens_per_sec
        && !(speed.is_finite() && speed > 0.0 && speed <= MAX_PREFILL_TOKENS_PER_SEC)
    {
        performance.prefill_tokens_per_sec = None;
        changed.push("performance.prefill_tokens_per_sec");
    }
    if let Some(ttft) = performance.ttft_ms
        && !(ttft.is_finite() && ttft >= 0.0)
    {
        performance.ttft_ms = None;
        changed.push("performance.ttft_ms");
    }
    changed
}

/// A plausible telemetry sample, for tests.
#[cfg(test)]
pub(crate) fn sample_telemetry() -> AgentTelemetry {
    serde_json::from_value(serde_json::json!({
        "node": "xeon", "sampled_at_ms": 0, "agent_version": "0.1.0",
        "host": { "hostname": "h", "os": "linux", "os_version": "6", "arch": "x86_64",
                  "cpu_brand": "Xeon", "cpu_cores": 12, "apple_silicon": false },
        "system": { "cpu_util_pct": 1.0, "mem_used_mb": 1, "mem_total_mb": 2,
                    "swap_used_mb": 0, "swap_total_mb": 0, "load_1m": 0.0, "load_5m": 0.0, "load_15m": 0.0 },
        "gpu_status": "none",
        "power": { "thermal_throttled": false, "source": "none" },
        "limits": { "max_concurrency": 2, "max_tokens": 2048 },
        "models": [{ "logical": "m", "local": "m", "context_length": 256 }],
        "performance": { "samples": 0, "source": "none", "in_flight": 0 },
    }))
    .expect("telemetry")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_survive_any_split_and_an_endless_line_is_refused() {
        let stream = b"{\"a\":1}\n{\"b\":2}\n";
        for split in 0..stream.len() {
            let mut reader = LineReader::default();
            let mut lines = reader.push(&stream[..split]).expect("short");
            lines.extend(reader.push(&stream[split..]).expect("short"));
            assert_eq!(
                lines,
                [b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()],
                "split at {split}"
            );
        }
        let mut reader = LineReader::default();
        let chunk = vec![b'x'; 64 * 1024];
        let refused = (0..32).map(|_| reader.push(&chunk)).find(Result::is_err);
        assert_eq!(refused, Some(Err(LineTooLong)));
    }

    #[test]
    fn impossible_figures_are_clamped() {
        let mut telemetry = sample_telemetry();
        telemetry.limits.max_concurrency = u32::MAX;
        telemetry.performance.tokens_per_sec = Some(3.4e38);
        telemetry.performance.ttft_ms = Some(f32::NAN);
        let model = telemetry.models[0].clone();
        telemetry.models = vec![model; 2000];
        let changed = clamp(&mut telemetry);
        assert_eq!(
            changed,
            [
                "models",
                "limits.max_concurrency",
                "performance.tokens_per_sec",
                "performance.ttft_ms"
            ]
        );
        assert_eq!(telemetry.models.len(), MAX_MODELS);
        assert_eq!(telemetry.limits.max_concurrency, MAX_CONCURRENCY);
        assert_eq!(telemetry.performance.tokens_per_sec, Some(MAX_TOKENS_PER_SEC));
        assert_eq!(telemetry.performance.ttft_ms, None);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Lines come back whole however the stream is cut; a line never exceeds the bound.
            #[test]
            fn lines_come_back_whole_under_any_chunking(
                lines in prop::collection::vec("[^\n]{0,40}", 0..8),
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            ) {
                let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
                let bytes = text.as_bytes();
                let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
                points.sort_unstable();
                let mut reader = LineReader::default();
                let mut got = Vec::new();
                let mut from = 0;
                for at in points.into_iter().chain([bytes.len()]) {
                    got.extend(reader.push(&bytes[from..at]).expect("short lines"));
                    from = at;
                }
                let expected: Vec<Vec<u8>> = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
                prop_assert_eq!(got, expected);
            }

            /// Whatever JSON an agent sends as telemetry, clamping leaves it within bounds.
            #[test]
            fn any_telemetry_that_parses_is_clamped_within_bounds(
                concurrency in any::<u32>(),
                speed in any::<f32>(),
                models in 0usize..400,
                labels in 0usize..100,
            ) {
                let mut telemetry = sample_telemetry();
                telemetry.limits.max_concurrency = concurrency;
                telemetry.performance.tokens_per_sec = Some(speed);
                let model = telemetry.models.first().cloned();
                if let Some(model) = model {
                    telemetry.models = vec![model; models];
                }
                telemetry.labels = (0..labels).map(|i| (format!("k{i}"), "v".to_owned())).collect();
                clamp(&mut telemetry);
                prop_assert!(telemetry.models.len() <= MAX_MODELS);
                prop_assert!(telemetry.labels.len() <= MAX_LABELS);
                prop_assert!(telemetry.limits.max_concurrency <= MAX_CONCURRENCY);
                prop_assert!(telemetry
                    .performance
                    .tokens_per_sec
                    .is_none_or(|s| (0.0..=MAX_TOKENS_PER_SEC).contains(&s)));
            }
        }
    }
}
