//! `switchyard demo`: the controller on the seed cluster (three nodes with SIMULATED
//! telemetry, as the seed document describes them) with the seed routing policy active and
//! this repository's `policies/` folder watched, so that editing a policy file swaps it live.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::{self, Settings};
use crate::policy::EngineOptions;

fn default_policy_dir() -> PathBuf {
    let local = PathBuf::from("policies");
    if local.join("seed-rules.toml").is_file() {
        return local;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for the admin token: {e}"))?;
    Ok(hex::encode(bytes))
}

pub async fn run(listen: SocketAddr, policies: Option<PathBuf>) -> anyhow::Result<()> {
    let policy_dir = policies.unwrap_or_else(default_policy_dir);
    let admin_token = random_token()?;
    let settings = Settings {
        listen,
        admin_token: admin_token.clone(),
        policy_dir: Some(policy_dir.clone()),
        active_policy: Some("seed-rules".to_owned()),
        watch: true,
        watch_interval: Duration::from_millis(500),
        engine: EngineOptions::default(),
        snapshot: crate::seed_cluster::seed_cluster(),
        agents: None,
        keys: Default::default(),
        limits: Default::default(),
    };
    let running = app::start(settings).await?;
    let url = format!("http://{}", running.addr);
    let active = running
        .app
        .engine
        .active()
        .map(|p| p.id.to_string())
        .unwrap_or_default();
    crate::say(&format!(
        "switchyard listening on {url}\n\
         \n\
         Demo cluster: m4 (MLX), ryzen (vLLM), xeon (Ollama) with SIMULATED telemetry from the seed document.\n\
         Active policy: {active}; watching {dir} (edit a policy file and it is swapped in live).\n\
         \n\
         export SWITCHYARD_CONTROLLER={url} SWITCHYARD_ADMIN_TOKEN={admin_token}\n\
         \n\
         Where would each kind of request go, and why?\n\
         \x20 switchyard route explain --model qwen25-coder-7b --task development\n\
         \x20 switchyard route explain --model qwen25-coder-7b --task batch\n\
         \x20 curl -s -H \"Authorization: Bearer $SWITCHYARD_ADMIN_TOKEN\" {url}/admin/route/explain \\\n\
         \x20      -d '{{\"request\": {{\"model\": \"qwen25-coder-7b\", \"task\": \"production\"}}}}'\n\
         Swap the policy while it runs:\n\
         \x20 switchyard policy activate least-loaded\n\
         \x20 switchyard policy rollback\n\
         \x20 switchyard policy list\n\
         Metrics: curl {url}/metrics\n\
         \n\
         Ctrl-C stops the demo.",
        dir = policy_dir.display()
    ));
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::cli::stop_on_signal(shutdown.clone()));
    running.serve(shutdown).await;
    crate::say("switchyard demo stopped");
    Ok(())
}
