//! The cluster's certificates (`switchyard certs ...`): a CA, the controller's server
//! certificate, and one client certificate per node whose common name is the node's name.
//! Private keys are written with mode 0600. Layout of the folder:
//!
//! ```text
//! ca.pem ca.key                      the cluster CA
//! controller.pem controller.key      the controller's certificate (agents verify it)
//! nodes/<name>/ca.pem node.pem node.key   the bundle an agent's config points at
//! nodes/<name>/join.toml             the node's name and the controller's address
//! ```

mod join;
mod renew;

pub use join::{JoinInfo, controller_address};
pub use renew::{RENEW_WITHIN_DAYS, Renewed, renew};

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType, SerialNumber,
};
use switchyard_protocol::tls::{CertInfo, cert_info, load_certs};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{0}: already exists; pass --force to replace the cluster CA (every issued certificate stops working)")]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no cluster CA here; run `switchyard certs init --dir {1}` first")]
    NoCa(PathBuf, String),
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("invalid node name {0:?}: use 1-63 lowercase letters, digits and '-'")]
    BadName(String),
    #[error("invalid --expires-at {0:?}: use RFC 3339, e.g. 2027-01-31T00:00:00Z")]
    BadDate(String),
    #[error("invalid controller address {0:?}: use host:port, e.g. controller.lan:7443")]
    BadAddress(String),
    #[error("no certificate for node '{0}' here; issue one with `switchyard certs issue --node {0}`")]
    NoSuchNode(String),
    #[error(transparent)]
    Tls(#[from] switchyard_protocol::tls::TlsFileError),
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    // Write beside, then rename: a reader never sees half a file (certificate rotation).
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, contents).map_err(io)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    std::fs::rename(&temporary, path).map_err(io)
}

fn serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn valid_for(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(days);
}

fn check_name(name: &str) -> Result<(), CertError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CertError::BadName(name.to_owned()))
    }
}

/// Create the cluster CA and the controller's certificate for `sans` (DNS names or IPs;
/// `localhost` and `127.0.0.1` are always included).
pub fn init(dir: &Path, sans: &[String], days: i64, force: bool) -> Result<Vec<PathBuf>, CertError> {
    let ca_path = dir.join("ca.pem");
    if ca_path.exists() && !force {
        return Err(CertError::Exists(ca_path));
    }
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    // A distinct name per cluster: two clusters' CAs are never mistaken for each other.
    let mut tag = [0u8; 4];
    let _ = getrandom::fill(&mut tag);
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("Switchyard cluster CA {}", hex::encode(tag)),
    );
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.serial_number = Some(serial());
    valid_for(&mut ca, days.max(days * 3));
    let ca_cert = ca.self_signed(&ca_key)?;
    write(&ca_path, &ca_cert.pem(), false)?;
    write(&dir.join("ca.key"), &ca_key.serialize_pem(), true)?;
    let controller = issue_controller(dir, sans, days)?;
    Ok(vec![ca_path, dir.join("ca.key"), controller.0, controller.1])
}

fn load_issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>, CertError> {
    let ca_path = dir.join("ca.pem");
    if !ca_path.exists() {
        return Err(CertError::NoCa(ca_path, dir.display().to_string()));
    }
    let read = |path: PathBuf| std::fs::read_to_string(&path).map_err(|source| CertError::Io { path, source });
    let key = KeyPair::from_pem(&read(dir.join("ca.key"))?)?;
    Ok(Issuer::from_ca_cert_pem(&read(ca_path)?, key)?)
}

/// (Re)issue the controller's server certificate; replacing it on disk rotates it live.
pub fn issue_controller(dir: &Path, sans: &[String], days: i64) -> Result<(PathBuf, PathBuf), CertError> {
    let issuer = load_issuer(dir)?;
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into()];
    for san in sans {
        if !san.is_empty() && !names.contains(san) {
            names.push(san.clone());
        }
    }
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "switchyard-controller");
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n.clone().try_into().map(SanType::DnsName),
        })
        .collect::<Result<_, _>>()?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(serial());
    valid_for(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let (cert_path, key_path) = (dir.join("controller.pem"), dir.join("controller.key"));
    write(&key_path, &key.serialize_pem(), true)?;
    write(&cert_path, &cert.pem(), false)?;
    Ok((cert_path, key_path))
}

