//! Wire types shared by the agent and the controller. Plain data with serde: no I/O, no
//! runtime, no wasmtime. Every struct rejects unknown fields, so a typo in a fixture or a
//! version skew between agent and controller is an error, not a silent default.

mod decision;
mod framing;
mod kinds;
mod request;
mod snapshot;
pub mod sse;
mod telemetry;
#[cfg(feature = "tls")]
pub mod tls;

pub use decision::{Decision, Reject, Route, Target};
pub use framing::Framing;
pub use kinds::{Api, PerformanceSource, RuntimeKind, SupervisorPhase};
pub use request::{CacheSource, CachedPrefix, RequestInfo};
pub use snapshot::{ClusterSnapshot, GpuSample, ModelVariant, NodeSnapshot};
pub use telemetry::{
    AgentTelemetry, EnergySource, EnergyTelemetry, GpuTelemetry, HostInfo, KvEventsTelemetry, LINK_PROTOCOL,
    LoadedModel, ModelLoadState, ModelState, NodeLimits, Performance, PowerTelemetry, RuntimeTelemetry,
    SupervisorState, SystemTelemetry,
};
