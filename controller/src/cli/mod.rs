//! The `switchyard` command line: `serve`, `demo`, `policy ...`, `route explain`.

mod admin_client;
mod policy_cmd;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::{self, Settings};
use crate::config::ControllerConfig;
use crate::policy::EngineOptions;

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "One endpoint for LLM prompts across your machines, routed by hot-swappable Wasm policies"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller from a config file.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
        /// Overrides `listen` from the config (use 127.0.0.1:0 for any free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run the demo: the seed cluster (simulated telemetry) with the seed routing policy.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Policy folder to load and watch (default: this repository's `policies/`).
        #[arg(long)]
        policies: Option<PathBuf>,
    },
    /// Manage policies on a running controller, or test one locally.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCommand),
    /// Ask a running controller where a request would go, and why.
    #[command(subcommand)]
    Route(RouteCommand),
}

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    Explain {
        #[command(flatten)]
        controller: Remote,
        #[arg(long)]
        model: String,
        #[arg(long)]
        task: Option<String>,
        #[arg(long, default_value_t = 5)]
        priority: u8,
        #[arg(long, default_value_t = 0)]
        prompt_tokens: u32,
        #[arg(long)]
        max_tokens: Option<u32>,
        #[arg(long)]
        session: Option<String>,
    },
}

/// Where the controller's admin API is.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// Controller base URL.
    #[arg(
        long,
        env = "SWITCHYARD_CONTROLLER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub controller: String,
    /// Admin bearer token.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, listen } => serve(config, listen).await,
        Command::Demo { listen, policies } => crate::demo::run(listen, policies).await,
        Command::Policy(command) => policy_cmd::run(command).await,
        Command::Route(RouteCommand::Explain {
            controller,
            model,
            task,
            priority,
            prompt_tokens,
            max_tokens,
            session,
        }) => {
            let mut request = switchyard_protocol::RequestInfo::for_model(model);
            request.id = "explain".to_owned();
            request.task = task;
            request.priority = priority;
            request.prompt_tokens = prompt_tokens;
            request.max_tokens = max_tokens;
            request.session = session;
            let client = admin_client::AdminClient::new(&controller)?;
            let body = serde_json::to_vec(&crate::admin::ExplainQuery {
                request,
                snapshot: None,
            })?;
            let reply = client
                .call("POST", "/admin/route/explain", body, "application/json")
                .await?;
            crate::say(&String::from_utf8_lossy(&reply));
            Ok(())
        }
    }
}

async fn serve(config_path: PathBuf, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let config = ControllerConfig::load(&config_path)?;
    let admin_token = std::fs::read_to_string(&config.admin.token_file)
        .with_context(|| {
            format!(
                "{}: field `admin.token_file`: cannot read {}",
                config_path.display(),
                config.admin.token_file.display()
            )
        })?
        .trim()
        .to_owned();
    if admin_token.len() < 16 {
        anyhow::bail!(
            "{}: the admin token must be at least 16 characters",
            config.admin.token_file.display()
        );
    }
    let snapshot = match &config.cluster.static_snapshot {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("{}: invalid snapshot", path.display()))?
        }
        None => Default::default(),
    };
    let settings = Settings {
        listen: listen.unwrap_or(config.listen),
        admin_token,
        policy_dir: config.policy.dir.clone(),
        active_policy: config.policy.active.clone(),
        watch: config.policy.watch,
        watch_interval: Duration::from_millis(config.policy.watch_interval_ms),
        engine: EngineOptions {
            revert_after_faults: config.policy.revert_after_faults,
        },
        snapshot,
    };
    let running = app::start(settings).await?;
    crate::say(&format!("switchyard listening on http://{}", running.addr));
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    running.serve(shutdown).await;
    Ok(())
}

/// Cancel `shutdown` on Ctrl-C or SIGTERM.
pub async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down; draining in-flight requests");
    shutdown.cancel();
}
