//! The accept loop: every accepted socket gets TCP_NODELAY (no 40 ms Nagle stalls on
//! streamed replies), HTTP/1.1 or HTTP/2 by negotiation, and a graceful shutdown that lets
//! in-flight requests finish within a grace period. Connections are bounded: at most
//! `max_connections` at once (the rest wait in the kernel's backlog, so idle or slow clients
//! cannot use up the process's file descriptors), at most `max_connections_per_address` from
//! one client address (more are closed at once), and a connection with no request open is
//! closed when it has been idle too long: `header_read_timeout` before its first request
//! (whatever the protocol: an HTTP/2 client that sends its preface and answers PINGs but
//! opens no stream is idle), `idle_timeout` after one.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::ResponseBody;
use super::activity::{Activity, track};
use super::per_address::PerAddress;

pub type HandlerFuture = Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>;

/// What answers each request.
pub trait Handler: Send + Sync + 'static {
    fn handle(self: Arc<Self>, request: Request<Incoming>) -> HandlerFuture;
}

/// The TCP peer of the connection a request came on (in the request's extensions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// How many connections, and how patient with each.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_address: usize,
    /// The longest a new connection may take to send its first request's headers.
    pub header_read_timeout: Duration,
    /// The longest a connection may stay open with no request after its last one.
    pub idle_timeout: Duration,
}

/// After an idle connection is told to close, how long it has to go before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serve `handler` on `listener` until `shutdown`, then drain for at most `grace`.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    shutdown: CancellationToken,
    grace: Duration,
    limits: ConnectionLimits,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = PerAddress::new(limits.max_connections_per_address);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = open.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(address_slot) = per_address.admit(peer.ip()) else {
            tracing::debug!(%peer, "connection closed: {} already open from this address", limits.max_connections_per_address);
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, "TCP_NODELAY not set: {e}");
        }
        let connection = Connection {
            handler: handler.clone(),
            builder: builder.clone(),
            limits,
            shutdown: shutdown.clone(),
        };
        tokio::spawn(async move {
            let _slots = (permit, address_slot);
            connection.run(stream, peer).await;
        });
    }
    // Every connection gives its permit back when it ends: wait for all of them.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, open.acquire_many(all)).await.is_err() {
        tracing::warn!("shutdown grace of {grace:?} elapsed with connections still open");
    }
}

/// One accepted connection and what it needs to serve it.
struct Connection<H> {
    handler: Arc<H>,
    builder: auto::Builder<TokioExecutor>,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
}

impl<H: Handler> Connection<H> {
    async fn run(self, stream: TcpStream, peer: std::net::SocketAddr) {
        let ConnectionLimits {
            header_read_timeout,
            idle_timeout,
            ..
        } = self.limits;
        // A client that says nothing, or stalls inside what could be HTTP/2's preface, is let
        // go after the header timeout: hyper's header timer starts only once it knows the
        // protocol, and it waits for bytes to tell.
        // (A shutdown lets it go at once: it has no request to drain.)
        let known = tokio::select! {
            known = tokio::time::timeout(header_read_timeout, protocol_known(&stream)) => known,
            _ = self.shutdown.cancelled() => return,
        };
        if !matches!(known, Ok(Ok(true))) {
            tracing::debug!(%peer, "connection closed: no request within {header_read_timeout:?}");
            return;
        }
        let activity = Activity::new();
        let handler = self.handler;
        let requests = activity.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(PeerAddr(peer));
            let handler = handler.clone();
            let guard = requests.begin();
            async move {
                let response = handler.handle(request).await;
                Ok::<_, std::convert::Infallible>(response.map(|body| track(body, guard)))
            }
        });
        let mut connection = pin!(
            self.builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned()
        );
        let mut closing: Option<tokio::time::Instant> = None;
        loop {
            let deadline = closing.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                    return;
                }
                _ = self.shutdown.cancelled(), if closing.is_none() => {
                    // Draining: requests in flight finish (the server's grace bounds them).
                    connection.as_mut().graceful_shutdown();
                    closing = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
                }
                _ = activity.idle_expired(header_read_timeout, idle_timeout), if closing.is_none() => {
                    tracing::debug!(%peer, "connection closed: idle (no request open)");
                    connection.as_mut().graceful_shutdown();
                    closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                }
                _ = tokio::time::sleep_until(deadline), if closing.is_some() => {
                    if activity.idle_deadline(header_read_timeout, idle_timeout).is_some() {
                        // Told to close and still open with nothing to finish: drop it.
                        return;
                    }
                    closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                }
            }
        }
    }
}

/// HTTP/2's connection preface, which a client with prior knowledge sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Wait until the first bytes tell HTTP/1 from HTTP/2 (they leave the preface, or are all
/// of it); `false` if the client closed first. Reads nothing: hyper reads the same bytes.
async fn protocol_known(stream: &tokio::net::TcpStream) -> std::io::Result<bool> {
    let mut head = [0u8; 24];
    loop {
        let n = stream.peek(&mut head).await?;
        if n == 0 {
            return Ok(false);
        }
        if n >= H2_PREFACE.len() || head[..n] != H2_PREFACE[..n] {
            return Ok(true);
        }
        // A prefix of the preface so far: give the rest a moment to arrive.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
