//! One fake stream: its lifecycle, shards, records, consumers, and the resharding operations.
//!
//! Invariants:
//! - the open shards partition the hash key space `0..=2^128-1` exactly, so every hash key has
//!   one owner;
//! - shard `i` has the id `shardId-{i:012}` and sits at index `i` of `shards`;
//! - one stream-wide counter hands out every sequence number (shard starts, records, shard
//!   ends), so sequence numbers increase across the whole stream and a closed shard's ending
//!   sequence number is greater than its records' and smaller than its children's;
//! - records are never removed (no retention trimming): positions are indexes into `records`;
//! - a resharding change is applied when the `UPDATING` period ends, as on AWS, where the
//!   parent takes writes until the new shards exist.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::time::Instant;

use crate::{
    ApiError, ChildShard, ConsumerName, ConsumerStatus, HashKey, HashKeyRange, KinesisRecord,
    SequenceNumber, Shard, ShardId, ShardIteratorPosition, StreamName, StreamStatus,
};

use super::errors::{invalid_argument, stream_not_active};
use super::faults::WriteBudget;

/// The digits of the fake's sequence numbers: as many as the real service's.
const SEQUENCE_DIGITS: usize = 56;

/// Makes the sequence number for `counter` in shard `shard`: `49`, a 40-digit stream-wide
/// counter and a 14-digit shard index. 56 digits like AWS's, far past `u64`, so that code which
/// treats sequence numbers as short integers fails here as it would on AWS; and the shard is
/// encoded, so a sequence number of another shard is recognised as such.
pub(super) fn sequence_number(counter: u64, shard: usize) -> SequenceNumber {
    SequenceNumber::new(format!("49{counter:040}{shard:014}"))
        .expect("56 decimal digits make a sequence number")
}

/// The counter and shard index of a sequence number made by [`sequence_number`].
pub(super) fn decode_sequence_number(sequence: &SequenceNumber) -> Option<(u64, usize)> {
    let text = sequence.as_str();
    if text.len() != SEQUENCE_DIGITS || !text.starts_with("49") {
        return None;
    }
    let counter = text[2..42].parse().ok()?;
    let shard = text[42..].parse().ok()?;
    Some((counter, shard))
}

/// The hash key ranges AWS gives the `n` shards of a new stream: shard `i` covers
/// `[i*2^128/n, (i+1)*2^128/n - 1]` and the last ends at `2^128-1`.
pub(super) fn even_ranges(n: u32) -> Vec<HashKeyRange> {
    let n = u128::from(n.max(1));
    // 2^128 = q*n + r + 1, so i*2^128/n = i*q + i*(r+1)/n without overflow (i*(r+1) < n^2 < 2^64).
    let (q, r) = (u128::MAX / n, u128::MAX % n);
    let start = |i: u128| i * q + i * (r + 1) / n;
    (0..n)
        .map(|i| {
            let end = if i + 1 == n { u128::MAX } else { start(i + 1) - 1 };
            HashKeyRange::new(HashKey(start(i)), HashKey(end)).expect("even ranges are ordered")
        })
        .collect()
}

/// Where a stream is in its life. Deletion is immediate, so there is no `Deleting`.
#[derive(Debug)]
pub(super) enum Lifecycle {
    /// Not writable until `until`.
    Creating { until: Instant },
    /// Readable and writable.
    Active,
    /// Readable and writable; `change` takes effect at `until`.
    Updating { until: Instant, change: Reshard },
}

/// A resharding change waiting for the end of the `UPDATING` period.
#[derive(Debug, Clone, Copy)]
pub(super) enum Reshard {
    /// Split shard `shard`; the second child starts at `at`.
    Split { shard: usize, at: HashKey },
    /// Merge shard `shard` with `adjacent`.
    Merge { shard: usize, adjacent: usize },
    /// Reshape the open shards into `target` even ranges by splits and merges.
    Uniform { target: u32 },
}

/// A stored record.
#[derive(Debug, Clone)]
pub(super) struct StoredRecord {
    pub(super) counter: u64,
    pub(super) arrival: SystemTime,
    pub(super) record: KinesisRecord,
}

