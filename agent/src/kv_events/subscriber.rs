//! The subscription itself: a ZMQ SUB socket on vLLM's event endpoint (bound for `tcp://`,
//! where vLLM connects; connected for `ipc://`, where vLLM binds), and a DEALER to its
//! replay endpoint for missed batches. Reopened after an error, until shutdown.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, SubSocket, ZmqMessage};

use super::wire::{self, Batch};
use super::{KvEvents, Next};
use crate::config::KvEventsConfig;

/// How long a replay may take before the missed batches count as lost.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause before opening the subscription again after an error.
const RETRY: Duration = Duration::from_secs(2);

pub(super) async fn run(events: Arc<KvEvents>, config: KvEventsConfig, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        match open(&config).await {
            Ok(socket) => {
                tracing::info!(endpoint = %config.endpoint, "subscribed to the runtime's KV-cache events");
                events.set_current(true);
                let why = tokio::select! {
                    _ = shutdown.cancelled() => None,
                    why = receive(&events, &config, socket) => Some(why),
                };
                events.set_current(false);
                events.forget("the subscription to its KV-cache events ended");
                if let Some(why) = why {
                    tracing::warn!(endpoint = %config.endpoint, "KV-cache events: {why}");
                }
            }
            Err(e) => {
                tracing::warn!(endpoint = %config.endpoint, "cannot subscribe to the runtime's KV-cache events: {e}")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

async fn open(config: &KvEventsConfig) -> Result<SubSocket, zeromq::ZmqError> {
    let mut socket = SubSocket::new();
    if config.endpoint.starts_with("tcp://") {
        socket.bind(&config.endpoint).await?;
    } else {
        socket.connect(&config.endpoint).await?;
    }
    socket.subscribe(&config.topic).await?;
    Ok(socket)
}

/// Apply batches until the socket fails; says why it stopped.
async fn receive(events: &KvEvents, config: &KvEventsConfig, mut socket: SubSocket) -> String {
    loop {
        let message = match socket.recv().await {
            Ok(message) => message,
            Err(e) => return e.to_string(),
        };
        let batch =
            match parts(&message).and_then(|(seq, payload)| wire::decode(seq, payload).map_err(|e| e.to_string())) {
                Ok(batch) => batch,
                Err(e) => {
                    // One unreadable batch is a gap: the next one asks for it again.
                    tracing::warn!("KV-cache events: {e}");
                    continue;
                }
            };
        if let Next::Replay { from } = events.receive(&batch) {
            let replayed = match &config.replay_endpoint {
                Some(endpoint) => replay(endpoint, from).await.unwrap_or_else(|e| {
                    tracing::warn!(%endpoint, from, "KV-cache events: replay failed: {e}");
                    Vec::new()
                }),
                None => Vec::new(),
            };
            events.receive_replayed(from, &replayed, &batch);
        }
    }
}

/// `[topic, sequence, payload]` → (sequence, payload).
fn parts(message: &ZmqMessage) -> Result<(&[u8], &[u8]), String> {
    match (message.get(1), message.get(2)) {
        (Some(seq), Some(payload)) if message.len() == 3 => Ok((seq, payload)),
        _ => Err(wire::WireError::Parts(message.len()).to_string()),
    }
}

/// The batches from `from` on that the runtime's replay buffer still holds.
async fn replay(endpoint: &str, from: i64) -> Result<Vec<Batch>, String> {
    let mut dealer = DealerSocket::new();
    tokio::time::timeout(REPLAY_TIMEOUT, async {
        dealer.connect(endpoint).await.map_err(|e| e.to_string())?;
        let request: ZmqMessage = vec![Bytes::new(), Bytes::copy_from_slice(&from.to_be_bytes())]
            .try_into()
            .map_err(|_| "an empty replay request".to_owned())?;
        dealer.send(request).await.map_err(|e| e.to_string())?;
        let mut batches = Vec::new();
        loop {
            let message = dealer.recv().await.map_err(|e| e.to_string())?;
            // [empty delimiter, topic, sequence, payload]; the sequence -1 ends the replay.
            let (Some(seq), Some(payload)) = (message.get(2), message.get(3)) else {
                return Err(wire::WireError::Parts(message.len()).to_string());
            };
            if wire::sequence(seq).map_err(|e| e.to_string())? == -1 {
                return Ok(batches);
            }
            batches.push(wire::decode(seq, payload).map_err(|e| e.to_string())?);
        }
    })
    .await
    .map_err(|_| format!("no end of replay within {REPLAY_TIMEOUT:?}"))?
}
