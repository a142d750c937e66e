//! The encoder: [`AggregateBuilder`] packs user records into one KPL aggregated record.
//!
//! Invariant: `protobuf_len` is at every step the exact length of the `AggregatedRecord`
//! protobuf that [`AggregateBuilder::finish`] writes, so sizes are answered without encoding.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

use super::digest::Digesting;
use super::lanes::digest_each;
use super::wire::{
    TAG_DATA, TAG_EXPLICIT_HASH_KEY_INDEX, TAG_EXPLICIT_HASH_KEY_TABLE, TAG_PARTITION_KEY_INDEX,
    TAG_PARTITION_KEY_TABLE, TAG_RECORDS, len_field_len, put_varint, varint_len,
};
use super::{DIGEST_LEN, FIXED_OVERHEAD, MAGIC, UserRecord};
use crate::{HashKey, PartitionKey};
use bytes::Bytes;

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

/// An encoded aggregate whose digest is not written yet: see [`seal_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsealed(Vec<u8>);

impl Unsealed {
    /// The length of the sealed aggregate.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: even an empty aggregate has magic and digest.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Writes the digest: what [`AggregateBuilder::finish`] returns. [`seal_all`] is faster
    /// for many.
    pub fn seal(self) -> Bytes {
        let mut sealed = seal_all(vec![self]);
        sealed.pop().expect("one aggregate in, one out")
    }

    /// The bytes the digest covers.
    fn protobuf(&self) -> &[u8] {
        &self.0[MAGIC.len()..self.0.len() - DIGEST_LEN]
    }
}

/// Writes the digests of several aggregates, computing them together: on x86-64 processors
/// with AVX-512 or AVX2, sixteen MD5 digests advance at once, several times the throughput of
/// digesting the aggregates one by one (see `BENCHMARKS.md`). `seal_all(v)[i]` is byte for byte what
/// `finish` of the builder behind `v[i]` returns.
///
/// ```
/// use kinesis_common::PartitionKey;
/// use kinesis_common::aggregation::{AggregateBuilder, UserRecord, seal_all};
///
/// let builders: Vec<AggregateBuilder> = (0..3)
///     .map(|n| {
///         let mut builder = AggregateBuilder::new();
///         builder.push(UserRecord::new(PartitionKey::new(format!("key-{n}")).unwrap(), "data"));
///         builder
///     })
///     .collect();
/// let sealed = seal_all(builders.iter().map(AggregateBuilder::finish_unsealed).collect());
/// for (builder, bytes) in builders.iter().zip(&sealed) {
///     assert_eq!(builder.finish(), bytes);
/// }
/// ```
pub fn seal_all(aggregates: Vec<Unsealed>) -> Vec<Bytes> {
    let mut digests = vec![[0u8; DIGEST_LEN]; aggregates.len()];
    let protobufs: Vec<&[u8]> = aggregates.iter().map(Unsealed::protobuf).collect();
    digest_each(&protobufs, &mut digests);
    aggregates
        .into_iter()
        .zip(digests)
        .map(|(Unsealed(mut buf), digest)| {
            let at = buf.len() - DIGEST_LEN;
            buf[at..].copy_from_slice(&digest);
            Bytes::from(buf)
        })
        .collect()
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
    indexes: Vec<Indexes>,
    partition_keys: PartitionKeyTable,
    explicit_hash_key_table: Vec<HashKey>,
    explicit_hash_key_lookup: HashMap<HashKey, u32>,
    /// Exact length of the `AggregatedRecord` protobuf for the current content.
    protobuf_len: usize,
}

/// A record's table indexes, compact: the explicit hash key index is [`NO_INDEX`] when the
/// record has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Indexes {
    partition_key: u32,
    explicit_hash_key: u32,
}

/// [`Indexes::explicit_hash_key`] of a record without an explicit hash key.
const NO_INDEX: u32 = u32::MAX;

impl Indexes {
    fn explicit_hash_key(self) -> Option<u32> {
        (self.explicit_hash_key != NO_INDEX).then_some(self.explicit_hash_key)
    }
}

