//! The shard consumer: one task per held lease that runs the [`lifecycle`](crate::lifecycle)
//! state machine, doing each state's work: wait for the parents, initialize the processor
//! and start retrieval, hand out batches, and finish (shard end, lost lease, shutdown or
//! failure).
//!
//! This module owns the processor of its shard and the shard's retrieval. The lease itself
//! belongs to its keeper (`keeper.rs`); this task only asks it to checkpoint and release.
//!
//! Invariants:
//! - Records are handed out only after every parent lease has checkpointed `SHARD_END` or
//!   no longer exists (KCL `BlockOnParentShardTask`), and only after a write conditional on
//!   the lease confirmed that this worker still holds it (it may have been stolen while the
//!   consumer waited on its parents).
//! - The processor is called one method at a time; a lease lost or a shutdown asked for
//!   while `process` runs is acted on when it returns, never by cancelling it.
//! - At shard end the children's leases exist (created from the shard's `ChildShards`, or by
//!   the shard sync when the service did not report them) before `SHARD_END` is
//!   checkpointed, so a shard sync that deletes the finished lease cannot lose the children.

use std::sync::Arc;
use std::time::Duration;

use kinesis_common::backoff::Backoff;
use kinesis_common::{
    ApiErrorKind, ChildShard, ExtendedSequenceNumber, KinesisApi, ShardId, StreamName,
};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::checkpoint::Checkpointer;
use crate::config::ConsumerConfig;
use crate::config::{PollingSettings, Retrieval};
use crate::keeper::{Holding, KeeperHandle};
use crate::lease::{Lease, LeaseStore};
use crate::lifecycle::{Event, ShutdownReason, State};
use crate::metrics;
use crate::processor::{Batch, DynFactory, Initialize, LeaseLost, ShardEnd, ShardProcessor};
use crate::retrieval::fanout::{self, FanOutConfig};
use crate::retrieval::polling;
use crate::retrieval::{Fetched, RetrievalError, StartPosition};

/// What the shard consumer tells the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ShardNotice {
    /// A shard ended: new leases may be waiting. `children_known` is false when the service
    /// did not report the children and a shard sync must find them.
    ShardEnded {
        /// Whether the children's leases were created from the shard's `ChildShards`.
        children_known: bool,
    },
    /// Reading a shard was answered "not found": the stream may have been deleted.
    NotFound,
}

/// How one shard consumer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardReport {
    /// The shard.
    pub shard_id: ShardId,
    /// Why it shut down; `None` when it stopped before its processor was initialized
    /// (while waiting on its parents, or because `initialize` failed).
    pub reason: Option<ShutdownReason>,
    /// The last checkpoint this worker knew of.
    pub checkpoint: ExtendedSequenceNumber,
    /// User records handed to the processor.
    pub records_processed: u64,
    /// What went wrong, for [`ShutdownReason::Failed`] and failed initializations.
    pub error: Option<String>,
}

/// Everything a shard consumer needs besides its lease.
#[derive(Clone)]
pub(crate) struct ShardContext {
    pub(crate) api: Arc<dyn KinesisApi>,
    pub(crate) store: Arc<dyn LeaseStore>,
    pub(crate) stream: StreamName,
    pub(crate) factory: DynFactory,
    pub(crate) config: Arc<ConsumerConfig>,
    pub(crate) notices: mpsc::UnboundedSender<ShardNotice>,
    /// The registered fan-out consumer's ARN, with [`Retrieval::FanOut`](crate::Retrieval).
    pub(crate) consumer_arn: Option<String>,
}

/// Runs the shard consumer of `lease` (just taken; `keeper` holds it) until it is done.
/// `shutdown` asks it to finish gracefully.
pub(crate) async fn run(
    context: ShardContext,
    lease: Lease,
    keeper: KeeperHandle,
    shutdown: CancellationToken,
) -> ShardReport {
    let span = info_span!("shard", shard = %lease.key);
    ShardConsumer::new(context, lease, keeper, shutdown).run().instrument(span).await
}

struct ShardConsumer {
    context: ShardContext,
    lease: Lease,
    keeper: KeeperHandle,
    shutdown: CancellationToken,
    state: State,
    processor: Option<Box<dyn ShardProcessor>>,
    checkpointer: Option<Checkpointer>,
    retrieval: Option<Retriever>,
    children: Vec<ChildShard>,
    records_processed: u64,
    error: Option<String>,
    reason: Option<ShutdownReason>,
}