/// Issue the bundle for node `name`: `nodes/<name>/{ca.pem,node.pem,node.key,join.toml}`.
/// `expires_at` (RFC 3339) overrides `days`; `address` is the controller's agent address
/// written into `join.toml` (absent: kept from an earlier bundle, or unknown).
pub fn issue_node(
    dir: &Path,
    name: &str,
    days: i64,
    expires_at: Option<&str>,
    address: Option<String>,
) -> Result<PathBuf, CertError> {
    check_name(name)?;
    let issuer = load_issuer(dir)?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names = vec![SanType::DnsName(name.to_owned().try_into()?)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(serial());
    valid_for(&mut params, days);
    if let Some(at) = expires_at {
        let at = OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
            .map_err(|_| CertError::BadDate(at.to_owned()))?;
        params.not_after = at;
        params.not_before = params.not_before.min(at - Duration::days(1));
    }
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let bundle = dir.join("nodes").join(name);
    let ca = std::fs::read_to_string(dir.join("ca.pem")).map_err(|source| CertError::Io {
        path: dir.join("ca.pem"),
        source,
    })?;
    write(&bundle.join("ca.pem"), &ca, false)?;
    write(&bundle.join("node.key"), &key.serialize_pem(), true)?;
    write(&bundle.join("node.pem"), &cert.pem(), false)?;
    let earlier = JoinInfo::read(&bundle);
    let join = JoinInfo {
        node: name.to_owned(),
        address: address.or_else(|| earlier.as_ref().and_then(|e| e.address.clone())),
        server_name: earlier.and_then(|e| e.server_name),
    };
    write(&bundle.join("join.toml"), &join.to_toml(), false)?;
    Ok(bundle)
}

/// Every certificate in the folder with its expiry.
pub fn list(dir: &Path) -> Result<Vec<(PathBuf, CertInfo)>, CertError> {
    let mut paths = vec![dir.join("ca.pem"), dir.join("controller.pem")];
    if let Ok(nodes) = std::fs::read_dir(dir.join("nodes")) {
        let mut bundles: Vec<PathBuf> = nodes.flatten().map(|e| e.path().join("node.pem")).collect();
        bundles.sort();
        paths.extend(bundles);
    }
    let mut out = Vec::new();
    for path in paths.into_iter().filter(|p| p.exists()) {
        let certs = load_certs(&path)?;
        out.push((path, cert_info(&certs[0])?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_issue_and_list_make_a_cluster_whose_node_names_are_in_the_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        init(dir.path(), &["controller.lan".into()], 365, false).expect("init");
        assert!(matches!(init(dir.path(), &[], 365, false), Err(CertError::Exists(_))));
        let bundle = issue_node(dir.path(), "xeon", 30, None, None).expect("issue");
        let certs = load_certs(&bundle.join("node.pem")).expect("node cert");
        assert_eq!(switchyard_protocol::tls::node_name(&certs[0]).expect("name"), "xeon");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [
                dir.path().join("ca.key"),
                dir.path().join("controller.key"),
                bundle.join("node.key"),
            ] {
                let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", key.display());
            }
        }
        let listed = list(dir.path()).expect("list");
        let names: Vec<_> = listed.iter().map(|(_, info)| info.common_name.as_str()).collect();
        assert!(names[0].starts_with("Switchyard cluster CA "), "{names:?}");
        assert_eq!(names[1..], ["switchyard-controller", "xeon"]);
        assert!(listed[2].1.expires_in_s > 29 * 86_400);
        let expired = issue_node(dir.path(), "old", 30, Some("2020-01-01T00:00:00Z"), None).expect("issue expired");
        let info = cert_info(&load_certs(&expired.join("node.pem")).expect("cert")[0]).expect("info");
        assert!(info.expires_in_s < 0);
        assert!(matches!(
            issue_node(dir.path(), "Bad Name", 30, None, None),
            Err(CertError::BadName(_))
        ));
    }
}
