//! The agent's link to the controller: the agent dials (so only the controller opens a
//! port and a laptop behind NAT can join), authenticates with its node certificate over TLS
//! 1.3, checks the controller's certificate against the cluster CA, and then serves its API
//! as an HTTP/2 *server* on the connection it opened as a *client*. When the link ends, it
//! dials again with jittered exponential backoff. Certificates are read at every attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use switchyard_protocol::tls::{load_certs, load_key, load_roots};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::api::AgentApi;
use crate::config::ControllerLink;
use crate::node_cert::{Expiry, NodeCert};

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long requests still running when the agent stops get before the link closes.
const STOP_GRACE: Duration = Duration::from_millis(500);
/// A link that stayed up this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Link {
    config: ControllerLink,
    api: Arc<AgentApi>,
}

fn client_config(link: &ControllerLink) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(load_roots(&link.ca)?)
        .with_client_auth_cert(load_certs(&link.cert)?, load_key(&link.key)?)
        .map_err(|e| {
            anyhow::anyhow!(
                "{} / {}: certificate and key do not form a usable pair: {e}",
                link.cert.display(),
                link.key.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// An error and its sources on one line (hyper's own message hides the TLS alert).
fn with_sources(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Link {
    pub fn new(config: ControllerLink, api: Arc<AgentApi>) -> Self {
        Self { config, api }
    }

    /// Warn (once per dial) about a certificate that expires soon; refuse an expired one
    /// with the fix rather than let the controller's handshake alert say it.
    fn check_expiry(&self) -> anyhow::Result<()> {
        let cert = &self.config.cert;
        match NodeCert::read(cert)?.expiry() {
            Expiry::Valid => Ok(()),
            Expiry::Soon(message) => {
                tracing::warn!(cert = %cert.display(), "{message}");
                Ok(())
            }
            Expiry::Expired(message) => anyhow::bail!("{}: {message}", cert.display()),
        }
    }

    /// One connection: dial, handshake, serve until the link ends.
    async fn connect_and_serve(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        self.check_expiry()?;
        let tls = client_config(&self.config)?;
        let server_name = ServerName::try_from(self.config.server_name())
            .map_err(|e| anyhow::anyhow!("controller.server_name {:?}: {e}", self.config.server_name()))?;
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&self.config.address))
            .await
            .map_err(|_| anyhow::anyhow!("no TCP connection to {} within 5 s", self.config.address))?
            .map_err(|e| anyhow::anyhow!("cannot reach the controller at {}: {e}", self.config.address))?;
        tcp.set_nodelay(true)?;
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            TlsConnector::from(Arc::new(tls)).connect(server_name, tcp),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no TLS handshake with {} within 5 s", self.config.address))?
        .map_err(|e| {
            anyhow::anyhow!(
                "TLS handshake with the controller at {} failed: {e}",
                self.config.address
            )
        })?;
        tracing::debug!(controller = %self.config.address, "TLS established; waiting for the controller to register this node");
        // With TLS 1.3 the controller checks this node's certificate after the client's
        // handshake completes: the link counts as up only once the controller asks for
        // something (its registration request).
        let api = self.api.clone();
        let announced = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (address, node) = (self.config.address.clone(), self.api.config.node.clone());
        let service = hyper::service::service_fn(move |request| {
            let api = api.clone();
            if !announced.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::info!(controller = %address, %node, "linked to the controller");
            }
            async move { Ok::<_, std::convert::Infallible>(api.handle(request).await) }
        });
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2));
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        tokio::select! {
            result = &mut connection => result.map_err(|e| anyhow::anyhow!("link to the controller ended: {}", with_sources(&e))),
            _ = shutdown.cancelled() => {
                // Stopping means stopping: requests still running get STOP_GRACE to end, then
                // the link closes and the controller ends each client's answer with an
                // explicit error at once (`switchyard node drain` is how to let work finish).
                connection.as_mut().graceful_shutdown();
                if tokio::time::timeout(STOP_GRACE, connection).await.is_err() {
                    tracing::warn!(grace = ?STOP_GRACE, "stopping: closing the link with requests still running");
                }
                Ok(())
            }
        }
    }

    /// Keep a link up until cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = Instant::now();
            let result = self.connect_and_serve(&shutdown).await;
            if shutdown.is_cancelled() {
                return;
            }
            if started.elapsed() > STABLE_AFTER {
                backoff = FIRST_BACKOFF;
            }
            match result {
                Ok(()) => {
                    tracing::warn!(controller = %self.config.address, "the controller closed the link; dialling again")
                }
                Err(e) => tracing::error!(controller = %self.config.address, "{e:#}; dialling again in {backoff:?}"),
            }
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let wait = backoff.mul_f64(0.75 + f64::from(nanos % 500) / 1000.0);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
