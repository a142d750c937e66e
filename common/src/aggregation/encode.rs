//! The encoder: [`AggregateBuilder`] packs user records into one KPL aggregated record.
//!
//! Invariant: `protobuf_len` is at every step the exact length of the `AggregatedRecord`
//! protobuf that [`AggregateBuilder::finish`] writes, so sizes are answered without encoding.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

use bytes::Bytes;
use md5::{Digest, Md5};

use super::wire::{
    TAG_DATA, TAG_EXPLICIT_HASH_KEY_INDEX, TAG_EXPLICIT_HASH_KEY_TABLE, TAG_PARTITION_KEY_INDEX,
    TAG_PARTITION_KEY_TABLE, TAG_RECORDS, len_field_len, put_varint, varint_len,
};
use super::{FIXED_OVERHEAD, MAGIC, UserRecord};
use crate::{HashKey, PartitionKey};

/// A user record that [`AggregateBuilder::try_push`] did not take because the aggregate would
/// have grown past the limit. The record is handed back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user record does not fit: aggregate would be {encoded_len} bytes, limit {max_bytes}")]
pub struct Rejected {
    /// The record that was not added.
    pub record: UserRecord,
    /// The encoded length the aggregate would have had with the record.
    pub encoded_len: usize,
    /// The limit that was asked for.
    pub max_bytes: usize,
}

/// Builds one KPL aggregated record (the KPL's `KinesisRecord` container of `UserRecord`s).
///
/// Holds the user records in the order they were pushed (that order gives their
/// sub-sequence numbers `0..n`), the deduplicated partition key and explicit hash key tables,
/// and the exact encoded length. [`finish`](Self::finish) always writes the aggregated form,
/// even for one record: whether to send a lone record plain, as the KPL does, is the
/// producer's choice.
///
/// ```
/// use kinesis_common::PartitionKey;
/// use kinesis_common::aggregation::{AggregateBuilder, UserRecord};
///
/// let mut builder = AggregateBuilder::new();
/// let record = UserRecord::new(PartitionKey::new("user-17").unwrap(), "hello");
/// let size = builder.encoded_len_with(&record);
/// builder.try_push(record, 51_200).unwrap();
/// assert_eq!(builder.finish().len(), size);
/// ```
#[derive(Debug, Clone, Default)]
pub struct AggregateBuilder {
    records: Vec<UserRecord>,
    /// Per record: its index in the partition key table and in the explicit hash key table.
    indexes: Vec<(u64, Option<u64>)>,
    partition_keys: PartitionKeyTable,
    explicit_hash_key_table: Vec<HashKey>,
    explicit_hash_key_lookup: HashMap<HashKey, u64>,
    /// Exact length of the `AggregatedRecord` protobuf for the current content.
    protobuf_len: usize,
}

/// Where a record would go and how much it would add; computed once, used by both the size
/// question and the push.
struct Placement {
    partition_key_hash: u64,
    partition_key_index: u64,
    new_partition_key: bool,
    explicit_hash_key_index: Option<u64>,
    new_explicit_hash_key: bool,
    added_len: usize,
}

impl AggregateBuilder {
    /// An empty aggregate.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many user records the aggregate holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the aggregate holds no user record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The exact length of what [`finish`](Self::finish) would return now: magic, protobuf,
    /// digest. An empty aggregate is [`FIXED_OVERHEAD`] bytes.
    pub fn encoded_len(&self) -> usize {
        FIXED_OVERHEAD + self.protobuf_len
    }

    /// The exact length [`finish`](Self::finish) would return after pushing `record`, without
    /// changing anything. Costs a table lookup (hashing the partition key), not an encoding.
    pub fn encoded_len_with(&self, record: &UserRecord) -> usize {
        self.encoded_len() + self.place(record).added_len
    }

    /// Adds `record` at the end.
    pub fn push(&mut self, record: UserRecord) {
        let placement = self.place(&record);
        self.commit(placement, record);
    }

    /// Adds `record` at the end if the aggregate then stays within `max_bytes` encoded bytes;
    /// otherwise hands it back. An empty aggregate rejects a record too large on its own,
    /// which tells the producer that the record must travel alone (or not at all).
    pub fn try_push(&mut self, record: UserRecord, max_bytes: usize) -> Result<(), Rejected> {
        let placement = self.place(&record);
        let encoded_len = self.encoded_len() + placement.added_len;
        if encoded_len > max_bytes {
            return Err(Rejected { record, encoded_len, max_bytes });
        }
        self.commit(placement, record);
        Ok(())
    }

    /// The user records, in push order (sub-sequence number = position).
    pub fn records(&self) -> &[UserRecord] {
        &self.records
    }

    /// Takes the user records out, in push order, leaving nothing behind.
    pub fn into_records(self) -> Vec<UserRecord> {
        self.records
    }

