//! What a caller hands to the producer and what it gets back: [`Record`], [`Receipt`],
//! [`Delivery`] and the errors that hand a record back.
//!
//! Invariant: every record accepted by `send` resolves its [`Receipt`] exactly once, to a
//! [`Delivery`] or to a [`DeliveryError`] that carries the record, even if the pipeline stops
//! abnormally (see `Pending`'s `Drop`).

use std::time::Duration;

use bytes::Bytes;
use kinesis_common::{ApiError, HashKey, PartitionKey, SequenceNumber, ShardId, ValidationError};

use crate::key_cache::KeyCache;
#[cfg(doc)]
use crate::receipt::Receipt;

/// A user record: a partition key, an optional explicit hash key, and data.
///
/// The key and hash key are checked when the record is sent (see [`SendError::Invalid`]), so a
/// record can be built from untrusted input without a `Result` at every step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The partition key: 1 to 256 Unicode characters.
    pub partition_key: String,
    /// An explicit hash key, a decimal integer in `0..=2^128-1`, that places the record instead
    /// of the partition key's MD5.
    pub explicit_hash_key: Option<String>,
    /// The data blob.
    pub data: Bytes,
}

impl Record {
    /// A record placed by its partition key.
    pub fn new(partition_key: impl Into<String>, data: impl Into<Bytes>) -> Self {
        Self { partition_key: partition_key.into(), explicit_hash_key: None, data: data.into() }
    }

    /// The same record, placed by an explicit hash key (decimal) instead.
    pub fn with_explicit_hash_key(mut self, hash_key: impl Into<String>) -> Self {
        self.explicit_hash_key = Some(hash_key.into());
        self
    }

    /// Data plus partition key bytes: what Kinesis counts against the record size limit.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// A record that passed the checks at `send`, with its hash key computed once.
#[derive(Debug, Clone)]
pub(crate) struct ValidRecord {
    pub(crate) partition_key: PartitionKey,
    /// The explicit hash key if `explicit`, else the partition key's MD5 (see
    /// [`hash_key`](Self::hash_key)), as two words: a `u128` would align every pending record
    /// to 16 bytes, and records move through every stage, so their size counts.
    hash: [u64; 2],
    /// Whether the record came with an explicit hash key (kept as a flag rather than an
    /// `Option<HashKey>`: records move through every stage, so their size counts).
    pub(crate) explicit: bool,
    pub(crate) data: Bytes,
}

impl ValidRecord {
    /// Checks the record against Kinesis' rules and the producer's size limit.
    #[cfg(test)]
    pub(crate) fn new(record: Record, max_record_size: usize) -> Result<Self, SendError> {
        Self::check(record, max_record_size, None)
    }

    /// Like `new`, taking the partition key's text and MD5 from `keys` when it holds them.
    pub(crate) fn with_cache(
        record: Record,
        max_record_size: usize,
        keys: &KeyCache,
    ) -> Result<Self, SendError> {
        Self::check(record, max_record_size, Some(keys))
    }

    fn check(
        record: Record,
        max_record_size: usize,
        keys: Option<&KeyCache>,
    ) -> Result<Self, SendError> {
        let size = record.size();
        if size > max_record_size {
            return Err(SendError::Invalid {
                reason: InvalidRecord::TooLarge { size, limit: max_record_size },
                record,
            });
        }
        if let (Some(keys), None) = (keys, &record.explicit_hash_key) {
            // The common case: placed by the partition key, whose MD5 the cache may know.
            return match keys.key(&record.partition_key) {
                Ok((partition_key, hash_key)) => Ok(Self {
                    partition_key,
                    hash: split(hash_key),
                    explicit: false,
                    data: record.data,
                }),
                Err(e) => Err(SendError::Invalid { reason: InvalidRecord::Key(e), record }),
            };
        }
        let partition_key = match PartitionKey::new(record.partition_key.as_str()) {
            Ok(key) => key,
            Err(e) => return Err(SendError::Invalid { reason: InvalidRecord::Key(e), record }),
        };
        let explicit_hash_key = match record.explicit_hash_key.as_deref().map(HashKey::from_decimal)
        {
            None => None,
            Some(Ok(key)) => Some(key),
            Some(Err(e)) => {
                return Err(SendError::Invalid { reason: InvalidRecord::Key(e), record });
            }
        };
        let hash_key =
            explicit_hash_key.unwrap_or_else(|| HashKey::from_partition_key(&partition_key));
        Ok(Self {
            partition_key,
            hash: split(hash_key),
            explicit: explicit_hash_key.is_some(),
            data: record.data,
        })
    }

