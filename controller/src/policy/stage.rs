//! One compiled component of a policy chain: compiled once (`InstancePre`), configured
//! instances kept in a lock-free pool and reused, every call under an epoch deadline and a
//! memory cap. An instance that faults is dropped, never reused. A component of the current
//! contract (0.4.0) receives the cluster once per snapshot version (`set-cluster`) and then
//! only its candidates, as one list of indices, loads and cache estimates; one built for
//! 0.3.0 the same without the cache estimates; one built for 0.2.0 the candidates as a list
//! of records; one built for 0.1.0 its candidate nodes whole.

use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Store, StoreLimitsBuilder, Trap};

use super::bindings::{self, Policy, PolicyPre, v1, v2, v3, wit};
use super::candidates;
use super::fault::PolicyFault;
use super::guest_log::LogBudget;
use super::guest_output::GuestOutput;
use super::prepared::{Candidate, PreparedSnapshot};
use super::sandbox::{HostState, Sandbox};
use super::spec::Limits;

enum Bindings {
    Current(Policy),
    V3(v3::Policy),
    V2(v2::Policy),
    V1(v1::Policy),
}

struct Instance {
    store: Store<HostState>,
    bindings: Bindings,
    /// The snapshot version this instance was last given (`set-cluster`); 0: none.
    seen_version: u64,
    /// The `route` candidates (five numbers each, four for 0.3.0), reused from call to call.
    packed: Vec<u32>,
}

/// `candidates` as the current contract's `route` takes them, into `packed`.
fn pack(candidates: &[Candidate], packed: &mut Vec<u32>) {
    packed.clear();
    for c in candidates {
        packed.extend_from_slice(&[c.node, c.model, c.in_flight, c.queued, c.cached_tokens]);
    }
}

/// `candidates` as the 0.3.0 contract's `route` takes them (no cache estimate).
fn pack_v3(candidates: &[Candidate], packed: &mut Vec<u32>) {
    packed.clear();
    for c in candidates {
        packed.extend_from_slice(&[c.node, c.model, c.in_flight, c.queued]);
    }
}

enum Pre {
    Current(PolicyPre<HostState>),
    V3(v3::PolicyPre<HostState>),
    V2(v2::PolicyPre<HostState>),
    V1(v1::PolicyPre<HostState>),
}

/// One `route` call in the instance's contract version (the cluster handed over first when
/// the instance has not seen this version): the wasm call's error, or the decision checked
/// against the candidates.
fn call_route(
    instance: &mut Instance,
    new_version: bool,
    req: &wit::Request,
    prepared: &PreparedSnapshot,
    candidates: &[Candidate],
) -> wasmtime::Result<Result<switchyard_protocol::Decision, String>> {
    match &instance.bindings {
        Bindings::Current(b) => {
            let mut handed = Ok(());
            if new_version {
                handed = b.call_set_cluster(&mut instance.store, prepared.version(), prepared.nodes());
            }
            pack(candidates, &mut instance.packed);
            handed
                .and_then(|()| b.call_route(&mut instance.store, req, &instance.packed))
                .map(|decision| candidates::decision_from_wit(decision, candidates, prepared))
        }
        Bindings::V3(b) => {
            let mut handed = Ok(());
            if new_version {
                let nodes: Vec<v3::wit::Node> = prepared.nodes().iter().map(bindings::node_to_v3).collect();
                handed = b.call_set_cluster(&mut instance.store, prepared.version(), &nodes);
            }
            pack_v3(candidates, &mut instance.packed);
            handed
                .and_then(|()| b.call_route(&mut instance.store, &bindings::request_to_v3(req), &instance.packed))
                .map(|decision| {
                    candidates::decision_from_wit(bindings::decision_from_v3(decision), candidates, prepared)
                })
        }
        Bindings::V2(b) => {
            let mut handed = Ok(());
            if new_version {
                let nodes: Vec<v2::wit::Node> = prepared.nodes().iter().map(bindings::node_to_v2).collect();
                handed = b.call_set_cluster(&mut instance.store, prepared.version(), &nodes);
            }
            handed
                .and_then(|()| {
                    b.call_route(
                        &mut instance.store,
                        &bindings::request_to_v2(req),
                        &candidates::candidates_to_v2(candidates),
                    )
                })
                .map(|decision| {
                    candidates::decision_from_wit(bindings::decision_from_v2(decision), candidates, prepared)
                })
        }
        Bindings::V1(b) => {
            let nodes = prepared.nodes();
            let whole: Vec<v1::wit::Node> = candidates
                .iter()
                .filter_map(|c| {
                    let node = nodes.get(c.node as usize)?;
                    Some(bindings::node_to_v1(
                        node,
                        node.models.get(c.model as usize)?,
                        c.in_flight,
                        c.queued,
                    ))
                })
                .collect();
            b.call_route(&mut instance.store, &bindings::request_to_v1(req), &whole)
                .map(|decision| Ok(bindings::decision_from_v1(decision)))
        }
    }
}

