//! End-to-end tests: real `switchyard` processes on 127.0.0.1:0, driven over HTTP and by
//! the CLI, the way an operator would.

mod cluster;
mod process;
#[path = "../support/runtimes.rs"]
mod runtimes;

mod agent_link;
mod browser;
mod canary;
mod coding_agents;
mod continuation;
mod dashboard;
mod decisions;
mod demo;
mod fidelity;
mod first_hour;
mod front_door;
mod gateway;
mod hostile_clients;
mod models;
mod policy_cli;
mod policy_faults;
mod policy_languages;
mod real_cluster;
mod routing;
mod vllm;
