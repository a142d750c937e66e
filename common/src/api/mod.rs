//! The Kinesis seam: the one trait through which the producer, the consumer, the examples and
//! the tests talk to Kinesis, with request and result types of this crate's own.
//!
//! Implementations: [`SdkKinesis`](crate::SdkKinesis) over `aws-sdk-kinesis` (feature `aws`),
//! and `FakeKinesis` in memory (feature `test-util`). The contract suite in
//! `fake::contract` runs against both, so the fake cannot drift from the real service.
//!
//! The trait is object safe: hold it as `Arc<dyn KinesisApi>`.

pub mod endpoint;
mod error;
#[cfg(feature = "aws")]
pub mod sdk;

use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

pub use error::{ApiError, ApiErrorKind};

use crate::{
    ConsumerName, HashKey, HashKeyRange, PartitionKey, SequenceNumber, ShardId, StreamName,
};

/// One shard as ListShards describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The shard's id.
    pub id: ShardId,
    /// The shard this one was split from, or the first of the two it was merged from.
    pub parent: Option<ShardId>,
    /// The second parent of a shard made by a merge.
    pub adjacent_parent: Option<ShardId>,
    /// The hash keys the shard owns.
    pub hash_range: HashKeyRange,
    /// The first sequence number the shard handed out.
    pub starting_sequence: SequenceNumber,
    /// Set once the shard is closed (split or merged away): its last sequence number.
    pub ending_sequence: Option<SequenceNumber>,
}

impl Shard {
    /// Whether the shard still accepts writes. Closed shards have an ending sequence number;
    /// filter on this rather than on ListShards' `ShardFilter`, which emulators ignore.
    pub fn is_open(&self) -> bool {
        self.ending_sequence.is_none()
    }

    /// The shard's parents: none, one (split or new), or two (merge).
    pub fn parents(&self) -> impl Iterator<Item = &ShardId> {
        self.parent.iter().chain(self.adjacent_parent.iter())
    }

    /// `shards` ordered so that every shard comes after its parents (those in the list; a
    /// parent past the stream's retention is no longer listed and does not count): the order
    /// in which a consumer must read them to keep each key's records in order.
    pub fn parents_first(shards: &[Shard]) -> Vec<&Shard> {
        let listed = |id: &ShardId| shards.iter().any(|s| &s.id == id);
        let mut out: Vec<&Shard> = Vec::with_capacity(shards.len());
        let mut left: Vec<&Shard> = shards.iter().collect();
        while !left.is_empty() {
            let before = left.len();
            left.retain(|s| {
                let ready = s.parents().all(|p| !listed(p) || out.iter().any(|o| &o.id == p));
                if ready {
                    out.push(s);
                }
                !ready
            });
            if left.len() == before {
                // A parent cycle cannot come from Kinesis; keep the rest in list order.
                out.append(&mut left);
            }
        }
        out
    }
}

/// A stream's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamStatus {
    /// Being created; not writable yet.
    Creating,
    /// Being deleted.
    Deleting,
    /// Readable and writable.
    Active,
    /// Readable and writable while a resharding or other update runs.
    Updating,
}

/// What DescribeStreamSummary says about a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    /// The stream's name.
    pub name: StreamName,
    /// The stream's ARN (needed to register fan-out consumers).
    pub arn: String,
    /// The stream's state.
    pub status: StreamStatus,
    /// How many shards are open.
    pub open_shard_count: u32,
    /// How long records are kept.
    pub retention: std::time::Duration,
}

/// One record for PutRecords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRecordsEntry {
    /// The partition key (hashed to place the record unless an explicit hash key is given).
    pub partition_key: PartitionKey,
    /// A hash key that overrides the partition key's hash.
    pub explicit_hash_key: Option<HashKey>,
    /// The data blob.
    pub data: Bytes,
}

impl PutRecordsEntry {
    /// The size this entry counts for the per-record and per-request limits: data plus the
    /// partition key's UTF-8 bytes (Kinesis API reference, PutRecords).
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len_bytes()
    }
}