struct Retriever {
    queue: mpsc::Receiver<Result<Fetched, RetrievalError>>,
    cancel: CancellationToken,
}

impl Drop for Retriever {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl ShardConsumer {
    fn new(
        context: ShardContext,
        lease: Lease,
        keeper: KeeperHandle,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            context,
            lease,
            keeper,
            shutdown,
            state: State::WaitingOnParents,
            processor: None,
            checkpointer: None,
            retrieval: None,
            children: Vec::new(),
            records_processed: 0,
            error: None,
            reason: None,
        }
    }

    async fn run(mut self) -> ShardReport {
        loop {
            let event = match self.state {
                State::WaitingOnParents => self.wait_on_parents().await,
                State::Initializing => self.initialize().await,
                State::Processing => self.process_next().await,
                State::ShuttingDown(reason) => {
                    self.reason = Some(reason);
                    self.shut_down(reason).await
                }
                State::Done => break,
            };
            let next = self.state.next(event);
            if next != self.state {
                debug!(from = ?self.state, to = ?next, ?event, "shard consumer state");
            }
            self.state = next;
        }
        // Whatever ended the shard consumer, make sure nothing renews its lease any more
        // (a no-op when the lease was already released or lost).
        self.retrieval = None;
        self.keeper.release().await;
        ShardReport {
            shard_id: self.lease.key.clone(),
            reason: self.reason,
            checkpoint: self
                .checkpointer
                .as_ref()
                .map(|c| c.last_checkpoint().clone())
                .unwrap_or_else(|| self.lease.checkpoint.clone()),
            records_processed: self.records_processed,
            error: self.error,
        }
    }

    /// An event for "stop waiting", if the lease was lost or a shutdown asked for.
    fn interruption(&self) -> Option<Event> {
        if self.keeper.holding() != Holding::Held {
            Some(Event::LeaseLost)
        } else if self.shutdown.is_cancelled() {
            Some(Event::ShutdownRequested)
        } else {
            None
        }
    }

    /// Waits `delay` unless the lease is lost or a shutdown asked for first.
    ///
    /// Takes the keeper and token rather than `&self`: a future holding `&self` across an
    /// await would need the processor to be `Sync`.
    async fn pause(
        keeper: &KeeperHandle,
        shutdown: &CancellationToken,
        delay: Duration,
    ) -> Option<Event> {
        tokio::select! {
            _ = keeper.lost() => Some(Event::LeaseLost),
            () = shutdown.cancelled() => Some(Event::ShutdownRequested),
            () = tokio::time::sleep(delay) => None,
        }
    }

    async fn wait_on_parents(&mut self) -> Event {
        let started = Instant::now();
        let mut warned = false;
        loop {
            if let Some(event) = self.interruption() {
                return event;
            }
            match pending_parent(self.context.store.as_ref(), &self.lease).await {
                Ok(None) => return Event::ParentsDone,
                Ok(Some(parent)) => {
                    debug!(%parent, "waiting for the parent shard to finish");
                    // A child blocked for long usually means a parent's processor does not
                    // finish; say so once rather than every poll.
                    if !warned && started.elapsed() > Duration::from_secs(300) {
                        warn!(%parent, "child shard still waiting for its parent after 5 minutes");
                        warned = true;
                    }
                }
                Err(error) => warn!(error = %error, "could not read a parent lease; retrying"),
            }
            if let Some(event) =
                Self::pause(&self.keeper, &self.shutdown, self.context.config.parent_poll_interval)
                    .await
            {
                return event;
            }
        }
    }

