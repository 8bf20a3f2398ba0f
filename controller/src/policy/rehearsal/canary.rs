//! Canary: a candidate policy decides a share of live requests (sticky per session) while the
//! active policy decides the rest. Both shares' outcomes are compared over a sliding window;
//! the candidate is stopped automatically when its share is worse than the active policy's by
//! the configured margins (error rate, TTFT p95, faults). Promotion is one call.

use parking_lot::{Mutex, MutexGuard};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use crate::clock::now_ms;
use serde::{Deserialize, Serialize};
use switchyard_protocol::RequestInfo;

use crate::policy::LoadedPolicy;

/// Outcomes kept per share at most (older ones leave the window early).
const KEPT: usize = 20_000;
/// The verdict is recomputed at most this often.
const EVALUATE_EVERY: Duration = Duration::from_millis(200);

/// When a canary is rolled back: `[canary]` in the controller's config, each overridable
/// when a canary starts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CanaryRules {
    /// The sliding window the two shares are compared over, seconds.
    pub window_s: u32,
    /// Answers each share needs in the window before error rates and TTFT are compared.
    pub min_requests: u32,
    /// Rolled back when the candidate's error rate exceeds the active policy's by more than
    /// this (0.05: five percentage points). Errors: 5xx and 429 answers.
    pub max_error_rate_increase: f64,
    /// Rolled back when the candidate's TTFT p95 is above the active policy's times this...
    pub max_ttft_p95_ratio: f64,
    /// ...and above it by more than this many milliseconds (small absolute differences on
    /// fast answers never roll a canary back).
    pub ttft_slack_ms: u32,
    /// Rolled back after this many faults (traps, deadlines, invalid decisions) in the window.
    pub max_faults: u32,
}

impl Default for CanaryRules {
    fn default() -> Self {
        Self {
            window_s: 60,
            min_requests: 20,
            max_error_rate_increase: 0.05,
            max_ttft_p95_ratio: 1.5,
            ttft_slack_ms: 250,
            max_faults: 3,
        }
    }
}

impl CanaryRules {
    /// Each rule's bound, named as in the config, so a bad value says which field.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=86_400).contains(&self.window_s) {
            return Err(format!("window_s = {} must be 1 to 86400 seconds", self.window_s));
        }
        if self.min_requests == 0 {
            return Err("min_requests must be at least 1".to_owned());
        }
        if !(0.0..=1.0).contains(&self.max_error_rate_increase) {
            return Err(format!(
                "max_error_rate_increase = {} must be a fraction from 0 to 1 (0.05 is five points)",
                self.max_error_rate_increase
            ));
        }
        if !(self.max_ttft_p95_ratio.is_finite() && self.max_ttft_p95_ratio >= 1.0) {
            return Err(format!(
                "max_ttft_p95_ratio = {} must be at least 1 (1.5: half as slow again)",
                self.max_ttft_p95_ratio
            ));
        }
        Ok(())
    }
}

/// Which policy decided a request while a canary runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Share {
    Active,
    Canary,
}

/// Where a canary stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state", content = "why")]
pub enum CanaryState {
    Running,
    /// Stopped automatically; why.
    RolledBack(String),
    /// Made the active policy.
    Promoted,
    /// Stopped by an operator.
    Stopped,
}

/// One share's figures over the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShareFigures {
    /// Answers that ended in the window (cancelled ones are not counted).
    pub answered: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub ttft_p50_ms: Option<u32>,
    pub ttft_p95_ms: Option<u32>,
    pub faults: u64,
}

/// `GET /admin/canary`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CanaryReport {
    /// The candidate, `name@hash`.
    pub policy: String,
    /// The policy active when it started.
    pub active: String,
    pub percent: u8,
    pub rules: CanaryRules,
    pub since_unix_s: u64,
    #[serde(flatten)]
    pub state: CanaryState,
    /// Over the last `window_s` (at the moment it ended, for an ended canary).
    pub window_active: ShareFigures,
    pub window_canary: ShareFigures,
    /// Requests each share decided since the start.
    pub decided_active: u64,
    pub decided_canary: u64,
}

