//! The threads policy calls run on: a small dedicated pool, off the async workers. A policy
//! call is synchronous and may block in the host (WASI's synchronous adapter waits on its own
//! runtime for output and polls, a guest `sleep` is a real wait); on a Tokio worker that
//! either panics ("cannot start a runtime from within a runtime") or stalls every connection
//! the worker serves. Here it blocks only a pool thread, the caller waits asynchronously with
//! its own bound, and a panic is caught and reported instead of unwinding into the server.

use parking_lot::Mutex;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

type Job = Box<dyn FnOnce() + Send>;

/// The pool's queue was full: every thread is busy and enough calls are waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("every policy thread is busy and {0} calls are already waiting")]
pub struct PoolBusy(pub usize);

#[derive(Debug)]
pub struct PolicyPool {
    sender: SyncSender<Job>,
    queue: usize,
}

impl PolicyPool {
    /// `threads` workers (named `policy-N`) behind a queue of `queue` waiting calls.
    pub fn new(threads: usize, queue: usize) -> std::io::Result<Self> {
        let (sender, receiver) = sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads.max(1) {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("policy-{index}"))
                .spawn(move || work(&receiver))?;
        }
        Ok(Self { sender, queue })
    }

    /// Run `call` on a pool thread. The receiver yields `Err` with the panic's message when
    /// the call panicked.
    pub fn submit<R: Send + 'static>(
        &self,
        call: impl FnOnce() -> R + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<R, String>>, PoolBusy> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(call)).map_err(|panic| panic_message(&*panic));
            let _ = reply.send(result);
        });
        match self.sender.try_send(job) {
            Ok(()) => Ok(answer),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(PoolBusy(self.queue)),
        }
    }
}

/// Take jobs until the pool is dropped.
fn work(receiver: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let guard = receiver.lock();
            guard.recv()
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Panics that are expected and handled (a policy call tried in place on an async worker)
/// are not printed by the panic hook; every other panic is, as before.
pub mod quiet_panics {
    use std::cell::Cell;
    use std::sync::Once;

    thread_local! {
        static QUIET: Cell<bool> = const { Cell::new(false) };
    }

    /// Wrap the process's panic hook once: it stays silent inside [`inline`].
    pub fn install() {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if !QUIET.with(Cell::get) {
                    previous(info);
                }
            }));
        });
    }

    /// Run `call` with this thread's panics unprinted (the caller catches them).
    pub fn inline<R>(call: impl FnOnce() -> R) -> R {
        let before = QUIET.with(|q| q.replace(true));
        let result = call();
        QUIET.with(|q| q.set(before));
        result
    }
}

pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with no message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_run_off_the_async_workers_and_panics_come_back_as_errors() {
        let pool = PolicyPool::new(1, 4).expect("pool");
        let name = pool
            .submit(|| std::thread::current().name().map(str::to_owned))
            .expect("queued")
            .await
            .expect("answered");
        assert_eq!(name, Ok(Some("policy-0".to_owned())));
        // A call that would panic on a Tokio worker works on a pool thread.
        let outside = pool
            .submit(|| tokio::runtime::Handle::try_current().is_err())
            .expect("queued")
            .await
            .expect("answered");
        assert_eq!(outside, Ok(true));
        let panicked = pool
            .submit(|| -> u32 { panic!("guest went wrong") })
            .expect("queued")
            .await
            .expect("answered");
        assert_eq!(panicked, Err("guest went wrong".to_owned()));
        // The thread survives its panic.
        assert_eq!(pool.submit(|| 7).expect("queued").await.expect("answered"), Ok(7));
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once() {
        let pool = PolicyPool::new(1, 1).expect("pool");
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let blocked = pool.submit(move || wait.recv().is_ok()).expect("first runs");
        let mut refused = false;
        for _ in 0..3 {
            if pool.submit(|| true).is_err() {
                refused = true;
            }
        }
        assert!(refused, "one running and one queued: the next must be refused");
        release.send(()).expect("release");
        assert_eq!(blocked.await.expect("answered"), Ok(true));
    }
}
