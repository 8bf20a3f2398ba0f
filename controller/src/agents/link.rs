//! The agent link: accept an agent's TLS connection, take its node name from its
//! certificate, run HTTP/2 as the client over the accepted stream (keepalive pings every
//! `ping_interval`), register the node from its `/telemetry`, then follow its
//! `/telemetry/stream` until the link ends. A node whose link or pings fail is marked
//! unhealthy at once and comes back when it reconnects.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use switchyard_protocol::tls::{CertInfo, cert_info};
use switchyard_protocol::{AgentTelemetry, LINK_PROTOCOL};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::telemetry_bounds::{LineReader, MAX_LINE_BYTES, clamp};
use super::{NodeAdmission, ServerTls};
use crate::node_table::NodeTable;

/// Timing of agent links.
#[derive(Debug, Clone, Copy)]
pub struct LinkSettings {
    /// HTTP/2 ping interval on every link.
    pub ping_interval: Duration,
    /// A ping unanswered this long ends the link.
    pub ping_timeout: Duration,
    /// Time allowed for the TLS handshake and registration.
    pub handshake_timeout: Duration,
}

impl Default for LinkSettings {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_millis(800),
            ping_timeout: Duration::from_millis(1000),
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug)]
pub struct AgentListener {
    listener: TcpListener,
    tls: Arc<ServerTls>,
    nodes: Arc<NodeTable>,
    settings: LinkSettings,
    admission: Arc<NodeAdmission>,
    connections: Arc<AtomicU64>,
}

impl AgentListener {
    pub fn new(
        listener: TcpListener,
        tls: Arc<ServerTls>,
        nodes: Arc<NodeTable>,
        settings: LinkSettings,
        admission: NodeAdmission,
    ) -> Self {
        Self {
            admission: Arc::new(admission),
            listener,
            tls,
            nodes,
            settings,
            connections: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn run(self, shutdown: CancellationToken) {
        tokio::spawn(self.tls.clone().watch(shutdown.clone()));
        // Publish telemetry in batches (every `PUBLISH_EVERY`), and refresh telemetry ages
        // (and staleness) in the snapshot every second.
        let nodes = self.nodes.clone();
        let ticker_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(NodeTable::PUBLISH_EVERY);
            let mut ticks: u64 = 0;
            loop {
                tokio::select! {
                    _ = ticker_shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                ticks += 1;
                if ticks.is_multiple_of(10) {
                    nodes.refresh();
                } else {
                    nodes.publish_pending();
                }
            }
        });
        // Agent links are few: a bounded number of connections (each must finish its TLS
        // handshake within the handshake timeout) keeps strangers from using up the file
        // descriptors the front door and the real agents need.
        let open = Arc::new(tokio::sync::Semaphore::new(MAX_AGENT_CONNECTIONS));
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => return,
                permit = open.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!("agent link accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let link = Link {
                peer,
                tls: self.tls.clone(),
                nodes: self.nodes.clone(),
                settings: self.settings,
                admission: self.admission.clone(),
                id: self.connections.fetch_add(1, Ordering::Relaxed) + 1,
            };
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let _permit = permit;
                link.run(stream, shutdown).await;
            });
        }
    }
}

/// Agent connections open at once (linked agents and handshakes in progress).
pub const MAX_AGENT_CONNECTIONS: usize = 256;

struct Link {
    peer: SocketAddr,
    tls: Arc<ServerTls>,
    nodes: Arc<NodeTable>,
    settings: LinkSettings,
    admission: Arc<NodeAdmission>,
    id: u64,
}

fn handshake_hint(error: &std::io::Error) -> &'static str {
    let text = error.to_string();
    if text.contains("corrupt message") || text.contains("InvalidContentType") || text.contains("invalid content type")
    {
        " (the peer is not speaking TLS: agents must connect with TLS and a client certificate)"
    } else if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        " (its certificate was not issued by this cluster's CA)"
    } else if text.contains("xpired") {
        " (its certificate has expired: issue a new one with `switchyard certs issue`)"
    } else if text.contains("NoCertificatesPresented") || text.contains("no certificates") {
        " (it presented no client certificate)"
    } else {
        ""
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(
    sender: &mut SendRequest<Full<Bytes>>,
    path: &str,
) -> anyhow::Result<T> {
    sender.ready().await?;
    let request = Request::builder()
        .method(Method::GET)
        .uri(format!("http://agent{path}"))
        .body(Full::new(Bytes::new()))?;
    let response = sender.send_request(request).await?;
    anyhow::ensure!(response.status().is_success(), "GET {path}: {}", response.status());
    let body = http_body_util::Limited::new(response.into_body(), MAX_LINE_BYTES)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("GET {path}: {e}"))?
        .to_bytes();
    Ok(serde_json::from_slice(&body)?)
}

