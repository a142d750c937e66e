//! [`KeyCache`]: partition key → (shared key text, MD5 hash key), so that a key sent again
//! skips both the MD5 and the copy of its text.
//!
//! Applications send many records under a limited set of keys; the MD5 of a short key is a
//! large part of what a record costs at `send`. The cache is exact (an entry is the key's MD5,
//! computed once) and of fixed size: a table of [`SETS`] sets of [`WAYS`] entries, a key's set
//! chosen by a fast hash of its text, an empty entry or else one picked in turn giving way to
//! a new key (not the least recently used one: keys sent round-robin, a common pattern, would
//! then evict each other every time in a set they overflow). Keys longer than
//! [`MAX_CACHED_KEY`] bytes are not cached, so the table never holds more than 2 MiB of key
//! text beside its own 1.5 MiB, allocated at the first insertion.
//!
//! Keys come from the application (and may come from untrusted input). A table of fixed sets
//! cannot be flooded: keys that collide only evict each other, so the worst that chosen keys
//! (or bad luck) can do is make lookups miss, and a miss costs what the record would cost
//! without a cache. That is why a fast multiply-rotate hash will do here where a chained hash
//! map would need SipHash; it is seeded at random per cache all the same, so a fixed key list
//! does not collide the same way in every process.
//!
//! Senders on several threads share the cache through a mutex that is only ever tried: a
//! sender that finds it taken computes the MD5 itself rather than wait.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Mutex;

use kinesis_common::{HashKey, PartitionKey};

use crate::fast_hash::FastHasher;

/// Sets in the table (a power of two).
pub(crate) const SETS: usize = 1 << SET_BITS;
const SET_BITS: u32 = 12;
/// Keys per set.
pub(crate) const WAYS: usize = 8;
/// The longest key (in bytes of UTF-8) the cache holds.
pub(crate) const MAX_CACHED_KEY: usize = 64;

/// A cached key with its hash key, and the hash of its text (compared first, so that a set's
/// other keys cost a comparison of two numbers each).
#[derive(Debug)]
struct Entry {
    tag: u64,
    key: PartitionKey,
    hash: HashKey,
}

#[derive(Debug, Default)]
struct Table {
    /// `SETS` sets of `WAYS` entries; empty until the first insertion.
    sets: Vec<[Option<Entry>; WAYS]>,
    /// Turns through the ways, to pick which entry of a full set gives way.
    victim: usize,
}

/// Partition keys seen recently, with their hash keys. Shared by every clone of a producer.
#[derive(Debug)]
pub(crate) struct KeyCache {
    seed: u64,
    table: Mutex<Table>,
}

impl Default for KeyCache {
    fn default() -> Self {
        let seed = RandomState::new().hash_one(0x6b65_7973_u64);
        Self { seed, table: Mutex::new(Table::default()) }
    }
}

impl KeyCache {
    /// The partition key `text` as a shared [`PartitionKey`] with its MD5 hash key, from the
    /// cache if it holds the key, else checked and hashed (and remembered).
    pub(crate) fn key(
        &self,
        text: &str,
    ) -> Result<(PartitionKey, HashKey), kinesis_common::ValidationError> {
        let tag = (text.len() <= MAX_CACHED_KEY).then(|| self.tag_of(text));
        if let Some(tag) = tag
            && let Ok(table) = self.table.try_lock()
            && let Some(set) = table.sets.get(set_of(tag))
        {
            let found = set.iter().flatten().find(|e| e.tag == tag && e.key.as_str() == text);
            if let Some(entry) = found {
                return Ok((entry.key.clone(), entry.hash));
            }
        }
        // Validation and MD5 outside the lock. Only valid keys are ever cached.
        let key = PartitionKey::new(text)?;
        let hash = HashKey::from_partition_key(&key);
        if let Some(tag) = tag
            && let Ok(mut table) = self.table.try_lock()
        {
            table.insert(Entry { tag, key: key.clone(), hash });
        }
        Ok((key, hash))
    }

    /// The hash of a key's text.
    fn tag_of(&self, text: &str) -> u64 {
        let mut hasher = FastHasher::with_seed(self.seed);
        hasher.write(text.as_bytes());
        hasher.finish()
    }

    /// How many keys the cache holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        let table = self.table.lock().expect("not poisoned");
        table.sets.iter().flatten().filter(|e| e.is_some()).count()
    }
}

/// The set of a key with hash `tag`: its top bits, into which the multiplication mixes every
/// input bit.
fn set_of(tag: u64) -> usize {
    (tag >> (64 - SET_BITS)) as usize
}

