//! vLLM's KV-cache events: the agent subscribes to them on loopback and keeps a copy of the
//! blocks the runtime holds ([`copy::BlockCopy`]), so that it can tell the controller, per
//! request, how many of the prompt's tokens the runtime will find cached ([`probe`]): the
//! precise source of the cache estimate. Sequence gaps are fetched again from vLLM's replay
//! endpoint, or the copy starts again; a restarted runtime (its sequence starting over), a
//! cleared cache and an unhealthy runtime empty it.

pub mod copy;
pub mod probe;
mod subscriber;
pub mod wire;

use std::sync::Arc;

use parking_lot::Mutex;
use switchyard_protocol::KvEventsTelemetry;
use tokio_util::sync::CancellationToken;

use crate::config::KvEventsConfig;
use copy::BlockCopy;
use wire::Batch;

/// Whether `endpoint` is one the agent may open: `ipc://...`, or `tcp://` on a loopback
/// address (`127.x.x.x`, `localhost`, `[::1]`) with a port.
pub fn is_local_endpoint(endpoint: &str) -> bool {
    if let Some(path) = endpoint.strip_prefix("ipc://") {
        return !path.is_empty();
    }
    let Some(address) = endpoint.strip_prefix("tcp://") else {
        return false;
    };
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    let loopback = match host.trim_start_matches('[').trim_end_matches(']') {
        "localhost" => true,
        host => host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
    };
    loopback && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// The agent's copy of the runtime's prefix cache and how it is being kept.
#[derive(Debug, Default)]
pub struct KvEvents {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    copy: BlockCopy,
    /// The last sequence number applied.
    last_seq: Option<i64>,
    /// The copy was emptied without evidence that the runtime's cache was (an unhealthy
    /// probe, a subscription that ended): the next batch first asks for a replay from the
    /// start, which gives back what the runtime still holds.
    resync: bool,
    figures: KvEventsTelemetry,
}

/// What the subscriber must do before a batch can be applied.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    Applied,
    /// Batches `from..batch.seq` were missed: replay them first.
    Replay {
        from: i64,
    },
}

impl KvEvents {
    /// Subscribe as `config` says until `shutdown`.
    pub fn start(config: KvEventsConfig, shutdown: CancellationToken) -> Arc<Self> {
        let events = Arc::new(Self::default());
        tokio::spawn(subscriber::run(events.clone(), config, shutdown));
        events
    }

    pub fn figures(&self) -> KvEventsTelemetry {
        let state = self.state.lock();
        KvEventsTelemetry {
            blocks: state.copy.blocks() as u64,
            block_size: state.copy.block_size(),
            ..state.figures.clone()
        }
    }

    /// The runtime's cached tokens for `prompt`, while the copy is current.
    pub fn cached_tokens(&self, prompt: &[u32]) -> Option<u32> {
        let state = self.state.lock();
        state.figures.current.then(|| state.copy.cached_tokens(prompt))
    }

    /// The subscription is up (or down): only a current copy answers probes.
    pub(crate) fn set_current(&self, current: bool) {
        self.state.lock().figures.current = current;
    }

    /// Throw the copy away: the runtime's cache is not what it was.
    pub fn forget(&self, why: &str) {
        let mut state = self.state.lock();
        if state.copy.blocks() > 0 || state.last_seq.is_some() {
            tracing::info!(
                blocks = state.copy.blocks(),
                "the runtime's prefix-cache copy starts again: {why}"
            );
            state.figures.purges += 1;
        }
        state.copy.clear();
        state.last_seq = None;
        state.resync = true;
    }

    /// A batch from the subscription: applied, or a replay of what was missed asked for.
    pub(crate) fn receive(&self, batch: &Batch) -> Next {
        let mut state = self.state.lock();
        match state.last_seq {
            Some(last) if batch.seq == last + 1 => {}
            Some(last) if batch.seq <= last => {
                drop(state);
                self.forget("the runtime's event sequence started again (it restarted)");
                state = self.state.lock();
                // A restarted runtime's cache is what its new sequence says, from 0.
                state.resync = false;
            }
            Some(last) => return Next::Replay { from: last + 1 },
            // The first batch since subscribing, or since the copy was emptied: what came
            // before it is replayed where the runtime still has it.
            None if batch.seq > 0 && (state.resync || state.figures.batches == 0) => {
                return Next::Replay { from: 0 };
            }
            None => {}
        }
        apply(&mut state, batch);
        Next::Applied
    }

