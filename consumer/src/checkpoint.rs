//! Checkpointing: recording in the lease how far a shard's processing got.
//!
//! This module owns the [`Checkpointer`] a processor is handed and its [`CheckpointError`].
//! The write itself goes through the lease's keeper, which serialises it with renewals.
//!
//! Invariants:
//! - A checkpoint is a (sequence, sub-sequence) pair; resuming skips exactly the user records
//!   at or before it, so checkpointing in the middle of a KPL aggregate is exact.
//! - A checkpoint never goes backwards and never goes past the last record handed to the
//!   processor (KCL `RecordProcessorCheckpointer`: `lastCheckpoint <= new <=
//!   largestPermittedCheckpointValue`); either is an error that writes nothing.
//! - A checkpoint after the lease was lost is [`CheckpointError::LeaseLost`] and writes
//!   nothing: a worker that lost a lease never checkpoints it again.
//! - `SHARD_END` can only be checkpointed through [`ShardEnd::checkpoint`](crate::ShardEnd),
//!   once every record of the shard has been handed out.

use kinesis_common::aggregation::KinesisClientRecord;
use kinesis_common::{ExtendedSequenceNumber, SequenceNumber, ShardId};

use crate::keeper::KeeperHandle;
use crate::lease::LeaseStoreError;

/// Why a checkpoint was not written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// This worker no longer holds the shard's lease (another worker took it, or it could not
    /// be renewed in time). Nothing was written; stop processing the shard, the new owner
    /// resumes from the last checkpoint.
    #[error("lease of shard {shard} is no longer held by this worker")]
    LeaseLost {
        /// The shard.
        shard: ShardId,
    },
    /// The position is before the last checkpoint.
    #[error("checkpoint {requested} of shard {shard} is before the last checkpoint {last}")]
    Backwards {
        /// The shard.
        shard: ShardId,
        /// The position asked for.
        requested: ExtendedSequenceNumber,
        /// The last checkpoint.
        last: ExtendedSequenceNumber,
    },
    /// The position is after the last record handed to the processor.
    #[error(
        "checkpoint {requested} of shard {shard} is past the last record handed out ({largest})"
    )]
    BeyondHandedOut {
        /// The shard.
        shard: ShardId,
        /// The position asked for.
        requested: ExtendedSequenceNumber,
        /// The last record handed out, or the lease's checkpoint if none was.
        largest: ExtendedSequenceNumber,
    },
    /// Sentinels (`TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP`, `SHARD_END`) cannot be
    /// checkpointed by hand; `SHARD_END` is written through
    /// [`ShardEnd::checkpoint`](crate::ShardEnd::checkpoint).
    #[error("checkpoint of shard {shard} must be a record's position, not {requested}")]
    Sentinel {
        /// The shard.
        shard: ShardId,
        /// The position asked for.
        requested: ExtendedSequenceNumber,
    },
    /// The lease table failed (after retries); the lease is still held and the checkpoint may
    /// be tried again.
    #[error("checkpoint of shard {shard} could not be written")]
    Store {
        /// The shard.
        shard: ShardId,
        /// The table's error.
        #[source]
        source: LeaseStoreError,
    },
}

impl CheckpointError {
    /// Whether the lease is lost (processing of the shard should stop).
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, Self::LeaseLost { .. })
    }
}

/// Records how far a processor got in its shard.
///
/// Handed to [`ShardProcessor::process`](crate::ShardProcessor::process) and
/// [`ShardProcessor::shutdown_requested`](crate::ShardProcessor::shutdown_requested).
/// Checkpoint after the records are durably handled: everything after the checkpoint is read
/// again by whoever holds the lease next (at-least-once delivery).
#[derive(Debug)]
pub struct Checkpointer {
    keeper: KeeperHandle,
    /// The last checkpoint written (or the lease's checkpoint at start).
    last: ExtendedSequenceNumber,
    /// The last record handed to the processor; `None` before the first.
    largest_permitted: Option<ExtendedSequenceNumber>,
    /// Whether the shard has been read to its end, which permits `SHARD_END`.
    at_shard_end: bool,
}

