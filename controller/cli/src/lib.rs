//! The `switchyard` command line: `serve`, `demo`, `certs`, `nodes`, `policy ...`, `decisions`,
//! `route explain`. The operator's side of Switchyard, kept out of the controller library so
//! that serving does not link the agent (the demo runs agents as `switchyard agent ...`).

mod demo;

mod admin_client;
mod certs_cmd;
mod decisions_cmd;
mod models_cmd;
mod nodes_cmd;

pub use models_cmd::format_models;
pub use nodes_cmd::format_nodes;
mod policy_cmd;
mod policy_project;
mod table;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use switchyard_controller::app::{self, Settings};
use switchyard_controller::config::ControllerConfig;
use switchyard_controller::policy::EngineOptions;

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
        /// Overrides `agents.listen` from the config.
        #[arg(long)]
        agents_listen: Option<SocketAddr>,
    },
    /// The cluster's certificates: a CA, the controller's, one per node.
    #[command(subcommand)]
    Certs(certs_cmd::CertsCommand),
    /// List the nodes a running controller knows: health (and why not), load, heat,
    /// battery, links and certificate expiry.
    Nodes {
        #[command(flatten)]
        controller: Remote,
    },
    /// Drain a node for maintenance (no new work; in-flight requests finish), or undrain it.
    #[command(subcommand)]
    Node(nodes_cmd::NodeCommand),
    /// The models per node: loaded or not, memory, idle time, load-time estimate; or load and
    /// unload one (`switchyard models load NODE MODEL`).
    Models(models_cmd::ModelsArgs),
    /// Run the demo: a controller and three agent processes named after the seed machines
    /// (simulated runtimes), linked over mTLS, with the seed routing policy.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Policy folder to load and watch (default: this repository's `policies/`).
        #[arg(long)]
        policies: Option<PathBuf>,
        /// An LLM server already running here (an OpenAI-compatible or Ollama URL) to add as a
        /// fourth, real node named `local`.
        #[arg(long)]
        local_runtime: Option<String>,
        /// The model the local runtime serves (its own name; also the logical name).
        #[arg(long, requires = "local_runtime")]
        local_model: Option<String>,
        /// `openai` (vLLM, llama.cpp, MLX, LM Studio) or `ollama`.
        #[arg(long, default_value = "openai", requires = "local_runtime")]
        local_kind: String,
    },
    /// Run agent commands (the same as `switchyard-agent`; the demo starts its agents so).
    #[command(hide = true)]
    Agent {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Manage policies on a running controller, or test one locally.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCommand),
    /// Ask a running controller where a request would go, and why.
    #[command(subcommand)]
    Route(RouteCommand),
    /// The decision record: what each request's policy decided and how it turned out.
    #[command(subcommand)]
    Decisions(decisions_cmd::DecisionsCommand),
}

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Ask the active policy (or any loaded one, with --policy) where a request with this
    /// metadata would go now, and why (nothing is sent; the reply is the decision as JSON).
    Explain {
        #[command(flatten)]
        controller: Remote,
        /// The logical model the request names (as clients send it).
        #[arg(long)]
        model: String,
        /// The task class (`x-switchyard-task`), e.g. development, production, batch.
        #[arg(long)]
        task: Option<String>,
        /// The priority, 0-9 (`x-switchyard-priority`).
        #[arg(long, default_value_t = 5)]
        priority: u8,
        /// Estimated prompt tokens.
        #[arg(long, default_value_t = 0)]
        prompt_tokens: u32,
        /// The request's max_tokens.
        #[arg(long)]
        max_tokens: Option<u32>,
        /// The session (`x-switchyard-session`, or OpenAI's `user`).
        #[arg(long)]
        session: Option<String>,
        /// Ask this loaded policy (an id, or a name for its newest version) instead of the
        /// active one: rehearse a candidate before it serves.
        #[arg(long)]
        policy: Option<String>,
    },
}

// Where the controller's admin API is (a plain comment: clap would show a doc comment as
// the help of every command that flattens this).
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// Controller base URL.
    #[arg(long, env = "SWITCHYARD_CONTROLLER", default_value = "http://127.0.0.1:8080")]
    pub controller: String,
    /// Admin bearer token.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            agents_listen,
        } => serve(config, listen, agents_listen).await,
        Command::Certs(command) => certs_cmd::run(command),
        Command::Nodes { controller } => nodes_cmd::list(&controller).await,
        Command::Node(command) => nodes_cmd::run(command).await,
        Command::Models(args) => models_cmd::run(args).await,
        Command::Demo {
            listen,
            policies,
            local_runtime,
            local_model,
            local_kind,
        } => {
            let local = local_runtime.map(|url| crate::demo::LocalRuntime {
                url,
                model: local_model,
                kind: local_kind,
            });
            crate::demo::run(listen, policies, local).await
        }
        Command::Agent { args } => {
            use clap::Parser as _;
            #[cfg(unix)]
            if std::env::var_os("SWITCHYARD_EXIT_WITH_PARENT").is_some() {
                // Started by the demo: never outlive it, even if it is killed without a chance
                // to stop its agents.
                let parent = std::os::unix::process::parent_id();
                std::thread::spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_millis(250));
                        if std::os::unix::process::parent_id() != parent {
                            std::process::exit(0);
                        }
                    }
                });
            }
            let cli =
                switchyard_agent::cli::Cli::try_parse_from(std::iter::once("switchyard-agent".to_owned()).chain(args))?;
            switchyard_agent::cli::run(cli).await
        }
        Command::Policy(command) => policy_cmd::run(command).await,
        Command::Decisions(command) => decisions_cmd::run(command).await,
        Command::Route(RouteCommand::Explain {
            controller,
            model,
            task,
            priority,
            prompt_tokens,
            max_tokens,
            session,
            policy,
        }) => {
            let mut request = switchyard_protocol::RequestInfo::for_model(model);
            request.id = "explain".to_owned();
            request.task = task;
            request.priority = priority;
            request.prompt_tokens = prompt_tokens;
            request.max_tokens = max_tokens;
            request.session = session;
            let client = admin_client::AdminClient::new(&controller)?;
            let query = switchyard_controller::admin::ExplainQuery {
                request,
                snapshot: None,
                policy,
            };
            let reply = client.post_json("/admin/route/explain", &query).await?;
            crate::say(&String::from_utf8_lossy(&reply));
            Ok(())
        }
    }
}