impl StoredRecord {
    fn size(&self) -> usize {
        self.record.data.len() + self.record.partition_key.len()
    }
}

/// One shard.
#[derive(Debug)]
pub(super) struct ShardState {
    pub(super) id: ShardId,
    pub(super) parent: Option<usize>,
    pub(super) adjacent_parent: Option<usize>,
    pub(super) range: HashKeyRange,
    pub(super) starting: u64,
    pub(super) ending: Option<u64>,
    pub(super) children: Vec<usize>,
    pub(super) records: Vec<StoredRecord>,
    pub(super) write_budget: Option<WriteBudget>,
}

impl ShardState {
    pub(super) fn is_open(&self) -> bool {
        self.ending.is_none()
    }
}

/// A registered enhanced fan-out consumer.
#[derive(Debug)]
pub(super) struct ConsumerState {
    pub(super) arn: String,
    pub(super) active_at: Instant,
}

impl ConsumerState {
    pub(super) fn status(&self, now: Instant) -> ConsumerStatus {
        if now >= self.active_at { ConsumerStatus::Active } else { ConsumerStatus::Creating }
    }
}

/// The live SubscribeToShard of one consumer on one shard.
#[derive(Debug, Clone, Copy)]
pub(super) struct SubscriptionLease {
    pub(super) id: u64,
    pub(super) started: Instant,
}

/// A batch read from a shard.
#[derive(Debug)]
pub(super) struct Batch {
    pub(super) records: Vec<KinesisRecord>,
    /// The position after the batch.
    pub(super) next: usize,
    /// The shard is closed and the batch reaches its end.
    pub(super) shard_ended: bool,
    pub(super) millis_behind: u64,
}

/// One stream.
#[derive(Debug)]
pub(super) struct StreamState {
    pub(super) name: StreamName,
    pub(super) arn: String,
    /// Tells this stream from an earlier one of the same name (iterators carry it).
    pub(super) generation: u64,
    pub(super) lifecycle: Lifecycle,
    pub(super) shards: Vec<ShardState>,
    pub(super) consumers: BTreeMap<ConsumerName, ConsumerState>,
    pub(super) subscriptions: HashMap<(ConsumerName, usize), SubscriptionLease>,
    last_counter: u64,
}

impl StreamState {
    /// A stream of `shard_count` even shards, `Creating` until `active_at`.
    pub(super) fn new(
        name: StreamName,
        arn: String,
        generation: u64,
        shard_count: u32,
        active_at: Instant,
    ) -> Self {
        let mut stream = Self {
            name,
            arn,
            generation,
            lifecycle: Lifecycle::Creating { until: active_at },
            shards: Vec::new(),
            consumers: BTreeMap::new(),
            subscriptions: HashMap::new(),
            last_counter: 0,
        };
        for range in even_ranges(shard_count) {
            stream.add_shard(range, None, None);
        }
        stream
    }

    /// Brings the lifecycle up to `now`: ends `Creating`, applies a pending reshard.
    pub(super) fn settle(&mut self, now: Instant) {
        let due = match &self.lifecycle {
            Lifecycle::Creating { until } | Lifecycle::Updating { until, .. } => now >= *until,
            Lifecycle::Active => false,
        };
        if due
            && let Lifecycle::Updating { change, .. } =
                std::mem::replace(&mut self.lifecycle, Lifecycle::Active)
        {
            self.apply(change);
        }
    }

    /// When the pending lifecycle change happens, if one is pending.
    pub(super) fn pending_until(&self) -> Option<Instant> {
        match &self.lifecycle {
            Lifecycle::Creating { until } | Lifecycle::Updating { until, .. } => Some(*until),
            Lifecycle::Active => None,
        }
    }

    pub(super) fn status(&self) -> StreamStatus {
        match self.lifecycle {
            Lifecycle::Creating { .. } => StreamStatus::Creating,
            Lifecycle::Active => StreamStatus::Active,
            Lifecycle::Updating { .. } => StreamStatus::Updating,
        }
    }

