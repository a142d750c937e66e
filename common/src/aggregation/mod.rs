//! The KPL aggregated record format: the encoder the producer uses to pack many user records
//! into one Kinesis record, and the decoder the consumer uses to unpack them again.
//!
//! # Wire format
//!
//! Source: KPL `aggregation-format.md` and `aws/kinesis/protobuf/messages.proto`.
//!
//! ```text
//! bytes 0..4      magic F3 89 9A C2                                  (MAGIC)
//! bytes 4..N-16   protobuf (proto2) message AggregatedRecord
//! bytes N-16..N   MD5 digest of the protobuf bytes only (not the magic)
//!
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;
//! }
//! message Tag { required string key = 1; optional string value = 2; }
//! ```
//!
//! # What this module owns, and its invariants
//!
//! - [`AggregateBuilder`] encodes. It keeps the exact encoded size of its content at every
//!   step, so [`AggregateBuilder::encoded_len_with`] answers "how big if I add this record"
//!   without encoding, and it always equals the length [`AggregateBuilder::finish`] returns.
//!   Partition keys and explicit hash keys are deduplicated in their tables, as the KPL's
//!   `KeySet` does; `explicit_hash_key_index` is written only for records that carry an
//!   explicit hash key; required fields are always written, even when zero or empty.
//! - [`deaggregate`] decodes one Kinesis record into the user records the KCL would hand to
//!   a record processor, following the KCL's `AggregatorUtil` (see the function for the
//!   rules). It never panics and never loses data: it returns either every user record of a
//!   valid aggregate, or the Kinesis record's data unchanged as one plain record, or, when a
//!   shard's hash key range rules the aggregate out, nothing, with an outcome that says so.
//! - One level only: an aggregate inside a user record stays that user record's data.
//! - Batches give the same bytes and results, faster: [`seal_all`] writes the digests of
//!   several aggregates encoded with [`AggregateBuilder::finish_unsealed`], and
//!   [`deaggregate_all`] de-aggregates several Kinesis records; both compute the MD5 digests
//!   together, sixteen at a time in SIMD lanes on x86-64 processors with AVX-512 or AVX2
//!   (detected at run time), one at a time otherwise.
//!
//! The compression envelope of [`crate::compression`] is undone by [`deaggregate`] before it
//! looks for an aggregate.

mod decode;
mod digest;
mod encode;
mod lanes;
mod wire;

use std::time::SystemTime;

use bytes::Bytes;

use crate::{ExtendedSequenceNumber, HashKey, PartitionKey, SequenceNumber, SharedStr};

pub use decode::{
    CorruptRecord, Deaggregated, DeaggregationOutcome, ProtobufError, deaggregate, deaggregate_all,
    deaggregate_all_with_limit, deaggregate_with_limit,
};
pub use encode::{AggregateBuilder, Rejected, Unsealed, seal_all};

/// The four bytes every KPL aggregated record starts with (KPL `KinesisRecord::kMagic`).
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// The length of the MD5 digest that ends an aggregated record.
pub const DIGEST_LEN: usize = 16;

/// Bytes an aggregated record adds around its protobuf: magic plus digest
/// (KPL `KinesisRecord::kFixedOverhead`).
pub const FIXED_OVERHEAD: usize = MAGIC.len() + DIGEST_LEN;

/// The partition key the KPL gives the Kinesis record that carries an aggregate: one byte, to
/// save space; the record is placed by its explicit hash key instead
/// (KPL `kinesis_record.cc`).
pub const AGGREGATE_PARTITION_KEY: &str = "a";

/// A user record as the producer's caller hands it over: what goes into an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The partition key; places the record unless an explicit hash key is given.
    pub partition_key: PartitionKey,
    /// A hash key that places the record instead of the partition key's MD5.
    pub explicit_hash_key: Option<HashKey>,
    /// The data blob.
    pub data: Bytes,
}

impl UserRecord {
    /// A record placed by its partition key.
    pub fn new(partition_key: PartitionKey, data: impl Into<Bytes>) -> Self {
        Self { partition_key, explicit_hash_key: None, data: data.into() }
    }

    /// The same record, placed by `hash_key` instead of its partition key.
    pub fn with_explicit_hash_key(mut self, hash_key: HashKey) -> Self {
        self.explicit_hash_key = Some(hash_key);
        self
    }

    /// The hash key that places the record: the explicit hash key if it has one, else the MD5
    /// of the partition key (KPL `user_record.cc`).
    pub fn hash_key(&self) -> HashKey {
        self.explicit_hash_key.unwrap_or_else(|| HashKey::from_partition_key(&self.partition_key))
    }
}

/// A user record as the consumer hands it to a record processor: either one user record of a
/// KPL aggregate, or a whole Kinesis record that is not an aggregate (the KCL's
/// `KinesisClientRecord`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinesisClientRecord {
    /// The sequence number of the Kinesis record this came from.
    pub sequence_number: SequenceNumber,
    /// The user record's index inside the aggregate (`0..n`), or `None` for a Kinesis record
    /// that is not an aggregate.
    pub sub_sequence_number: Option<u64>,
    /// The user record's partition key (for a plain record, the Kinesis record's key). The
    /// records of one aggregate share one copy of its partition key table, so this costs no
    /// allocation of its own.
    pub partition_key: SharedStr,
    /// The user record's explicit hash key; always `None` for a plain record, because
    /// GetRecords does not return the explicit hash key a record was written with.
    pub explicit_hash_key: Option<HashKey>,
    /// The data blob; a slice of the Kinesis record's data (or of its decompressed form).
    pub data: Bytes,
    /// When Kinesis accepted the Kinesis record this came from.
    pub approximate_arrival: Option<SystemTime>,
}

impl KinesisClientRecord {
    /// The hash key that placed the record: the explicit hash key if there is one, else the
    /// MD5 of the partition key's UTF-8 bytes (KCL `AggregatorUtil`). Computed on demand:
    /// most processors never ask, and the MD5 would cost as much as the decoding of a small
    /// record.
    pub fn hash_key(&self) -> HashKey {
        self.explicit_hash_key
            .unwrap_or_else(|| HashKey::from_partition_key_bytes(self.partition_key.as_bytes()))
    }

    /// Whether the record came out of a KPL aggregate.
    pub fn is_aggregated(&self) -> bool {
        self.sub_sequence_number.is_some()
    }

    /// The position to checkpoint after this record: its sequence number with its
    /// sub-sequence number, 0 for a plain record as the KCL does.
    pub fn extended_sequence_number(&self) -> ExtendedSequenceNumber {
        ExtendedSequenceNumber::new(
            self.sequence_number.clone(),
            self.sub_sequence_number.unwrap_or(0),
        )
    }
}
