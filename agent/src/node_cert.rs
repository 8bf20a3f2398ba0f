//! This node's own certificate as the agent reads it: the name it carries (the node's
//! identity) and when it expires, with the warning that comes before expiry and the renewal
//! command. It must not build TLS configs or dial (that is `link`).

use std::path::Path;

use switchyard_protocol::tls::{TlsFileError, cert_info, load_certs};

/// A certificate expiring within this many days is warned about at every dial.
pub const WARN_WITHIN_DAYS: i64 = 14;

const DAY_S: i64 = 24 * 60 * 60;

/// What the agent needs to know about its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCert {
    /// The common name: the node's name.
    pub name: String,
    /// RFC 2822 date.
    pub not_after: String,
    /// Seconds until expiry (negative once expired).
    pub expires_in_s: i64,
}

impl NodeCert {
    /// The leaf certificate in the PEM file at `path`.
    pub fn read(path: &Path) -> Result<Self, TlsFileError> {
        let certs = load_certs(path)?;
        let info = cert_info(&certs[0])?;
        Ok(Self {
            name: info.common_name,
            not_after: info.not_after,
            expires_in_s: info.expires_in_s,
        })
    }

    pub fn expiry(&self) -> Expiry {
        expiry(&self.name, &self.not_after, self.expires_in_s)
    }
}

/// Whether a certificate needs attention, with the message for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiry {
    Valid,
    /// Expires within [`WARN_WITHIN_DAYS`]: still accepted, renew it now.
    Soon(String),
    /// The controller refuses it at the handshake.
    Expired(String),
}

/// The decision: `expires_in_s` seconds left on the certificate of node `node`.
pub fn expiry(node: &str, not_after: &str, expires_in_s: i64) -> Expiry {
    if expires_in_s <= 0 {
        return Expiry::Expired(format!(
            "the certificate for node '{node}' expired on {not_after} and the controller refuses it; {}",
            renew_hint(node)
        ));
    }
    if expires_in_s > WARN_WITHIN_DAYS * DAY_S {
        return Expiry::Valid;
    }
    let left = match expires_in_s / DAY_S {
        0 => "in less than a day".to_owned(),
        1 => "in 1 day".to_owned(),
        days => format!("in {days} days"),
    };
    Expiry::Soon(format!(
        "the certificate for node '{node}' expires on {not_after} ({left}); {}",
        renew_hint(node)
    ))
}

fn renew_hint(node: &str) -> String {
    format!(
        "renew it: on the controller run `switchyard certs renew --dir certs --node {node}`, copy \
         certs/nodes/{node}/ to this machine, then run `switchyard-agent init --bundle DIR --force` \
         (or copy its node.pem and node.key over the ones agent.toml names: the agent reads them at \
         its next dial, no restart)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "Thu, 31 Dec 2026 00:00:00 +0000";

    fn days(n: i64) -> i64 {
        n * DAY_S
    }

    #[test]
    fn a_certificate_with_more_than_fourteen_days_left_needs_no_warning() {
        assert_eq!(expiry("xeon", DATE, days(90)), Expiry::Valid);
        assert_eq!(expiry("xeon", DATE, days(14) + 1), Expiry::Valid);
    }

    #[test]
    fn a_certificate_within_fourteen_days_of_expiry_warns_with_the_date_and_the_renew_command() {
        for (left, says) in [
            (days(14), "in 14 days"),
            (days(3) + 5, "in 3 days"),
            (days(1) + 1, "in 1 day"),
            (60, "in less than a day"),
        ] {
            let Expiry::Soon(message) = expiry("xeon", DATE, left) else {
                panic!("{left} s left should warn");
            };
            assert!(message.contains(DATE), "{message}");
            assert!(message.contains(says), "{message}");
            assert!(
                message.contains("switchyard certs renew --dir certs --node xeon"),
                "{message}"
            );
            assert!(
                message.contains("switchyard-agent init --bundle DIR --force"),
                "{message}"
            );
        }
    }

    #[test]
    fn an_expired_certificate_is_an_error_that_says_so() {
        for left in [0, -1, days(-30)] {
            let Expiry::Expired(message) = expiry("m4", DATE, left) else {
                panic!("{left} s left is expired");
            };
            assert!(
                message.starts_with(&format!("the certificate for node 'm4' expired on {DATE}")),
                "{message}"
            );
            assert!(
                message.contains("switchyard certs renew --dir certs --node m4"),
                "{message}"
            );
        }
    }
}
