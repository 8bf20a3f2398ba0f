//! Switchyard's controller: the endpoint for prompts, the policy engine that decides where
//! each goes, the node table, and the admin API.

pub mod admin;
pub mod agents;
pub mod app;
pub mod certs;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod decisions;
pub mod fixtures;
pub mod front;
#[doc(hidden)]
pub mod fuzz_entry;
#[cfg(test)]
mod generated;
pub mod http;
pub mod metrics;
pub mod node_table;
pub mod policy;
pub mod policy_check;
pub mod prefix_index;
pub mod prometheus_text;
pub mod rng;
pub mod seed_cluster;
pub mod signals;
pub mod watch;