/// The most records [`AggregateBuilder::try_push`] makes room for the first time the record
/// vectors grow past [`GROWN_RECORDS`] (80 KiB of them); after that, four times what they
/// hold at a time, up to what the byte limit lets the aggregate hold (about 10 000 records of
/// 100 bytes in a 1 MiB aggregate), so a large aggregate moves its records two or three
/// times rather than a dozen, and one closed early holds at most four times the room it used.
const FIRST_ROOM: usize = 1024;

/// From this many records on, [`AggregateBuilder::try_push`] makes room for all it expects at
/// the next growth; an aggregate that ends with fewer never holds more room than it used.
const GROWN_RECORDS: usize = 32;

/// Where a record would go and how much it would add; computed once, used by both the size
/// question and the push.
struct Placement {
    partition_key: Lookup,
    explicit_hash_key_index: Option<u32>,
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
        self.encoded_len() + self.place(&self.records, record).added_len
    }

    /// Adds `record` at the end.
    ///
    /// # Panics
    ///
    /// If the aggregate already holds `u32::MAX - 1` user records (hundreds of gigabytes of
    /// them; an aggregate Kinesis accepts holds at most a few million).
    pub fn push(&mut self, record: UserRecord) {
        // The record moves once, into place; everything else refers to it there.
        self.records.push(record);
        let placement = self.place_last();
        self.commit_last(placement);
    }

    /// Adds `record` at the end if the aggregate then stays within `max_bytes` encoded bytes;
    /// otherwise hands it back. An empty aggregate rejects a record too large on its own,
    /// which tells the producer that the record must travel alone (or not at all).
    ///
    /// The first record's size and `max_bytes` tell how many records the aggregate may come
    /// to hold; once it holds more than a few keys or records, the key table grows four times
    /// at a time towards what that many keys need, and the record vectors make room for up to
    /// 1 024 records at once, then four times what they hold at a time.
    ///
    /// # Panics
    ///
    /// As [`push`](Self::push), if the aggregate already holds `u32::MAX - 1` user records.
    pub fn try_push(&mut self, record: UserRecord, max_bytes: usize) -> Result<(), Rejected> {
        if self.records.is_empty() {
            // The first record: as many more of its size as the limit leaves room for, if
            // they share keys (six bytes of framing each). The key table grows towards what
            // that many keys need four times at a time, rather than doubling.
            self.partition_keys.expected = max_bytes / (record.data.len() + 6);
        } else if self.records.len() == self.records.capacity()
            && self.records.len() >= GROWN_RECORDS
        {
            // Not a handful of records: room for as many as expected (up to `FIRST_ROOM`, or
            // four times as many as now) at once, rather than moving them all again at each
            // doubling.
            let room = self.partition_keys.expected.min(FIRST_ROOM.max(4 * self.records.len()));
            let more = room.saturating_sub(self.records.len());
            self.records.reserve(more);
            self.indexes.reserve(more);
        }
        self.records.push(record);
        let placement = self.place_last();
        let encoded_len = self.encoded_len() + placement.added_len;
        if encoded_len > max_bytes {
            let record = self.records.pop().expect("pushed above");
            return Err(Rejected { record, encoded_len, max_bytes });
        }
        self.commit_last(placement);
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
    /// data is copied once; the digest is computed over the protobuf in place. To encode many
    /// aggregates, [`finish_unsealed`](Self::finish_unsealed) and [`seal_all`] digest several
    /// at once.
    pub fn finish(&self) -> Bytes {
        let mut buf = Vec::with_capacity(self.encoded_len());
        // The digest follows the writing, so that MD5 and the copying overlap.
        let mut digest = Digesting::new(MAGIC.len());
        self.encode_protobuf(&mut buf, |buf| digest.advance(buf, buf.len()));
        let digest = digest.finish(&buf, buf.len());
        buf.extend_from_slice(&digest);
        debug_assert_eq!(
            buf.len(),
            self.encoded_len(),
            "size accounting out of step with the encoding"
        );
        Bytes::from(buf)
    }

    /// Encodes the aggregate without its digest, for [`seal_all`]: sealed, it is byte for
    /// byte what [`finish`](Self::finish) returns.
    pub fn finish_unsealed(&self) -> Unsealed {
        let mut buf = Vec::with_capacity(self.encoded_len());
        self.encode_protobuf(&mut buf, |_| {});
        buf.extend_from_slice(&[0; DIGEST_LEN]);
        debug_assert_eq!(
            buf.len(),
            self.encoded_len(),
            "size accounting out of step with the encoding"
        );
        Unsealed(buf)
    }

    /// Writes magic and protobuf to `buf`, calling `written` after each record.
    #[inline(always)]
    fn encode_protobuf(&self, buf: &mut Vec<u8>, mut written: impl FnMut(&[u8])) {
        buf.extend_from_slice(&MAGIC);
        for index in 0..self.partition_keys.len() {
            let key = self.partition_keys.key(index);
            buf.push(TAG_PARTITION_KEY_TABLE);
            put_varint(buf, key.len() as u64);
            buf.extend_from_slice(key);
        }
        let mut digits = [0u8; 39];
        for hash_key in &self.explicit_hash_key_table {
            let text = decimal(hash_key.0, &mut digits);
            buf.push(TAG_EXPLICIT_HASH_KEY_TABLE);
            put_varint(buf, text.len() as u64);
            buf.extend_from_slice(text);
        }
        for (record, &indexes) in self.records.iter().zip(&self.indexes) {
            let data = &record.data[..];
            let pk_index = indexes.partition_key;
            let ehk_index = indexes.explicit_hash_key();
            let body_len = record_body_len(pk_index, ehk_index, data.len());
            // Everything before the data in one small stack buffer and one copy: cheaper
            // than growing `buf` a byte at a time when records are small.
            if body_len < 0x80 && pk_index < 0x80 && ehk_index.is_none() {
                // The common small record: six bytes, every varint one byte long.
                buf.extend_from_slice(&[
                    TAG_RECORDS,
                    body_len as u8,
                    TAG_PARTITION_KEY_INDEX,
                    pk_index as u8,
                    TAG_DATA,
                    data.len() as u8,
                ]);
            } else {
                let mut head = RecordHead::default();
                head.push(TAG_RECORDS);
                head.varint(body_len as u64);
                head.push(TAG_PARTITION_KEY_INDEX);
                head.varint(u64::from(pk_index));
                if let Some(ehk_index) = ehk_index {
                    head.push(TAG_EXPLICIT_HASH_KEY_INDEX);
                    head.varint(u64::from(ehk_index));
                }
                head.push(TAG_DATA);
                head.varint(data.len() as u64);
                buf.extend_from_slice(head.as_slice());
            }
            buf.extend_from_slice(data);
            written(buf);
        }
    }

    /// Where the last record of `self.records`, not yet committed, goes.
    #[inline(always)]
    fn place_last(&self) -> Placement {
        let (record, before) = self.records.split_last().expect("a record was pushed");
        self.place(before, record)
    }

    /// Where `record` would go after `records` (the records committed so far).
    #[inline(always)]
    fn place(&self, records: &[UserRecord], record: &UserRecord) -> Placement {
        let mut added_len = 0;
        let partition_key = self.partition_keys.find(records, &self.indexes, &record.partition_key);
        let partition_key_index = match partition_key.index {
            Some(index) => index,
            None => {
                added_len += len_field_len(record.partition_key.len_bytes());
                self.partition_keys.len() as u32
            }
        };
        let (explicit_hash_key_index, new_explicit_hash_key) = match record.explicit_hash_key {
            None => (None, false),
            Some(hash_key) => match self.explicit_hash_key_lookup.get(&hash_key) {
                Some(&index) => (Some(index), false),
                None => {
                    added_len += len_field_len(decimal_len(hash_key.0));
                    (Some(self.explicit_hash_key_table.len() as u32), true)
                }
            },
        };
        let data_len = record.data.len();
        added_len += if partition_key_index < 0x80
            && explicit_hash_key_index.is_none()
            && data_len < 0x7C
        {
            // The usual small record: every varint one byte, six bytes before the data.
            6 + data_len
        } else {
            len_field_len(record_body_len(partition_key_index, explicit_hash_key_index, data_len))
        };
        Placement { partition_key, explicit_hash_key_index, new_explicit_hash_key, added_len }
    }

    /// Enters the last record of `self.records` in the tables, where `placement` says.
    #[inline(always)]
    fn commit_last(&mut self, placement: Placement) {
        // Record positions and table indexes are kept as `u32`; `NO_INDEX` stays free.
        let position = self.records.len() - 1;
        assert!(position < NO_INDEX as usize - 1, "aggregate holds too many records");
        let position = position as u32;
        let partition_key = match placement.partition_key.index {
            Some(index) => index,
            None => self.partition_keys.insert(
                &placement.partition_key,
                self.records[position as usize].partition_key.as_bytes(),
            ),
        };
        let explicit_hash_key = match (
            self.records[position as usize].explicit_hash_key,
            placement.explicit_hash_key_index,
        ) {
            (Some(hash_key), Some(index)) => {
                if placement.new_explicit_hash_key {
                    self.explicit_hash_key_table.push(hash_key);
                    self.explicit_hash_key_lookup.insert(hash_key, index);
                }
                index
            }
            _ => NO_INDEX,
        };
        self.indexes.push(Indexes { partition_key, explicit_hash_key });
        self.protobuf_len += placement.added_len;
    }
}

