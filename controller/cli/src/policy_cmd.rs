//! `switchyard policy list | upload | activate | rollback | shadow | canary | test | replay | check | new | build`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::Remote;
use super::admin_client::AdminClient;
use switchyard_controller::policy::{ComponentRef, PolicySpec};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// List loaded policies (name@hash), the active one and the rollback chain.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Upload a policy file (and the component files it names), optionally activating it.
    Upload {
        #[command(flatten)]
        remote: Remote,
        file: PathBuf,
        #[arg(long)]
        activate: bool,
    },
    /// Activate a loaded policy by name (newest version) or by name@hash.
    Activate {
        #[command(flatten)]
        remote: Remote,
        policy: String,
    },
    /// Let a loaded policy decide every live request beside the active one (off the request
    /// path), and report how often it agrees and where it differs; or show (--report) or
    /// stop (--stop) the running shadow.
    Shadow {
        #[command(flatten)]
        remote: Remote,
        /// The candidate: an id, or a name for its newest loaded version.
        #[arg(required_unless_present_any = ["report", "stop"])]
        policy: Option<String>,
        /// Show the running shadow's report.
        #[arg(long, conflicts_with = "stop")]
        report: bool,
        /// Stop the shadow and show its last report.
        #[arg(long)]
        stop: bool,
    },
    /// Let a loaded policy decide a share of live requests (sticky per session) beside the
    /// active one; it is rolled back automatically when its share does worse (error rate,
    /// TTFT p95, faults over a window; `[canary]` in the config, or the flags here). Or show
    /// (--report), stop (--stop) or promote to active (--promote) the canary.
    Canary(CanaryArgs),
    /// Re-activate the policy that was active before the current one.
    Rollback {
        #[command(flatten)]
        remote: Remote,
    },
    /// Run a policy against fixture files locally, without a cluster.
    Test {
        policy: PathBuf,
        #[arg(required = true)]
        fixtures: Vec<PathBuf>,
    },
    /// Replay recorded requests, each against the snapshot it was decided on, through a
    /// policy (locally, deterministically) and report the decisions that change: from an
    /// export file (`switchyard decisions export`), or from the controller's record.
    Replay {
        #[command(flatten)]
        remote: Remote,
        /// The candidate policy file.
        policy: PathBuf,
        /// An export (NDJSON) to replay instead of asking the controller.
        #[arg(long)]
        from: Option<PathBuf>,
        /// With the controller's record: only requests since this (ms since the epoch, or a
        /// span ago: 15m, 2h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a policy locally on generated clusters and requests: it never routes to a node
    /// that cannot serve the request, answers whenever one can, and never faults. Failures
    /// are shrunk and written as fixtures for `policy test`.
    Check(CheckArgs),
    /// Write a policy project in its own folder (outside any Switchyard checkout): the
    /// contract, the language's helpers, a starter rule (least-loaded), fixtures against the
    /// seed cluster that pass, a policy file and a README of three commands.
    New {
        /// The policy's name (1-64 lowercase letters, digits and '-').
        name: String,
        /// The language to write the rule in.
        #[arg(long, value_enum)]
        lang: crate::policy_project::Lang,
        /// Where to write it (default: ./NAME); it must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build the component of the policy project in DIR (default: here) with its language's
    /// toolchain (cargo, componentize-py, jco), to the file its policy.toml names.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

/// `policy canary`'s arguments.
#[derive(Debug, Args)]
pub struct CanaryArgs {
    #[command(flatten)]
    pub remote: Remote,
    /// The candidate: an id, or a name for its newest loaded version.
    #[arg(required_unless_present_any = ["report", "stop", "promote"])]
    pub policy: Option<String>,
    /// The share of requests it decides, 1-100.
    #[arg(long, required_unless_present_any = ["report", "stop", "promote"])]
    pub percent: Option<u8>,
    /// The window the two shares are compared over, seconds.
    #[arg(long)]
    pub window_s: Option<u32>,
    /// Answers each share needs in the window before they are compared.
    #[arg(long)]
    pub min_requests: Option<u32>,
    /// Roll back when its error rate is above the active's by more than this (0.05).
    #[arg(long)]
    pub max_error_rate_increase: Option<f64>,
    /// Roll back when its TTFT p95 is above the active's times this...
    #[arg(long)]
    pub max_ttft_p95_ratio: Option<f64>,
    /// ...and by more than this many milliseconds.
    #[arg(long)]
    pub ttft_slack_ms: Option<u32>,
    /// Roll back after this many faults in the window.
    #[arg(long)]
    pub max_faults: Option<u32>,
    /// Show the canary (running or how it ended) and recent events.
    #[arg(long, conflicts_with_all = ["stop", "promote"])]
    pub report: bool,
    /// Stop the canary; the active policy decides everything again.
    #[arg(long, conflicts_with = "promote")]
    pub stop: bool,
    /// Make the canary the active policy.
    #[arg(long)]
    pub promote: bool,
}

/// `policy check`'s arguments.
#[derive(Debug, Args)]
pub struct CheckArgs {
    pub policy: PathBuf,
    /// How many generated cases.
    #[arg(long, default_value_t = 1000)]
    pub cases: u32,
    /// The generator's seed: the same seed checks the same cases.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// At most this many nodes per generated cluster (1-12).
    #[arg(long, default_value_t = 12)]
    pub max_nodes: u32,
    /// Where failing cases are written.
    #[arg(long, default_value = "policy-check-failures")]
    pub out: PathBuf,
    /// Accept refusals of work some node could serve (a policy that keeps some work off
    /// some nodes by design); every other property is still checked.
    #[arg(long)]
    pub allow_reject: bool,
}

pub async fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::List { remote } => {
            let body = AdminClient::new(&remote)?.get("/admin/policies").await?;
            let view: switchyard_controller::policy::EngineView = serde_json::from_slice(&body)?;
            crate::say(&format_list(&view));
        }
        PolicyCommand::Upload { remote, file, activate } => {
            let client = AdminClient::new(&remote)?;
            let text = upload_components(&client, &file).await?;
            let path = if activate {
                "/admin/policies?activate=true"
            } else {
                "/admin/policies"
            };
            let body = client.call("POST", path, text.into_bytes(), "application/toml").await?;
            crate::say(&String::from_utf8_lossy(&body));
        }
        PolicyCommand::Activate { remote, policy } => {
            let path = format!("/admin/policies/{policy}/activate");
            let body = AdminClient::new(&remote)?.send("POST", &path).await?;
            crate::say(&String::from_utf8_lossy(&body));
        }
        PolicyCommand::Shadow {
            remote,
            policy,
            report,
            stop,
        } => {
            let client = AdminClient::new(&remote)?;
            let body = if stop {
                client.send("DELETE", "/admin/shadow").await?
            } else if report {
                client.get("/admin/shadow").await?
            } else {
                client
                    .post_json("/admin/shadow", &serde_json::json!({ "policy": policy }))
                    .await?
            };
            let report: switchyard_controller::policy::shadow::ShadowReport = serde_json::from_slice(&body)?;
            crate::say(&format_shadow(&report, stop));
        }
        PolicyCommand::Canary(args) => canary(AdminClient::new(&args.remote)?, args).await?,
        PolicyCommand::Replay {
            remote,
            policy,
            from,
            since,
            json,
        } => replay(&remote, policy, from, since, json).await?,
        PolicyCommand::Rollback { remote } => {
            let body = AdminClient::new(&remote)?.send("POST", "/admin/rollback").await?;
            crate::say(&String::from_utf8_lossy(&body));
        }
        PolicyCommand::Check(args) => check(args).await?,
        PolicyCommand::Test { policy, fixtures } => test(policy, fixtures).await?,
        PolicyCommand::New { name, lang, dir } => crate::policy_project::new(&name, lang, dir)?,
        PolicyCommand::Build { dir } => {
            tokio::task::spawn_blocking(move || crate::policy_project::build(&dir)).await??;
        }
    }
    Ok(())
}

