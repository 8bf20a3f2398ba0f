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
        /// Overrides `agents.listen` from the config.
        #[arg(long)]
        agents_listen: Option<SocketAddr>,
    },
    /// The cluster's certificates: a CA, the controller's, one per node.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// List the nodes a running controller knows, with their links and health.
    Nodes {
        #[command(flatten)]
        controller: Remote,
    },
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
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create the cluster CA and the controller's certificate.
    Init {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Extra names or IPs agents use to reach the controller (localhost and 127.0.0.1 are included).
        #[arg(long = "san")]
        sans: Vec<String>,
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Replace an existing CA (every issued certificate stops working).
        #[arg(long)]
        force: bool,
    },
    /// Issue a node's certificate bundle (nodes/<name>/ca.pem, node.pem, node.key), or
    /// re-issue the controller's certificate with `--controller`.
    Issue {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        #[arg(long, required_unless_present = "controller")]
        node: Option<String>,
        /// Re-issue the controller's certificate instead (rotation: agents see it at their next handshake).
        #[arg(long, conflicts_with = "node")]
        controller: bool,
        #[arg(long = "san")]
        sans: Vec<String>,
        #[arg(long, default_value_t = 90)]
        days: i64,
        /// Exact expiry, RFC 3339 (overrides --days).
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// List the certificates and when they expire.
    List {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
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
        Command::Certs(command) => certs(command),
        Command::Nodes { controller } => {
            let client = admin_client::AdminClient::new(&controller)?;
            let body = client
                .call("GET", "/admin/nodes", Vec::new(), "application/json")
                .await?;
            let view: crate::admin::NodesView = serde_json::from_slice(&body)?;
            crate::say(&format_nodes(&view));
            Ok(())
        }
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

fn certs(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Init { dir, sans, days, force } => {
            let written = crate::certs::init(&dir, &sans, days, force)?;
            for path in written {
                crate::say(&format!("wrote {}", path.display()));
            }
            crate::say(&format!(
                "next: `switchyard certs issue --dir {} --node <name>` for each machine",
                dir.display()
            ));
        }
        CertsCommand::Issue {
            dir,
            node,
            controller,
            sans,
            days,
            expires_at,
        } => {
            if controller {
                let (cert, key) = crate::certs::issue_controller(&dir, &sans, days)?;
                crate::say(&format!(
                    "wrote {} and {}; new agent handshakes use it",
                    cert.display(),
                    key.display()
                ));
            } else if let Some(node) = node {
                let bundle = crate::certs::issue_node(&dir, &node, days, expires_at.as_deref())?;
                crate::say(&format!(
                    "wrote {0}/ca.pem, {0}/node.pem, {0}/node.key: copy them to {node} and point its agent config's [controller] at them",
                    bundle.display()
                ));
            }
        }
        CertsCommand::List { dir } => {
            for (path, info) in crate::certs::list(&dir)? {
                let days = info.expires_in_s as f64 / 86_400.0;
                let state = if info.expires_in_s < 0 {
                    "EXPIRED".to_owned()
                } else {
                    format!("expires in {days:.0} days")
                };
                crate::say(&format!(
                    "{:<28} {:<40} {state} ({}), serial {}",
                    info.common_name,
                    path.display(),
                    info.not_after,
                    info.serial
                ));
            }
        }
    }
    Ok(())
}

fn format_nodes(view: &crate::admin::NodesView) -> String {
    let mut out = format!(
        "{:<10} {:<8} {:<10} {:>9} {:>9} {:>8}  {}\n",
        "node", "healthy", "runtime", "in-flight", "tok/s", "age", "link"
    );
    for node in &view.snapshot.nodes {
        let link = view.links.iter().find(|l| l.node == node.name);
        let link_text = match link {
            Some(l) if l.connected => format!(
                "mTLS from {}, cert expires in {} days",
                l.peer,
                l.cert.expires_in_s / 86_400
            ),
            Some(l) => format!("DOWN: {}", l.last_error.as_deref().unwrap_or("unknown")),
            None => "static (no agent)".to_owned(),
        };
        out.push_str(&format!(
            "{:<10} {:<8} {:<10} {:>4}/{:<4} {:>9} {:>6}ms  {link_text}\n",
            node.name,
            node.healthy,
            node.runtime,
            node.in_flight,
            node.max_concurrency,
            node.tokens_per_sec
                .map(|t| format!("{t:.1}"))
                .unwrap_or_else(|| "-".into()),
            node.last_seen_ms,
        ));
    }
    out.trim_end().to_owned()
}

async fn serve(
    config_path: PathBuf,
    listen: Option<SocketAddr>,
    agents_listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
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
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("{}: invalid snapshot", path.display()))?
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
        agents: config.agents.as_ref().map(|a| {
            (
                agents_listen.unwrap_or(a.listen),
                crate::agents::TlsPaths {
                    ca: a.ca.clone(),
                    cert: a.cert.clone(),
                    key: a.key.clone(),
                },
                crate::agents::NodeAdmission {
                    nodes: a.nodes.clone(),
                    revoked_serials: a.revoked_serials.clone(),
                },
            )
        }),
        keys: crate::front::keys::ApiKeys::from_config(&config.api_keys)
            .map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?,
        limits: config.limits.limits(),
    };
    let running = app::start(settings).await?;
    crate::say(&format!("switchyard listening on http://{}", running.addr));
    if let Some(agents) = running.agents_addr {
        crate::say(&format!("agents link to {agents} (mTLS)"));
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    running.serve(shutdown).await;
    Ok(())
}

/// Cancel `shutdown` on Ctrl-C or SIGTERM.
pub async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
