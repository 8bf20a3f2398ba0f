//! The policy engine: sandboxed Wasm components that decide where each request goes.

mod bindings;
pub mod canary;
mod candidates;
pub mod compile_cache;
mod engine;
mod engine_canary;
mod error;
pub mod fallback;
mod fault;
mod guest_log;
mod guest_output;
mod in_place;
mod loaded;
mod params_line;
mod pool;
mod prepared;
mod sandbox;
pub mod shadow;
mod smoke;
mod spec;
mod stage;
mod validate;

pub use engine::{
    EngineOptions, EngineView, FALLBACK_ID, MAX_COMPONENT_BYTES, MAX_UPLOADS, PolicyEngine, PolicyView, Routed,
    UploadView,
};
pub use error::PolicyError;
pub use fault::{FaultKind, PolicyFault};
pub use loaded::{LoadedPolicy, StatsView};
pub use prepared::{LiveLoad, PreparedSnapshot};
pub use spec::{ComponentRef, Limits, PolicyName, PolicySpec, StageSpec};
pub use validate::{MAX_TARGETS, MAX_TEXT_BYTES};
