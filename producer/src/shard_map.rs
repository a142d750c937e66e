//! The shard map: which open shard owns a hash key, and the ranges of recently closed shards.
//!
//! Built from ListShards. Lookups are a binary search over the open shards' range ends, and
//! never wait for a refresh: while a refresh runs, the pipeline keeps predicting with the map
//! it has, and a wrong prediction is caught by the PutRecords answer (the shard that took the
//! record differs from the predicted one).
//!
//! Closed shards' ranges are kept for [`CLOSED_SHARD_TTL`] after the shard was last seen, so
//! that a wrong-shard answer can still be judged against the range of the shard that took the
//! record (the KPL keeps them 60 s for the same reason, `shard_map.cc`).
//!
//! Invariant: the open shards' ranges do not overlap (Kinesis guarantees it; ranges that do
//! are reported by [`ShardMap::new`] as an error rather than silently mis-routing).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kinesis_common::{HashKey, HashKeyRange, Shard, ShardId};

/// How long a closed shard's range is remembered after the last ListShards that showed it.
pub(crate) const CLOSED_SHARD_TTL: Duration = Duration::from_secs(60);

/// An open shard as the map predicts it: its id, and a number the map gives the shard for as
/// long as it knows it, which the aggregator keys its buffers by (a number compares and
/// hashes in a few instructions; an id's text does not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Predicted {
    pub(crate) id: ShardId,
    pub(crate) tag: u32,
}

/// A snapshot of the stream's shards.
#[derive(Debug, Clone)]
pub(crate) struct ShardMap {
    /// Open shards ordered by the end of their range.
    open: Vec<(HashKeyRange, Predicted)>,
    /// The tag of every shard in `ranges`.
    tags: HashMap<ShardId, u32>,
    next_tag: u32,
    /// The range of every shard known, open or recently closed, with when it was last seen
    /// closed (`None` while open).
    ranges: HashMap<ShardId, (HashKeyRange, Option<Instant>)>,
}

/// ListShards gave open shards whose ranges overlap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("open shards {first} and {second} have overlapping hash key ranges")]
pub(crate) struct OverlappingShards {
    first: ShardId,
    second: ShardId,
}

impl ShardMap {
    /// A map of `shards` (open and closed, as ListShards returns them) seen at `now`.
    pub(crate) fn new(shards: &[Shard], now: Instant) -> Result<Self, OverlappingShards> {
        let mut map =
            Self { open: Vec::new(), tags: HashMap::new(), next_tag: 0, ranges: HashMap::new() };
        map.update(shards, now)?;
        Ok(map)
    }

    /// Replaces the open shards with those of `shards` and remembers the closed ones; forgets
    /// closed shards not seen for [`CLOSED_SHARD_TTL`]. On error the map is unchanged.
    pub(crate) fn update(
        &mut self,
        shards: &[Shard],
        now: Instant,
    ) -> Result<(), OverlappingShards> {
        let mut open: Vec<(HashKeyRange, &ShardId)> =
            shards.iter().filter(|s| s.is_open()).map(|s| (s.hash_range, &s.id)).collect();
        open.sort_by_key(|(range, _)| range.end());
        if let Some(w) = open.windows(2).find(|w| w[0].0.overlaps(&w[1].0)) {
            return Err(OverlappingShards { first: w[0].1.clone(), second: w[1].1.clone() });
        }
        // Shards that were open before and are gone from the answer count as closed now.
        for (_, closed_at) in self.ranges.values_mut() {
            closed_at.get_or_insert(now);
        }
        for shard in shards {
            let closed_at = if shard.is_open() { None } else { Some(now) };
            self.ranges.insert(shard.id.clone(), (shard.hash_range, closed_at));
        }
        self.ranges.retain(|_, (_, closed_at)| {
            closed_at.is_none_or(|at| now.saturating_duration_since(at) < CLOSED_SHARD_TTL)
        });
        // A shard keeps its tag while the map knows it; a new one takes the next number.
        self.tags.retain(|id, _| self.ranges.contains_key(id));
        self.open = open
            .into_iter()
            .map(|(range, id)| {
                let tag = *self.tags.entry(id.clone()).or_insert_with(|| {
                    self.next_tag = self.next_tag.wrapping_add(1);
                    self.next_tag
                });
                (range, Predicted { id: id.clone(), tag })
            })
            .collect();
        Ok(())
    }

    /// The open shard whose range holds `key`; `None` if no open shard does (a gap while the
    /// stream reshards, or an empty map).
    pub(crate) fn shard_for(&self, key: HashKey) -> Option<&ShardId> {
        self.predict(key).map(|p| &p.id)
    }

    /// [`shard_for`](Self::shard_for), with the shard's tag.
    pub(crate) fn predict(&self, key: HashKey) -> Option<&Predicted> {
        let at = self.open.partition_point(|(range, _)| range.end() < key);
        self.open.get(at).filter(|(range, _)| range.contains(key)).map(|(_, p)| p)
    }

    /// The range of an open or recently closed shard.
    pub(crate) fn range(&self, shard: &ShardId) -> Option<HashKeyRange> {
        self.ranges.get(shard).map(|(range, _)| *range)
    }

