//! The enhanced fan-out retriever: one task per shard that reads it with SubscribeToShard and
//! hands the de-aggregated records to the shard consumer through a bounded queue.
//!
//! # What it owns
//!
//! The shard's one open subscription, resubscribing where the last one stopped, the backoff
//! after failures, the skipping of records at or before the checkpoint it started from, and
//! the closed-shard fallback below. The shard consumer owns everything after the queue
//! (processing, checkpoints, the lease); it does not know which retriever fills the queue.
//!
//! Pure pieces hold the policy and are tested on their own: [`resume_position`] (where to
//! subscribe again), [`reaction`] (what to do about a failure), [`event_end`] (whether an
//! event ends the shard), [`children_of`] (a closed shard's children from ListShards) and
//! [`BatchBuilder`] (de-aggregation, the hash-range filter and the checkpoint skip).
//! [`FanOutRetriever::run`] is the thin async driver around them.
//!
//! # AWS limits it keeps
//!
//! - A subscription pushes events "for up to 5 minutes, after which time you need to call
//!   SubscribeToShard again" (Kinesis API reference, SubscribeToShard). A subscription that
//!   ends (`Ok(None)`) is renewed at once, `AFTER_SEQUENCE_NUMBER` of the last Kinesis record
//!   received, else of the last `ContinuationSequenceNumber` ("use this as SequenceNumber in
//!   the next call to SubscribeToShard, with StartingPosition set to AT_SEQUENCE_NUMBER or
//!   AFTER_SEQUENCE_NUMBER", Kinesis API reference, SubscribeToShardEvent), else at the start
//!   position. This is what the KCL does (`FanOutRecordsPublisher`: `currentSequenceNumber`
//!   is the continuation sequence number of the last delivered event, and
//!   `IteratorBuilder.reconnectRequest` resubscribes `AFTER_SEQUENCE_NUMBER` of it), except
//!   that before any event the KCL resubscribes after the checkpoint's sequence number, which
//!   would skip the rest of a checkpointed aggregate; this retriever resubscribes at it.
//! - One SubscribeToShard call per second per consumer per shard, and one subscription per
//!   consumer per shard: a second call within 5 seconds of a successful one is
//!   `ResourceInUseException` (Kinesis API reference, SubscribeToShard). Calls are at least
//!   one second apart, failed ones included, and `ResourceInUseException` (a connection that
//!   dropped but is still open on the service's side, another worker of this application
//!   still holding the shard during a lease handover, a consumer still `CREATING`) backs off
//!   with [`FanOutConfig::in_use_backoff`] and tries again; it is never fatal.
//! - 2 MiB per second per shard per consumer, pushed by the service (Kinesis API reference,
//!   RegisterStreamConsumer: "up to 2 MiB per second for every shard you subscribe to"). The
//!   retriever pulls the next event only once the queue has room for it, so a slow processor
//!   leaves events unread in the connection and HTTP/2 flow control slows the service down;
//!   nothing is dropped and at most [`FanOutConfig::buffer`] batches wait in the queue.
//! - GetRecords, used only by the closed-shard fallback: at most 5 calls per second per shard
//!   (Kinesis developer guide, "Quotas and limits"): its calls are 200 ms apart.
//!
//! # Shard end, and the closed-shard fallback
//!
//! The service ends a closed shard with an event that has no continuation sequence number and
//! names the children; the retriever sends [`Fetched::End`] with them and finishes. Some
//! subscriptions never deliver that event: kinesis-mock (inside LocalStack) keeps a closed
//! shard's subscription open and silent for ever, and a subscription can miss the final event.
//! So, as a fallback for emulators and missed events, when no record has arrived for
//! [`FanOutConfig::closed_shard_check`] while waiting on the subscription, the retriever calls
//! ListShards; if this shard has an ending sequence number, it drops the subscription and
//! reads the rest of the shard with GetRecords from where the subscription stopped until
//! there is no next iterator, sends whatever records it finds, then `End` with the children
//! GetRecords reported (else the children ListShards shows). An event that says the shard
//! ended but names no children (the KCL rejects such events as invalid) is checked the same
//! way at once. The fallback costs one ListShards per idle shard per check interval; zero
//! turns the periodic check off. Time spent waiting for room in the queue is not silence.
//!
//! # Invariants
//!
//! - Records are sent in order, each once: every resubscription (and the fallback's
//!   GetRecords) starts right after the last Kinesis record received, all of whose user
//!   records were sent, and nothing at or before the checkpoint of
//!   [`StartPosition::After`] is sent, comparing (sequence, sub-sequence) as the KCL's
//!   `ExtendedSequenceNumber` does. Sequence numbers stay decimal strings.
//! - An event is pulled only once the queue has room for its batch.
//! - Every wait, call and send also waits on the cancellation token and on the receiver being
//!   dropped, so the task stops promptly on either, and dropping the task's state drops the
//!   subscription, which ends it. All waits are on tokio time.
//! - The queue closes after [`Fetched::End`], after an `Err`, or without either when the
//!   retriever was stopped.
//! - Known gap, as in the KCL and the polling retriever: with [`StartPosition::Latest`], a
//!   subscription that fails before any event is renewed at `LATEST`.
//!
//! # Metrics
//!
//! Counters labelled `stream` and `shard`:
//! - `kinesis_consumer_resubscriptions_total`, also labelled `reason`: SubscribeToShard
//!   calls after the first, by why the one before ended: `ended` (the normal end after about
//!   5 minutes; logged at debug only), `in_use` (`ResourceInUseException`), `throttled`, or
//!   `error` (a dropped connection or another passing fault).
//! - `kinesis_consumer_closed_shard_checks_total`: ListShards calls made by the closed-shard
//!   fallback.

use std::future::pending;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use kinesis_common::backoff::Backoff;
use kinesis_common::compression::DEFAULT_MAX_DECOMPRESSED_LEN;
use kinesis_common::{
    ApiError, ApiErrorKind, ChildShard, ExtendedSequenceNumber, HashKeyRange, KinesisApi,
    KinesisRecord, SequenceNumber, Shard, ShardId, ShardIterator, ShardIteratorPosition,
    StreamName, SubscribeToShardEvent, Subscription,
};
use metrics::Counter;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::mpsc::{self, OwnedPermit, error::TrySendError};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, warn};

use super::{BatchBuilder, Fetched, RetrievalError, StartPosition};

/// What a retriever sends: a batch, the shard's end, or why it stopped.
type Item = Result<Fetched, RetrievalError>;

/// The shortest time between two SubscribeToShard calls for one shard: one call per second
/// per consumer per shard (Kinesis API reference, SubscribeToShard).
const SUBSCRIBE_INTERVAL: Duration = Duration::from_secs(1);

/// The shortest time between two GetRecords calls of the closed-shard fallback: 5 calls per
/// second per shard (Kinesis developer guide, "Quotas and limits").
const GET_RECORDS_INTERVAL: Duration = Duration::from_millis(200);

/// Consecutive failures that are logged at debug before they are worth a warning: a dropped
/// connection now and then is routine for long-lived HTTP/2 streams (the KCL's noisy
/// ReadTimeout warnings are its most common fan-out complaint), and so is
/// `ResourceInUseException` for the 5 seconds a lease handover may take; five failures in a
/// row, at least a second apart, are neither.
const QUIET_FAILURES: u32 = 5;

/// How the fan-out retriever reads a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FanOutConfig {
    /// The queue's capacity in batches (one batch per event): how far the retriever may read
    /// ahead of processing. Default 3. Zero is taken as 1.
    pub(crate) buffer: usize,
    /// The backoff before subscribing again after a dropped connection, throttling or another
    /// passing fault; the attempt count grows with each consecutive failure and starts again
    /// after an event arrives. Default 100 ms doubling up to 5 s, with full jitter. Calls stay
    /// at least one second apart whatever the draw.
    pub(crate) resubscribe_backoff: Backoff,
    /// The backoff after `ResourceInUseException` (another subscription of this consumer
    /// holds the shard; a new call may take over 5 seconds after it started). Default 1 s
    /// doubling up to 10 s, with full jitter.
    pub(crate) in_use_backoff: Backoff,
    /// Whether events that yield no user record are sent as empty batches (the KCL's
    /// `callProcessRecordsEvenForEmptyRecordList`). Default false.
    pub(crate) deliver_empty_batches: bool,
    /// The largest decompressed size of a compression envelope; larger ones are passed on
    /// unopened as corrupt records. Default
    /// [`DEFAULT_MAX_DECOMPRESSED_LEN`](kinesis_common::compression::DEFAULT_MAX_DECOMPRESSED_LEN).
    pub(crate) max_decompressed_len: usize,
    /// How long the subscription may stay without records before ListShards is asked whether
    /// the shard is closed (see the [module docs](self)). Default 10 s; zero turns the
    /// periodic check off.
    pub(crate) closed_shard_check: Duration,
}

