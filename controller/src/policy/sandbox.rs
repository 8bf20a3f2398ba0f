//! The sandbox every policy runs in: one wasmtime `Engine` (pooling allocator, epoch
//! interruption) with the ticker that drives its deadlines, one `Linker` with the only
//! imports a policy gets (the WIT `host` interface, and a WASI context with no filesystem,
//! network, environment, arguments or real clock), and the per-instance store state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{Policy, v1, v2, v3};
use super::guest_log::{LogBudget, one_line};
use super::guest_output::GuestOutput;

/// How often the epoch advances: the granularity of policy deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Largest linear memory any policy may configure.
pub const MAX_MEMORY_MIB: u32 = 256;

/// State of one policy instance's `Store`.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) output: GuestOutput,
    /// `name@hash` of the policy, for log lines.
    pub(crate) policy_id: Arc<str>,
    /// `host.log` lines allowed, shared by the stage's instances.
    pub(crate) log_budget: Arc<LogBudget>,
    /// `host.log` lines in the current call.
    pub(crate) log_lines_in_call: u32,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("policy_id", &self.policy_id)
            .finish_non_exhaustive()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// `host.log` for each contract's generated `Host` trait: the same levels, the same budget.
macro_rules! host_log {
    ($($contract:ident)::+) => {
        impl $($contract)::+::Host for HostState {
            fn log(&mut self, level: $($contract)::+::LogLevel, message: String) {
                use $($contract)::+::LogLevel;
                let level = match level {
                    LogLevel::Trace => tracing::Level::TRACE,
                    LogLevel::Debug => tracing::Level::DEBUG,
                    LogLevel::Info => tracing::Level::INFO,
                    LogLevel::Warn => tracing::Level::WARN,
                    LogLevel::Error => tracing::Level::ERROR,
                };
                self.guest_log(level, &message);
            }
        }

        impl $($contract)::+::TypesHost for HostState {}
    };
}

host_log!(super::bindings);
host_log!(super::bindings::v3);
host_log!(super::bindings::v2);
host_log!(super::bindings::v1);

impl HostState {
    /// One line of a guest's log, within its budget, tagged with the policy.
    fn guest_log(&mut self, level: tracing::Level, message: &str) {
        let in_call = self.log_lines_in_call;
        self.log_lines_in_call = in_call.saturating_add(1);
        if !self.log_budget.allow(in_call) {
            if in_call == super::guest_log::LINES_PER_CALL {
                let dropped = self.log_budget.dropped();
                tracing::warn!(target: "policy", policy = %self.policy_id, dropped, "policy log over budget; messages dropped");
            }
            return;
        }
        let message = one_line(message);
        let policy = &*self.policy_id;
        match level {
            tracing::Level::TRACE => tracing::trace!(target: "policy", %policy, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(target: "policy", %policy, "{message}"),
            tracing::Level::INFO => tracing::info!(target: "policy", %policy, "{message}"),
            tracing::Level::WARN => tracing::warn!(target: "policy", %policy, "{message}"),
            _ => tracing::error!(target: "policy", %policy, "{message}"),
        }
    }
}

/// The engine, linker and epoch ticker shared by every policy.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<HostState>,
    ticker: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").finish_non_exhaustive()
    }
}

impl Sandbox {
    /// The sandbox; compiled code is cached in `compile_cache` when given (a folder that
    /// cannot be used is logged and compiling goes on without it).
    pub fn new(compile_cache: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let mut pooling = PoolingAllocationConfig::new();
        pooling
            .total_component_instances(512)
            .total_core_instances(1024)
            .total_memories(1024)
            .total_tables(1024)
            .max_memory_size(MAX_MEMORY_MIB as usize * 1024 * 1024);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .wasm_component_model(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        // `SWITCHYARD_POLICY_PERFMAP=1`: write /tmp/perf-PID.map so that `perf` names the
        // policies' compiled functions (for profiling a policy; off by default).
        if std::env::var_os("SWITCHYARD_POLICY_PERFMAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if let Some(dir) = compile_cache {
            match super::compile_cache::cache(dir) {
                Ok(cache) => {
                    config.cache(Some(cache));
                }
                Err(e) => tracing::warn!("{e:#}; policies are compiled at every start"),
            }
        }
        let engine = Engine::new(&config)?;

        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        forbid_waiting(&mut linker)?;
        Policy::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;
        v3::Policy::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;
        v2::Policy::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;
        v1::Policy::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new().name("policy-epoch".into()).spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?
        };
        Ok(Self {
            engine,
            linker,
            ticker: Some(ticker),
            stop,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<HostState> {
        &self.linker
    }

    /// A WASI context with no authority: no preopens, env, args, network or real clocks;
    /// stdout and stderr go to `output`, then to `tracing`.
    pub(crate) fn wasi_ctx(output: &GuestOutput) -> WasiCtx {
        WasiCtx::builder()
            .stdout(output.clone())
            .stderr(output.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .insecure_random_seed(0)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

/// The monotonic clock's subscriptions trap instead of waiting: a guest `sleep` would be a
/// real wait on the host that no epoch deadline interrupts (deadlines count only while Wasm
/// runs). A policy has no business waiting; it faults and the fallback decides.
fn forbid_waiting(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance("wasi:clocks/monotonic-clock@0.2.12")?;
    for name in ["subscribe-duration", "subscribe-instant"] {
        clock.func_new(name, move |_, _, _, _| {
            Err(wasmtime::format_err!(
                "a policy may not wait (`wasi:clocks/monotonic-clock.{name}`): it has no clock and no time to spend"
            ))
        })?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// A clock stopped at the epoch: policies get time only through what `route` passes in.
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}
