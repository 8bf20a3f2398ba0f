//! Agents join the controller here: one mTLS connection per agent, dialled by the agent,
//! with HTTP/2 running the other way (the controller is the client). The node name comes
//! from the agent's certificate; liveness is the connection plus HTTP/2 pings.

pub mod command;
mod link;
mod node_admission;
mod server_tls;
pub mod telemetry_bounds;

pub use link::{AgentListener, LinkSettings};
pub use node_admission::NodeAdmission;
pub use server_tls::{ServerTls, TlsPaths};
