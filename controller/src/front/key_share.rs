//! Each API key's share of the cluster: how many of its requests may be in flight at once
//! (`[[api_keys]] max_concurrent`), from the moment it is let in until its answer's last
//! byte, so that one key's batch loop cannot hold every slot while another key's
//! interactive work waits; and how many tokens it may use a minute (`tokens_per_minute`):
//! each request reserves its prompt (estimated) and its `max_tokens` (256 when it names
//! none) on arrival, and the answer's own usage replaces the reservation when the runtime
//! reports one. A key without the settings is not limited.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

/// The keys' limits and their live counts.
#[derive(Debug, Clone, Default)]
pub struct KeyShares {
    by_key: HashMap<String, Arc<Share>>,
    budgets: HashMap<String, Arc<Budget>>,
}

/// What a request reserves for its answer when it names no `max_tokens`.
pub const DEFAULT_RESERVED_ANSWER: u64 = 256;

/// A key's tokens over the last minute, in one-second buckets: (second, tokens).
#[derive(Debug)]
struct Budget {
    per_minute: u64,
    buckets: Mutex<[(u64, u64); 60]>,
    epoch: Instant,
    refused: AtomicU64,
}

impl Budget {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// Tokens of the last 60 seconds at second `now`.
    fn used(buckets: &[(u64, u64); 60], now: u64) -> u64 {
        buckets
            .iter()
            .filter(|(second, _)| now < second + 60)
            .map(|(_, tokens)| tokens)
            .sum()
    }

    /// Seconds until `needed` tokens of the window have expired.
    fn wait_for(buckets: &[(u64, u64); 60], now: u64, needed: u64) -> u64 {
        let mut live: Vec<(u64, u64)> = buckets
            .iter()
            .copied()
            .filter(|(second, _)| now < second + 60)
            .collect();
        live.sort_unstable();
        let mut freed = 0;
        for (second, tokens) in live {
            freed += tokens;
            if freed >= needed {
                return (second + 60).saturating_sub(now).max(1);
            }
        }
        60
    }
}

/// Tokens a request holds of its key's budget. [`Charge::settle`] replaces the reservation
/// with what the answer used; once the request was sent ([`Charge::keep`]) an answer that
/// says no usage keeps the reservation; a request refused before that gives it all back.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<Budget>,
    second: u64,
    reserved: u64,
    kept: bool,
}

impl Charge {
    /// The request was sent: its reservation stands unless its answer says otherwise.
    pub fn keep(&mut self) {
        self.kept = true;
    }

    /// The answer used `used` tokens (prompt and completion, as its runtime counted them).
    pub fn settle(mut self, used: u64) {
        self.adjust(used);
        self.kept = true;
    }

    /// Count `used` in place of the reservation (if its second is still in the window).
    fn adjust(&self, used: u64) {
        let mut buckets = self.budget.buckets.lock();
        let bucket = &mut buckets[(self.second % 60) as usize];
        if bucket.0 == self.second {
            bucket.1 = (bucket.1 + used).saturating_sub(self.reserved);
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if !self.kept {
            self.adjust(0);
        }
    }
}

/// The key's tokens of the last minute leave no room for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    pub per_minute: u64,
    /// What the request would reserve.
    pub asked: u64,
    /// Seconds until enough of the window has expired (60 when the request alone is larger
    /// than the budget).
    pub retry_after_s: u64,
}

#[derive(Debug)]
struct Share {
    limit: u32,
    in_flight: AtomicU32,
    /// Requests refused for being over the limit, since start.
    refused: AtomicU64,
}

/// One limited key's figures, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFigures {
    pub key: String,
    pub limit: u32,
    pub in_flight: u32,
    pub refused: u64,
}

/// One budgeted key's figures, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetFigures {
    pub key: String,
    pub per_minute: u64,
    /// Tokens used (or held reserved) over the last minute.
    pub last_minute: u64,
    pub refused: u64,
}

/// One request's place in its key's share; dropping it gives the place back.
#[derive(Debug)]
pub struct KeySlot(Arc<Share>);

impl Drop for KeySlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The key already has its limit of requests in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFull {
    pub limit: u32,
}

impl KeyShares {
    /// Limit the key named `key` to `limit` requests in flight.
    pub fn limit(&mut self, key: &str, limit: u32) {
        self.by_key.insert(
            key.to_owned(),
            Arc::new(Share {
                limit,
                in_flight: AtomicU32::new(0),
                refused: AtomicU64::new(0),
            }),
        );
    }

    /// Give the key named `key` a budget of `per_minute` tokens a minute.
    pub fn budget(&mut self, key: &str, per_minute: u64) {
        self.budgets.insert(
            key.to_owned(),
            Arc::new(Budget {
                per_minute,
                buckets: Mutex::new([(0, 0); 60]),
                epoch: Instant::now(),
                refused: AtomicU64::new(0),
            }),
        );
    }

