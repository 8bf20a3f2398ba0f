//! A simulated runtime that behaves like one of the seed machines: its speeds per model
//! size, time to first token, batch size (requests beyond it wait), and, for the M4, heat
//! that builds with sustained generation and throttles it near 82 °C. Every reply starts
//! with `[simulated <machine>]` and the runtime reports itself as simulated: it exists for
//! the demo, routing tests and what-if studies, never in place of a real runtime.

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::{
    ChatRequest, CompletionRequest, DriverError, EmbedRequest, Event, EventStream, RuntimeDriver, RuntimeProbe,
    Sampling, Usage,
};
use crate::config::RuntimeKind;

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
        let size = model_size_b(model).unwrap_or(7.0);
        self.speeds
            .iter()
            .find(|(limit, _)| size <= *limit)
            .or(self.speeds.last())
            .map(|(_, s)| *s)
            .unwrap_or(20.0)
    }
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

#[derive(Debug)]
struct Heat {
    celsius: f32,
    at: Instant,
}

#[derive(Debug)]
pub struct SimulatedDriver {
    profile: Profile,
    models: Vec<String>,
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicU32>,
    heat: Arc<Mutex<Heat>>,
    /// Real time per simulated second: 1.0 in the demo, smaller in tests.
    time_scale: f32,
}

impl SimulatedDriver {
    pub fn new(profile: Profile, models: Vec<String>) -> Self {
        Self::with_time_scale(profile, models, 1.0)
    }

    pub fn with_time_scale(profile: Profile, models: Vec<String>, time_scale: f32) -> Self {
        let idle = profile.thermal.map(|t| t.idle_c).unwrap_or(40.0);
        Self {
            slots: Arc::new(Semaphore::new(profile.batch as usize)),
            waiting: Arc::new(AtomicU32::new(0)),
            heat: Arc::new(Mutex::new(Heat {
                celsius: idle,
                at: Instant::now(),
            })),
            profile,
            models,
            time_scale: time_scale.max(0.0),
        }
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Current temperature and whether it throttles, after cooling since the last update.
    pub fn thermal_state(&self) -> (f32, bool) {
        let Some(thermal) = self.profile.thermal else {
            return (40.0, false);
        };
        let mut heat = self.heat.lock();
        let now = Instant::now();
        let elapsed = now.duration_since(heat.at).as_secs_f32() / self.time_scale.max(1e-6);
        heat.celsius = (heat.celsius - thermal.cooling_per_s_c * elapsed).max(thermal.idle_c);
        heat.at = now;
        (heat.celsius, heat.celsius >= thermal.throttle_c)
    }

    #[cfg(test)]
    fn add_heat(&self, tokens: u32) {
        if let Some(thermal) = self.profile.thermal {
            self.thermal_state();
            self.heat.lock().celsius += thermal.heat_per_token_c * tokens as f32;
        }
    }

    fn generate(&self, model: &str, prompt_text: &str, sampling: &Sampling) -> Result<EventStream, DriverError> {
        if !self.models.iter().any(|m| m == model) {
            return Err(DriverError::ModelNotFound(model.to_owned()));
        }
        let max_tokens = sampling.max_tokens.unwrap_or(128).max(1);
        let speed = self.profile.speed_for(model);
        let ttft = Duration::from_secs_f32(self.profile.ttft_ms / 1000.0 * self.time_scale);
        let prompt_tokens = (prompt_text.len() / 4).max(1) as u32;
        let mut seed = prompt_text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        let slots = self.slots.clone();
        let waiting = self.waiting.clone();
        let name = self.profile.name;
        let driver = SimulatedHandle {
            heat: self.heat.clone(),
            profile: self.profile.clone(),
            time_scale: self.time_scale,
        };
        let stream = async_stream::try_stream! {
            waiting.fetch_add(1, Ordering::Relaxed);
            let permit = slots.acquire_owned().await;
            waiting.fetch_sub(1, Ordering::Relaxed);
            let _permit = permit.map_err(|_| DriverError::Unsupported("simulated runtime shut down".into()))?;
            // A zero time scale generates at once: no timer (tokio's sleeps round up to 1 ms).
            let instant = driver.time_scale == 0.0;
            if !instant {
                tokio::time::sleep(ttft).await;
            }
            yield Event::Delta(format!("[simulated {name}]"));
            // Each token is due at a point in time, not after a fixed sleep: sleeps round up
            // to the timer's millisecond, which at small time scales would slow generation
            // (and the heat it makes) several times over.
            let mut due = tokio::time::Instant::now();
            for _ in 1..max_tokens {
                let throttled = driver.tick(1);
                let effective = if throttled { speed * driver.throttled_speed() } else { speed };
                if !instant {
                    due += Duration::from_secs_f32(driver.time_scale / effective);
                    tokio::time::sleep_until(due).await;
                }
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                yield Event::Delta(format!(" {}", WORDS[(seed >> 33) as usize % WORDS.len()]));
            }
            yield Event::Done { finish_reason: "length".to_owned(), usage: Usage { prompt_tokens, completion_tokens: max_tokens } };
        };
        Ok(Box::pin(stream))
    }
}

/// What a running generation needs of the driver.
struct SimulatedHandle {
    heat: Arc<Mutex<Heat>>,
    profile: Profile,
    time_scale: f32,
}

impl SimulatedHandle {
    /// Add a token's heat; true while throttled.
    fn tick(&self, tokens: u32) -> bool {
        let Some(thermal) = self.profile.thermal else {
            return false;
        };
        let mut heat = self.heat.lock();
        let now = Instant::now();
        let elapsed = now.duration_since(heat.at).as_secs_f32() / self.time_scale.max(1e-6);
        heat.celsius = (heat.celsius - thermal.cooling_per_s_c * elapsed).max(thermal.idle_c)
            + thermal.heat_per_token_c * tokens as f32;
        heat.at = now;
        heat.celsius >= thermal.throttle_c
    }