/// Why an agent whose first telemetry is `first` cannot link: it speaks another version of
/// the link protocol (read before the document is parsed, since a newer one may not parse).
fn protocol_mismatch(first: &serde_json::Value) -> Option<String> {
    let theirs = match first.get("link_protocol") {
        None => 1,
        Some(version) => version.as_u64().unwrap_or(0),
    };
    if theirs == u64::from(LINK_PROTOCOL) {
        return None;
    }
    let agent_version = first["agent_version"].as_str().unwrap_or("unknown");
    let upgrade = if theirs > u64::from(LINK_PROTOCOL) {
        "upgrade the controller to the agent's release"
    } else {
        "upgrade the agent to the controller's release"
    };
    Some(format!(
        "the agent (version {agent_version}) speaks link protocol {theirs} and this controller (version {}) speaks {LINK_PROTOCOL}: {upgrade}",
        env!("CARGO_PKG_VERSION")
    ))
}

async fn tell_refused(sender: &mut SendRequest<Full<Bytes>>, reason: &str) {
    let body = serde_json::json!({ "reason": reason }).to_string();
    let Ok(request) = Request::builder()
        .method(Method::POST)
        .uri("http://agent/link/refused")
        .body(Full::new(Bytes::from(body)))
    else {
        return;
    };
    if sender.ready().await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), sender.send_request(request)).await;
    }
}

impl Link {
    async fn run(self, stream: tokio::net::TcpStream, shutdown: CancellationToken) {
        let peer = self.peer;
        let Some((tls, info)) = self.accept_tls(stream).await else {
            return;
        };
        let name = info.common_name.clone();
        let Some((mut sender, mut connection)) = self.open_http2(tls, &name).await else {
            return;
        };
        let Some(telemetry) = self.register(&mut sender, &name, &info.serial).await else {
            connection.abort();
            return;
        };
        let (serial, expires_in_days) = (info.serial.clone(), info.expires_in_s / 86_400);
        if let Err(reason) = self
            .nodes
            .connected(&name, self.id, peer.to_string(), info, telemetry, sender.clone())
        {
            tracing::error!(%peer, "agent link refused: {reason}");
            tell_refused(&mut sender, &reason).await;
            connection.abort();
            return;
        }
        tracing::info!(%peer, node = %name, %serial, expires_in_days, "agent linked");

        let why = tokio::select! {
            _ = shutdown.cancelled() => "controller shutting down".to_owned(),
            ended = &mut connection => match ended {
                Ok(Ok(())) => "link closed".to_owned(),
                Ok(Err(e)) => format!("link failed: {e}"),
                Err(e) => format!("link task ended: {e}"),
            },
            ended = self.follow_telemetry(&mut sender, &name) => ended,
        };
        connection.abort();
        tracing::warn!(%peer, node = %name, "node out of rotation: {why}");
        self.nodes.disconnected(&name, self.id, why);
    }