/// A policy event worth keeping with the decision record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyEvent {
    pub at_ms: u64,
    pub kind: PolicyEventKind,
    pub policy: String,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyEventKind {
    CanaryStarted,
    CanaryRolledBack,
    CanaryPromoted,
    CanaryStopped,
}

impl PolicyEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CanaryStarted => "canary-started",
            Self::CanaryRolledBack => "canary-rolled-back",
            Self::CanaryPromoted => "canary-promoted",
            Self::CanaryStopped => "canary-stopped",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Answer {
    at: Instant,
    error: bool,
    ttft_ms: Option<u32>,
}

#[derive(Debug, Default)]
struct Window {
    active: VecDeque<Answer>,
    canary: VecDeque<Answer>,
    faults: VecDeque<Instant>,
    last_evaluated: Option<Instant>,
}

impl Window {
    fn trim(&mut self, now: Instant, window: Duration) {
        let old = |at: Instant| now.saturating_duration_since(at) > window;
        while self.active.front().is_some_and(|a| old(a.at)) || self.active.len() > KEPT {
            self.active.pop_front();
        }
        while self.canary.front().is_some_and(|a| old(a.at)) || self.canary.len() > KEPT {
            self.canary.pop_front();
        }
        while self.faults.front().is_some_and(|at| old(*at)) {
            self.faults.pop_front();
        }
    }
}

fn figures(answers: &VecDeque<Answer>, faults: u64) -> ShareFigures {
    let answered = answers.len() as u64;
    let errors = answers.iter().filter(|a| a.error).count() as u64;
    let mut ttfts: Vec<u32> = answers.iter().filter_map(|a| a.ttft_ms).collect();
    ttfts.sort_unstable();
    let quantile = |q: f64| -> Option<u32> {
        if ttfts.is_empty() {
            return None;
        }
        let rank = ((q * ttfts.len() as f64).ceil() as usize).clamp(1, ttfts.len());
        Some(ttfts[rank - 1])
    };
    ShareFigures {
        answered,
        errors,
        error_rate: if answered == 0 {
            0.0
        } else {
            errors as f64 / answered as f64
        },
        ttft_p50_ms: quantile(0.5),
        ttft_p95_ms: quantile(0.95),
        faults,
    }
}

/// Why the candidate must stop, if it must: the rules applied to the two shares' figures.
pub fn verdict(rules: &CanaryRules, active: &ShareFigures, canary: &ShareFigures) -> Option<String> {
    if rules.max_faults > 0 && canary.faults >= u64::from(rules.max_faults) {
        return Some(format!(
            "{} faults in the last {} s (limit {})",
            canary.faults, rules.window_s, rules.max_faults
        ));
    }
    let enough = u64::from(rules.min_requests);
    if active.answered < enough || canary.answered < enough {
        return None;
    }
    if canary.error_rate - active.error_rate > rules.max_error_rate_increase {
        return Some(format!(
            "error rate {:.1} % against the active policy's {:.1} % over the last {} s (margin {:.1} points)",
            canary.error_rate * 100.0,
            active.error_rate * 100.0,
            rules.window_s,
            rules.max_error_rate_increase * 100.0
        ));
    }
    if let (Some(c), Some(a)) = (canary.ttft_p95_ms, active.ttft_p95_ms)
        && f64::from(c) > f64::from(a) * rules.max_ttft_p95_ratio
        && c.saturating_sub(a) > rules.ttft_slack_ms
    {
        return Some(format!(
            "TTFT p95 {c} ms against the active policy's {a} ms over the last {} s (limit {:.2}x and {} ms more)",
            rules.window_s, rules.max_ttft_p95_ratio, rules.ttft_slack_ms
        ));
    }
    None
}

