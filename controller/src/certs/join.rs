//! `join.toml` in a node's bundle: what `switchyard-agent init --bundle` needs besides the
//! certificates to join (the node's name and the controller's address), and where that
//! address comes from when the operator does not give it (the controller certificate's names).

use std::path::Path;

use serde::{Deserialize, Serialize};
use switchyard_protocol::tls::{load_certs, subject_alt_names};

use super::CertError;

/// The port agents dial when the controller's `[agents] listen` keeps its usual value.
pub const DEFAULT_AGENTS_PORT: u16 = 7443;

/// The contents of `nodes/<name>/join.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinInfo {
    /// The node's name (also its certificate's common name).
    pub node: String,
    /// `host:port` the agent dials (the controller's `[agents] listen`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The name the controller's certificate carries, when it differs from the address's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl JoinInfo {
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!("# Written by `switchyard certs issue`: what `switchyard-agent init --bundle` needs to join.\n{body}")
    }

    /// The bundle's existing join info (kept when a certificate is renewed).
    pub fn read(bundle: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(bundle.join("join.toml")).ok()?;
        toml::from_str(&text).ok()
    }
}

/// The address agents should dial, from `--controller-address` or else from the first name in
/// the controller's certificate that other machines can reach (not `localhost`, not loopback).
pub fn controller_address(dir: &Path, given: Option<&str>) -> Result<Option<String>, CertError> {
    if let Some(address) = given {
        return check_address(address).map(Some);
    }
    let path = dir.join("controller.pem");
    if !path.exists() {
        return Ok(None);
    }
    let certs = load_certs(&path)?;
    let names = subject_alt_names(&certs[0])?;
    Ok(names.into_iter().find(|name| reachable(name)).map(|host| {
        if host.contains(':') {
            format!("[{host}]:{DEFAULT_AGENTS_PORT}")
        } else {
            format!("{host}:{DEFAULT_AGENTS_PORT}")
        }
    }))
}

fn reachable(name: &str) -> bool {
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_loopback() && !ip.is_unspecified(),
        Err(_) => name != "localhost" && !name.ends_with(".localhost"),
    }
}

fn check_address(address: &str) -> Result<String, CertError> {
    let port_ok = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if port_ok {
        Ok(address.to_owned())
    } else {
        Err(CertError::BadAddress(address.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_comes_from_the_flag_or_the_first_reachable_certificate_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(controller_address(dir.path(), None).expect("no certs"), None);
        super::super::init(dir.path(), &["controller.lan".into(), "10.0.0.5".into()], 30, false).expect("init");
        assert_eq!(
            controller_address(dir.path(), None).expect("address").as_deref(),
            Some("controller.lan:7443")
        );
        assert_eq!(
            controller_address(dir.path(), Some("10.0.0.5:9000"))
                .expect("given")
                .as_deref(),
            Some("10.0.0.5:9000")
        );
        assert!(matches!(
            controller_address(dir.path(), Some("controller.lan")),
            Err(CertError::BadAddress(_))
        ));
        let local = tempfile::tempdir().expect("tempdir");
        super::super::init(local.path(), &[], 30, false).expect("init");
        assert_eq!(
            controller_address(local.path(), None).expect("loopback only"),
            None,
            "localhost and 127.0.0.1 are no use to another machine"
        );
    }

    #[test]
    fn join_info_round_trips_through_its_file() {
        let info = JoinInfo {
            node: "xeon".into(),
            address: Some("controller.lan:7443".into()),
            server_name: None,
        };
        let text = info.to_toml();
        assert!(text.starts_with("# Written by `switchyard certs issue`"), "{text}");
        assert_eq!(toml::from_str::<JoinInfo>(&text).expect("parse"), info);
    }
}
