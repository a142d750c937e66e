//! The resharding barrier: keeps a partition key's records in order across a split or merge.
//!
//! When the shard map learns that shards closed, records of a key may still be buffered,
//! queued, in flight or waiting for a retry under a closed shard's prediction, while newer
//! records of the same key already route to a new (child) shard. Sending the newer ones first
//! would reorder the key. So while anything predicted for a closed shard remains in the
//! pipeline, records routed to one of the new shards wait here, and are released in the order
//! they were accepted once the old shards' records have all been answered or re-routed (the
//! re-routed ones wait here too, under their original acceptance number).
//!
//! Records for shards the resharding did not touch never wait.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use kinesis_common::ShardId;

use crate::pending::Pending;

/// Records held back while a resharding settles.
#[derive(Debug, Default)]
pub(crate) struct Barrier {
    /// Shards that opened with the last resharding.
    new_shards: HashSet<ShardId>,
    /// Held records by acceptance number.
    waiting: BTreeMap<u64, Pending>,
}

impl Barrier {
    /// Starts (or widens) a barrier for shards that just opened.
    pub(crate) fn raise(&mut self, new_shards: impl IntoIterator<Item = ShardId>) {
        self.new_shards.extend(new_shards);
    }

    /// Whether a barrier is up.
    pub(crate) fn is_raised(&self) -> bool {
        !self.new_shards.is_empty()
    }

    /// Holds the record if it routes to a shard behind the barrier; gives it back otherwise.
    pub(crate) fn hold(&mut self, shard: Option<&ShardId>, pending: Pending) -> Option<Pending> {
        match shard {
            Some(shard) if self.new_shards.contains(shard) => {
                self.waiting.insert(pending.seq, pending);
                None
            }
            _ => Some(pending),
        }
    }

    /// Lowers the barrier: the held records, oldest first.
    pub(crate) fn lower(&mut self) -> Vec<Pending> {
        self.new_shards.clear();
        std::mem::take(&mut self.waiting).into_values().collect()
    }

    /// Takes out the held records whose TTL has run out.
    pub(crate) fn take_expired(&mut self, now: Instant) -> Vec<Pending> {
        let expired: Vec<u64> =
            self.waiting.iter().filter(|(_, p)| now >= p.expires_at).map(|(seq, _)| *seq).collect();
        expired.into_iter().filter_map(|seq| self.waiting.remove(&seq)).collect()
    }

    /// The earliest TTL among held records.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.waiting.values().map(|p| p.expires_at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pending::tests::pending;

    #[test]
    fn holds_only_records_for_new_shards_and_releases_them_oldest_first() {
        let now = Instant::now();
        let child = ShardId::new("shardId-000000000004").unwrap();
        let other = ShardId::new("shardId-000000000001").unwrap();
        let mut b = Barrier::default();
        let (p, _) = pending("k", "v", now);
        assert!(b.hold(Some(&child), p).is_some(), "no barrier up: nothing is held");
        b.raise([child.clone()]);
        assert!(b.is_raised());
        for seq in [5, 2, 9] {
            let (mut p, _) = pending("k", &seq.to_string(), now);
            p.seq = seq;
            assert!(b.hold(Some(&child), p).is_none());
        }
        let (p, _) = pending("k", "x", now);
        assert!(b.hold(Some(&other), p).is_some());
        assert!(b.hold(None, pending("k", "y", now).0).is_some());
        let order: Vec<u64> = b.lower().iter().map(|p| p.seq).collect();
        assert_eq!(order, [2, 5, 9]);
        assert!(!b.is_raised());
    }
}
