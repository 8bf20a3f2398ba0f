//! The composition root: start-up builds every part (policy engine, node table, decision
//! record, the agents' listener) and hands each room the handles it uses (the front door,
//! the admin API, `/metrics`); the router sends each request to its room. Nothing but the
//! operator's entry points (`serve`, `demo`) imports this module.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use switchyard_protocol::ClusterSnapshot;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http::{Handler, ResponseBody, error_json, json, text};
use crate::node_table::NodeTable;
use crate::policy::{EngineOptions, Policies};
use crate::watch::PolicyDirWatcher;

/// How long answers in flight may drain after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The router over the rooms: each request goes to the one whose paths it names.
#[derive(Debug)]
pub struct App {
    pub front: Arc<crate::front::Front>,
    pub admin: Arc<crate::admin::Admin>,
    pub metrics: crate::metrics::Sources,
}

impl Handler for App {
    fn handle(self: Arc<Self>, request: Request<Incoming>) -> crate::http::server_future::HandlerFuture {
        Box::pin(async move { route(self, request).await })
    }
}

async fn route(app: Arc<App>, request: Request<Incoming>) -> Response<ResponseBody> {
    let path = request.uri().path();
    if path.starts_with("/admin/") {
        return crate::admin::handle(app.admin.clone(), request).await;
    }
    if path.starts_with("/v1/") || path.starts_with("/api/") || path == "/" {
        let method = request.method().clone();
        let path = path.to_owned();
        return match crate::front::handle(app.front.clone(), request).await {
            Some(response) => response,
            None => error_json(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no endpoint {method} {path}"),
            ),
        };
    }
    if request.method() == Method::GET
        && path.starts_with("/dashboard")
        && let Some(page) = crate::dashboard::serve(path)
    {
        return page;
    }
    match (request.method(), path) {
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            crate::metrics::render(&app.metrics),
        ),
        (&Method::GET, "/healthz") => json(
            StatusCode::OK,
            &serde_json::json!({ "status": "ok", "policy": app.front.engine.active().map(|p| p.id.to_string()) }),
        ),
        _ => error_json(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no endpoint {} {path}", request.method()),
        ),
    }
}

/// Everything `serve` needs, resolved from a config file or built by `demo`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub admin_token: String,
    pub policy_dir: Option<PathBuf>,
    pub active_policy: Option<String>,
    pub watch: bool,
    pub watch_interval: Duration,
    pub engine: EngineOptions,
    pub snapshot: ClusterSnapshot,
    /// Where agents link in, and the link's certificates.
    pub agents: Option<(SocketAddr, crate::agents::TlsPaths, crate::agents::NodeAdmission)>,
    /// Prompt API keys (empty: open).
    pub keys: crate::front::keys::ApiKeys,
    pub limits: crate::front::forward::FrontLimits,
    /// The decision record's store (`None`: no record kept).
    pub decisions: Option<crate::decisions::StoreOptions>,
    pub canary: crate::policy::canary::CanaryRules,
}

/// A controller that has bound its port and loaded its policies.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    /// Where agents link in, if configured.
    pub agents_addr: Option<SocketAddr>,
    listener: TcpListener,
    watcher: Option<PolicyDirWatcher>,
    agents: Option<crate::agents::AgentListener>,
}

/// Load policies, activate, bind. Errors here are start-up errors (bad config, bad policy
/// named active, port taken); nothing is served yet.
pub async fn start(settings: Settings) -> anyhow::Result<Running> {
    let policies = Policies::new(settings.engine.clone())?;
    let nodes = Arc::new(NodeTable::new(settings.snapshot.clone()));
    let watcher = load_policies(&settings, &policies, &nodes).await?;
    let open_files = crate::http::open_files::ensure_for(settings.limits.max_connections)?;
    tracing::debug!(open_files, "open-file limit");
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.listen))?;
    let addr = listener.local_addr()?;
    let agents = match settings.agents.clone() {
        Some(agents) => Some(agent_listener(agents, &nodes).await?),
        None => None,
    };
    let agents_addr = agents.as_ref().map(|a| a.local_addr()).transpose()?;
    if settings.keys.is_open() {
        tracing::warn!("no [[api_keys]] configured: the prompt API is open to anyone who can reach it");
    }
    let decisions = match &settings.decisions {
        Some(options) => {
            let store = crate::decisions::DecisionStore::open(options.clone())?;
            tracing::info!(path = %store.path().display(), "decision record kept");
            let events = store.clone();
            policies
                .rehearsal
                .on_policy_event(Box::new(move |event| events.event(event.clone())));
            Some(store)
        }
        None => None,
    };
    let watcher = if settings.watch { watcher } else { None };
    Ok(Running {
        addr,
        app: rooms(settings, policies, nodes, decisions),
        agents_addr,
        listener,
        watcher,
        agents,
    })
}

