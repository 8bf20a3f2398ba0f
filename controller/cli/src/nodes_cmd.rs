//! `switchyard nodes` (the node table as an operator reads it: health and why not, load,
//! the runtime's prefix-cache hit rate, heat, battery, links, certificate expiry) and `switchyard node drain|undrain NAME`.

use std::time::{Duration, Instant};

use clap::Subcommand;

use super::Remote;
use super::admin_client::AdminClient;
use switchyard_controller::admin::NodesView;
use switchyard_controller::certs::RENEW_WITHIN_DAYS;

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Stop sending new work to a node; requests already there finish.
    Drain {
        /// The node's name, as `switchyard nodes` lists it.
        node: String,
        /// Wait until the node has no request in flight (for at most --timeout-s).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
        /// Streams still running on the node after this many seconds continue on other nodes
        /// (without it, they finish where they are).
        #[arg(long)]
        deadline_s: Option<u32>,
        #[command(flatten)]
        controller: Remote,
    },
    /// Send work to a drained node again.
    Undrain {
        /// The node's name.
        node: String,
        #[command(flatten)]
        controller: Remote,
    },
}

async fn view(client: &AdminClient) -> anyhow::Result<NodesView> {
    let body = client.get("/admin/nodes").await?;
    Ok(serde_json::from_slice(&body)?)
}

pub async fn list(controller: &Remote) -> anyhow::Result<()> {
    let client = AdminClient::new(controller)?;
    crate::say(&format_nodes(&view(&client).await?));
    Ok(())
}

