//! A processor that records what it is given, for tests of this crate and of code built on
//! it (behind the `test-util` feature).
//!
//! [`Recorder`] is the shared log; [`RecordingProcessor`] writes to it and checkpoints as its
//! [`CheckpointPolicy`] says. A [`Hook`] runs inside `process`, before the checkpoint, so a
//! test can act at the worst moment (steal the lease, stop the consumer).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use kinesis_common::aggregation::KinesisClientRecord;
use kinesis_common::{ExtendedSequenceNumber, ShardId};

use crate::checkpoint::Checkpointer;
use crate::processor::{
    Batch, Initialize, LeaseLost, ProcessorError, ShardEnd, ShardEndCheckpointed, ShardProcessor,
};

/// One call a processor received, or a checkpoint it tried.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessorEvent {
    /// `initialize`, with the checkpoint it was given.
    Initialized(ShardId, ExtendedSequenceNumber),
    /// `process`, with the number of records.
    Batch(ShardId, usize),
    /// A checkpoint: the position written, or the error's text.
    Checkpointed(ShardId, Result<ExtendedSequenceNumber, String>),
    /// `shard_ended`.
    ShardEnded(ShardId),
    /// `lease_lost`.
    LeaseLost(ShardId),
    /// `shutdown_requested`.
    ShutdownRequested(ShardId),
}

#[derive(Debug, Default)]
struct Log {
    events: Vec<ProcessorEvent>,
    records: Vec<(ShardId, KinesisClientRecord)>,
}

/// The shared log of every [`RecordingProcessor`] made with it. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    log: Arc<Mutex<Log>>,
}

impl Recorder {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every event, in order.
    pub fn events(&self) -> Vec<ProcessorEvent> {
        self.lock().events.clone()
    }

    /// Every record handed out, with its shard, in order.
    pub fn records(&self) -> Vec<(ShardId, KinesisClientRecord)> {
        self.lock().records.clone()
    }

    /// How many records were handed out.
    pub fn record_count(&self) -> usize {
        self.lock().records.len()
    }

    fn push(&self, event: ProcessorEvent) {
        self.lock().events.push(event);
    }
}

/// When a [`RecordingProcessor`] checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointPolicy {
    /// After every batch, at its last record.
    EveryBatch,
    /// As [`EveryBatch`](Self::EveryBatch), and a failed checkpoint fails `process` (the
    /// error passed up with `?`).
    EveryBatchOrFail,
    /// Never (not even at shutdown).
    Never,
    /// Only in `shutdown_requested`.
    OnShutdown,
}

/// Runs inside `process` before the checkpoint: given the shard and the batch.
pub type Hook =
    Arc<dyn Fn(ShardId, Batch) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A processor that records every call in a [`Recorder`].
pub struct RecordingProcessor {
    recorder: Recorder,
    policy: CheckpointPolicy,
    hook: Option<Hook>,
}

impl std::fmt::Debug for RecordingProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingProcessor").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl RecordingProcessor {
    /// A processor writing to `recorder` and checkpointing as `policy` says.
    pub fn new(recorder: Recorder, policy: CheckpointPolicy) -> Self {
        Self { recorder, policy, hook: None }
    }

    /// Runs `hook` inside every `process` call, before the checkpoint.
    pub fn with_hook(mut self, hook: Hook) -> Self {
        self.hook = Some(hook);
        self
    }

    async fn checkpoint(&self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        let shard = checkpointer.shard_id().clone();
        let result = checkpointer.checkpoint().await;
        let logged = match &result {
            Ok(()) => Ok(checkpointer.last_checkpoint().clone()),
            Err(error) => Err(error.to_string()),
        };
        self.recorder.push(ProcessorEvent::Checkpointed(shard, logged));
        Ok(result?)
    }
}

#[async_trait]
impl ShardProcessor for RecordingProcessor {
    async fn initialize(&mut self, input: Initialize) -> Result<(), ProcessorError> {
        self.recorder.push(ProcessorEvent::Initialized(input.shard_id, input.checkpoint));
        Ok(())
    }

    async fn process(
        &mut self,
        batch: Batch,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        {
            let mut log = self.recorder.lock();
            log.events.push(ProcessorEvent::Batch(batch.shard_id.clone(), batch.records.len()));
            let shard = batch.shard_id.clone();
            log.records.extend(batch.records.iter().map(|r| (shard.clone(), r.clone())));
        }
        if let Some(hook) = &self.hook {
            hook(batch.shard_id.clone(), batch).await;
        }
        match self.policy {
            CheckpointPolicy::EveryBatch => {
                let _ = self.checkpoint(checkpointer).await;
            }
            CheckpointPolicy::EveryBatchOrFail => self.checkpoint(checkpointer).await?,
            CheckpointPolicy::Never | CheckpointPolicy::OnShutdown => {}
        }
        Ok(())
    }

    async fn shard_ended(&mut self, end: ShardEnd) -> Result<ShardEndCheckpointed, ProcessorError> {
        self.recorder.push(ProcessorEvent::ShardEnded(end.shard_id().clone()));
        Ok(end.checkpoint().await?)
    }

    async fn lease_lost(&mut self, input: LeaseLost) {
        self.recorder.push(ProcessorEvent::LeaseLost(input.shard_id));
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.recorder.push(ProcessorEvent::ShutdownRequested(checkpointer.shard_id().clone()));
        if self.policy != CheckpointPolicy::Never {
            let _ = self.checkpoint(checkpointer).await;
        }
        Ok(())
    }
}
