//! `switchyard models` (per node: what is loaded, its memory, idle time and load-time
//! estimate) and `switchyard models load|unload NODE MODEL`.

use clap::{Args, Subcommand};

use super::Remote;
use super::admin_client::AdminClient;
use switchyard_controller::admin::NodesView;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub action: Option<ModelsAction>,
    #[command(flatten)]
    pub controller: Remote,
}

#[derive(Debug, Subcommand)]
pub enum ModelsAction {
    /// Load a model on a node now (its runtime starts; idle models may be evicted to fit).
    Load {
        /// The node, as `switchyard nodes` lists it.
        node: String,
        /// The model: its logical name or the node's own name for it.
        model: String,
        #[command(flatten)]
        controller: Remote,
    },
    /// Unload an idle model on a node now (refused while it has requests in flight).
    Unload {
        /// The node, as `switchyard nodes` lists it.
        node: String,
        /// The model: its logical name or the node's own name for it.
        model: String,
        #[command(flatten)]
        controller: Remote,
    },
}

pub async fn run(args: ModelsArgs) -> anyhow::Result<()> {
    let (action, node, model, controller) = match args.action {
        None => {
            let client = AdminClient::new(&args.controller)?;
            let body = client.get("/admin/nodes").await?;
            crate::say(&format_models(&serde_json::from_slice(&body)?));
            return Ok(());
        }
        Some(ModelsAction::Load {
            node,
            model,
            controller,
        }) => ("load", node, model, controller),
        Some(ModelsAction::Unload {
            node,
            model,
            controller,
        }) => ("unload", node, model, controller),
    };
    let client = AdminClient::new(&controller)?;
    let reply = client
        .post_json(
            &format!("/admin/nodes/{node}/models/{action}"),
            &serde_json::json!({ "model": model }),
        )
        .await?;
    let answer: serde_json::Value = serde_json::from_slice(&reply)?;
    crate::say(&format!(
        "{node}: {} {}",
        answer["model"].as_str().unwrap_or(&model),
        answer["result"].as_str().unwrap_or(action)
    ));
    Ok(())
}

/// One row per model per node, then each node's model memory in use.
pub fn format_models(view: &NodesView) -> String {
    let mut rows = vec![
        [
            "node",
            "model",
            "runtime name",
            "state",
            "memory",
            "in-flight",
            "idle",
            "load est.",
            "loads/evictions",
        ]
        .map(str::to_owned),
    ];
    for node in &view.snapshot.nodes {
        let link = view.links.iter().find(|l| l.node == node.name);
        rows.extend(node.models.iter().map(|variant| model_row(&node.name, variant, link)));
    }
    let mut out = crate::table::render(&rows, |_| false);
    for link in &view.links {
        if let Some(budget) = link.memory_budget_mb {
            let used: u64 = link
                .models
                .iter()
                .filter(|m| m.state != switchyard_protocol::ModelLoadState::Cold)
                .filter_map(|m| m.memory_mb)
                .sum();
            out.push_str(&format!(
                "{}: {used} of {budget} MB of model memory in use\n",
                link.node
            ));
        }
    }
    out.trim_end().to_owned()
}

/// One model's row: the agent's managed state where it manages the model, else what the
/// runtime reports.
fn model_row(
    node: &str,
    variant: &switchyard_protocol::ModelVariant,
    link: Option<&switchyard_controller::node_table::LinkView>,
) -> [String; 9] {
    let managed = link.and_then(|l| l.models.iter().find(|m| m.local == variant.local));
    let resident = link.and_then(|l| l.resident.iter().find(|r| r.name == variant.local));
    let seconds = |ms: u32| format!("{:.1} s", f64::from(ms) / 1000.0);
    match managed {
        Some(state) => [
            node.to_owned(),
            variant.logical.clone(),
            variant.local.clone(),
            format!("{:?}", state.state).to_lowercase(),
            state.memory_mb.map_or("-".to_owned(), |mb| {
                format!("{mb} MB{}", if state.memory_measured { " (measured)" } else { "" })
            }),
            state.in_flight.to_string(),
            state.idle_s.map_or("-".to_owned(), |s| format!("{s} s")),
            state.load_ms.map_or("-".to_owned(), seconds),
            format!("{}/{}", state.loads, state.evictions),
        ],
        None => [
            node.to_owned(),
            variant.logical.clone(),
            variant.local.clone(),
            if variant.loaded { "loaded" } else { "not loaded" }.to_owned(),
            resident
                .and_then(|r| r.vram_mb)
                .map_or("-".to_owned(), |mb| format!("{mb} MB")),
            "-".to_owned(),
            "-".to_owned(),
            variant.load_ms.map_or("-".to_owned(), seconds),
            "-".to_owned(),
        ],
    }
}
