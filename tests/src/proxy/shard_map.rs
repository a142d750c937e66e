//! Which open shard owns a hash key, per stream, from the upstream's own ListShards.
//!
//! [`ShardMap`] is the pure part; [`ShardMaps`] caches one per stream and fetches it through
//! a [`KinesisApi`] pointed at the upstream (not through the proxy, so faults never hit it).
//!
//! Invariants: only open shards (no ending sequence number) are in a map, since only they take
//! writes; at most one fetch per stream runs at a time, and while it runs, other requests use
//! the previous map or, when there is none, wait for that fetch; no lock is held across a
//! fetch. A failed fetch leaves the stream without a map, and its requests go unthrottled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kinesis_common::{HashKey, HashKeyRange, KinesisApi, Shard, StreamName};
use tokio::sync::Notify;

/// The open shards of one stream, ordered by hash range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShardMap {
    ranges: Vec<(HashKeyRange, String)>,
}

impl ShardMap {
    /// The map of the open shards among `shards`.
    pub(crate) fn from_shards(shards: &[Shard]) -> Self {
        let mut ranges: Vec<(HashKeyRange, String)> = shards
            .iter()
            .filter(|s| s.is_open())
            .map(|s| (s.hash_range, s.id.as_str().to_owned()))
            .collect();
        ranges.sort_by_key(|(range, _)| range.start());
        Self { ranges }
    }

    /// The open shard that owns `key`, if any.
    pub(crate) fn shard_for(&self, key: HashKey) -> Option<&str> {
        let after = self.ranges.partition_point(|(range, _)| range.start() <= key);
        let (range, id) = self.ranges.get(after.checked_sub(1)?)?;
        range.contains(key).then_some(id.as_str())
    }
}

#[derive(Debug, Default)]
struct Entry {
    map: Option<Arc<ShardMap>>,
    fetched: Option<Instant>,
    fetching: bool,
    fetched_signal: Arc<Notify>,
}

/// The cached shard maps of every stream the proxy has seen writes for.
pub(crate) struct ShardMaps {
    api: Arc<dyn KinesisApi>,
    max_age: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for ShardMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardMaps").field("max_age", &self.max_age).finish_non_exhaustive()
    }
}

/// What a lookup should do after looking at the cache.
enum Next {
    Use(Option<Arc<ShardMap>>),
    Fetch { stale: Option<Arc<ShardMap>> },
    Wait(Arc<Notify>),
}

impl ShardMaps {
    /// Maps fetched through `api`, trusted for `max_age`.
    pub(crate) fn new(api: Arc<dyn KinesisApi>, max_age: Duration) -> Self {
        Self { api, max_age, entries: Mutex::new(HashMap::new()) }
    }

    /// Makes every map stale, so the next write to each stream fetches it again.
    pub(crate) fn mark_all_stale(&self) {
        let mut entries = self.entries.lock().expect("shard map lock");
        for entry in entries.values_mut() {
            entry.fetched = None;
        }
    }

    /// Makes one stream's map stale.
    pub(crate) fn mark_stale(&self, stream: &str) {
        if let Some(entry) = self.entries.lock().expect("shard map lock").get_mut(stream) {
            entry.fetched = None;
        }
    }

    fn next(&self, stream: &str, now: Instant) -> Next {
        let mut entries = self.entries.lock().expect("shard map lock");
        let entry = entries.entry(stream.to_owned()).or_default();
        let fresh =
            entry.fetched.is_some_and(|at| now.saturating_duration_since(at) < self.max_age);
        if fresh {
            return Next::Use(entry.map.clone());
        }
        if entry.fetching {
            return match &entry.map {
                Some(map) => Next::Use(Some(map.clone())),
                None => Next::Wait(entry.fetched_signal.clone()),
            };
        }
        entry.fetching = true;
        Next::Fetch { stale: entry.map.clone() }
    }

    /// The stream's shard map, fetching it if there is none or it is stale; `None` when it
    /// cannot be had (unknown stream, upstream failure).
    pub(crate) async fn get(&self, stream: &str) -> Option<Arc<ShardMap>> {
        match self.next(stream, Instant::now()) {
            Next::Use(map) => map,
            Next::Wait(signal) => {
                let notified = signal.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                // The fetch may have finished between the lookup and `enable`.
                if let Next::Use(map) = self.peek(stream) {
                    return map;
                }
                notified.await;
                match self.peek(stream) {
                    Next::Use(map) => map,
                    _ => None,
                }
            }
            Next::Fetch { stale } => {
                let fetched = self.fetch(stream).await;
                let mut entries = self.entries.lock().expect("shard map lock");
                let entry = entries.entry(stream.to_owned()).or_default();
                entry.fetching = false;
                match fetched {
                    Some(map) => {
                        entry.map = Some(map.clone());
                        entry.fetched = Some(Instant::now());
                    }
                    // Keep an old map rather than none: after a failure it is the best guess.
                    None => entry.map = stale.clone(),
                }
                entry.fetched_signal.notify_waiters();
                entry.map.clone()
            }
        }
    }

    /// The cached map without fetching: `Use` when there is one and no fetch runs.
    fn peek(&self, stream: &str) -> Next {
        let entries = self.entries.lock().expect("shard map lock");
        match entries.get(stream) {
            Some(entry) if !entry.fetching => Next::Use(entry.map.clone()),
            Some(entry) => Next::Wait(entry.fetched_signal.clone()),
            None => Next::Use(None),
        }
    }

    async fn fetch(&self, stream: &str) -> Option<Arc<ShardMap>> {
        let name = StreamName::new(stream).ok()?;
        let shards = self.api.list_shards(&name).await.ok()?;
        Some(Arc::new(ShardMap::from_shards(&shards)))
    }
}

#[cfg(test)]
mod tests {
    use kinesis_common::{SequenceNumber, ShardId};

    use super::*;

    fn shard(id: &str, start: u128, end: u128, open: bool) -> Shard {
        Shard {
            id: ShardId::new(id).unwrap(),
            parent: None,
            adjacent_parent: None,
            hash_range: HashKeyRange::new(HashKey(start), HashKey(end)).unwrap(),
            starting_sequence: SequenceNumber::new("1").unwrap(),
            ending_sequence: (!open).then(|| SequenceNumber::new("2").unwrap()),
        }
    }

    #[test]
    fn keys_map_to_the_open_shard_whose_range_holds_them() {
        let map = ShardMap::from_shards(&[
            shard("b", 100, u128::MAX, true),
            shard("a", 0, 99, true),
            shard("closed", 0, u128::MAX, false),
        ]);
        assert_eq!(map.shard_for(HashKey(0)), Some("a"));
        assert_eq!(map.shard_for(HashKey(99)), Some("a"));
        assert_eq!(map.shard_for(HashKey(100)), Some("b"));
        assert_eq!(map.shard_for(HashKey(u128::MAX)), Some("b"));
    }

    #[test]
    fn keys_in_a_gap_map_to_no_shard() {
        let map = ShardMap::from_shards(&[shard("a", 10, 20, true), shard("b", 30, 40, true)]);
        assert_eq!(map.shard_for(HashKey(5)), None);
        assert_eq!(map.shard_for(HashKey(25)), None);
        assert_eq!(map.shard_for(HashKey(41)), None);
        assert_eq!(ShardMap::from_shards(&[]).shard_for(HashKey(1)), None);
    }
}
