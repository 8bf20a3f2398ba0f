//! Per-node concurrency limits, enforced by the controller, and a bounded priority queue:
//! a request takes a slot on the first of its targets (in the policy's order) that has one;
//! when none has, it waits, higher priority first, until a slot frees or its deadline passes.
//! Within a priority, keys share the slots by weight (start-time fair queuing): each key's
//! requests are stamped with a virtual start that advances by `1 / weight` per request, so
//! one key's loop of a hundred queued requests cannot keep another key's next request
//! waiting behind all of them. A full queue or an expired deadline is an explicit answer
//! (429/503 with `Retry-After`), never an unbounded buffer.

use parking_lot::{Mutex, MutexGuard};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Debug, Default)]
struct State {
    in_use: HashMap<String, u32>,
    /// Waiting requests: (255 - priority, virtual start, arrival) -> the nodes they may use.
    waiting: BTreeMap<Place, Vec<String>>,
    arrivals: u64,
    /// The virtual time: the start of the last request admitted.
    clock: u64,
    /// Each key's virtual finish: where its next request starts (at the clock at least).
    finish: HashMap<Arc<str>, u64>,
}

/// A waiting request's place in line.
type Place = (u8, u64, u64);

/// One virtual request of a key of weight 1.
const COST: u64 = 1_000_000;

/// The key a request is queued under and its weight (`[[api_keys]] weight`, 1 by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub key: Arc<str>,
    pub weight: u32,
}

impl Flow {
    pub fn new(key: &str, weight: u32) -> Self {
        Self {
            key: Arc::from(key),
            weight: weight.max(1),
        }
    }
}

impl State {
    /// The virtual start of `flow`'s next request, advancing its finish.
    fn stamp(&mut self, flow: &Flow) -> u64 {
        let finish = self.finish.entry(flow.key.clone()).or_insert(0);
        let start = (*finish).max(self.clock);
        *finish = start + COST / u64::from(flow.weight);
        start
    }
}

#[derive(Debug)]
pub struct Admission {
    state: Mutex<State>,
    freed: Notify,
    capacity: usize,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("every eligible node is busy and the queue is full ({0} waiting)")]
    QueueFull(usize),
    #[error("every eligible node stayed busy for {0:?}, the longest a request may wait")]
    Deadline(Duration),
}

/// A held slot on a node; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit {
    pub node: String,
    admission: Arc<Admission>,
    /// The request's place in its key's share, given back with the slot.
    key_slot: Option<super::key_share::KeySlot>,
    /// The tokens it reserved of its key's budget, settled when the answer says its usage.
    charge: Option<super::key_share::Charge>,
}

impl Permit {
    /// Hold the request's place in its key's share and its reservation of the key's token
    /// budget until the answer ends.
    pub fn hold(&mut self, key_slot: Option<super::key_share::KeySlot>, charge: Option<super::key_share::Charge>) {
        self.key_slot = key_slot;
        self.charge = charge.map(|mut charge| {
            charge.keep();
            charge
        });
    }

    /// Whether the request holds tokens of its key's budget.
    /// Give this request's place in its key's share and its budget charge to `next` (the
    /// permit of the node its answer continues on).
    pub fn hand_over_to(&mut self, next: &mut Permit) {
        next.key_slot = self.key_slot.take();
        next.charge = self.charge.take();
    }

    pub fn charged(&self) -> bool {
        self.charge.is_some()
    }

    /// The answer used `used` tokens: they replace the reservation.
    pub fn settle(&mut self, used: u64) {
        if let Some(charge) = self.charge.take() {
            charge.settle(used);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        {
            let mut state = self.admission.lock();
            if let Some(n) = state.in_use.get_mut(&self.node) {
                *n = n.saturating_sub(1);
            }
        }
        self.admission.freed.notify_waiters();
    }
}

impl crate::policy::LiveLoad for Admission {
    fn in_flight(&self, node: &str) -> u32 {
        self.in_use(node)
    }
}

impl Admission {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            freed: Notify::new(),
            capacity,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    pub fn queue_depth(&self) -> usize {
        self.lock().waiting.len()
    }