async fn serve(
    config_path: PathBuf,
    listen: Option<SocketAddr>,
    agents_listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let config = ControllerConfig::load(&config_path)?;
    let settings = settings(&config, &config_path, listen, agents_listen)?;
    let running = app::start(settings).await?;
    crate::say(&format!("switchyard listening on http://{}", running.addr));
    if let Some(agents) = running.agents_addr {
        crate::say(&format!("agents link to {agents} (mTLS)"));
    }
    let shutdown = CancellationToken::new();
    if let Some(gateway) = &config.gateway {
        serve_picker(gateway, &config_path, running.app.front.clone(), shutdown.clone()).await?;
    }
    tokio::spawn(switchyard_controller::signals::stop_on_signal(shutdown.clone()));
    running.serve(shutdown).await;
    Ok(())
}

/// What `serve` needs from the config file, each value resolved (files read, defaults filled).
fn settings(
    config: &ControllerConfig,
    config_path: &std::path::Path,
    listen: Option<SocketAddr>,
    agents_listen: Option<SocketAddr>,
) -> anyhow::Result<Settings> {
    Ok(Settings {
        listen: listen.unwrap_or(config.listen),
        admin_token: admin_token(config, config_path)?,
        policy_dir: config.policy.dir.clone(),
        active_policy: config.policy.active.clone(),
        watch: config.policy.watch,
        watch_interval: Duration::from_millis(config.policy.watch_interval_ms),
        engine: EngineOptions {
            revert_after_faults: config.policy.revert_after_faults,
            compile_cache: match &config.policy.compile_cache {
                Some(dir) => Some(dir.clone()),
                None => switchyard_controller::policy::compile_cache::default_dir(),
            },
        },
        snapshot: static_snapshot(config)?,
        agents: config.agents.as_ref().map(|a| {
            (
                agents_listen.unwrap_or(a.listen),
                switchyard_controller::agents::TlsPaths {
                    ca: a.ca.clone(),
                    cert: a.cert.clone(),
                    key: a.key.clone(),
                },
                switchyard_controller::agents::NodeAdmission {
                    nodes: a.nodes.clone(),
                    revoked_serials: a.revoked_serials.clone(),
                },
            )
        }),
        keys: switchyard_controller::front::keys::ApiKeys::from_config(&config.api_keys, &config.keyless)
            .map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?,
        limits: config.limits.limits(),
        decisions: config.decisions.options(),
        canary: config.canary,
    })
}

/// The admin token from `admin.token_file`: at least 16 characters.
fn admin_token(config: &ControllerConfig, config_path: &std::path::Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(&config.admin.token_file)
        .with_context(|| {
            format!(
                "{}: field `admin.token_file`: cannot read {}",
                config_path.display(),
                config.admin.token_file.display()
            )
        })?
        .trim()
        .to_owned();
    if token.len() < 16 {
        anyhow::bail!(
            "{}: the admin token must be at least 16 characters",
            config.admin.token_file.display()
        );
    }
    Ok(token)
}

/// The node table to start from: `cluster.static_snapshot`'s, or empty.
fn static_snapshot(config: &ControllerConfig) -> anyhow::Result<switchyard_protocol::ClusterSnapshot> {
    Ok(match &config.cluster.static_snapshot {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("{}: invalid snapshot", path.display()))?
        }
        None => Default::default(),
    })
}

/// The endpoint picker (`[gateway]`), bound and served beside the front door until `shutdown`.
async fn serve_picker(
    gateway: &switchyard_controller::config::GatewayConfig,
    config_path: &std::path::Path,
    front: std::sync::Arc<switchyard_controller::front::Front>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let grant = gateway
        .grant()
        .map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?;
    let listener = tokio::net::TcpListener::bind(gateway.picker_listen)
        .await
        .with_context(|| {
            format!(
                "{}: field `gateway.picker_listen`: cannot listen on {}",
                config_path.display(),
                gateway.picker_listen
            )
        })?;
    crate::say(&format!(
        "endpoint picker (Envoy ext_proc, gRPC) on {}",
        listener.local_addr()?
    ));
    tokio::spawn(async move {
        if let Err(e) = switchyard_epp::serve(listener, front, grant, shutdown).await {
            tracing::error!("the endpoint picker stopped: {e}");
        }
    });
    Ok(())
}

/// Write one message for the operator to stdout (the CLI's output, not a log line).
pub fn say(message: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{message}");
    let _ = out.flush();
}