/// A compiled, configurable stage.
pub struct Stage {
    pre: Pre,
    params_json: String,
    limits: Limits,
    policy_id: Arc<str>,
    warm: ArrayQueue<Instance>,
    log_budget: Arc<LogBudget>,
    /// Set while the policy is not active: instances are dropped after use, not kept warm.
    retired: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage")
            .field("policy_id", &self.policy_id)
            .finish_non_exhaustive()
    }
}

impl Stage {
    /// Compile `bytes` and link it against the sandbox; fails if it is not a component of
    /// the policy world.
    pub fn compile(
        sandbox: &Sandbox,
        component: &Component,
        params_json: String,
        limits: Limits,
        policy_id: Arc<str>,
    ) -> Result<Self, String> {
        let instance_pre = sandbox
            .linker()
            .instantiate_pre(component)
            .map_err(|e| format!("{e:#}"))?;
        let pre = match PolicyPre::new(instance_pre.clone()) {
            Ok(pre) => Pre::Current(pre),
            Err(current) => match v3::PolicyPre::new(instance_pre.clone()) {
                Ok(pre) => Pre::V3(pre),
                Err(_) => match v2::PolicyPre::new(instance_pre.clone()) {
                    Ok(pre) => Pre::V2(pre),
                    Err(_) => match v1::PolicyPre::new(instance_pre) {
                        Ok(pre) => Pre::V1(pre),
                        Err(_) => {
                            return Err(format!(
                                "{current:#} (the component implements none of switchyard:policy@0.4.0, @0.3.0, @0.2.0 or @0.1.0)"
                            ));
                        }
                    },
                },
            },
        };
        Ok(Self {
            pre,
            params_json,
            limits,
            policy_id,
            warm: ArrayQueue::new(limits.warm_instances as usize),
            log_budget: Arc::default(),
            retired: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A new instance with `configure` already called. `Err(Ok(msg))` is the policy's own
    /// refusal of its params; `Err(Err(fault))` is a failure of the sandboxed call.
    fn instantiate(&self) -> Result<Instance, Result<String, PolicyFault>> {
        let output = GuestOutput::default();
        let state = HostState {
            wasi: Sandbox::wasi_ctx(&output),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_mib as usize * 1024 * 1024)
                .instances(64)
                .tables(64)
                .memories(16)
                .trap_on_grow_failure(true)
                .build(),
            output,
            policy_id: self.policy_id.clone(),
            log_budget: self.log_budget.clone(),
            log_lines_in_call: 0,
        };
        let engine = match &self.pre {
            Pre::Current(pre) => pre.engine(),
            Pre::V3(pre) => pre.engine(),
            Pre::V2(pre) => pre.engine(),
            Pre::V1(pre) => pre.engine(),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(self.deadline_ticks());
        let instantiated = match &self.pre {
            Pre::Current(pre) => pre.instantiate(&mut store).map(Bindings::Current),
            Pre::V3(pre) => pre.instantiate(&mut store).map(Bindings::V3),
            Pre::V2(pre) => pre.instantiate(&mut store).map(Bindings::V2),
            Pre::V1(pre) => pre.instantiate(&mut store).map(Bindings::V1),
        };
        let bindings = instantiated.map_err(|e| Err(self.classify(e, PolicyFault::Instantiate)))?;
        store.set_epoch_deadline(self.deadline_ticks());
        let configured = match &bindings {
            Bindings::Current(b) => b.call_configure(&mut store, &self.params_json),
            Bindings::V3(b) => b.call_configure(&mut store, &self.params_json),
            Bindings::V2(b) => b.call_configure(&mut store, &self.params_json),
            Bindings::V1(b) => b.call_configure(&mut store, &self.params_json),
        };
        store.data().output.drain_to_log(&self.policy_id);
        match configured {
            Ok(Ok(())) => Ok(Instance {
                store,
                bindings,
                seen_version: 0,
                packed: Vec::new(),
            }),
            Ok(Err(message)) => Err(Ok(message)),
            Err(e) => Err(Err(self.classify(e, PolicyFault::Trap))),
        }
    }

    /// Instantiate and configure once, to validate the params; the instance is kept warm.
    pub fn configure_check(&self) -> Result<(), String> {
        match self.instantiate() {
            Ok(instance) => {
                let _ = self.warm.push(instance);
                Ok(())
            }
            Err(Ok(refusal)) => Err(refusal),
            Err(Err(fault)) => Err(fault.to_string()),
        }
    }

    /// Release the warm instances (and their memory) and keep none while retired: an
    /// inactive version costs only its compiled code.
    pub fn retire(&self) {
        self.retired.store(true, std::sync::atomic::Ordering::Relaxed);
        while self.warm.pop().is_some() {}
    }

    /// Keep instances warm again (the version became active).
    pub fn revive(&self) {
        self.retired.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Instances kept warm right now.
    pub fn warm_instances(&self) -> usize {
        self.warm.len()
    }

    /// Whether its decisions name their targets (contract 0.1.0) and so need every check
    /// against the snapshot; a later contract's decision is resolved and checked by
    /// candidate index.
    pub fn names_targets(&self) -> bool {
        matches!(self.pre, Pre::V1(_))
    }

    /// The contract the component implements.
    pub fn contract(&self) -> &'static str {
        match self.pre {
            Pre::Current(_) => "switchyard:policy@0.4.0",
            Pre::V3(_) => "switchyard:policy@0.3.0",
            Pre::V2(_) => "switchyard:policy@0.2.0",
            Pre::V1(_) => "switchyard:policy@0.1.0",
        }
    }

    /// Call `route` for `candidates` of `prepared` under the stage's limits (handing the
    /// instance the cluster first when it has not seen this snapshot version).
    pub(crate) fn route(
        &self,
        req: &wit::Request,
        prepared: &PreparedSnapshot,
        candidates: &[Candidate],
    ) -> Result<switchyard_protocol::Decision, PolicyFault> {
        let mut instance = match self.warm.pop() {
            Some(instance) => instance,
            None => self.instantiate().map_err(|e| match e {
                Ok(refusal) => PolicyFault::Trap(format!("configure refused its params on a new instance: {refusal}")),
                Err(fault) => fault,
            })?,
        };
        instance.store.set_epoch_deadline(self.deadline_ticks());
        instance.store.data_mut().log_lines_in_call = 0;
        let new_version = instance.seen_version != prepared.version();
        instance.seen_version = prepared.version();
        let result = call_route(&mut instance, new_version, req, prepared, candidates);
        instance.store.data().output.drain_to_log(&self.policy_id);
        match result {
            Ok(decision) => {
                // A full pool (or a retired stage) just drops the instance.
                if !self.retired.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = self.warm.push(instance);
                }
                decision.map_err(PolicyFault::InvalidDecision)
            }
            Err(e) => Err(self.classify(e, PolicyFault::Trap)),
        }
    }

    fn deadline_ticks(&self) -> u64 {
        let tick_ms = super::sandbox::EPOCH_TICK.as_millis().max(1) as u64;
        (super::in_place::deadline_ms(self.limits.deadline_ms) / tick_ms).max(1)
    }

    fn classify(&self, error: wasmtime::Error, other: fn(String) -> PolicyFault) -> PolicyFault {
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => {
                super::in_place::interrupted();
                PolicyFault::Deadline {
                    deadline_ms: self.limits.deadline_ms,
                }
            }
            _ if is_memory_exhaustion(&error) => PolicyFault::Memory {
                memory_mib: self.limits.memory_mib,
            },
            _ => other(format!("{error:#}").chars().take(512).collect()),
        }
    }
}

fn is_memory_exhaustion(error: &wasmtime::Error) -> bool {
    let text = format!("{error:#}");
    text.contains("forcing trap when growing memory")
        || text.contains("memory limit")
        || text.contains("memory allocation")
}

/// Compile a component (the engine caches the result by content hash).
pub fn compile_component(sandbox: &Sandbox, bytes: &[u8]) -> Result<Component, String> {
    check_preamble(bytes)?;
    Component::new(sandbox.engine(), bytes).map_err(|e| format!("{e:#}"))
}

/// Explain the two common mistakes (not Wasm at all; a core module) before wasmtime does.
fn check_preamble(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || bytes[..4] != *b"\0asm" {
        return Err("not a WebAssembly file (no \\0asm header)".to_owned());
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err("a core Wasm module, not a component: build the policy with `--target wasm32-wasip2`".to_owned());
    }
    Ok(())
}