/// A running (or ended) canary.
pub struct Canary {
    pub policy: Arc<LoadedPolicy>,
    pub active_id: String,
    pub percent: u8,
    pub rules: CanaryRules,
    since_unix_s: u64,
    window: Mutex<Window>,
    /// Requests each share decided since the start.
    decided_active: AtomicU64,
    decided_canary: AtomicU64,
    state: Mutex<CanaryState>,
    ended: AtomicBool,
    /// Called once the canary's share breaks its rules, with why (the engine rolls it back).
    on_broken: RollBack,
}

/// What a canary calls when its share breaks the rules: the engine's roll-back.
pub type RollBack = Box<dyn Fn(&Canary, String) + Send + Sync>;

impl std::fmt::Debug for Canary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Canary")
            .field("policy", &self.policy.id)
            .field("percent", &self.percent)
            .finish_non_exhaustive()
    }
}

pub(in crate::policy) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock()
}

/// FNV-1a: a stable hash, the same in every run and on every controller.
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Canary {
    pub(in crate::policy) fn new(
        policy: Arc<LoadedPolicy>,
        active_id: String,
        percent: u8,
        rules: CanaryRules,
        on_broken: RollBack,
    ) -> Self {
        Self {
            policy,
            active_id,
            percent,
            rules,
            since_unix_s: now_ms() / 1000,
            window: Mutex::new(Window::default()),
            decided_active: AtomicU64::new(0),
            decided_canary: AtomicU64::new(0),
            state: Mutex::new(CanaryState::Running),
            ended: AtomicBool::new(false),
            on_broken,
        }
    }

    /// Whether the candidate decides `req`: the same answer for every request of a session
    /// (`x-switchyard-session` or OpenAI `user`), else by the request's id.
    pub fn takes(&self, req: &RequestInfo) -> bool {
        let key = req.session.as_deref().unwrap_or(&req.id);
        stable_hash(key) % 100 < u64::from(self.percent)
    }

    pub fn is_running(&self) -> bool {
        !self.ended.load(Ordering::Acquire)
    }

    /// Count a decision by `share`.
    pub fn decided(&self, share: Share) {
        let counter = match share {
            Share::Active => &self.decided_active,
            Share::Canary => &self.decided_canary,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The candidate faulted (the fallback decided its request).
    pub fn fault(&self) {
        lock(&self.window).faults.push_back(Instant::now());
        self.evaluate(true);
    }

    /// An answer decided by `share` ended with `status` (`cancelled`: the client left first;
    /// not counted).
    pub fn observe(&self, share: Share, status: u16, ttft_ms: Option<u32>, cancelled: bool) {
        if cancelled || !self.is_running() {
            return;
        }
        let answer = Answer {
            at: Instant::now(),
            error: status >= 500 || status == 429 || status == 0,
            ttft_ms: if status < 400 { ttft_ms } else { None },
        };
        {
            let mut window = lock(&self.window);
            match share {
                Share::Active => window.active.push_back(answer),
                Share::Canary => window.canary.push_back(answer),
            }
        }
        self.evaluate(false);
    }

    fn shares(&self, window: &mut Window) -> (ShareFigures, ShareFigures) {
        window.trim(Instant::now(), Duration::from_secs(u64::from(self.rules.window_s)));
        (
            figures(&window.active, 0),
            figures(&window.canary, window.faults.len() as u64),
        )
    }

    /// Apply the rules (at most every `EVALUATE_EVERY` unless `now`); roll back on a verdict.
    fn evaluate(&self, now: bool) {
        let found = {
            let mut window = lock(&self.window);
            if !now && window.last_evaluated.is_some_and(|at| at.elapsed() < EVALUATE_EVERY) {
                return;
            }
            window.last_evaluated = Some(Instant::now());
            let (active, canary) = self.shares(&mut window);
            verdict(&self.rules, &active, &canary)
        };
        if let Some(why) = found {
            (self.on_broken)(self, why);
        }
    }

    /// Mark the canary ended with `state`; false when it had already ended.
    pub(in crate::policy) fn end(&self, state: CanaryState) -> bool {
        if self.ended.swap(true, Ordering::AcqRel) {
            return false;
        }
        *lock(&self.state) = state;
        true
    }

    pub fn report(&self) -> CanaryReport {
        let (active, canary) = {
            let mut window = lock(&self.window);
            if self.is_running() {
                self.shares(&mut window)
            } else {
                // An ended canary's figures stay as they were when it ended.
                (
                    figures(&window.active, 0),
                    figures(&window.canary, window.faults.len() as u64),
                )
            }
        };
        CanaryReport {
            policy: self.policy.id.to_string(),
            active: self.active_id.clone(),
            percent: self.percent,
            rules: self.rules,
            since_unix_s: self.since_unix_s,
            state: lock(&self.state).clone(),
            window_active: active,
            window_canary: canary,
            decided_active: self.decided_active.load(Ordering::Relaxed),
            decided_canary: self.decided_canary.load(Ordering::Relaxed),
        }
    }
}

/// Events kept in memory for `GET /admin/canary` (the decision record keeps them all).
const EVENTS_KEPT: usize = 64;

/// Called with every policy event (the controller writes them to the decision record).
pub type EventSink = Box<dyn Fn(&PolicyEvent) + Send + Sync>;

/// The engine's canary: the running one, the last one (running or ended) and its events.
#[derive(Default)]
pub struct CanarySlot {
    pub(in crate::policy) running: ArcSwapOption<Canary>,
    pub(in crate::policy) last: Mutex<Option<Arc<Canary>>>,
    pub(in crate::policy) rollbacks: AtomicU64,
    pub(in crate::policy) events: Mutex<VecDeque<PolicyEvent>>,
    pub(in crate::policy) sink: OnceLock<EventSink>,
}

impl std::fmt::Debug for CanarySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CanarySlot")
            .field("running", &self.running.load().as_ref().map(|c| c.policy.id.clone()))
            .finish_non_exhaustive()
    }
}