    async fn initialize(&mut self) -> Event {
        if let Some(event) = self.interruption() {
            return event;
        }
        // Another worker may have taken the lease while this one waited on the parents (the
        // taker steals waiting children first), and the keeper would learn of it only at its
        // next renewal: confirm the lease with a write first, so that no record of a lease
        // already lost is handed out, from a checkpoint the new holder may have passed.
        loop {
            match self.keeper.confirm().await {
                Ok(()) => break,
                Err(error) if error.is_lease_lost() => return Event::LeaseLost,
                Err(error) => {
                    warn!(error = %error, "could not confirm the lease before reading; retrying");
                    let pause = self.context.config.parent_poll_interval;
                    if let Some(event) = Self::pause(&self.keeper, &self.shutdown, pause).await {
                        return event;
                    }
                }
            }
        }
        let shard = self.lease.key.clone();
        let mut processor = (self.context.factory)(&shard);
        let input = Initialize {
            shard_id: shard.clone(),
            checkpoint: self.lease.checkpoint.clone(),
            pending_checkpoint: self.lease.pending_checkpoint.clone(),
        };
        if let Err(error) = processor.initialize(input).await {
            error!(error = %error, "processor initialize failed; releasing the lease");
            self.error = Some(format!("initialize failed: {error}"));
            return Event::Failed;
        }
        self.processor = Some(processor);
        self.checkpointer =
            Some(Checkpointer::new(self.keeper.clone(), self.lease.checkpoint.clone()));
        let config = &self.context.config;
        match StartPosition::from_checkpoint(
            &self.lease.checkpoint,
            config.initial_position.timestamp(),
        ) {
            Some(start) => {
                let cancel = CancellationToken::new();
                let context = &self.context;
                let (queue, _task) = match (&config.retrieval, &context.consumer_arn) {
                    (Retrieval::FanOut { .. }, Some(arn)) => fanout::spawn(
                        context.api.clone(),
                        arn.clone(),
                        context.stream.clone(),
                        shard,
                        self.lease.hash_range,
                        start,
                        FanOutConfig {
                            deliver_empty_batches: config.deliver_empty_batches,
                            ..FanOutConfig::default()
                        },
                        cancel.clone(),
                    ),
                    (Retrieval::Polling(settings), _) => polling::spawn(
                        context.api.clone(),
                        context.stream.clone(),
                        shard,
                        self.lease.hash_range,
                        start,
                        settings.to_config(config.deliver_empty_batches),
                        cancel.clone(),
                    ),
                    // Fan-out without a registered consumer cannot happen (start registers
                    // it); read by polling rather than not at all.
                    _ => polling::spawn(
                        context.api.clone(),
                        context.stream.clone(),
                        shard,
                        self.lease.hash_range,
                        start,
                        PollingSettings::default().to_config(config.deliver_empty_batches),
                        cancel.clone(),
                    ),
                };
                self.retrieval = Some(Retriever { queue, cancel });
            }
            // Already at SHARD_END (a lease left behind by a worker that stopped between
            // checkpointing and releasing): there is nothing to read.
            None => self.retrieval = None,
        }
        info!(checkpoint = %self.lease.checkpoint, "shard consumer initialized");
        Event::Initialized
    }

    async fn process_next(&mut self) -> Event {
        let Some(retrieval) = self.retrieval.as_mut() else {
            self.mark_shard_end(Vec::new());
            return Event::ShardEndReached;
        };
        let item = tokio::select! {
            biased;
            _ = self.keeper.lost() => return Event::LeaseLost,
            () = self.shutdown.cancelled() => return Event::ShutdownRequested,
            item = retrieval.queue.recv() => item,
        };
        match item {
            Some(Ok(Fetched::Batch(fetched))) => {
                let shard = self.lease.key.clone();
                metrics::decoding(
                    &shard,
                    fetched.corrupt,
                    fetched.filtered_out,
                    fetched.redelivered,
                );
                if fetched.records.is_empty() && !self.context.config.deliver_empty_batches {
                    return Event::BatchProcessed;
                }
                let count = fetched.records.len();
                let bytes: usize = fetched.records.iter().map(|r| r.data.len()).sum();
                let (Some(processor), Some(checkpointer)) =
                    (self.processor.as_mut(), self.checkpointer.as_mut())
                else {
                    return Event::Failed;
                };
                if let Some(last) = fetched.records.last() {
                    checkpointer.handed_out(last.extended_sequence_number());
                }
                let batch = Batch {
                    shard_id: shard.clone(),
                    records: fetched.records,
                    millis_behind_latest: fetched.millis_behind_latest,
                };
                let started = Instant::now();
                let result = processor.process(batch, checkpointer).await;
                metrics::processed(&shard, started.elapsed());
                metrics::batch(&shard, count, bytes, fetched.millis_behind_latest);
                self.records_processed += count as u64;
                match result {
                    Ok(()) => Event::BatchProcessed,
                    // A checkpoint that found the lease lost, passed up with `?`: not a
                    // failure of the processor.
                    Err(_) if self.keeper.holding() != Holding::Held => Event::LeaseLost,
                    Err(error) => {
                        error!(error = %error, "processor failed; releasing the lease without a checkpoint");
                        self.error = Some(format!("process failed: {error}"));
                        Event::Failed
                    }
                }
            }
            Some(Ok(Fetched::End { child_shards })) => {
                self.mark_shard_end(child_shards);
                Event::ShardEndReached
            }
            Some(Err(error)) => {
                error!(error = %error, source = ?std::error::Error::source(&error), "retrieval failed");
                let RetrievalError::Api { source, .. } = &error;
                if source.kind() == ApiErrorKind::NotFound {
                    let _ = self.context.notices.send(ShardNotice::NotFound);
                }
                self.error = Some(format!("{error}: {}", error_chain(&error)));
                Event::Failed
            }
            None => {
                self.error = Some("retrieval stopped unexpectedly".into());
                Event::Failed
            }
        }
    }