/// What [`PartitionKeyTable::find`] learnt about a key: its table index if present, else
/// where to insert it.
struct Lookup {
    index: Option<u32>,
    hash: u64,
    /// The empty slot the probe for the key ended on (meaningless when `index` is `Some`).
    slot: usize,
    /// How many slots the probe looked at.
    probes: usize,
}

/// The partition key table: distinct keys in first-use order (the KPL's `KeySet`), found
/// with one hash per lookup and without storing a second copy of each key.
///
/// An open-addressing hash table of table indexes, probed triangularly (every slot of the
/// power-of-two table is reached), at most half full. Keys are hashed with [`KeyHasher`], a
/// fast keyed hash with a random key per process; should a probe ever run long (which a good
/// hash makes practically impossible by chance, so it would mean keys chosen to collide), the
/// table switches to a randomly keyed SipHash for the rest of the aggregate. Either way a
/// match is confirmed by comparing the keys, so collisions cost time, never correctness.
#[derive(Debug, Clone, Default)]
struct PartitionKeyTable {
    /// The entries' keys, one after the other: looking a key up and writing the table read
    /// this compact text rather than the records (scattered, and out of the cache by then
    /// when many aggregates fill at once).
    text: Vec<u8>,
    /// Where each entry's key ends in `text`.
    ends: Vec<u32>,
    /// Empty (0), or the high 32 bits of the key's hash above its table index + 1.
    slots: Vec<u64>,
    hasher: KeyHasher,
    /// How many records the aggregate expects: the table grows four times at once while it
    /// is below what that many keys need.
    expected: usize,
}