impl CanarySlot {
    /// End the running canary as promoted if it runs `policy` (just made active).
    pub(in crate::policy) fn end_if_runs(&self, policy: &Arc<LoadedPolicy>, why: &str) {
        let Some(canary) = self.running.load_full() else {
            return;
        };
        if Arc::ptr_eq(&canary.policy, policy) && self.take(&canary, CanaryState::Promoted) {
            tracing::info!(policy = %policy.id, "canary ended: {why}");
            self.emit(PolicyEventKind::CanaryPromoted, &policy.id, why.to_owned());
        }
    }

    /// The running canary when it decides `req`; otherwise counts `req` for the active share.
    pub fn deciding(&self, req: &RequestInfo) -> Option<Arc<Canary>> {
        let guard = self.running.load();
        let canary = guard.as_ref()?;
        if canary.takes(req) {
            canary.decided(Share::Canary);
            Some(canary.clone())
        } else {
            canary.decided(Share::Active);
            None
        }
    }

    /// The running canary and which share decided by `policy_id`, for the request's outcome.
    pub fn share_of(&self, policy_id: &str) -> Option<(Arc<Canary>, Share)> {
        let guard = self.running.load();
        let canary = guard.as_ref()?;
        let share = if *canary.policy.id == *policy_id {
            Share::Canary
        } else {
            Share::Active
        };
        Some((canary.clone(), share))
    }

    pub(in crate::policy) fn emit(&self, kind: PolicyEventKind, policy: &str, detail: String) {
        let event = PolicyEvent {
            at_ms: now_ms(),
            kind,
            policy: policy.to_owned(),
            detail,
        };
        if let Some(sink) = self.sink.get() {
            sink(&event);
        }
        let mut events = lock(&self.events);
        events.push_back(event);
        while events.len() > EVENTS_KEPT {
            events.pop_front();
        }
    }