    /// The hash key of the first user record: the KPL sends an aggregate with this as the
    /// Kinesis record's explicit hash key, so that it lands on the first record's shard
    /// (KPL `kinesis_record.cc`).
    pub fn first_hash_key(&self) -> Option<HashKey> {
        self.records.first().map(UserRecord::hash_key)
    }

    /// Empties the aggregate, keeping its allocations for the next one.
    pub fn clear(&mut self) {
        self.records.clear();
        self.indexes.clear();
        self.partition_keys.clear();
        self.explicit_hash_key_table.clear();
        self.explicit_hash_key_lookup.clear();
        self.protobuf_len = 0;
    }

    /// Encodes the aggregate: magic, `AggregatedRecord` protobuf, MD5 of the protobuf.
    ///
    /// One allocation of exactly [`encoded_len`](Self::encoded_len) bytes; each user record's
    /// data is copied once; the digest is computed over the protobuf in place.
    pub fn finish(&self) -> Bytes {
        let total = self.encoded_len();
        let mut buf = Vec::with_capacity(total);
        buf.extend_from_slice(&MAGIC);

        for &first in &self.partition_keys.first_use {
            let key = self.records[first].partition_key.as_bytes();
            buf.push(TAG_PARTITION_KEY_TABLE);
            put_varint(&mut buf, key.len() as u64);
            buf.extend_from_slice(key);
        }
        let mut digits = [0u8; 39];
        for hash_key in &self.explicit_hash_key_table {
            let text = decimal(hash_key.0, &mut digits);
            buf.push(TAG_EXPLICIT_HASH_KEY_TABLE);
            put_varint(&mut buf, text.len() as u64);
            buf.extend_from_slice(text);
        }
        for (record, &(pk_index, ehk_index)) in self.records.iter().zip(&self.indexes) {
            // Everything before the data in one small stack buffer and one copy: cheaper
            // than growing `buf` a byte at a time when records are small.
            let mut head = RecordHead::default();
            head.push(TAG_RECORDS);
            head.varint(record_body_len(pk_index, ehk_index, record.data.len()) as u64);
            head.push(TAG_PARTITION_KEY_INDEX);
            head.varint(pk_index);
            if let Some(ehk_index) = ehk_index {
                head.push(TAG_EXPLICIT_HASH_KEY_INDEX);
                head.varint(ehk_index);
            }
            head.push(TAG_DATA);
            head.varint(record.data.len() as u64);
            buf.extend_from_slice(head.as_slice());
            buf.extend_from_slice(&record.data);
        }

        let digest = Md5::digest(&buf[MAGIC.len()..]);
        buf.extend_from_slice(&digest);
        debug_assert_eq!(buf.len(), total, "size accounting out of step with the encoding");
        Bytes::from(buf)
    }

    fn place(&self, record: &UserRecord) -> Placement {
        let mut added_len = 0;
        let (partition_key_hash, found) =
            self.partition_keys.find(&self.records, &self.indexes, &record.partition_key);
        let (partition_key_index, new_partition_key) = match found {
            Some(index) => (index, false),
            None => {
                added_len += len_field_len(record.partition_key.len_bytes());
                (self.partition_keys.len() as u64, true)
            }
        };
        let (explicit_hash_key_index, new_explicit_hash_key) = match record.explicit_hash_key {
            None => (None, false),
            Some(hash_key) => match self.explicit_hash_key_lookup.get(&hash_key) {
                Some(&index) => (Some(index), false),
                None => {
                    added_len += len_field_len(decimal_len(hash_key.0));
                    (Some(self.explicit_hash_key_table.len() as u64), true)
                }
            },
        };
        added_len += len_field_len(record_body_len(
            partition_key_index,
            explicit_hash_key_index,
            record.data.len(),
        ));
        Placement {
            partition_key_hash,
            partition_key_index,
            new_partition_key,
            explicit_hash_key_index,
            new_explicit_hash_key,
            added_len,
        }
    }

    fn commit(&mut self, placement: Placement, record: UserRecord) {
        if placement.new_partition_key {
            self.partition_keys.insert(
                placement.partition_key_hash,
                &record.partition_key,
                self.records.len(),
            );
        }
        if placement.new_explicit_hash_key
            && let (Some(hash_key), Some(index)) =
                (record.explicit_hash_key, placement.explicit_hash_key_index)
        {
            self.explicit_hash_key_table.push(hash_key);
            self.explicit_hash_key_lookup.insert(hash_key, index);
        }
        self.indexes.push((placement.partition_key_index, placement.explicit_hash_key_index));
        self.records.push(record);
        self.protobuf_len += placement.added_len;
    }
}

