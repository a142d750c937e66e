//! The aggregator: packs user records into Kinesis records, one open aggregate per predicted
//! shard (or per partition key), in the KPL's format.
//!
//! Invariants:
//! - an aggregate only holds user records predicted for one shard, so the KCL's hash-range
//!   filter never drops it on the shard it was meant for;
//! - an aggregate's encoded size never exceeds `aggregation_max_size`, and data plus outer
//!   partition key never exceed `max_record_size` (sizes come from the codec's exact
//!   accounting, so nothing is encoded twice);
//! - an aggregate of one record is sent as that plain record (as the KPL does), so consumers
//!   that do not de-aggregate still read single records;
//! - records too large to share an aggregate are sent on their own;
//! - an aggregate is closed when full or at the earliest `record_max_buffered_time` deadline
//!   of its records.
//!
//! Pure: the caller passes deadlines and polls with `now`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kinesis_common::aggregation::{AggregateBuilder, Unsealed, UserRecord, seal_all};
use kinesis_common::compression;
use kinesis_common::{HashKey, PartitionKey, PutRecordsEntry, ShardId};

use crate::collector::Collectable;
use crate::config::{Aggregation, Compression};
use crate::fast_hash::FastMap;
use crate::pending::Pending;
use crate::shard_map::Predicted;

/// One Kinesis record ready for the limiter and the collector, with the user records it
/// carries (one, or many in aggregate order).
#[derive(Debug)]
pub(crate) struct KinesisEntry {
    /// The shard the shard map predicted, if it could.
    pub(crate) predicted: Option<ShardId>,
    /// What PutRecords sends; `entry.data` is empty while `unsealed` holds it.
    pub(crate) entry: PutRecordsEntry,
    /// An uncompressed aggregate whose MD5 digest is not written yet: [`seal`] writes the
    /// digests of a request's aggregates together, when the request is sent.
    pub(crate) unsealed: Option<Unsealed>,
    /// The user records, in the order of their sub-sequence numbers.
    pub(crate) users: Vec<Pending>,
    /// Whether `entry.data` is a KPL aggregate (else it is the single user record's data).
    pub(crate) aggregated: bool,
    /// When it must be sent at the latest.
    pub(crate) deadline: Instant,
    /// PutRecords attempts made with this entry.
    pub(crate) attempts: u32,
}

impl KinesisEntry {
    /// The size it counts for in the shard and request limits (as `PutRecordsEntry::size`).
    pub(crate) fn size(&self) -> usize {
        self.entry.size() + self.unsealed.as_ref().map_or(0, Unsealed::len)
    }

    /// The earliest TTL among its user records.
    pub(crate) fn expires_at(&self) -> Instant {
        self.users.iter().map(|p| p.expires_at).min().unwrap_or(self.deadline)
    }
}

impl Collectable for KinesisEntry {
    fn size(&self) -> usize {
        KinesisEntry::size(self)
    }
    fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// Writes the MD5 digests of the entries' unsealed aggregates, computing them together
/// (sixteen at a time on x86-64 processors with AVX-512 or AVX2: a request carries up to a
/// hundred 50 KiB aggregates, and one at a time MD5 was the largest single cost of
/// aggregation).
pub(crate) fn seal(entries: &mut [KinesisEntry]) {
    let (at, unsealed): (Vec<usize>, Vec<Unsealed>) =
        entries.iter_mut().enumerate().filter_map(|(i, e)| Some((i, e.unsealed.take()?))).unzip();
    if unsealed.is_empty() {
        return;
    }
    for (i, data) in at.into_iter().zip(seal_all(unsealed)) {
        entries[i].entry.data = data;
    }
}

/// More than an aggregate of one record ever adds to the record's data and partition key:
/// magic and digest (20), the key table entry's tag and length (3), an explicit hash key
/// table entry (41), the record's tag and length (6), its index fields (4) and data tag and
/// length (6). Records this far below the limit skip the exact calculation.
const ALONE_OVERHEAD: usize = 128;

/// Which open aggregate a record joins.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BufferKey {
    /// The predicted shard's tag (see [`Predicted`]).
    shard: u32,
    /// In same-partition-key mode, the key (and explicit hash key) the aggregate is for.
    key: Option<(PartitionKey, Option<HashKey>)>,
}