    /// `ResourceInUseException` unless the stream may be written and read (`ACTIVE` or
    /// `UPDATING`, as on AWS).
    pub(super) fn require_usable(&self) -> Result<(), ApiError> {
        match self.lifecycle {
            Lifecycle::Creating { .. } => Err(stream_not_active(&self.name, "CREATING")),
            _ => Ok(()),
        }
    }

    /// `ResourceInUseException` unless the stream is `ACTIVE`: resharding, deletion and a second
    /// update wait for the first to finish.
    pub(super) fn require_active(&self) -> Result<(), ApiError> {
        match self.lifecycle {
            Lifecycle::Creating { .. } => Err(stream_not_active(&self.name, "CREATING")),
            Lifecycle::Updating { .. } => Err(stream_not_active(&self.name, "UPDATING")),
            Lifecycle::Active => Ok(()),
        }
    }

    pub(super) fn shard_index(&self, id: &ShardId) -> Option<usize> {
        self.shards.iter().position(|s| &s.id == id)
    }

    pub(super) fn open_shard_count(&self) -> u32 {
        let open = self.shards.iter().filter(|s| s.is_open()).count();
        u32::try_from(open).unwrap_or(u32::MAX)
    }

    /// The open shard that owns `key`. Always one, by the partition invariant.
    pub(super) fn owner_of(&self, key: HashKey) -> usize {
        self.shards
            .iter()
            .position(|s| s.is_open() && s.range.contains(key))
            .expect("the open shards cover every hash key")
    }

    fn next_counter(&mut self) -> u64 {
        self.last_counter += 1;
        self.last_counter
    }

    fn add_shard(
        &mut self,
        range: HashKeyRange,
        parent: Option<usize>,
        adjacent_parent: Option<usize>,
    ) -> usize {
        let index = self.shards.len();
        let id = ShardId::new(format!("shardId-{index:012}")).expect("a valid shard id");
        let starting = self.next_counter();
        self.shards.push(ShardState {
            id,
            parent,
            adjacent_parent,
            range,
            starting,
            ending: None,
            children: Vec::new(),
            records: Vec::new(),
            write_budget: None,
        });
        index
    }

    fn close(&mut self, shard: usize) {
        let ending = self.next_counter();
        self.shards[shard].ending = Some(ending);
        self.shards[shard].write_budget = None;
    }

    /// Appends a record to open shard `shard` and returns its sequence number.
    pub(super) fn append(
        &mut self,
        shard: usize,
        partition_key: String,
        data: Bytes,
        arrival: SystemTime,
    ) -> SequenceNumber {
        debug_assert!(self.shards[shard].is_open(), "records go to open shards only");
        let counter = self.next_counter();
        let sequence_number = sequence_number(counter, shard);
        let record = KinesisRecord {
            sequence_number: sequence_number.clone(),
            partition_key,
            data,
            approximate_arrival: Some(arrival),
        };
        self.shards[shard].records.push(StoredRecord { counter, arrival, record });
        sequence_number
    }

    /// The shard as ListShards describes it.
    pub(super) fn describe_shard(&self, shard: usize) -> Shard {
        let s = &self.shards[shard];
        Shard {
            id: s.id.clone(),
            parent: s.parent.map(|p| self.shards[p].id.clone()),
            adjacent_parent: s.adjacent_parent.map(|p| self.shards[p].id.clone()),
            hash_range: s.range,
            starting_sequence: sequence_number(s.starting, shard),
            ending_sequence: s.ending.map(|e| sequence_number(e, shard)),
        }
    }

    /// The children of shard `shard`, each with all of its parents.
    pub(super) fn child_shards(&self, shard: usize) -> Vec<ChildShard> {
        self.shards[shard]
            .children
            .iter()
            .map(|&c| {
                let child = &self.shards[c];
                let parents = child.parent.iter().chain(child.adjacent_parent.iter());
                ChildShard {
                    shard_id: child.id.clone(),
                    parent_shards: parents.map(|&p| self.shards[p].id.clone()).collect(),
                    hash_range: child.range,
                }
            })
            .collect()
    }