    fn mark_shard_end(&mut self, children: Vec<ChildShard>) {
        self.children = children;
        self.retrieval = None;
        if let Some(checkpointer) = self.checkpointer.as_mut() {
            checkpointer.reached_shard_end();
        }
    }

    async fn shut_down(&mut self, reason: ShutdownReason) -> Event {
        self.retrieval = None;
        match reason {
            ShutdownReason::ShardEnd => self.finish_shard().await,
            ShutdownReason::LeaseLost => {
                if let Some(processor) = self.processor.as_mut() {
                    processor.lease_lost(LeaseLost { shard_id: self.lease.key.clone() }).await;
                }
                Event::ShutdownComplete
            }
            ShutdownReason::Requested => {
                if let (Some(processor), Some(checkpointer)) =
                    (self.processor.as_mut(), self.checkpointer.as_mut())
                    && let Err(error) = processor.shutdown_requested(checkpointer).await
                {
                    warn!(error = %error, "processor shutdown_requested failed");
                    self.error = Some(format!("shutdown_requested failed: {error}"));
                }
                self.keeper.release().await;
                Event::ShutdownComplete
            }
            ShutdownReason::Failed => {
                self.keeper.release().await;
                Event::ShutdownComplete
            }
        }
    }

    /// Creates the children's leases, records them on the lease, and has the processor
    /// checkpoint `SHARD_END`, retrying with backoff while the lease is held.
    async fn finish_shard(&mut self) -> Event {
        let children_known = !self.children.is_empty();
        if let Err(event) = self.create_child_leases().await {
            return event;
        }
        let _ = self.context.notices.send(ShardNotice::ShardEnded { children_known });
        let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut rng = SmallRng::from_os_rng();
        let mut attempt = 0;
        loop {
            if self.keeper.holding() != Holding::Held {
                return Event::LeaseLost;
            }
            let last = self
                .checkpointer
                .as_ref()
                .map(|c| c.last_checkpoint().clone())
                .unwrap_or_else(|| self.lease.checkpoint.clone());
            let mut checkpointer = Checkpointer::new(self.keeper.clone(), last);
            checkpointer.reached_shard_end();
            let end = ShardEnd {
                checkpointer,
                child_shards: self.children.iter().map(|c| c.shard_id.clone()).collect(),
            };
            let Some(processor) = self.processor.as_mut() else {
                return Event::ShutdownComplete;
            };
            match processor.shard_ended(end).await {
                Ok(_proof) => {
                    info!("shard finished: SHARD_END checkpointed");
                    metrics::shard_ended();
                    self.checkpointer = Some(Checkpointer::new(
                        self.keeper.clone(),
                        ExtendedSequenceNumber::ShardEnd,
                    ));
                    // Nobody takes a finished lease; releasing it lets the cleanup delete it
                    // whoever runs it.
                    self.keeper.release().await;
                    return Event::ShutdownComplete;
                }
                Err(error) => {
                    attempt += 1;
                    warn!(error = %error, attempt, "shard_ended failed; retrying");
                    if let Some(event) =
                        Self::pause(&self.keeper, &self.shutdown, backoff.delay(attempt, &mut rng))
                            .await
                    {
                        return event;
                    }
                }
            }
        }
    }

