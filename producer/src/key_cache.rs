//! [`KeyCache`]: partition key → (shared key text, MD5 hash key), so that a key sent again
//! skips both the MD5 and the copy of its text.
//!
//! Applications send many records under a limited set of keys; the MD5 of a short key is a
//! large part of what a record costs at `send`. The cache is exact (an entry is the key's MD5,
//! computed once), and bounded: it holds at most [`MAX_ENTRIES`] keys and [`MAX_KEY_BYTES`] of
//! key text, and is emptied when an insertion would pass either bound, so it follows a key set
//! that drifts and never grows with the number of distinct keys.
//!
//! Keys come from the application (and may come from untrusted input), so the map uses the
//! standard library's randomly keyed SipHash: colliding keys cannot be chosen to slow it down.
//! Senders on several threads share the cache through a mutex that is only ever tried: a
//! sender that finds it taken computes the MD5 itself rather than wait.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher, RandomState};
use std::sync::Mutex;

use kinesis_common::{HashKey, PartitionKey};

/// The most keys the cache holds.
pub(crate) const MAX_ENTRIES: usize = 16_384;
/// The most bytes of key text the cache holds (keys are at most 1 KiB of UTF-8 each).
pub(crate) const MAX_KEY_BYTES: usize = 1 << 20;

/// A cached key, looked up by its text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key(PartitionKey);

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that `&str` finds it (see `Borrow`).
        self.0.as_str().hash(state);
    }
}

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Key, HashKey, RandomState>,
    /// Bytes of key text in `map`.
    bytes: usize,
}

/// Partition keys already seen, with their hash keys. Shared by every clone of a producer.
#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    entries: Mutex<Entries>,
}

impl KeyCache {
    /// The partition key `text` as a shared [`PartitionKey`] with its MD5 hash key, from the
    /// cache if it holds the key, else checked and hashed (and remembered).
    pub(crate) fn key(
        &self,
        text: &str,
    ) -> Result<(PartitionKey, HashKey), kinesis_common::ValidationError> {
        if let Ok(entries) = self.entries.try_lock()
            && let Some((key, hash)) = entries.map.get_key_value(text)
        {
            return Ok((key.0.clone(), *hash));
        }
        // Validation and MD5 outside the lock.
        let key = PartitionKey::new(text)?;
        let hash = HashKey::from_partition_key(&key);
        if let Ok(mut entries) = self.entries.try_lock() {
            entries.insert(key.clone(), hash);
        }
        Ok((key, hash))
    }

    /// How many keys the cache holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().expect("not poisoned").map.len()
    }

    /// Bytes of key text the cache holds.
    #[cfg(test)]
    fn key_bytes(&self) -> usize {
        self.entries.lock().expect("not poisoned").bytes
    }
}

impl Entries {
    fn insert(&mut self, key: PartitionKey, hash: HashKey) {
        let len = key.len_bytes();
        if self.map.len() >= MAX_ENTRIES || self.bytes + len > MAX_KEY_BYTES {
            // Full: start again, which keeps up with a key set that changes over time.
            self.map.clear();
            self.bytes = 0;
        }
        if self.map.insert(Key(key), hash).is_none() {
            self.bytes += len;
        }
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
        // 256 characters of 4 bytes each: valid, though longer than 256 bytes.
        let wide = "𝄞".repeat(256);
        assert_eq!(cache.key(&wide).unwrap().1, md5(&wide));
    }

    #[test]
    fn the_cache_stays_within_its_bounds() {
        let cache = KeyCache::default();
        for i in 0..3 * MAX_ENTRIES {
            let text = format!("key-{i}");
            assert_eq!(cache.key(&text).unwrap().1, md5(&text));
            assert!(cache.len() <= MAX_ENTRIES);
        }
        // Long keys: the byte bound holds before the entry bound does.
        let long = |i: usize| format!("{i:0>256}");
        for i in 0..3 * (MAX_KEY_BYTES / 256) {
            let text = long(i);
            assert_eq!(cache.key(&text).unwrap().1, md5(&text));
            assert!(cache.key_bytes() <= MAX_KEY_BYTES);
        }
        assert!(cache.len() <= MAX_KEY_BYTES / 256);
    }

    #[test]
    fn a_taken_lock_falls_back_to_computing() {
        let cache = KeyCache::default();
        let guard = cache.entries.lock().unwrap();
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
