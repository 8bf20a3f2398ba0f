//! A node's bundle from `switchyard certs issue` (`ca.pem`, `node.pem`, `node.key`,
//! `join.toml`) and what `switchyard-agent init --bundle` does with it: check that it is one
//! node's consistent, unexpired bundle, copy it into `certs/` beside the config, and write
//! the config's `[controller]` section. It must not detect the machine (the caller passes
//! the recommended config) nor dial the controller.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchyard_protocol::tls::{TlsFileError, load_certs, load_key, load_roots};

use crate::config::{AgentConfig, ConfigError};
use crate::init::shell_word;
use crate::node_cert::{Expiry, NodeCert};

/// The bundle's certificate files, copied as they are; the key is written with mode 0600.
const FILES: [&str; 3] = ["ca.pem", "node.pem", "node.key"];

/// `join.toml`, written by `switchyard certs issue` beside the certificates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinFile {
    /// The node the bundle is for (its certificate's common name).
    pub node: String,
    /// `host:port` of the controller's `[agents] listen`; absent when the controller did not
    /// know its own address.
    #[serde(default)]
    pub address: Option<String>,
    /// A name in the controller's certificate, when it differs from the address's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "{0}: not a node bundle (no node.pem in it); the bundle is the folder certs/nodes/NAME/ that \
         `switchyard certs issue --dir certs --node NAME` writes on the controller"
    )]
    NotABundle(PathBuf),
    #[error("{path}: cannot read the join file: {source}")]
    ReadJoin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid join file: {message}")]
    ParseJoin { path: PathBuf, message: String },
    #[error("{path}: field `{field}`: {message}")]
    Invalid {
        path: String,
        field: String,
        message: String,
    },
    #[error(
        "--controller {0:?}: not HOST:PORT; give the controller's [agents] listen address, e.g. controller.lan:7443"
    )]
    BadControllerFlag(String),
    #[error(transparent)]
    Tls(#[from] TlsFileError),
    #[error("{cert} and {key} do not form a pair ({reason}); copy the whole bundle again")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("{cert}: not usable as a node certificate ({reason}); issue it with `switchyard certs issue`")]
    Unusable { cert: PathBuf, reason: String },
    #[error("{join} says node '{said}' but {cert} is for node '{name}'; the bundle is mixed up, issue it again")]
    MixedBundle {
        join: PathBuf,
        said: String,
        cert: PathBuf,
        name: String,
    },
    #[error(
        "the certificate {cert} is for node '{name}', not '{requested}'; drop --node, or issue a \
         certificate for '{requested}' on the controller: `switchyard certs issue --dir certs --node {requested}`"
    )]
    WrongNode {
        cert: PathBuf,
        name: String,
        requested: String,
    },
    #[error("{cert}: {message}")]
    Expired { cert: PathBuf, message: String },
    #[error(
        "no controller address: {0} has no `address` (the controller did not know it when it issued \
         the bundle); pass --controller HOST:PORT, the controller's [agents] listen address, e.g. \
         --controller controller.lan:7443"
    )]
    NoAddress(PathBuf),
    #[error("{0}: exists; pass --force to overwrite it")]
    Exists(PathBuf),
    #[error(
        "{0}: already has a [controller] section; pass --force to write a fresh config (edits to it are \
         lost), or to renew only the certificate copy the new node.pem and node.key over the ones it names"
    )]
    AlreadyJoined(PathBuf),
    #[error(
        "{path} says node = \"{said}\" but the certificate is for node '{name}'; set node = \"{name}\" \
         in it, or pass --force to write a fresh config for '{name}'"
    )]
    ConfigForAnotherNode { path: PathBuf, said: String, name: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What `switchyard-agent init --bundle` was asked to do.
#[derive(Debug, Clone, Copy)]
pub struct JoinRequest<'a> {
    /// The bundle folder (`certs/nodes/NAME/` from the controller).
    pub bundle: &'a Path,
    /// The config to write; `certs/` goes beside it.
    pub output: &'a Path,
    /// `--controller HOST:PORT`: overrides join.toml's address.
    pub controller: Option<&'a str>,
    /// `--node`: must be the certificate's name.
    pub node: Option<&'a str>,
    /// Overwrite the config and the certificates.
    pub force: bool,
}

