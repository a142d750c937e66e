//! Retrieval: reading one shard's records from Kinesis and handing them, de-aggregated, to
//! the shard consumer through a bounded queue.
//!
//! This module owns the contract between a retriever task and the shard consumer that reads
//! its queue: the [`StartPosition`] a retriever starts from, the [`Fetched`] items it sends,
//! and its [`RetrievalError`]. The polling retriever (GetRecords) lives in [`polling`], the
//! enhanced fan-out retriever (SubscribeToShard) in [`fanout`]; the shard consumer reads
//! either queue the same way.
//!
//! Invariants every retriever keeps:
//! - Records are sent in (sequence, sub-sequence) order, each exactly once, none at or
//!   before the start position's checkpoint (resuming mid-aggregate skips exactly the
//!   sub-records already checkpointed).
//! - Aggregates are de-aggregated with the shard's hash key range as filter, and compression
//!   envelopes are undone (`kinesis_common::aggregation::deaggregate`).
//! - [`Fetched::End`] is the last item of a shard that was read to its end; after it the
//!   queue closes. A queue that closes without `End` or an error means the retriever was
//!   cancelled.
//! - The queue is bounded: a retriever is at most `prefetch` batches ahead of processing.

pub(crate) mod fanout;
pub(crate) mod polling;

use std::time::SystemTime;

use kinesis_common::aggregation::{
    DeaggregationOutcome, KinesisClientRecord, deaggregate_all_with_limit,
};
use kinesis_common::{
    ApiError, ChildShard, ExtendedSequenceNumber, HashKeyRange, KinesisRecord, SequenceNumber,
    ShardId,
};

/// Where a retriever starts reading a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StartPosition {
    /// The oldest record kept.
    TrimHorizon,
    /// Records written after the retriever starts.
    Latest,
    /// The first record that arrived at or after this time.
    AtTimestamp(SystemTime),
    /// After the checkpoint: read from `AT_SEQUENCE_NUMBER(sequence)` and skip every record
    /// whose (sequence, sub-sequence) is at or before `(sequence, sub_sequence)`.
    After {
        /// The checkpointed sequence number.
        sequence: SequenceNumber,
        /// The checkpointed sub-sequence number (0 for a plain record).
        sub_sequence: u64,
    },
}

impl StartPosition {
    /// The position to resume from for a lease's checkpoint; `None` for `SHARD_END`, as the
    /// shard needs no more reading. `AT_TIMESTAMP` takes its time from `timestamp`, the
    /// consumer's configured initial timestamp (the epoch if none is configured).
    pub(crate) fn from_checkpoint(
        checkpoint: &ExtendedSequenceNumber,
        timestamp: Option<SystemTime>,
    ) -> Option<Self> {
        match checkpoint {
            ExtendedSequenceNumber::TrimHorizon => Some(Self::TrimHorizon),
            ExtendedSequenceNumber::Latest => Some(Self::Latest),
            ExtendedSequenceNumber::AtTimestamp => {
                Some(Self::AtTimestamp(timestamp.unwrap_or(SystemTime::UNIX_EPOCH)))
            }
            ExtendedSequenceNumber::ShardEnd => None,
            ExtendedSequenceNumber::Sequence { sequence, sub_sequence } => {
                Some(Self::After { sequence: sequence.clone(), sub_sequence: *sub_sequence })
            }
        }
    }
}

/// One batch of user records, as one GetRecords call (or one SubscribeToShard event) gave.
#[derive(Debug, Clone, Default)]
pub(crate) struct FetchedBatch {
    /// The user records, de-aggregated, filtered, in order; may be empty.
    pub(crate) records: Vec<KinesisClientRecord>,
    /// How far the shard's newest record is ahead of this batch.
    pub(crate) millis_behind_latest: Option<u64>,
    /// Kinesis records in the response (before de-aggregation).
    pub(crate) kinesis_records: usize,
    /// Bytes of Kinesis record data in the response (before decompression).
    pub(crate) bytes: usize,
    /// Kinesis records that looked like aggregates or envelopes but were corrupt, and were
    /// handed on as plain records.
    pub(crate) corrupt: usize,
    /// User records dropped because their aggregate held records outside the shard's range.
    pub(crate) filtered_out: usize,
    /// Kinesis records dropped because their sequence number was not past the last one this
    /// retriever received: an endpoint that hands a record out again (LocalStack 4.7's
    /// kinesis-mock re-reads a shard's first record from later iterators).
    pub(crate) redelivered: usize,
}

/// What a retriever sends.
#[derive(Debug, Clone)]
pub(crate) enum Fetched {
    /// Records (possibly none, when the shard is idle and the consumer asked for empty
    /// batches; retrievers may also skip empty batches).
    Batch(FetchedBatch),
    /// The shard is closed and was read to its end; these are its children (empty when the
    /// service did not report them).
    End {
        /// The children of the shard.
        child_shards: Vec<ChildShard>,
    },
}

/// Why a retriever stopped without reaching the shard's end.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum RetrievalError {
    /// A Kinesis call failed in a way retrying cannot fix (stream or shard not found, access
    /// denied, invalid argument).
    #[error("reading shard {shard} failed")]
    Api {
        /// The shard.
        shard: ShardId,
        /// The last error.
        #[source]
        source: ApiError,
    },
}

