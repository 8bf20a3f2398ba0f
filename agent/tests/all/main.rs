//! Integration tests of the agent: drivers against REAL runtimes (llama.cpp's server and
//! `mlx_lm.server` with a tiny generated model), the Ollama driver against a test double of
//! Ollama's documented API backed by llama.cpp, and the real `switchyard-agent` process.
//! `tests/runtimes/setup.sh` (run by the test command) installs the runtimes.

#[path = "../shared/bundle.rs"]
mod shared_bundle;
mod support;

mod agent_process;
mod config_errors;
mod joining;
mod model_manager;
mod ollama_driver;
mod openai_driver;
mod service_files;
mod supervision;
