//! Each API key's share of the cluster: how many of its requests may be in flight at once
//! (`[[api_keys]] max_concurrent`), from the moment it is let in until its answer's last
//! byte, so that one key's batch loop cannot hold every slot while another key's
//! interactive work waits. A key without the setting is not limited.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The keys' limits and their live counts.
#[derive(Debug, Clone, Default)]
pub struct KeyShares {
    by_key: HashMap<String, Arc<Share>>,
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
}