impl Default for FanOutConfig {
    fn default() -> Self {
        Self {
            buffer: 3,
            resubscribe_backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            in_use_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(10)),
            deliver_empty_batches: false,
            max_decompressed_len: DEFAULT_MAX_DECOMPRESSED_LEN,
            closed_shard_check: Duration::from_secs(10),
        }
    }
}

/// Spawns a [`FanOutRetriever`] for one shard; returns its queue and its task.
///
/// `consumer_arn` is the registered enhanced fan-out consumer's ARN; `hash_range` is the
/// shard's hash key range, used to drop aggregates that belong to another shard (`None`
/// filters nothing). The task ends after sending [`Fetched::End`] or an error, or when
/// `cancel` is cancelled or the receiver is dropped.
// The polling retriever's arguments plus the consumer ARN.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    api: Arc<dyn KinesisApi>,
    consumer_arn: String,
    stream: StreamName,
    shard: ShardId,
    hash_range: Option<HashKeyRange>,
    start: StartPosition,
    config: FanOutConfig,
    cancel: CancellationToken,
) -> (mpsc::Receiver<Item>, JoinHandle<()>) {
    let (retriever, queue) =
        FanOutRetriever::new(api, consumer_arn, stream, shard, hash_range, start, config, cancel);
    (queue, tokio::spawn(retriever.run()))
}

/// Reads one shard with SubscribeToShard into a bounded queue; see the [module docs](self).
///
/// Make one with [`new`](Self::new) and drive it with [`run`](Self::run) on a task of the
/// caller's `JoinSet` or `TaskTracker`, or use [`spawn`].
pub(crate) struct FanOutRetriever {
    api: Arc<dyn KinesisApi>,
    consumer_arn: String,
    stream: StreamName,
    shard: ShardId,
    start: StartPosition,
    config: FanOutConfig,
    cancel: CancellationToken,
    queue: mpsc::Sender<Item>,
    batches: BatchBuilder,
    rng: SmallRng,
    /// Consecutive failures: the backoff attempt number.
    failures: u32,
    /// The sequence number of the last Kinesis record received.
    last_received: Option<SequenceNumber>,
    /// The last continuation sequence number an event carried.
    continuation: Option<SequenceNumber>,
    /// The earliest time the next SubscribeToShard call may start.
    next_subscribe: Instant,
    /// The last time something showed the shard alive: a record arrived, the closed-shard
    /// check ran, or the queue had room again after being full. Silence is counted from here.
    quiet_since: Instant,
    /// When the closed-shard check last ran.
    last_check: Option<Instant>,
    meters: Meters,
}

