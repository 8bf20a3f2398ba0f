//! `switchyard demo`: a whole cluster on this machine. A controller, and three real agent
//! processes named after the seed machines (m4, ryzen, xeon) with SIMULATED runtimes that
//! follow the seed's speeds, batch sizes and models, linked over mTLS with certificates made
//! in a temporary folder; the seed routing policy active; this repository's `policies/`
//! watched, so editing a policy file swaps it live. `--local-runtime` adds a real fourth
//! node. Ctrl-C stops everything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use switchyard_controller::app::{self, Settings};
use switchyard_controller::front::keyless::{KeylessApi, KeylessConfig, KeylessRule};
use switchyard_controller::front::keys::{ApiKeys, Grant};
use switchyard_controller::policy::EngineOptions;

/// A runtime already running on this machine, added as the node `local`.
#[derive(Debug, Clone)]
pub struct LocalRuntime {
    pub url: String,
    pub model: Option<String>,
    pub kind: String,
}

fn default_policy_dir() -> PathBuf {
    let local = PathBuf::from("policies");
    if local.join("seed-rules.toml").is_file() {
        return local;
    }
    // Built from a checkout: the repository's policies, two folders above this crate.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(hex::encode(buffer))
}

/// The agent config of one simulated seed machine, from the seed cluster's catalog.
fn seed_agent_config(node: &switchyard_protocol::NodeSnapshot, link: &str) -> String {
    let role = node
        .labels
        .iter()
        .find(|(k, _)| k == "role")
        .map(|(_, v)| v.as_str())
        .unwrap_or("demo");
    let mut text = format!(
        "node = \"{name}\"\nmax_concurrency = {concurrency}\nmax_tokens = {max_tokens}\ntelemetry_interval_ms = 1000\n\
         [labels]\nrole = \"{role}\"\nsimulated = \"true\"\n\
         [runtime]\nkind = \"simulated\"\nprofile = \"{name}\"\n",
        name = node.name,
        concurrency = node.max_concurrency,
        max_tokens = node.max_tokens,
    );
    for model in &node.models {
        text.push_str(&format!(
            "[[models]]\nlogical = \"{}\"\nlocal = \"{}\"\ncontext_length = {}\n",
            model.logical, model.local, model.context_length
        ));
        if let Some(q) = &model.quantization {
            text.push_str(&format!("quantization = \"{q}\"\n"));
        }
    }
    text.push_str(link);
    text
}

fn link_section(address: SocketAddr, bundle: &Path) -> String {
    format!(
        "[controller]\naddress = \"{address}\"\nserver_name = \"localhost\"\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        bundle.join("ca.pem").display().to_string(),
        bundle.join("node.pem").display().to_string(),
        bundle.join("node.key").display().to_string(),
    )
}