#[derive(Debug)]
struct Buffer {
    shard: ShardId,
    builder: AggregateBuilder,
    users: Vec<Pending>,
    deadline: Instant,
    /// Tells this buffer's deadline-heap entries from those of an earlier buffer of the key.
    epoch: u64,
}

/// Packs user records into Kinesis records.
#[derive(Debug)]
pub(crate) struct Aggregator {
    mode: Aggregation,
    max_count: usize,
    max_size: usize,
    max_record_size: usize,
    outer_key: PartitionKey,
    compression: Option<Compression>,
    /// `record_max_buffered_time`: a record's deadline is its acceptance plus this.
    max_buffered: Duration,
    buffers: FastMap<BufferKey, Buffer>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    epochs: FastMap<u64, BufferKey>,
    next_epoch: u64,
}

impl Aggregator {
    pub(crate) fn new(
        mode: Aggregation,
        max_count: usize,
        max_size: usize,
        max_record_size: usize,
        outer_key: PartitionKey,
        compression: Option<Compression>,
        max_buffered: Duration,
    ) -> Self {
        Self {
            mode,
            max_count: max_count.max(1),
            max_size,
            max_record_size,
            outer_key,
            compression,
            max_buffered,
            buffers: FastMap::default(),
            deadlines: BinaryHeap::new(),
            epochs: FastMap::default(),
            next_epoch: 0,
        }
    }

    /// Adds a record predicted for `shard` (`None`: no prediction, so it goes alone). Returns
    /// the Kinesis records that are ready: an aggregate the record did not fit into, the
    /// aggregate it filled, or the record itself when it cannot be aggregated.
    pub(crate) fn add(&mut self, shard: Option<&Predicted>, pending: Pending) -> Vec<KinesisEntry> {
        let Some(shard) = shard else {
            return vec![self.single(None, pending)];
        };
        let key = match self.mode {
            Aggregation::Off => return vec![self.single(Some(shard.id.clone()), pending)],
            Aggregation::PerShard => BufferKey { shard: shard.tag, key: None },
            Aggregation::SamePartitionKey => BufferKey {
                shard: shard.tag,
                key: Some((
                    pending.record.partition_key.clone(),
                    pending.record.explicit_hash_key(),
                )),
            },
            #[allow(unreachable_patterns)]
            _ => return vec![self.single(Some(shard.id.clone()), pending)],
        };
        let user = UserRecord {
            partition_key: pending.record.partition_key.clone(),
            explicit_hash_key: pending.record.explicit_hash_key(),
            data: pending.record.data.clone(),
        };
        let limit = self.size_limit(&key);
        // A record too big to share an aggregate with anything goes alone (KPL: records larger
        // than AggregationMaxSize bypass aggregation).
        if pending.record.size() + ALONE_OVERHEAD > limit
            && AggregateBuilder::new().encoded_len_with(&user) > limit
        {
            // The open aggregate goes first: it holds records sent before this one, perhaps
            // of the same key.
            let mut out = Vec::with_capacity(2);
            if let Some(buffer) = self.buffers.remove(&key) {
                out.push(self.close(key, buffer));
            }
            out.push(self.single(Some(shard.id.clone()), pending));
            return out;
        }
        let mut out = Vec::new();
        let deadline = self.deadline(&pending);
        // The common case, one lookup: the record fits the open aggregate of its shard.
        let mut user = user;
        if let Some(buffer) = self.buffers.get_mut(&key) {
            match buffer.builder.try_push(user, limit) {
                Ok(()) => {
                    buffer.users.push(pending);
                    if deadline < buffer.deadline {
                        buffer.deadline = deadline;
                        self.deadlines.push(Reverse((deadline, buffer.epoch)));
                    }
                    if buffer.users.len() >= self.max_count {
                        let buffer = self.buffers.remove(&key).expect("present");
                        out.push(self.close(key, buffer));
                    }
                    return out;
                }
                Err(rejected) => user = rejected.record,
            }
        }
        // The aggregate is full (or there is none): close it and start a new one.
        if let Some(buffer) = self.buffers.remove(&key) {
            out.push(self.close(key.clone(), buffer));
        }
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        self.epochs.insert(epoch, key.clone());
        self.deadlines.push(Reverse((deadline, epoch)));
        let mut builder = AggregateBuilder::new();
        // `try_push` sizes the new aggregate's key table from the limit; the record fits
        // alone (checked above), so the fallback never runs.
        if let Err(rejected) = builder.try_push(user, limit) {
            builder.push(rejected.record);
        }
        // Room for as many records of this size as the aggregate can take (each costs its data
        // and at least six bytes of framing there), so that records of one size never make
        // the vector grow, which would move every pending record; at most 1 024, so that a
        // tiny first record does not reserve room for thousands.
        let estimate = (limit / (pending.record.data.len() + 6)).clamp(1, self.max_count.min(1024));
        let mut users = Vec::with_capacity(estimate);
        users.push(pending);
        let buffer = Buffer { shard: shard.id.clone(), builder, users, deadline, epoch };
        if self.max_count <= 1 {
            out.push(self.close(key, buffer));
        } else {
            self.buffers.insert(key, buffer);
        }
        out
    }

