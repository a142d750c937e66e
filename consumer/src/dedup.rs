//! Dropping records already seen, for applications that need effectively-once processing.
//!
//! Kinesis delivers at least once, and duplicates come from two places (Kinesis Data Streams
//! Developer Guide, "Handle duplicate records"):
//!
//! - **Consumer re-reads.** A restart, a lease moving to another worker, or a retried batch
//!   makes the consumer read again records past the last checkpoint. A re-read record is the
//!   same Kinesis record: same shard, sequence number and sub-sequence number. Key by
//!   [`RecordKey`] to catch these.
//! - **Producer retries.** A producer that timed out and wrote again puts the same user record
//!   into the stream twice, with two different sequence numbers. Nothing Kinesis assigns tells
//!   the copies apart; only an id the producer put inside the data can. Key by that id (any
//!   `Eq + Hash + Clone` type) to catch these, and re-reads along with them.
//!
//! A [`Deduplicator`] owns a window of the last `capacity` distinct keys it was shown, evicted
//! first in, first out, and answers whether a key is in it. Invariants: the window never holds
//! more than `capacity` keys, each key at most once, and every call costs O(1) amortised.
//!
//! What it cannot do:
//!
//! - **The window is bounded.** A duplicate that arrives after `capacity` other distinct keys
//!   passes as new. Size the window to cover the duplicates you expect: a re-read repeats at
//!   most the records since the last checkpoint, so a capacity of a few checkpoint intervals'
//!   worth of records per shard covers re-reads.
//! - **State is per process.** The window lives in memory and is lost on restart, which is
//!   exactly when re-reads happen. For deduplication across restarts, write the ids with your
//!   output (a unique key in the database, an idempotent write) and treat this as a cheap
//!   first filter.
//! - **[`RecordKey`] does not catch producer retries**, as above.
//!
//! The methods whose result is the point of the call ([`Deduplicator::first_seen`],
//! [`Deduplicator::retain_unseen`]) are `#[must_use]`: calling them and dropping the answer
//! records the key without acting on whether it was a duplicate.
//!
//! ```
//! use kinesis_consumer::dedup::Deduplicator;
//!
//! // Keyed by an id the producer wrote into each record.
//! let mut dedup = Deduplicator::<String>::new(10_000);
//! let batch = vec![("order-1", "paid"), ("order-2", "shipped"), ("order-1", "paid")];
//! let fresh = dedup.retain_unseen(batch, |(id, _)| id.to_string());
//! assert_eq!(fresh, [("order-1", "paid"), ("order-2", "shipped")]);
//! assert_eq!(dedup.duplicates(), 1);
//! ```

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

use kinesis_common::aggregation::KinesisClientRecord;
use kinesis_common::{SequenceNumber, ShardId};

/// Remembers the last `capacity` distinct keys and tells first sightings from duplicates.
///
/// Keys leave the window in the order they first entered it. Seeing a duplicate does not move
/// it to the back: the window stays "the last `capacity` distinct records", so how long a key
/// is remembered depends only on how many new keys follow it, not on how often it is repeated.
/// (Refreshing would let a key that keeps being redelivered stay forever while pushing out
/// keys whose duplicates have yet to arrive.)
///
/// By default keys are [`RecordKey`]s, which catch consumer re-reads; see the
/// [module docs](self) for what each kind of key catches.
///
/// ```
/// use kinesis_consumer::dedup::Deduplicator;
///
/// let mut dedup = Deduplicator::new(2);
/// assert!(dedup.first_seen(1));
/// assert!(dedup.first_seen(2));
/// assert!(!dedup.first_seen(1)); // a duplicate inside the window
/// assert!(dedup.first_seen(3)); // evicts 1, the oldest
/// assert!(dedup.first_seen(1)); // older than the window: passes again
/// assert_eq!(dedup.len(), 2);
/// assert_eq!(dedup.duplicates(), 1);
/// ```
#[derive(Debug)]
pub struct Deduplicator<K = RecordKey> {
    /// The keys in the window, oldest first.
    order: VecDeque<K>,
    /// The same keys, for O(1) lookup. Always holds exactly the keys of `order`.
    seen: HashSet<K>,
    /// The most keys the window holds; at least 1.
    capacity: usize,
    /// How many calls to `first_seen` answered `false`.
    duplicates: u64,
}