    /// Batches a replay brought back for `from..`, then the batch that revealed the gap.
    /// Batches missing from the replay (the runtime's buffer no longer had them) throw the
    /// copy away first: it cannot be known what they changed.
    pub(crate) fn receive_replayed(&self, from: i64, replayed: &[Batch], batch: &Batch) {
        let wanted: Vec<&Batch> = replayed.iter().filter(|b| b.seq >= from && b.seq < batch.seq).collect();
        let complete =
            wanted.iter().enumerate().all(|(i, b)| b.seq == from + i as i64) && wanted.len() as i64 == batch.seq - from;
        // A gap from the start of the sequence (the agent subscribed late) needs no purge:
        // the copy was empty.
        if !complete && from > 0 {
            self.forget(&format!(
                "batches {from} to {} were missed and could not be replayed",
                batch.seq - 1
            ));
        }
        let mut state = self.state.lock();
        for replayed in &wanted {
            apply(&mut state, replayed);
            state.figures.replayed += 1;
        }
        apply(&mut state, batch);
    }
}

fn apply(state: &mut State, batch: &Batch) {
    state.resync = false;
    for event in &batch.events {
        state.copy.apply(event);
    }
    state.last_seq = Some(batch.seq);
    state.figures.batches += 1;
}

#[cfg(test)]
mod tests {
    use super::wire::KvEvent;
    use super::*;

    fn batch(seq: i64, hash: u64, parent: Option<u64>, first_token: u32) -> Batch {
        Batch {
            seq,
            events: vec![KvEvent::Stored {
                hashes: vec![hash],
                parent,
                token_ids: (first_token..first_token + 4).collect(),
                block_size: 4,
            }],
        }
    }

    #[test]
    fn endpoints_must_be_loopback() {
        for ok in [
            "tcp://127.0.0.1:5557",
            "tcp://localhost:1",
            "tcp://[::1]:9",
            "ipc:///tmp/kv",
        ] {
            assert!(is_local_endpoint(ok), "{ok}");
        }
        for bad in [
            "tcp://10.0.0.2:5557",
            "tcp://0.0.0.0:5557",
            "tcp://127.0.0.1",
            "http://127.0.0.1:1",
            "ipc://",
        ] {
            assert!(!is_local_endpoint(bad), "{bad}");
        }
    }

    #[test]
    fn batches_in_order_are_applied_and_a_gap_asks_for_a_replay() {
        let events = KvEvents::default();
        events.set_current(true);
        assert_eq!(events.receive(&batch(0, 1, None, 0)), Next::Applied);
        assert_eq!(events.receive(&batch(1, 2, Some(1), 4)), Next::Applied);
        let prompt: Vec<u32> = (0..13).collect();
        assert_eq!(events.cached_tokens(&prompt), Some(8));
        let late = batch(4, 5, Some(4), 16);
        assert_eq!(events.receive(&late), Next::Replay { from: 2 });
        // The replay brings 2 and 3 back: nothing is lost.
        events.receive_replayed(2, &[batch(2, 3, Some(2), 8), batch(3, 4, Some(3), 12)], &late);
        let longer: Vec<u32> = (0..21).collect();
        assert_eq!(events.cached_tokens(&longer), Some(20));
        let figures = events.figures();
        assert_eq!(
            (figures.batches, figures.replayed, figures.purges, figures.blocks),
            (5, 2, 0, 5)
        );
    }

    #[test]
    fn after_the_copy_is_emptied_on_a_hunch_the_next_batch_replays_from_the_start() {
        let events = KvEvents::default();
        events.set_current(true);
        events.receive(&batch(0, 1, None, 0));
        events.receive(&batch(1, 2, Some(1), 4));
        // An unhealthy probe, but the runtime kept its cache: its next batch (seq 2) brings a
        // replay of everything it still holds.
        events.forget("the runtime is unhealthy");
        let next = batch(2, 3, Some(2), 8);
        assert_eq!(events.receive(&next), Next::Replay { from: 0 });
        events.receive_replayed(0, &[batch(0, 1, None, 0), batch(1, 2, Some(1), 4)], &next);
        let prompt: Vec<u32> = (0..13).collect();
        assert_eq!(events.cached_tokens(&prompt), Some(12), "the copy is whole again");
    }

    #[test]
    fn an_unreplayable_gap_or_a_restart_starts_the_copy_again() {
        let events = KvEvents::default();
        events.set_current(true);
        events.receive(&batch(0, 1, None, 0));
        let late = batch(3, 9, None, 100);
        assert_eq!(events.receive(&late), Next::Replay { from: 1 });
        events.receive_replayed(1, &[], &late);
        let prompt: Vec<u32> = (0..9).collect();
        assert_eq!(events.cached_tokens(&prompt), Some(0), "the copy was thrown away");
        assert_eq!(events.figures().purges, 1);
        // The runtime restarted: its sequence starts at 0 again.
        assert_eq!(events.receive(&batch(0, 1, None, 0)), Next::Applied);
        assert_eq!(events.figures().purges, 2);
        assert_eq!(events.cached_tokens(&prompt), Some(4));
        events.set_current(false);
        assert_eq!(
            events.cached_tokens(&prompt),
            None,
            "a copy not kept current answers nothing"
        );
    }
}
