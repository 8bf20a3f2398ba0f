//! A simulated runtime that behaves like one of the seed machines ([`profile`]): its speeds
//! per model size, time to first token, prefill speed with a prefix cache ([`prefix_cache`];
//! cached prompt tokens cost nothing and are reported in `usage` as vLLM reports them),
//! batch size (requests beyond it wait), and, for the M4, heat that builds with sustained generation and throttles it near 82 °C. Every reply
//! starts with `[simulated <machine>]` and the runtime reports itself as simulated: it exists
//! for the demo, routing tests and what-if studies, never in place of a real runtime. It is
//! served over HTTP on loopback ([`server`]) and the agent relays to it like to any runtime.

pub mod openai;
pub mod prefix_cache;
pub mod profile;
pub mod responses;
pub mod server;

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::driver::{DriverError, Event, EventStream, RuntimeProbe, Sampling, Usage};
use prefix_cache::{BYTES_PER_TOKEN, PrefixCache, block_hashes};
pub use profile::{Profile, Thermal, model_size_b};

#[derive(Debug)]
struct Heat {
    celsius: f32,
    at: Instant,
}

#[derive(Debug)]
pub struct Simulator {
    profile: Profile,
    models: Vec<String>,
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicU32>,
    heat: Arc<Mutex<Heat>>,
    cache: Arc<Mutex<PrefixCache>>,
    /// The conversations behind its Responses API's answers.
    pub responses: responses::StoredResponses,
    /// Real time per simulated second: 1.0 in the demo, smaller in tests.
    time_scale: f32,
}

impl Simulator {
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
            cache: Arc::new(Mutex::new(PrefixCache::new(profile.cache_tokens))),
            responses: responses::StoredResponses::default(),
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

    pub fn generate(&self, model: &str, prompt_text: &str, sampling: &Sampling) -> Result<EventStream, DriverError> {
        self.generate_from(model, prompt_text, sampling, None)
    }

    /// Generate for `prompt_text`; with `prefill`, continue that partial answer instead of
    /// starting one: no label, and the words the same prompt would have gone on with.
    fn generate_from(
        &self,
        model: &str,
        prompt_text: &str,
        sampling: &Sampling,
        prefill: Option<&str>,
    ) -> Result<EventStream, DriverError> {
        if !self.models.iter().any(|m| m == model) {
            return Err(DriverError::ModelNotFound(model.to_owned()));
        }
        let max_tokens = sampling.max_tokens.unwrap_or(128).max(1);
        let speed = self.profile.speed_for(model);
        let prompt_tokens = (prompt_text.len() / BYTES_PER_TOKEN).max(1) as u32;
        let blocks = block_hashes(prompt_text.as_bytes());
        let cache = self.cache.clone();
        let model = model.to_owned();
        let mut seed = prompt_text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        // The words a partial answer already holds (after its label, when it has one).
        let words_done = prefill.map(|text| {
            let after_label = match text.strip_prefix("[simulated ") {
                Some(rest) => rest.split_once(']').map_or("", |(_, words)| words),
                None => text,
            };
            after_label.split_whitespace().count()
        });
        for _ in 0..words_done.unwrap_or(0) {
            seed = next_seed(seed);
        }
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
            let cached_tokens = cache.lock().cached_tokens(&blocks, prompt_tokens);
            let first_token_s = driver.profile.first_token_s(&model, prompt_tokens, cached_tokens);
            // A zero time scale generates at once: no timer (tokio's sleeps round up to 1 ms).
            let instant = driver.time_scale == 0.0;
            if !instant {
                tokio::time::sleep(Duration::from_secs_f32(first_token_s * driver.time_scale)).await;
            }
            cache.lock().insert(&blocks);
            // A continued answer has its label already; a new one starts with it.
            let words = if words_done.is_some() { max_tokens } else { max_tokens - 1 };
            if words_done.is_none() {
                yield Event::Delta(format!("[simulated {name}]"));
            }
            // Each token is due at a point in time, not after a fixed sleep: sleeps round up
            // to the timer's millisecond, which at small time scales would slow generation
            // (and the heat it makes) several times over.
            let mut due = tokio::time::Instant::now();
            for _ in 0..words {
                let throttled = driver.tick(1);
                let effective = if throttled { speed * driver.throttled_speed() } else { speed };
                if !instant {
                    due += Duration::from_secs_f32(driver.time_scale / effective);
                    tokio::time::sleep_until(due).await;
                }
                seed = next_seed(seed);
                yield Event::Delta(format!(" {}", WORDS[(seed >> 33) as usize % WORDS.len()]));
            }
            yield Event::Done { finish_reason: "length".to_owned(), usage: Usage { prompt_tokens, completion_tokens: max_tokens, cached_tokens } };
        };
        Ok(Box::pin(stream))
    }
}

/// The generator's next state: one word of simulated text per step.
fn next_seed(seed: u64) -> u64 {
    seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407)
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

impl Simulator {
    /// A chat: its messages' text, one per line, as the prompt.
    /// A chat generation. A conversation that ends with an assistant message is a prefill,
    /// as vLLM's `continue_final_message` and llama.cpp's assistant prefill treat it: the
    /// answer continues that message (a stream continued on this node after its first node
    /// was lost).
    pub fn chat(&self, request: &crate::driver::ChatRequest) -> Result<EventStream, DriverError> {
        let (messages, prefill) = match request.messages.split_last() {
            Some((last, earlier)) if last.role == "assistant" && !last.content.is_empty() => {
                (earlier, Some(last.content.as_str()))
            }
            _ => (request.messages.as_slice(), None),
        };
        let text: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
        self.generate_from(&request.model, &text.join("\n"), &request.sampling, prefill)
    }