    /// Reserve `tokens` of `key`'s budget: `None` when the key has none.
    pub fn charge(&self, key: &str, tokens: u64) -> Result<Option<Charge>, OverBudget> {
        let Some(budget) = self.budgets.get(key) else {
            return Ok(None);
        };
        let now = budget.now();
        let mut buckets = budget.buckets.lock();
        let used = Budget::used(&buckets, now);
        if used + tokens > budget.per_minute {
            budget.refused.fetch_add(1, Ordering::Relaxed);
            let retry_after_s = if tokens > budget.per_minute {
                60
            } else {
                Budget::wait_for(&buckets, now, used + tokens - budget.per_minute)
            };
            return Err(OverBudget {
                per_minute: budget.per_minute,
                asked: tokens,
                retry_after_s,
            });
        }
        let bucket = &mut buckets[(now % 60) as usize];
        if bucket.0 != now {
            *bucket = (now, 0);
        }
        bucket.1 += tokens;
        Ok(Some(Charge {
            budget: budget.clone(),
            second: now,
            reserved: tokens,
            kept: false,
        }))
    }

    /// Every budgeted key's budget, tokens of the last minute and refusals, by key name.
    pub fn budget_figures(&self) -> Vec<BudgetFigures> {
        let mut figures: Vec<_> = self
            .budgets
            .iter()
            .map(|(key, budget)| BudgetFigures {
                key: key.clone(),
                per_minute: budget.per_minute,
                last_minute: Budget::used(&budget.buckets.lock(), budget.now()),
                refused: budget.refused.load(Ordering::Relaxed),
            })
            .collect();
        figures.sort_by(|a, b| a.key.cmp(&b.key));
        figures
    }

    /// A place for one more request of `key`: `None` when the key is not limited.
    pub fn enter(&self, key: &str) -> Result<Option<KeySlot>, KeyFull> {
        let Some(share) = self.by_key.get(key) else {
            return Ok(None);
        };
        share
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < share.limit).then_some(n + 1)
            })
            .map(|_| Some(KeySlot(share.clone())))
            .map_err(|_| {
                share.refused.fetch_add(1, Ordering::Relaxed);
                KeyFull { limit: share.limit }
            })
    }

    /// Every limited key's limit, requests in flight and refusals, by key name.
    pub fn figures(&self) -> Vec<KeyFigures> {
        let mut figures: Vec<KeyFigures> = self
            .by_key
            .iter()
            .map(|(key, share)| KeyFigures {
                key: key.clone(),
                limit: share.limit,
                in_flight: share.in_flight.load(Ordering::Acquire),
                refused: share.refused.load(Ordering::Relaxed),
            })
            .collect();
        figures.sort_by(|a, b| a.key.cmp(&b.key));
        figures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limited_key_gets_its_places_and_no_more_until_one_ends() {
        let mut shares = KeyShares::default();
        shares.limit("batch", 2);
        let first = shares.enter("batch").expect("room").expect("limited");
        let second = shares.enter("batch").expect("room").expect("limited");
        assert_eq!(shares.enter("batch").err(), Some(KeyFull { limit: 2 }));
        assert_eq!(shares.figures()[0].in_flight, 2);
        drop(first);
        assert!(shares.enter("batch").is_ok_and(|slot| slot.is_some()));
        drop(second);
        assert_eq!(
            shares.figures(),
            vec![KeyFigures {
                key: "batch".to_owned(),
                limit: 2,
                in_flight: 0,
                refused: 1
            }],
            "every place came back; the one refusal is counted"
        );
        // Another key, and a key without a limit, are not held back by it.
        assert!(shares.enter("interactive").is_ok_and(|slot| slot.is_none()));
    }

    #[test]
    fn a_budget_reserves_settles_and_says_when_to_come_back() {
        let mut shares = KeyShares::default();
        shares.budget("batch", 1000);
        let first = shares.charge("batch", 600).expect("room").expect("budgeted");
        let refused = shares.charge("batch", 600).expect_err("over");
        assert_eq!((refused.per_minute, refused.asked), (1000, 600));
        assert!((1..=60).contains(&refused.retry_after_s), "{refused:?}");
        // The answer used only 100 of its 600: the rest comes back at once.
        first.settle(100);
        let mut second = shares.charge("batch", 600).expect("room now").expect("budgeted");
        assert_eq!(
            shares.budget_figures(),
            vec![BudgetFigures {
                key: "batch".to_owned(),
                per_minute: 1000,
                last_minute: 700,
                refused: 1
            }]
        );
        // A request refused before it was sent gives its reservation back; a sent one whose
        // answer says no usage keeps it.
        drop(shares.charge("batch", 300).expect("room").expect("budgeted"));
        assert_eq!(shares.budget_figures()[0].last_minute, 700);
        second.keep();
        drop(second);
        assert_eq!(shares.budget_figures()[0].last_minute, 700);
        // Larger than the whole budget: never, so 60 s (and the message says why).
        assert_eq!(shares.charge("batch", 5000).expect_err("too big").retry_after_s, 60);
        // Keys without a budget are not counted.
        assert!(shares.charge("other", 1_000_000).is_ok_and(|c| c.is_none()));
    }
}
