//! Which node already holds a prompt's prefix, as the controller can tell without the
//! runtime's help (the approximate source of the cache estimate): a prompt is a chain of
//! hashes at its boundaries (after the tools, after each message, and every 2 KiB inside a
//! long one), each hash covering everything before it and carrying the tokens up to it;
//! each node keeps the boundaries of the prompts it was sent in a bounded LRU. A request's
//! estimate for a node is the tokens up to the deepest leading boundary the node holds. A
//! node's entries are dropped when it is unhealthy (a restarted agent or runtime starts
//! cold) or no longer has the model loaded.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;
use serde_json::Value;
use switchyard_protocol::{CacheSource, CachedPrefix, ClusterSnapshot};

/// Boundaries kept per node (about 40 bytes each).
pub const BOUNDARIES_PER_NODE: usize = 65_536;
/// The longest piece of one message between two boundaries.
const PIECE_BYTES: usize = 2048;
/// Bytes per token of the estimate (the same as the request's `prompt_tokens`).
const BYTES_PER_TOKEN: usize = 4;

/// A prompt's boundaries: (hash of everything up to it, tokens up to it), in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptChain(Vec<(u64, u32)>);

impl PromptChain {
    /// The chain of a generation request's body (OpenAI's chat and completions, Anthropic's
    /// messages, Responses, Ollama's chat and generate); empty when it has no prompt. The
    /// model is part of the first hash: one model's cache never answers for another's.
    pub fn of(body: &Value, model: &str) -> PromptChain {
        let mut chain = Chainer::new(model);
        for key in ["system", "instructions", "tools"] {
            chain.segment(&body[key], true);
        }
        for key in ["messages", "input"] {
            match &body[key] {
                Value::Array(items) => {
                    for item in items {
                        chain.segment(&item["role"], false);
                        chain.segment(&item["content"], true);
                        chain.segment(&item["tool_calls"], true);
                    }
                }
                other => chain.segment(other, true),
            }
        }
        chain.segment(&body["prompt"], true);
        PromptChain(chain.boundaries)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

struct Chainer {
    hash: u64,
    bytes: usize,
    boundaries: Vec<(u64, u32)>,
}

impl Chainer {
    fn new(model: &str) -> Self {
        let mut chainer = Chainer {
            hash: 0xcbf2_9ce4_8422_2325,
            bytes: 0,
            boundaries: Vec::new(),
        };
        chainer.absorb(model.as_bytes());
        chainer.bytes = 0;
        chainer
    }

    fn absorb(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.hash = (self.hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3);
        }
        self.bytes += bytes.len();
    }

    /// One part of the prompt: with a boundary after each piece of it, or folded into the
    /// part that follows (a message's role).
    fn segment(&mut self, value: &Value, with_boundary: bool) {
        let owned;
        let text = match value {
            Value::Null => return,
            Value::String(text) => text.as_str(),
            other => {
                owned = other.to_string();
                owned.as_str()
            }
        };
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        self.absorb(&[0x1e]);
        if !with_boundary {
            self.absorb(text.as_bytes());
            return;
        }
        for piece in text.as_bytes().chunks(PIECE_BYTES) {
            self.absorb(piece);
            let tokens = (self.bytes / BYTES_PER_TOKEN).min(u32::MAX as usize) as u32;
            self.boundaries.push((self.hash, tokens));
        }
    }
}

/// Every node's boundaries.
#[derive(Debug, Default)]
pub struct PrefixIndex {
    nodes: Mutex<HashMap<String, NodeIndex>>,
}

#[derive(Debug, Default)]
struct NodeIndex {
    last_used: HashMap<u64, u64>,
    by_age: BTreeMap<u64, u64>,
    clock: u64,
}

impl NodeIndex {
    fn touch(&mut self, hash: u64) {
        self.clock += 1;
        if let Some(previous) = self.last_used.insert(hash, self.clock) {
            self.by_age.remove(&previous);
        }
        self.by_age.insert(self.clock, hash);
    }

    fn held_tokens(&self, chain: &PromptChain) -> u32 {
        chain
            .0
            .iter()
            .take_while(|(hash, _)| self.last_used.contains_key(hash))
            .last()
            .map_or(0, |(_, tokens)| *tokens)
    }
}

impl PrefixIndex {
    /// The estimate for each node of `snapshot` that serves `model` and holds part of the
    /// prompt (nodes holding none are left out). A node that is unhealthy or has the model
    /// unloaded holds nothing: its entries go.
    pub fn estimate(&self, chain: &PromptChain, snapshot: &ClusterSnapshot, model: &str) -> Vec<CachedPrefix> {
        if chain.is_empty() {
            return Vec::new();
        }
        let mut nodes = self.nodes.lock();
        let mut found = Vec::new();
        for node in &snapshot.nodes {
            let Some(variant) = node.variant(model) else { continue };
            if !node.healthy || !variant.loaded {
                nodes.remove(&node.name);
                continue;
            }
            let tokens = nodes.get(&node.name).map_or(0, |index| index.held_tokens(chain));
            if tokens > 0 {
                found.push(CachedPrefix {
                    node: node.name.clone(),
                    tokens,
                    source: CacheSource::Approximate,
                });
            }
        }
        found
    }

