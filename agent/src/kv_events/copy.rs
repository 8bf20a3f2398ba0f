//! The agent's copy of the runtime's prefix cache: which token blocks it holds, chained as
//! vLLM chains them (a block follows its parent), so that a prompt's tokens can be matched
//! block by block from the start, the way the runtime itself looks them up.

use std::collections::HashMap;

use super::wire::{BlockHash, KvEvent};

/// Blocks kept at most; past this the copy starts again empty (a runtime's cache is far
/// smaller: ~2,600 blocks of 16 tokens per GB of KV memory for an 8B model).
pub const MAX_BLOCKS: usize = 4_000_000;

#[derive(Debug, Default)]
pub struct BlockCopy {
    block_size: u32,
    /// block → its parent and the fingerprint of its tokens
    blocks: HashMap<BlockHash, (Option<BlockHash>, u64)>,
    /// (parent, fingerprint of the block's tokens) → block
    by_content: HashMap<(Option<BlockHash>, u64), BlockHash>,
}

impl BlockCopy {
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }

    pub fn clear(&mut self) {
        self.blocks.clear();
        self.by_content.clear();
    }

    /// Apply one event. A stored event whose tokens do not fill its blocks is ignored as a
    /// whole (it cannot be matched against a prompt).
    pub fn apply(&mut self, event: &KvEvent) {
        match event {
            KvEvent::Stored {
                hashes,
                parent,
                token_ids,
                block_size,
            } => {
                let size = *block_size as usize;
                if token_ids.len() != hashes.len() * size {
                    tracing::debug!(
                        blocks = hashes.len(),
                        tokens = token_ids.len(),
                        "a BlockStored event's tokens do not fill its blocks; ignored"
                    );
                    return;
                }
                if self.block_size != *block_size {
                    self.clear();
                    self.block_size = *block_size;
                }
                if self.blocks.len() + hashes.len() > MAX_BLOCKS {
                    tracing::warn!(
                        blocks = self.blocks.len(),
                        "the prefix-cache copy is full; starting again"
                    );
                    self.clear();
                }
                let mut parent = *parent;
                for (hash, tokens) in hashes.iter().zip(token_ids.chunks_exact(size)) {
                    let content = fingerprint(tokens);
                    self.blocks.insert(*hash, (parent, content));
                    self.by_content.insert((parent, content), *hash);
                    parent = Some(*hash);
                }
            }
            KvEvent::Removed { hashes } => {
                for hash in hashes {
                    if let Some(key) = self.blocks.remove(hash)
                        && self.by_content.get(&key) == Some(hash)
                    {
                        self.by_content.remove(&key);
                    }
                }
            }
            KvEvent::AllCleared => self.clear(),
        }
    }

    /// How many of `prompt`'s tokens the runtime will find cached: its leading full blocks
    /// held in a chain, short of the prompt's last token (which a runtime always computes,
    /// so a prompt ending on a block boundary never hits its last block).
    pub fn cached_tokens(&self, prompt: &[u32]) -> u32 {
        let size = self.block_size as usize;
        if size == 0 {
            return 0;
        }
        let reachable = prompt.len().saturating_sub(1) / size;
        let mut parent = None;
        let mut held = 0;
        for block in prompt.chunks_exact(size).take(reachable) {
            match self.by_content.get(&(parent, fingerprint(block))) {
                Some(hash) => {
                    parent = Some(*hash);
                    held += 1;
                }
                None => break,
            }
        }
        (held * size).min(u32::MAX as usize) as u32
    }
}

/// FNV-1a over a block's token ids.
fn fingerprint(tokens: &[u32]) -> u64 {
    tokens
        .iter()
        .flat_map(|t| t.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(hashes: &[u64], parent: Option<u64>, tokens: std::ops::Range<u32>) -> KvEvent {
        KvEvent::Stored {
            hashes: hashes.to_vec(),
            parent,
            token_ids: tokens.collect(),
            block_size: 4,
        }
    }

    #[test]
    fn a_prompt_matches_its_leading_chained_blocks_short_of_its_last_token() {
        let mut copy = BlockCopy::default();
        copy.apply(&stored(&[10, 11], None, 0..8));
        copy.apply(&stored(&[12], Some(11), 8..12));
        let prompt: Vec<u32> = (0..20).collect();
        assert_eq!(copy.cached_tokens(&prompt), 12);
        // Exactly 12 tokens: the last block holds the last token, so it is recomputed.
        assert_eq!(copy.cached_tokens(&prompt[..12]), 8);
        // A different first block: nothing, even though later blocks' tokens are held.
        let other: Vec<u32> = std::iter::once(99).chain(1..20).collect();
        assert_eq!(copy.cached_tokens(&other), 0);
        // The same tokens after another parent are another block.
        assert_eq!(copy.cached_tokens(&(8..20).collect::<Vec<_>>()), 0);
    }

    #[test]
    fn evictions_and_clears_are_followed() {
        let mut copy = BlockCopy::default();
        copy.apply(&stored(&[10, 11, 12], None, 0..12));
        let prompt: Vec<u32> = (0..16).collect();
        assert_eq!(copy.cached_tokens(&prompt), 12);
        copy.apply(&KvEvent::Removed { hashes: vec![11] });
        assert_eq!(copy.cached_tokens(&prompt), 4, "the chain breaks at the evicted block");
        assert_eq!(copy.blocks(), 2);
        copy.apply(&KvEvent::AllCleared);
        assert_eq!((copy.cached_tokens(&prompt), copy.blocks()), (0, 0));
    }

    #[test]
    fn a_stored_event_whose_tokens_do_not_fill_its_blocks_is_ignored() {
        let mut copy = BlockCopy::default();
        copy.apply(&stored(&[10, 11], None, 0..7));
        assert_eq!(copy.blocks(), 0);
    }
}