async fn canary(client: AdminClient, args: CanaryArgs) -> anyhow::Result<()> {
    let body = if args.report {
        let body = client.get("/admin/canary").await?;
        let view: switchyard_controller::policy::canary::CanaryView = serde_json::from_slice(&body)?;
        crate::say(&format_canary_view(&view));
        return Ok(());
    } else if args.stop {
        client.send("DELETE", "/admin/canary").await?
    } else if args.promote {
        client.send("POST", "/admin/canary/promote").await?
    } else {
        let start = switchyard_controller::admin::CanaryStart {
            policy: args.policy.unwrap_or_default(),
            percent: args.percent.unwrap_or_default(),
            window_s: args.window_s,
            min_requests: args.min_requests,
            max_error_rate_increase: args.max_error_rate_increase,
            max_ttft_p95_ratio: args.max_ttft_p95_ratio,
            ttft_slack_ms: args.ttft_slack_ms,
            max_faults: args.max_faults,
        };
        client.post_json("/admin/canary", &start).await?
    };
    let report: switchyard_controller::policy::canary::CanaryReport = serde_json::from_slice(&body)?;
    crate::say(&format_canary(&report));
    Ok(())
}

async fn replay(
    remote: &Remote,
    policy: PathBuf,
    from: Option<PathBuf>,
    since: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let text = match from {
        Some(file) => {
            std::fs::read_to_string(&file).with_context(|| format!("cannot read the export {}", file.display()))?
        }
        None => {
            let path = match &since {
                Some(since) => format!("/admin/decisions/export?since={since}"),
                None => "/admin/decisions/export".to_owned(),
            };
            let body = AdminClient::new(remote)?.get(&path).await?;
            String::from_utf8(body.to_vec()).context("the export is not UTF-8")?
        }
    };
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let lines = switchyard_controller::decisions::store::parse_export(&text)?
            .into_iter()
            .map(|(_, line)| line)
            .collect();
        switchyard_controller::decisions::replay::replay_lines(&policy, lines)
    })
    .await??;
    if json {
        crate::say(&serde_json::to_string_pretty(&report)?);
    } else {
        crate::say(&switchyard_controller::decisions::replay::format_report(&report));
    }
    Ok(())
}