/// The size of the slot table when the first key arrives.
const MIN_SLOTS: usize = 16;

/// A probe this long means the keys collide on purpose: switch to SipHash.
const FLOOD_PROBES: usize = if cfg!(test) { 4 } else { 64 };

impl PartitionKeyTable {
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// The key of entry `index`.
    #[inline(always)]
    fn key(&self, index: usize) -> &[u8] {
        let start = if index == 0 { 0 } else { self.ends[index - 1] as usize };
        &self.text[start..self.ends[index] as usize]
    }

    /// Looks `key` up. `indexes` are the records' table indexes, parallel to `records`.
    #[inline(always)]
    fn find(&self, records: &[UserRecord], indexes: &[Indexes], key: &PartitionKey) -> Lookup {
        // Runs of one key are common (aggregation per key): skip the hash for them.
        if let (Some(last), Some(last_indexes)) = (records.last(), indexes.last())
            && last.partition_key.same_as(key)
        {
            return Lookup { index: Some(last_indexes.partition_key), hash: 0, slot: 0, probes: 0 };
        }
        let hash = self.hasher.hash(key.as_bytes());
        if self.slots.is_empty() {
            return Lookup { index: None, hash, slot: 0, probes: 0 };
        }
        let key = key.as_bytes();
        let (index, slot, probes) = self.probe(hash, |index| self.key(index) == key);
        Lookup { index, hash, slot, probes }
    }

