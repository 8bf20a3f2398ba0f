//! Speeds the agent measures on the requests it serves: time to first token and decode
//! tokens/s (exponentially weighted), and the requests in flight (counted by RAII guards).
//! `switchyard-agent bench` results seed the figures until live requests replace them.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::Stream;
use switchyard_protocol::Performance;

use crate::driver::{DriverError, Event};

/// Weight of the newest request in the moving averages.
const ALPHA: f32 = 0.2;

#[derive(Debug, Default)]
struct Figures {
    tokens_per_sec: Option<f32>,
    ttft_ms: Option<f32>,
    samples: u64,
    source: &'static str,
}

#[derive(Debug, Default)]
pub struct PerformanceTracker {
    figures: Mutex<Figures>,
    in_flight: AtomicU32,
}

fn ewma(old: Option<f32>, new: f32) -> f32 {
    match old {
        Some(old) => old + ALPHA * (new - old),
        None => new,
    }
}

impl PerformanceTracker {
    /// Start from figures measured by `switchyard-agent bench`.
    pub fn seeded(tokens_per_sec: Option<f32>, ttft_ms: Option<f32>) -> Self {
        let source = if tokens_per_sec.is_some() { "bench" } else { "none" };
        Self {
            figures: Mutex::new(Figures {
                tokens_per_sec,
                ttft_ms,
                samples: 0,
                source,
            }),
            in_flight: AtomicU32::new(0),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Figures) -> R) -> R {
        let mut guard = match self.figures.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    pub fn record(&self, ttft_ms: f32, tokens_per_sec: Option<f32>) {
        self.with(|f| {
            f.ttft_ms = Some(ewma(f.ttft_ms.filter(|_| f.source == "served"), ttft_ms));
            if let Some(speed) = tokens_per_sec {
                f.tokens_per_sec = Some(ewma(f.tokens_per_sec.filter(|_| f.source == "served"), speed));
            }
            f.samples += 1;
            f.source = "served";
        });
    }

    /// A whole (non-streamed) generation: only its overall speed is known.
    pub fn record_speed(&self, tokens_per_sec: f32) {
        self.with(|f| {
            f.tokens_per_sec = Some(ewma(f.tokens_per_sec.filter(|_| f.source == "served"), tokens_per_sec));
            f.samples += 1;
            f.source = "served";
        });
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Performance {
        self.with(|f| Performance {
            tokens_per_sec: f.tokens_per_sec,
            ttft_ms: f.ttft_ms,
            samples: f.samples,
            source: if f.source.is_empty() {
                "none".to_owned()
            } else {
                f.source.to_owned()
            },
            in_flight: self.in_flight(),
        })
    }

    /// Count a request as in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { tracker: self.clone() }
    }
}

#[derive(Debug)]
pub struct InFlight {
    tracker: Arc<PerformanceTracker>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.tracker.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Wraps a generation: measures it, and holds its in-flight guard until it ends or is
/// dropped (a client that disconnects drops it, which cancels the upstream request).
pub struct Metered<S> {
    inner: S,
    started: Instant,
    first_token: Option<Instant>,
    tracker: Arc<PerformanceTracker>,
    _in_flight: InFlight,
}

impl<S> std::fmt::Debug for Metered<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metered")
            .field("started", &self.started)
            .field("first_token", &self.first_token)
            .finish_non_exhaustive()
    }
}

impl<S> Metered<S> {
    pub fn new(inner: S, started: Instant, tracker: Arc<PerformanceTracker>, in_flight: InFlight) -> Self {
        Self {
            inner,
            started,
            first_token: None,
            tracker,
            _in_flight: in_flight,
        }
    }
}

impl<S: Stream<Item = Result<Event, DriverError>> + Unpin> Stream for Metered<S> {
    type Item = Result<Event, DriverError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(event))) = &polled {
            let now = Instant::now();
            match event {
                Event::Delta(_) if self.first_token.is_none() => self.first_token = Some(now),
                Event::Done { usage, .. } => {
                    let first = self.first_token.unwrap_or(now);
                    let ttft_ms = first.duration_since(self.started).as_secs_f32() * 1000.0;
                    let decode = now.duration_since(first).as_secs_f32();
                    let speed = (usage.completion_tokens > 1 && decode > 0.0)
                        .then(|| (usage.completion_tokens - 1) as f32 / decode);
                    self.tracker.record(ttft_ms, speed);
                }
                _ => {}
            }
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_measurements_replace_bench_figures_and_then_average() {
        let tracker = PerformanceTracker::seeded(Some(10.0), Some(500.0));
        assert_eq!(tracker.snapshot().source, "bench");
        tracker.record(100.0, Some(40.0));
        let p = tracker.snapshot();
        assert_eq!(
            (p.tokens_per_sec, p.ttft_ms, p.samples, p.source.as_str()),
            (Some(40.0), Some(100.0), 1, "served")
        );
        tracker.record(200.0, Some(50.0));
        let p = tracker.snapshot();
        assert!((p.tokens_per_sec.unwrap_or_default() - 42.0).abs() < 1e-4);
        assert!((p.ttft_ms.unwrap_or_default() - 120.0).abs() < 1e-4);
    }

    #[test]
    fn in_flight_counts_guards() {
        let tracker = Arc::new(PerformanceTracker::default());
        let a = tracker.start();
        let b = tracker.start();
        assert_eq!(tracker.in_flight(), 2);
        drop(a);
        drop(b);
        assert_eq!(tracker.in_flight(), 0);
    }
}