impl Checkpointer {
    pub(crate) fn new(keeper: KeeperHandle, checkpoint: ExtendedSequenceNumber) -> Self {
        Self { keeper, last: checkpoint, largest_permitted: None, at_shard_end: false }
    }

    /// Notes the last record of a batch about to be handed out.
    pub(crate) fn handed_out(&mut self, last: ExtendedSequenceNumber) {
        self.largest_permitted = Some(last);
    }

    /// Notes that the shard has been read to its end.
    pub(crate) fn reached_shard_end(&mut self) {
        self.at_shard_end = true;
    }

    /// The shard.
    pub fn shard_id(&self) -> &ShardId {
        self.keeper.shard()
    }

    /// The last checkpoint written, or the lease's checkpoint when processing started.
    pub fn last_checkpoint(&self) -> &ExtendedSequenceNumber {
        &self.last
    }

    /// The position of the last record handed to the processor, if any was.
    pub fn last_handed_out(&self) -> Option<&ExtendedSequenceNumber> {
        self.largest_permitted.as_ref()
    }

    /// Checkpoints at the last record handed to the processor (the KCL's `checkpoint()`).
    /// Does nothing but check the lease when no record was handed out since the last
    /// checkpoint.
    pub async fn checkpoint(&mut self) -> Result<(), CheckpointError> {
        match self.largest_permitted.clone() {
            Some(position) if position != self.last => self.write(position).await,
            _ => self.check_held(),
        }
    }

    /// Checkpoints at `record`, which must have been handed out.
    pub async fn checkpoint_record(
        &mut self,
        record: &KinesisClientRecord,
    ) -> Result<(), CheckpointError> {
        self.checkpoint_at(record.extended_sequence_number()).await
    }

    /// Checkpoints at a (sequence, sub-sequence) position: every user record at or before it
    /// is done. Use sub-sequence 0 for a record that was not aggregated.
    pub async fn checkpoint_sequence(
        &mut self,
        sequence: SequenceNumber,
        sub_sequence: u64,
    ) -> Result<(), CheckpointError> {
        self.checkpoint_at(ExtendedSequenceNumber::new(sequence, sub_sequence)).await
    }

    /// Checkpoints at `position`, which must not be before the last checkpoint nor after the
    /// last record handed out, and must not be a sentinel.
    pub async fn checkpoint_at(
        &mut self,
        position: ExtendedSequenceNumber,
    ) -> Result<(), CheckpointError> {
        let shard = || self.keeper.shard().clone();
        if position.is_sentinel() {
            return Err(CheckpointError::Sentinel { shard: shard(), requested: position });
        }
        if position < self.last {
            return Err(CheckpointError::Backwards {
                shard: shard(),
                requested: position,
                last: self.last.clone(),
            });
        }
        let largest = self.largest_permitted.clone().unwrap_or_else(|| self.last.clone());
        if position > largest {
            return Err(CheckpointError::BeyondHandedOut {
                shard: shard(),
                requested: position,
                largest,
            });
        }
        if position == self.last {
            return self.check_held();
        }
        self.write(position).await
    }

    /// Writes `SHARD_END`; only once the shard has been read to its end.
    pub(crate) async fn checkpoint_shard_end(&mut self) -> Result<(), CheckpointError> {
        debug_assert!(self.at_shard_end, "SHARD_END before the shard's end");
        if self.last == ExtendedSequenceNumber::ShardEnd {
            return self.check_held();
        }
        self.write(ExtendedSequenceNumber::ShardEnd).await
    }

    async fn write(&mut self, position: ExtendedSequenceNumber) -> Result<(), CheckpointError> {
        self.keeper.checkpoint(position.clone()).await?;
        self.last = position;
        Ok(())
    }