impl FanOutRetriever {
    /// A retriever for `shard` and the receiving end of its queue, of
    /// [`FanOutConfig::buffer`] batches.
    // The polling retriever's arguments plus the consumer ARN.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        api: Arc<dyn KinesisApi>,
        consumer_arn: String,
        stream: StreamName,
        shard: ShardId,
        hash_range: Option<HashKeyRange>,
        start: StartPosition,
        config: FanOutConfig,
        cancel: CancellationToken,
    ) -> (Self, mpsc::Receiver<Item>) {
        let (queue, receiver) = mpsc::channel(config.buffer.max(1));
        let skip_through = match &start {
            StartPosition::After { sequence, sub_sequence } => {
                Some(ExtendedSequenceNumber::new(sequence.clone(), *sub_sequence))
            }
            _ => None,
        };
        let batches = BatchBuilder {
            hash_range,
            max_decompressed_len: config.max_decompressed_len,
            skip_through,
            last_sequence: None,
        };
        // Jitter spreads the retries of subscriptions that failed together (every shard of a
        // worker whose connection pool broke): seed from the OS; the fallback still differs
        // per shard.
        let rng = SmallRng::try_from_os_rng().unwrap_or_else(|_| {
            let mut hasher = DefaultHasher::new();
            (stream.as_str(), shard.as_str()).hash(&mut hasher);
            SmallRng::seed_from_u64(hasher.finish())
        });
        let meters = Meters::new(&stream, &shard);
        let now = Instant::now();
        let retriever = Self {
            api,
            consumer_arn,
            stream,
            shard,
            start,
            config,
            cancel,
            queue,
            batches,
            rng,
            failures: 0,
            last_received: None,
            continuation: None,
            next_subscribe: now,
            quiet_since: now,
            last_check: None,
            meters,
        };
        (retriever, receiver)
    }

    /// The same retriever drawing its jitter from `rng`, so that a test can replay the delays.
    #[cfg(test)]
    fn with_rng(mut self, rng: SmallRng) -> Self {
        self.rng = rng;
        self
    }

    /// Reads the shard until its end, a non-retryable error, cancellation or the receiver
    /// going away.
    pub(crate) async fn run(mut self) {
        let span =
            tracing::debug_span!("fanout_retriever", stream = %self.stream, shard = %self.shard);
        async move {
            debug!(start = ?self.start, consumer = %self.consumer_arn, "reading shard");
            match self.read().await {
                Ok(()) => debug!("shard read to its end"),
                Err(Halt::Stopped) => debug!("stopped: cancelled or the receiver went away"),
                Err(Halt::Failed(source)) => {
                    warn!(error = %source, "reading the shard failed; giving up");
                    let error = RetrievalError::Api { shard: self.shard.clone(), source };
                    if self.send(Err(error)).await.is_err() {
                        debug!("the error was not delivered: stopped meanwhile");
                    }
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// The subscribe loop: returns `Ok` once [`Fetched::End`] is sent.
    async fn read(&mut self) -> Result<(), Halt> {
        let mut resubscribe: Option<Resubscribe> = None;
        loop {
            self.wait_until(self.next_subscribe).await?;
            let position = self.position();
            if let Some(reason) = resubscribe.take() {
                self.meters.resubscriptions(reason).increment(1);
                debug!(reason = reason.label(), ?position, "subscribing again");
            }
            self.next_subscribe = Instant::now() + SUBSCRIBE_INTERVAL;
            let answer = self
                .until(self.api.subscribe_to_shard(
                    &self.consumer_arn,
                    &self.shard,
                    position.clone(),
                ))
                .await?;
            // The subscription lives only inside this match: leaving it, for whatever reason,
            // drops it, which ends it on the service's side.
            let followed = match answer {
                Ok(mut subscription) => {
                    debug!(?position, "subscribed");
                    self.follow(subscription.as_mut()).await?
                }
                Err(error) => Followed::Failed(error),
            };
            resubscribe = Some(match followed {
                Followed::Ended => Resubscribe::Ended,
                Followed::Failed(error) => self.back_off(error).await?,
                Followed::ShardEnd => return Ok(()),
                Followed::ShardClosed(listed) => return self.read_closed_shard(&listed).await,
            });
        }
    }

    /// Hands out the events of one subscription until it ends, fails, or the shard ends.
    async fn follow(&mut self, subscription: &mut dyn Subscription) -> Result<Followed, Halt> {
        loop {
            // Room first, then the event: a full queue stops the pulls (backpressure through
            // HTTP/2 flow control), and an event pulled always has a place to go.
            let permit = self.reserve().await?;
            let event = match self.next_event(subscription).await? {
                Next::Event(event) => event,
                Next::Ended => {
                    debug!("the subscription ended");
                    return Ok(Followed::Ended);
                }
                Next::Failed(error) => return Ok(Followed::Failed(error)),
                Next::ShardClosed(listed) => return Ok(Followed::ShardClosed(listed)),
            };
            self.failures = 0;
            let SubscribeToShardEvent {
                records,
                continuation_sequence_number,
                millis_behind_latest,
                child_shards,
            } = event;
            let end = event_end(continuation_sequence_number.as_ref(), child_shards);
            let permit = self.deliver(&records, millis_behind_latest, permit);
            if continuation_sequence_number.is_some() {
                self.continuation = continuation_sequence_number;
            }
            match end {
                EventEnd::Open => {}
                EventEnd::Closed(child_shards) => {
                    debug!(children = child_shards.len(), "reached the end of the shard");
                    self.send_with(permit, Ok(Fetched::End { child_shards })).await?;
                    return Ok(Followed::ShardEnd);
                }
                EventEnd::Unconfirmed => {
                    let checked_recently = self
                        .last_check
                        .is_some_and(|at| Instant::now() < at + self.config.closed_shard_check);
                    if !checked_recently {
                        debug!("an event ended the shard without naming its children; checking");
                        drop(permit);
                        if let Some(listed) = self.closed_shard_check().await? {
                            return Ok(Followed::ShardClosed(listed));
                        }
                    }
                }
            }
        }
    }

    /// The subscription's next event, running the closed-shard check whenever no record has
    /// arrived for [`FanOutConfig::closed_shard_check`]. The pending `next_event` call is
    /// kept across checks, never dropped halfway, unless the shard turns out closed (then the
    /// subscription is dropped altogether).
    async fn next_event(&mut self, subscription: &mut dyn Subscription) -> Result<Next, Halt> {
        let mut event = subscription.next_event();
        loop {
            let check_at = (!self.config.closed_shard_check.is_zero())
                .then(|| self.quiet_since + self.config.closed_shard_check);
            let silence = async {
                match check_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => pending().await,
                }
            };
            let answer = tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Err(Halt::Stopped),
                () = self.queue.closed() => return Err(Halt::Stopped),
                answer = &mut event => Some(answer),
                () = silence => None,
            };
            match answer {
                Some(Ok(Some(event))) => return Ok(Next::Event(event)),
                Some(Ok(None)) => return Ok(Next::Ended),
                Some(Err(error)) => return Ok(Next::Failed(error)),
                None => {
                    if let Some(listed) = self.closed_shard_check().await? {
                        return Ok(Next::ShardClosed(listed));
                    }
                }
            }
        }
    }

    /// Builds the batch of `records`, remembers the last of them, and sends the batch through
    /// `permit` unless it is empty and empty batches are not wanted; returns the permit when
    /// it was not used.
    fn deliver(
        &mut self,
        records: &[KinesisRecord],
        millis_behind_latest: Option<u64>,
        permit: OwnedPermit<Item>,
    ) -> Option<OwnedPermit<Item>> {
        let batch = self.batches.build(records, millis_behind_latest);
        if let Some(last) = records.last() {
            self.last_received = Some(last.sequence_number.clone());
            self.quiet_since = Instant::now();
        }
        if batch.records.is_empty() && !self.config.deliver_empty_batches {
            return Some(permit);
        }
        drop(permit.send(Ok(Fetched::Batch(batch))));
        None
    }

    /// Asks ListShards whether the shard is closed; returns the listing if it is. A failed
    /// ListShards only postpones the check: the subscription itself reports real trouble.
    async fn closed_shard_check(&mut self) -> Result<Option<Vec<Shard>>, Halt> {
        self.meters.closed_shard_checks.increment(1);
        let answer = self.until(self.api.list_shards(&self.stream)).await?;
        let now = Instant::now();
        self.last_check = Some(now);
        self.quiet_since = self.quiet_since.max(now);
        match answer {
            Ok(listed) if listed.iter().any(|s| s.id == self.shard && !s.is_open()) => {
                debug!(
                    after = ?self.last_received,
                    "the shard is closed; reading its end with GetRecords"
                );
                Ok(Some(listed))
            }
            Ok(_) => Ok(None),
            Err(error) => {
                debug!(%error, "ListShards failed; checking again later");
                Ok(None)
            }
        }
    }

    /// The closed-shard fallback: reads the rest of the closed shard with GetRecords, from
    /// where the subscription stopped to the end, and sends `End`. `listed` is the ListShards
    /// answer that showed the shard closed, for the children if GetRecords names none.
    async fn read_closed_shard(&mut self, listed: &[Shard]) -> Result<(), Halt> {
        let mut iterator = self.shard_iterator().await?;
        let mut next_call = Instant::now();
        loop {
            let permit = self.reserve().await?;
            self.wait_until(next_call).await?;
            let called_at = Instant::now();
            next_call = called_at + GET_RECORDS_INTERVAL;
            let answer = self.until(self.api.get_records(&iterator, None)).await?;
            let output = match answer {
                Ok(output) => output,
                Err(error) if error.kind() == ApiErrorKind::ExpiredIterator => {
                    // The queue stayed full for five minutes: resume after what was received.
                    iterator = self.shard_iterator().await?;
                    continue;
                }
                Err(error) if error.is_retryable() => {
                    let delay =
                        self.retry_delay(self.config.resubscribe_backoff, "GetRecords", &error);
                    next_call = next_call.max(Instant::now() + delay);
                    continue;
                }
                Err(error) => return Err(Halt::Failed(error)),
            };
            self.failures = 0;
            let permit = self.deliver(&output.records, output.millis_behind_latest, permit);
            let Some(next) = output.next_iterator else {
                let child_shards = if output.child_shards.is_empty() {
                    children_of(&self.shard, listed)
                } else {
                    output.child_shards
                };
                debug!(children = child_shards.len(), "read the closed shard to its end");
                self.send_with(permit, Ok(Fetched::End { child_shards })).await?;
                return Ok(());
            };
            iterator = next;
        }
    }

    /// A shard iterator where the subscription would resume; retries passing faults.
    async fn shard_iterator(&mut self) -> Result<ShardIterator, Halt> {
        loop {
            let position = self.position();
            let called_at = Instant::now();
            let answer = self
                .until(self.api.get_shard_iterator(&self.stream, &self.shard, position.clone()))
                .await?;
            match answer {
                Ok(iterator) => {
                    debug!(?position, "got a shard iterator");
                    return Ok(iterator);
                }
                Err(error) if error.is_retryable() => {
                    let delay = self.retry_delay(
                        self.config.resubscribe_backoff,
                        "GetShardIterator",
                        &error,
                    );
                    // GetShardIterator has the same 5 calls per second per shard.
                    self.wait_until((Instant::now() + delay).max(called_at + GET_RECORDS_INTERVAL))
                        .await?;
                }
                Err(error) => return Err(Halt::Failed(error)),
            }
        }
    }

    /// Where to subscribe (or get an iterator): see [`resume_position`].
    fn position(&self) -> ShardIteratorPosition {
        resume_position(&self.start, self.last_received.as_ref(), self.continuation.as_ref())
    }

    /// Waits out the backoff `error` calls for and says why the next subscription is made;
    /// `Halt::Failed` if retrying cannot help.
    async fn back_off(&mut self, error: ApiError) -> Result<Resubscribe, Halt> {
        let (backoff, reason) = match reaction(&error) {
            Reaction::GiveUp => return Err(Halt::Failed(error)),
            Reaction::InUse => (self.config.in_use_backoff, Resubscribe::InUse),
            Reaction::Retry if error.kind() == ApiErrorKind::Throttled => {
                (self.config.resubscribe_backoff, Resubscribe::Throttled)
            }
            Reaction::Retry => (self.config.resubscribe_backoff, Resubscribe::Failed),
        };
        let delay = self.retry_delay(backoff, "SubscribeToShard", &error);
        self.wait_until(Instant::now() + delay).await?;
        Ok(reason)
    }

    /// Draws the delay before retrying after `error` from `backoff` and counts the failure.
    fn retry_delay(
        &mut self,
        backoff: Backoff,
        operation: &'static str,
        error: &ApiError,
    ) -> Duration {
        let delay = backoff.delay(self.failures, &mut self.rng);
        self.failures = self.failures.saturating_add(1);
        let attempt = self.failures;
        // Dropped connections, takeovers during a lease handover and throttling are routine
        // for long-lived subscriptions: only a run of them is worth a warning.
        if attempt > QUIET_FAILURES && error.kind() != ApiErrorKind::Throttled {
            warn!(operation, %error, ?delay, attempt, "call failed again; retrying");
        } else {
            debug!(operation, %error, ?delay, attempt, "call failed; retrying");
        }
        delay
    }

    /// A permit for one item, waiting for room. Time spent waiting is not silence: the shard
    /// is not quiet, the processor is slow.
    async fn reserve(&mut self) -> Result<OwnedPermit<Item>, Halt> {
        match self.queue.clone().try_reserve_owned() {
            Ok(permit) => Ok(permit),
            Err(TrySendError::Closed(_)) => Err(Halt::Stopped),
            Err(TrySendError::Full(queue)) => {
                let permit = self.until(queue.reserve_owned()).await?.map_err(|_| Halt::Stopped)?;
                self.quiet_since = self.quiet_since.max(Instant::now());
                Ok(permit)
            }
        }
    }

    /// Sends `item` through `permit` if there is one, else waits for room.
    async fn send_with(&self, permit: Option<OwnedPermit<Item>>, item: Item) -> Result<(), Halt> {
        match permit {
            Some(permit) => {
                drop(permit.send(item));
                Ok(())
            }
            None => self.send(item).await,
        }
    }

    /// Sends `item`, waiting for room.
    async fn send(&self, item: Item) -> Result<(), Halt> {
        self.until(self.queue.send(item)).await?.map_err(|_| Halt::Stopped)
    }

    /// Sleeps until `at`.
    async fn wait_until(&self, at: Instant) -> Result<(), Halt> {
        self.until(tokio::time::sleep_until(at)).await
    }

    /// Runs `work` unless the retriever is cancelled or its receiver is dropped first.
    async fn until<F: Future>(&self, work: F) -> Result<F::Output, Halt> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(Halt::Stopped),
            () = self.queue.closed() => Err(Halt::Stopped),
            output = work => Ok(output),
        }
    }
}

