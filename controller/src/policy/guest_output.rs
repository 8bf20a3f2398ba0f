//! A policy's stdout and stderr: a bounded buffer the host drains into `tracing` after each
//! call. Past the per-call budget, bytes are dropped and counted, never buffered: a chatty
//! policy cannot grow the controller's memory or flood its log.

use parking_lot::Mutex;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of guest output kept between two drains.
pub const OUTPUT_BUDGET: usize = 16 * 1024;

#[derive(Debug, Default)]
struct Buffer {
    bytes: Vec<u8>,
    dropped: u64,
}

impl Buffer {
    fn push(&mut self, data: &[u8]) {
        let room = OUTPUT_BUDGET.saturating_sub(self.bytes.len());
        let kept = data.len().min(room);
        self.bytes.extend_from_slice(&data[..kept]);
        self.dropped += (data.len() - kept) as u64;
    }
}

/// Shared by the WASI context (writer) and the host (drainer).
#[derive(Debug, Clone, Default)]
pub struct GuestOutput {
    buffer: Arc<Mutex<Buffer>>,
}

impl GuestOutput {
    fn with<R>(&self, f: impl FnOnce(&mut Buffer) -> R) -> R {
        let mut guard = self.buffer.lock();
        f(&mut guard)
    }

    /// Move what the policy printed into the log, one event per line.
    pub fn drain_to_log(&self, policy_id: &str) {
        let (bytes, dropped) = self.with(|b| (std::mem::take(&mut b.bytes), std::mem::take(&mut b.dropped)));
        if bytes.is_empty() && dropped == 0 {
            return;
        }
        for line in String::from_utf8_lossy(&bytes).lines() {
            tracing::info!(target: "policy::stdout", policy = %policy_id, "{line}");
        }
        if dropped > 0 {
            tracing::warn!(target: "policy::stdout", policy = %policy_id, dropped, "policy output over budget; bytes dropped");
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.with(|b| b.push(&bytes));
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.with(|b| b.push(buf));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
