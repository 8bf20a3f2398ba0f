//! End-to-end tests: real `switchyard` processes on 127.0.0.1:0, driven over HTTP and by
//! the CLI, the way an operator would.

mod process;

mod agent_link;
mod demo;
mod policy_cli;
