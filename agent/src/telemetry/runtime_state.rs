//! The runtime's own view of its work, read from the endpoints each runtime exposes:
//! vLLM's Prometheus `/metrics`, llama.cpp's `/metrics` or `/slots`, Ollama's `/api/ps`,
//! and `/v1/models` for OpenAI-compatible servers.

/// Counters parsed from a Prometheus text exposition.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct QueueMetrics {
    pub running: Option<f64>,
    pub waiting: Option<f64>,
    /// 0-100.
    pub kv_cache_usage_pct: Option<f64>,
}

/// Sum every sample of `name` (across label sets) in a Prometheus text exposition.
pub fn prometheus_sum(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // The name must end here: `{labels} value` or ` value`.
        let value = match rest.chars().next() {
            Some('{') => rest.split_once('}').map(|(_, v)| v),
            Some(' ') => Some(rest),
            _ => None,
        };
        let Some(value) = value
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        *total.get_or_insert(0.0) += value;
    }
    total
}

/// vLLM: `vllm:num_requests_running`, `vllm:num_requests_waiting`, and
/// `vllm:kv_cache_usage_perc` (or the older `vllm:gpu_cache_usage_perc`), a 0-1 ratio.
pub fn parse_vllm_metrics(text: &str) -> QueueMetrics {
    let cache =
        prometheus_sum(text, "vllm:kv_cache_usage_perc").or_else(|| prometheus_sum(text, "vllm:gpu_cache_usage_perc"));
    QueueMetrics {
        running: prometheus_sum(text, "vllm:num_requests_running"),
        waiting: prometheus_sum(text, "vllm:num_requests_waiting"),
        kv_cache_usage_pct: cache.map(|ratio| ratio * 100.0),
    }
}

/// llama.cpp's server (`--metrics`): `llamacpp:requests_processing`,
/// `llamacpp:requests_deferred`, `llamacpp:kv_cache_usage_ratio`.
pub fn parse_llama_cpp_metrics(text: &str) -> QueueMetrics {
    QueueMetrics {
        running: prometheus_sum(text, "llamacpp:requests_processing"),
        waiting: prometheus_sum(text, "llamacpp:requests_deferred"),
        kv_cache_usage_pct: prometheus_sum(text, "llamacpp:kv_cache_usage_ratio").map(|r| r * 100.0),
    }
}

/// llama.cpp's `/slots`: a JSON array of slots, each with `is_processing`.
pub fn parse_llama_cpp_slots(json: &serde_json::Value) -> Option<u32> {
    let slots = json.as_array()?;
    Some(
        slots
            .iter()
            .filter(|s| s["is_processing"].as_bool() == Some(true))
            .count() as u32,
    )
}

/// Ollama's `/api/ps`: `{"models": [{"name", "size_vram", ...}]}`.
pub fn parse_ollama_ps(json: &serde_json::Value) -> Vec<switchyard_protocol::LoadedModel> {
    json["models"]
        .as_array()
        .map(|models| {
            models
                .iter()
                .filter_map(|m| {
                    Some(switchyard_protocol::LoadedModel {
                        name: m["name"].as_str().or_else(|| m["model"].as_str())?.to_owned(),
                        vram_mb: m["size_vram"].as_u64().map(|b| b / (1024 * 1024)),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// OpenAI's `/v1/models`: `{"data": [{"id": ...}]}`.
pub fn parse_openai_models(json: &serde_json::Value) -> Vec<String> {
    json["data"]
        .as_array()
        .map(|data| {
            data.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape vLLM 0.10+ exposes (one series per model name and engine).
    const VLLM: &str = r#"# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen2.5-Coder-32B-Instruct-AWQ"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen2.5-Coder-32B-Instruct-AWQ"} 2.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen2.5-Coder-32B-Instruct-AWQ"} 0.42
vllm:num_requests_running_total_fake 99
"#;

    #[test]
    fn vllm_metrics_give_running_waiting_and_cache_usage() {
        let m = parse_vllm_metrics(VLLM);
        assert_eq!(m.running, Some(3.0));
        assert_eq!(m.waiting, Some(2.0));
        assert!((m.kv_cache_usage_pct.unwrap_or_default() - 42.0).abs() < 1e-9);
    }

    #[test]
    fn older_vllm_gpu_cache_metric_is_understood() {
        let m = parse_vllm_metrics("vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.5\n");
        assert_eq!(m.kv_cache_usage_pct, Some(50.0));
        assert_eq!(m.running, None);
    }

    #[test]
    fn llama_cpp_metrics_and_slots() {
        let m = parse_llama_cpp_metrics(
            "llamacpp:requests_processing 1\nllamacpp:requests_deferred 4\nllamacpp:kv_cache_usage_ratio 0.25\n",
        );
        assert_eq!(
            (m.running, m.waiting, m.kv_cache_usage_pct),
            (Some(1.0), Some(4.0), Some(25.0))
        );
        let slots = serde_json::json!([{"id": 0, "is_processing": true}, {"id": 1, "is_processing": false}]);
        assert_eq!(parse_llama_cpp_slots(&slots), Some(1));
    }

    #[test]
    fn ollama_ps_lists_loaded_models_with_vram() {
        let ps = serde_json::json!({"models": [{"name": "qwen2.5-coder:7b", "model": "qwen2.5-coder:7b", "size": 5137025024u64, "size_vram": 5137025024u64}]});
        let loaded = parse_ollama_ps(&ps);
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].name, "qwen2.5-coder:7b");
        assert_eq!(loaded[0].vram_mb, Some(4899));
    }
}
