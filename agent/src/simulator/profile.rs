//! The seed machines as the simulator models them: batch size, time to first token,
//! decode speed per model size, the M4's heat, and the declared power draw.

/// Heat model of a laptop: degrees added per generated token, cooling per second towards
/// `idle_c`, and the slowdown once `throttle_c` is reached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thermal {
    pub idle_c: f32,
    pub heat_per_token_c: f32,
    pub cooling_per_s_c: f32,
    pub throttle_c: f32,
    /// Speed multiplier while throttled.
    pub throttled_speed: f32,
}

/// One seed machine, as the seed document describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: &'static str,
    /// Requests generated at full speed at once; more wait.
    pub batch: u32,
    pub ttft_ms: f32,
    /// (model size in billions of parameters, tokens/s) for one request, ascending size.
    pub speeds: Vec<(f32, f32)>,
    /// (model size in billions of parameters, prompt tokens/s) of prefill, ascending size.
    pub prefill: Vec<(f32, f32)>,
    /// Prompt tokens the runtime keeps in its prefix cache (KV memory left by the model).
    pub cache_tokens: u32,
    pub thermal: Option<Thermal>,
    /// The seed's whole-machine draw under load and idle, in watts (0: not given).
    pub watts: f32,
    pub idle_watts: f32,
}

impl Profile {
    /// M4 MacBook Pro: 7B ~15-20 tok/s, 13B ~8-12; batch 1; throttles at ~82 °C.
    pub fn m4() -> Self {
        Self {
            name: "m4",
            batch: 1,
            ttft_ms: 350.0,
            speeds: vec![(7.0, 18.0), (13.0, 10.0)],
            prefill: vec![(7.0, 450.0), (13.0, 230.0)],
            cache_tokens: 32_768,
            thermal: Some(Thermal {
                idle_c: 45.0,
                heat_per_token_c: 0.02,
                cooling_per_s_c: 0.2,
                throttle_c: 82.0,
                throttled_speed: 0.6,
            }),
            // "TDP: ~12W (idle) to ~30W (full load)"
            watts: 30.0,
            idle_watts: 12.0,
        }
    }

    /// Ryzen 3900X + RTX 3090: 7B ~40-50, 32B ~25-35, 70B (quantized) ~15-20; batch 4.
    pub fn ryzen() -> Self {
        Self {
            name: "ryzen",
            batch: 4,
            ttft_ms: 120.0,
            speeds: vec![(7.0, 45.0), (14.0, 38.0), (34.0, 30.0), (70.0, 17.0)],
            prefill: vec![(7.0, 4000.0), (14.0, 2200.0), (34.0, 1000.0), (70.0, 450.0)],
            cache_tokens: 131_072,
            thermal: None,
            // "105W (CPU) + 420W (GPU) = ~525W full load"
            watts: 525.0,
            idle_watts: 0.0,
        }
    }

    /// Xeon E5 + RTX 4060 Ti, Q4: 7B ~18-25, 14B ~10-14; batch 2.
    pub fn xeon() -> Self {
        Self {
            name: "xeon",
            batch: 2,
            ttft_ms: 200.0,
            speeds: vec![(7.0, 22.0), (14.0, 12.0)],
            prefill: vec![(7.0, 2000.0), (14.0, 1000.0)],
            cache_tokens: 49_152,
            thermal: None,
            // "95W (CPU) + 165W (GPU) = ~260W typical"
            watts: 260.0,
            idle_watts: 0.0,
        }
    }

    pub fn named(name: &str) -> Option<Self> {
        match name {
            "m4" => Some(Self::m4()),
            "ryzen" => Some(Self::ryzen()),
            "xeon" => Some(Self::xeon()),
            _ => None,
        }
    }

    /// Tokens/s for a model, from the size in its name (`qwen25-coder-32b` -> 32B).
    pub fn speed_for(&self, model: &str) -> f32 {
        by_size(&self.speeds, model).unwrap_or(20.0)
    }

    /// Prompt tokens/s of prefill for a model, from the size in its name.
    pub fn prefill_for(&self, model: &str) -> f32 {
        by_size(&self.prefill, model).unwrap_or(1000.0)
    }

    /// Seconds from a free slot to the first token: the fixed start plus the prefill of the
    /// prompt's tokens that are not cached.
    pub fn first_token_s(&self, model: &str, prompt_tokens: u32, cached_tokens: u32) -> f32 {
        let uncached = prompt_tokens.saturating_sub(cached_tokens) as f32;
        self.ttft_ms / 1000.0 + uncached / self.prefill_for(model)
    }
}

/// The figure for the smallest size class that holds the model's size (the largest class
/// for larger models; 7B when the name gives no size).
fn by_size(figures: &[(f32, f32)], model: &str) -> Option<f32> {
    let size = model_size_b(model).unwrap_or(7.0);
    figures
        .iter()
        .find(|(limit, _)| size <= *limit)
        .or(figures.last())
        .map(|(_, figure)| *figure)
}

/// `32` from `qwen25-coder-32b`, `7` from `Qwen2.5-Coder-7B-Instruct`.
pub fn model_size_b(model: &str) -> Option<f32> {
    let lower = model.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    (0..bytes.len()).filter(|&i| bytes[i] == b'b').find_map(|end| {
        let start = lower[..end]
            .rfind(|c: char| !(c.is_ascii_digit() || c == '.'))
            .map(|i| i + 1)
            .unwrap_or(0);
        let boundary = end + 1 == bytes.len() || !bytes[end + 1].is_ascii_alphanumeric();
        (start < end && boundary)
            .then(|| lower[start..end].parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_sizes_come_from_names() {
        assert_eq!(model_size_b("qwen25-coder-32b"), Some(32.0));
        assert_eq!(model_size_b("Qwen/Qwen2.5-Coder-7B-Instruct"), Some(7.0));
        assert_eq!(model_size_b("llama2-70b-q4"), Some(70.0));
        assert_eq!(model_size_b("phi-3-mini"), None);
        assert_eq!(Profile::ryzen().speed_for("qwen25-coder-32b"), 30.0);
        assert_eq!(Profile::xeon().speed_for("mistral-7b"), 22.0);
    }
}
