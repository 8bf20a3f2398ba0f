//! The accept loop: every accepted socket gets TCP_NODELAY (no 40 ms Nagle stalls on
//! streamed replies), HTTP/1.1 or HTTP/2 by negotiation, and a graceful shutdown that lets
//! in-flight requests finish within a grace period. Connections are bounded: at most
//! `max_connections` at once (the rest wait in the kernel's backlog, so idle or slow clients
//! cannot use up the process's file descriptors), and a client that does not send its
//! request headers within `header_read_timeout` is disconnected.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::ResponseBody;

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
    pub header_read_timeout: Duration,
}

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
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(limits.max_connections));
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
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, "TCP_NODELAY not set: {e}");
        }
        let handler = handler.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let header_read_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            // A client that says nothing, or stalls inside what could be HTTP/2's preface, is
            // let go after the header timeout: hyper's header timer starts only once it knows
            // the protocol, and it waits for bytes to tell.
            if !matches!(
                tokio::time::timeout(header_read_timeout, protocol_known(&stream)).await,
                Ok(Ok(true))
            ) {
                tracing::debug!(%peer, "connection closed: no request within {header_read_timeout:?}");
                return;
            }
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(PeerAddr(peer));
                let handler = handler.clone();
                async move { Ok::<_, std::convert::Infallible>(handler.handle(request).await) }
            });
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("shutdown grace of {grace:?} elapsed with connections still open");
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