    fn check_held(&self) -> Result<(), CheckpointError> {
        match self.keeper.holding() {
            crate::keeper::Holding::Held => Ok(()),
            _ => Err(CheckpointError::LeaseLost { shard: self.keeper.shard().clone() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::keeper::{self, KeeperConfig};
    use crate::lease::{InMemoryLeaseStore, Lease, LeaseStore, Operation, WorkerId};

    fn position(sequence: &str, sub: u64) -> ExtendedSequenceNumber {
        ExtendedSequenceNumber::new(SequenceNumber::new(sequence).unwrap(), sub)
    }

    async fn checkpointer(
        start: ExtendedSequenceNumber,
    ) -> (Checkpointer, Arc<InMemoryLeaseStore>) {
        let store = Arc::new(InMemoryLeaseStore::with_table());
        let lease = Lease::new(ShardId::new("shardId-0").unwrap(), start.clone());
        store.create_if_absent(&lease).await.unwrap();
        let lease = store.take(&lease, &WorkerId::new("me")).await.unwrap();
        let config = KeeperConfig {
            lease_duration: Duration::from_secs(10),
            renew_interval: Duration::from_secs(3),
            checkpoint_attempts: 1,
        };
        let (keeper, _task) = keeper::spawn(store.clone(), lease, config);
        (Checkpointer::new(keeper, start), store)
    }

    async fn stored(store: &InMemoryLeaseStore) -> ExtendedSequenceNumber {
        store.get(&ShardId::new("shardId-0").unwrap()).await.unwrap().unwrap().checkpoint
    }

    #[tokio::test(start_paused = true)]
    async fn checkpoints_the_last_record_handed_out() {
        let (mut checkpointer, store) = checkpointer(ExtendedSequenceNumber::TrimHorizon).await;
        checkpointer.handed_out(position("100", 2));
        checkpointer.checkpoint().await.unwrap();
        assert_eq!(stored(&store).await, position("100", 2));
        assert_eq!(checkpointer.last_checkpoint(), &position("100", 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_checkpoint_past_the_last_record_handed_out_is_refused_and_writes_nothing() {
        let (mut checkpointer, store) = checkpointer(position("100", 0)).await;
        checkpointer.handed_out(position("200", 1));
        let error = checkpointer.checkpoint_at(position("200", 2)).await.unwrap_err();
        assert!(matches!(error, CheckpointError::BeyondHandedOut { .. }), "{error}");
        let error = checkpointer.checkpoint_at(position("1000", 0)).await.unwrap_err();
        assert!(matches!(error, CheckpointError::BeyondHandedOut { .. }), "{error}");
        assert_eq!(stored(&store).await, position("100", 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_checkpoint_before_the_last_one_is_refused() {
        let (mut checkpointer, store) = checkpointer(position("100", 5)).await;
        checkpointer.handed_out(position("300", 0));
        let error = checkpointer.checkpoint_at(position("100", 4)).await.unwrap_err();
        assert!(matches!(error, CheckpointError::Backwards { .. }), "{error}");
        // Numeric order, not text order: 99 < 100.
        let error = checkpointer.checkpoint_at(position("99", 9)).await.unwrap_err();
        assert!(matches!(error, CheckpointError::Backwards { .. }), "{error}");
        checkpointer.checkpoint_at(position("250", 0)).await.unwrap();
        assert_eq!(stored(&store).await, position("250", 0));
    }

    #[tokio::test(start_paused = true)]
    async fn sentinels_cannot_be_checkpointed_by_hand() {
        let (mut checkpointer, _store) = checkpointer(ExtendedSequenceNumber::TrimHorizon).await;
        checkpointer.handed_out(position("1", 0));
        for sentinel in [ExtendedSequenceNumber::ShardEnd, ExtendedSequenceNumber::Latest] {
            let error = checkpointer.checkpoint_at(sentinel).await.unwrap_err();
            assert!(matches!(error, CheckpointError::Sentinel { .. }), "{error}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn checkpointing_the_same_position_again_does_not_write() {
        let (mut checkpointer, store) = checkpointer(ExtendedSequenceNumber::TrimHorizon).await;
        checkpointer.handed_out(position("7", 0));
        checkpointer.checkpoint().await.unwrap();
        let writes = store.calls(Operation::UpdateItem);
        checkpointer.checkpoint().await.unwrap();
        checkpointer.checkpoint_at(position("7", 0)).await.unwrap();
        assert_eq!(store.calls(Operation::UpdateItem), writes);
    }
}