    fn throttled_speed(&self) -> f32 {
        self.profile.thermal.map(|t| t.throttled_speed).unwrap_or(1.0)
    }
}

const WORDS: &[&str] = &[
    "route", "token", "batch", "queue", "model", "node", "policy", "latency", "stream", "cache", "tensor", "prompt",
    "reply", "switch", "yard", "signal", "rail", "engine", "carriage", "depot",
];

#[async_trait::async_trait]
impl RuntimeDriver for SimulatedDriver {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Simulated
    }

    fn base_url(&self) -> String {
        format!("simulated://{}", self.profile.name)
    }

    async fn models(&self) -> Result<Vec<String>, DriverError> {
        Ok(self.models.clone())
    }

    async fn chat(&self, request: ChatRequest) -> Result<EventStream, DriverError> {
        let text: String = request
            .messages
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        self.generate(&request.model, &text, &request.sampling)
    }

    async fn complete(&self, request: CompletionRequest) -> Result<EventStream, DriverError> {
        self.generate(&request.model, &request.prompt, &request.sampling)
    }

    async fn embed(&self, request: EmbedRequest) -> Result<Vec<Vec<f32>>, DriverError> {
        if !self.models.iter().any(|m| m == &request.model) {
            return Err(DriverError::ModelNotFound(request.model));
        }
        Ok(request
            .input
            .iter()
            .map(|text| {
                let mut h = text
                    .bytes()
                    .fold(0x811c_9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193));
                (0..16)
                    .map(|_| {
                        h = h.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        (h >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                    })
                    .collect()
            })
            .collect())
    }

    async fn probe(&self) -> RuntimeProbe {
        let running = self.profile.batch - self.slots.available_permits() as u32;
        RuntimeProbe {
            healthy: true,
            error: None,
            running: Some(running),
            waiting: Some(self.waiting.load(Ordering::Relaxed)),
            kv_cache_usage_pct: None,
            thermal_throttled: Some(self.thermal_state().1),
            loaded: self
                .models
                .iter()
                .map(|name| switchyard_protocol::LoadedModel {
                    name: name.clone(),
                    vram_mb: None,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::{ChatMessage, collect};

    #[test]
    fn model_sizes_come_from_names() {
        assert_eq!(model_size_b("qwen25-coder-32b"), Some(32.0));
        assert_eq!(model_size_b("Qwen/Qwen2.5-Coder-7B-Instruct"), Some(7.0));
        assert_eq!(model_size_b("llama2-70b-q4"), Some(70.0));
        assert_eq!(model_size_b("phi-3-mini"), None);
        assert_eq!(Profile::ryzen().speed_for("qwen25-coder-32b"), 30.0);
        assert_eq!(Profile::xeon().speed_for("mistral-7b"), 22.0);
    }

    fn chat(model: &str, max_tokens: u32) -> ChatRequest {
        ChatRequest {
            model: model.to_owned(),
            messages: vec![ChatMessage {
                role: "user".into(),
                content: "hello".into(),
            }],
            sampling: Sampling {
                max_tokens: Some(max_tokens),
                ..Default::default()
            },
        }
    }

    #[tokio::test]
    async fn replies_are_labelled_simulated_and_run_to_max_tokens() {
        let driver = SimulatedDriver::with_time_scale(Profile::xeon(), vec!["q".into()], 0.001);
        let (text, finish, usage) = collect(driver.chat(chat("q", 8)).await.expect("starts"))
            .await
            .expect("completes");
        assert!(text.starts_with("[simulated xeon]"), "{text}");
        assert_eq!(finish, "length");
        assert_eq!(usage.completion_tokens, 8);
        assert!(matches!(
            driver.chat(chat("other", 8)).await,
            Err(DriverError::ModelNotFound(_))
        ));
    }

    #[tokio::test]
    async fn requests_beyond_the_batch_size_wait() {
        let driver = Arc::new(SimulatedDriver::with_time_scale(Profile::m4(), vec!["q".into()], 0.01));
        let first = driver.chat(chat("q", 40)).await.expect("starts");
        let second = driver.chat(chat("q", 40)).await.expect("starts");
        let a = tokio::spawn(collect(first));
        let b = tokio::spawn(collect(second));
        let mut saw_waiting = false;
        for _ in 0..200 {
            let probe = driver.probe().await;
            if probe.running == Some(1) && probe.waiting == Some(1) {
                saw_waiting = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(saw_waiting, "the m4 runs one request at a time; the second must wait");
        a.await.expect("join").expect("a");
        b.await.expect("join").expect("b");
    }

    #[test]
    fn sustained_generation_heats_the_m4_until_it_throttles() {
        let driver = SimulatedDriver::with_time_scale(Profile::m4(), vec!["q".into()], 1.0);
        assert!(!driver.thermal_state().1);
        driver.add_heat(2000); // 45 C + 2000 x 0.02 = 85 C
        let (celsius, throttled) = driver.thermal_state();
        assert!(throttled, "{celsius}");
        let ryzen = SimulatedDriver::new(Profile::ryzen(), vec![]);
        ryzen.add_heat(100_000);
        assert!(!ryzen.thermal_state().1, "the desktops do not throttle");
    }
}
