//! The `switchyard-agent` command line: `run`, `telemetry --once`, `init` (and `init --bundle`),
//! `bench`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::AgentApi;
use crate::config::AgentConfig;
use crate::performance::PerformanceTracker;
use crate::telemetry::Sampler;

#[derive(Debug, Parser)]
#[command(
    name = "switchyard-agent",
    version,
    about = "Switchyard's agent: telemetry and the local LLM runtime of one machine"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: sample telemetry and serve the runtime through the agent API.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Local address of the agent API (127.0.0.1:0 picks a free port and prints it).
        #[arg(long, default_value = "127.0.0.1:7100")]
        listen: SocketAddr,
    },
    /// Detect this machine and write a starting config with the seed's recommendations; with
    /// --bundle, join a controller with the node's bundle from `switchyard certs issue`.
    Init {
        /// Where to write the config (with --bundle, the certificates go to certs/ beside it).
        #[arg(long, short, default_value = "agent.toml")]
        output: PathBuf,
        /// Node name (default: from the hostname; with --bundle, the certificate's name, which
        /// this must equal).
        #[arg(long)]
        node: Option<String>,
        /// Overwrite an existing config (and, with --bundle, certificates in certs/).
        #[arg(long)]
        force: bool,
        /// The node's bundle folder (certs/nodes/NAME/ from `switchyard certs issue`): copy its
        /// certificates beside the config and write the [controller] section. An existing
        /// config without one keeps its settings and gains the section.
        #[arg(long, value_name = "DIR")]
        bundle: Option<PathBuf>,
        /// The controller's agent address, HOST:PORT (default: the bundle's join.toml).
        #[arg(long, value_name = "HOST:PORT", requires = "bundle")]
        controller: Option<String>,
    },
    /// Time the runtime on each catalog model; saves the results beside the config.
    Bench {
        #[arg(long, short)]
        config: PathBuf,
        /// Rounds at each concurrency.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Tokens generated per request.
        #[arg(long, default_value_t = 128)]
        max_tokens: u32,
    },
    /// Print telemetry as JSON.
    Telemetry {
        /// Print one sample and exit.
        #[arg(long, required = true)]
        once: bool,
        /// Include the runtime and catalog from this config.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config, listen } => run_agent(config, listen).await,
        Command::Init {
            output,
            node,
            force,
            bundle,
            controller,
        } => init(output, node, force, bundle, controller).await,
        Command::Bench {
            config: path,
            rounds,
            max_tokens,
        } => {
            let config = AgentConfig::load(&path)?;
            let driver = crate::driver::from_config(&config).await?;
            let results = crate::bench::run(&config, driver, rounds.max(1), max_tokens.max(2)).await?;
            let file = AgentConfig::bench_file(&path);
            std::fs::write(&file, serde_json::to_vec_pretty(&results)?)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
            crate::say(&results.table());
            crate::say(&format!(
                "saved to {}; `switchyard-agent run` reports these speeds until it has served requests",
                file.display()
            ));
            Ok(())
        }
        Command::Telemetry { once: _, config } => {
            let config = config.map(|path| AgentConfig::load(&path)).transpose()?.map(Arc::new);
            let driver = match config.as_deref() {
                Some(config) => Some(crate::driver::from_config(config).await?),
                None => None,
            };
            let mut sampler = Sampler::new(config, driver, Arc::new(PerformanceTracker::default()), None);
            // CPU usage is a difference between two refreshes.
            sampler.sample().await;
            tokio::time::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL.max(Duration::from_millis(250))).await;
            let sample = sampler.sample().await;
            crate::say(&serde_json::to_string_pretty(&sample)?);
            Ok(())
        }
    }
}

async fn init(
    output: PathBuf,
    node: Option<String>,
    force: bool,
    bundle: Option<PathBuf>,
    controller: Option<String>,
) -> anyhow::Result<()> {
    let mut sampler = Sampler::new(None, None, Arc::new(PerformanceTracker::default()), None);
    let facts = crate::init::MachineFacts::from_telemetry(&sampler.sample().await);
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", parent.display()))?;
    }
    if let Some(bundle) = bundle {
        let request = crate::join_bundle::JoinRequest {
            bundle: &bundle,
            output: &output,
            controller: controller.as_deref(),
            node: node.as_deref(),
            force,
        };
        let joined = crate::join_bundle::join(&request, |node| crate::init::recommend(&facts, node))?;
        let what = if joined.kept_config {
            format!("added a [controller] section to {}", output.display())
        } else {
            format!("wrote {} ({:?})", output.display(), facts.class())
        };
        crate::say(&format!(
            "{what} for node '{}', joining the controller at {}:\n\n{}\n{}",
            joined.node,
            joined.address,
            joined.config,
            joined.report(&bundle, &output)
        ));
        return Ok(());
    }
    if output.exists() && !force {
        anyhow::bail!("{} exists; pass --force to overwrite it", output.display());
    }
    let from_hostname = node.is_none().then_some(facts.hostname.as_str());
    let node = node.unwrap_or_else(|| crate::init::node_name(&facts.hostname));
    let text = crate::init::recommend(&facts, &node);
    AgentConfig::parse(&text, "the generated config")?;
    std::fs::write(&output, &text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", output.display()))?;
    crate::say(&format!(
        "wrote {} ({:?}):\n\n{text}\n{}",
        output.display(),
        facts.class(),
        crate::init::unjoined_note(&node, from_hostname, &output)
    ));
    Ok(())
}

