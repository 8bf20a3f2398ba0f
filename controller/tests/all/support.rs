//! Shared helpers: an policies, the seed cluster, requests, hostile policy documents, and a
//! log capture for asserting what operators would see.

use std::io::Write;
use std::sync::{Arc, Mutex};

use switchyard_controller::policy::{EngineOptions, Policies};
use switchyard_controller::seed_cluster::seed_cluster;
use switchyard_protocol::{ClusterSnapshot, RequestInfo};

pub fn policies() -> Policies {
    Policies::new(EngineOptions::default()).expect("policies starts")
}

pub fn cluster() -> ClusterSnapshot {
    seed_cluster()
}

pub fn repo_path(relative: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").exists())
        .expect("the test runs inside the repository")
        .join(relative)
}

pub fn request(task: Option<&str>) -> RequestInfo {
    let mut req = RequestInfo::for_model("qwen25-coder-7b");
    req.id = "req-1".to_owned();
    req.task = task.map(str::to_owned);
    req.prompt_tokens = 100;
    req.max_tokens = Some(200);
    req
}

/// A request the hostile component misbehaves on.
pub fn trigger() -> RequestInfo {
    let mut req = request(None);
    req.tags.push(("hostile".to_owned(), "go".to_owned()));
    req
}

/// A hostile policy in `mode`, its component uploaded to `policies` (as the admin API would).
pub fn hostile_policy(policies: &Policies, mode: &str) -> String {
    let component = policies
        .registry
        .upload_component(std::fs::read(switchyard_policy_artifacts::HOSTILE).expect("hostile.wasm"))
        .expect("upload");
    format!(
        "name = \"hostile-{mode}\"\n\
         [limits]\ndeadline_ms = 100\nmemory_mib = 32\n\
         [[stage]]\ncomponent = \"{component}\"\n\
         [stage.params]\nmode = \"{mode}\"\n"
    )
}

#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Run `f` with the calling thread's log captured; returns its result and the log text.
pub fn with_captured_logs<R>(f: impl FnOnce() -> R) -> (R, String) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    (result, captured.text())
}
