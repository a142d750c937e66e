//! The application's side: [`ShardProcessor`], the inputs it is called with, and the
//! [`ProcessorFactory`] that makes one per shard.
//!
//! Invariants:
//! - One processor per shard lease held, called from one task, one call at a time, in the
//!   order `initialize`, `process`*, then exactly one of `shard_ended`, `lease_lost` or
//!   `shutdown_requested` (none of them when `initialize` or `process` failed).
//! - `shard_ended` can only succeed by checkpointing `SHARD_END`: its success value,
//!   [`ShardEndCheckpointed`], can only be made by [`ShardEnd::checkpoint`]. A child shard
//!   starts only after its parents have checkpointed `SHARD_END`, so forgetting it would
//!   stall the children forever (the KCL's "Application didn't checkpoint at end of shard").

use async_trait::async_trait;
use kinesis_common::aggregation::KinesisClientRecord;
use kinesis_common::{ExtendedSequenceNumber, ShardId};

use crate::checkpoint::{CheckpointError, Checkpointer};

/// What a processor's methods may fail with. The consumer logs it and stops the shard (see
/// [`ShardProcessor::process`]); nothing is checkpointed for it.
pub type ProcessorError = Box<dyn std::error::Error + Send + Sync>;

/// What [`ShardProcessor::initialize`] is told.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Initialize {
    /// The shard.
    pub shard_id: ShardId,
    /// The lease's checkpoint: where processing resumes (after it).
    pub checkpoint: ExtendedSequenceNumber,
    /// A prepared but uncommitted checkpoint written by a KCL worker, if any.
    pub pending_checkpoint: Option<ExtendedSequenceNumber>,
}

/// Records handed to [`ShardProcessor::process`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Batch {
    /// The shard.
    pub shard_id: ShardId,
    /// The user records in (sequence, sub-sequence) order: KPL aggregates are opened,
    /// compression envelopes undone, records already checkpointed skipped. Each carries its
    /// data, partition key, explicit hash key (for aggregated records), sequence and
    /// sub-sequence number, and arrival time.
    pub records: Vec<KinesisClientRecord>,
    /// How far the newest record of the shard is ahead of this batch, when Kinesis says.
    pub millis_behind_latest: Option<u64>,
}

/// The end of a shard: every record has been handed out. Checkpoint it with
/// [`checkpoint`](Self::checkpoint) to finish the shard and let its children start.
#[derive(Debug)]
pub struct ShardEnd {
    pub(crate) checkpointer: Checkpointer,
    pub(crate) child_shards: Vec<ShardId>,
}

impl ShardEnd {
    /// The shard that ended.
    pub fn shard_id(&self) -> &ShardId {
        self.checkpointer.shard_id()
    }

    /// The shard's children (one or two after a split or merge), when known.
    pub fn child_shards(&self) -> &[ShardId] {
        &self.child_shards
    }

    /// Checkpoints `SHARD_END`: every record of the shard is processed.
    pub async fn checkpoint(mut self) -> Result<ShardEndCheckpointed, CheckpointError> {
        self.checkpointer.checkpoint_shard_end().await?;
        Ok(ShardEndCheckpointed { _private: () })
    }
}

/// Proof that `SHARD_END` was checkpointed; only [`ShardEnd::checkpoint`] makes one.
#[derive(Debug)]
#[must_use = "return it from shard_ended"]
pub struct ShardEndCheckpointed {
    _private: (),
}

/// What [`ShardProcessor::lease_lost`] is told.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LeaseLost {
    /// The shard.
    pub shard_id: ShardId,
}

/// The application's processing of one shard.
///
/// Every method but [`process`](Self::process) has a default. Delivery is at-least-once:
/// records after the last checkpoint are handed out again to whoever holds the lease next
/// (see [`Deduplicator`](crate::Deduplicator) for effectively-once processing).
#[async_trait]
pub trait ShardProcessor: Send + 'static {
    /// Called once before the first batch. Failing stops the shard: its lease is released
    /// and it is retried by the next worker (possibly this one) that takes it.
    async fn initialize(&mut self, input: Initialize) -> Result<(), ProcessorError> {
        let _ = input;
        Ok(())
    }

    /// Processes a batch; checkpoint through `checkpointer` when the records are durably
    /// handled (every batch, every N seconds, or as the application needs).
    ///
    /// Failing stops the shard without a checkpoint: the lease is released, and the records
    /// after the last checkpoint are handed out again to the next processor of the shard
    /// (the KCL instead logs the error and moves on, losing the batch).
    ///
    /// A checkpoint that fails with [`CheckpointError::LeaseLost`] may be passed up with `?`:
    /// when the lease is lost, an error from `process` is not counted as a failure, and
    /// [`lease_lost`](Self::lease_lost) follows as for any lost lease.
    async fn process(
        &mut self,
        batch: Batch,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError>;

    /// Called when the shard has been read to its end and every record processed. Must
    /// checkpoint `SHARD_END` through [`ShardEnd::checkpoint`] and return its proof; the
    /// default does exactly that. An error is retried with backoff while the lease is held.
    async fn shard_ended(&mut self, end: ShardEnd) -> Result<ShardEndCheckpointed, ProcessorError> {
        Ok(end.checkpoint().await?)
    }

    /// Called when another worker took the lease (or it could not be renewed): the shard is
    /// no longer this processor's and checkpointing is no longer possible. Default: nothing.
    async fn lease_lost(&mut self, input: LeaseLost) {
        let _ = input;
    }

    /// Called at [`Consumer::shutdown`](crate::Consumer::shutdown) while the lease is still
    /// held: checkpoint what is done, then the lease is released so another worker takes the
    /// shard at once. Default: no checkpoint (records since the last one are read again).
    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let _ = checkpointer;
        Ok(())
    }
}

/// Makes a [`ShardProcessor`] for each shard lease taken. Closures `Fn(&ShardId) -> P` are
/// factories.
pub trait ProcessorFactory: Send + Sync + 'static {
    /// The processor type.
    type Processor: ShardProcessor;

    /// A processor for `shard`.
    fn create(&self, shard: &ShardId) -> Self::Processor;
}

impl<F, P> ProcessorFactory for F
where
    F: Fn(&ShardId) -> P + Send + Sync + 'static,
    P: ShardProcessor,
{
    type Processor = P;

    fn create(&self, shard: &ShardId) -> P {
        self(shard)
    }
}

/// A type-erased factory, as the scheduler keeps it.
pub(crate) type DynFactory =
    std::sync::Arc<dyn Fn(&ShardId) -> Box<dyn ShardProcessor> + Send + Sync>;

/// Erases a factory's processor type.
pub(crate) fn erase<F: ProcessorFactory>(factory: F) -> DynFactory {
    std::sync::Arc::new(move |shard: &ShardId| {
        Box::new(factory.create(shard)) as Box<dyn ShardProcessor>
    })
}