    pub fn models(&self) -> &[String] {
        &self.models
    }

    pub fn serves(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == model)
    }

    /// Sixteen deterministic numbers per input, from its bytes.
    pub fn embed(&self, model: &str, input: &[String]) -> Result<Vec<Vec<f32>>, DriverError> {
        if !self.serves(model) {
            return Err(DriverError::ModelNotFound(model.to_owned()));
        }
        Ok(input
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

    /// Its queue, heat and models, as a runtime's own endpoints would tell them.
    pub fn probe(&self) -> RuntimeProbe {
        let running = self.profile.batch - self.slots.available_permits() as u32;
        RuntimeProbe {
            healthy: true,
            error: None,
            running: Some(running),
            waiting: Some(self.waiting.load(Ordering::Relaxed)),
            kv_cache_usage_pct: Some(self.cache.lock().usage_pct()),
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
    use crate::driver::collect;

    fn hello() -> Sampling {
        Sampling {
            max_tokens: Some(8),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn replies_are_labelled_simulated_and_run_to_max_tokens() {
        let simulator = Simulator::with_time_scale(Profile::xeon(), vec!["q".into()], 0.001);
        let (text, finish, usage) = collect(simulator.generate("q", "hello", &hello()).expect("starts"))
            .await
            .expect("completes");
        assert!(text.starts_with("[simulated xeon]"), "{text}");
        assert_eq!(finish, "length");
        assert_eq!(usage.completion_tokens, 8);
        assert!(matches!(
            simulator.generate("other", "hello", &hello()),
            Err(DriverError::ModelNotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_final_assistant_message_is_continued_with_the_words_the_answer_would_have_had() {
        use crate::driver::{ChatMessage, ChatRequest};
        let simulator = Simulator::with_time_scale(Profile::xeon(), vec!["q".into()], 0.0);
        let chat = |messages: Vec<ChatMessage>, max_tokens| ChatRequest {
            model: "q".into(),
            messages,
            sampling: Sampling {
                max_tokens: Some(max_tokens),
                ..Default::default()
            },
        };
        let user = ChatMessage {
            role: "user".into(),
            content: "tell me a story".into(),
        };
        let (whole, _, _) = collect(simulator.chat(&chat(vec![user.clone()], 12)).expect("starts"))
            .await
            .expect("completes");
        // Cut after the label and four words: the rest comes from the prefill.
        let cut: String = whole
            .split_inclusive(' ')
            .take(6)
            .collect::<String>()
            .trim_end()
            .to_owned();
        let prefill = ChatMessage {
            role: "assistant".into(),
            content: cut.clone(),
        };
        let (rest, _, usage) = collect(simulator.chat(&chat(vec![user, prefill], 7)).expect("starts"))
            .await
            .expect("completes");
        assert!(!rest.contains("[simulated"), "{rest}");
        assert_eq!(format!("{cut}{rest}"), whole);
        assert_eq!(usage.completion_tokens, 7);
    }

    #[tokio::test]
    async fn a_repeated_prefix_is_reported_cached_as_vllm_reports_it() {
        let simulator = Simulator::with_time_scale(Profile::ryzen(), vec!["q".into()], 0.0);
        let system = "You are a careful coding agent. ".repeat(200); // 6400 bytes, 1600 tokens
        let turn = |question: &str| {
            let prompt = format!("{system}\n{question}");
            collect(simulator.generate("q", &prompt, &hello()).expect("starts"))
        };
        let (_, _, cold) = turn("What does main do?").await.expect("cold");
        assert_eq!((cold.prompt_tokens, cold.cached_tokens), (1604, 0));
        let (_, _, warm) = turn("And what does it return?").await.expect("warm");
        assert_eq!(
            warm.cached_tokens, 1600,
            "the system prompt's 100 full blocks: {warm:?}"
        );
        let probe = simulator.probe();
        assert!(probe.kv_cache_usage_pct.is_some_and(|p| p > 0.0), "{probe:?}");
        // Only the uncached part is prefilled: 1604 tokens at the ryzen's 4200 tok/s (and
        // slower as the context grows), or 6.
        let profile = Profile::ryzen();
        let cold_s = profile.first_token_s("q", 1604, 0);
        let warm_s = profile.first_token_s("q", 1606, 1600);
        assert!(cold_s - warm_s > 1598.0 / 4200.0, "{cold_s} {warm_s}");
        assert!(warm_s < profile.ttft_ms / 1000.0 + 0.01, "{warm_s}");
    }

    #[tokio::test]
    async fn requests_beyond_the_batch_size_wait() {
        let simulator = Arc::new(Simulator::with_time_scale(Profile::m4(), vec!["q".into()], 0.01));
        let long = Sampling {
            max_tokens: Some(40),
            ..Default::default()
        };
        let first = simulator.generate("q", "hello", &long).expect("starts");
        let second = simulator.generate("q", "hello", &long).expect("starts");
        let a = tokio::spawn(collect(first));
        let b = tokio::spawn(collect(second));
        let mut saw_waiting = false;
        for _ in 0..200 {
            let probe = simulator.probe();
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
        let simulator = Simulator::with_time_scale(Profile::m4(), vec!["q".into()], 1.0);
        assert!(!simulator.thermal_state().1);
        simulator.add_heat(2000); // 45 C + 2000 x 0.02 = 85 C
        let (celsius, throttled) = simulator.thermal_state();
        assert!(throttled, "{celsius}");
        let ryzen = Simulator::new(Profile::ryzen(), vec![]);
        ryzen.add_heat(100_000);
        assert!(!ryzen.thermal_state().1, "the desktops do not throttle");
    }
}