    /// The record index that `position` denotes in shard `shard`.
    ///
    /// A sequence number must be one this shard could have handed out (it encodes the shard,
    /// and lies between the shard's start and its end or the newest number of the stream);
    /// otherwise the answer is `InvalidArgumentException`, as on AWS. AT_TIMESTAMP finds the
    /// first record that arrived at or after the time; a time after `now` is
    /// `InvalidArgumentException`, as on AWS and kinesis-mock.
    pub(super) fn position(
        &self,
        shard: usize,
        position: &ShardIteratorPosition,
        now: SystemTime,
    ) -> Result<usize, ApiError> {
        let s = &self.shards[shard];
        let records = &s.records;
        Ok(match position {
            ShardIteratorPosition::TrimHorizon => 0,
            ShardIteratorPosition::Latest => records.len(),
            ShardIteratorPosition::AtSequenceNumber(seq) => {
                let counter = self.counter_in_shard(shard, seq)?;
                records.partition_point(|r| r.counter < counter)
            }
            ShardIteratorPosition::AfterSequenceNumber(seq) => {
                let counter = self.counter_in_shard(shard, seq)?;
                records.partition_point(|r| r.counter <= counter)
            }
            ShardIteratorPosition::AtTimestamp(at) if *at > now => {
                let millis = |t: &SystemTime| {
                    t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis()
                };
                return Err(invalid_argument(format!(
                    "The timestampInMillis parameter cannot be greater than the \
                     currentTimestampInMillis. timestampInMillis: {}, currentTimestampInMillis: {}",
                    millis(at),
                    millis(&now)
                )));
            }
            ShardIteratorPosition::AtTimestamp(at) => records.partition_point(|r| r.arrival < *at),
        })
    }

    fn counter_in_shard(&self, shard: usize, seq: &SequenceNumber) -> Result<u64, ApiError> {
        let s = &self.shards[shard];
        let last = s.ending.unwrap_or(self.last_counter);
        match decode_sequence_number(seq) {
            Some((counter, index)) if index == shard && (s.starting..=last).contains(&counter) => {
                Ok(counter)
            }
            Some((_, index)) if index != shard && index < self.shards.len() => {
                Err(invalid_argument(format!(
                    "Invalid StartingSequenceNumber. It encodes {}, while it was used in a call \
                     to a shard with {}",
                    self.shards[index].id, s.id
                )))
            }
            _ => Err(invalid_argument(format!(
                "StartingSequenceNumber {seq} used in GetShardIterator on shard {} in stream {} \
                 is invalid because it did not come from this stream.",
                s.id, self.name
            ))),
        }
    }

    /// Reads at most `limit` records and `max_bytes` bytes (at least one record if any) from
    /// `from` in shard `shard`.
    pub(super) fn read(
        &self,
        shard: usize,
        from: usize,
        limit: usize,
        max_bytes: usize,
        now: SystemTime,
    ) -> Batch {
        let s = &self.shards[shard];
        let from = from.min(s.records.len());
        let mut bytes = 0;
        let mut next = from;
        for stored in s.records[from..].iter().take(limit) {
            bytes += stored.size();
            if bytes > max_bytes && next > from {
                break;
            }
            next += 1;
        }
        let records = s.records[from..next].iter().map(|r| r.record.clone()).collect();
        // Behind by the age of the oldest record not yet read; caught up is zero.
        let millis_behind = s
            .records
            .get(next)
            .map_or(0, |oldest| now.duration_since(oldest.arrival).unwrap_or_default().as_millis());
        Batch {
            records,
            next,
            shard_ended: !s.is_open() && next == s.records.len(),
            millis_behind: u64::try_from(millis_behind).unwrap_or(u64::MAX),
        }
    }