/// What it did.
#[derive(Debug, Clone)]
pub struct Joined {
    pub node: String,
    pub address: String,
    pub certs_dir: PathBuf,
    /// false when the bundle already was `certs/` beside the config.
    pub copied: bool,
    /// true when the `[controller]` section was added to an existing config.
    pub kept_config: bool,
    /// The whole config as written.
    pub config: String,
    pub certificate: NodeCert,
}

/// Check the bundle, copy it beside the config and write the config: `recommend(node)` (the
/// machine's recommended config) when there is none or with `force`, else the existing one,
/// each with the `[controller]` section added. Everything is checked before anything is
/// written.
pub fn join(request: &JoinRequest<'_>, recommend: impl FnOnce(&str) -> String) -> Result<Joined, JoinError> {
    let dir = request.bundle;
    let CheckedBundle {
        certificate,
        node,
        join_path,
        join_file,
    } = check_bundle(dir, request.node)?;
    let address = controller_address(request.controller, join_file.as_ref(), &join_path)?;
    let server_name = join_file.and_then(|j| j.server_name);

    let shown = request.output.display().to_string();
    let existing = existing_config(request, &shown, &node)?;
    let kept_config = existing.is_some();
    let mut config = existing.unwrap_or_else(|| recommend(&node));
    if !config.ends_with('\n') {
        config.push('\n');
    }
    config.push_str(&controller_section(&address, server_name.as_deref()));
    AgentConfig::parse(&config, &shown)?;

    let base = request.output.parent().unwrap_or(Path::new(""));
    let certs_dir = base.join("certs");
    let copied = !same_folder(dir, &certs_dir);
    if copied {
        copy_bundle(dir, &certs_dir, request.force)?;
    }
    write_file(request.output, config.as_bytes(), false)?;
    Ok(Joined {
        node,
        address,
        certs_dir,
        copied,
        kept_config,
        config,
        certificate,
    })
}

/// A bundle that passed [`check_bundle`].
struct CheckedBundle {
    certificate: NodeCert,
    /// The certificate's node name.
    node: String,
    /// Where the bundle's `join.toml` is (or would be).
    join_path: PathBuf,
    /// The bundle's `join.toml`, when it has one.
    join_file: Option<JoinFile>,
}

/// Reads the bundle in `dir` and checks that it is one node's consistent, unexpired bundle,
/// for the node `requested` (`--node`) when given.
fn check_bundle(dir: &Path, requested: Option<&str>) -> Result<CheckedBundle, JoinError> {
    let cert_path = dir.join("node.pem");
    if !cert_path.is_file() {
        return Err(JoinError::NotABundle(dir.to_owned()));
    }
    let certificate = NodeCert::read(&cert_path)?;
    let node = certificate.name.clone();
    check_pair(dir)?;
    let join_path = dir.join("join.toml");
    let join_file = read_join_file(&join_path)?;
    if let Some(join) = &join_file
        && join.node != node
    {
        return Err(JoinError::MixedBundle {
            join: join_path,
            said: join.node.clone(),
            cert: cert_path,
            name: node,
        });
    }
    if let Some(requested) = requested
        && requested != node
    {
        return Err(JoinError::WrongNode {
            cert: cert_path,
            name: node,
            requested: requested.to_owned(),
        });
    }
    if let Expiry::Expired(message) = certificate.expiry() {
        return Err(JoinError::Expired {
            cert: cert_path,
            message,
        });
    }
    Ok(CheckedBundle {
        certificate,
        node,
        join_path,
        join_file,
    })
}

/// The controller's `host:port`: `--controller` when given, else `join.toml`'s `address`.
fn controller_address(flag: Option<&str>, join_file: Option<&JoinFile>, join_path: &Path) -> Result<String, JoinError> {
    match (flag, join_file.and_then(|j| j.address.clone())) {
        (Some(given), _) if is_host_port(given) => Ok(given.to_owned()),
        (Some(given), _) => Err(JoinError::BadControllerFlag(given.to_owned())),
        (None, Some(written)) if is_host_port(&written) => Ok(written),
        (None, Some(written)) => Err(JoinError::Invalid {
            path: join_path.display().to_string(),
            field: "address".to_owned(),
            message: format!("{written:?} is not HOST:PORT, e.g. \"controller.lan:7443\"; pass --controller HOST:PORT"),
        }),
        (None, None) => Err(JoinError::NoAddress(join_path.to_owned())),
    }
}

