//! Agent-test helpers on top of the shared runtimes (`tests/support/runtimes.rs`).

use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../../../tests/support/runtimes.rs"]
mod runtimes;
pub use runtimes::*;

/// A real `switchyard-agent run` with `config` (TOML text).
pub fn agent(config: &str) -> (Process, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config).expect("write config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard-agent"));
    command
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .env("SWITCHYARD_LOG", "info");
    (Process::spawn(command, Duration::from_secs(60)), dir)
}

/// Wait (bounded) for `condition`, polling every 100 ms.
pub async fn eventually<F, Fut>(within: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    condition().await
}

pub fn printable(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c == '\n' || (' '..='~').contains(&c))
}

/// The agent's `/telemetry`, served at `url`.
pub async fn telemetry(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client
        .get(format!("{url}/telemetry"))
        .send()
        .await
        .expect("telemetry")
        .json()
        .await
        .expect("json")
}