    /// The open shards, ordered by hash range.
    pub(crate) fn open_shards(&self) -> impl Iterator<Item = &ShardId> {
        self.open.iter().map(|(_, p)| &p.id)
    }

    /// Whether the map believes `shard` is open.
    pub(crate) fn is_open(&self, shard: &ShardId) -> bool {
        self.ranges.get(shard).is_some_and(|(_, closed)| closed.is_none())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kinesis_common::SequenceNumber;
    use proptest::prelude::*;

    /// A shard `shardId-<id>` owning `start..=end`, open or closed.
    pub(crate) fn shard(id: u32, start: u128, end: u128, open: bool) -> Shard {
        Shard {
            id: ShardId::new(format!("shardId-{id:012}")).unwrap(),
            parent: None,
            adjacent_parent: None,
            hash_range: HashKeyRange::new(HashKey(start), HashKey(end)).unwrap(),
            starting_sequence: SequenceNumber::new("1").unwrap(),
            ending_sequence: (!open).then(|| SequenceNumber::new("9").unwrap()),
        }
    }

    fn even(n: u32) -> Vec<Shard> {
        let step = u128::MAX / u128::from(n);
        (0..n)
            .map(|i| {
                let start = step * u128::from(i) + u128::from(i > 0);
                let end = if i + 1 == n { u128::MAX } else { step * u128::from(i + 1) };
                shard(i, start, end, true)
            })
            .collect()
    }

    #[test]
    fn lookups_find_the_owning_open_shard_at_every_boundary() {
        let shards = even(4);
        let map = ShardMap::new(&shards, Instant::now()).unwrap();
        for s in &shards {
            assert_eq!(map.shard_for(s.hash_range.start()), Some(&s.id));
            assert_eq!(map.shard_for(s.hash_range.end()), Some(&s.id));
        }
    }

    #[test]
    fn a_split_parent_is_remembered_but_not_predicted() {
        let t0 = Instant::now();
        let mut map = ShardMap::new(&[shard(0, 0, u128::MAX, true)], t0).unwrap();
        let split =
            [shard(0, 0, u128::MAX, false), shard(1, 0, 99, true), shard(2, 100, u128::MAX, true)];
        map.update(&split, t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(map.shard_for(HashKey(5)).map(ShardId::as_str), Some("shardId-000000000001"));
        assert!(!map.is_open(&split[0].id));
        assert_eq!(map.range(&split[0].id), Some(HashKeyRange::FULL));
        // Forgotten once the TTL has passed without seeing it again.
        map.update(&split[1..], t0 + Duration::from_secs(1) + CLOSED_SHARD_TTL).unwrap();
        assert_eq!(map.range(&split[0].id), None);
        assert!(map.range(&split[1].id).is_some());
    }

    /// Tags tell shards apart and stay with a shard across refreshes, for as long as the map
    /// knows it (the aggregator's open buffers are keyed by them).
    #[test]
    fn each_shard_keeps_its_own_tag_across_refreshes() {
        let t0 = Instant::now();
        let tag = |map: &ShardMap, key: u128| map.predict(HashKey(key)).map(|p| p.tag);
        let mut map = ShardMap::new(&even(2), t0).unwrap();
        let (low, high) = (tag(&map, 0).unwrap(), tag(&map, u128::MAX).unwrap());
        assert_ne!(low, high);
        map.update(&even(2), t0 + Duration::from_secs(1)).unwrap();
        assert_eq!((tag(&map, 0), tag(&map, u128::MAX)), (Some(low), Some(high)));
        // Shard 1 splits: the children get tags of their own, shard 0 keeps its.
        let split = [
            even(2)[0].clone(),
            shard(1, u128::MAX / 2 + 1, u128::MAX, false),
            shard(2, u128::MAX / 2 + 1, u128::MAX - 10, true),
            shard(3, u128::MAX - 9, u128::MAX, true),
        ];
        map.update(&split, t0 + Duration::from_secs(2)).unwrap();
        let tags = [tag(&map, 0), tag(&map, u128::MAX - 20), tag(&map, u128::MAX)];
        assert_eq!(tags[0], Some(low));
        let all: std::collections::HashSet<_> = tags.into_iter().chain([Some(high)]).collect();
        assert_eq!(all.len(), 4, "{tags:?} and {high}");
    }

    #[test]
    fn a_gap_predicts_nothing_and_overlaps_are_refused() {
        let map = ShardMap::new(&[shard(0, 0, 10, true), shard(1, 20, 30, true)], Instant::now())
            .unwrap();
        assert_eq!(map.shard_for(HashKey(15)), None);
        assert_eq!(map.shard_for(HashKey(31)), None);
        let err = ShardMap::new(&[shard(0, 0, 10, true), shard(1, 10, 30, true)], Instant::now())
            .unwrap_err();
        assert!(err.to_string().contains("overlapping"));
    }

    proptest! {
        #[test]
        fn prediction_agrees_with_a_linear_scan(n in 1u32..40, key in any::<u128>()) {
            let shards = even(n);
            let map = ShardMap::new(&shards, Instant::now()).unwrap();
            let want = shards.iter().find(|s| s.hash_range.contains(HashKey(key))).map(|s| &s.id);
            prop_assert_eq!(map.shard_for(HashKey(key)), want);
        }
    }
}