/// The outcome of one entry of a PutRecords request; entries come back in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutRecordsOutcome {
    /// The record was written.
    Written {
        /// The shard that took it.
        shard_id: ShardId,
        /// Its sequence number in that shard.
        sequence_number: SequenceNumber,
    },
    /// The record was not written; the rest of the request may have been.
    Failed(ApiError),
}

/// Where to start reading a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardIteratorPosition {
    /// The oldest record kept.
    TrimHorizon,
    /// Only records written after the iterator is made.
    Latest,
    /// At the record with this sequence number.
    AtSequenceNumber(SequenceNumber),
    /// Just after the record with this sequence number.
    AfterSequenceNumber(SequenceNumber),
    /// At the first record that arrived at or after this time.
    AtTimestamp(SystemTime),
}

/// An opaque position for GetRecords, valid for five minutes (Kinesis API reference,
/// GetShardIterator).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ShardIterator(pub String);

impl std::fmt::Debug for ShardIterator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Iterators are long and say nothing to a reader: show only a prefix.
        let shown: String = self.0.chars().take(12).collect();
        write!(f, "ShardIterator({shown}…)")
    }
}

/// One Kinesis record as GetRecords or SubscribeToShard returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinesisRecord {
    /// The record's sequence number.
    pub sequence_number: SequenceNumber,
    /// The partition key it was written with (for a KPL aggregate, the outer key).
    pub partition_key: String,
    /// The data blob (for a KPL aggregate, the encoded aggregate).
    pub data: Bytes,
    /// When Kinesis accepted the record.
    pub approximate_arrival: Option<SystemTime>,
}

/// A child of a closed shard, as GetRecords and SubscribeToShard report at the shard's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildShard {
    /// The child's id.
    pub shard_id: ShardId,
    /// Every parent of the child (two after a merge).
    pub parent_shards: Vec<ShardId>,
    /// The child's hash keys.
    pub hash_range: HashKeyRange,
}

/// What one GetRecords call returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetRecordsOutput {
    /// The records, in sequence order.
    pub records: Vec<KinesisRecord>,
    /// Where to read next; `None` once a closed shard has been read to its end.
    pub next_iterator: Option<ShardIterator>,
    /// How far the reader is behind the newest record of the shard.
    pub millis_behind_latest: Option<u64>,
    /// The children of a closed shard, in the last response of that shard.
    pub child_shards: Vec<ChildShard>,
}

/// A registered enhanced fan-out consumer's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsumerStatus {
    /// Being registered; cannot subscribe yet.
    Creating,
    /// Being deregistered.
    Deleting,
    /// Ready for SubscribeToShard.
    Active,
}

/// An enhanced fan-out consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerDescription {
    /// The consumer's name.
    pub name: ConsumerName,
    /// The consumer's ARN, which SubscribeToShard takes.
    pub arn: String,
    /// Its state.
    pub status: ConsumerStatus,
}

/// One event of a SubscribeToShard stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeToShardEvent {
    /// The records pushed by this event.
    pub records: Vec<KinesisRecord>,
    /// Where to resubscribe from; `None` once a closed shard has been read to its end.
    pub continuation_sequence_number: Option<SequenceNumber>,
    /// How far the subscriber is behind the newest record.
    pub millis_behind_latest: Option<u64>,
    /// The children of a closed shard, with the shard's last event.
    pub child_shards: Vec<ChildShard>,
}

/// An open SubscribeToShard event stream.
#[async_trait]
pub trait Subscription: Send {
    /// The next event; `Ok(None)` once the subscription has ended (after about five minutes,
    /// or at the end of a closed shard).
    async fn next_event(&mut self) -> Result<Option<SubscribeToShardEvent>, ApiError>;
}

