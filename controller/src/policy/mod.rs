//! Policies: sandboxed Wasm components that decide where each request goes. Three rooms
//! over one shared state (`state.rs`): the registry loads and activates versions, the engine
//! decides on the request path, the rehearsals try a candidate beside it.

mod bindings;
mod candidates;
pub mod compile_cache;
mod components;
mod engine;
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
mod registry;
mod rehearsal;
mod sandbox;
mod smoke;
mod spec;
mod stage;
mod state;
mod validate;

pub use components::MAX_COMPONENT_BYTES;
pub use engine::PolicyEngine;
pub use error::PolicyError;
pub use fault::{FaultKind, PolicyFault};
pub use loaded::{LoadedPolicy, StatsView};
pub use prepared::{LiveLoad, PreparedSnapshot};
pub use registry::{EngineView, MAX_UPLOADS, PolicyRegistry, PolicyView, UploadView};
pub use rehearsal::{Rehearsal, canary, shadow};
pub use spec::{ComponentRef, Limits, PolicyName, PolicySpec, StageSpec};
pub use state::{EngineOptions, FALLBACK_ID, Policies, Routed};
pub use validate::{MAX_TARGETS, MAX_TEXT_BYTES};