pub async fn run(command: NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::Drain {
            node,
            wait,
            timeout_s,
            deadline_s,
            controller,
        } => {
            let client = AdminClient::new(&controller)?;
            let body = match deadline_s {
                Some(seconds) => serde_json::json!({ "deadline_s": seconds }).to_string().into_bytes(),
                None => Vec::new(),
            };
            let reply = client
                .call("POST", &format!("/admin/nodes/{node}/drain"), body, "application/json")
                .await?;
            let in_flight = serde_json::from_slice::<serde_json::Value>(&reply)?["in_flight"]
                .as_u64()
                .unwrap_or(0);
            let fate = match deadline_s {
                Some(seconds) => format!("finish, or move to other nodes after {seconds} s"),
                None => "finish".to_owned(),
            };
            crate::say(&format!(
                "node {node} drained: no new work goes there; {in_flight} request(s) in flight {fate} (`switchyard node undrain {node}` ends it)"
            ));
            if wait {
                let deadline = Instant::now() + Duration::from_secs(timeout_s);
                loop {
                    let left = view(&client)
                        .await?
                        .snapshot
                        .node(&node)
                        .map(|n| n.in_flight)
                        .unwrap_or(0);
                    if left == 0 {
                        crate::say(&format!("node {node} has nothing in flight: safe to stop"));
                        break;
                    }
                    if Instant::now() > deadline {
                        anyhow::bail!("node {node} still has {left} request(s) in flight after {timeout_s} s");
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
            Ok(())
        }
        NodeCommand::Undrain { node, controller } => {
            let client = AdminClient::new(&controller)?;
            client
                .call(
                    "POST",
                    &format!("/admin/nodes/{node}/undrain"),
                    Vec::new(),
                    "application/json",
                )
                .await?;
            crate::say(&format!("node {node} takes new work again"));
            Ok(())
        }
    }
}

/// The node table as text: one row per node, then why each unhealthy node is so.
pub fn format_nodes(view: &NodesView) -> String {
    let rows: Vec<[String; 12]> = view.snapshot.nodes.iter().map(|node| row(view, node)).collect();
    let header = [
        "node",
        "state",
        "runtime",
        "in-flight",
        "queue",
        "tok/s",
        "cache hit",
        "J/tok",
        "gpu °C",
        "heat/power",
        "age",
        "link",
    ]
    .map(str::to_owned);
    let table: Vec<[String; 12]> = std::iter::once(header).chain(rows.iter().cloned()).collect();
    // Numbers to the right, words to the left.
    let mut out = crate::table::render(&table, |column| matches!(column, 3..=8 | 10));
    if rows.iter().any(|cells| cells[7].starts_with('~')) {
        out.push_str("~ energy from declared watts or the seed's figures, not measured\n");
    }
    if rows.iter().any(|cells| cells[6].ends_with('*')) {
        out.push_str("* its cache estimates are the runtime's own (vLLM's KV-cache events), not guessed\n");
    }
    if !view.unhealthy.is_empty() {
        out.push_str("\nwhy:\n");
        for (node, reason) in &view.unhealthy {
            out.push_str(&format!("  {node}: {reason}\n"));
        }
    }
    out.trim_end().to_owned()
}

fn row(view: &NodesView, node: &switchyard_protocol::NodeSnapshot) -> [String; 12] {
    let link = view.links.iter().find(|l| l.node == node.name);
    let state = match view.unhealthy.get(&node.name) {
        Some(reason) if reason.starts_with("drained") => "draining",
        Some(_) => "UNHEALTHY",
        None if node.healthy => "healthy",
        None => "UNHEALTHY",
    };
    let hottest = node
        .gpus
        .iter()
        .filter_map(|g| g.temp_c)
        .fold(None, |max: Option<f32>, t| Some(max.map_or(t, |m| m.max(t))));
    let mut heat = Vec::new();
    if node.thermal_throttled || node.gpus.iter().any(|g| g.throttled) {
        heat.push("THROTTLED".to_owned());
    }
    if let Some(pressure) = link.and_then(|l| l.thermal_pressure.as_deref()) {
        heat.push(format!("thermal {pressure}"));
    }
    match (node.on_battery, link.and_then(|l| l.battery_pct)) {
        (Some(true), Some(pct)) => heat.push(format!("battery {pct:.0}%")),
        (Some(true), None) => heat.push("battery".to_owned()),
        (Some(false), _) => heat.push("AC".to_owned()),
        (None, _) => {}
    }
    let link_text = match link {
        Some(l) if l.connected => {
            let days = l.cert.expires_in_s / 86_400;
            let renew = if l.cert.expires_in_s < RENEW_WITHIN_DAYS * 86_400 {
                format!(" RENEW SOON: `switchyard certs renew --node {}`", node.name)
            } else {
                String::new()
            };
            format!("mTLS from {}, cert expires in {days} days{renew}", l.peer)
        }
        Some(_) => "down".to_owned(),
        None => "static (no agent)".to_owned(),
    };
    [
        node.name.clone(),
        state.to_owned(),
        node.runtime.to_string(),
        format!("{}/{}", node.in_flight, node.max_concurrency),
        node.queued.to_string(),
        node.tokens_per_sec
            .map(|t| format!("{t:.1}"))
            .unwrap_or_else(|| "-".into()),
        cache_cell(link),
        energy_cell(link.and_then(|l| l.energy.as_ref())),
        hottest.map(|t| format!("{t:.0}")).unwrap_or_else(|| "-".into()),
        if heat.is_empty() {
            "-".to_owned()
        } else {
            heat.join(", ")
        },
        format!("{}ms", node.last_seen_ms),
        link_text,
    ]
}

/// The runtime's prefix-cache hit rate, `*` marking a node whose agent follows the runtime's
/// own cache (the precise estimate).
fn cache_cell(link: Option<&switchyard_controller::node_table::LinkView>) -> String {
    let rate = link
        .and_then(|l| l.prefix_cache_hit_pct)
        .map(|pct| format!("{pct:.0}%"))
        .unwrap_or_else(|| "-".into());
    let precise = link.and_then(|l| l.kv_events.as_ref()).is_some_and(|kv| kv.current);
    if precise { format!("{rate}*") } else { rate }
}

/// Joules per token, `~` marking a figure that is assumed rather than measured.
fn energy_cell(energy: Option<&switchyard_protocol::EnergyTelemetry>) -> String {
    use switchyard_protocol::EnergySource;
    let Some(energy) = energy else {
        return "-".to_owned();
    };
    let Some(per_token) = energy.joules_per_token else {
        return "-".to_owned();
    };
    let assumed = matches!(energy.source, EnergySource::Declared | EnergySource::SeedFigure);
    format!("{}{per_token:.2}", if assumed { "~" } else { "" })
}
