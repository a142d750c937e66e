//! A fast hasher for the pipeline's internal maps, keyed by shard ids and hash keys.
//!
//! The standard SipHash resists hash flooding, which these maps do not need: shard ids come
//! from Kinesis, and hash keys are MD5 digests. A multiply-rotate hash (as in rustc's FxHash)
//! costs a few instructions per word instead of a hundred per key.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Multiply-rotate hashing, one machine word at a time.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FastHasher {
    hash: u64,
}

/// An odd constant with well-spread bits (the one rustc's FxHash uses).
const K: u64 = 0x517c_c1b7_2722_0a95;

impl FastHasher {
    /// A hasher starting from `seed` instead of zero.
    pub(crate) fn with_seed(seed: u64) -> Self {
        Self { hash: seed }
    }

    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_u128(&mut self, n: u128) {
        self.add(n as u64);
        self.add((n >> 64) as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// A `HashMap` with [`FastHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;
/// A `HashSet` with [`FastHasher`].
pub(crate) type FastSet<T> = HashSet<T, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn equal_keys_hash_equal_and_different_keys_spread() {
        let b = BuildHasherDefault::<FastHasher>::default();
        assert_eq!(b.hash_one("shardId-000000000001"), b.hash_one("shardId-000000000001"));
        let hashes: FastSet<u64> =
            (0..1000).map(|i| b.hash_one(format!("shardId-{i:012}"))).collect();
        assert_eq!(hashes.len(), 1000);
    }
}