    pub fn in_use(&self, node: &str) -> u32 {
        self.lock().in_use.get(node).copied().unwrap_or(0)
    }

    /// The first of `targets` (node, limit) with a free slot, unless an earlier waiter with
    /// at least this priority could take that node.
    fn try_take(state: &mut State, targets: &[(String, u32)], me: Option<Place>) -> Option<String> {
        for (node, limit) in targets {
            let used = state.in_use.get(node).copied().unwrap_or(0);
            if used >= *limit {
                continue;
            }
            let ahead = state
                .waiting
                .iter()
                .take_while(|(key, _)| Some(**key) != me)
                .any(|(_, nodes)| nodes.contains(node));
            if ahead {
                continue;
            }
            *state.in_use.entry(node.clone()).or_insert(0) += 1;
            return Some(node.clone());
        }
        None
    }

    /// Take a slot on one of `targets` (node, max concurrency), in order, waiting at most
    /// `deadline` in the queue, in line by priority and then by `flow`'s fair share.
    pub async fn acquire(
        self: &Arc<Self>,
        targets: &[(String, u32)],
        priority: u8,
        flow: &Flow,
        deadline: Duration,
    ) -> Result<Permit, Refusal> {
        let key = {
            let mut state = self.lock();
            if let Some(node) = Self::try_take(&mut state, targets, None) {
                let start = state.stamp(flow);
                // Only with nobody waiting does an immediate admission move the clock: a key
                // admitted at once to an idle node must not push newcomers behind the queue.
                if state.waiting.is_empty() {
                    state.clock = state.clock.max(start);
                }
                return Ok(Permit {
                    key_slot: None,
                    charge: None,
                    node,
                    admission: self.clone(),
                });
            }
            if state.waiting.len() >= self.capacity {
                return Err(Refusal::QueueFull(state.waiting.len()));
            }
            state.arrivals += 1;
            let start = state.stamp(flow);
            let key = (255 - priority, start, state.arrivals);
            state
                .waiting
                .insert(key, targets.iter().map(|(n, _)| n.clone()).collect());
            key
        };
        // Leaves the queue however the wait ends: admitted, timed out, or its request dropped
        // (a client that resets its stream while queued), and lets the next waiter look.
        let mut place = QueuePlace {
            admission: self,
            key: Some(key),
        };
        let waited = tokio::time::timeout(deadline, async {
            loop {
                let freed = self.freed.notified();
                tokio::pin!(freed);
                freed.as_mut().enable();
                {
                    let mut state = self.lock();
                    if let Some(node) = Self::try_take(&mut state, targets, Some(key)) {
                        state.waiting.remove(&key);
                        // The clock follows the earliest start still waiting: an admission out
                        // of turn (its node was free) does not jump it past the others.
                        let earliest = state.waiting.keys().map(|k| k.1).min().unwrap_or(key.1);
                        state.clock = state.clock.max(earliest.min(key.1));
                        return node;
                    }
                }
                freed.await;
            }
        })
        .await;
        match waited {
            Ok(node) => {
                place.key = None;
                Ok(Permit {
                    key_slot: None,
                    charge: None,
                    node,
                    admission: self.clone(),
                })
            }
            Err(_) => {
                place.key = None;
                self.lock().waiting.remove(&key);
                // Others may now be first in line.
                self.freed.notify_waiters();
                Err(Refusal::Deadline(deadline))
            }
        }
    }
}

/// A waiter's place in the queue, given up when its wait is dropped before it ends.
struct QueuePlace<'a> {
    admission: &'a Arc<Admission>,
    key: Option<Place>,
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.admission.lock().waiting.remove(&key);
            self.admission.freed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(list: &[(&str, u32)]) -> Vec<(String, u32)> {
        list.iter().map(|(n, l)| ((*n).to_owned(), *l)).collect()
    }