/// The partition key table: distinct keys in first-use order (the KPL's `KeySet`), found
/// with one hash per lookup and without storing a second copy of each key.
#[derive(Debug, Clone, Default)]
struct PartitionKeyTable {
    /// For each table entry, the position of the record that first used the key.
    first_use: Vec<usize>,
    /// Randomly keyed SipHash of the key → table index. Random keys mean nobody can choose
    /// partition keys that collide on purpose.
    by_hash: HashMap<u64, u64, BuildHasherDefault<PassThrough>>,
    /// Keys whose hash equals that of an earlier, different key: kept correct, never hot.
    collisions: HashMap<PartitionKey, u64>,
    hasher: RandomState,
}

impl PartitionKeyTable {
    fn len(&self) -> usize {
        self.first_use.len()
    }

    /// The key's hash and, if it is in the table, its index. `indexes` are the records'
    /// table indexes, parallel to `records`.
    fn find(
        &self,
        records: &[UserRecord],
        indexes: &[(u64, Option<u64>)],
        key: &PartitionKey,
    ) -> (u64, Option<u64>) {
        // Runs of one key are common (aggregation per key): skip the hash for them. The hash
        // is only used to insert a new key, which this never is.
        if let (Some(last), Some(&(index, _))) = (records.last(), indexes.last())
            && last.partition_key == *key
        {
            return (0, Some(index));
        }
        let hash = self.hasher.hash_one(key.as_str());
        let index = match self.by_hash.get(&hash) {
            Some(&index) if records[self.first_use[index as usize]].partition_key == *key => {
                Some(index)
            }
            Some(_) => self.collisions.get(key).copied(),
            None => None,
        };
        (hash, index)
    }

    /// Adds a key that [`find`](Self::find) did not find, first used by record `position`.
    fn insert(&mut self, hash: u64, key: &PartitionKey, position: usize) {
        let index = self.first_use.len() as u64;
        self.first_use.push(position);
        match self.by_hash.entry(hash) {
            Entry::Vacant(slot) => {
                slot.insert(index);
            }
            Entry::Occupied(_) => {
                self.collisions.insert(key.clone(), index);
            }
        }
    }

    fn clear(&mut self) {
        self.first_use.clear();
        self.by_hash.clear();
        self.collisions.clear();
    }
}

/// A hasher for keys that already are well-mixed 64-bit hashes.
#[derive(Debug, Clone, Copy, Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in rather than lose it.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// The bytes of a `records` entry before its data: four tags and four varints at most.
struct RecordHead {
    bytes: [u8; 4 * (1 + 10)],
    len: usize,
}

impl Default for RecordHead {
    fn default() -> Self {
        Self { bytes: [0; 44], len: 0 }
    }
}