impl<K: Eq + Hash + Clone> Deduplicator<K> {
    /// A deduplicator whose window holds the last `capacity` distinct keys.
    ///
    /// A `capacity` of 0 is treated as 1 (and [`capacity`](Self::capacity) reports 1): a
    /// window that holds nothing would pass every duplicate, which no caller wants, and a
    /// configured size should not need an error path. Memory grows with use up to
    /// `capacity` keys; nothing is reserved up front, so a generous capacity costs nothing
    /// until it is filled.
    ///
    /// ```
    /// use kinesis_consumer::dedup::Deduplicator;
    ///
    /// let dedup = Deduplicator::<u64>::new(0);
    /// assert_eq!(dedup.capacity(), 1);
    /// ```
    pub fn new(capacity: usize) -> Self {
        Self {
            order: VecDeque::new(),
            seen: HashSet::new(),
            capacity: capacity.max(1),
            duplicates: 0,
        }
    }

    /// Whether `key` is new: `true` if it is not in the window, which then remembers it
    /// (evicting the oldest key if the window is full); `false` if it is a duplicate, which
    /// leaves the window unchanged and is counted in [`duplicates`](Self::duplicates).
    ///
    /// ```
    /// use kinesis_consumer::dedup::Deduplicator;
    ///
    /// let mut dedup = Deduplicator::new(100);
    /// assert!(dedup.first_seen("a"));
    /// assert!(!dedup.first_seen("a"));
    /// ```
    #[must_use = "a `false` answer means the record is a duplicate and should be skipped"]
    pub fn first_seen(&mut self, key: K) -> bool {
        if self.seen.contains(&key) {
            self.duplicates += 1;
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(key.clone());
        self.order.push_back(key);
        true
    }

    /// Whether `key` is in the window, without remembering it or counting a duplicate.
    pub fn contains(&self, key: &K) -> bool {
        self.seen.contains(key)
    }

    /// How many keys the window holds now; never more than [`capacity`](Self::capacity).
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the window holds no keys.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The most keys the window holds (at least 1).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many calls to [`first_seen`](Self::first_seen) (directly or through
    /// [`retain_unseen`](Self::retain_unseen)) found a duplicate, over this deduplicator's
    /// life. [`clear`](Self::clear) does not reset it, so it can feed a monotonic counter.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Keeps the items whose key is new, in their order, and remembers their keys: a
    /// duplicate of an earlier item in the same batch is dropped too. Each item's key is
    /// computed once, in order, exactly as if [`first_seen`](Self::first_seen) were called
    /// on each; filtering happens in place, without a new allocation.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use kinesis_common::aggregation::KinesisClientRecord;
    /// use kinesis_common::{SequenceNumber, ShardId};
    /// use kinesis_consumer::dedup::{Deduplicator, RecordKey};
    ///
    /// let record = |sequence: &str| KinesisClientRecord {
    ///     sequence_number: SequenceNumber::new(sequence).unwrap(),
    ///     sub_sequence_number: None,
    ///     partition_key: "pk".into(),
    ///     explicit_hash_key: None,
    ///     data: Bytes::from_static(b"data"),
    ///     approximate_arrival: None,
    /// };
    /// let shard = ShardId::new("shardId-000000000000").unwrap();
    /// let mut dedup = Deduplicator::new(10_000);
    ///
    /// let first = dedup.retain_unseen(vec![record("1"), record("2")], |r| {
    ///     RecordKey::new(shard.clone(), r)
    /// });
    /// assert_eq!(first.len(), 2);
    ///
    /// // After a lease move the batch is read again, with one new record.
    /// let again = dedup.retain_unseen(vec![record("1"), record("2"), record("3")], |r| {
    ///     RecordKey::new(shard.clone(), r)
    /// });
    /// assert_eq!(again, [record("3")]);
    /// ```
    #[must_use = "the returned items are the ones to process; the rest were duplicates"]
    pub fn retain_unseen<T>(&mut self, mut items: Vec<T>, mut key: impl FnMut(&T) -> K) -> Vec<T> {
        // `Vec::retain` visits each element exactly once, in order, which the key closure
        // and the in-batch duplicate rule rely on.
        items.retain(|item| self.first_seen(key(item)));
        items
    }

    /// Forgets every key, keeping the capacity and the [`duplicates`](Self::duplicates)
    /// count.
    pub fn clear(&mut self) {
        self.order.clear();
        self.seen.clear();
    }
}

/// The position of a user record: (shard, sequence, sub-sequence). Two deliveries with equal
/// keys are the same Kinesis record read twice.
///
/// The shard is part of the key because a sequence number is unique only within its shard
/// (Kinesis API reference, `Record.SequenceNumber`: "the unique identifier of the record
/// within its shard"). The sub-sequence number tells apart the user records of one KPL
/// aggregate, which share the Kinesis record's sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RecordKey {
    /// The shard the record was read from.
    pub shard_id: ShardId,
    /// The Kinesis record's sequence number.
    pub sequence_number: SequenceNumber,
    /// The user record's index inside its aggregate, or `None` for a record that is not an
    /// aggregate.
    pub sub_sequence_number: Option<u64>,
}

impl RecordKey {
    /// The key of `record`, read from `shard_id`. Cheap: the ids are shared, not copied.
    pub fn new(shard_id: ShardId, record: &KinesisClientRecord) -> Self {
        Self {
            shard_id,
            sequence_number: record.sequence_number.clone(),
            sub_sequence_number: record.sub_sequence_number,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;

    fn record(sequence: &str, sub_sequence: Option<u64>) -> KinesisClientRecord {
        KinesisClientRecord {
            sequence_number: SequenceNumber::new(sequence).unwrap(),
            sub_sequence_number: sub_sequence,
            partition_key: "pk".into(),
            explicit_hash_key: None,
            data: Bytes::from_static(b"data"),
            approximate_arrival: None,
        }
    }

    fn shard(n: u32) -> ShardId {
        ShardId::new(format!("shardId-{n:012}")).unwrap()
    }

    #[test]
    fn a_duplicate_inside_the_window_is_dropped() {
        let mut dedup = Deduplicator::new(3);
        assert!(dedup.first_seen(1));
        assert!(dedup.first_seen(2));
        assert!(!dedup.first_seen(1));
        assert!(!dedup.first_seen(2));
        assert!(dedup.contains(&1));
    }

    #[test]
    fn a_key_older_than_the_window_passes_again() {
        let mut dedup = Deduplicator::new(2);
        assert!(dedup.first_seen(1));
        assert!(dedup.first_seen(2));
        assert!(dedup.first_seen(3));
        assert!(!dedup.contains(&1));
        assert!(dedup.first_seen(1));
    }

    #[test]
    fn a_duplicate_does_not_refresh_its_place_in_the_window() {
        let mut dedup = Deduplicator::new(2);
        assert!(dedup.first_seen(1));
        assert!(dedup.first_seen(2));
        assert!(!dedup.first_seen(1));
        // 1 is still the oldest, so 3 evicts it rather than 2.
        assert!(dedup.first_seen(3));
        assert!(!dedup.contains(&1));
        assert!(dedup.contains(&2));
    }

    #[test]
    fn the_window_never_holds_more_than_its_capacity() {
        let mut dedup = Deduplicator::new(5);
        for key in 0..100 {
            assert!(dedup.first_seen(key));
            assert!(dedup.len() <= 5);
        }
        assert_eq!(dedup.len(), 5);
        assert!((95..100).all(|key| dedup.contains(&key)));
        assert!(!dedup.contains(&94));
    }

    #[test]
    fn a_capacity_of_zero_is_treated_as_one() {
        let mut dedup = Deduplicator::new(0);
        assert_eq!(dedup.capacity(), 1);
        assert!(dedup.first_seen('a'));
        assert!(!dedup.first_seen('a'));
        assert!(dedup.first_seen('b'));
        assert_eq!(dedup.len(), 1);
    }

    #[test]
    fn retain_unseen_keeps_order_and_drops_duplicates_within_the_batch() {
        let mut dedup = Deduplicator::new(10);
        assert!(dedup.first_seen("b"));
        let kept = dedup.retain_unseen(vec!["c", "a", "b", "c", "d", "a"], |s| *s);
        assert_eq!(kept, ["c", "a", "d"]);
        assert_eq!(dedup.duplicates(), 3);
        assert_eq!(dedup.len(), 4);
    }

    #[test]
    fn duplicates_counts_every_false_answer_and_survives_clear() {
        let mut dedup = Deduplicator::new(10);
        assert_eq!(dedup.duplicates(), 0);
        for key in [1, 1, 2, 1, 2, 3] {
            let _ = dedup.first_seen(key);
        }
        assert_eq!(dedup.duplicates(), 3);
        // `contains` is a look, not a sighting.
        assert!(dedup.contains(&1));
        assert_eq!(dedup.duplicates(), 3);

        dedup.clear();
        assert!(dedup.is_empty());
        assert_eq!(dedup.capacity(), 10);
        assert_eq!(dedup.duplicates(), 3);
        assert!(dedup.first_seen(1));
    }

    #[test]
    fn record_keys_tell_shards_and_sub_sequences_apart() {
        let mut dedup = Deduplicator::new(10);
        let aggregated =
            record("49590338271490256608559692538361571095921575989136588898", Some(0));
        assert!(dedup.first_seen(RecordKey::new(shard(0), &aggregated)));
        // The next user record of the same aggregate.
        let sibling = KinesisClientRecord { sub_sequence_number: Some(1), ..aggregated.clone() };
        assert!(dedup.first_seen(RecordKey::new(shard(0), &sibling)));
        // The same sequence number in another shard is another record.
        assert!(dedup.first_seen(RecordKey::new(shard(1), &aggregated)));
        // A re-read of the first: same shard, sequence and sub-sequence.
        assert!(!dedup.first_seen(RecordKey::new(shard(0), &aggregated.clone())));
        // A plain record is not the aggregate's user record 0.
        let plain = KinesisClientRecord { sub_sequence_number: None, ..aggregated };
        assert!(dedup.first_seen(RecordKey::new(shard(0), &plain)));
    }

    /// The obvious implementation: the last `capacity` distinct keys, oldest first, searched
    /// linearly.
    struct Model {
        window: Vec<u8>,
        capacity: usize,
    }

    impl Model {
        fn first_seen(&mut self, key: u8) -> bool {
            if self.window.contains(&key) {
                return false;
            }
            self.window.push(key);
            if self.window.len() > self.capacity {
                self.window.remove(0);
            }
            true
        }
    }

    proptest! {
        // Keys from a small alphabet and small capacities, so that duplicates inside the
        // window, evictions and re-admissions of evicted keys all happen often.
        #[test]
        fn first_seen_agrees_with_a_naive_fifo_window(
            capacity in 1..8usize,
            keys in prop::collection::vec(0..12u8, 0..200),
        ) {
            let mut dedup = Deduplicator::new(capacity);
            let mut model = Model { window: Vec::new(), capacity };
            let mut duplicates = 0;
            for (i, &key) in keys.iter().enumerate() {
                let expected = model.first_seen(key);
                duplicates += u64::from(!expected);
                prop_assert_eq!(dedup.first_seen(key), expected, "call {} with key {}", i, key);
                prop_assert!(dedup.len() <= capacity);
                prop_assert_eq!(dedup.len(), model.window.len());
                for probe in 0..12u8 {
                    prop_assert_eq!(dedup.contains(&probe), model.window.contains(&probe));
                }
            }
            prop_assert_eq!(dedup.duplicates(), duplicates);
        }

        #[test]
        fn retain_unseen_is_first_seen_on_each_item_in_order(
            capacity in 1..8usize,
            batches in prop::collection::vec(prop::collection::vec(0..12u8, 0..20), 0..10),
        ) {
            let mut dedup = Deduplicator::new(capacity);
            let mut model = Model { window: Vec::new(), capacity };
            for batch in batches {
                let expected: Vec<u8> =
                    batch.iter().copied().filter(|&key| model.first_seen(key)).collect();
                prop_assert_eq!(dedup.retain_unseen(batch, |&key| key), expected);
                prop_assert!(dedup.len() <= capacity);
            }
        }
    }
}