    #[tokio::test]
    async fn slots_are_taken_in_target_order_and_freed_on_drop() {
        let admission = Admission::new(4);
        let t = targets(&[("a", 1), ("b", 2)]);
        let first = admission
            .acquire(&t, 5, &Flow::new("k", 1), Duration::from_secs(1))
            .await
            .expect("a");
        assert_eq!(first.node, "a");
        let second = admission
            .acquire(&t, 5, &Flow::new("k", 1), Duration::from_secs(1))
            .await
            .expect("b");
        assert_eq!(second.node, "b");
        drop(first);
        assert_eq!(
            admission
                .acquire(&t, 5, &Flow::new("k", 1), Duration::from_secs(1))
                .await
                .expect("a again")
                .node,
            "a"
        );
    }

    #[tokio::test]
    async fn a_full_queue_and_an_expired_deadline_are_refusals() {
        let admission = Admission::new(1);
        let t = targets(&[("a", 1)]);
        let _held = admission
            .acquire(&t, 5, &Flow::new("k", 1), Duration::from_secs(1))
            .await
            .expect("slot");
        let waiter = {
            let admission = admission.clone();
            let t = t.clone();
            tokio::spawn(async move {
                admission
                    .acquire(&t, 5, &Flow::new("k", 1), Duration::from_millis(200))
                    .await
            })
        };
        while admission.queue_depth() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            admission
                .acquire(&t, 5, &Flow::new("k", 1), Duration::from_secs(1))
                .await
                .expect_err("full"),
            Refusal::QueueFull(1)
        );
        assert!(matches!(waiter.await.expect("join"), Err(Refusal::Deadline(_))));
        assert_eq!(admission.queue_depth(), 0);
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_highest_priority_waiter() {
        let waiters = [("k", 1, 1), ("k", 1, 9), ("k", 1, 5)];
        let order = admitted_in_order(&waiters).await;
        let priorities: Vec<u8> = order.iter().map(|&i| waiters[i].2).collect();
        assert_eq!(priorities, [9, 5, 1]);
    }

