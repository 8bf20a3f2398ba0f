//! Certificates and keys on disk, and the identity a certificate carries. The cluster CA
//! issues every certificate; a node's name is its certificate's common name, so one node
//! cannot report as another. Shared by the agent and the controller (feature `tls`).

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key in it")]
    NoKey { path: PathBuf },
    #[error("{path}: not a valid PEM file: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("the certificate is not valid X.509: {0}")]
    X509(String),
    #[error("the certificate has no common name; certificates from `switchyard certs issue` carry the node name there")]
    NoCommonName,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file, leaf first.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bytes = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsFileError::Pem {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsFileError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsFileError::NoKey { path: path.to_owned() },
        other => TlsFileError::Pem {
            path: path.to_owned(),
            message: other.to_string(),
        },
    })
}

/// A root store holding the cluster CA(s) from `path`.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsFileError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsFileError::Pem {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// What the controller and the CLI show about a certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertInfo {
    pub common_name: String,
    pub serial: String,
    /// RFC 2822 dates.
    pub not_before: String,
    pub not_after: String,
    /// Seconds until expiry (negative once expired).
    pub expires_in_s: i64,
}

/// The common name, serial and validity of a DER certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, TlsFileError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| TlsFileError::X509(e.to_string()))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .ok_or(TlsFileError::NoCommonName)?;
    let validity = cert.validity();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Ok(CertInfo {
        common_name,
        serial: cert.raw_serial_as_string(),
        not_before: validity.not_before.to_rfc2822().unwrap_or_default(),
        not_after: validity.not_after.to_rfc2822().unwrap_or_default(),
        expires_in_s: validity.not_after.timestamp() - now,
    })
}

/// The node name a certificate carries (its common name).
pub fn node_name(der: &[u8]) -> Result<String, TlsFileError> {
    cert_info(der).map(|info| info.common_name)
}

/// The DNS names and IP addresses a certificate's subject-alternative-name extension lists.
pub fn subject_alt_names(der: &[u8]) -> Result<Vec<String>, TlsFileError> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| TlsFileError::X509(e.to_string()))?;
    let Ok(Some(extension)) = cert.subject_alternative_name() else {
        return Ok(Vec::new());
    };
    Ok(extension
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect())
}
