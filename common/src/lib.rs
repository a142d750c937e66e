//! What both the producer and the consumer of this toolkit use, and nothing else:
//!
//! - identifiers and units: [`StreamName`], [`ShardId`], [`PartitionKey`], [`HashKey`],
//!   [`HashKeyRange`], [`SequenceNumber`], [`ExtendedSequenceNumber`], and [`SharedStr`]
//!   for text many records share;
//! - the KPL aggregation codec ([`aggregation`]), byte-compatible with the Kinesis Producer
//!   Library and the Kinesis Client Library;
//! - the compression envelope ([`compression`]);
//! - the Kinesis seam ([`KinesisApi`]) with its own request and result types, and the
//!   `aws-sdk-kinesis` adapter ([`SdkKinesis`], feature `aws`, on by default);
//! - the retry backoff policy ([`backoff`]);
//! - in-memory fakes and the contract suite behind the `test-util` feature.

pub mod aggregation;
pub mod api;
pub mod backoff;
pub mod compression;
mod hash;
mod names;
mod sequence;
mod text;

#[cfg(feature = "test-util")]
pub mod fake;

#[cfg(feature = "aws")]
pub use api::sdk::SdkKinesis;
pub use api::{
    ApiError, ApiErrorKind, ChildShard, ConsumerDescription, ConsumerStatus, GetRecordsOutput,
    KinesisApi, KinesisRecord, PutRecordsEntry, PutRecordsOutcome, Shard, ShardIterator,
    ShardIteratorPosition, StreamStatus, StreamSummary, SubscribeToShardEvent, Subscription,
};
pub use hash::{HashKey, HashKeyRange};
pub use names::{ConsumerName, PartitionKey, ShardId, StreamName};
pub use sequence::{ExtendedSequenceNumber, SequenceNumber};
pub use text::SharedStr;

/// What was wrong with a value given to one of this crate's constructors.
///
/// Each variant names the limit that was broken so that the caller can fix the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// A stream name must be 1 to 128 characters of `[a-zA-Z0-9_.-]`.
    #[error(
        "invalid stream name {name:?}: must be 1 to 128 characters of a-z, A-Z, 0-9, '_', '.', '-'"
    )]
    StreamName {
        /// The rejected name.
        name: String,
    },
    /// A shard id must be 1 to 128 characters of `[a-zA-Z0-9_.-]`.
    #[error("invalid shard id {id:?}: must be 1 to 128 characters of a-z, A-Z, 0-9, '_', '.', '-'")]
    ShardId {
        /// The rejected id.
        id: String,
    },
    /// A consumer name must be 1 to 128 characters of `[a-zA-Z0-9_.-]`.
    #[error(
        "invalid consumer name {name:?}: must be 1 to 128 characters of a-z, A-Z, 0-9, '_', '.', '-'"
    )]
    ConsumerName {
        /// The rejected name.
        name: String,
    },
    /// A partition key must hold at least one character.
    #[error("partition key is empty: it must be 1 to 256 Unicode characters")]
    PartitionKeyEmpty,
    /// A partition key may hold at most 256 Unicode characters.
    #[error("partition key has {chars} characters: the limit is 256 Unicode characters")]
    PartitionKeyTooLong {
        /// How many characters the rejected key has.
        chars: usize,
    },
    /// An explicit hash key must be a decimal integer.
    #[error("explicit hash key {value:?} is not a decimal integer in 0..=2^128-1")]
    HashKeyNotDecimal {
        /// The rejected text (cut to 64 characters).
        value: String,
    },
    /// An explicit hash key must not exceed 2^128 - 1.
    #[error(
        "explicit hash key {value:?} is out of range: the largest is 2^128-1 (340282366920938463463374607431768211455)"
    )]
    HashKeyOutOfRange {
        /// The rejected text (cut to 64 characters).
        value: String,
    },
    /// A hash key range must start at or before its end.
    #[error("hash key range starts at {start} after its end {end}")]
    HashKeyRangeInverted {
        /// The start of the rejected range.
        start: u128,
        /// The end of the rejected range.
        end: u128,
    },
    /// A sequence number must be 1 to 129 decimal digits.
    #[error("invalid sequence number {value:?}: must be 1 to 129 decimal digits")]
    SequenceNumber {
        /// The rejected text (cut to 140 characters).
        value: String,
    },
    /// A checkpoint is a sequence number or one of the sentinels.
    #[error(
        "invalid checkpoint {value:?}: must be a sequence number or one of TRIM_HORIZON, LATEST, AT_TIMESTAMP, SHARD_END"
    )]
    Checkpoint {
        /// The rejected text (cut to 140 characters).
        value: String,
    },
}

/// `error` and its sources, joined with `": "`, as `anyhow` prints an error with `{:#}`:
/// what to log or show so that the cause at the bottom of a chain is not lost.
///
/// ```
/// use kinesis_common::{ApiError, ApiErrorKind, error_chain};
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("listing the shards failed")]
/// struct Listing(#[source] ApiError);
///
/// let error = Listing(ApiError::new(ApiErrorKind::Transient, "connection reset"));
/// assert_eq!(
///     error_chain(&error),
///     "listing the shards failed: transient failure: connection reset"
/// );
/// ```
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        text.push_str(": ");
        text.push_str(&next.to_string());
        source = next.source();
    }
    text
}

/// Cuts untrusted text to at most `max` characters for an error message.
pub(crate) fn clip(value: &str, max: usize) -> String {
    match value.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.to_owned(),
    }
}
