//! Telemetry: GPUs (NVML), CPU and memory (sysinfo), battery and thermal state, and the
//! runtime's own queue and models, sampled on its own task and published through a `watch`
//! channel that the agent's API and (later) its controller link read.

pub mod energy;
pub mod gpu;
pub mod power;
pub mod runtime_state;
pub mod system;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchyard_protocol::{
    AgentTelemetry, GpuTelemetry, LoadedModel, ModelLoadState, ModelState, ModelVariant, NodeLimits, Performance,
    PowerTelemetry, RuntimeTelemetry, SupervisorState,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::driver::RuntimeDriver;
use crate::performance::PerformanceTracker;

/// The watts to count where no GPU measures: the operator's `[energy]`, else the seed's
/// figure for a simulated machine.
fn declared_power(config: Option<&AgentConfig>) -> Option<energy::Declared> {
    let config = config?;
    if let Some(declared) = &config.energy {
        return Some(energy::Declared {
            watts: declared.watts,
            idle_watts: declared.idle_watts,
            source: switchyard_protocol::EnergySource::Declared,
            time_scale: 1.0,
        });
    }
    let profile = config.runtime.profile.as_deref()?;
    let profile = crate::simulator::Profile::named(profile)?;
    (config.runtime.kind == crate::config::RuntimeKind::Simulated).then_some(energy::Declared {
        watts: profile.watts,
        idle_watts: profile.idle_watts,
        source: switchyard_protocol::EnergySource::SeedFigure,
        time_scale: config.runtime.time_scale.unwrap_or(1.0),
    })
}

/// How often the power state (battery, heat, sleep) is checked between samples.
pub const POWER_CHECK: Duration = Duration::from_millis(250);

pub struct Sampler {
    config: Option<Arc<AgentConfig>>,
    driver: Option<Arc<dyn RuntimeDriver>>,
    system: system::SystemProbe,
    gpus: gpu::GpuProbe,
    power: power::PowerProbe,
    performance: Arc<PerformanceTracker>,
    supervisor: Option<watch::Receiver<SupervisorState>>,
    models: Option<Arc<crate::models::ModelManager>>,
    energy: energy::EnergyMeter,
    kv_events: Option<Arc<crate::kv_events::KvEvents>>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("gpus", &self.gpus)
            .finish_non_exhaustive()
    }
}

impl Sampler {
    pub fn new(
        config: Option<Arc<AgentConfig>>,
        driver: Option<Arc<dyn RuntimeDriver>>,
        performance: Arc<PerformanceTracker>,
        supervisor: Option<watch::Receiver<SupervisorState>>,
    ) -> Self {
        let energy = energy::EnergyMeter::new(declared_power(config.as_deref()));
        Self {
            config,
            driver,
            system: system::SystemProbe::new(),
            gpus: gpu::GpuProbe::new(),
            power: power::PowerProbe::default(),
            performance,
            supervisor,
            models: None,
            energy,
            kv_events: None,
        }
    }

    /// The switch `POST /power/sleep` and `/power/wake` turn.
    pub fn sleep_switch(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.power.sleeping.clone()
    }

    /// Report the copy of the runtime's prefix cache kept from its KV-cache events (and
    /// empty it whenever the runtime is unhealthy: a runtime that comes back starts cold).
    pub fn set_kv_events(&mut self, kv_events: Option<Arc<crate::kv_events::KvEvents>>) {
        self.kv_events = kv_events;
    }

    /// Report the models the agent starts itself (and their memory budget).
    pub fn set_models(&mut self, models: Option<Arc<crate::models::ModelManager>>) {
        self.models = models;
    }

