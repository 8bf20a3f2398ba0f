//! One connection's activity: how many of its requests are open (from the request's arrival
//! until its response body is done or dropped) and since when it has had none, so that the
//! accept loop can close a connection that opens no request in time (HTTP/1 or HTTP/2: an
//! HTTP/2 client that only answers PINGs is idle too).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::{BoxError, ResponseBody};

/// Open requests and the time the last one ended (or the connection opened).
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    open_requests: AtomicUsize,
    /// Milliseconds after `opened` when the connection last went idle.
    idle_since_ms: AtomicU64,
    /// Whether any request has arrived yet.
    served: AtomicBool,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            open_requests: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            served: AtomicBool::new(false),
        })
    }

    /// A request arrived: the connection is busy until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.open_requests.fetch_add(1, Ordering::AcqRel);
        self.served.store(true, Ordering::Relaxed);
        RequestGuard { activity: self.clone() }
    }

    /// When the connection will have been idle too long, or `None` while a request is open.
    /// `first_request`: the patience before the first request; `between`: after one.
    pub fn idle_deadline(&self, first_request: Duration, between: Duration) -> Option<Instant> {
        if self.open_requests.load(Ordering::Acquire) > 0 {
            return None;
        }
        let idle_since = self.opened + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        let patience = if !self.served.load(Ordering::Relaxed) {
            first_request
        } else {
            between
        };
        Some(idle_since + patience)
    }

    /// Wait until the connection has been idle past its deadline.
    pub async fn idle_expired(&self, first_request: Duration, between: Duration) {
        loop {
            match self.idle_deadline(first_request, between) {
                Some(deadline) if deadline <= Instant::now() => return,
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                // Busy: look again after the shorter patience (a request's end moves the
                // deadline later, never earlier than that).
                None => tokio::time::sleep(first_request.min(between)).await,
            }
        }
    }

    fn end(&self) {
        let now = self.opened.elapsed().as_millis().min(u128::from(u64::MAX)) as u64;
        self.idle_since_ms.fetch_max(now, Ordering::AcqRel);
        self.open_requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Held while a request is open; dropping it ends the request.
#[derive(Debug)]
pub struct RequestGuard {
    activity: Arc<Activity>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.activity.end();
    }
}

/// A response body that keeps its request open until the body is done or dropped.
struct Tracked {
    inner: ResponseBody,
    guard: Option<RequestGuard>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = &polled {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `body`, keeping `guard` (its request) open until it ends.
pub fn track(body: ResponseBody, guard: RequestGuard) -> ResponseBody {
    Tracked {
        inner: body,
        guard: Some(guard),
    }
    .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_is_idle_from_its_start_and_again_once_its_last_body_ends() {
        let first = Duration::from_secs(10);
        let between = Duration::from_millis(300);
        let activity = Activity::new();
        let start = Instant::now();
        let deadline = activity.idle_deadline(first, between).expect("idle at first");
        assert!(deadline >= start + first - Duration::from_millis(5) && deadline <= start + first);

        let guard = activity.begin();
        let body = track(super::super::reply::full(Bytes::from_static(b"answer")), guard);
        assert_eq!(activity.idle_deadline(first, between), None, "a request is open");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(activity.idle_deadline(first, between), None, "its body is not done yet");

        let collected = body.collect().await.expect("body").to_bytes();
        assert_eq!(&collected[..], b"answer");
        let ended = Instant::now();
        let deadline = activity.idle_deadline(first, between).expect("idle again");
        // The patience after a request, counted from its end (not the connection's start).
        assert!(
            deadline + Duration::from_millis(5) >= ended + between,
            "{deadline:?} {ended:?}"
        );

        let waited = Instant::now();
        activity.idle_expired(first, between).await;
        assert!(waited.elapsed() + Duration::from_millis(5) >= between);
    }

    #[test]
    fn a_dropped_body_ends_its_request_too() {
        let activity = Activity::new();
        let body = track(super::super::reply::full(Bytes::new()), activity.begin());
        assert_eq!(
            activity.idle_deadline(Duration::from_secs(1), Duration::from_secs(1)),
            None
        );
        drop(body);
        assert!(
            activity
                .idle_deadline(Duration::from_secs(1), Duration::from_secs(1))
                .is_some()
        );
    }
}