    /// The hash key that places the record: the explicit one, else the partition key's MD5.
    pub(crate) fn hash_key(&self) -> HashKey {
        HashKey(u128::from(self.hash[1]) << 64 | u128::from(self.hash[0]))
    }

    /// Places the record by `hash_key` instead (tests).
    #[cfg(test)]
    pub(crate) fn set_hash_key(&mut self, hash_key: HashKey) {
        self.hash = split(hash_key);
    }

    /// The explicit hash key the record came with, if any.
    pub(crate) fn explicit_hash_key(&self) -> Option<HashKey> {
        self.explicit.then(|| self.hash_key())
    }

    /// The caller's record again, for errors that hand it back.
    pub(crate) fn into_record(self) -> Record {
        let explicit_hash_key = self.explicit_hash_key().map(|k| k.to_string());
        Record {
            partition_key: self.partition_key.into_string(),
            explicit_hash_key,
            data: self.data,
        }
    }

    /// Data plus partition key bytes.
    pub(crate) fn size(&self) -> usize {
        self.data.len() + self.partition_key.len_bytes()
    }
}

/// A hash key as two words, low first.
fn split(hash_key: HashKey) -> [u64; 2] {
    [hash_key.0 as u64, (hash_key.0 >> 64) as u64]
}

/// Why a record was refused at `send`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRecord {
    /// Data plus partition key exceed the producer's `max_record_size`.
    #[error(
        "record is {size} bytes (data plus partition key), over the limit of {limit} bytes; \
         split it, or raise the stream's maximum record size and the producer's max_record_size"
    )]
    TooLarge {
        /// The record's size.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The partition key or the explicit hash key is not valid.
    #[error(transparent)]
    Key(ValidationError),
}

/// `send` or `try_send` did not accept the record; the record comes back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The record breaks a Kinesis rule or the producer's size limit.
    #[error("invalid record")]
    Invalid {
        /// What is wrong with it.
        #[source]
        reason: InvalidRecord,
        /// The record.
        record: Record,
    },
    /// The producer is shutting down or has stopped.
    #[error("producer is closed")]
    Closed {
        /// The record.
        record: Record,
    },
    /// `try_send` only: the outstanding byte or record budget is used up.
    #[error("producer buffer is full")]
    Full {
        /// The record.
        record: Record,
    },
}

impl SendError {
    /// The record that was not accepted.
    pub fn into_record(self) -> Record {
        match self {
            Self::Invalid { record, .. } | Self::Closed { record } | Self::Full { record } => {
                record
            }
        }
    }
}

/// Where and how a record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The shard that holds the record.
    pub shard_id: ShardId,
    /// The sequence number of the Kinesis record that carries it.
    pub sequence_number: SequenceNumber,
    /// The record's index inside the KPL aggregate, or `None` if it was sent on its own.
    pub sub_sequence_number: Option<u64>,
    /// How many PutRecords attempts it took (1 if the first succeeded).
    pub attempts: u32,
    /// Time from `send` to the successful answer.
    pub latency: Duration,
}

/// A record accepted by `send` was not written; the record comes back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The record's time to live ran out before a write succeeded.
    #[error("record expired after {attempts} attempts")]
    Expired {
        /// The record.
        record: Record,
        /// PutRecords attempts made.
        attempts: u32,
        /// The last failure, if an attempt was made.
        #[source]
        last_error: Option<ApiError>,
    },
    /// Kinesis refused the record for a reason retrying cannot fix (invalid argument, unknown
    /// stream, access denied), or throttled it while `fail_if_throttled` is set.
    #[error("record rejected")]
    Rejected {
        /// The record.
        record: Record,
        /// PutRecords attempts made.
        attempts: u32,
        /// What Kinesis answered.
        #[source]
        error: ApiError,
    },
    /// The producer stopped before the record could be written (shutdown deadline passed, or
    /// the pipeline stopped abnormally).
    #[error("producer stopped before the record was written")]
    Stopped {
        /// The record.
        record: Record,
        /// PutRecords attempts made.
        attempts: u32,
    },
}