    /// Queue `waiters` (key, weight) at priority 5 in order behind a held slot on one node,
    /// free it, and return the keys in the order they were admitted.
    async fn admitted_order(waiters: &[(&'static str, u32)]) -> Vec<&'static str> {
        let queued: Vec<_> = waiters.iter().map(|&(key, weight)| (key, weight, 5)).collect();
        let order = admitted_in_order(&queued).await;
        order.into_iter().map(|i| waiters[i].0).collect()
    }

    /// Queue `waiters` (key, weight, priority) in order behind a held slot on one node, free
    /// it, and return their indexes in the order they were admitted.
    async fn admitted_in_order(waiters: &[(&'static str, u32, u8)]) -> Vec<usize> {
        let admission = Admission::new(64);
        let t = targets(&[("a", 1)]);
        let held = admission
            .acquire(&t, 5, &Flow::new("first", 1), Duration::from_secs(1))
            .await
            .expect("slot");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (index, (key, weight, priority)) in waiters.iter().copied().enumerate() {
            let (waiter, t, tx) = (admission.clone(), t.clone(), tx.clone());
            tokio::spawn(async move {
                let permit = waiter
                    .acquire(&t, priority, &Flow::new(key, weight), Duration::from_secs(5))
                    .await
                    .expect("eventually");
                tx.send(index).expect("send");
                tokio::time::sleep(Duration::from_millis(2)).await;
                drop(permit);
            });
            while admission.queue_depth() < index + 1 {
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        let mut order = Vec::new();
        for _ in waiters {
            order.push(rx.recv().await.expect("admitted"));
        }
        order
    }

    #[tokio::test]
    async fn one_keys_queued_loop_does_not_hold_back_another_keys_next_request() {
        // The batch key queues six before the interactive key's one arrives: the interactive
        // request goes second, not seventh (first come, first served would put it last).
        let mut waiters = vec![("batch", 1); 6];
        waiters.push(("interactive", 1));
        let order = admitted_order(&waiters).await;
        let place = order.iter().position(|k| *k == "interactive").expect("admitted");
        assert!(place <= 1, "the interactive request came {}th: {order:?}", place + 1);
        // One key alone is served in arrival order.
        assert_eq!(admitted_order(&[("solo", 1); 4]).await, ["solo"; 4]);
    }

    #[tokio::test]
    async fn keys_share_the_queue_by_weight() {
        // Six each, arriving key by key: weight 3 gets three places to weight 1's one.
        let mut waiters = vec![("light", 1); 6];
        waiters.extend(vec![("heavy", 3); 6]);
        let order = admitted_order(&waiters).await;
        let heavy_in_first_eight = order[..8].iter().filter(|k| **k == "heavy").count();
        assert!(heavy_in_first_eight >= 5, "{order:?}");
    }

    #[tokio::test]
    async fn a_waiter_whose_request_is_dropped_leaves_the_queue() {
        let admission = Admission::new(8);
        let t = targets(&[("a", 1)]);
        let held = admission
            .acquire(&t, 5, &Flow::new("k", 1), Duration::from_secs(1))
            .await
            .expect("slot");
        let (waiter, wt) = (admission.clone(), t.clone());
        let task = tokio::spawn(async move {
            waiter
                .acquire(&wt, 5, &Flow::new("k", 1), Duration::from_secs(30))
                .await
        });
        while admission.queue_depth() < 1 {
            tokio::task::yield_now().await;
        }
        // The client resets its stream: the request's future is dropped mid-wait.
        task.abort();
        let _ = task.await;
        assert_eq!(admission.queue_depth(), 0, "the dropped waiter left the queue");
        drop(held);
        // The node is free to the next request at once (before the fix: blocked for good by
        // the ghost waiter ahead of it).
        let next = tokio::time::timeout(
            Duration::from_millis(500),
            admission.acquire(&t, 5, &Flow::new("k", 1), Duration::from_millis(400)),
        )
        .await
        .expect("no hang")
        .expect("the free slot");
        assert_eq!(next.node, "a");
    }

    #[tokio::test]
    async fn a_key_admitted_at_once_elsewhere_does_not_push_newcomers_behind_the_queue() {
        let admission = Admission::new(64);
        let busy = targets(&[("busy", 1)]);
        let idle = targets(&[("idle", 4)]);
        let held = admission
            .acquire(&busy, 5, &Flow::new("a", 1), Duration::from_secs(1))
            .await
            .expect("slot");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let spawn = |key: &'static str| {
            let (waiter, t, tx) = (admission.clone(), busy.clone(), tx.clone());
            tokio::spawn(async move {
                let permit = waiter
                    .acquire(&t, 5, &Flow::new(key, 1), Duration::from_secs(5))
                    .await
                    .expect("eventually");
                tx.send(key).expect("send");
                tokio::time::sleep(Duration::from_millis(2)).await;
                drop(permit);
            });
        };
        for queued in 0..6 {
            spawn("a");
            while admission.queue_depth() < queued + 1 {
                tokio::task::yield_now().await;
            }
        }
        // Key a also sends to an idle node, admitted at once with a late stamp.
        let _elsewhere = admission
            .acquire(&idle, 5, &Flow::new("a", 1), Duration::from_secs(1))
            .await
            .expect("idle");
        spawn("b");
        while admission.queue_depth() < 7 {
            tokio::task::yield_now().await;
        }
        drop(held);
        let mut order = Vec::new();
        for _ in 0..7 {
            order.push(rx.recv().await.expect("admitted"));
        }
        let place = order.iter().position(|k| *k == "b").expect("b");
        assert!(place <= 1, "b came {}th: {order:?}", place + 1);
    }
}