    /// Stop `canary` if it is the running one: true when this call ended it.
    pub(in crate::policy) fn take(&self, canary: &Canary, state: CanaryState) -> bool {
        if !canary.end(state) {
            return false;
        }
        let guard = self.running.load();
        if guard.as_ref().is_some_and(|c| std::ptr::eq(c.as_ref(), canary)) {
            drop(guard);
            self.running.store(None);
        }
        true
    }
}

/// `GET /admin/canary`: the last canary (running or ended) and the recent events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CanaryView {
    pub canary: Option<CanaryReport>,
    pub rollbacks: u64,
    pub events: Vec<PolicyEvent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(answered: u64, errors: u64, p95: u32, faults: u64) -> ShareFigures {
        ShareFigures {
            answered,
            errors,
            error_rate: errors as f64 / answered.max(1) as f64,
            ttft_p50_ms: Some(p95 / 2),
            ttft_p95_ms: Some(p95),
            faults,
        }
    }

    #[test]
    fn a_canary_within_the_margins_keeps_running() {
        let rules = CanaryRules::default();
        assert_eq!(verdict(&rules, &share(100, 1, 400, 0), &share(100, 4, 590, 2)), None);
        // A 3x TTFT on fast answers stays within the absolute slack.
        assert_eq!(verdict(&rules, &share(100, 0, 50, 0), &share(100, 0, 150, 0)), None);
    }

    #[test]
    fn each_margin_rolls_a_canary_back_once_both_shares_have_enough_answers() {
        let rules = CanaryRules::default();
        let errors = verdict(&rules, &share(100, 1, 400, 0), &share(100, 7, 400, 0)).expect("errors");
        assert!(errors.starts_with("error rate 7.0 %"), "{errors}");
        let slow = verdict(&rules, &share(100, 0, 400, 0), &share(100, 0, 900, 0)).expect("ttft");
        assert!(slow.starts_with("TTFT p95 900 ms"), "{slow}");
        // Too few answers on either side: no comparison yet...
        assert_eq!(verdict(&rules, &share(19, 0, 400, 0), &share(100, 50, 9000, 0)), None);
        assert_eq!(verdict(&rules, &share(100, 0, 400, 0), &share(19, 19, 9000, 0)), None);
        // ...but faults need none.
        let faults = verdict(&rules, &share(0, 0, 0, 0), &share(0, 0, 0, 3)).expect("faults");
        assert!(faults.starts_with("3 faults"), "{faults}");
    }

    #[test]
    fn percentiles_and_error_rates_come_from_the_window() {
        let now = Instant::now();
        let answers: VecDeque<Answer> = (1..=20)
            .map(|i| Answer {
                at: now,
                error: i % 10 == 0,
                ttft_ms: Some(i * 10),
            })
            .collect();
        let f = figures(&answers, 1);
        assert_eq!((f.answered, f.errors, f.faults), (20, 2, 1));
        assert_eq!((f.ttft_p50_ms, f.ttft_p95_ms), (Some(100), Some(190)));
        assert!((f.error_rate - 0.1).abs() < 1e-9);
    }

    #[test]
    fn the_share_is_sticky_per_session_and_near_the_percent() {
        let taken = (0..10_000)
            .filter(|i| {
                let key = format!("req-{i}");
                stable_hash(&key) % 100 < 20
            })
            .count();
        assert!((1_700..2_300).contains(&taken), "{taken} of 10000 at 20 %");
        assert_eq!(stable_hash("session-a"), stable_hash("session-a"));
    }

    #[test]
    fn bad_rules_name_their_field() {
        let rules = CanaryRules {
            max_ttft_p95_ratio: 0.5,
            ..CanaryRules::default()
        };
        assert!(rules.validate().expect_err("invalid").starts_with("max_ttft_p95_ratio"));
        let rules = CanaryRules {
            window_s: 0,
            ..CanaryRules::default()
        };
        assert!(rules.validate().expect_err("invalid").starts_with("window_s"));
    }
}