    /// Checks a SplitShard request against the current shards.
    pub(super) fn check_split(&self, shard: usize, at: HashKey) -> Result<(), ApiError> {
        let s = &self.shards[shard];
        self.check_open(shard)?;
        // The new starting hash key must leave both children non-empty (Kinesis API reference,
        // SplitShard: NewStartingHashKey).
        if at <= s.range.start() || at > s.range.end() {
            return Err(invalid_argument(format!(
                "NewStartingHashKey {at} used in SplitShard() on shard {} in stream {} is not \
                 within the shard's range {}..={} (it must be greater than the start and at most \
                 the end).",
                s.id,
                self.name,
                s.range.start(),
                s.range.end()
            )));
        }
        Ok(())
    }

    /// Checks a MergeShards request against the current shards.
    pub(super) fn check_merge(&self, shard: usize, adjacent: usize) -> Result<(), ApiError> {
        self.check_open(shard)?;
        self.check_open(adjacent)?;
        let (a, b) = (&self.shards[shard], &self.shards[adjacent]);
        let touching = |x: &ShardState, y: &ShardState| {
            x.range.end().0.checked_add(1) == Some(y.range.start().0)
        };
        if shard == adjacent || !(touching(a, b) || touching(b, a)) {
            return Err(invalid_argument(format!(
                "Shards {} and {} in stream {} are not adjacent: their hash key ranges must be \
                 contiguous.",
                a.id, b.id, self.name
            )));
        }
        Ok(())
    }

    fn check_open(&self, shard: usize) -> Result<(), ApiError> {
        let s = &self.shards[shard];
        if s.is_open() {
            Ok(())
        } else {
            Err(invalid_argument(format!(
                "Shard {} in stream {} has already been merged or split, and thus is not \
                 eligible for merging or splitting.",
                s.id, self.name
            )))
        }
    }

    /// Starts `change`: the stream is `UPDATING` until `until`, then the change takes effect.
    pub(super) fn begin_update(&mut self, change: Reshard, until: Instant, now: Instant) {
        self.lifecycle = Lifecycle::Updating { until, change };
        self.settle(now);
    }

    fn apply(&mut self, change: Reshard) {
        match change {
            Reshard::Split { shard, at } => {
                self.split(shard, at);
            }
            Reshard::Merge { shard, adjacent } => {
                self.merge(shard, adjacent);
            }
            Reshard::Uniform { target } => self.scale_uniformly(target),
        }
    }

    fn split(&mut self, shard: usize, at: HashKey) -> (usize, usize) {
        let range = self.shards[shard].range;
        self.close(shard);
        let low = HashKeyRange::new(range.start(), HashKey(at.0 - 1)).expect("checked split");
        let high = HashKeyRange::new(at, range.end()).expect("checked split");
        let a = self.add_shard(low, Some(shard), None);
        let b = self.add_shard(high, Some(shard), None);
        self.shards[shard].children = vec![a, b];
        (a, b)
    }

    fn merge(&mut self, shard: usize, adjacent: usize) -> usize {
        let (a, b) = (self.shards[shard].range, self.shards[adjacent].range);
        let range = HashKeyRange::new(a.start().min(b.start()), a.end().max(b.end()))
            .expect("merged ranges are ordered");
        self.close(shard);
        self.close(adjacent);
        let child = self.add_shard(range, Some(shard), Some(adjacent));
        self.shards[shard].children = vec![child];
        self.shards[adjacent].children = vec![child];
        child
    }

    /// UpdateShardCount with UNIFORM_SCALING, done as AWS does it: by splits and merges, so
    /// every new shard's lineage is a real split or merge that a consumer can follow.
    ///
    /// First every open shard is split at each target boundary inside it, so that every open
    /// shard lies within one target range; then the pieces of each target range are merged
    /// left to right. The result is exactly the `target` even ranges of a new stream.
    /// Intermediate shards are created and closed at once, with no records, as the temporary
    /// shards of the real operation are.
    fn scale_uniformly(&mut self, target: u32) {
        let targets = even_ranges(target);
        let boundaries: Vec<HashKey> = targets.iter().skip(1).map(|r| r.start()).collect();
        let open: Vec<usize> =
            (0..self.shards.len()).filter(|&i| self.shards[i].is_open()).collect();
        for shard in open {
            let mut current = shard;
            for &at in &boundaries {
                let range = self.shards[current].range;
                if range.start() < at && at <= range.end() {
                    current = self.split(current, at).1;
                }
            }
        }
        for target_range in targets {
            let mut pieces: Vec<usize> = (0..self.shards.len())
                .filter(|&i| {
                    let s = &self.shards[i];
                    s.is_open() && target_range.contains(s.range.start())
                })
                .collect();
            pieces.sort_by_key(|&i| self.shards[i].range.start());
            let mut merged = pieces[0];
            for &piece in &pieces[1..] {
                merged = self.merge(merged, piece);
            }
        }
    }