async fn start_agent(config: &Path) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    Command::new(exe)
        .args(["agent", "run", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("SWITCHYARD_EXIT_WITH_PARENT", "1")
        .env(
            "SWITCHYARD_LOG",
            std::env::var("SWITCHYARD_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start the agent for {}: {e}", config.display()))
}

/// Ollama clients on this machine need no key (they cannot send one); OpenAI clients do.
fn demo_keyless() -> anyhow::Result<KeylessRule> {
    KeylessRule::from_config(
        0,
        &KeylessConfig {
            name: "ollama-clients-on-this-machine".into(),
            networks: vec!["127.0.0.0/8".into(), "::1".into()],
            apis: vec![KeylessApi::Ollama],
            models: vec!["*".into()],
            max_priority: 5,
        },
    )
    .map_err(anyhow::Error::msg)
}

pub async fn run(listen: SocketAddr, policies: Option<PathBuf>, local: Option<LocalRuntime>) -> anyhow::Result<()> {
    let policy_dir = policies.unwrap_or_else(default_policy_dir);
    let work = tempfile::Builder::new().prefix("switchyard-demo-").tempdir()?;
    let certs = work.path().join("certs");
    switchyard_controller::certs::init(&certs, &[], 30, false)?;
    let secrets = Secrets {
        admin_token: random_hex(16)?,
        api_key: format!("sk-demo-{}", random_hex(12)?),
    };
    let running = app::start(demo_settings(listen, &policy_dir, &certs, work.path(), &secrets)?).await?;
    let running_addr = running.addr;
    let agents_addr = running
        .agents_addr
        .ok_or_else(|| anyhow::anyhow!("the demo controller has no agent endpoint"))?;
    let app = running.app.clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(running.serve(shutdown.clone()));

    let mut children = Vec::new();
    let mut names = Vec::new();
    for node in switchyard_controller::seed_cluster::seed_cluster().nodes {
        let bundle = switchyard_controller::certs::issue_node(&certs, &node.name, 30, None, None)?;
        let config = work.path().join(format!("{}.toml", node.name));
        std::fs::write(&config, seed_agent_config(&node, &link_section(agents_addr, &bundle)))?;
        children.push(start_agent(&config).await?);
        names.push(node.name.clone());
    }
    if let Some(local) = &local {
        children.push(start_local_agent(local, &certs, work.path(), agents_addr).await?);
        names.push("local".to_owned());
    }
    wait_for_agents(&app, &names).await;
    let active = app.front.engine.active().map(|p| p.id.to_string()).unwrap_or_default();
    crate::say(&welcome(running_addr, &names, &active, &policy_dir, &secrets));
    print_routed(&app).await;

    stop_agents(&mut children).await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(12), server).await;
    drop(work);
    crate::say("switchyard demo stopped");
    Ok(())
}

/// The demo's admin token and client key, fresh each run.
struct Secrets {
    admin_token: String,
    api_key: String,
}

/// The demo controller: the seed policies watched, an agent endpoint on loopback with the
/// demo's certificates, one key for everything and keyless Ollama clients on this machine,
/// and a decision record beside the certificates (gone when the demo stops).
fn demo_settings(
    listen: SocketAddr,
    policy_dir: &Path,
    certs: &Path,
    work: &Path,
    secrets: &Secrets,
) -> anyhow::Result<Settings> {
    Ok(Settings {
        listen,
        admin_token: secrets.admin_token.clone(),
        policy_dir: Some(policy_dir.to_path_buf()),
        active_policy: Some("seed-rules".to_owned()),
        watch: true,
        watch_interval: Duration::from_millis(500),
        engine: EngineOptions::default(),
        snapshot: Default::default(),
        agents: Some((
            SocketAddr::from(([127, 0, 0, 1], 0)),
            switchyard_controller::agents::TlsPaths {
                ca: certs.join("ca.pem"),
                cert: certs.join("controller.pem"),
                key: certs.join("controller.key"),
            },
            switchyard_controller::agents::NodeAdmission::default(),
        )),
        keys: ApiKeys::new(vec![(
            secrets.api_key.clone(),
            Grant {
                name: "demo".into(),
                models: vec!["*".into()],
                max_priority: 9,
                weight: 1,
                continue_streams: true,
            },
        )])
        .with_keyless(vec![demo_keyless()?]),
        limits: Default::default(),
        decisions: Some(switchyard_controller::decisions::StoreOptions {
            path: work.join("decisions.redb"),
            max_records: 1_000_000,
            max_age: Duration::from_secs(24 * 3600),
            max_bytes: 256 * 1024 * 1024,
        }),
        canary: Default::default(),
    })
}

/// An agent for `--local-runtime`: a node called `local` in front of the operator's runtime.
async fn start_local_agent(
    local: &LocalRuntime,
    certs: &Path,
    work: &Path,
    agents_addr: SocketAddr,
) -> anyhow::Result<Child> {
    let model = local.model.clone().unwrap_or_else(|| "local".to_owned());
    let bundle = switchyard_controller::certs::issue_node(certs, "local", 30, None, None)?;
    let config = work.join("local.toml");
    std::fs::write(
        &config,
        format!(
            "node = \"local\"\nmax_concurrency = 1\nmax_tokens = 4096\n[labels]\nrole = \"local\"\n\
             [runtime]\nkind = {kind:?}\nbase_url = {url:?}\n\
             [[models]]\nlogical = {model:?}\nlocal = {model:?}\ncontext_length = 4096\n{link}",
            kind = local.kind,
            url = local.url,
            link = link_section(agents_addr, &bundle)
        ),
    )?;
    switchyard_agent::config::AgentConfig::load(&config)
        .map_err(|e| anyhow::anyhow!("--local-runtime: {e} (use --local-kind openai or ollama)"))?;
    start_agent(&config).await
}

