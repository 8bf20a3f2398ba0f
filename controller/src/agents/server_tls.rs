//! The controller's TLS configuration for agent links: TLS 1.3 only, a client certificate
//! from the cluster CA required. Rebuilt whenever the files change on disk, so replacing a
//! certificate takes effect at the next handshake without a restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use switchyard_protocol::tls::{load_certs, load_key, load_roots};
use tokio_util::sync::CancellationToken;

/// Where the controller's link certificates are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// The cluster CA: agents' certificates must chain to it.
    pub ca: PathBuf,
    /// The controller's certificate and key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsPaths {
    fn stamps(&self) -> Vec<Option<SystemTime>> {
        [&self.ca, &self.cert, &self.key]
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }
}

#[derive(Debug)]
pub struct ServerTls {
    paths: TlsPaths,
    current: ArcSwap<ServerConfig>,
}

pub fn build(paths: &TlsPaths) -> anyhow::Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = load_roots(&paths.ca)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| anyhow::anyhow!("{}: cannot verify clients with this CA: {e}", paths.ca.display()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&paths.cert)?, load_key(&paths.key)?)
        .map_err(|e| {
            anyhow::anyhow!(
                "{} / {}: certificate and key do not form a usable pair: {e}",
                paths.cert.display(),
                paths.key.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

impl ServerTls {
    pub fn load(paths: TlsPaths) -> anyhow::Result<Self> {
        let config = build(&paths)?;
        Ok(Self {
            paths,
            current: ArcSwap::from_pointee(config),
        })
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Poll the files every second; rebuild on change. A broken replacement is logged and the
    /// previous configuration stays.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let mut seen = self.paths.stamps();
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let now = self.paths.stamps();
            if now == seen {
                continue;
            }
            seen = now;
            match build(&self.paths) {
                Ok(config) => {
                    self.current.store(Arc::new(config));
                    tracing::info!(cert = %self.paths.cert.display(), "link certificates changed on disk; new handshakes use them");
                }
                Err(e) => {
                    tracing::error!("link certificates changed but cannot be used, keeping the previous ones: {e:#}")
                }
            }
        }
    }
}
