//! The simulated runtime's prefix cache, kept the way vLLM keeps its KV blocks: a prompt is
//! cut into blocks of [`BLOCK_TOKENS`] tokens, each named by a hash chained from the blocks
//! before it, so a block is reused only after the same whole prefix; a request's cached
//! tokens are its leading blocks already held; the least recently used blocks go first
//! once the capacity (in tokens) is reached.

use std::collections::{BTreeMap, HashMap};

/// Tokens per block (vLLM's default block size on a GPU).
pub const BLOCK_TOKENS: u32 = 16;
/// The simulator counts four bytes of prompt text as one token.
pub const BYTES_PER_TOKEN: usize = 4;
const BLOCK_BYTES: usize = BLOCK_TOKENS as usize * BYTES_PER_TOKEN;

/// The chained hash of every full block of `prompt`, in order.
pub fn block_hashes(prompt: &[u8]) -> Vec<u64> {
    let mut parent = 0xcbf2_9ce4_8422_2325u64;
    prompt
        .chunks_exact(BLOCK_BYTES)
        .map(|block| {
            parent = block.iter().fold(parent ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
            });
            parent
        })
        .collect()
}

/// Blocks held, with when each was last used.
#[derive(Debug)]
pub struct PrefixCache {
    capacity_blocks: usize,
    last_used: HashMap<u64, u64>,
    by_age: BTreeMap<u64, u64>,
    clock: u64,
    /// Prompt tokens asked about, and how many of them were held.
    pub queried_tokens: u64,
    pub hit_tokens: u64,
}

impl PrefixCache {
    pub fn new(capacity_tokens: u32) -> Self {
        Self {
            capacity_blocks: (capacity_tokens / BLOCK_TOKENS) as usize,
            last_used: HashMap::new(),
            by_age: BTreeMap::new(),
            clock: 0,
            queried_tokens: 0,
            hit_tokens: 0,
        }
    }

    /// How many of a prompt's `prompt_tokens` are held: its leading blocks found, never the
    /// whole prompt (the last token is always computed, as vLLM does). Found blocks are
    /// touched.
    pub fn cached_tokens(&mut self, hashes: &[u64], prompt_tokens: u32) -> u32 {
        let held = hashes.iter().take_while(|h| self.last_used.contains_key(h)).count();
        // Deepest first, so that a prefix is never older than what extends it (vLLM evicts
        // the leaves of a prefix tree first).
        for hash in hashes[..held].iter().rev() {
            self.touch(*hash);
        }
        let usable_blocks = prompt_tokens.saturating_sub(1) / BLOCK_TOKENS;
        let cached = (held as u32).min(usable_blocks) * BLOCK_TOKENS;
        self.queried_tokens += u64::from(prompt_tokens);
        self.hit_tokens += u64::from(cached);
        cached
    }

    /// Keep a prompt's blocks (after its prefill), evicting the least recently used.
    pub fn insert(&mut self, hashes: &[u64]) {
        for hash in hashes.iter().take(self.capacity_blocks).rev() {
            self.touch(*hash);
        }
        while self.last_used.len() > self.capacity_blocks {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.last_used.remove(&oldest);
        }
    }

    /// Share of the capacity in use, in percent.
    pub fn usage_pct(&self) -> f32 {
        if self.capacity_blocks == 0 {
            return 0.0;
        }
        self.last_used.len() as f32 * 100.0 / self.capacity_blocks as f32
    }

    fn touch(&mut self, hash: u64) {
        self.clock += 1;
        if let Some(previous) = self.last_used.insert(hash, self.clock) {
            self.by_age.remove(&previous);
        }
        self.by_age.insert(self.clock, hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(seed: u8, bytes: usize) -> Vec<u8> {
        (0..bytes)
            .map(|i| b'a' + ((i * 7 + seed as usize) % 26) as u8)
            .collect()
    }

    #[test]
    fn a_shared_prefix_is_found_in_whole_blocks_and_a_different_one_is_not() {
        let mut cache = PrefixCache::new(10_000);
        let system = text(1, 4000); // 1000 tokens: 62 full blocks and a part
        let mut first = system.clone();
        first.extend(b"first question, a few words long");
        let first_tokens = (first.len() / BYTES_PER_TOKEN) as u32;
        let hashes = block_hashes(&first);
        assert_eq!(cache.cached_tokens(&hashes, first_tokens), 0);
        cache.insert(&hashes);
        // The same prompt again: everything but the last block's remainder.
        let again = cache.cached_tokens(&hashes, first_tokens);
        assert_eq!(again, (first_tokens - 1) / BLOCK_TOKENS * BLOCK_TOKENS);
        // Another question after the same system prompt: the system prompt's full blocks.
        let mut second = system.clone();
        second.extend(b"another question entirely, also short");
        let second_hashes = block_hashes(&second);
        assert_eq!(
            cache.cached_tokens(&second_hashes, (second.len() / 4) as u32),
            62 * BLOCK_TOKENS
        );
        // The same text behind a different first block shares nothing: hashes are chained.
        let mut shifted = b"x".repeat(BLOCK_BYTES);
        shifted.extend(&system);
        assert_eq!(cache.cached_tokens(&block_hashes(&shifted), 1200), 0);
    }

    #[test]
    fn the_least_recently_used_blocks_go_first_at_capacity() {
        let mut cache = PrefixCache::new(100 * BLOCK_TOKENS);
        let a = block_hashes(&text(1, 60 * BLOCK_BYTES));
        let b = block_hashes(&text(2, 60 * BLOCK_BYTES));
        cache.insert(&a);
        cache.insert(&b);
        assert!((cache.usage_pct() - 100.0).abs() < 1e-3);
        // a's last 20 blocks went to make room (its leaves, not its root); b is whole.
        assert_eq!(cache.cached_tokens(&a, 60 * BLOCK_TOKENS), 40 * BLOCK_TOKENS);
        assert_eq!(cache.cached_tokens(&b, 60 * BLOCK_TOKENS), 59 * BLOCK_TOKENS);
        assert_eq!(cache.hit_tokens, u64::from(99 * BLOCK_TOKENS));
    }
}
