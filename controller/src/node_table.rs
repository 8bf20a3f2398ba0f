//! The node table: nodes from the static snapshot (policy development, the demo without
//! agents) plus every node linked over mTLS, with its latest telemetry, link state and
//! certificate. Each change rebuilds the cluster snapshot, prepares it for policies once,
//! and swaps it and the connected nodes' links in behind `ArcSwap`s, so the request path
//! reads them without a lock. Nodes the operator drains are shown to policies as unhealthy
//! (no new work) while their in-flight requests finish.

use parking_lot::{Mutex, MutexGuard};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use switchyard_protocol::tls::CertInfo;
use switchyard_protocol::{AgentTelemetry, ClusterSnapshot, GpuSample, NodeSnapshot};

use crate::policy::{LiveLoad, PreparedSnapshot};

/// A node linked over mTLS.
#[derive(Debug, Clone)]
struct Linked {
    telemetry: AgentTelemetry,
    received_at: Instant,
    connection: u64,
    connected: bool,
    since: SystemTime,
    cert: CertInfo,
    peer: String,
    last_error: Option<String>,
    /// The HTTP/2 client over this node's link, for forwarding requests.
    sender: Option<AgentSender>,
}

/// The controller's HTTP/2 client over one agent link.
pub type AgentSender = hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>;