/// Wait (at most 30 s) until every named agent has linked and reports healthy.
async fn wait_for_agents(app: &app::App, names: &[String]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let snapshot = app.front.nodes.snapshot();
        let up = names
            .iter()
            .filter(|n| snapshot.node(n).is_some_and(|node| node.healthy))
            .count();
        if up == names.len() {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            tracing::warn!("only {up} of {} agents linked within 30 s; continuing", names.len());
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the demo prints once it is up: where it listens, the secrets, and what to try.
fn welcome(addr: SocketAddr, names: &[String], active: &str, policy_dir: &Path, secrets: &Secrets) -> String {
    let url = format!("http://{addr}");
    let (admin_token, api_key) = (&secrets.admin_token, &secrets.api_key);
    format!(
        "switchyard listening on {url}\n\
         \n\
         Demo cluster: {nodes} as real agent processes linked over mTLS, with SIMULATED runtimes\n\
         that generate at the seed document's speeds (replies start with \"[simulated <node>]\").\n\
         Active policy: {active}; watching {dir} (edit a policy file and it is swapped in live).\n\
         \n\
         export SWITCHYARD_CONTROLLER={url} SWITCHYARD_ADMIN_TOKEN={admin_token} OPENAI_API_KEY={api_key}\n\
         \n\
         A prompt (the task header picks the machine: development -> m4, production -> ryzen, batch -> xeon):\n\
         \x20 curl -s {url}/v1/chat/completions -H \"Authorization: Bearer $OPENAI_API_KEY\" -H 'x-switchyard-task: development' \\\n\
         \x20      -d '{{\"model\": \"qwen25-coder-7b\", \"max_tokens\": 16, \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'\n\
         With the OpenAI SDK (pip install openai; it reads OPENAI_API_KEY, exported above):\n\
         \x20 python3 -c 'from openai import OpenAI; c = OpenAI(base_url=\"{url}/v1\"); print(c.chat.completions.create(model=\"qwen25-coder-32b\", max_tokens=16, messages=[{{\"role\": \"user\", \"content\": \"Hi\"}}], extra_headers={{\"x-switchyard-task\": \"production\"}}).choices[0].message.content)'\n\
         Ollama clients on this machine need no key: OLLAMA_HOST={host} ollama run qwen25-coder-7b\n\
         The cluster and the policy:\n\
         \x20 switchyard nodes\n\
         \x20 switchyard route explain --model qwen25-coder-7b --task batch\n\
         \x20 switchyard policy activate least-loaded; switchyard policy rollback\n\
         Metrics: curl {url}/metrics\n\
         Dashboard (a browser on this machine; the link carries the admin token): {url}/dashboard#token={admin_token}\n\
         \n\
         Ctrl-C stops the demo. Requests as they are routed:",
        nodes = names.join(", "),
        host = addr,
        dir = policy_dir.display()
    )
}

/// Print each routed request's line until Ctrl-C (or the controller stops).
async fn print_routed(app: &app::App) {
    let mut routed = app.front.routed.subscribe();
    let stop = CancellationToken::new();
    tokio::spawn(switchyard_controller::signals::stop_on_signal(stop.clone()));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            line = routed.recv() => match line {
                Ok(line) => crate::say(&line),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => crate::say(&format!("({n} requests not shown)")),
                Err(_) => return,
            },
        }
    }
}

/// SIGTERM every agent, then wait up to 10 s each before killing it.
async fn stop_agents(children: &mut [Child]) {
    for child in children.iter() {
        if let Some(pid) = child.id() {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        }
    }
    for child in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}
