//! A policy call tried in place on an async worker: while it runs, every stage's deadline on
//! this thread is cut to what is left of a small budget, so that a version that was quick
//! for its probation and then turns slow holds the worker for a few milliseconds, not for
//! its stages' deadlines. An interrupt under the cut is the host's doing: the caller gives
//! the call to a policy thread, where the policy's own deadline decides whether it faults.

use std::cell::Cell;
use std::time::{Duration, Instant};

thread_local! {
    static UNTIL: Cell<Option<Instant>> = const { Cell::new(None) };
    static CUT: Cell<bool> = const { Cell::new(false) };
}

/// Run `call` with this thread's stage deadlines cut to `budget` from now (inside it,
/// [`cut_short`] says whether a stage was interrupted).
pub fn run<R>(budget: Duration, call: impl FnOnce() -> R) -> R {
    let before = UNTIL.with(|u| u.replace(Some(Instant::now() + budget)));
    CUT.with(|c| c.set(false));
    let result = call();
    UNTIL.with(|u| u.set(before));
    CUT.with(|c| c.set(false));
    result
}

/// The deadline, in ms, a stage whose own deadline is `deadline_ms` gets on this thread now.
pub fn deadline_ms(deadline_ms: u32) -> u64 {
    match UNTIL.with(Cell::get) {
        Some(until) => {
            let left = until.saturating_duration_since(Instant::now()).as_millis() as u64;
            left.clamp(1, u64::from(deadline_ms).max(1))
        }
        None => u64::from(deadline_ms),
    }
}

/// Whether a stage was interrupted inside the current [`run`] on this thread.
pub fn cut_short() -> bool {
    UNTIL.with(Cell::get).is_some() && CUT.with(Cell::get)
}

/// A stage on this thread was interrupted.
pub fn interrupted() {
    if UNTIL.with(Cell::get).is_some() {
        CUT.with(|c| c.set(true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_cut_only_inside_a_run_and_an_interrupt_is_reported_once() {
        assert_eq!(deadline_ms(100), 100);
        interrupted();
        let (inside, shorter) = run(Duration::from_millis(5), || {
            let inside = deadline_ms(100);
            let shorter = deadline_ms(2);
            assert!(!cut_short());
            interrupted();
            assert!(cut_short());
            (inside, shorter)
        });
        assert!((1..=5).contains(&inside), "{inside}");
        assert_eq!(shorter, 2, "a shorter deadline of the policy's own stands");
        run(Duration::from_millis(5), || {
            assert!(
                !cut_short(),
                "an interrupt in an earlier run is not reported to the next"
            )
        });
        assert_eq!(deadline_ms(100), 100);
    }
}