/// Why the read loop ended before the shard's end.
#[derive(Debug)]
enum Halt {
    /// Cancelled, or the receiver was dropped: nothing more to send.
    Stopped,
    /// A call failed in a way retrying cannot fix.
    Failed(ApiError),
}

/// How waiting for an event ended.
enum Next {
    /// An event arrived.
    Event(SubscribeToShardEvent),
    /// The subscription ended normally.
    Ended,
    /// The subscription failed.
    Failed(ApiError),
    /// The closed-shard check found the shard closed; the ListShards answer.
    ShardClosed(Vec<Shard>),
}

/// How one subscription ended.
enum Followed {
    /// Normally (after about five minutes): subscribe again at once.
    Ended,
    /// With an error, or the SubscribeToShard call failed.
    Failed(ApiError),
    /// At the end of the shard; `End` was sent.
    ShardEnd,
    /// The shard is closed but the subscription did not say so; the ListShards answer.
    ShardClosed(Vec<Shard>),
}

/// Why a subscription is made again, for the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resubscribe {
    /// The last one ended normally.
    Ended,
    /// `ResourceInUseException`.
    InUse,
    /// Throttling.
    Throttled,
    /// A dropped connection or another passing fault.
    Failed,
}

impl Resubscribe {
    const ALL: [Self; 4] = [Self::Ended, Self::InUse, Self::Throttled, Self::Failed];

    fn label(self) -> &'static str {
        match self {
            Self::Ended => "ended",
            Self::InUse => "in_use",
            Self::Throttled => "throttled",
            Self::Failed => "error",
        }
    }
}

/// What to do about a failed SubscribeToShard call or subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reaction {
    /// Another subscription of this consumer holds the shard: back off with the in-use
    /// backoff and subscribe again.
    InUse,
    /// Back off and subscribe again.
    Retry,
    /// Send the error and stop.
    GiveUp,
}

/// What to do about `error`: wait out busy resources, retry throttling and passing faults
/// (dropped connections), give up on the rest (not found, access denied, invalid argument,
/// unknown errors).
fn reaction(error: &ApiError) -> Reaction {
    match error.kind() {
        ApiErrorKind::ResourceInUse => Reaction::InUse,
        _ if error.is_retryable() => Reaction::Retry,
        _ => Reaction::GiveUp,
    }
}

/// Where a new subscription (or the fallback's shard iterator) starts: right after the last
/// Kinesis record received (all of whose user records were sent); else right after the last
/// continuation sequence number (the service's mark of what this reader has seen, which moves
/// on an idle shard too); else the start position. The checkpoint skip of
/// [`StartPosition::After`] stays armed until a record past the checkpoint arrives.
fn resume_position(
    start: &StartPosition,
    last_received: Option<&SequenceNumber>,
    continuation: Option<&SequenceNumber>,
) -> ShardIteratorPosition {
    if let Some(sequence) = last_received.or(continuation) {
        return ShardIteratorPosition::AfterSequenceNumber(sequence.clone());
    }
    match start {
        StartPosition::TrimHorizon => ShardIteratorPosition::TrimHorizon,
        StartPosition::Latest => ShardIteratorPosition::Latest,
        StartPosition::AtTimestamp(at) => ShardIteratorPosition::AtTimestamp(*at),
        // AT, not AFTER: the checkpoint may be in the middle of an aggregate.
        StartPosition::After { sequence, .. } => {
            ShardIteratorPosition::AtSequenceNumber(sequence.clone())
        }
    }
}

/// Whether an event ends the shard.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EventEnd {
    /// It has a continuation sequence number: the shard goes on.
    Open,
    /// No continuation sequence number, and these children: the shard's end.
    Closed(Vec<ChildShard>),
    /// No continuation sequence number but no children either, which the service does not
    /// send (the KCL rejects such events): to be checked with ListShards.
    Unconfirmed,
}

/// Reads an event's end marker: the service ends a closed shard with an event that has no
/// continuation sequence number and names the children (Kinesis API reference,
/// SubscribeToShardEvent, ChildShards: "returned only at the end of the current shard").
fn event_end(continuation: Option<&SequenceNumber>, child_shards: Vec<ChildShard>) -> EventEnd {
    match continuation {
        Some(_) => EventEnd::Open,
        None if child_shards.is_empty() => EventEnd::Unconfirmed,
        None => EventEnd::Closed(child_shards),
    }
}

/// The children of `shard` in a ListShards answer: the shards whose parent or adjacent parent
/// it is, with all their parents and their hash ranges.
fn children_of(shard: &ShardId, listed: &[Shard]) -> Vec<ChildShard> {
    listed
        .iter()
        .filter(|s| s.parents().any(|parent| parent == shard))
        .map(|s| ChildShard {
            shard_id: s.id.clone(),
            parent_shards: s.parents().cloned().collect(),
            hash_range: s.hash_range,
        })
        .collect()
}

/// The retriever's counters, labelled once with the stream and shard.
struct Meters {
    /// By [`Resubscribe`], in the order of [`Resubscribe::ALL`].
    resubscriptions: [Counter; 4],
    closed_shard_checks: Counter,
}

impl Meters {
    fn new(stream: &StreamName, shard: &ShardId) -> Self {
        let stream = stream.as_str().to_owned();
        let shard = shard.as_str().to_owned();
        Self {
            resubscriptions: Resubscribe::ALL.map(|reason| {
                metrics::counter!(
                    "kinesis_consumer_resubscriptions_total",
                    "stream" => stream.clone(),
                    "shard" => shard.clone(),
                    "reason" => reason.label()
                )
            }),
            closed_shard_checks: metrics::counter!(
                "kinesis_consumer_closed_shard_checks_total",
                "stream" => stream.clone(),
                "shard" => shard.clone()
            ),
        }
    }

    fn resubscriptions(&self, reason: Resubscribe) -> &Counter {
        let index = Resubscribe::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        &self.resubscriptions[index]
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use async_trait::async_trait;
    use bytes::Bytes;
    use kinesis_common::aggregation::{AggregateBuilder, KinesisClientRecord, MAGIC, UserRecord};
    use kinesis_common::fake::{FakeKinesis, Operation};
    use kinesis_common::{
        ConsumerDescription, ConsumerName, GetRecordsOutput, HashKey, PartitionKey,
        PutRecordsEntry, PutRecordsOutcome, StreamSummary,
    };
    use metrics::{Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
    use tokio::sync::Notify;
    use tokio::sync::mpsc::error::TryRecvError;
    use tokio::time::timeout;

    use super::*;
    use crate::retrieval::QueueReader;

    /// Long enough for anything a test waits for; short enough to fail fast on paused time.
    const PATIENCE: Duration = Duration::from_secs(600);

    /// The fake's SubscribeToShard session lifetime (Kinesis API reference, SubscribeToShard).
    const LIFETIME: Duration = Duration::from_secs(5 * 60);

    /// A stream with `shards` shards and an ACTIVE fan-out consumer on a fake of its own.
    struct Setup {
        fake: FakeKinesis,
        stream: StreamName,
        stream_arn: String,
        consumer: ConsumerDescription,
        shards: Vec<Shard>,
    }

    async fn setup(shards: u32) -> Setup {
        let fake = FakeKinesis::new();
        let stream = StreamName::new("fanout").unwrap();
        fake.create_active_stream(&stream, shards).unwrap();
        let stream_arn = fake.describe_stream_summary(&stream).await.unwrap().arn;
        let consumer = fake
            .register_stream_consumer(&stream_arn, &ConsumerName::new("app").unwrap())
            .await
            .unwrap();
        // CREATING for the fake's default 100 ms.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let shards = fake.list_shards(&stream).await.unwrap();
        fake.reset_counters();
        Setup { fake, stream, stream_arn, consumer, shards }
    }

    fn entry(key: &str, data: impl Into<Bytes>) -> PutRecordsEntry {
        PutRecordsEntry {
            partition_key: PartitionKey::new(key).unwrap(),
            explicit_hash_key: None,
            data: data.into(),
        }
    }

    async fn put_entry(
        fake: &FakeKinesis,
        s: &StreamName,
        entry: PutRecordsEntry,
    ) -> SequenceNumber {
        match fake.put_records(s, vec![entry]).await.unwrap().remove(0) {
            PutRecordsOutcome::Written { sequence_number, .. } => sequence_number,
            PutRecordsOutcome::Failed(e) => panic!("{e}"),
        }
    }

    impl Setup {
        async fn put(&self, data: &str) -> SequenceNumber {
            put_entry(&self.fake, &self.stream, entry("k", data.to_owned())).await
        }

        fn calls(&self, operation: Operation) -> u64 {
            self.fake.counters().calls(operation)
        }

        /// Starts a retriever on the plain fake.
        fn start(&self, shard: &Shard, start: StartPosition, config: FanOutConfig) -> Running {
            self.start_on(Arc::new(self.fake.clone()), shard, start, config)
        }

        /// Starts a retriever on `api`, recording its metrics, with jitter from [`SEED`].
        fn start_on(
            &self,
            api: Arc<dyn KinesisApi>,
            shard: &Shard,
            start: StartPosition,
            config: FanOutConfig,
        ) -> Running {
            let meter = Arc::new(Meter::default());
            let cancel = CancellationToken::new();
            let (retriever, queue) = metrics::with_local_recorder(&*meter, || {
                FanOutRetriever::new(
                    api,
                    self.consumer.arn.clone(),
                    self.stream.clone(),
                    shard.id.clone(),
                    Some(shard.hash_range),
                    start,
                    config,
                    cancel.clone(),
                )
            });
            let task = tokio::spawn(retriever.with_rng(SmallRng::seed_from_u64(SEED)).run());
            Running { queue, task, cancel, meter }
        }
    }

    /// The seed of every test retriever's jitter.
    const SEED: u64 = 1;

    struct Running {
        queue: mpsc::Receiver<Item>,
        task: JoinHandle<()>,
        cancel: CancellationToken,
        meter: Arc<Meter>,
    }

    impl QueueReader for Running {
        fn queue(&mut self) -> &mut mpsc::Receiver<Item> {
            &mut self.queue
        }
    }

    impl Running {
        /// Fails the test if anything arrives within `quiet`.
        async fn nothing_more_for(&mut self, quiet: Duration) {
            if let Ok(item) = timeout(quiet, self.queue.recv()).await {
                panic!("expected nothing more, got {item:?}");
            }
        }

        /// Cancels the retriever and waits for its task.
        async fn stop(self) {
            self.cancel.cancel();
            timeout(PATIENCE, self.task).await.unwrap().unwrap();
        }

        fn resubscriptions(&self, reason: &str) -> u64 {
            self.meter.count("kinesis_consumer_resubscriptions_total", Some(reason))
        }
    }

    fn data(records: &[KinesisClientRecord]) -> Vec<String> {
        records.iter().map(|r| String::from_utf8(r.data.to_vec()).unwrap()).collect()
    }

    fn positions(records: &[KinesisClientRecord]) -> Vec<(SequenceNumber, Option<u64>)> {
        records.iter().map(|r| (r.sequence_number.clone(), r.sub_sequence_number)).collect()
    }

    fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("{prefix}{i}")).collect()
    }