    /// Records, sequence numbers and ranges must hold the module's invariants; for tests.
    #[cfg(test)]
    fn assert_invariants(&self) {
        let mut open: Vec<HashKeyRange> =
            self.shards.iter().filter(|s| s.is_open()).map(|s| s.range).collect();
        open.sort_by_key(|r| r.start());
        assert_eq!(open.first().map(|r| r.start()), Some(HashKey::MIN));
        assert_eq!(open.last().map(|r| r.end()), Some(HashKey::MAX));
        for pair in open.windows(2) {
            assert_eq!(pair[0].end().0 + 1, pair[1].start().0, "open ranges are contiguous");
        }
    }
}

/// How long new streams keep records; the fake never trims (Kinesis developer guide, "Changing
/// the data retention period": 24 hours by default).
pub(super) const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(shards: u32) -> StreamState {
        let name = StreamName::new("s").unwrap();
        let mut s = StreamState::new(name, "arn".into(), 1, shards, Instant::now());
        s.settle(Instant::now());
        s
    }

    #[test]
    fn even_ranges_match_aws_boundaries() {
        let four = even_ranges(4);
        assert_eq!(four[0].end().0, 85070591730234615865843651857942052863);
        assert_eq!(four[1].start().0, 1 << 126);
        assert_eq!(four[3].end(), HashKey::MAX);
        assert_eq!(even_ranges(1), vec![HashKeyRange::FULL]);
        for n in [1, 2, 3, 5, 7, 10, 1000] {
            let ranges = even_ranges(n);
            assert_eq!(ranges.len(), n as usize);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end().0 + 1, pair[1].start().0);
            }
        }
    }

    #[test]
    fn sequence_numbers_have_56_digits_and_decode() {
        let seq = sequence_number(12345, 7);
        assert_eq!(seq.as_str().len(), 56);
        assert_eq!(decode_sequence_number(&seq), Some((12345, 7)));
        assert!(sequence_number(2, 0) > sequence_number(1, 9));
        assert_eq!(decode_sequence_number(&SequenceNumber::new("123").unwrap()), None);
    }

    #[test]
    fn uniform_scaling_ends_with_even_ranges_and_followable_lineage() {
        for (from, to) in [(1, 2), (2, 3), (3, 2), (5, 3), (4, 8), (8, 4), (3, 5), (6, 6)] {
            let mut s = stream(from);
            s.scale_uniformly(to);
            s.assert_invariants();
            let mut open: Vec<HashKeyRange> =
                s.shards.iter().filter(|x| x.is_open()).map(|x| x.range).collect();
            open.sort_by_key(|r| r.start());
            assert_eq!(open, even_ranges(to), "{from} -> {to}");
            for (i, shard) in s.shards.iter().enumerate() {
                let parents: Vec<usize> =
                    shard.parent.iter().chain(shard.adjacent_parent.iter()).copied().collect();
                let covered: Vec<HashKeyRange> =
                    parents.iter().map(|&p| s.shards[p].range).collect();
                // A child covers exactly the union of its parents' ranges, so reading the
                // parents to their end before the child keeps per-key order.
                if !covered.is_empty() {
                    let start = covered.iter().map(|r| r.start()).min().unwrap();
                    let end = covered.iter().map(|r| r.end()).max().unwrap();
                    let child = &shard.range;
                    if parents.len() == 2 {
                        assert_eq!((child.start(), child.end()), (start, end), "merge child {i}");
                    } else {
                        assert!(start <= child.start() && child.end() <= end, "split child {i}");
                    }
                }
            }
        }
    }
}