async fn check(args: CheckArgs) -> anyhow::Result<()> {
    let seed = args.seed;
    let options = switchyard_controller::policy_check::CheckOptions {
        cases: args.cases,
        seed,
        max_nodes: args.max_nodes,
        out: args.out,
        allow_reject: args.allow_reject,
    };
    let policy = args.policy;
    let report =
        tokio::task::spawn_blocking(move || switchyard_controller::policy_check::check(&policy, &options)).await??;
    for note in &report.transient {
        crate::say(&format!("NOTE {note} (timing on this machine, not counted)"));
    }
    for v in &report.violations {
        crate::say(&format!(
            "FAIL case {}: {} ({} node(s) after shrinking)\n     fixture: {} (run it with `switchyard policy test`)",
            v.case,
            v.property,
            v.nodes,
            v.fixture.display()
        ));
    }
    crate::say(&format!(
        "{}: {} generated case(s) checked (seed {seed}), {} failing",
        report.policy,
        report.cases,
        report.violations.len()
    ));
    if !report.violations.is_empty() {
        bail!("{} property violation(s)", report.violations.len());
    }
    Ok(())
}

async fn test(policy: PathBuf, fixtures: Vec<PathBuf>) -> anyhow::Result<()> {
    let report =
        tokio::task::spawn_blocking(move || switchyard_controller::fixtures::run(&policy, &fixtures)).await??;
    for result in &report.results {
        match &result.failure {
            None => crate::say(&format!("PASS {}: {}", result.file, result.name)),
            Some(why) => crate::say(&format!("FAIL {}: {}\n     {why}", result.file, result.name)),
        }
    }
    crate::say(&format!("{} passed, {} failed", report.passed(), report.failed()));
    if report.failed() > 0 {
        bail!("{} fixture case(s) failed", report.failed());
    }
    Ok(())
}