    pub async fn sample(&mut self) -> AgentTelemetry {
        let system = self.system.sample();
        let gpus = self.gpus.sample();
        let mut power = self.power.sample();
        let performance = self.performance.snapshot();
        let now = std::time::Instant::now();
        let energy = self
            .energy
            .sample(now, &gpus, self.performance.busy_seconds(now), performance.tokens_total);
        let model_states = self.models.as_ref().map(|m| m.states()).unwrap_or_default();
        let mut runtime = self.runtime_telemetry(&model_states, &performance, &mut power).await;
        if let (Some(runtime), Some(kv)) = (runtime.as_mut(), &self.kv_events) {
            if !runtime.healthy {
                kv.forget("the runtime is unhealthy");
            }
            runtime.kv_events = Some(kv.figures());
        }
        if heat_throttled(&gpus) {
            power.thermal_throttled = true;
        }
        let loaded: Vec<String> = runtime
            .as_ref()
            .map(|r| r.loaded_models.iter().map(|m| m.name.clone()).collect())
            .unwrap_or_default();
        let config = self.config.as_deref();
        AgentTelemetry {
            node: config
                .map(|c| c.node.clone())
                .unwrap_or_else(|| self.system.host().hostname),
            sampled_at_ms: unix_millis(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            link_protocol: switchyard_protocol::LINK_PROTOCOL,
            labels: config
                .map(|c| c.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            host: self.system.host(),
            system,
            gpus,
            gpu_status: self.gpus.status().to_owned(),
            power,
            runtime,
            limits: NodeLimits {
                max_concurrency: config.map(|c| c.max_concurrency).unwrap_or(0),
                max_tokens: config.map(|c| c.max_tokens).unwrap_or(0),
            },
            models: config
                .map(|c| variants_with_load_times(c, &loaded, &model_states))
                .unwrap_or_default(),
            performance,
            memory_budget_mb: self.models.as_ref().map(|m| m.budget_mb()),
            model_states,
            energy,
        }
    }

    /// The runtime's telemetry (`None` without a config and a driver); marks `power`
    /// throttled when the runtime reports thermal throttling.
    async fn runtime_telemetry(
        &self,
        model_states: &[ModelState],
        performance: &Performance,
        power: &mut PowerTelemetry,
    ) -> Option<RuntimeTelemetry> {
        let ready = ready_models(model_states);
        let per_model_only =
            self.models.is_some() && self.config.as_ref().is_some_and(|c| c.runtime.base_url.is_none());
        match (&self.config, &self.driver) {
            // Every model has its own runtime, started on demand: nothing shared to probe.
            (Some(_), Some(driver)) if per_model_only => Some(per_model_runtime(driver.as_ref(), model_states, ready)),
            (Some(_), Some(driver)) => {
                Some(shared_runtime(driver.as_ref(), self.supervisor.as_ref(), performance, ready, power).await)
            }
            _ => None,
        }
    }

    /// Sample every `interval` until cancelled, publishing each sample; and publish at once
    /// (within [`POWER_CHECK`]) when the machine goes on battery or back, starts or stops
    /// throttling for heat, or is told it is going to sleep or has woken: a laptop leaves
    /// the rotation in well under two seconds, without waiting for the next interval.
    pub async fn run(
        mut self,
        publish: watch::Sender<AgentTelemetry>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut power_check = tokio::time::interval(POWER_CHECK);
        power_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
                _ = power_check.tick() => {
                    let now = self.power.sample();
                    let published = &publish.borrow().power;
                    let changed = (now.on_battery, now.thermal_throttled, now.sleeping)
                        != (published.on_battery, published.thermal_throttled, published.sleeping);
                    if !changed {
                        continue;
                    }
                    tracing::info!(on_battery = ?now.on_battery, thermal_throttled = now.thermal_throttled, sleeping = now.sleeping, "power state changed; telemetry sent at once");
                }
            }
            let sample = self.sample().await;
            publish.send_replace(sample);
        }
    }
}

/// The models the agent started itself that are ready, as the runtime's loaded models.
fn ready_models(model_states: &[ModelState]) -> Vec<LoadedModel> {
    model_states
        .iter()
        .filter(|m| m.state == ModelLoadState::Ready)
        .map(|m| LoadedModel {
            name: m.local.clone(),
            vram_mb: m.memory_mb,
        })
        .collect()
}

/// The runtime's telemetry when every model has its own runtime: nothing shared to probe.
fn per_model_runtime(
    driver: &dyn RuntimeDriver,
    model_states: &[ModelState],
    ready: Vec<LoadedModel>,
) -> RuntimeTelemetry {
    RuntimeTelemetry {
        kind: driver.kind(),
        simulated: false,
        base_url: "(a runtime per model)".to_owned(),
        healthy: true,
        error: None,
        running: model_states.iter().map(|m| m.in_flight).sum(),
        waiting: 0,
        kv_cache_usage_pct: None,
        loaded_models: ready,
        supervisor: None,
        kv_events: None,
    }
}

/// The shared runtime's telemetry from probing it; marks `power` throttled when the runtime
/// reports thermal throttling.
async fn shared_runtime(
    driver: &dyn RuntimeDriver,
    supervisor: Option<&watch::Receiver<SupervisorState>>,
    performance: &Performance,
    ready: Vec<LoadedModel>,
    power: &mut PowerTelemetry,
) -> RuntimeTelemetry {
    let probe = driver.probe().await;
    if probe.thermal_throttled == Some(true) {
        power.thermal_throttled = true;
    }
    RuntimeTelemetry {
        kind: driver.kind(),
        simulated: driver.kind() == crate::config::RuntimeKind::Simulated,
        base_url: driver.base_url(),
        healthy: probe.healthy,
        error: probe.error,
        running: probe.running.unwrap_or(performance.in_flight),
        waiting: probe.waiting.unwrap_or(0),
        kv_cache_usage_pct: probe.kv_cache_usage_pct,
        loaded_models: probe.loaded.into_iter().chain(ready).collect(),
        supervisor: supervisor.map(|rx| rx.borrow().clone()),
        kv_events: None,
    }
}

/// Whether any GPU reports throttling for heat.
fn heat_throttled(gpus: &[GpuTelemetry]) -> bool {
    gpus.iter()
        .any(|g| g.throttle_reasons.iter().any(|r| r.contains("thermal")))
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The config's catalog with `loaded` marked, and each model not loaded given its expected
/// load time from `model_states`.
fn variants_with_load_times(config: &AgentConfig, loaded: &[String], model_states: &[ModelState]) -> Vec<ModelVariant> {
    let mut variants = config.variants(loaded);
    for variant in &mut variants {
        if let Some(state) = model_states.iter().find(|m| m.local == variant.local)
            && !variant.loaded
        {
            variant.load_ms = state.load_ms;
        }
    }
    variants
}