/// What `/admin/nodes` shows about a node's link.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkView {
    pub node: String,
    pub connected: bool,
    pub peer: String,
    /// Seconds since the Unix epoch when the current (or last) link came up.
    pub since_unix_s: u64,
    pub telemetry_age_ms: u64,
    pub cert: CertInfo,
    pub last_error: Option<String>,
    pub runtime: Option<switchyard_protocol::RuntimeKind>,
    pub simulated: bool,
    /// Battery charge, where the machine has one.
    #[serde(default)]
    pub battery_pct: Option<f32>,
    /// The OS's thermal pressure level, where it says.
    #[serde(default)]
    pub thermal_pressure: Option<String>,
    /// The models the agent starts itself, and their memory budget.
    #[serde(default)]
    pub models: Vec<switchyard_protocol::ModelState>,
    #[serde(default)]
    pub memory_budget_mb: Option<u64>,
    /// Energy used since the agent started, per token, and where the figure comes from.
    #[serde(default)]
    pub energy: Option<switchyard_protocol::EnergyTelemetry>,
    /// What the node's shared runtime reports resident (Ollama's `/api/ps`), with its memory.
    #[serde(default)]
    pub resident: Vec<switchyard_protocol::LoadedModel>,
    /// The share of prompt tokens the runtime found in its prefix cache since the agent
    /// started, in percent (`None` before any answer reported its prompt).
    #[serde(default)]
    pub prefix_cache_hit_pct: Option<f32>,
    /// The agent's copy of the runtime's prefix cache (vLLM's KV-cache events), where it
    /// keeps one.
    #[serde(default)]
    pub kv_events: Option<switchyard_protocol::KvEventsTelemetry>,
    /// The runtime's endpoint (`host:port`) as the agent reports it: where a gateway sends
    /// what the endpoint picker chose.
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// Where a gateway reaches a node's runtime: `host:port` of the runtime's base URL
/// (`http://10.0.0.5:8000/v1` → `10.0.0.5:8000`), with a loopback host (the usual
/// `http://127.0.0.1:8000`, which means the agent's own machine) replaced by the address the
/// agent's link comes from (`peer`, `ip:port`). `None` without an explicit port.
fn runtime_endpoint(base_url: &str, peer: &str) -> Option<String> {
    let authority = base_url.split_once("://").map_or(base_url, |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or_default();
    let (host, port) = authority.rsplit_once(':')?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return None;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare == "localhost" || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let peer_ip = peer
        .parse::<std::net::SocketAddr>()
        .map(|p| p.ip())
        .ok()
        .filter(|ip| !ip.is_loopback());
    Some(match (loopback, peer_ip) {
        (true, Some(std::net::IpAddr::V6(ip))) => format!("[{ip}]:{port}"),
        (true, Some(ip)) => format!("{ip}:{port}"),
        _ => authority.to_owned(),
    })
}

/// Each linked node's runtime endpoint; endpoints claimed by two nodes are given to neither
/// (a gateway could not tell them apart).
fn endpoints_of(linked: &HashMap<String, Linked>) -> HashMap<String, String> {
    let mut endpoints: HashMap<String, String> = linked
        .iter()
        .filter_map(|(name, e)| {
            Some((
                name.clone(),
                runtime_endpoint(&e.telemetry.runtime.as_ref()?.base_url, &e.peer)?,
            ))
        })
        .collect();
    let mut claimed: HashMap<String, usize> = HashMap::new();
    for endpoint in endpoints.values() {
        *claimed.entry(endpoint.clone()).or_default() += 1;
    }
    endpoints.retain(|node, endpoint| {
        let unique = claimed[endpoint.as_str()] == 1;
        if !unique {
            tracing::warn!(%node, %endpoint, "two nodes report the same runtime endpoint; the endpoint picker uses neither");
        }
        unique
    });
    endpoints
}

/// One publication of the node table: the policies' view of the cluster, the links of the
/// connected nodes and their energy figures, all of the same moment. A request reads one
/// (and a fresh one for each retry), so the nodes it decides on and the links it sends over
/// never come from different publications.
#[derive(Debug)]
pub struct Published {
    pub prepared: Arc<PreparedSnapshot>,
    senders: HashMap<String, AgentSender>,
    energy: HashMap<String, switchyard_protocol::EnergyTelemetry>,
    /// Nodes whose agents keep a current copy of the runtime's prefix cache and answer
    /// `POST /cache/probe` (the precise cache estimate).
    cache_probes: std::collections::HashSet<String>,
    /// Each linked node's runtime endpoint (`host:port`), as its agent reports it: where a
    /// gateway sends what the picker chose.
    endpoints: HashMap<String, String>,
}

impl Published {
    pub fn snapshot(&self) -> &ClusterSnapshot {
        self.prepared.snapshot()
    }

    /// The link to `node`, if it was connected at this publication.
    pub fn sender(&self, node: &str) -> Option<AgentSender> {
        self.senders.get(node).cloned()
    }

    /// `node`'s runtime endpoint (`host:port`), if its agent reports one.
    pub fn endpoint(&self, node: &str) -> Option<&str> {
        self.endpoints.get(node).map(String::as_str)
    }

    /// Whether `node`'s agent answers cache probes (and is connected) at this publication.
    pub fn answers_cache_probes(&self, node: &str) -> bool {
        self.cache_probes.contains(node) && self.senders.contains_key(node)
    }

    /// `node`'s energy figures from its last telemetry, if it reports any.
    pub fn energy(&self, node: &str) -> Option<&switchyard_protocol::EnergyTelemetry> {
        self.energy.get(node)
    }
}

#[derive(Debug)]
pub struct NodeTable {
    static_nodes: Vec<NodeSnapshot>,
    linked: Mutex<HashMap<String, Linked>>,
    /// The table as the request path reads it, one publication per change.
    published: ArcSwap<Published>,
    /// The controller's own in-flight counts, shown to policies instead of telemetry's.
    live: std::sync::OnceLock<Arc<dyn LiveLoad>>,
    /// Nodes the operator drained (no new work), by name; kept across reconnections.
    drained: Mutex<BTreeSet<String>>,
    /// Telemetry arrived that is not published yet.
    dirty: std::sync::atomic::AtomicBool,
    generation: std::sync::atomic::AtomicU64,
}

impl NodeTable {
    pub fn new(snapshot: ClusterSnapshot) -> Self {
        Self {
            published: ArcSwap::from_pointee(Published {
                prepared: Arc::new(PreparedSnapshot::from(snapshot.clone())),
                senders: HashMap::new(),
                energy: HashMap::new(),
                cache_probes: Default::default(),
                endpoints: HashMap::new(),
            }),
            static_nodes: snapshot.nodes,
            linked: Mutex::new(HashMap::new()),
            live: std::sync::OnceLock::new(),
            drained: Mutex::new(BTreeSet::new()),
            dirty: std::sync::atomic::AtomicBool::new(false),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn linked(&self) -> MutexGuard<'_, HashMap<String, Linked>> {
        self.linked.lock()
    }

    pub fn snapshot(&self) -> Arc<ClusterSnapshot> {
        self.published.load().prepared.shared()
    }

    pub fn prepared(&self) -> Arc<PreparedSnapshot> {
        self.published.load().prepared.clone()
    }

    /// The current publication: nodes, links and energy of one moment.
    pub fn published(&self) -> Arc<Published> {
        self.published.load_full()
    }

    /// Show policies `live`'s in-flight counts (the front door's admission) from now on.
    pub fn use_live_load(&self, live: Arc<dyn LiveLoad>) {
        if self.live.set(live).is_ok() {
            self.rebuild(&self.linked());
        }
    }

    /// Replace the static nodes' snapshot (linked nodes stay).
    pub fn replace(&self, snapshot: ClusterSnapshot) {
        let linked = self.linked();
        self.publish(&snapshot.nodes, &linked);
    }

    fn rebuild(&self, linked: &HashMap<String, Linked>) {
        self.publish(&self.static_nodes, linked);
    }

    fn drained_names(&self) -> BTreeSet<String> {
        self.drained.lock().clone()
    }

    fn publish(&self, static_nodes: &[NodeSnapshot], linked: &HashMap<String, Linked>) {
        let mut nodes: Vec<NodeSnapshot> = static_nodes
            .iter()
            .filter(|n| !linked.contains_key(&n.name))
            .cloned()
            .collect();
        let mut names: Vec<&String> = linked.keys().collect();
        names.sort();
        for name in names {
            let entry = &linked[name];
            nodes.push(to_snapshot(name, entry));
        }
        let drained = self.drained_names();
        for node in nodes.iter_mut().filter(|n| drained.contains(&n.name)) {
            node.healthy = false;
        }
        let prepared = PreparedSnapshot::from(ClusterSnapshot { nodes }).with_live_load(self.live.get().cloned());
        let senders = linked
            .iter()
            .filter(|(_, e)| e.connected)
            .filter_map(|(name, e)| Some((name.clone(), e.sender.clone()?)))
            .collect();
        let energy = linked
            .iter()
            .filter_map(|(name, e)| Some((name.clone(), e.telemetry.energy.clone()?)))
            .collect();
        let cache_probes = linked
            .iter()
            .filter(|(_, e)| {
                let kv = e.telemetry.runtime.as_ref().and_then(|r| r.kv_events.as_ref());
                kv.is_some_and(|kv| kv.current)
            })
            .map(|(name, _)| name.clone())
            .collect();
        let endpoints = endpoints_of(linked);
        self.published.store(Arc::new(Published {
            prepared: Arc::new(prepared),
            senders,
            energy,
            cache_probes,
            endpoints,
        }));
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A link came up. Refused (with the reason) while another link for the same node is
    /// connected: a second holder of a node's certificate must not take its traffic, nor
    /// strand the real agent when it leaves. A node whose old link died is back as soon as
    /// that death is noticed (HTTP/2 pings, within seconds).
    pub fn connected(
        &self,
        name: &str,
        connection: u64,
        peer: String,
        cert: CertInfo,
        telemetry: AgentTelemetry,
        sender: AgentSender,
    ) -> Result<(), String> {
        let mut linked = self.linked();
        if let Some(existing) = linked.get(name).filter(|e| e.connected && e.connection != connection) {
            return Err(format!(
                "node '{name}' is already linked from {} (since {} s ago); a second link with the same certificate is refused. \
                 If that agent is gone, this one is accepted once its link is noticed dead (within seconds)",
                existing.peer,
                existing.since.elapsed().map(|d| d.as_secs()).unwrap_or(0)
            ));
        }
        linked.insert(
            name.to_owned(),
            Linked {
                telemetry,
                received_at: Instant::now(),
                connection,
                connected: true,
                since: SystemTime::now(),
                cert,
                peer,
                last_error: None,
                sender: Some(sender),
            },
        );
        self.rebuild(&linked);
        Ok(())
    }

    /// New telemetry on a link; ignored if the link was replaced meanwhile.
    pub fn update(&self, name: &str, connection: u64, telemetry: AgentTelemetry) {
        let mut linked = self.linked();
        let Some(entry) = linked.get_mut(name).filter(|e| e.connection == connection) else {
            return;
        };
        entry.telemetry = telemetry;
        entry.received_at = Instant::now();
        // Published by the next `publish_pending`, at most every `PUBLISH_EVERY`: a rebuild
        // per sample would cost (nodes x samples) rebuilds, quadratic in the cluster's size.
        self.dirty.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Publish telemetry received since the last publication, if any.
    pub fn publish_pending(&self) {
        if self.dirty.swap(false, std::sync::atomic::Ordering::AcqRel) {
            self.rebuild(&self.linked());
        }
    }

    /// Snapshots published so far (each change of links, and each batch of telemetry).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How often telemetry received is published.
    pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);

    /// A link went down: the node stays listed, unhealthy, until it returns.
    pub fn disconnected(&self, name: &str, connection: u64, why: String) {
        let mut linked = self.linked();
        let Some(entry) = linked.get_mut(name).filter(|e| e.connection == connection) else {
            return;
        };
        entry.connected = false;
        entry.last_error = Some(why);
        entry.sender = None;
        self.rebuild(&linked);
    }

    /// Whether the operator drained `node`.
    pub fn is_drained(&self, node: &str) -> bool {
        self.drained.lock().contains(node)
    }

    /// Drain `node` (no new work; in-flight requests finish) or undrain it. `Err` names the
    /// nodes there are when `node` is not one of them.
    pub fn set_drained(&self, node: &str, drained: bool) -> Result<(), String> {
        let linked = self.linked();
        let known = linked.contains_key(node) || self.static_nodes.iter().any(|n| n.name == node);
        if !known {
            let mut names: Vec<&str> = linked.keys().map(String::as_str).collect();
            names.extend(self.static_nodes.iter().map(|n| n.name.as_str()));
            names.sort_unstable();
            return Err(format!("no node '{node}'; the nodes are: {}", names.join(", ")));
        }
        {
            let mut set = self.drained.lock();
            if drained {
                set.insert(node.to_owned());
            } else {
                set.remove(node);
            }
        }
        self.rebuild(&linked);
        Ok(())
    }

    /// Why each unhealthy or drained node takes no new work, by node name.
    pub fn health_reasons(&self) -> BTreeMap<String, String> {
        let linked = self.linked();
        let drained = self.drained_names();
        let mut out = BTreeMap::new();
        for node in &self.static_nodes {
            if !linked.contains_key(&node.name) && !node.healthy {
                out.insert(node.name.clone(), "marked unhealthy in the static snapshot".to_owned());
            }
        }
        for (name, entry) in linked.iter() {
            if let Some(reason) = unhealthy_because(entry) {
                out.insert(name.clone(), reason);
            }
        }
        for name in drained {
            let reason = format!("drained by the operator (`switchyard node undrain {name}` to end it)");
            out.entry(name)
                .and_modify(|r| *r = format!("{reason}; also {r}"))
                .or_insert(reason);
        }
        out
    }

    /// The link to `node`, if it is connected.
    pub fn sender(&self, node: &str) -> Option<AgentSender> {
        self.published.load().sender(node)
    }

    /// Rebuild the snapshot so that telemetry ages (and staleness) stay current.
    pub fn refresh(&self) {
        self.dirty.store(false, std::sync::atomic::Ordering::Release);
        let linked = self.linked();
        if !linked.is_empty() {
            self.rebuild(&linked);
        }
    }

    pub fn links(&self) -> Vec<LinkView> {
        let linked = self.linked();
        // The endpoints the picker uses (one claimed by two nodes is shown for neither).
        let mut endpoints = endpoints_of(&linked);
        let mut views: Vec<LinkView> = linked
            .iter()
            .map(|(name, e)| LinkView {
                node: name.clone(),
                connected: e.connected,
                peer: e.peer.clone(),
                since_unix_s: e.since.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                telemetry_age_ms: e.received_at.elapsed().as_millis() as u64,
                cert: e.cert.clone(),
                last_error: e.last_error.clone(),
                runtime: e.telemetry.runtime.as_ref().map(|r| r.kind),
                simulated: e.telemetry.runtime.as_ref().is_some_and(|r| r.simulated),
                battery_pct: e.telemetry.power.battery_pct,
                thermal_pressure: e.telemetry.power.thermal_pressure.clone(),
                models: e.telemetry.model_states.clone(),
                memory_budget_mb: e.telemetry.memory_budget_mb,
                energy: e.telemetry.energy.clone(),
                resident: e
                    .telemetry
                    .runtime
                    .as_ref()
                    .map(|r| r.loaded_models.clone())
                    .unwrap_or_default(),
                prefix_cache_hit_pct: {
                    let p = &e.telemetry.performance;
                    (p.prompt_tokens_total > 0)
                        .then(|| (p.cached_prompt_tokens_total as f64 * 100.0 / p.prompt_tokens_total as f64) as f32)
                },
                kv_events: e.telemetry.runtime.as_ref().and_then(|r| r.kv_events.clone()),
                endpoint: endpoints.remove(name),
            })
            .collect();
        views.sort_by(|a, b| a.node.cmp(&b.node));
        views
    }

    /// Telemetry older than this marks a connected node unhealthy too.
    pub const STALE_AFTER: Duration = Duration::from_secs(5);
}

/// Why a linked node takes no work, in the words an operator needs; `None` when healthy.
fn unhealthy_because(entry: &Linked) -> Option<String> {
    let age = entry.received_at.elapsed();
    if !entry.connected {
        return Some(format!(
            "link down: {}",
            entry.last_error.as_deref().unwrap_or("closed")
        ));
    }
    if age >= NodeTable::STALE_AFTER {
        return Some(format!(
            "no telemetry for {:.1} s (the agent stopped reporting)",
            age.as_secs_f32()
        ));
    }
    if entry.telemetry.power.sleeping {
        return Some("the machine is going to sleep (`POST /power/wake` on its agent, or it wakes)".to_owned());
    }
    match entry.telemetry.runtime.as_ref() {
        None => Some("the agent reports no runtime".to_owned()),
        Some(r) if !r.healthy => Some(format!(
            "runtime {} unhealthy: {}",
            r.kind,
            r.error.as_deref().unwrap_or("its health probe failed")
        )),
        Some(_) => None,
    }
}

fn to_snapshot(name: &str, entry: &Linked) -> NodeSnapshot {
    let t = &entry.telemetry;
    let runtime = t.runtime.as_ref();
    let fresh = entry.received_at.elapsed() < NodeTable::STALE_AFTER;
    // A node whose link is gone runs nothing for this controller: its last counts are history.
    let (in_flight, queued) = if entry.connected {
        (
            t.performance.in_flight.max(runtime.map(|r| r.running).unwrap_or(0)),
            runtime.map(|r| r.waiting).unwrap_or(0),
        )
    } else {
        (0, 0)
    };
    NodeSnapshot {
        name: name.to_owned(),
        labels: t.labels.clone(),
        runtime: runtime.map(|r| r.kind).unwrap_or_default(),
        healthy: entry.connected && fresh && !t.power.sleeping && runtime.is_some_and(|r| r.healthy),
        in_flight,
        queued,
        max_concurrency: t.limits.max_concurrency,
        max_tokens: t.limits.max_tokens,
        cpu_util_pct: t.system.cpu_util_pct,
        mem_used_mb: t.system.mem_used_mb,
        mem_total_mb: t.system.mem_total_mb,
        gpus: t
            .gpus
            .iter()
            .map(|g| GpuSample {
                name: g.name.clone(),
                util_pct: g.util_pct,
                mem_used_mb: g.mem_used_mb,
                mem_total_mb: g.mem_total_mb,
                temp_c: g.temp_c,
                power_w: g.power_w,
                throttled: g.throttled(),
            })
            .collect(),
        on_battery: t.power.on_battery,
        thermal_throttled: t.power.thermal_throttled,
        tokens_per_sec: t.performance.tokens_per_sec,
        prefill_tokens_per_sec: t.performance.prefill_tokens_per_sec,
        ttft_ms: t.performance.ttft_ms,
        models: t.models.clone(),
        last_seen_ms: entry.received_at.elapsed().as_millis() as u64,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_runtime_on_the_agents_own_loopback_is_reached_at_the_agents_address() {
        let at = |url: &str, peer: &str| super::runtime_endpoint(url, peer);
        assert_eq!(
            at("http://127.0.0.1:8000", "192.168.1.20:51000").as_deref(),
            Some("192.168.1.20:8000")
        );
        assert_eq!(
            at("http://localhost:8000/v1", "[fe80::1]:4000").as_deref(),
            Some("[fe80::1]:8000")
        );
        assert_eq!(
            at("http://10.0.0.5:8000", "192.168.1.20:51000").as_deref(),
            Some("10.0.0.5:8000")
        );
        // Everything on one machine (the tests): loopback stays loopback.
        assert_eq!(
            at("http://127.0.0.1:8000", "127.0.0.1:51000").as_deref(),
            Some("127.0.0.1:8000")
        );
        assert_eq!(at("http://127.0.0.1", "192.168.1.20:51000"), None);
    }

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    use super::*;

    /// A real HTTP/2 client over an in-memory pipe, standing for an agent's link.
    async fn link() -> AgentSender {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_request| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(server), service)
                .await;
        });
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake::<_, Full<Bytes>>(TokioIo::new(client))
            .await
            .expect("HTTP/2 over the pipe");
        tokio::spawn(connection);
        sender
    }

    fn cert(node: &str) -> CertInfo {
        CertInfo {
            common_name: node.into(),
            serial: "01".into(),
            not_before: String::new(),
            not_after: String::new(),
            expires_in_s: 86_400,
        }
    }

    #[tokio::test]
    async fn telemetry_is_published_in_batches_not_once_per_sample() {
        let table = NodeTable::new(ClusterSnapshot::default());
        let cert = cert("xeon");
        let telemetry = crate::agents::telemetry_bounds::sample_telemetry();
        table
            .connected("xeon", 1, "peer".into(), cert, telemetry.clone(), link().await)
            .expect("linked");
        let linked = table.generation();
        assert_eq!(table.snapshot().nodes.len(), 1, "a link is published at once");
        for _ in 0..1000 {
            table.update("xeon", 1, telemetry.clone());
        }
        assert_eq!(table.generation(), linked, "samples alone publish nothing");
        table.publish_pending();
        assert_eq!(table.generation(), linked + 1, "one publication for the batch");
        table.publish_pending();
        assert_eq!(table.generation(), linked + 1, "nothing new, nothing published");
        table.disconnected("xeon", 1, "gone".into());
        assert_eq!(table.generation(), linked + 2, "a lost link is published at once");
        assert!(!table.snapshot().nodes[0].healthy);
    }

    #[tokio::test]
    async fn a_node_says_why_it_takes_no_work_and_a_lost_one_keeps_no_in_flight_count() {
        let table = NodeTable::new(ClusterSnapshot::default());
        let cert = cert("xeon");
        let mut telemetry = crate::agents::telemetry_bounds::sample_telemetry();
        telemetry.performance.in_flight = 2;
        telemetry.runtime = Some(switchyard_protocol::RuntimeTelemetry {
            kind: switchyard_protocol::RuntimeKind::Ollama,
            simulated: false,
            base_url: "http://127.0.0.1:11434".into(),
            healthy: true,
            error: None,
            running: 2,
            waiting: 0,
            kv_cache_usage_pct: None,
            loaded_models: Vec::new(),
            supervisor: None,
            kv_events: None,
        });
        table
            .connected("xeon", 1, "peer".into(), cert, telemetry.clone(), link().await)
            .expect("linked");
        assert!(table.health_reasons().is_empty(), "{:?}", table.health_reasons());
        assert_eq!(table.snapshot().nodes[0].in_flight, 2);

        if let Some(runtime) = telemetry.runtime.as_mut() {
            runtime.healthy = false;
            runtime.error = Some("http://127.0.0.1:11434/api/ps: error sending request".into());
        }
        table.update("xeon", 1, telemetry);
        table.publish_pending();
        let reasons = table.health_reasons();
        assert!(
            reasons["xeon"].ends_with("unhealthy: http://127.0.0.1:11434/api/ps: error sending request"),
            "{reasons:?}"
        );

        table.set_drained("xeon", true).expect("known node");
        assert!(table.health_reasons()["xeon"].starts_with("drained by the operator"));
        let err = table.set_drained("ghost", true).expect_err("unknown");
        assert_eq!(err, "no node 'ghost'; the nodes are: xeon");

        table.disconnected("xeon", 1, "connection reset".into());
        let node = table.snapshot().nodes[0].clone();
        assert_eq!(
            (node.in_flight, node.healthy),
            (0, false),
            "a lost node's last counts are gone"
        );
        assert!(table.health_reasons()["xeon"].contains("link down: connection reset"));
        table.set_drained("xeon", false).expect("undrain");
        assert_eq!(table.health_reasons()["xeon"], "link down: connection reset");
    }
}
