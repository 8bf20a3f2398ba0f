//! `switchyard decisions [list] | export | import`: the controller's decision record.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::Remote;
use super::admin_client::AdminClient;
use switchyard_controller::decisions::DecisionRecord;

#[derive(Debug, Subcommand)]
pub enum DecisionsCommand {
    /// The latest records (or those since a time), one line each.
    List {
        #[command(flatten)]
        remote: Remote,
        /// Since this (ms since the epoch, or a span ago: 15m, 2h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Decided by this policy (name or name@hash).
        #[arg(long)]
        policy: Option<String>,
        /// Answered by this node.
        #[arg(long)]
        node: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Write the record (since a time) as NDJSON to stdout, or to --out: snapshots once,
    /// then the records that name them. `decisions import` and `policy replay` read it.
    Export {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Add an export to this controller's record (records already present are not added
    /// twice; a bad line refuses the whole import and names the line).
    Import {
        #[command(flatten)]
        remote: Remote,
        file: PathBuf,
    },
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", v.replace('@', "%40"))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// One record as a line: time, id, task, where it went (or the refusal), status and TTFT.
pub fn format_line(record: &DecisionRecord) -> String {
    let decided = match &record.decided.decision {
        switchyard_protocol::Decision::Route(route) => route.reason.clone(),
        switchyard_protocol::Decision::Reject(reject) => format!("rejected {}: {}", reject.status, reject.message),
    };
    let outcome = &record.outcome;
    format!(
        "{} {} {} task={} -> {} status={} ttft={} by {}{}: {}",
        record.at_ms,
        record.id,
        record.request.model,
        record.request.task.as_deref().unwrap_or("-"),
        outcome.node.as_deref().unwrap_or("none"),
        outcome.status,
        outcome.ttft_ms.map_or_else(|| "-".to_owned(), |t| format!("{t}ms")),
        record.decided.policy,
        if record.decided.fallback { " (fallback)" } else { "" },
        decided
    )
}

pub async fn run(command: DecisionsCommand) -> anyhow::Result<()> {
    match command {
        DecisionsCommand::List {
            remote,
            since,
            policy,
            node,
            limit,
        } => {
            let path = format!(
                "/admin/decisions{}",
                query(&[
                    ("since", since),
                    ("policy", policy),
                    ("node", node),
                    ("limit", Some(limit.to_string())),
                ])
            );
            let body = AdminClient::new(&remote)?.get(&path).await?;
            let value: serde_json::Value = serde_json::from_slice(&body)?;
            let records: Vec<DecisionRecord> = serde_json::from_value(value["records"].clone())?;
            let mut lines: Vec<String> = records.iter().map(format_line).collect();
            if value["truncated"] == serde_json::Value::Bool(true) {
                lines.push(format!(
                    "(more matched than one answer holds ({} MiB): ask for fewer with --limit, or page with --since)",
                    switchyard_controller::decisions::store::QUERY_MAX_BYTES / (1024 * 1024)
                ));
            }
            crate::say(&lines.join("\n"));
        }
        DecisionsCommand::Export { remote, since, out } => {
            let path = format!("/admin/decisions/export{}", query(&[("since", since)]));
            let body = AdminClient::new(&remote)?.get(&path).await?;
            match out {
                Some(out) => {
                    std::fs::write(&out, &body).with_context(|| format!("cannot write {}", out.display()))?;
                }
                None => crate::say(String::from_utf8_lossy(&body).trim_end()),
            }
        }
        DecisionsCommand::Import { remote, file } => {
            let text = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let body = AdminClient::new(&remote)?
                .call("POST", "/admin/decisions/import", text, "application/x-ndjson")
                .await
                .with_context(|| format!("importing {}", file.display()))?;
            crate::say(&String::from_utf8_lossy(&body));
        }
    }
    Ok(())
}