    /// `got` is `want`, give or take the millisecond the timer wheel rounds each wait up to.
    fn close_to(got: Duration, want: Duration) {
        assert!(got >= want && got <= want + Duration::from_millis(5), "{got:?} vs {want:?}");
    }

    /// An aggregate of user records with data `prefix-0`, `prefix-1`, …
    fn aggregate(prefix: &str, n: usize) -> AggregateBuilder {
        let mut builder = AggregateBuilder::new();
        for i in 0..n {
            let key = PartitionKey::new(format!("key-{i}")).unwrap();
            builder.push(UserRecord::new(key, format!("{prefix}-{i}")));
        }
        builder
    }

    async fn put_aggregate(t: &Setup, builder: &AggregateBuilder) -> SequenceNumber {
        let entry = PutRecordsEntry {
            partition_key: PartitionKey::new("a").unwrap(),
            explicit_hash_key: builder.first_hash_key(),
            data: builder.finish(),
        };
        put_entry(&t.fake, &t.stream, entry).await
    }

    /// The expected children of `parent` from ListShards, sorted by id.
    async fn listed_children(t: &Setup, parent: &ShardId) -> Vec<ChildShard> {
        let listed = t.fake.list_shards(&t.stream).await.unwrap();
        let mut children = children_of(parent, &listed);
        children.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        children
    }

    fn sorted(mut children: Vec<ChildShard>) -> Vec<ChildShard> {
        children.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        children
    }

    // ---- A metrics recorder that counts, for the metric assertions ----

    #[derive(Default)]
    struct Meter {
        counters: Mutex<Vec<(Key, Arc<AtomicU64>)>>,
    }

    impl Meter {
        /// The sum of counter `name` over every label set, or only those with `reason`.
        fn count(&self, name: &str, reason: Option<&str>) -> u64 {
            let counters = self.counters.lock().unwrap();
            counters
                .iter()
                .filter(|(key, _)| key.name() == name)
                .filter(|(key, _)| {
                    reason.is_none_or(|want| {
                        key.labels().any(|l| l.key() == "reason" && l.value() == want)
                    })
                })
                .map(|(_, value)| value.load(Ordering::SeqCst))
                .sum()
        }
    }