async fn run_agent(config_path: PathBuf, listen: SocketAddr) -> anyhow::Result<()> {
    let config = Arc::new(AgentConfig::load(&config_path)?);
    let driver = crate::driver::from_config(&config)
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the simulated runtime's server on loopback: {e}"))?;
    let (tokens_per_sec, ttft_ms) = crate::bench::BenchResults::load(&AgentConfig::bench_file(&config_path))
        .map(|b| b.seed())
        .unwrap_or((None, None));
    let performance = Arc::new(PerformanceTracker::seeded(tokens_per_sec, ttft_ms).with_slots(config.max_concurrency));
    let shutdown = CancellationToken::new();
    let (supervisor_state, supervisor_task) = match &config.runtime.command {
        Some(command) => {
            let (supervisor, state) = crate::supervise::Supervisor::new(command.clone(), driver.clone());
            (Some(state), Some(tokio::spawn(supervisor.run(shutdown.clone()))))
        }
        None => (None, None),
    };
    let mut sampler = Sampler::new(
        Some(config.clone()),
        Some(driver.clone()),
        performance.clone(),
        supervisor_state,
    );
    let first = sampler.sample().await;
    // The models the agent starts itself share the GPUs' memory, or the RAM without one.
    let machine_memory_mb = match first.gpus.iter().map(|g| g.mem_total_mb).sum::<u64>() {
        0 => first.system.mem_total_mb,
        vram => vram,
    };
    let models =
        crate::models::ModelManager::from_config(&config, machine_memory_mb, Some(estimates_file(&config_path)));
    sampler.set_models(models.clone());
    let kv_events = config
        .runtime
        .kv_events
        .clone()
        .map(|kv| crate::kv_events::KvEvents::start(kv, shutdown.clone()));
    sampler.set_kv_events(kv_events.clone());
    let first = sampler.sample().await;
    let sleep_switch = sampler.sleep_switch();
    let (publish, telemetry) = watch::channel(first);
    let models_task = models.clone().map(|m| tokio::spawn(m.run(shutdown.clone())));
    tokio::spawn(sampler.run(
        publish,
        Duration::from_millis(config.telemetry_interval_ms),
        shutdown.clone(),
    ));

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let api = Arc::new(
        AgentApi::new(config.clone(), driver, performance, telemetry)?
            .with_models(models)
            .with_sleep_switch(sleep_switch)
            .with_kv_events(kv_events),
    );
    crate::say(&format!("switchyard-agent {} listening on http://{addr}", config.node));
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let link_task = config
        .controller
        .clone()
        .map(|link| tokio::spawn(crate::link::Link::new(link, api.clone()).run(shutdown.clone())));
    crate::server::serve(listener, api, shutdown.clone()).await;
    if let Some(task) = link_task {
        let _ = tokio::time::timeout(Duration::from_secs(6), task).await;
    }
    if let Some(task) = supervisor_task {
        // The supervisor stops the runtime (SIGTERM, then SIGKILL after its grace period).
        let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    }
    if let Some(task) = models_task {
        // Every model's runtime gets SIGTERM, then SIGKILL after its grace period.
        let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    }
    Ok(())
}

/// Where measured load times and memory are kept: systemd's `$STATE_DIRECTORY` when the
/// service has one (its config folder is read-only), else beside the config.
fn estimates_file(config_path: &std::path::Path) -> PathBuf {
    let name = config_path
        .file_stem()
        .map(|s| format!("{}.models.json", s.to_string_lossy()))
        .unwrap_or_else(|| "agent.models.json".to_owned());
    match std::env::var_os("STATE_DIRECTORY") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => config_path.with_file_name(name),
    }
}

/// Cancel `shutdown` on Ctrl-C or SIGTERM.
pub async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        } else {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
    shutdown.cancel();
}