    /// The largest encoded aggregate for a buffer: the configured size, and no more than the
    /// record size limit allows beside the outer partition key.
    fn size_limit(&self, key: &BufferKey) -> usize {
        let outer = key.key.as_ref().map_or(self.outer_key.len_bytes(), |(pk, _)| pk.len_bytes());
        self.max_size.min(self.max_record_size.saturating_sub(outer))
    }

    /// Closes the aggregates whose deadline has come.
    pub(crate) fn poll(&mut self, now: Instant) -> Vec<KinesisEntry> {
        let mut out = Vec::new();
        while let Some(Reverse((deadline, epoch))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let Some(key) = self.epochs.get(&epoch).cloned() else { continue };
            let due = self.buffers.get(&key).is_some_and(|b| b.epoch == epoch && b.deadline <= now);
            if due {
                let buffer = self.buffers.remove(&key).expect("present");
                out.push(self.close(key, buffer));
            }
        }
        out
    }

    /// Closes the open aggregates of the shards `which` selects.
    pub(crate) fn flush_shards(&mut self, which: impl Fn(&ShardId) -> bool) -> Vec<KinesisEntry> {
        let keys: Vec<BufferKey> =
            self.buffers.iter().filter(|(_, b)| which(&b.shard)).map(|(k, _)| k.clone()).collect();
        keys.into_iter()
            .map(|key| {
                let buffer = self.buffers.remove(&key).expect("listed");
                self.close(key, buffer)
            })
            .collect()
    }

    /// Whether an aggregate is open for a shard `which` selects.
    pub(crate) fn has_buffer(&self, which: impl Fn(&ShardId) -> bool) -> bool {
        self.buffers.values().any(|b| which(&b.shard))
    }

    /// Closes every open aggregate.
    pub(crate) fn flush(&mut self) -> Vec<KinesisEntry> {
        let buffers: Vec<_> = self.buffers.drain().collect();
        let out = buffers.into_iter().map(|(key, buffer)| self.close(key, buffer)).collect();
        self.deadlines.clear();
        self.epochs.clear();
        out
    }

