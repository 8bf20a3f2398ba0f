//! The Switchyard agent: on each machine, it samples telemetry (NVML, sysinfo, battery and
//! thermal state, the runtime's own queue), drives the local runtime through a driver, and
//! relays the controller's requests to the runtime's own API, byte for byte. It must not depend on the controller or on
//! wasmtime.

pub mod api;
pub mod bench;
pub mod cli;
pub mod config;
pub mod driver;
pub mod init;
pub mod join_bundle;
pub mod kv_events;
pub mod link;
pub mod models;
pub mod node_cert;
pub mod performance;
pub mod relay;
pub mod server;
pub mod simulator;
pub mod supervise;
pub mod tap;
pub mod telemetry;

/// Write one message for the operator to stdout (the CLI's output, not a log line).
pub fn say(message: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{message}");
    let _ = out.flush();
}