/// The config already at the output, to keep: `None` when there is none or with `force`;
/// an error when it already has a `[controller]` section or is for another node.
fn existing_config(request: &JoinRequest<'_>, shown: &str, node: &str) -> Result<Option<String>, JoinError> {
    if request.output.exists() && !request.force {
        let text = std::fs::read_to_string(request.output).map_err(|source| io(request.output, source))?;
        let config = AgentConfig::parse(&text, shown)?;
        if config.controller.is_some() {
            return Err(JoinError::AlreadyJoined(request.output.to_owned()));
        }
        if config.node != node {
            return Err(JoinError::ConfigForAnotherNode {
                path: request.output.to_owned(),
                said: config.node,
                name: node.to_owned(),
            });
        }
        Ok(Some(text))
    } else {
        Ok(None)
    }
}

/// Copies the bundle's certificate files from `dir` into `certs_dir` (the key with mode
/// 0600); without `force`, refuses before copying anything when one is already there.
fn copy_bundle(dir: &Path, certs_dir: &Path, force: bool) -> Result<(), JoinError> {
    if !force && let Some(taken) = FILES.iter().map(|f| certs_dir.join(f)).find(|p| p.exists()) {
        return Err(JoinError::Exists(taken));
    }
    std::fs::create_dir_all(certs_dir).map_err(|source| io(certs_dir, source))?;
    for file in FILES {
        let from = dir.join(file);
        let bytes = std::fs::read(&from).map_err(|source| io(&from, source))?;
        write_file(&certs_dir.join(file), &bytes, file == "node.key")?;
    }
    Ok(())
}

impl Joined {
    /// What `init --bundle` prints after the config.
    pub fn report(&self, bundle: &Path, output: &Path) -> String {
        let mut lines = Vec::new();
        if self.copied {
            lines.push(format!(
                "copied ca.pem, node.pem and node.key from {} to {} (node.key with mode 0600)",
                bundle.display(),
                self.certs_dir.display()
            ));
        } else {
            lines.push(format!("the certificates stay in {}", self.certs_dir.display()));
        }
        match self.certificate.expiry() {
            Expiry::Soon(message) => lines.push(format!("warning: {message}")),
            _ => lines.push(format!(
                "the certificate for node '{}' is valid until {}",
                self.node, self.certificate.not_after
            )),
        }
        lines.push(format!(
            "next: `switchyard-agent run --config {}` (or start the service); the node then shows in \
             `switchyard nodes` on the controller",
            shell_word(&output.display().to_string())
        ));
        lines.join("\n")
    }
}

/// The `[controller]` section: paths relative to the config, where `join` copies the bundle.
pub fn controller_section(address: &str, server_name: Option<&str>) -> String {
    let quoted = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let mut text = format!(
        "\n# Written by `switchyard-agent init --bundle`: the controller this node joins over mTLS.\n\
         [controller]\naddress = {}\n",
        quoted(address)
    );
    if let Some(name) = server_name {
        text.push_str(&format!("server_name = {}\n", quoted(name)));
    }
    text.push_str("ca = \"certs/ca.pem\"                # paths relative to this file\n");
    text.push_str("cert = \"certs/node.pem\"\nkey = \"certs/node.key\"\n");
    text
}

fn read_join_file(path: &Path) -> Result<Option<JoinFile>, JoinError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        // A bundle issued before `switchyard certs issue` wrote join.toml: --controller is enough.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(JoinError::ReadJoin {
                path: path.to_owned(),
                source,
            });
        }
    };
    let join: JoinFile = toml::from_str(&text).map_err(|e| JoinError::ParseJoin {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(Some(join))
}

/// `host:port` with a port from 1 to 65535.
fn is_host_port(address: &str) -> bool {
    address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

/// The CA parses, and the key is the certificate's.
fn check_pair(dir: &Path) -> Result<(), JoinError> {
    load_roots(&dir.join("ca.pem"))?;
    let (cert, key) = (dir.join("node.pem"), dir.join("node.key"));
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(load_certs(&cert)?, load_key(&key)?, &provider)
        .map(|_| ())
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => JoinError::KeyMismatch {
                cert,
                key,
                reason: e.to_string(),
            },
            _ => JoinError::Unusable {
                cert,
                reason: e.to_string(),
            },
        })
}

fn same_folder(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn io(path: &Path, source: std::io::Error) -> JoinError {
    JoinError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Write beside, then rename: a running agent never reads half a certificate.
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), JoinError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = options.open(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&temporary);
        io(path, source)
    })
}

#[cfg(test)]
mod tests;
