//! `switchyard certs renew`: re-issue the certificates that expire soon (node bundles and the
//! controller's), keeping each bundle's `join.toml` and the controller's names.

use std::path::{Path, PathBuf};

use switchyard_protocol::tls::{cert_info, load_certs, subject_alt_names};

use super::CertError;

/// Certificates closer to expiry than this are flagged by `switchyard nodes` and the agent.
pub const RENEW_WITHIN_DAYS: i64 = 14;

/// One certificate that was re-issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewed {
    /// `controller`, or the node's name.
    pub name: String,
    /// The bundle folder (nodes) or the certificate file (controller).
    pub path: PathBuf,
    /// Seconds the old certificate had left (negative: it had expired).
    pub old_expires_in_s: i64,
}

/// Re-issue, for `days`, every certificate expiring within `within_days` (all nodes and the
/// controller), or exactly the node `only` whatever its expiry.
pub fn renew(dir: &Path, only: Option<&str>, within_days: i64, days: i64) -> Result<Vec<Renewed>, CertError> {
    let window = within_days * 86_400;
    let mut renewed = Vec::new();
    if let Some(name) = only {
        let pem = dir.join("nodes").join(name).join("node.pem");
        if !pem.exists() {
            return Err(CertError::NoSuchNode(name.to_owned()));
        }
        let old = cert_info(&load_certs(&pem)?[0])?;
        let path = super::issue_node(dir, name, days, None, None)?;
        renewed.push(Renewed {
            name: name.to_owned(),
            path,
            old_expires_in_s: old.expires_in_s,
        });
        return Ok(renewed);
    }
    let controller = dir.join("controller.pem");
    if controller.exists() {
        let der = &load_certs(&controller)?[0];
        let old = cert_info(der)?;
        if old.expires_in_s < window {
            let sans = subject_alt_names(der)?;
            super::issue_controller(dir, &sans, days)?;
            renewed.push(Renewed {
                name: "controller".to_owned(),
                path: controller,
                old_expires_in_s: old.expires_in_s,
            });
        }
    }
    let mut bundles: Vec<PathBuf> = match std::fs::read_dir(dir.join("nodes")) {
        Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    };
    bundles.sort();
    for bundle in bundles {
        let pem = bundle.join("node.pem");
        let Some(name) = bundle.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if !pem.exists() {
            continue;
        }
        let old = cert_info(&load_certs(&pem)?[0])?;
        if old.expires_in_s < window {
            let path = super::issue_node(dir, &name, days, None, None)?;
            renewed.push(Renewed {
                name,
                path,
                old_expires_in_s: old.expires_in_s,
            });
        }
    }
    Ok(renewed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{JoinInfo, init, issue_node};

    #[test]
    fn renew_reissues_what_expires_soon_and_keeps_the_join_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        init(dir.path(), &["controller.lan".into()], 365, false).expect("init");
        issue_node(dir.path(), "fresh", 90, None, Some("controller.lan:7443".into())).expect("fresh");
        let soon = chrono_free_date(5);
        issue_node(dir.path(), "xeon", 90, Some(&soon), Some("controller.lan:7443".into())).expect("xeon");

        let renewed = renew(dir.path(), None, RENEW_WITHIN_DAYS, 90).expect("renew");
        assert_eq!(renewed.len(), 1, "{renewed:?}");
        assert_eq!(renewed[0].name, "xeon");
        assert!(renewed[0].old_expires_in_s < 6 * 86_400);
        let info = cert_info(&load_certs(&renewed[0].path.join("node.pem")).expect("pem")[0]).expect("info");
        assert!(info.expires_in_s > 89 * 86_400, "{info:?}");
        assert_eq!(info.common_name, "xeon");
        let join = JoinInfo::read(&renewed[0].path).expect("join.toml kept");
        assert_eq!(join.address.as_deref(), Some("controller.lan:7443"));

        assert!(
            renew(dir.path(), None, RENEW_WITHIN_DAYS, 90)
                .expect("again")
                .is_empty()
        );
        let forced = renew(dir.path(), Some("fresh"), RENEW_WITHIN_DAYS, 90).expect("named");
        assert_eq!(forced[0].name, "fresh");
        assert!(matches!(
            renew(dir.path(), Some("ghost"), RENEW_WITHIN_DAYS, 90),
            Err(CertError::NoSuchNode(_))
        ));
    }

    /// RFC 3339 for `days` from now.
    fn chrono_free_date(days: i64) -> String {
        (time::OffsetDateTime::now_utc() + time::Duration::days(days))
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format")
    }
}