/// Load the policy folder (each refused file is logged) and activate the configured policy.
async fn load_policies(
    settings: &Settings,
    policies: &Policies,
    nodes: &Arc<NodeTable>,
) -> anyhow::Result<Option<PolicyDirWatcher>> {
    let Some(dir) = &settings.policy_dir else {
        return Ok(None);
    };
    let mut watcher = PolicyDirWatcher::new(
        dir.clone(),
        policies.registry.clone(),
        nodes.clone(),
        settings.watch_interval,
    );
    let watcher = tokio::task::spawn_blocking(move || {
        watcher.scan();
        watcher
    })
    .await?;
    if let Some(active) = &settings.active_policy {
        policies
            .registry
            .activate(active)
            .map_err(|e| anyhow::anyhow!("cannot activate policy {active:?} from {}: {e}", dir.display()))?;
    }
    Ok(Some(watcher))
}

/// The agents' mTLS listener, bound.
async fn agent_listener(
    (listen, paths, admission): (SocketAddr, crate::agents::TlsPaths, crate::agents::NodeAdmission),
    nodes: &Arc<NodeTable>,
) -> anyhow::Result<crate::agents::AgentListener> {
    let tls = crate::agents::ServerTls::load(paths).map_err(|e| anyhow::anyhow!("agent link certificates: {e:#}"))?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for agents on {listen}: {e}"))?;
    Ok(crate::agents::AgentListener::new(
        listener,
        Arc::new(tls),
        nodes.clone(),
        Default::default(),
        admission,
    ))
}

/// The rooms, each with the handles it uses, behind the router.
fn rooms(
    settings: Settings,
    policies: Policies,
    nodes: Arc<NodeTable>,
    decisions: Option<Arc<crate::decisions::DecisionStore>>,
) -> Arc<App> {
    let front = Arc::new(crate::front::Front::new(
        policies.engine.clone(),
        nodes.clone(),
        decisions.clone(),
        settings.keys,
        settings.limits,
    ));
    nodes.use_live_load(front.admission.clone());
    let admin = Arc::new(crate::admin::Admin {
        token: settings.admin_token,
        registry: policies.registry.clone(),
        engine: policies.engine.clone(),
        rehearsal: policies.rehearsal.clone(),
        nodes: nodes.clone(),
        admission: front.admission.clone(),
        handover: front.handover.clone(),
        decisions,
        canary_rules: settings.canary,
    });
    let metrics = crate::metrics::Sources {
        registry: policies.registry,
        rehearsal: policies.rehearsal,
        nodes,
        front: front.metrics.clone(),
        admission: front.admission.clone(),
        keys: front.keys.shares().clone(),
    };
    Arc::new(App { front, admin, metrics })
}

impl Running {
    /// Serve until `shutdown` is cancelled, then drain in-flight requests for up to
    /// `SHUTDOWN_GRACE`. The agents' links stay up while answers drain (they carry them);
    /// just before the grace ends, answers still running are ended with an explicit error
    /// in their client's framing, never cut silently.
    pub async fn serve(self, shutdown: CancellationToken) {
        if let Some(watcher) = self.watcher {
            tokio::spawn(watcher.run(shutdown.clone()));
        }
        let links_down = CancellationToken::new();
        if let Some(agents) = self.agents {
            tokio::spawn(agents.run(links_down.clone()));
        }
        let closing = self.app.front.closing.clone();
        let grace_ends = shutdown.clone();
        tokio::spawn(async move {
            grace_ends.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE.saturating_sub(Duration::from_millis(500))).await;
            closing.cancel();
        });
        let limits = crate::http::ConnectionLimits {
            max_connections: self.app.front.limits.max_connections,
            header_read_timeout: self.app.front.limits.header_read_timeout,
            max_connections_per_address: self.app.front.limits.max_connections_per_address,
            idle_timeout: self.app.front.limits.idle_timeout,
        };
        let decisions = self.app.front.decisions.clone();
        crate::http::serve(self.listener, self.app, shutdown, SHUTDOWN_GRACE, limits).await;
        links_down.cancel();
        // Every answer has ended: what the record holds of them is written before the process
        // ends (the writer commits in batches on its own thread).
        if let Some(store) = decisions {
            let _ = tokio::task::spawn_blocking(move || store.flush()).await;
        }
    }
}