impl RecordHead {
    #[inline]
    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    #[inline]
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.push(value as u8);
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Length of one `Record` message body: both required fields always written, the explicit
/// hash key index only when present.
fn record_body_len(pk_index: u64, ehk_index: Option<u64>, data_len: usize) -> usize {
    1 + varint_len(pk_index)
        + ehk_index.map_or(0, |index| 1 + varint_len(index))
        + len_field_len(data_len)
}

/// How many decimal digits `value` has.
fn decimal_len(value: u128) -> usize {
    value.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// Writes `value` in decimal into the end of `out` and returns the digits.
fn decimal(mut value: u128, out: &mut [u8; 39]) -> &[u8] {
    let mut at = out.len();
    loop {
        at -= 1;
        out[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    &out[at..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> PartitionKey {
        PartitionKey::new(text).unwrap()
    }

    #[test]
    fn decimal_writes_every_width() {
        let mut out = [0u8; 39];
        for value in [0u128, 9, 10, 12_345, u128::from(u64::MAX), u128::MAX] {
            assert_eq!(decimal(value, &mut out), value.to_string().as_bytes());
            assert_eq!(decimal_len(value), value.to_string().len());
        }
    }

    #[test]
    fn empty_aggregate_is_magic_and_digest_of_nothing() {
        let builder = AggregateBuilder::new();
        let bytes = builder.finish();
        assert_eq!(bytes.len(), FIXED_OVERHEAD);
        assert_eq!(&bytes[..4], &MAGIC);
        assert_eq!(&bytes[4..], Md5::digest(b"").as_slice());
        assert_eq!(builder.first_hash_key(), None);
    }

    #[test]
    fn required_fields_are_written_even_when_zero() {
        let mut builder = AggregateBuilder::new();
        builder.push(UserRecord::new(key("k"), Bytes::new()));
        let bytes = builder.finish();
        // table entry "k", then Record { partition_key_index: 0, data: "" }.
        assert_eq!(&bytes[4..bytes.len() - 16], &[0x0A, 1, b'k', 0x1A, 4, 0x08, 0, 0x1A, 0]);
    }

    #[test]
    fn tables_are_deduplicated_and_explicit_index_only_when_given() {
        let mut builder = AggregateBuilder::new();
        builder.push(UserRecord::new(key("a"), "1"));
        builder.push(UserRecord::new(key("b"), "2").with_explicit_hash_key(HashKey(7)));
        builder.push(UserRecord::new(key("a"), "3").with_explicit_hash_key(HashKey(7)));
        let bytes = builder.finish();
        let protobuf = &bytes[4..bytes.len() - 16];
        let expected: &[u8] = &[
            0x0A, 1, b'a', 0x0A, 1, b'b', 0x12, 1, b'7', //
            0x1A, 5, 0x08, 0, 0x1A, 1, b'1', //
            0x1A, 7, 0x08, 1, 0x10, 0, 0x1A, 1, b'2', //
            0x1A, 7, 0x08, 0, 0x10, 0, 0x1A, 1, b'3',
        ];
        assert_eq!(protobuf, expected);
        assert_eq!(bytes.len(), builder.encoded_len());
    }

    #[test]
    fn try_push_stops_at_the_limit_and_hands_the_record_back() {
        let mut builder = AggregateBuilder::new();
        let record = UserRecord::new(key("k"), vec![0u8; 100]);
        let one = builder.encoded_len_with(&record);
        builder.try_push(record.clone(), one).unwrap();
        let two = builder.encoded_len_with(&record);
        let rejected = builder.try_push(record.clone(), two - 1).unwrap_err();
        assert_eq!(rejected.record, record);
        assert_eq!(rejected.encoded_len, two);
        assert_eq!(builder.len(), 1);
        assert_eq!(builder.finish().len(), one);
    }

    #[test]
    fn a_record_too_big_alone_is_rejected_by_an_empty_aggregate() {
        let mut builder = AggregateBuilder::new();
        let record = UserRecord::new(key("k"), vec![0u8; 64]);
        assert!(builder.try_push(record, 64).is_err());
        assert!(builder.is_empty());
        assert_eq!(builder.encoded_len(), FIXED_OVERHEAD);
    }

    #[test]
    fn first_hash_key_is_explicit_or_md5_of_the_key() {
        let mut builder = AggregateBuilder::new();
        builder.push(UserRecord::new(key("a"), "x"));
        builder.push(UserRecord::new(key("b"), "y").with_explicit_hash_key(HashKey(1)));
        assert_eq!(builder.first_hash_key(), Some(HashKey::from_partition_key(&key("a"))));
        let mut builder = AggregateBuilder::new();
        builder.push(UserRecord::new(key("b"), "y").with_explicit_hash_key(HashKey(1)));
        assert_eq!(builder.first_hash_key(), Some(HashKey(1)));
    }

    #[test]
    fn clear_starts_a_fresh_aggregate() {
        let mut builder = AggregateBuilder::new();
        builder.push(UserRecord::new(key("a"), "x").with_explicit_hash_key(HashKey(3)));
        let first = builder.finish();
        builder.clear();
        assert_eq!(builder.encoded_len(), FIXED_OVERHEAD);
        builder.push(UserRecord::new(key("a"), "x").with_explicit_hash_key(HashKey(3)));
        assert_eq!(builder.finish(), first);
    }

    #[test]
    fn partition_keys_with_colliding_hashes_stay_distinct() {
        let records = vec![UserRecord::new(key("a"), "x"), UserRecord::new(key("z"), "y")];
        let mut table = PartitionKeyTable::default();
        // Pretend "a" (first used by record 0) hashes like "b".
        let hash_b = table.hasher.hash_one("b");
        table.insert(hash_b, &key("a"), 0);
        let indexes = [(0, None), (0, None)];
        assert_eq!(table.find(&records, &indexes, &key("b")), (hash_b, None));
        table.insert(hash_b, &key("b"), 1);
        assert_eq!(table.find(&records, &indexes, &key("b")).1, Some(1));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn runs_of_one_key_share_a_table_entry() {
        let mut builder = AggregateBuilder::new();
        for data in ["1", "2", "3"] {
            builder.push(UserRecord::new(key("same"), data));
        }
        builder.push(UserRecord::new(key("other"), "4"));
        builder.push(UserRecord::new(key("same"), "5"));
        assert_eq!(builder.indexes.iter().map(|i| i.0).collect::<Vec<_>>(), [0, 0, 0, 1, 0]);
        assert_eq!(builder.finish().len(), builder.encoded_len());
    }

    #[test]
    fn multi_byte_indexes_are_counted() {
        let mut builder = AggregateBuilder::new();
        for i in 0..300 {
            let record = UserRecord::new(key(&format!("key-{i}")), vec![1u8; i % 7])
                .with_explicit_hash_key(HashKey(i as u128));
            let expected = builder.encoded_len_with(&record);
            builder.push(record);
            assert_eq!(builder.encoded_len(), expected);
        }
        assert_eq!(builder.finish().len(), builder.encoded_len());
    }
}