impl Table {
    fn insert(&mut self, entry: Entry) {
        if self.sets.is_empty() {
            self.sets.resize_with(SETS, Default::default);
        }
        let set = &mut self.sets[set_of(entry.tag)];
        let way = match set.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.victim = (self.victim + 1) % WAYS;
                self.victim
            }
        };
        // What the entry held is dropped with the lock held: one key's text at most.
        set[way] = Some(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn md5(text: &str) -> HashKey {
        HashKey::from_partition_key(&PartitionKey::new(text).unwrap())
    }

    #[test]
    fn a_key_seen_again_gives_the_same_hash_and_shares_its_text() {
        let cache = KeyCache::default();
        let (first, hash) = cache.key("customer-42").unwrap();
        assert_eq!(hash, md5("customer-42"));
        let (again, hash_again) = cache.key("customer-42").unwrap();
        assert_eq!(hash_again, hash);
        assert_eq!(again, first);
        assert!(std::ptr::eq(again.as_str(), first.as_str()), "served from the cache");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn invalid_keys_are_refused_and_not_remembered() {
        let cache = KeyCache::default();
        assert!(cache.key("").is_err());
        assert!(cache.key(&"k".repeat(257)).is_err());
        assert_eq!(cache.len(), 0);
        // 256 characters of 4 bytes each: valid, though longer than 256 bytes; too long to
        // be cached, and answered all the same.
        let wide = "𝄞".repeat(256);
        assert_eq!(cache.key(&wide).unwrap().1, md5(&wide));
        assert_eq!(cache.key(&wide).unwrap().1, md5(&wide));
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn the_cache_stays_within_its_table() {
        let cache = KeyCache::default();
        for i in 0..3 * WAYS * SETS {
            let text = format!("key-{i}");
            assert_eq!(cache.key(&text).unwrap().1, md5(&text));
        }
        // Three keys per entry: sets fill up (a set left with room by chance is rare; one
        // per cent of the entries left empty would need hundreds of such sets).
        let len = cache.len();
        assert!((WAYS * SETS * 99 / 100..=WAYS * SETS).contains(&len), "{len}");
        assert_eq!(cache.table.lock().unwrap().sets.len(), SETS);
    }

    /// Ten thousand keys sent round-robin, as the throughput benchmark does: nearly all of
    /// them stay cached (one set in a few hundred overflows, and then only loses some).
    #[test]
    fn a_working_set_well_below_the_capacity_stays_cached() {
        let cache = KeyCache::default();
        let keys: Vec<String> = (0..10_000).map(|i| format!("key-{i}")).collect();
        let first: Vec<PartitionKey> = keys.iter().map(|k| cache.key(k).unwrap().0).collect();
        let mut hits = 0;
        for (key, first) in keys.iter().zip(&first) {
            // Served from the cache: the very text the first lookup inserted.
            hits += usize::from(std::ptr::eq(cache.key(key).unwrap().0.as_str(), first.as_str()));
        }
        assert!(hits >= 9_800, "{hits} of 10 000 keys stayed cached");
    }

    /// Keys that share a set evict each other and nothing else, and every answer stays
    /// right: colliding keys cost misses, nothing more.
    #[test]
    fn colliding_keys_only_evict_each_other() {
        let cache = KeyCache::default();
        cache.key("elsewhere").unwrap();
        let elsewhere = set_of(cache.tag_of("elsewhere"));
        let keys = (0..).map(|i| format!("key-{i}"));
        let target = keys.clone().map(|k| set_of(cache.tag_of(&k))).find(|s| *s != elsewhere);
        let target = target.expect("keys spread over the sets");
        let same: Vec<String> =
            keys.filter(|k| set_of(cache.tag_of(k)) == target).take(4 * WAYS).collect();
        for round in 0..3 {
            for key in &same {
                assert_eq!(cache.key(key).unwrap().1, md5(key), "round {round}");
            }
        }
        assert_eq!(cache.len(), WAYS + 1, "one full set, and the other key");
        let (kept, _) = cache.key("elsewhere").unwrap();
        assert!(std::ptr::eq(kept.as_str(), cache.key("elsewhere").unwrap().0.as_str()));
    }

    #[test]
    fn a_taken_lock_falls_back_to_computing() {
        let cache = KeyCache::default();
        let guard = cache.table.lock().unwrap();
        assert_eq!(cache.key("busy").unwrap().1, md5("busy"));
        drop(guard);
        assert_eq!(cache.len(), 0);
    }

    proptest! {
        #[test]
        fn cached_hash_keys_are_the_md5_of_the_key(
            keys in proptest::collection::vec("\\PC{1,40}", 1..60),
            picks in proptest::collection::vec(any::<prop::sample::Index>(), 1..200),
        ) {
            let cache = KeyCache::default();
            for pick in picks {
                let text = pick.get(&keys);
                let (key, hash) = cache.key(text).unwrap();
                prop_assert_eq!(key.as_str(), text.as_str());
                prop_assert_eq!(hash, md5(text));
            }
        }
    }
}