    /// Follows `hash`'s probe sequence to the entry `is_key` accepts (given the entry's index)
    /// or to an empty slot. Returns the entry's index, the slot it stopped at and how many
    /// slots it looked at.
    #[inline(always)]
    fn probe(&self, hash: u64, is_key: impl Fn(usize) -> bool) -> (Option<u32>, usize, usize) {
        let mask = self.slots.len() - 1;
        let tag = hash >> 32;
        let mut at = tag as usize & mask;
        let mut step = 0;
        loop {
            let slot = self.slots[at];
            if slot == 0 {
                return (None, at, step + 1);
            }
            let index = (slot as u32).wrapping_sub(1);
            if slot >> 32 == tag && is_key(index as usize) {
                return (Some(index), at, step + 1);
            }
            step += 1;
            at = (at + step) & mask;
        }
    }

    /// Adds `key`, which [`find`](Self::find) did not find; returns its table index.
    #[inline]
    fn insert(&mut self, lookup: &Lookup, key: &[u8]) -> u32 {
        let index = self.ends.len() as u32;
        self.text.extend_from_slice(key);
        self.ends.push(self.text.len() as u32);
        let slot = (lookup.hash >> 32) << 32 | u64::from(index + 1);
        let mut probes = lookup.probes;
        if self.ends.len() * 2 > self.slots.len() {
            probes = probes.max(self.grow());
            let (_, at, new_probes) = self.probe(lookup.hash, |_| false);
            self.slots[at] = slot;
            probes = probes.max(new_probes);
        } else {
            // Nothing changed since `find`: its probe ended on this empty slot.
            self.slots[lookup.slot] = slot;
        }
        if probes > FLOOD_PROBES && !self.hasher.is_hardened() {
            self.hasher.harden();
            self.rehash();
        }
        index
    }

    /// Doubles the slots, moving every entry by the hash bits its slot keeps; returns the
    /// longest probe that took.
    #[cold]
    fn grow(&mut self) -> usize {
        // Four times larger while below what the expected records could need, so that a full
        // aggregate moves its keys half as often; twice beyond. Not straight to the expected
        // size: aggregates closed by their deadline often end far below it, and clearing a
        // table that large would cost them more than the growth saves.
        let needed = (self.expected * 2).next_power_of_two();
        let factor = if self.slots.len() * 4 <= needed { 4 } else { 2 };
        let slot_count = (self.slots.len() * factor).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![0; slot_count]);
        let mut longest = 0;
        for slot in old.into_iter().filter(|&slot| slot != 0) {
            let (_, at, probes) = self.probe(slot, |_| false);
            self.slots[at] = slot;
            longest = longest.max(probes);
        }
        longest
    }

    /// Hashes every key again (after the hasher changed) into slots as many as before.
    #[cold]
    fn rehash(&mut self) {
        self.slots.fill(0);
        for index in 0..self.len() {
            let hash = self.hasher.hash(self.key(index));
            let (_, at, _) = self.probe(hash, |_| false);
            self.slots[at] = (hash >> 32) << 32 | (index as u64 + 1);
        }
    }

    fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
        self.slots.fill(0);
        self.hasher.soften();
    }
}

/// Hashes partition keys for the [`PartitionKeyTable`]: a fast keyed hash (folded 64-bit
/// multiplications, the construction of foldhash and wyhash) under a random key drawn once per
/// process, or, once [`harden`](Self::harden)ed, a randomly keyed SipHash.
#[derive(Debug, Clone)]
struct KeyHasher {
    seeds: [u64; 4],
    sip: Option<RandomState>,
}

