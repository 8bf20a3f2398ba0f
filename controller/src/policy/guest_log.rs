//! A policy's `host.log`: each message becomes one log line (control characters escaped,
//! so a policy cannot forge lines), at most `LINES_PER_CALL` per call and
//! `LINES_PER_SECOND` per policy stage; the rest is dropped and counted, so a chatty policy
//! cannot flood the controller's log.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Messages kept per call.
pub const LINES_PER_CALL: u32 = 8;
/// Messages kept per second, across every instance of a stage.
pub const LINES_PER_SECOND: u32 = 100;
/// Characters kept of one message.
pub const MESSAGE_CHARS: usize = 1024;

#[derive(Debug)]
pub struct LogBudget {
    epoch: Instant,
    second: AtomicU64,
    used: AtomicU32,
    dropped: AtomicU64,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            second: AtomicU64::new(0),
            used: AtomicU32::new(0),
            dropped: AtomicU64::new(0),
        }
    }
}

impl LogBudget {
    /// Whether one more line may be logged, given `in_call` lines already logged in this call.
    pub fn allow(&self, in_call: u32) -> bool {
        let second = self.epoch.elapsed().as_secs();
        if self.second.swap(second, Ordering::Relaxed) != second {
            self.used.store(0, Ordering::Relaxed);
        }
        let allowed = in_call < LINES_PER_CALL && self.used.fetch_add(1, Ordering::Relaxed) < LINES_PER_SECOND;
        if !allowed {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// `message` as one printable line of bounded length.
pub fn one_line(message: &str) -> String {
    let mut line = String::with_capacity(message.len().min(MESSAGE_CHARS));
    for c in message.chars().take(MESSAGE_CHARS) {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_cannot_forge_lines_and_the_budget_drops_the_excess() {
        assert_eq!(one_line("ok\nFAKE ERROR\r\x1b[31m"), "ok\\nFAKE ERROR\\r\\u{1b}[31m");
        assert_eq!(one_line(&"x".repeat(5000)).len(), MESSAGE_CHARS);
        let budget = LogBudget::default();
        let kept = (0..LINES_PER_CALL + 5).filter(|i| budget.allow(*i)).count() as u32;
        assert_eq!(kept, LINES_PER_CALL);
        assert_eq!(budget.dropped(), 5);
        let kept_across_calls = (0..1000).filter(|_| budget.allow(0)).count() as u32;
        assert!(kept_across_calls <= LINES_PER_SECOND, "{kept_across_calls}");
    }
}