    /// Forget everything `node` was thought to hold.
    pub fn forget_node(&self, node: &str) {
        self.nodes.lock().remove(node);
    }

    /// `node` was sent the prompt: it holds its boundaries now.
    pub fn record(&self, node: &str, chain: &PromptChain) {
        if chain.is_empty() {
            return;
        }
        let mut nodes = self.nodes.lock();
        let index = nodes.entry(node.to_owned()).or_default();
        // Deepest first: a prefix is never older than what extends it, so eviction takes
        // the ends of long prompts before the shared beginnings.
        for (hash, _) in chain.0.iter().take(BOUNDARIES_PER_NODE).rev() {
            index.touch(*hash);
        }
        while index.last_used.len() > BOUNDARIES_PER_NODE {
            let Some((_, oldest)) = index.by_age.pop_first() else {
                break;
            };
            index.last_used.remove(&oldest);
        }
    }
}

/// The runtime's own count, checked against the estimate a request was sent on: a node that
/// found far less of the prompt cached than the index claimed (under a quarter of an estimate
/// of 256 tokens or more) started cold since (a restarted runtime, an evicted model) without
/// the controller seeing it unhealthy, so everything else the index holds for it is stale
/// too. It is forgotten, and the node keeps only the prompt it was just sent.
#[derive(Debug)]
pub struct ColdCheck {
    index: std::sync::Arc<PrefixIndex>,
    node: String,
    chain: PromptChain,
    estimated: u32,
}

/// Estimates below this are not checked (a short prompt's miss says little).
const CHECKED_FROM: u32 = 256;

impl ColdCheck {
    /// A check for a request sent to `node` on an (approximate) estimate of `estimated` tokens.
    pub fn new(index: std::sync::Arc<PrefixIndex>, node: &str, chain: &PromptChain, estimated: u32) -> Option<Self> {
        (estimated >= CHECKED_FROM).then(|| Self {
            index,
            node: node.to_owned(),
            chain: chain.clone(),
            estimated,
        })
    }