    /// The TLS handshake (bounded) and the node's certificate; `None` (logged) when either
    /// fails.
    async fn accept_tls(
        &self,
        stream: tokio::net::TcpStream,
    ) -> Option<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, CertInfo)> {
        let peer = self.peer;
        let acceptor = TlsAcceptor::from(self.tls.current());
        let tls = match tokio::time::timeout(self.settings.handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::warn!(%peer, "agent link refused: TLS handshake failed: {e}{}", handshake_hint(&e));
                return None;
            }
            Err(_) => {
                tracing::warn!(%peer, "agent link refused: no TLS handshake within {:?}", self.settings.handshake_timeout);
                return None;
            }
        };
        let Some(info) = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| cert_info(c).ok())
        else {
            tracing::warn!(%peer, "agent link refused: its certificate carries no node name");
            return None;
        };
        Some((tls, info))
    }

    /// The HTTP/2 client side of the link (the controller asks, the agent answers), with
    /// keep-alive pings; its connection task runs until the link ends.
    async fn open_http2(
        &self,
        tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        name: &str,
    ) -> Option<(SendRequest<Full<Bytes>>, tokio::task::JoinHandle<hyper::Result<()>>)> {
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(self.settings.ping_interval)
            .keep_alive_timeout(self.settings.ping_timeout)
            .keep_alive_while_idle(true);
        match builder.handshake::<_, Full<Bytes>>(TokioIo::new(tls)).await {
            Ok((sender, connection)) => Some((sender, tokio::spawn(connection))),
            Err(e) => {
                tracing::warn!(peer = %self.peer, node = %name, "agent link refused: HTTP/2 handshake failed: {e}");
                None
            }
        }
    }

    /// The agent's first telemetry (bounded), checked against its certificate's name and the
    /// node admission list, implausible figures clamped; `None` (logged, and told to the agent
    /// where it can act on it) when the link is refused.
    async fn register(
        &self,
        sender: &mut SendRequest<Full<Bytes>>,
        name: &str,
        serial: &str,
    ) -> Option<AgentTelemetry> {
        let peer = self.peer;
        let first: serde_json::Value = match tokio::time::timeout(
            self.settings.handshake_timeout,
            get_json(sender, "/telemetry"),
        )
        .await
        {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                tracing::warn!(%peer, node = %name, "agent link refused: registration failed: {e:#}");
                return None;
            }
            Err(_) => {
                tracing::warn!(%peer, node = %name, "agent link refused: no registration within {:?}", self.settings.handshake_timeout);
                return None;
            }
        };
        if let Some(reason) = protocol_mismatch(&first) {
            tracing::error!(%peer, node = %name, "agent link refused: {reason}");
            tell_refused(sender, &reason).await;
            return None;
        }
        let mut telemetry: AgentTelemetry = match serde_json::from_value(first) {
            Ok(telemetry) => telemetry,
            Err(e) => {
                tracing::warn!(%peer, node = %name, "agent link refused: registration failed: {e}");
                return None;
            }
        };
        let refusal = if telemetry.node != name {
            Some(format!(
                "certificate is for node '{name}' but the agent says it is '{}': a node's name comes from its certificate; \
                 set `node = \"{name}\"` in the agent config or issue a certificate for '{}'",
                telemetry.node, telemetry.node
            ))
        } else {
            self.admission.check(name, serial).err()
        };
        if let Some(reason) = refusal {
            tracing::error!(%peer, "agent link refused: {reason}");
            tell_refused(sender, &reason).await;
            return None;
        }
        let clamped = clamp(&mut telemetry);
        if !clamped.is_empty() {
            tracing::warn!(node = %name, ?clamped, "implausible telemetry clamped");
        }
        Some(telemetry)
    }

    /// Read the agent's NDJSON telemetry stream until it ends; returns why it ended.
    async fn follow_telemetry(&self, sender: &mut SendRequest<Full<Bytes>>, name: &str) -> String {
        if let Err(e) = sender.ready().await {
            return format!("link failed: {e}");
        }
        let request = match Request::builder()
            .method(Method::GET)
            .uri("http://agent/telemetry/stream")
            .body(Full::new(Bytes::new()))
        {
            Ok(request) => request,
            Err(e) => return format!("bad request: {e}"),
        };
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => return format!("telemetry stream failed: {e}"),
        };
        let mut body = response.into_body();
        let mut reader = LineReader::default();
        loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    let Some(data) = frame.data_ref() else { continue };
                    let lines = match reader.push(data) {
                        Ok(lines) => lines,
                        Err(too_long) => return format!("{too_long}; the link is closed"),
                    };
                    for line in lines {
                        match serde_json::from_slice::<AgentTelemetry>(&line) {
                            Ok(mut telemetry) if telemetry.node == name => {
                                let clamped = clamp(&mut telemetry);
                                if !clamped.is_empty() {
                                    tracing::warn!(node = %name, ?clamped, "implausible telemetry clamped");
                                }
                                self.nodes.update(name, self.id, telemetry)
                            }
                            Ok(other) => return format!("telemetry for another node ({}) on this link", other.node),
                            Err(e) => tracing::warn!(node = %name, "unreadable telemetry line: {e}"),
                        }
                    }
                }
                Some(Err(e)) => return format!("telemetry stream failed: {e}"),
                None => return "telemetry stream ended".to_owned(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_of_another_link_protocol_is_told_which_side_to_upgrade() {
        let current = serde_json::json!({ "agent_version": "0.1.0", "link_protocol": LINK_PROTOCOL });
        assert_eq!(protocol_mismatch(&current), None);
        // Agents built before the field spoke version 1.
        let unversioned = serde_json::json!({ "agent_version": "0.0.9" });
        assert_eq!(protocol_mismatch(&unversioned).is_none(), LINK_PROTOCOL == 1);
        let newer = serde_json::json!({ "agent_version": "9.0.0", "link_protocol": LINK_PROTOCOL + 1 });
        let reason = protocol_mismatch(&newer).unwrap_or_default();
        assert!(
            reason.contains("version 9.0.0")
                && reason.contains(&format!("link protocol {}", LINK_PROTOCOL + 1))
                && reason.contains("upgrade the controller"),
            "{reason}"
        );
        let garbled = serde_json::json!({ "agent_version": "x", "link_protocol": "two" });
        let reason = protocol_mismatch(&garbled).unwrap_or_default();
        assert!(
            reason.contains("link protocol 0") && reason.contains("upgrade the agent"),
            "{reason}"
        );
    }
}