    /// Creates a lease for each child the service reported, and records them as the lease's
    /// children.
    async fn create_child_leases(&mut self) -> Result<(), Event> {
        if self.children.is_empty() {
            return Ok(());
        }
        let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut rng = SmallRng::from_os_rng();
        for child in &self.children {
            let mut lease = Lease::new(child.shard_id.clone(), ExtendedSequenceNumber::TrimHorizon);
            lease.parent_shard_ids = child.parent_shards.clone();
            lease.hash_range = Some(child.hash_range);
            let mut attempt = 0;
            while let Err(error) = self.context.store.create_if_absent(&lease).await {
                attempt += 1;
                warn!(child = %child.shard_id, error = %error, "could not create a child lease; retrying");
                tokio::select! {
                    _ = self.keeper.lost() => return Err(Event::LeaseLost),
                    () = tokio::time::sleep(backoff.delay(attempt, &mut rng)) => {}
                }
            }
        }
        let ids = self.children.iter().map(|c| c.shard_id.clone()).collect();
        match self.keeper.update_children(ids).await {
            Ok(()) => Ok(()),
            Err(error) if error.is_lease_lost() => Err(Event::LeaseLost),
            // The children are recorded for the KCL's benefit only; their leases exist.
            Err(error) => {
                warn!(error = %error, "could not record the children on the lease");
                Ok(())
            }
        }
    }
}

/// The first parent of `lease` whose lease exists and has not reached `SHARD_END`.
async fn pending_parent(
    store: &dyn LeaseStore,
    lease: &Lease,
) -> Result<Option<ShardId>, crate::lease::LeaseStoreError> {
    for parent in &lease.parent_shard_ids {
        if let Some(parent_lease) = store.get(parent).await?
            && parent_lease.checkpoint != ExtendedSequenceNumber::ShardEnd
        {
            return Ok(Some(parent.clone()));
        }
    }
    Ok(None)
}

/// The sources of `error`, joined with `": "` (without `error` itself).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    error.source().map(kinesis_common::error_chain).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use kinesis_common::fake::FakeKinesis;

    use super::*;
    use crate::keeper::{self, KeeperConfig};
    use crate::lease::{InMemoryLeaseStore, WorkerId};
    use crate::processor;
    use crate::testing::{CheckpointPolicy, Recorder, RecordingProcessor};

    #[tokio::test(start_paused = true)]
    async fn a_lease_stolen_while_waiting_on_the_parent_is_never_initialized() {
        let store = Arc::new(InMemoryLeaseStore::with_table());
        let parent =
            Lease::new(ShardId::new("shardId-0").unwrap(), ExtendedSequenceNumber::TrimHorizon);
        store.create_if_absent(&parent).await.unwrap();
        let mut child =
            Lease::new(ShardId::new("shardId-1").unwrap(), ExtendedSequenceNumber::TrimHorizon);
        child.parent_shard_ids = vec![parent.key.clone()];
        store.create_if_absent(&child).await.unwrap();
        let child = store.take(&child, &WorkerId::new("me")).await.unwrap();

        let config = ConsumerConfig {
            lease_duration: Duration::from_secs(30),
            renew_interval: Duration::from_secs(10),
            parent_poll_interval: Duration::from_millis(100),
            ..ConsumerConfig::default()
        };
        let keeper_config = KeeperConfig {
            lease_duration: config.lease_duration,
            renew_interval: config.renew_interval,
            checkpoint_attempts: 1,
        };
        let (keeper, _task) = keeper::spawn(store.clone(), child.clone(), keeper_config);
        let recorder = Recorder::new();
        let factory = {
            let recorder = recorder.clone();
            processor::erase(move |_: &ShardId| {
                RecordingProcessor::new(recorder.clone(), CheckpointPolicy::EveryBatch)
            })
        };
        let (notices, _notices) = mpsc::unbounded_channel();
        let context = ShardContext {
            api: Arc::new(FakeKinesis::new()),
            store: store.clone(),
            stream: StreamName::new("s").unwrap(),
            factory,
            config: Arc::new(config),
            notices,
            consumer_arn: None,
        };
        let consumer = tokio::spawn(run(context, child.clone(), keeper, CancellationToken::new()));
        // Waiting on the parent; then, before this worker's next renewal, another worker steals
        // the child (the taker steals waiting children first) and the parent finishes.
        tokio::time::sleep(Duration::from_millis(350)).await;
        store.take(&child, &WorkerId::new("thief")).await.unwrap();
        store.delete(&parent).await.unwrap();

        let report = consumer.await.unwrap();
        assert!(recorder.events().is_empty(), "initialized a lost lease: {:?}", recorder.events());
        assert_eq!(report.records_processed, 0);
        let stored = store.get(&child.key).await.unwrap().unwrap();
        assert_eq!(stored.owner, Some(WorkerId::new("thief")), "nothing written over the thief");
    }
}