/// Upload every file component the policy names and rewrite those references to
/// `sha256:<hex>`; builtin and already-uploaded references pass through.
async fn upload_components(client: &AdminClient, file: &Path) -> anyhow::Result<String> {
    let mut text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let spec = PolicySpec::parse(&text, &file.display().to_string())?;
    let base = file.parent().unwrap_or(Path::new("."));
    for stage in &spec.stages {
        if let Ok(ComponentRef::File(path)) = ComponentRef::parse(&stage.component, Some(base)) {
            let bytes = std::fs::read(&path)
                .with_context(|| format!("{}: cannot read component {}", file.display(), path.display()))?;
            let reply = client
                .call("POST", "/admin/components", bytes, "application/wasm")
                .await?;
            let value: serde_json::Value = serde_json::from_slice(&reply)?;
            let Some(reference) = value["component"].as_str() else {
                bail!("the controller did not return a component reference");
            };
            text = text.replace(&format!("{:?}", stage.component), &format!("{reference:?}"));
        }
    }
    Ok(text)
}

fn format_shadow(report: &switchyard_controller::policy::shadow::ShadowReport, stopped: bool) -> String {
    let rate = if report.compared == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}%", report.agreed as f64 * 100.0 / report.compared as f64)
    };
    let mut out = format!(
        "shadow {}{}: {} compared, {} agreed ({rate}), {} dropped (queue full)",
        report.policy,
        if stopped { " (stopped)" } else { "" },
        report.compared,
        report.agreed,
        report.dropped
    );
    for (kind, count) in &report.faults {
        out.push_str(&format!("\n  faults {kind}: {count}"));
    }
    for (difference, count) in &report.differences {
        out.push_str(&format!("\n  {count:>6}  {difference}"));
    }
    out
}

fn format_share(name: &str, share: &switchyard_controller::policy::canary::ShareFigures) -> String {
    let ms = |v: Option<u32>| v.map_or_else(|| "-".to_owned(), |v| format!("{v} ms"));
    format!(
        "  {name:<7} {:>6} answered, {:>5.1} % errors, TTFT p50 {}, p95 {}, {} faults",
        share.answered,
        share.error_rate * 100.0,
        ms(share.ttft_p50_ms),
        ms(share.ttft_p95_ms),
        share.faults
    )
}

fn format_canary(report: &switchyard_controller::policy::canary::CanaryReport) -> String {
    use switchyard_controller::policy::canary::CanaryState;
    let state = match &report.state {
        CanaryState::Running => "running".to_owned(),
        CanaryState::RolledBack(why) => format!("ROLLED BACK: {why}"),
        CanaryState::Promoted => "promoted to active".to_owned(),
        CanaryState::Stopped => "stopped".to_owned(),
    };
    format!(
        "canary {} at {} % against {}: {state}\n  decided {} by the canary, {} by the active policy; last {} s:\n{}\n{}",
        report.policy,
        report.percent,
        report.active,
        report.decided_canary,
        report.decided_active,
        report.rules.window_s,
        format_share("canary", &report.window_canary),
        format_share("active", &report.window_active),
    )
}

fn format_canary_view(view: &switchyard_controller::policy::canary::CanaryView) -> String {
    let mut out = match &view.canary {
        Some(report) => format_canary(report),
        None => "no canary has run since the controller started".to_owned(),
    };
    out.push_str(&format!("\nautomatic rollbacks: {}", view.rollbacks));
    for event in &view.events {
        out.push_str(&format!(
            "\n  {} {} {}: {}",
            event.at_ms,
            event.kind.as_str(),
            event.policy,
            event.detail
        ));
    }
    out
}

fn format_list(view: &switchyard_controller::policy::EngineView) -> String {
    let mut out = String::new();
    for p in &view.policies {
        let marker = if p.active { "*" } else { " " };
        out.push_str(&format!(
            "{marker} {:<32} decisions {:>8}  faults {:>4}  {}\n",
            p.id,
            p.stats.decisions,
            p.stats.faults.values().sum::<u64>(),
            p.description
        ));
    }
    out.push_str(&format!(
        "active: {}; rollback chain: [{}]; fallback decisions: {}; reverts: {}",
        view.active.as_deref().unwrap_or("none (built-in fallback)"),
        view.previous.join(", "),
        view.fallback_decisions,
        view.reverts
    ));
    out
}