    impl Recorder for Meter {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let value = Arc::new(AtomicU64::new(0));
            self.counters.lock().unwrap().push((key.clone(), Arc::clone(&value)));
            Counter::from_arc(value)
        }

        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }

        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    // ---- A fake whose subscriptions misbehave on cue ----

    /// What [`Scripted`] does to a shard's last event (the one without a continuation).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum LastEvent {
        /// Passes it on.
        AsIs,
        /// Passes it on without its children.
        Childless,
        /// Swallows it, records and all, and keeps the subscription open and silent for ever,
        /// as kinesis-mock does on a closed shard.
        Swallowed,
    }

    /// The fake, with subscriptions that can drop their connection on cue and that treat the
    /// shard's last event as [`LastEvent`] says; counts the events handed out.
    #[derive(Clone)]
    struct Scripted {
        fake: FakeKinesis,
        script: Arc<Script>,
    }

    struct Script {
        last_event: LastEvent,
        drops: Mutex<VecDeque<ApiError>>,
        dropped: Notify,
        events: AtomicUsize,
    }

    impl Scripted {
        fn new(fake: &FakeKinesis, last_event: LastEvent) -> Self {
            let script = Script {
                last_event,
                drops: Mutex::new(VecDeque::new()),
                dropped: Notify::new(),
                events: AtomicUsize::new(0),
            };
            Self { fake: fake.clone(), script: Arc::new(script) }
        }

        /// Fails the open subscription's pending (or next) event with `error`.
        fn drop_connection(&self, error: ApiError) {
            self.script.drops.lock().unwrap().push_back(error);
            self.script.dropped.notify_waiters();
        }

        /// Events the subscriptions handed out.
        fn events(&self) -> usize {
            self.script.events.load(Ordering::SeqCst)
        }
    }

    impl Script {
        /// The next dropped-connection error; waits for one.
        async fn next_drop(&self) -> ApiError {
            loop {
                let notified = self.dropped.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                if let Some(error) = self.drops.lock().unwrap().pop_front() {
                    return error;
                }
                notified.await;
            }
        }
    }

    struct ScriptedSubscription {
        inner: Box<dyn Subscription>,
        script: Arc<Script>,
        silent: bool,
    }

    #[async_trait]
    impl Subscription for ScriptedSubscription {
        async fn next_event(&mut self) -> Result<Option<SubscribeToShardEvent>, ApiError> {
            if self.silent {
                return Err(self.script.next_drop().await);
            }
            // The fake's next_event is cancel-safe: it only waits between looks.
            let answer = tokio::select! {
                biased;
                error = self.script.next_drop() => return Err(error),
                answer = self.inner.next_event() => answer,
            };
            let mut event = match answer {
                Ok(Some(event)) => event,
                other => return other,
            };
            if event.continuation_sequence_number.is_none() {
                match self.script.last_event {
                    LastEvent::AsIs => {}
                    LastEvent::Childless => event.child_shards.clear(),
                    LastEvent::Swallowed => {
                        self.silent = true;
                        return Err(self.script.next_drop().await);
                    }
                }
            }
            self.script.events.fetch_add(1, Ordering::SeqCst);
            Ok(Some(event))
        }
    }

    #[async_trait]
    impl KinesisApi for Scripted {
        async fn list_shards(&self, stream: &StreamName) -> Result<Vec<Shard>, ApiError> {
            self.fake.list_shards(stream).await
        }

        async fn describe_stream_summary(
            &self,
            stream: &StreamName,
        ) -> Result<StreamSummary, ApiError> {
            self.fake.describe_stream_summary(stream).await
        }

        async fn put_records(
            &self,
            stream: &StreamName,
            entries: Vec<PutRecordsEntry>,
        ) -> Result<Vec<PutRecordsOutcome>, ApiError> {
            self.fake.put_records(stream, entries).await
        }

        async fn get_shard_iterator(
            &self,
            stream: &StreamName,
            shard: &ShardId,
            position: ShardIteratorPosition,
        ) -> Result<ShardIterator, ApiError> {
            self.fake.get_shard_iterator(stream, shard, position).await
        }

        async fn get_records(
            &self,
            iterator: &ShardIterator,
            limit: Option<u32>,
        ) -> Result<GetRecordsOutput, ApiError> {
            self.fake.get_records(iterator, limit).await
        }

        async fn create_stream(&self, stream: &StreamName, count: u32) -> Result<(), ApiError> {
            self.fake.create_stream(stream, count).await
        }

        async fn delete_stream(&self, stream: &StreamName) -> Result<(), ApiError> {
            self.fake.delete_stream(stream).await
        }

        async fn split_shard(
            &self,
            stream: &StreamName,
            shard: &ShardId,
            new_starting_hash_key: HashKey,
        ) -> Result<(), ApiError> {
            self.fake.split_shard(stream, shard, new_starting_hash_key).await
        }

        async fn merge_shards(
            &self,
            stream: &StreamName,
            shard: &ShardId,
            adjacent: &ShardId,
        ) -> Result<(), ApiError> {
            self.fake.merge_shards(stream, shard, adjacent).await
        }

        async fn update_shard_count(&self, stream: &StreamName, n: u32) -> Result<(), ApiError> {
            self.fake.update_shard_count(stream, n).await
        }

        async fn register_stream_consumer(
            &self,
            stream_arn: &str,
            name: &ConsumerName,
        ) -> Result<ConsumerDescription, ApiError> {
            self.fake.register_stream_consumer(stream_arn, name).await
        }

        async fn describe_stream_consumer(
            &self,
            stream_arn: &str,
            name: &ConsumerName,
        ) -> Result<ConsumerDescription, ApiError> {
            self.fake.describe_stream_consumer(stream_arn, name).await
        }

        async fn deregister_stream_consumer(
            &self,
            stream_arn: &str,
            name: &ConsumerName,
        ) -> Result<(), ApiError> {
            self.fake.deregister_stream_consumer(stream_arn, name).await
        }

        async fn subscribe_to_shard(
            &self,
            consumer_arn: &str,
            shard: &ShardId,
            position: ShardIteratorPosition,
        ) -> Result<Box<dyn Subscription>, ApiError> {
            let inner = self.fake.subscribe_to_shard(consumer_arn, shard, position).await?;
            Ok(Box::new(ScriptedSubscription {
                inner,
                script: Arc::clone(&self.script),
                silent: false,
            }))
        }
    }

    // ---- The driver, on the fake ----

    #[tokio::test(start_paused = true)]
    async fn reads_every_record_in_order_across_the_five_minute_end_of_subscriptions() {
        let t = setup(1).await;
        let shard = &t.shards[0];
        let mut written = Vec::new();
        for i in 0..3 {
            written.push(t.put(&format!("r{i}")).await);
        }
        let began = Instant::now();
        let config = FanOutConfig { buffer: 1, ..FanOutConfig::default() };
        let mut reader = t.start(shard, StartPosition::TrimHorizon, config);
        let mut records = reader.records(3).await;
        assert_eq!(t.calls(Operation::SubscribeToShard), 1);

        // r3 fills the queue of one; r4 is written after the subscription's five minutes ran
        // out while the retriever was waiting for room.
        tokio::time::sleep_until(began + Duration::from_secs(290)).await;
        written.push(t.put("r3").await);
        tokio::time::sleep_until(began + Duration::from_secs(310)).await;
        written.push(t.put("r4").await);
        assert_eq!(t.calls(Operation::SubscribeToShard), 1, "no pull while the queue is full");
        records.extend(reader.records(2).await);
        assert_eq!(t.calls(Operation::SubscribeToShard), 2);
        assert_eq!(reader.resubscriptions("ended"), 1);

        // An idle subscription's end: renewed at once.
        let second = Instant::now();
        tokio::time::sleep_until(second + LIFETIME + Duration::from_millis(1)).await;
        assert_eq!(t.calls(Operation::SubscribeToShard), 3);
        assert_eq!(reader.resubscriptions("ended"), 2);
        written.push(t.put("r5").await);
        records.extend(reader.records(1).await);

        assert_eq!(data(&records), names("r", 0..6));
        let seqs: Vec<_> = records.iter().map(|r| r.sequence_number.clone()).collect();
        assert_eq!(seqs, written);
        reader.nothing_more_for(Duration::from_secs(60)).await;
        let other = ["in_use", "throttled", "error"].map(|r| reader.resubscriptions(r));
        assert_eq!(other, [0, 0, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn resuming_after_a_checkpoint_mid_aggregate_skips_exactly_the_checkpointed_sub_records()
    {
        let t = setup(1).await;
        let shard = &t.shards[0];
        t.put("before").await;
        let agg = put_aggregate(&t, &aggregate("agg", 5)).await;
        let after = t.put("after").await;

        // A failed first call: the retry must still start at the checkpoint, not after it.
        let failure = ApiError::from_code("InternalFailure", "oops");
        t.fake.faults().fail_next_calls(Operation::SubscribeToShard, 1, failure);
        let from = StartPosition::After { sequence: agg.clone(), sub_sequence: 2 };
        let mut reader = t.start(shard, from, FanOutConfig::default());
        let records = reader.records(3).await;
        assert_eq!(data(&records), ["agg-3", "agg-4", "after"]);
        assert_eq!(
            positions(&records),
            [(agg.clone(), Some(3)), (agg.clone(), Some(4)), (after.clone(), None)]
        );
        assert_eq!(t.calls(Operation::SubscribeToShard), 2);
        reader.stop().await;

        // A checkpoint at the aggregate's last sub-record skips the aggregate and nothing else.
        let from = StartPosition::After { sequence: agg.clone(), sub_sequence: 4 };
        let mut reader = t.start(shard, from, FanOutConfig::default());
        assert_eq!(data(&reader.records(1).await), ["after"]);
        reader.stop().await;

        // A checkpoint at a plain record skips that record.
        let from = StartPosition::After { sequence: after.clone(), sub_sequence: 0 };
        let mut reader = t.start(shard, from, FanOutConfig::default());
        let next = t.put("next").await;
        assert_eq!(positions(&reader.records(1).await), [(next, None)]);
    }

    #[tokio::test(start_paused = true)]
    async fn ends_with_the_children_after_a_split() {
        let t = setup(1).await;
        let parent = &t.shards[0];
        for i in 0..5 {
            t.put(&format!("r{i}")).await;
        }
        let mut reader = t.start(parent, StartPosition::TrimHorizon, FanOutConfig::default());
        assert_eq!(data(&reader.records(5).await), names("r", 0..5));
        t.fake.split_shard(&t.stream, &parent.id, HashKey(1 << 127)).await.unwrap();
        // Written while the split is pending: still the parent's.
        t.put("r5").await;
        let (rest, children) = reader.read_to_end().await;
        assert_eq!(data(&rest), ["r5"]);
        let expected = listed_children(&t, &parent.id).await;
        assert_eq!(expected.len(), 2);
        assert!(expected.iter().all(|c| c.parent_shards == [parent.id.clone()]));
        assert_eq!(sorted(children), expected);
        assert!(reader.next().await.is_none(), "the queue closes after End");
        timeout(PATIENCE, reader.task).await.unwrap().unwrap();
        assert_eq!(t.calls(Operation::SubscribeToShard), 1);
        assert_eq!(t.calls(Operation::GetRecords), 0, "the service said where the shard ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_connection_resubscribes_after_the_last_record_with_backoff() {
        let t = setup(1).await;
        let api = Scripted::new(&t.fake, LastEvent::AsIs);
        t.put("r0").await;
        t.put("r1").await;
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let config = FanOutConfig { resubscribe_backoff: backoff, ..FanOutConfig::default() };
        // The delays the retriever will draw: attempts 0 and 1.
        let mut rng = SmallRng::seed_from_u64(SEED);
        let delays = [backoff.delay(0, &mut rng), backoff.delay(1, &mut rng)];
        // Both draws must show: the second one longer than the one-second call interval.
        assert!(delays[0] > Duration::from_millis(300), "{delays:?}");
        assert!(delays[1] > SUBSCRIBE_INTERVAL, "{delays:?}");
        let mut reader =
            t.start_on(Arc::new(api.clone()), &t.shards[0], StartPosition::TrimHorizon, config);
        let mut records = reader.records(2).await;
        tokio::time::sleep(Duration::from_secs(30)).await;

        let dropped_at = Instant::now();
        api.drop_connection(ApiError::from_code("InternalFailure", "connection reset"));
        let unavailable = ApiError::from_code("ServiceUnavailable", "try again");
        t.fake.faults().fail_next_calls(Operation::SubscribeToShard, 1, unavailable);
        t.put("r2").await;
        records.extend(reader.records(1).await);
        // Backoff, a failed call, then backoff again, and calls at least a second apart.
        close_to(dropped_at.elapsed(), delays[0] + delays[1].max(SUBSCRIBE_INTERVAL));
        assert_eq!(data(&records), ["r0", "r1", "r2"]);
        assert_eq!(t.calls(Operation::SubscribeToShard), 3);
        assert_eq!(reader.resubscriptions("error"), 2);
        reader.nothing_more_for(Duration::from_secs(60)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn resource_in_use_backs_off_with_the_in_use_backoff_and_then_takes_over() {
        let t = setup(1).await;
        let shard = &t.shards[0];
        // Another worker of this application still holds the shard, as in a lease handover.
        let mut held = t
            .fake
            .subscribe_to_shard(&t.consumer.arn, &shard.id, ShardIteratorPosition::Latest)
            .await
            .unwrap();
        let held_at = Instant::now();
        t.put("r0").await;
        let config = FanOutConfig::default();
        // Replay the retriever's draws: a new call takes over 5 s after the holder's.
        let mut rng = SmallRng::seed_from_u64(SEED);
        let (mut at, mut refused) = (Duration::ZERO, 0);
        while at < Duration::from_secs(5) {
            at += config.in_use_backoff.delay(refused, &mut rng).max(SUBSCRIBE_INTERVAL);
            refused += 1;
        }
        assert!(refused >= 2, "the seed should make the retriever back off more than once");

        let mut reader = t.start(shard, StartPosition::TrimHorizon, config);
        assert_eq!(data(&reader.records(1).await), ["r0"]);
        close_to(held_at.elapsed(), at);
        assert_eq!(t.calls(Operation::SubscribeToShard), 1 + u64::from(refused) + 1);
        assert_eq!(reader.resubscriptions("in_use"), u64::from(refused));
        let taken = held.next_event().await.expect_err("the old session was taken over");
        assert_eq!(taken.kind(), ApiErrorKind::ResourceInUse);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_loses_nothing_and_the_retriever_stops_pulling_after_buffer_batches() {
        let t = setup(1).await;
        let api = Scripted::new(&t.fake, LastEvent::AsIs);
        let config = FanOutConfig { buffer: 2, ..FanOutConfig::default() };
        let mut reader =
            t.start_on(Arc::new(api.clone()), &t.shards[0], StartPosition::TrimHorizon, config);
        for i in 0..4 {
            t.put(&format!("r{i}")).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The reader stays away for twelve minutes: two subscription lifetimes.
        tokio::time::sleep(Duration::from_secs(12 * 60)).await;
        assert_eq!(api.events(), 2, "events are pulled only when the queue has room");
        assert_eq!(reader.queue.len(), 2);
        assert_eq!(t.calls(Operation::SubscribeToShard), 1);
        t.put("r4").await;

        let batches = [reader.batch().await, reader.batch().await, reader.batch().await];
        let batches: Vec<Vec<String>> = batches.iter().map(|b| data(&b.records)).collect();
        assert_eq!(batches, [vec!["r0"], vec!["r1"], vec!["r2", "r3", "r4"]]);
        assert_eq!(reader.resubscriptions("ended"), 1);
        reader.nothing_more_for(Duration::from_secs(5)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_non_retryable_error_is_sent_and_then_the_queue_closes() {
        let t = setup(1).await;
        let shard = &t.shards[0];
        t.put("r0").await;
        let mut reader = t.start(shard, StartPosition::TrimHorizon, FanOutConfig::default());
        assert_eq!(data(&reader.records(1).await), ["r0"]);
        // The consumer is deregistered under the open subscription.
        let name = t.consumer.name.clone();
        t.fake.deregister_stream_consumer(&t.stream_arn, &name).await.unwrap();
        match reader.next().await {
            Some(Err(RetrievalError::Api { shard: failed, source })) => {
                assert_eq!(failed, shard.id);
                assert_eq!(source.kind(), ApiErrorKind::NotFound);
            }
            other => panic!("expected the error, got {other:?}"),
        }
        assert!(reader.next().await.is_none());
        timeout(PATIENCE, reader.task).await.unwrap().unwrap();
        assert_eq!(t.calls(Operation::SubscribeToShard), 1, "no retry");

        let t = setup(1).await;
        let denied = ApiError::from_code("AccessDeniedException", "no");
        t.fake.faults().fail_next_calls(Operation::SubscribeToShard, 1, denied.clone());
        let mut reader = t.start(&t.shards[0], StartPosition::Latest, FanOutConfig::default());
        match reader.next().await {
            Some(Err(RetrievalError::Api { source, .. })) => assert_eq!(source, denied),
            other => panic!("expected the error, got {other:?}"),
        }
        assert!(reader.next().await.is_none());
        assert_eq!(t.calls(Operation::SubscribeToShard), 1, "no retry");
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_stops_the_task_promptly_and_ends_the_subscription() {
        let t = setup(1).await;
        let shard = &t.shards[0];
        let mut reader = t.start(shard, StartPosition::Latest, FanOutConfig::default());
        tokio::time::sleep(Duration::from_millis(2500)).await;
        reader.cancel.cancel();
        timeout(Duration::from_millis(1), &mut reader.task).await.unwrap().unwrap();
        assert!(reader.queue.recv().await.is_none(), "closed without End or an error");
        // A live subscription would refuse this for 5 s after it started.
        let again =
            t.fake.subscribe_to_shard(&t.consumer.arn, &shard.id, ShardIteratorPosition::Latest);
        drop(again.await.expect("the retriever's subscription was dropped"));

        // Stuck in a slow SubscribeToShard call.
        t.fake.faults().delay_calls(Operation::SubscribeToShard, Duration::from_secs(3600));
        let mut reader = t.start(shard, StartPosition::Latest, FanOutConfig::default());
        tokio::time::sleep(Duration::from_secs(1)).await;
        reader.cancel.cancel();
        timeout(Duration::from_millis(1), &mut reader.task).await.unwrap().unwrap();
        assert!(reader.queue.recv().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_receiver_stops_the_task_and_ends_the_subscription() {
        let t = setup(1).await;
        let shard = &t.shards[0];
        let reader = t.start(shard, StartPosition::Latest, FanOutConfig::default());
        tokio::time::sleep(Duration::from_millis(2500)).await;
        drop(reader.queue);
        timeout(Duration::from_millis(1), reader.task).await.unwrap().unwrap();
        let again =
            t.fake.subscribe_to_shard(&t.consumer.arn, &shard.id, ShardIteratorPosition::Latest);
        drop(again.await.expect("the retriever's subscription was dropped"));
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(t.calls(Operation::SubscribeToShard), 2, "the retriever's and ours");
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_shard_whose_subscription_stays_silent_is_read_to_its_end_with_get_records() {
        let t = setup(1).await;
        let parent = &t.shards[0];
        let api = Scripted::new(&t.fake, LastEvent::Swallowed);
        let config = FanOutConfig { buffer: 1, ..FanOutConfig::default() };
        let mut reader =
            t.start_on(Arc::new(api.clone()), parent, StartPosition::TrimHorizon, config);
        t.put("r0").await;
        assert_eq!(data(&reader.records(1).await), ["r0"]);

        // An open shard that stays silent is checked every 10 s and read on.
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(t.calls(Operation::ListShards), 2);
        assert!(matches!(reader.queue.try_recv(), Err(TryRecvError::Empty)));

        // r1 fills the queue; r2 lands in the parent after the split, and the emulator
        // swallows the parent's last event, which carries r2, and stays silent.
        t.put("r1").await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        t.fake.split_shard(&t.stream, &parent.id, HashKey(1 << 127)).await.unwrap();
        t.put("r2").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(data(&reader.batch().await.records), ["r1"]);
        let room_at = Instant::now();
        let (rest, children) = reader.read_to_end().await;
        assert_eq!(data(&rest), ["r2"]);
        // Silence counts from when the queue had room again, not from r1's arrival: the time
        // spent waiting for the reader is not the shard's.
        close_to(room_at.elapsed(), FanOutConfig::default().closed_shard_check);
        let counters = t.fake.counters();
        assert_eq!(counters.calls(Operation::ListShards), 3);
        assert_eq!(counters.calls(Operation::GetShardIterator), 1);
        assert_eq!(counters.calls(Operation::GetRecords), 1);
        assert_eq!(counters.calls(Operation::SubscribeToShard), 1);
        assert_eq!(api.events(), 2, "r0 and r1 came by subscription");
        assert_eq!(sorted(children), listed_children(&t, &parent.id).await);
        assert!(reader.next().await.is_none());
        timeout(PATIENCE, reader.task).await.unwrap().unwrap();
        assert_eq!(reader.meter.count("kinesis_consumer_closed_shard_checks_total", None), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_end_event_without_children_is_confirmed_at_once_with_list_shards_and_get_records() {
        let t = setup(1).await;
        let parent = &t.shards[0];
        let api = Scripted::new(&t.fake, LastEvent::Childless);
        let config = FanOutConfig::default();
        let mut reader =
            t.start_on(Arc::new(api.clone()), parent, StartPosition::TrimHorizon, config);
        t.put("r0").await;
        assert_eq!(data(&reader.records(1).await), ["r0"]);
        let split_at = Instant::now();
        t.fake.split_shard(&t.stream, &parent.id, HashKey(1 << 127)).await.unwrap();
        let (rest, children) = reader.read_to_end().await;
        assert!(rest.is_empty());
        // The fake closes the parent after its 100 ms update delay; no 10 s wait follows.
        close_to(split_at.elapsed(), Duration::from_millis(100));
        assert_eq!(sorted(children), listed_children(&t, &parent.id).await);
        assert_eq!(t.calls(Operation::GetRecords), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn with_the_check_turned_off_a_silent_closed_shard_is_never_listed() {
        let t = setup(1).await;
        let api = Scripted::new(&t.fake, LastEvent::Swallowed);
        let config = FanOutConfig { closed_shard_check: Duration::ZERO, ..FanOutConfig::default() };
        let mut reader =
            t.start_on(Arc::new(api), &t.shards[0], StartPosition::TrimHorizon, config);
        t.put("r0").await;
        assert_eq!(data(&reader.records(1).await), ["r0"]);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(t.calls(Operation::ListShards), 0);
    }

    // ---- The pure pieces ----

    fn seq(n: &str) -> SequenceNumber {
        SequenceNumber::new(n).unwrap()
    }

    #[test]
    fn resubscriptions_resume_after_the_last_record_else_the_continuation_else_the_start() {
        let after = |n: &str| ShardIteratorPosition::AfterSequenceNumber(seq(n));
        let checkpoint = StartPosition::After { sequence: seq("5"), sub_sequence: 2 };
        let (r, c) = (seq("9"), seq("12"));
        for start in [StartPosition::TrimHorizon, StartPosition::Latest, checkpoint.clone()] {
            assert_eq!(resume_position(&start, Some(&r), Some(&c)), after("9"));
            assert_eq!(resume_position(&start, Some(&r), None), after("9"));
            assert_eq!(resume_position(&start, None, Some(&c)), after("12"));
        }
        assert_eq!(
            resume_position(&StartPosition::TrimHorizon, None, None),
            ShardIteratorPosition::TrimHorizon
        );
        assert_eq!(
            resume_position(&StartPosition::Latest, None, None),
            ShardIteratorPosition::Latest
        );
        let at = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(
            resume_position(&StartPosition::AtTimestamp(at), None, None),
            ShardIteratorPosition::AtTimestamp(at)
        );
        // AT the checkpoint: its aggregate may have sub-records left.
        assert_eq!(
            resume_position(&checkpoint, None, None),
            ShardIteratorPosition::AtSequenceNumber(seq("5"))
        );
    }

    #[test]
    fn failures_wait_for_the_shard_retry_or_give_up_by_kind() {
        let cases = [
            ("ResourceInUseException", Reaction::InUse),
            ("ProvisionedThroughputExceededException", Reaction::Retry),
            ("LimitExceededException", Reaction::Retry),
            ("InternalFailure", Reaction::Retry),
            ("ServiceUnavailable", Reaction::Retry),
            ("ResourceNotFoundException", Reaction::GiveUp),
            ("AccessDeniedException", Reaction::GiveUp),
            ("InvalidArgumentException", Reaction::GiveUp),
            ("KMSDisabledException", Reaction::GiveUp),
            ("SomethingNew", Reaction::GiveUp),
        ];
        for (code, want) in cases {
            assert_eq!(reaction(&ApiError::from_code(code, "m")), want, "{code}");
        }
    }

    fn shard(name: &str, parents: &[&str], range: (u128, u128)) -> Shard {
        let id = |s: &str| ShardId::new(s).unwrap();
        Shard {
            id: id(name),
            parent: parents.first().map(|p| id(p)),
            adjacent_parent: parents.get(1).map(|p| id(p)),
            hash_range: HashKeyRange::new(HashKey(range.0), HashKey(range.1)).unwrap(),
            starting_sequence: seq("1"),
            ending_sequence: None,
        }
    }

    #[test]
    fn an_event_ends_the_shard_only_without_a_continuation_and_with_children() {
        let child = ChildShard {
            shard_id: ShardId::new("shardId-000000000001").unwrap(),
            parent_shards: vec![ShardId::new("shardId-000000000000").unwrap()],
            hash_range: HashKeyRange::FULL,
        };
        assert_eq!(event_end(Some(&seq("3")), vec![]), EventEnd::Open);
        // Children with a continuation are not an end (the KCL calls such events invalid).
        assert_eq!(event_end(Some(&seq("3")), vec![child.clone()]), EventEnd::Open);
        assert_eq!(event_end(None, vec![child.clone()]), EventEnd::Closed(vec![child]));
        assert_eq!(event_end(None, vec![]), EventEnd::Unconfirmed);
    }

    #[test]
    fn children_come_from_list_shards_with_all_their_parents() {
        let id = |s: &str| ShardId::new(s).unwrap();
        let listed = [
            shard("a", &[], (0, 99)),
            shard("b", &[], (100, 199)),
            shard("a1", &["a"], (0, 49)),
            shard("a2", &["a"], (50, 99)),
            shard("ab", &["a2", "b"], (50, 199)),
            shard("c", &["b"], (100, 199)),
        ];
        let children = children_of(&id("a"), &listed);
        let got: Vec<_> = children.iter().map(|c| c.shard_id.as_str()).collect();
        assert_eq!(got, ["a1", "a2"]);
        assert_eq!(children[1].parent_shards, [id("a")]);
        assert_eq!(children[1].hash_range, listed[3].hash_range);
        // A merge child names both parents, whichever of them is asked about.
        let of_b = children_of(&id("b"), &listed);
        let got: Vec<_> = of_b.iter().map(|c| c.shard_id.as_str()).collect();
        assert_eq!(got, ["ab", "c"]);
        assert_eq!(of_b[0].parent_shards, [id("a2"), id("b")]);
        assert!(children_of(&id("c"), &listed).is_empty());
    }

    fn kinesis_record(sequence: &str, key: &str, data: impl Into<Bytes>) -> KinesisRecord {
        KinesisRecord {
            sequence_number: seq(sequence),
            partition_key: key.to_owned(),
            data: data.into(),
            approximate_arrival: None,
        }
    }

    #[test]
    fn batches_count_bytes_corrupt_and_filtered_records_and_skip_through_the_checkpoint() {
        let range = HashKeyRange::new(HashKey(0), HashKey(1000)).unwrap();
        let user = |i: u128| {
            UserRecord::new(PartitionKey::new("p").unwrap(), format!("in-{i}"))
                .with_explicit_hash_key(HashKey(i))
        };
        // An aggregate with a record outside the range belongs to another shard: all of it goes.
        let mut stray = AggregateBuilder::new();
        stray.push(user(3));
        stray.push(user(3).with_explicit_hash_key(HashKey(u128::MAX)));
        let mut good = AggregateBuilder::new();
        for i in 4..7 {
            good.push(user(i));
        }
        let mut corrupt = MAGIC.to_vec();
        corrupt.extend_from_slice(&[0xAB; 20]);
        let records = [
            kinesis_record("9", "old", "old"),
            kinesis_record("10", "c", corrupt),
            kinesis_record("12", "a", stray.finish()),
            kinesis_record("13", "a", good.finish()),
        ];
        let mut builder = BatchBuilder {
            hash_range: Some(range),
            max_decompressed_len: DEFAULT_MAX_DECOMPRESSED_LEN,
            skip_through: Some(ExtendedSequenceNumber::new(seq("13"), 0)),
            last_sequence: None,
        };
        let batch = builder.build(&records, Some(7));
        let bytes: usize = records.iter().map(|r| r.data.len()).sum();
        assert_eq!(
            (batch.kinesis_records, batch.bytes, batch.corrupt, batch.filtered_out),
            (4, bytes, 1, 2)
        );
        assert_eq!(batch.millis_behind_latest, Some(7));
        // "9" < "13" as numbers though not as text; (13, 0) itself was checkpointed.
        assert_eq!(data(&batch.records), ["in-5", "in-6"]);
        assert!(builder.skip_through.is_some(), "not past the checkpoint's sequence yet");
        let later = builder.build(&[kinesis_record("14", "k", "new")], None);
        assert_eq!(data(&later.records), ["new"]);
        assert!(builder.skip_through.is_none());
    }
}