    /// The earliest deadline of an open aggregate.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        // Drop heap entries of closed buffers so the answer is exact.
        while let Some(Reverse((deadline, epoch))) = self.deadlines.peek().copied() {
            let live = self
                .epochs
                .get(&epoch)
                .and_then(|key| self.buffers.get(key))
                .is_some_and(|b| b.epoch == epoch && b.deadline == deadline);
            if live {
                return Some(deadline);
            }
            self.deadlines.pop();
        }
        None
    }

    fn close(&mut self, key: BufferKey, buffer: Buffer) -> KinesisEntry {
        self.epochs.remove(&buffer.epoch);
        let Buffer { shard, builder, mut users, deadline, .. } = buffer;
        if users.len() == 1 {
            let pending = users.pop().expect("one");
            return self.single(Some(shard), pending);
        }
        let (partition_key, explicit_hash_key) = match key.key {
            // KPL: the outer record carries a one-byte key and is placed by the explicit hash
            // key of its first user record.
            None => (self.outer_key.clone(), builder.first_hash_key()),
            Some((pk, ehk)) => (pk, ehk),
        };
        // Compressed data needs its digest first; uncompressed, the digest waits for `seal`,
        // which computes those of a whole request together.
        let (data, unsealed) = match self.compression {
            None => (Bytes::new(), Some(builder.finish_unsealed())),
            Some(_) => (self.compress(builder.finish()), None),
        };
        KinesisEntry {
            predicted: Some(shard),
            entry: PutRecordsEntry { partition_key, explicit_hash_key, data },
            unsealed,
            users,
            aggregated: true,
            deadline,
            attempts: 0,
        }
    }

    /// When a record must be sent at the latest: `record_max_buffered_time` after it was
    /// accepted.
    fn deadline(&self, pending: &Pending) -> Instant {
        pending.accepted_at + self.max_buffered
    }

    /// A Kinesis record holding one user record as it is.
    pub(crate) fn single(&self, predicted: Option<ShardId>, pending: Pending) -> KinesisEntry {
        let entry = PutRecordsEntry {
            partition_key: pending.record.partition_key.clone(),
            explicit_hash_key: pending.record.explicit_hash_key(),
            data: self.compress(pending.record.data.clone()),
        };
        KinesisEntry {
            predicted,
            entry,
            unsealed: None,
            deadline: self.deadline(&pending),
            users: vec![pending],
            aggregated: false,
            attempts: 0,
        }
    }

    /// Wraps data in the compression envelope when configured, large enough, and smaller for
    /// it; else returns it unchanged.
    fn compress(&self, data: Bytes) -> Bytes {
        match self.compression {
            Some(c) if data.len() >= c.min_size => {
                match compression::compress(c.codec, c.level, &data) {
                    Ok(packed) if packed.len() < data.len() => packed,
                    _ => data,
                }
            }
            _ => data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pending::tests::pending;
    use kinesis_common::aggregation::deaggregate;
    use kinesis_common::compression::Codec;
    use kinesis_common::{KinesisRecord, SequenceNumber};
    use proptest::prelude::*;
    use std::time::Duration;

    fn shard(n: u32) -> ShardId {
        ShardId::new(format!("shardId-{n:012}")).unwrap()
    }

    /// Shard `n` as the shard map predicts it.
    fn at(n: u32) -> Predicted {
        Predicted { id: shard(n), tag: n }
    }

    fn aggregator(mode: Aggregation, max_count: usize, max_size: usize) -> Aggregator {
        let key = PartitionKey::new("a").unwrap();
        Aggregator::new(mode, max_count, max_size, 1 << 20, key, None, Duration::from_millis(100))
    }

    fn decode(entry: &KinesisEntry) -> Vec<(String, Bytes)> {
        let record = KinesisRecord {
            sequence_number: SequenceNumber::new("1").unwrap(),
            partition_key: entry.entry.partition_key.as_str().to_owned(),
            data: match &entry.unsealed {
                Some(unsealed) => unsealed.clone().seal(),
                None => entry.entry.data.clone(),
            },
            approximate_arrival: None,
        };
        deaggregate(&record, None)
            .records
            .into_iter()
            .map(|r| (r.partition_key.to_string(), r.data))
            .collect()
    }

    /// The records of an aggregate of equal-sized records fit the room reserved for them at
    /// the first record: the vector never grows (which would move every pending record).
    #[test]
    fn an_aggregate_of_equal_records_never_outgrows_its_reservation() {
        let t0 = Instant::now();
        for keys in [1, 7, 1000] {
            let mut a = aggregator(Aggregation::PerShard, usize::MAX, 51_200);
            let data = "x".repeat(100);
            let full = (0..)
                .find_map(|i| {
                    let (p, _) = pending(&format!("key-{}", i % keys), &data, t0);
                    a.add(Some(&at(0)), p).pop()
                })
                .unwrap();
            assert!(full.users.len() > 400, "{keys} keys: {}", full.users.len());
            assert_eq!(full.users.capacity(), 51_200 / 106, "{keys} keys");
        }
    }

    #[test]
    fn records_for_one_shard_share_an_aggregate_until_the_deadline() {
        let t0 = Instant::now();
        let mut a = aggregator(Aggregation::PerShard, usize::MAX, 51_200);
        for i in 0..3 {
            let (p, _) = pending(&format!("k{i}"), "v", t0);
            assert!(a.add(Some(&at(0)), p).is_empty());
        }
        assert_eq!(a.next_deadline(), Some(t0 + Duration::from_millis(100)));
        assert!(a.poll(t0 + Duration::from_millis(99)).is_empty());
        let out = a.poll(t0 + Duration::from_millis(100));
        assert_eq!(out.len(), 1);
        let e = &out[0];
        assert!(e.aggregated);
        assert_eq!(e.entry.partition_key.as_str(), "a");
        assert_eq!(e.entry.explicit_hash_key, Some(e.users[0].record.hash_key()));
        assert_eq!(decode(e).len(), 3);
        assert_eq!(a.next_deadline(), None);
    }

    proptest! {
        #[test]
        fn alone_overhead_bounds_an_aggregate_of_one(
            key in "\\PC{1,256}",
            data_len in 0usize..100_000,
            explicit in proptest::option::of(any::<u128>()),
        ) {
            let partition_key = PartitionKey::new(key).unwrap();
            let size = partition_key.len_bytes() + data_len;
            let user = UserRecord {
                partition_key,
                explicit_hash_key: explicit.map(HashKey),
                data: Bytes::from(vec![0u8; data_len]),
            };
            prop_assert!(AggregateBuilder::new().encoded_len_with(&user) <= size + ALONE_OVERHEAD);
        }
    }

    #[test]
    fn an_aggregate_of_one_is_sent_as_the_plain_record() {
        let t0 = Instant::now();
        let mut a = aggregator(Aggregation::PerShard, usize::MAX, 51_200);
        let (p, _) = pending("key", "solo", t0);
        a.add(Some(&at(0)), p);
        let e = a.flush().pop().unwrap();
        assert!(!e.aggregated);
        assert_eq!(e.entry.partition_key.as_str(), "key");
        assert_eq!(e.entry.data, Bytes::from_static(b"solo"));
    }

    #[test]
    fn different_shards_never_share_an_aggregate() {
        let t0 = Instant::now();
        let mut a = aggregator(Aggregation::PerShard, usize::MAX, 51_200);
        for i in 0..10 {
            let (p, _) = pending(&format!("k{i}"), "v", t0);
            a.add(Some(&at(i % 2)), p);
        }
        let out = a.flush();
        assert_eq!(out.len(), 2);
        for e in &out {
            let predicted = e.predicted.clone().unwrap();
            assert_eq!(e.users.len(), 5);
            assert!(e.users.iter().all(|_| predicted == e.predicted.clone().unwrap()));
        }
    }

    #[test]
    fn same_partition_key_mode_keeps_keys_apart_and_uses_the_real_key() {
        let t0 = Instant::now();
        let mut a = aggregator(Aggregation::SamePartitionKey, usize::MAX, 51_200);
        for i in 0..6 {
            let (p, _) = pending(&format!("k{}", i % 2), "v", t0);
            a.add(Some(&at(0)), p);
        }
        let mut out = a.flush();
        out.sort_by(|x, y| x.entry.partition_key.cmp(&y.entry.partition_key));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].entry.partition_key.as_str(), "k0");
        assert_eq!(out[0].entry.explicit_hash_key, None);
        assert!(decode(&out[0]).iter().all(|(k, _)| k == "k0"));
    }

    #[test]
    fn a_record_going_alone_never_overtakes_the_open_aggregate_of_its_shard() {
        // Same key, small then too big to share: the small one's aggregate must leave first,
        // or the key's records would reach the shard out of order.
        let t0 = Instant::now();
        let mut a = aggregator(Aggregation::PerShard, 10, 200);
        let (small_1, _) = pending("k", "first", t0);
        let (small_2, _) = pending("other", "second", t0);
        let (big, _) = pending("k", &"x".repeat(300), t0);
        assert!(a.add(Some(&at(0)), small_1).is_empty());
        assert!(a.add(Some(&at(0)), small_2).is_empty());
        let out = a.add(Some(&at(0)), big);
        let sizes: Vec<Vec<usize>> =
            out.iter().map(|e| e.users.iter().map(|u| u.record.data.len()).collect()).collect();
        assert_eq!(sizes, [vec![5, 6], vec![300]]);
        assert!(out[0].aggregated && !out[1].aggregated);
        assert!(a.flush().is_empty());
    }

    #[test]
    fn a_record_too_big_to_share_goes_alone_and_count_limits_close_aggregates() {
        let t0 = Instant::now();
        let mut a = aggregator(Aggregation::PerShard, 2, 200);
        let (big, _) = pending("k", &"x".repeat(300), t0);
        let out = a.add(Some(&at(0)), big);
        assert_eq!(out.len(), 1);
        assert!(!out[0].aggregated);
        let (p1, _) = pending("k1", "v", t0);
        let (p2, _) = pending("k2", "v", t0);
        assert!(a.add(Some(&at(0)), p1).is_empty());
        let out = a.add(Some(&at(0)), p2);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].users.len(), 2);
    }

    #[test]
    fn compression_applies_when_it_pays() {
        let t0 = Instant::now();
        let compression = Compression { codec: Codec::Zstd, level: None, min_size: 100 };
        let mut a = Aggregator::new(
            Aggregation::PerShard,
            usize::MAX,
            51_200,
            1 << 20,
            PartitionKey::new("a").unwrap(),
            Some(compression),
            Duration::from_millis(100),
        );
        for i in 0..50 {
            let (p, _) = pending(&format!("k{i}"), &"compressible ".repeat(10), t0);
            a.add(Some(&at(0)), p);
        }
        let e = a.flush().pop().unwrap();
        assert!(compression::is_envelope(&e.entry.data));
        let got = decode(&e);
        assert_eq!(got.len(), 50);
        assert_eq!(got[7].0, "k7");
    }

    proptest! {
        /// Every record comes out exactly once, aggregates stay within the size limit, and
        /// each aggregate holds records for one shard only.
        #[test]
        fn aggregates_respect_limits_and_keep_every_record(
            records in proptest::collection::vec((0u32..4, 0usize..3000), 1..300),
            max_size in 64usize..20_000,
            max_count in 1usize..50,
        ) {
            let t0 = Instant::now();
            let mut a = aggregator(Aggregation::PerShard, max_count, max_size);
            let mut out = Vec::new();
            let mut receivers = Vec::new();
            for (i, (s, len)) in records.iter().enumerate() {
                let (p, rx) = pending(&format!("key-{i}"), &"d".repeat(*len), t0);
                receivers.push(rx);
                out.extend(a.add(Some(&at(*s)), p));
            }
            out.extend(a.flush());
            // Sealing writes each aggregate's digest, changing no size.
            let sizes: Vec<usize> = out.iter().map(KinesisEntry::size).collect();
            seal(&mut out);
            prop_assert!(out.iter().all(|e| e.unsealed.is_none()));
            prop_assert_eq!(sizes, out.iter().map(KinesisEntry::size).collect::<Vec<_>>());
            // Each shard's records come out in the order they went in.
            let mut last = std::collections::HashMap::new();
            for e in &out {
                let shard = e.predicted.clone().expect("predicted");
                for u in &e.users {
                    let n: usize = u.record.partition_key.as_str()[4..].parse().unwrap();
                    prop_assert_eq!(records[n].0, shard.as_str()[8..].parse::<u32>().unwrap());
                    if let Some(before) = last.insert(shard.clone(), n) {
                        prop_assert!(before < n, "{} after {} on {}", n, before, shard);
                    }
                }
            }
            let mut seen = 0;
            for e in &out {
                prop_assert!(e.users.len() <= max_count);
                if e.aggregated {
                    prop_assert!(e.entry.data.len() <= max_size);
                    prop_assert!(e.users.len() >= 2);
                    let decoded = decode(e);
                    prop_assert_eq!(decoded.len(), e.users.len());
                    for (d, u) in decoded.iter().zip(&e.users) {
                        prop_assert_eq!(&d.0, u.record.partition_key.as_str());
                        prop_assert_eq!(&d.1, &u.record.data);
                    }
                }
                seen += e.users.len();
            }
            prop_assert_eq!(seen, records.len());
        }
    }
}