/// The Kinesis operations this toolkit needs.
///
/// Every method maps to one Kinesis API call (ListShards follows its pages), returns this
/// crate's types and reports failures as [`ApiError`], whose [`kind`](ApiError::kind) tells
/// callers whether and how to retry.
#[async_trait]
pub trait KinesisApi: Send + Sync + 'static {
    /// ListShards for the stream, following every page; open and closed shards alike.
    async fn list_shards(&self, stream: &StreamName) -> Result<Vec<Shard>, ApiError>;

    /// DescribeStreamSummary.
    async fn describe_stream_summary(&self, stream: &StreamName)
    -> Result<StreamSummary, ApiError>;

    /// PutRecords: at most 500 entries and 5 MiB (checked by the caller: emulators do not).
    /// One outcome per entry, in request order.
    async fn put_records(
        &self,
        stream: &StreamName,
        entries: Vec<PutRecordsEntry>,
    ) -> Result<Vec<PutRecordsOutcome>, ApiError>;

    /// GetShardIterator.
    async fn get_shard_iterator(
        &self,
        stream: &StreamName,
        shard: &ShardId,
        position: ShardIteratorPosition,
    ) -> Result<ShardIterator, ApiError>;

    /// GetRecords with an optional record limit (at most 10 000).
    async fn get_records(
        &self,
        iterator: &ShardIterator,
        limit: Option<u32>,
    ) -> Result<GetRecordsOutput, ApiError>;

    /// CreateStream in provisioned mode with `shard_count` shards. Returns at once; the stream
    /// is `Creating` until [`describe_stream_summary`](Self::describe_stream_summary) says
    /// `Active`.
    async fn create_stream(&self, stream: &StreamName, shard_count: u32) -> Result<(), ApiError>;

    /// DeleteStream, also deleting any registered consumers.
    async fn delete_stream(&self, stream: &StreamName) -> Result<(), ApiError>;

    /// SplitShard at `new_starting_hash_key` (which becomes the start of the second child).
    async fn split_shard(
        &self,
        stream: &StreamName,
        shard: &ShardId,
        new_starting_hash_key: HashKey,
    ) -> Result<(), ApiError>;

    /// MergeShards: `shard` and `adjacent` must have contiguous hash ranges.
    async fn merge_shards(
        &self,
        stream: &StreamName,
        shard: &ShardId,
        adjacent: &ShardId,
    ) -> Result<(), ApiError>;

    /// UpdateShardCount with uniform scaling.
    async fn update_shard_count(&self, stream: &StreamName, target: u32) -> Result<(), ApiError>;

    /// RegisterStreamConsumer; the consumer is `Creating` until it becomes `Active`.
    async fn register_stream_consumer(
        &self,
        stream_arn: &str,
        name: &ConsumerName,
    ) -> Result<ConsumerDescription, ApiError>;

    /// DescribeStreamConsumer by stream ARN and name.
    async fn describe_stream_consumer(
        &self,
        stream_arn: &str,
        name: &ConsumerName,
    ) -> Result<ConsumerDescription, ApiError>;

    /// DeregisterStreamConsumer by stream ARN and name.
    async fn deregister_stream_consumer(
        &self,
        stream_arn: &str,
        name: &ConsumerName,
    ) -> Result<(), ApiError>;

    /// SubscribeToShard: an event stream that lives at most five minutes.
    async fn subscribe_to_shard(
        &self,
        consumer_arn: &str,
        shard: &ShardId,
        position: ShardIteratorPosition,
    ) -> Result<Box<dyn Subscription>, ApiError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parent: Option<&str>, adjacent: Option<&str>) -> Shard {
        Shard {
            id: ShardId::new(id).unwrap(),
            parent: parent.map(|p| ShardId::new(p).unwrap()),
            adjacent_parent: adjacent.map(|p| ShardId::new(p).unwrap()),
            hash_range: HashKeyRange::FULL,
            starting_sequence: SequenceNumber::new("1").unwrap(),
            ending_sequence: None,
        }
    }

    #[test]
    fn parents_come_before_children_and_unlisted_parents_do_not_block() {
        // Listed child first: a merge of a split child with a shard whose parent expired.
        let shards = [
            shard("merged", Some("left"), Some("right")),
            shard("left", Some("root"), None),
            shard("right", Some("gone"), None),
            shard("root", None, None),
        ];
        let order: Vec<&str> =
            Shard::parents_first(&shards).iter().map(|s| s.id.as_str()).collect();
        let at = |id: &str| order.iter().position(|o| *o == id).unwrap();
        assert_eq!(order.len(), 4);
        assert!(at("root") < at("left"));
        assert!(at("left") < at("merged") && at("right") < at("merged"));
    }
}