impl Default for KeyHasher {
    fn default() -> Self {
        static SEEDS: OnceLock<[u64; 4]> = OnceLock::new();
        let seeds = *SEEDS.get_or_init(|| {
            let random = RandomState::new();
            [0u64, 1, 2, 3].map(|i| random.hash_one(i))
        });
        Self { seeds, sip: None }
    }
}

impl KeyHasher {
    #[inline]
    fn hash(&self, bytes: &[u8]) -> u64 {
        match &self.sip {
            None => fold_hash(&self.seeds, bytes),
            Some(sip) => sip.hash_one(bytes),
        }
    }

    fn harden(&mut self) {
        self.sip = Some(RandomState::new());
    }

    fn soften(&mut self) {
        self.sip = None;
    }

    fn is_hardened(&self) -> bool {
        self.sip.is_some()
    }
}

/// The high and low halves of the 128-bit product, folded together.
#[inline]
fn fold_multiply(x: u64, y: u64) -> u64 {
    let product = u128::from(x) * u128::from(y);
    (product as u64) ^ ((product >> 64) as u64)
}

#[inline]
fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

#[inline]
fn read_u32(bytes: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes")))
}

/// A keyed hash of `bytes`: 16 bytes per multiplication, the length mixed in first.
#[inline]
fn fold_hash(seeds: &[u64; 4], bytes: &[u8]) -> u64 {
    let len = bytes.len();
    let mut acc = seeds[0] ^ len as u64;
    if len <= 16 {
        let (a, b) = if len >= 8 {
            (read_u64(bytes, 0), read_u64(bytes, len - 8))
        } else if len >= 4 {
            (read_u32(bytes, 0), read_u32(bytes, len - 4))
        } else if len > 0 {
            let spread = u64::from(bytes[0]) << 16
                | u64::from(bytes[len / 2]) << 8
                | u64::from(bytes[len - 1]);
            (spread, 0)
        } else {
            (0, 0)
        };
        acc = fold_multiply(a ^ seeds[1], b ^ acc);
    } else {
        let mut rest = bytes;
        while rest.len() > 16 {
            acc = fold_multiply(read_u64(rest, 0) ^ seeds[1], read_u64(rest, 8) ^ acc);
            rest = &rest[16..];
        }
        // The last 16 bytes, overlapping what came before when the length is not a multiple.
        acc = fold_multiply(read_u64(bytes, len - 16) ^ seeds[2], read_u64(bytes, len - 8) ^ acc);
    }
    fold_multiply(acc, seeds[3])
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
#[inline]
fn record_body_len(pk_index: u32, ehk_index: Option<u32>, data_len: usize) -> usize {
    1 + varint_len(u64::from(pk_index))
        + ehk_index.map_or(0, |index| 1 + varint_len(u64::from(index)))
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
    use md5::{Digest, Md5};

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
        // Keyed with zeros, the fast hash sends every key to 0: all keys collide, the probes
        // run long and the table switches to SipHash; the output must not change.
        let mut colliding = AggregateBuilder::new();
        colliding.partition_keys.hasher = KeyHasher { seeds: [0; 4], sip: None };
        assert_eq!(colliding.partition_keys.hasher.hash(b"a"), 0);
        assert_eq!(colliding.partition_keys.hasher.hash(b"another key"), 0);
        let mut normal = AggregateBuilder::new();
        for i in 0..300 {
            let record = UserRecord::new(key(&format!("k{}", i % 70)), vec![i as u8]);
            assert_eq!(colliding.encoded_len_with(&record), normal.encoded_len_with(&record));
            colliding.push(record.clone());
            normal.push(record);
        }
        assert!(colliding.partition_keys.hasher.is_hardened());
        assert_eq!(colliding.partition_keys.len(), 70);
        assert_eq!(colliding.indexes, normal.indexes);
        assert_eq!(colliding.finish(), normal.finish());
        // A cleared table starts with the fast hash again.
        colliding.clear();
        assert!(!colliding.partition_keys.hasher.is_hardened());
    }

    #[test]
    fn the_key_hash_tells_keys_of_every_length_apart() {
        let hasher = KeyHasher::default();
        let mut seen = std::collections::HashSet::new();
        for len in 0..=48 {
            for i in 0..400u32 {
                let mut text = format!("{i:x}").repeat(len).into_bytes();
                text.truncate(len);
                if len >= 4 {
                    text[len - 4..].copy_from_slice(&i.to_le_bytes());
                }
                if seen.contains(&text) {
                    continue;
                }
                assert!(seen.insert(text.clone()));
                let _ = hasher.hash(&text);
            }
        }
        let hashes: std::collections::HashSet<u64> =
            seen.iter().map(|text| hasher.hash(text)).collect();
        assert_eq!(hashes.len(), seen.len());
    }

    #[test]
    fn runs_of_one_key_share_a_table_entry() {
        let mut builder = AggregateBuilder::new();
        for data in ["1", "2", "3"] {
            builder.push(UserRecord::new(key("same"), data));
        }
        builder.push(UserRecord::new(key("other"), "4"));
        builder.push(UserRecord::new(key("same"), "5"));
        assert_eq!(
            builder.indexes.iter().map(|i| i.partition_key).collect::<Vec<_>>(),
            [0, 0, 0, 1, 0]
        );
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

    #[test]
    fn the_key_table_grows_fast_to_what_the_limit_allows() {
        let mut builder = AggregateBuilder::new();
        let mut pushed = Vec::new();
        for i in 0.. {
            let record = UserRecord::new(key(&format!("key-{i}")), vec![i as u8; 100]);
            if builder.try_push(record.clone(), 51_200).is_err() {
                break;
            }
            pushed.push(record);
            // 51 200 / 106 records expected: 483 keys, 1 024 slots at most half full, reached
            // four times larger at a time from 16.
            let expected = match pushed.len() {
                0..=8 => 16,
                9..=32 => 64,
                33..=128 => 256,
                _ => 1024,
            };
            assert_eq!(builder.partition_keys.slots.len(), expected, "{} keys", pushed.len());
        }
        assert_eq!(builder.records.capacity(), 483, "room made once for what was expected");
        let indexes: Vec<u32> = builder.indexes.iter().map(|i| i.partition_key).collect();
        assert_eq!(indexes, (0..pushed.len() as u32).collect::<Vec<_>>());
        assert_eq!(builder.records(), &pushed[..]);
        assert_eq!(builder.finish().len(), builder.encoded_len());
    }

    /// A 1 MiB aggregate of 100 B records (about 9 900 expected): the record vectors make
    /// room for 1 024, then four times what they hold, then what is expected, and the key
    /// table grows four times at a time up to what the expected keys need (at most half
    /// full), twice beyond.
    #[test]
    fn a_large_aggregate_grows_four_times_at_a_time() {
        let mut builder = AggregateBuilder::new();
        let mut capacities = vec![];
        let mut slots = vec![];
        let mut n = 0;
        loop {
            let record = UserRecord::new(key(&format!("key-{n}")), vec![n as u8; 100]);
            if builder.try_push(record, 1 << 20).is_err() {
                break;
            }
            n += 1;
            if capacities.last() != Some(&builder.records.capacity()) {
                capacities.push(builder.records.capacity());
            }
            if slots.last() != Some(&builder.partition_keys.slots.len()) {
                slots.push(builder.partition_keys.slots.len());
            }
        }
        let expected = (1 << 20) / 106;
        assert!(n > 8_000 && n <= expected, "{n} records");
        assert_eq!(capacities[capacities.len() - 3..], [FIRST_ROOM, 4 * FIRST_ROOM, expected]);
        assert_eq!(slots, [16, 64, 256, 1024, 4096, 16384, 32768], "{n} keys");
        assert_eq!(builder.finish().len(), builder.encoded_len());
    }
}
