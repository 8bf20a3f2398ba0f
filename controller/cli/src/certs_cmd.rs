//! `switchyard certs ...`: make the cluster CA, issue node bundles (with the steps to run on
//! the node), list expiries, and renew what expires soon.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use switchyard_controller::certs::{self, RENEW_WITHIN_DAYS};

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
    /// Issue a node's bundle (nodes/<name>/ca.pem, node.pem, node.key, join.toml) and print
    /// the steps that make it join; or re-issue the controller's certificate with `--controller`.
    Issue {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// The node's name: lowercase letters, digits and '-' (what policies call it).
        #[arg(long, required_unless_present = "controller")]
        node: Option<String>,
        /// Re-issue the controller's certificate instead (rotation: agents see it at their next handshake).
        #[arg(long, conflicts_with = "node")]
        controller: bool,
        /// With --controller: names or IPs to add to its certificate.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// The address the node's agent dials (the controller's `[agents] listen`, as the node
        /// reaches it). Default: the first non-loopback name in the controller's certificate, port 7443.
        #[arg(long, value_name = "HOST:PORT", conflicts_with = "controller")]
        controller_address: Option<String>,
        /// Days the certificate is valid.
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
    /// Re-issue every certificate that expires within --within-days (node bundles and the
    /// controller's), or one node's with --node; then copy each renewed bundle to its node.
    Renew {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Renew only this node's certificate, whatever its expiry.
        #[arg(long)]
        node: Option<String>,
        /// Renew certificates expiring within this many days.
        #[arg(long, default_value_t = RENEW_WITHIN_DAYS)]
        within_days: i64,
        /// Days the new certificates are valid.
        #[arg(long, default_value_t = 90)]
        days: i64,
    },
}

pub fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Init { dir, sans, days, force } => {
            let written = certs::init(&dir, &sans, days, force)?;
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
            controller_address,
            days,
            expires_at,
        } => {
            if controller {
                let (cert, key) = certs::issue_controller(&dir, &sans, days)?;
                crate::say(&format!(
                    "wrote {} and {}; new agent handshakes use it",
                    cert.display(),
                    key.display()
                ));
            } else if let Some(node) = node {
                let address = certs::controller_address(&dir, controller_address.as_deref())?;
                let bundle = certs::issue_node(&dir, &node, days, expires_at.as_deref(), address)?;
                crate::say(&join_steps(&node, &bundle));
            }
        }
        CertsCommand::List { dir } => list(&dir)?,
        CertsCommand::Renew {
            dir,
            node,
            within_days,
            days,
        } => renew(&dir, node.as_deref(), within_days, days)?,
    }
    Ok(())
}

/// `certs list`: each certificate's node, file, expiry (and whether to renew) and serial.
fn list(dir: &Path) -> anyhow::Result<()> {
    for (path, info) in certs::list(dir)? {
        let days = info.expires_in_s as f64 / 86_400.0;
        let state = if info.expires_in_s < 0 {
            "EXPIRED".to_owned()
        } else if info.expires_in_s < RENEW_WITHIN_DAYS * 86_400 {
            format!(
                "expires in {days:.0} days: RENEW (`switchyard certs renew --dir {}`)",
                dir.display()
            )
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
    Ok(())
}

/// `certs renew`: what was renewed, and for a node where its new files go.
fn renew(dir: &Path, node: Option<&str>, within_days: i64, days: i64) -> anyhow::Result<()> {
    let renewed = certs::renew(dir, node, within_days, days)?;
    if renewed.is_empty() {
        crate::say(&format!(
            "nothing expires within {within_days} days in {}; nothing renewed",
            dir.display()
        ));
    }
    for item in renewed {
        let was = if item.old_expires_in_s < 0 {
            "had expired".to_owned()
        } else {
            format!("had {} days left", item.old_expires_in_s / 86_400)
        };
        if item.name == "controller" {
            crate::say(&format!(
                "renewed {} ({was}); the running controller picks it up within a second",
                item.path.display()
            ));
        } else {
            crate::say(&format!(
                "renewed {0} ({was}); copy the new certificate and key to {1}, into the certs/ folder beside its agent.toml \
                 (the agent uses them at its next dial): scp {0}/node.pem {0}/node.key {1}:<folder of agent.toml>/certs/",
                item.path.display(),
                item.name,
            ));
        }
    }
    Ok(())
}

fn copy_command(node: &str, bundle: &Path) -> String {
    format!("scp -r {} {node}:switchyard-bundle", bundle.display())
}

/// What to run on the node, in order, after issuing its bundle.
fn join_steps(node: &str, bundle: &Path) -> String {
    let join = certs::JoinInfo::read(bundle);
    let address = join.and_then(|j| j.address);
    let mut text = format!(
        "wrote {0}/ (ca.pem, node.pem, node.key, join.toml) for node '{node}'{1}\n\
         on {node}:\n  \
         1. copy the bundle:  {2}\n  \
         2. write its config: switchyard-agent init --bundle switchyard-bundle{3} --output agent.toml\n  \
         3. run the agent:    switchyard-agent run --config agent.toml\n",
        bundle.display(),
        match &address {
            Some(address) => format!(", joining the controller at {address}"),
            None => String::new(),
        },
        copy_command(node, bundle),
        if address.is_some() {
            ""
        } else {
            " --controller <controller-host>:7443"
        },
    );
    if address.is_none() {
        text.push_str(
            "the controller's address is unknown (its certificate names only localhost): pass it in step 2, \
             or issue again with --controller-address HOST:PORT\n",
        );
    }
    text.push_str(&format!(
        "if controller.toml lists `[agents] nodes`, add \"{node}\" there; the shipped policies route to nodes they do not name as a fallback"
    ));
    text
}