/// Turns GetRecords records into a [`FetchedBatch`]: de-aggregates them (undoing compression
/// envelopes) with the shard's hash range as filter, drops user records at or before the
/// checkpoint being resumed, and counts what it saw.
#[derive(Debug, Clone)]
pub(crate) struct BatchBuilder {
    pub(crate) hash_range: Option<HashKeyRange>,
    pub(crate) max_decompressed_len: usize,
    /// The checkpoint of [`StartPosition::After`]: user records at or before it are dropped.
    /// Cleared once a Kinesis record past its sequence number arrives, since records come in
    /// sequence order.
    pub(crate) skip_through: Option<ExtendedSequenceNumber>,
    /// The sequence number of the last Kinesis record seen: records come in increasing
    /// sequence order, so one at or before it is a redelivery and is dropped.
    pub(crate) last_sequence: Option<SequenceNumber>,
}

impl BatchBuilder {
    pub(crate) fn build(
        &mut self,
        records: &[KinesisRecord],
        millis_behind_latest: Option<u64>,
    ) -> FetchedBatch {
        let mut batch = FetchedBatch {
            records: Vec::with_capacity(records.len()),
            millis_behind_latest,
            kinesis_records: records.len(),
            ..FetchedBatch::default()
        };
        // Records already delivered (a retried page) are skipped; the rest are de-aggregated
        // together, so that the digests of the page's aggregates are computed at once.
        let mut fresh = Vec::with_capacity(records.len());
        for record in records {
            if let Some(last) = &self.last_sequence
                && record.sequence_number <= *last
            {
                batch.redelivered += 1;
                continue;
            }
            self.last_sequence = Some(record.sequence_number.clone());
            batch.bytes += record.data.len();
            fresh.push(record);
        }
        let deaggregated = deaggregate_all_with_limit(
            fresh.iter().copied(),
            self.hash_range,
            self.max_decompressed_len,
        );
        for (record, deaggregated) in fresh.into_iter().zip(deaggregated) {
            if let Some(checkpoint) = &self.skip_through
                && checkpoint.sequence().is_none_or(|sequence| record.sequence_number > *sequence)
            {
                self.skip_through = None;
            }
            match deaggregated.outcome {
                DeaggregationOutcome::PassedThrough(_) => batch.corrupt += 1,
                DeaggregationOutcome::FilteredOut { dropped, .. } => batch.filtered_out += dropped,
                _ => {}
            }
            match &self.skip_through {
                None => batch.records.extend(deaggregated.records),
                Some(checkpoint) => batch.records.extend(
                    deaggregated
                        .records
                        .into_iter()
                        .filter(|user| user.extended_sequence_number() > *checkpoint),
                ),
            }
        }
        batch
    }
}

/// Reading a retriever's queue in tests: each method fails the test on anything unexpected,
/// and on nothing at all within ten minutes of (paused) time.
#[cfg(test)]
pub(crate) trait QueueReader {
    /// The queue the retriever fills.
    fn queue(&mut self) -> &mut tokio::sync::mpsc::Receiver<Result<Fetched, RetrievalError>>;

    /// The next item, failing the test if none comes.
    async fn next(&mut self) -> Option<Result<Fetched, RetrievalError>> {
        tokio::time::timeout(std::time::Duration::from_secs(600), self.queue().recv())
            .await
            .expect("the retriever sends or closes")
    }

    /// The next batch; fails the test on anything else.
    async fn batch(&mut self) -> FetchedBatch {
        match self.next().await {
            Some(Ok(Fetched::Batch(batch))) => batch,
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    /// User records of the next batches until `n` were received.
    async fn records(&mut self, n: usize) -> Vec<KinesisClientRecord> {
        let mut records = Vec::new();
        while records.len() < n {
            records.extend(self.batch().await.records);
        }
        records
    }

    /// Every user record until the shard's end, and the children it reported.
    async fn read_to_end(&mut self) -> (Vec<KinesisClientRecord>, Vec<ChildShard>) {
        let mut records = Vec::new();
        loop {
            match self.next().await {
                Some(Ok(Fetched::Batch(batch))) => records.extend(batch.records),
                Some(Ok(Fetched::End { child_shards })) => return (records, child_shards),
                other => panic!("expected a batch or the end, got {other:?}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn record(sequence: &str) -> KinesisRecord {
        KinesisRecord {
            sequence_number: SequenceNumber::new(sequence).unwrap(),
            partition_key: "k".into(),
            data: Bytes::from(format!("data-{sequence}")),
            approximate_arrival: None,
        }
    }

    #[test]
    fn a_record_handed_out_again_by_the_endpoint_is_dropped_once_seen() {
        let mut builder = BatchBuilder {
            hash_range: None,
            max_decompressed_len: 1 << 20,
            skip_through: None,
            last_sequence: None,
        };
        let first = builder.build(&[record("100"), record("200")], None);
        assert_eq!(first.records.len(), 2);
        // An endpoint that re-reads the shard's first record, then goes on.
        let second = builder.build(&[record("100"), record("200"), record("1000")], None);
        let sequences: Vec<&str> =
            second.records.iter().map(|r| r.sequence_number.as_str()).collect();
        assert_eq!(sequences, ["1000"], "numeric order: 1000 > 200");
        assert_eq!(second.redelivered, 2);
    }
}