impl DeliveryError {
    /// The record that was not written.
    pub fn into_record(self) -> Record {
        match self {
            Self::Expired { record, .. }
            | Self::Rejected { record, .. }
            | Self::Stopped { record, .. } => record,
        }
    }

    /// The record that was not written.
    pub fn record(&self) -> &Record {
        match self {
            Self::Expired { record, .. }
            | Self::Rejected { record, .. }
            | Self::Stopped { record, .. } => record,
        }
    }

    /// PutRecords attempts made for the record.
    pub fn attempts(&self) -> u32 {
        match self {
            Self::Expired { attempts, .. }
            | Self::Rejected { attempts, .. }
            | Self::Stopped { attempts, .. } => *attempts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_records_come_back_with_a_reason_that_names_the_limit() {
        let big = Record::new("k", vec![0u8; 2000]);
        let err = ValidRecord::new(big.clone(), 1000).unwrap_err();
        assert!(err.to_string().contains("invalid record"));
        let SendError::Invalid { reason, record } = err else { panic!() };
        assert!(reason.to_string().contains("over the limit of 1000 bytes"), "{reason}");
        assert_eq!(record, big);

        let empty_key = Record::new("", "x");
        let reason = match ValidRecord::new(empty_key, 1000).unwrap_err() {
            SendError::Invalid { reason, .. } => reason,
            other => panic!("{other:?}"),
        };
        assert!(reason.to_string().contains("1 to 256"), "{reason}");

        let long_key = Record::new("k".repeat(257), "x");
        assert!(ValidRecord::new(long_key, 1000).is_err());

        for bad in ["-1", "340282366920938463463374607431768211456", "12x"] {
            let r = Record::new("k", "x").with_explicit_hash_key(bad);
            let reason = match ValidRecord::new(r, 1000).unwrap_err() {
                SendError::Invalid { reason, .. } => reason,
                other => panic!("{other:?}"),
            };
            assert!(reason.to_string().contains("2^128-1"), "{bad}: {reason}");
        }
    }

    #[test]
    fn the_key_cache_validates_and_hashes_as_without_it() {
        let keys = KeyCache::default();
        for key in ["a", "key-17", "key-17", "\u{1F600}"] {
            let r = Record::new(key, "data");
            let cached = ValidRecord::with_cache(r.clone(), 1000, &keys).unwrap();
            let plain = ValidRecord::new(r.clone(), 1000).unwrap();
            assert_eq!(cached.hash_key(), plain.hash_key());
            assert_eq!(cached.partition_key, plain.partition_key);
            assert_eq!(cached.into_record(), r);
        }
        let r = Record::new("key-17", "data").with_explicit_hash_key("42");
        assert_eq!(ValidRecord::with_cache(r, 1000, &keys).unwrap().hash_key(), HashKey(42));
        for bad in [Record::new("", "x"), Record::new("k".repeat(257), "x")] {
            match ValidRecord::with_cache(bad.clone(), 1000, &keys).unwrap_err() {
                SendError::Invalid { reason: InvalidRecord::Key(_), record } => {
                    assert_eq!(record, bad);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn valid_records_round_trip_and_hash_once() {
        let r = Record::new("key", "data").with_explicit_hash_key("42");
        let v = ValidRecord::new(r.clone(), 1000).unwrap();
        assert_eq!(v.hash_key(), HashKey(42));
        assert_eq!(v.into_record(), r);
        let v = ValidRecord::new(Record::new("a", "x"), 1000).unwrap();
        assert_eq!(v.hash_key(), HashKey::from_partition_key(&PartitionKey::new("a").unwrap()));
    }
}