    /// The runtime reported `cached` prompt tokens for the request.
    pub fn observe(self, cached: u32) {
        if u64::from(cached) * 4 < u64::from(self.estimated) {
            tracing::info!(node = %self.node, estimated = self.estimated, cached, "the node's prefix cache was cold: its prefix index starts again");
            self.index.forget_node(&self.node);
            self.index.record(&self.node, &self.chain);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchyard_protocol::NodeSnapshot;

    fn node(name: &str, healthy: bool, loaded: bool) -> NodeSnapshot {
        serde_json::from_value(json!({
            "name": name, "runtime": "simulated", "healthy": healthy, "max_concurrency": 4, "max_tokens": 4096,
            "models": [{"logical": "coder", "local": "coder", "context_length": 32768, "loaded": loaded}],
        }))
        .expect("a node")
    }

    fn turn(system: &str, history: &[&str]) -> Value {
        let mut messages = vec![json!({"role": "system", "content": system})];
        for (i, text) in history.iter().enumerate() {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            messages.push(json!({"role": role, "content": text}));
        }
        json!({"model": "coder", "messages": messages, "tools": [{"type": "function", "function": {"name": "read_file"}}]})
    }

    #[test]
    fn a_session_s_next_turn_is_estimated_held_up_to_its_last_turn_on_the_node_that_served_it() {
        let index = PrefixIndex::default();
        let cluster = ClusterSnapshot {
            nodes: vec![node("a", true, true), node("b", true, true)],
        };
        let system = "You are a coding agent. ".repeat(800); // 19.2 KB: ten pieces
        let first = PromptChain::of(&turn(&system, &["fix the bug"]), "coder");
        assert!(first.0.len() >= 11, "{}", first.0.len());
        assert!(
            index.estimate(&first, &cluster, "coder").is_empty(),
            "nothing was sent yet"
        );
        index.record("a", &first);
        let second = PromptChain::of(
            &turn(&system, &["fix the bug", "done: see diff", "now test it"]),
            "coder",
        );
        let estimate = index.estimate(&second, &cluster, "coder");
        assert_eq!(estimate.len(), 1, "only a holds it: {estimate:?}");
        assert_eq!(estimate[0].node, "a");
        let first_tokens = first.0.last().expect("boundaries").1;
        assert!(estimate[0].tokens >= first_tokens, "{estimate:?} vs {first_tokens}");
        assert!(estimate[0].tokens < second.0.last().expect("boundaries").1);
        // Another session with the same system prompt shares the system prompt's pieces.
        let other = PromptChain::of(&turn(&system, &["a different task"]), "coder");
        let shared = index.estimate(&other, &cluster, "coder");
        assert!(
            shared[0].tokens >= 4800 - 512 && shared[0].tokens < first_tokens,
            "{shared:?}"
        );
        // Another model's cache never answers; a changed system prompt shares nothing.
        assert_ne!(
            PromptChain::of(&turn(&system, &["fix the bug"]), "other").0[0],
            first.0[0]
        );
        // A changed system prompt shares only the tools before it.
        let changed = PromptChain::of(&turn(&format!("X{system}"), &["fix the bug"]), "coder");
        let tools_only = index.estimate(&changed, &cluster, "coder");
        assert!(tools_only[0].tokens < 40, "{tools_only:?}");
    }

    #[test]
    fn a_node_that_went_unhealthy_or_unloaded_the_model_starts_cold() {
        let index = PrefixIndex::default();
        let chain = PromptChain::of(&turn(&"x".repeat(5000), &["q"]), "coder");
        index.record("a", &chain);
        let up = ClusterSnapshot {
            nodes: vec![node("a", true, true)],
        };
        assert_eq!(index.estimate(&chain, &up, "coder").len(), 1);
        let down = ClusterSnapshot {
            nodes: vec![node("a", false, true)],
        };
        assert!(index.estimate(&chain, &down, "coder").is_empty());
        assert!(index.estimate(&chain, &up, "coder").is_empty(), "forgotten, not hidden");
        index.record("a", &chain);
        let unloaded = ClusterSnapshot {
            nodes: vec![node("a", true, false)],
        };
        assert!(index.estimate(&chain, &unloaded, "coder").is_empty());
        assert!(index.estimate(&chain, &up, "coder").is_empty());
    }

    #[test]
    fn each_node_keeps_a_bounded_number_of_boundaries_evicting_the_ends_of_prompts_first() {
        let index = PrefixIndex::default();
        let cluster = ClusterSnapshot {
            nodes: vec![node("a", true, true)],
        };
        let shared = "s".repeat(4096);
        let mut chains = Vec::new();
        // Twice the capacity: the tools and two shared pieces, then 8 messages of its own.
        for i in 0..(BOUNDARIES_PER_NODE / 4) {
            let own: Vec<String> = (0..8).map(|m| format!("session {i} message {m}")).collect();
            let own: Vec<&str> = own.iter().map(String::as_str).collect();
            let chain = PromptChain::of(&turn(&shared, &own), "coder");
            index.record("a", &chain);
            chains.push(chain);
        }
        let held = index.nodes.lock().get("a").map(|n| n.last_used.len()).unwrap_or(0);
        assert!(held <= BOUNDARIES_PER_NODE, "{held}");
        // The shared system prompt, touched by every prompt, stays; the oldest session went.
        let newest = chains.last().expect("chains");
        let whole = newest.0.last().expect("boundaries").1;
        assert_eq!(index.estimate(newest, &cluster, "coder")[0].tokens, whole);
        let shared_tokens = chains[0].0[2].1;
        let oldest = index.estimate(&chains[0], &cluster, "coder");
        assert_eq!(
            oldest[0].tokens, shared_tokens,
            "only the shared beginning is left: {oldest:?}"
        );
    }

    #[test]
    fn a_node_found_cold_by_its_runtime_keeps_only_the_prompt_it_was_just_sent() {
        let index = std::sync::Arc::new(PrefixIndex::default());
        let snapshot = ClusterSnapshot {
            nodes: vec![node("xeon", true, true)],
        };
        let long = |text: &str| {
            PromptChain::of(
                &json!({"messages": [{"role": "user", "content": text.repeat(400)}]}),
                "coder",
            )
        };
        let (old, new) = (long("old session "), long("new session "));
        index.record("xeon", &old);
        index.record("xeon", &new);
        let held = |chain: &PromptChain| {
            index
                .estimate(chain, &snapshot, "coder")
                .first()
                .map_or(0, |c| c.tokens)
        };
        let estimated = held(&new);
        assert!(estimated >= 1000, "{estimated}");
        // The runtime found as much as claimed: nothing changes.
        ColdCheck::new(index.clone(), "xeon", &new, estimated)
            .expect("checked")
            .observe(estimated);
        assert!(held(&old) > 0);
        // It found nothing: it restarted unseen. Only the prompt just sent is held now.
        ColdCheck::new(index.clone(), "xeon", &new, estimated)
            .expect("checked")
            .observe(0);
        assert_eq!(held(&old), 0, "the stale session is forgotten");
        assert_eq!(held(&new), estimated, "the prompt just sent is held");
        assert!(
            ColdCheck::new(index.clone(), "xeon", &new, 100).is_none(),
            "short prompts are not checked"
        );
    }
}
