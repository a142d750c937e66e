//! The polling retriever: one task per shard that reads it with GetShardIterator and
//! GetRecords and hands the de-aggregated records to the shard consumer through a bounded
//! queue.
//!
//! # What it owns
//!
//! The shard iterator, the pacing of GetRecords calls, retries with backoff, iterator renewal,
//! and the skipping of records at or before the checkpoint it started from. The shard
//! consumer owns everything after the queue (processing, checkpoints, the lease).
//!
//! Three pure pieces hold the policy and are tested on their own: [`next_call_at`] (pacing),
//! [`recovery`] (what to do about a failed call) and [`BatchBuilder`] (de-aggregation, the
//! hash-range filter and the checkpoint skip). [`PollingRetriever::run`] is the thin async
//! driver around them.
//!
//! # AWS limits it keeps
//!
//! - At most 5 GetRecords calls per second per shard, shared by every application reading
//!   the shard (Kinesis developer guide, "Quotas and limits"): calls are at least
//!   [`PollingConfig::min_interval_between_calls`] apart, 200 ms by default, failed calls
//!   included.
//! - At most 2 MiB per second read per shard (same page): after a call that returned `B`
//!   bytes, the next call waits until `B / max_bytes_per_second` has passed since that call.
//!   GetRecords returns up to 10 MiB, and "if a call returns 10 MB of data, subsequent calls
//!   made within the next 5 seconds throw `ProvisionedThroughputExceededException`" (Kinesis
//!   API reference, GetRecords): the pacing waits those 5 seconds instead of being throttled.
//! - At most 10 000 records per GetRecords call (Kinesis API reference, GetRecords, `Limit`):
//!   [`PollingConfig::max_records`] is clamped to `1..=10_000`.
//! - A shard iterator expires 5 minutes after it was issued (Kinesis API reference,
//!   GetShardIterator). An iterator expires here only when the queue stayed full (a slow
//!   processor) or retries lasted that long; the retriever then asks for a new one
//!   `AFTER_SEQUENCE_NUMBER` of the last Kinesis record it received, as the KCL does since
//!   PR #1014, or at the start position if it received none yet.
//!
//! # Invariants
//!
//! - Records are sent in order, each once: a renewed iterator starts right after the last
//!   Kinesis record received (all of whose user records were sent), and nothing at or before
//!   the checkpoint of [`StartPosition::After`] is sent, comparing (sequence, sub-sequence)
//!   as the KCL's `ExtendedSequenceNumber` does. Sequence numbers stay decimal strings.
//! - A GetRecords call is made only once the queue has room for its batch: the retriever is
//!   never more than [`PollingConfig::prefetch`] batches ahead of the shard consumer, and
//!   never holds records it cannot hand over.
//! - Every wait, call and send also waits on the cancellation token and on the receiver
//!   being dropped, so the task stops promptly on either. All waits are on tokio time.
//! - The queue closes after [`Fetched::End`], after an `Err`, or without either when the
//!   retriever was stopped.
//! - Known gap, as in the KCL: with [`StartPosition::Latest`], an iterator that expires
//!   before any record was received is renewed at `LATEST`, so records written while the
//!   queue was full of empty batches can be missed. This needs
//!   [`PollingConfig::deliver_empty_batches`] and a processor stuck for 5 minutes.
//!
//! # Metrics
//!
//! Counters labelled `stream` and `shard`:
//! - `kinesis_consumer_get_records_calls_total`: GetRecords calls made, failed ones included.
//! - `kinesis_consumer_get_records_throttled_total`: GetRecords calls answered with
//!   throttling.
//! - `kinesis_consumer_expired_iterator_total`: GetRecords calls that found the iterator
//!   expired (the KCL's `ExpiredIterator` metric).
//! - `kinesis_consumer_retrieval_retries_total`: failed GetRecords and GetShardIterator calls
//!   that were retried after a backoff (throttling included).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use kinesis_common::backoff::Backoff;
use kinesis_common::compression::DEFAULT_MAX_DECOMPRESSED_LEN;
use kinesis_common::{
    ApiError, ApiErrorKind, ExtendedSequenceNumber, HashKeyRange, KinesisApi, SequenceNumber,
    ShardId, ShardIterator, ShardIteratorPosition, StreamName,
};
use metrics::Counter;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, warn};

use super::{BatchBuilder, Fetched, FetchedBatch, RetrievalError, StartPosition};

/// What a retriever sends: a batch, the shard's end, or why it stopped.
type Item = Result<Fetched, RetrievalError>;

/// The largest, and default, GetRecords `Limit` (Kinesis API reference, GetRecords).
pub(crate) const MAX_RECORDS_PER_CALL: u32 = 10_000;

/// The shortest time between two GetRecords calls on one shard: 5 calls per second per shard
/// (Kinesis developer guide, "Quotas and limits").
const MIN_INTERVAL_BETWEEN_CALLS: Duration = Duration::from_millis(200);

/// The read throughput of one shard: 2 MiB per second (Kinesis developer guide, "Quotas and
/// limits").
const MAX_BYTES_PER_SECOND: u64 = 2 << 20;

/// How the polling retriever reads a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PollingConfig {
    /// The GetRecords `Limit`; clamped to `1..=10_000` (Kinesis API reference, GetRecords).
    /// Default 10 000, as the KCL's `maxRecords`.
    pub(crate) max_records: u32,
    /// How long to wait after a response without records from a shard that is caught up
    /// (`MillisBehindLatest` zero or absent). Default 1 s: an idle shard costs one call a
    /// second, leaving four of the shard's five to other applications (the KCL's
    /// `idleTimeBetweenReadsInMillis` is 1.5 s).
    pub(crate) idle_time_between_reads: Duration,
    /// The shortest time between the starts of two GetRecords calls, failed ones included.
    /// Default 200 ms: 5 calls per second per shard (Kinesis developer guide, "Quotas and
    /// limits").
    pub(crate) min_interval_between_calls: Duration,
    /// The read rate to stay under: after a call that returned `B` bytes of record data, the
    /// next waits until `B / max_bytes_per_second` has passed since it. Default 2 MiB, the
    /// per-shard read limit (Kinesis developer guide, "Quotas and limits"). Zero turns this
    /// pacing off.
    pub(crate) max_bytes_per_second: u64,
    /// The queue's capacity in batches: how far the retriever may read ahead of processing.
    /// Default 3 (the KCL's `maxPendingProcessRecordsInput` is 4 at most 5). Zero is taken
    /// as 1.
    pub(crate) prefetch: usize,
    /// The backoff before retrying a throttled or transiently failed call; the attempt count
    /// grows with each consecutive failure and starts again after a success. Default 200 ms
    /// doubling up to 5 s, with full jitter.
    pub(crate) throttle_backoff: Backoff,
    /// Whether responses that yield no user record are sent as empty batches (the KCL's
    /// `callProcessRecordsEvenForEmptyRecordList`). Default false.
    pub(crate) deliver_empty_batches: bool,
    /// The largest decompressed size of a compression envelope; larger ones are passed on
    /// unopened as corrupt records. Default
    /// [`DEFAULT_MAX_DECOMPRESSED_LEN`](kinesis_common::compression::DEFAULT_MAX_DECOMPRESSED_LEN).
    pub(crate) max_decompressed_len: usize,
}

impl Default for PollingConfig {
    fn default() -> Self {
        Self {
            max_records: MAX_RECORDS_PER_CALL,
            idle_time_between_reads: Duration::from_secs(1),
            min_interval_between_calls: MIN_INTERVAL_BETWEEN_CALLS,
            max_bytes_per_second: MAX_BYTES_PER_SECOND,
            prefetch: 3,
            throttle_backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
            deliver_empty_batches: false,
            max_decompressed_len: DEFAULT_MAX_DECOMPRESSED_LEN,
        }
    }
}

/// Spawns a [`PollingRetriever`] for one shard; returns its queue and its task.
///
/// `hash_range` is the shard's hash key range, used to drop aggregates that belong to
/// another shard (`None` filters nothing). The task ends after sending [`Fetched::End`] or an
/// error, or when `cancel` is cancelled or the receiver is dropped.
pub(crate) fn spawn(
    api: Arc<dyn KinesisApi>,
    stream: StreamName,
    shard: ShardId,
    hash_range: Option<HashKeyRange>,
    start: StartPosition,
    config: PollingConfig,
    cancel: CancellationToken,
) -> (mpsc::Receiver<Item>, JoinHandle<()>) {
    let (retriever, queue) =
        PollingRetriever::new(api, stream, shard, hash_range, start, config, cancel);
    (queue, tokio::spawn(retriever.run()))
}

/// Reads one shard with GetRecords into a bounded queue; see the [module docs](self).
///
/// Make one with [`new`](Self::new) and drive it with [`run`](Self::run) on a task of the
/// caller's `JoinSet` or `TaskTracker`, or use [`spawn`].
pub(crate) struct PollingRetriever {
    api: Arc<dyn KinesisApi>,
    stream: StreamName,
    shard: ShardId,
    start: StartPosition,
    config: PollingConfig,
    cancel: CancellationToken,
    queue: mpsc::Sender<Item>,
    batches: BatchBuilder,
    rng: SmallRng,
    /// Consecutive failed calls: the backoff attempt number.
    failures: u32,
    /// The sequence number of the last Kinesis record received: where a renewed iterator
    /// resumes, after it.
    last_received: Option<SequenceNumber>,
    /// The earliest time the next GetRecords call may start.
    next_call: Instant,
    meters: Meters,
}

impl PollingRetriever {
    /// A retriever for `shard` and the receiving end of its queue, of
    /// [`PollingConfig::prefetch`] batches.
    pub(crate) fn new(
        api: Arc<dyn KinesisApi>,
        stream: StreamName,
        shard: ShardId,
        hash_range: Option<HashKeyRange>,
        start: StartPosition,
        config: PollingConfig,
        cancel: CancellationToken,
    ) -> (Self, mpsc::Receiver<Item>) {
        let (queue, receiver) = mpsc::channel(config.prefetch.max(1));
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
        // Jitter exists to spread the retries of clients that were throttled together, which
        // for a shard's read quota are other applications reading the same shard: seed from
        // the OS, not from the shard id they share. The fallback still differs per shard.
        let rng = SmallRng::try_from_os_rng().unwrap_or_else(|_| {
            let mut hasher = DefaultHasher::new();
            (stream.as_str(), shard.as_str()).hash(&mut hasher);
            SmallRng::seed_from_u64(hasher.finish())
        });
        let meters = Meters::new(&stream, &shard);
        let retriever = Self {
            api,
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
            next_call: Instant::now(),
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
            tracing::debug_span!("polling_retriever", stream = %self.stream, shard = %self.shard);
        async move {
            debug!(start = ?self.start, "reading shard");
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

    /// The read loop: returns `Ok` once [`Fetched::End`] is sent.
    async fn read(&mut self) -> Result<(), Halt> {
        let limit = self.config.max_records.clamp(1, MAX_RECORDS_PER_CALL);
        let mut iterator = self.shard_iterator().await?;
        loop {
            // Room first, then the call: a full queue stops the calls (bounded prefetch), and
            // records fetched always have a place to go.
            let permit = self.until(self.queue.clone().reserve_owned()).await?;
            let permit = permit.map_err(|_| Halt::Stopped)?;
            self.wait_until(self.next_call).await?;
            let called_at = Instant::now();
            self.meters.calls.increment(1);
            let answer = self.until(self.api.get_records(&iterator, Some(limit))).await?;
            // Every call counts against the shard's five a second, failed ones too.
            self.next_call = called_at + self.config.min_interval_between_calls;
            let output = match answer {
                Ok(output) => output,
                Err(error) => {
                    drop(permit);
                    match recovery(&error) {
                        Recovery::NewIterator => {
                            self.meters.expired.increment(1);
                            warn!(
                                after = ?self.last_received,
                                "shard iterator expired; getting a new one"
                            );
                            iterator = self.shard_iterator().await?;
                        }
                        Recovery::Retry => {
                            if error.kind() == ApiErrorKind::Throttled {
                                self.meters.throttled.increment(1);
                            }
                            let retry_at = self.retry_at("GetRecords", &error);
                            self.next_call = self.next_call.max(retry_at);
                        }
                        Recovery::GiveUp => return Err(Halt::Failed(error)),
                    }
                    continue;
                }
            };
            self.failures = 0;
            let batch = self.batches.build(&output.records, output.millis_behind_latest);
            self.next_call = next_call_at(&self.config, called_at, Instant::now(), &batch);
            if let Some(last) = output.records.last() {
                self.last_received = Some(last.sequence_number.clone());
            }
            // The permit goes to the batch if there is one to send; else it may carry End.
            let permit = if !batch.records.is_empty() || self.config.deliver_empty_batches {
                drop(permit.send(Ok(Fetched::Batch(batch))));
                None
            } else {
                Some(permit)
            };
            let Some(next) = output.next_iterator else {
                debug!(children = output.child_shards.len(), "reached the end of the shard");
                let end = Ok(Fetched::End { child_shards: output.child_shards });
                match permit {
                    Some(permit) => drop(permit.send(end)),
                    None => self.send(end).await?,
                }
                return Ok(());
            };
            iterator = next;
        }
    }

    /// A shard iterator at the start position, or after the last record received; retries
    /// throttling and passing faults.
    async fn shard_iterator(&mut self) -> Result<ShardIterator, Halt> {
        loop {
            let position = self.position();
            let called_at = Instant::now();
            let answer = self
                .until(self.api.get_shard_iterator(&self.stream, &self.shard, position.clone()))
                .await?;
            match answer {
                Ok(iterator) => {
                    self.failures = 0;
                    debug!(?position, "got a shard iterator");
                    return Ok(iterator);
                }
                Err(error) if error.is_retryable() => {
                    // GetShardIterator has the same quota of 5 calls per second per shard
                    // (Kinesis developer guide, "Quotas and limits"): a short jitter draw
                    // must not retry faster.
                    let retry_at = self.retry_at("GetShardIterator", &error);
                    let paced = called_at + self.config.min_interval_between_calls;
                    self.wait_until(retry_at.max(paced)).await?;
                }
                Err(error) => return Err(Halt::Failed(error)),
            }
        }
    }

    /// Where a new iterator starts: right after the last Kinesis record received (all of its
    /// user records were sent), else the start position. The checkpoint skip of
    /// [`StartPosition::After`] stays armed until a record past the checkpoint arrives.
    fn position(&self) -> ShardIteratorPosition {
        if let Some(sequence) = &self.last_received {
            return ShardIteratorPosition::AfterSequenceNumber(sequence.clone());
        }
        match &self.start {
            StartPosition::TrimHorizon => ShardIteratorPosition::TrimHorizon,
            StartPosition::Latest => ShardIteratorPosition::Latest,
            StartPosition::AtTimestamp(at) => ShardIteratorPosition::AtTimestamp(*at),
            // AT, not AFTER: the checkpoint may be in the middle of an aggregate.
            StartPosition::After { sequence, .. } => {
                ShardIteratorPosition::AtSequenceNumber(sequence.clone())
            }
        }
    }

    /// Counts a retryable failure of `operation` and returns when to try again.
    fn retry_at(&mut self, operation: &'static str, error: &ApiError) -> Instant {
        let delay = self.config.throttle_backoff.delay(self.failures, &mut self.rng);
        self.failures = self.failures.saturating_add(1);
        self.meters.retries.increment(1);
        if error.kind() == ApiErrorKind::Throttled {
            // Expected when several applications read one shard: not worth a warning.
            debug!(operation, %error, ?delay, attempt = self.failures, "throttled; backing off");
        } else {
            warn!(operation, %error, ?delay, attempt = self.failures, "call failed; retrying");
        }
        Instant::now() + delay
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

/// What to do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    /// Get a new iterator after the last record received and go on.
    NewIterator,
    /// Back off and call again.
    Retry,
    /// Send the error and stop.
    GiveUp,
}

/// What to do about `error` from GetRecords: renew an expired iterator, retry throttling and
/// passing faults (and busy resources), give up on the rest (not found, access denied,
/// invalid argument, unknown errors).
fn recovery(error: &ApiError) -> Recovery {
    match error.kind() {
        ApiErrorKind::ExpiredIterator => Recovery::NewIterator,
        _ if error.is_retryable() => Recovery::Retry,
        _ => Recovery::GiveUp,
    }
}

/// The earliest start of the next GetRecords call after one that started at `called_at`,
/// was answered at `answered_at` and gave `batch`: the call interval, the byte rate, and the
/// idle wait when the response was empty and the shard is caught up.
///
/// An empty response from a shard that is behind (`MillisBehindLatest` above zero) is not
/// idleness: GetRecords may return no records before the shard's end (Kinesis API reference,
/// GetRecords), so the reader goes on at the call interval.
fn next_call_at(
    config: &PollingConfig,
    called_at: Instant,
    answered_at: Instant,
    batch: &FetchedBatch,
) -> Instant {
    let mut at = called_at + config.min_interval_between_calls;
    if let Some(read_time) = time_to_read(batch.bytes, config.max_bytes_per_second) {
        at = at.max(called_at + read_time);
    }
    let caught_up = batch.millis_behind_latest.is_none_or(|behind| behind == 0);
    if batch.kinesis_records == 0 && caught_up {
        at = at.max(answered_at + config.idle_time_between_reads);
    }
    at
}

/// How long reading `bytes` takes at `bytes_per_second`; `None` for no limit (zero).
fn time_to_read(bytes: usize, bytes_per_second: u64) -> Option<Duration> {
    let nanos = (bytes as u128 * 1_000_000_000).checked_div(u128::from(bytes_per_second))?;
    Some(Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
}

/// The retriever's counters, labelled once with the stream and shard.
struct Meters {
    calls: Counter,
    throttled: Counter,
    expired: Counter,
    retries: Counter,
}

impl Meters {
    fn new(stream: &StreamName, shard: &ShardId) -> Self {
        let labels = |name: &'static str| {
            metrics::counter!(
                name,
                "stream" => stream.as_str().to_owned(),
                "shard" => shard.as_str().to_owned()
            )
        };
        Self {
            calls: labels("kinesis_consumer_get_records_calls_total"),
            throttled: labels("kinesis_consumer_get_records_throttled_total"),
            expired: labels("kinesis_consumer_expired_iterator_total"),
            retries: labels("kinesis_consumer_retrieval_retries_total"),
        }
    }
}

#[cfg(test)]
mod tests {
    use kinesis_common::KinesisRecord;
    use std::time::SystemTime;

    use bytes::Bytes;
    use kinesis_common::aggregation::{AggregateBuilder, KinesisClientRecord, MAGIC, UserRecord};
    use kinesis_common::compression::{Codec, compress};
    use kinesis_common::fake::{FakeKinesis, Operation};
    use kinesis_common::{HashKey, PartitionKey, PutRecordsEntry, PutRecordsOutcome, Shard};
    use tokio::time::timeout;

    use super::*;
    use crate::retrieval::QueueReader;

    /// Long enough for anything a test waits for; short enough to fail fast on paused time.
    const PATIENCE: Duration = Duration::from_secs(600);

    fn stream() -> StreamName {
        StreamName::new("polling").unwrap()
    }

    async fn setup(shards: u32) -> (FakeKinesis, StreamName, Vec<Shard>) {
        let fake = FakeKinesis::new();
        let s = stream();
        fake.create_active_stream(&s, shards).unwrap();
        let listed = fake.list_shards(&s).await.unwrap();
        (fake, s, listed)
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

    async fn put(fake: &FakeKinesis, s: &StreamName, data: &str) -> SequenceNumber {
        put_entry(fake, s, entry("k", data.to_owned())).await
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

    async fn put_aggregate(
        fake: &FakeKinesis,
        s: &StreamName,
        builder: &AggregateBuilder,
    ) -> SequenceNumber {
        let entry = PutRecordsEntry {
            partition_key: PartitionKey::new("a").unwrap(),
            explicit_hash_key: builder.first_hash_key(),
            data: builder.finish(),
        };
        put_entry(fake, s, entry).await
    }

    /// Settings that make tests quick to reason about: one record per call unless asked.
    fn config() -> PollingConfig {
        PollingConfig { max_records: 1, ..PollingConfig::default() }
    }

    struct Running {
        queue: mpsc::Receiver<Item>,
        task: JoinHandle<()>,
        cancel: CancellationToken,
    }

    fn start(
        fake: &FakeKinesis,
        shard: &Shard,
        start: StartPosition,
        config: PollingConfig,
    ) -> Running {
        let cancel = CancellationToken::new();
        let (queue, task) = spawn(
            Arc::new(fake.clone()),
            stream(),
            shard.id.clone(),
            Some(shard.hash_range),
            start,
            config,
            cancel.clone(),
        );
        Running { queue, task, cancel }
    }

    impl QueueReader for Running {
        fn queue(&mut self) -> &mut mpsc::Receiver<Item> {
            &mut self.queue
        }
    }

    impl Running {}

    fn data(records: &[KinesisClientRecord]) -> Vec<String> {
        records.iter().map(|r| String::from_utf8(r.data.to_vec()).unwrap()).collect()
    }

    fn positions(records: &[KinesisClientRecord]) -> Vec<(SequenceNumber, Option<u64>)> {
        records.iter().map(|r| (r.sequence_number.clone(), r.sub_sequence_number)).collect()
    }

    /// GetRecords calls, those failed by injected faults included (the fake's per-shard
    /// counter leaves them out); every test reads a single shard of a fake of its own.
    fn get_records_calls(fake: &FakeKinesis, shard: &Shard) -> u64 {
        let calls = fake.counters().calls(Operation::GetRecords);
        assert!(calls >= fake.counters().get_records_calls(&stream(), &shard.id));
        calls
    }

    #[tokio::test(start_paused = true)]
    async fn reads_every_record_in_order_from_trim_horizon_and_ends_with_the_children_after_a_split()
     {
        let (fake, s, shards) = setup(1).await;
        let parent = &shards[0];
        let mut written = Vec::new();
        for i in 0..5 {
            written.push(put(&fake, &s, &format!("r{i}")).await);
        }
        let mut reader = start(
            &fake,
            parent,
            StartPosition::TrimHorizon,
            PollingConfig { max_records: 2, ..PollingConfig::default() },
        );
        assert_eq!(data(&reader.records(2).await), ["r0", "r1"]);
        fake.split_shard(&s, &parent.id, HashKey(1 << 127)).await.unwrap();
        // Written while the split is pending: still the parent's.
        written.push(put(&fake, &s, "r5").await);
        let (rest, children) = reader.read_to_end().await;
        assert_eq!(data(&rest), ["r2", "r3", "r4", "r5"]);
        let seqs: Vec<_> = rest.iter().map(|r| r.sequence_number.clone()).collect();
        assert_eq!(seqs, written[2..]);
        assert!(rest.iter().all(|r| r.sub_sequence_number.is_none()));

        let mut expected: Vec<ShardId> = fake
            .list_shards(&s)
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.parent.as_ref() == Some(&parent.id))
            .map(|c| c.id)
            .collect();
        expected.sort();
        let mut got: Vec<ShardId> = children.iter().map(|c| c.shard_id.clone()).collect();
        got.sort();
        assert_eq!(got.len(), 2);
        assert_eq!(got, expected);
        assert!(children.iter().all(|c| c.parent_shards == [parent.id.clone()]));
        assert!(reader.next().await.is_none(), "the queue closes after End");
        timeout(PATIENCE, reader.task).await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn resuming_after_a_checkpoint_mid_aggregate_skips_exactly_the_checkpointed_sub_records()
    {
        let (fake, s, shards) = setup(1).await;
        put(&fake, &s, "before").await;
        let agg = put_aggregate(&fake, &s, &aggregate("agg", 5)).await;
        let after = put(&fake, &s, "after").await;

        let from = StartPosition::After { sequence: agg.clone(), sub_sequence: 2 };
        let mut reader = start(&fake, &shards[0], from, config());
        let records = reader.records(3).await;
        assert_eq!(data(&records), ["agg-3", "agg-4", "after"]);
        assert_eq!(
            positions(&records),
            [(agg.clone(), Some(3)), (agg.clone(), Some(4)), (after.clone(), None)]
        );
        reader.cancel.cancel();

        // A checkpoint at a plain record skips that record and nothing else.
        let from = StartPosition::After { sequence: agg.clone(), sub_sequence: 4 };
        let mut reader = start(&fake, &shards[0], from, config());
        assert_eq!(data(&reader.records(1).await), ["after"]);
        let from = StartPosition::After { sequence: after.clone(), sub_sequence: 0 };
        let mut reader = start(&fake, &shards[0], from, config());
        let next = put(&fake, &s, "next").await;
        let records = reader.records(1).await;
        assert_eq!(positions(&records), [(next, None)]);
    }

    #[tokio::test(start_paused = true)]
    async fn compressed_aggregates_arrive_as_user_records() {
        let (fake, s, shards) = setup(1).await;
        let builder = aggregate("zipped", 4);
        let compressed = compress(Codec::Zstd, None, &builder.finish()).unwrap();
        let size = compressed.len();
        let seq = put_entry(
            &fake,
            &s,
            PutRecordsEntry {
                partition_key: PartitionKey::new("a").unwrap(),
                explicit_hash_key: builder.first_hash_key(),
                data: compressed,
            },
        )
        .await;
        let mut reader = start(&fake, &shards[0], StartPosition::TrimHorizon, config());
        let batch = reader.batch().await;
        assert_eq!(data(&batch.records), ["zipped-0", "zipped-1", "zipped-2", "zipped-3"]);
        let subs: Vec<_> = batch.records.iter().map(|r| r.sub_sequence_number).collect();
        assert_eq!(subs, [Some(0), Some(1), Some(2), Some(3)]);
        assert!(batch.records.iter().all(|r| r.sequence_number == seq));
        assert_eq!(batch.records[1].partition_key.as_ref(), "key-1");
        assert_eq!((batch.kinesis_records, batch.bytes, batch.corrupt), (1, size, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn throttled_and_failed_calls_are_retried_with_backoff_and_nothing_is_lost() {
        let (fake, s, shards) = setup(1).await;
        for i in 0..5 {
            put(&fake, &s, &format!("r{i}")).await;
        }
        let throttled = ApiError::from_code("ProvisionedThroughputExceededException", "slow down");
        fake.faults()
            .fail_next_calls(Operation::GetShardIterator, 1, throttled.clone())
            .fail_next_calls(Operation::GetRecords, 2, throttled)
            .fail_next_calls(
                Operation::GetRecords,
                1,
                ApiError::from_code("InternalFailure", "oops"),
            );
        let began = Instant::now();
        let mut reader = start(
            &fake,
            &shards[0],
            StartPosition::TrimHorizon,
            PollingConfig { max_records: 2, ..PollingConfig::default() },
        );
        let first = reader.batch().await;
        let waited = began.elapsed();
        // One failed GetShardIterator call and three failed GetRecords calls, each followed
        // by the 200 ms call interval or a longer backoff (at most 200, 200, 400, 800 ms; the
        // attempt count starts over after the GetShardIterator success).
        assert!(waited >= Duration::from_millis(800), "{waited:?}");
        assert!(waited <= Duration::from_millis(200 + 200 + 400 + 800), "{waited:?}");
        assert_eq!(fake.counters().calls(Operation::GetShardIterator), 2);
        assert_eq!(get_records_calls(&fake, &shards[0]), 4);
        let mut records = first.records;
        records.extend(reader.records(3).await);
        assert_eq!(data(&records), ["r0", "r1", "r2", "r3", "r4"]);
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_backs_off_with_growing_jittered_delays_and_starts_over_after_a_success() {
        let (fake, s, shards) = setup(1).await;
        put(&fake, &s, "r0").await;
        put(&fake, &s, "r1").await;
        let throttled = ApiError::from_code("ProvisionedThroughputExceededException", "slow down");
        fake.faults().fail_next_calls(Operation::GetRecords, 4, throttled.clone());
        let backoff = Backoff::new(Duration::from_millis(300), Duration::from_secs(5));
        let config = PollingConfig { throttle_backoff: backoff, ..config() };
        let seed = 7;
        // The delays the retriever will draw: attempts 0..4, then 0 again after the success.
        let mut rng = SmallRng::seed_from_u64(seed);
        let delays: Vec<Duration> =
            [0, 1, 2, 3, 0].into_iter().map(|attempt| backoff.delay(attempt, &mut rng)).collect();
        // Without growth every ceiling would be 300 ms; make sure the seed shows it.
        assert!(delays[1..4].iter().any(|d| *d > Duration::from_millis(300)), "{delays:?}");
        let waits: Vec<Duration> =
            delays.iter().map(|d| (*d).max(config.min_interval_between_calls)).collect();

        let began = Instant::now();
        let (retriever, mut queue) = PollingRetriever::new(
            Arc::new(fake.clone()),
            s.clone(),
            shards[0].id.clone(),
            Some(shards[0].hash_range),
            StartPosition::TrimHorizon,
            config.clone(),
            CancellationToken::new(),
        );
        let _task = tokio::spawn(retriever.with_rng(SmallRng::seed_from_u64(seed)).run());
        let mut arrival = async || {
            match timeout(PATIENCE, queue.recv()).await.unwrap() {
                Some(Ok(Fetched::Batch(batch))) => assert_eq!(batch.records.len(), 1),
                other => panic!("expected a batch, got {other:?}"),
            }
            began.elapsed()
        };
        let close = |got: Duration, want: Duration| {
            // The timer wheel rounds each deadline up to a whole millisecond.
            assert!(got >= want && got <= want + Duration::from_millis(5), "{got:?} vs {want:?}");
        };
        let first = arrival().await;
        close(first, waits[..4].iter().sum());
        fake.faults().fail_next_calls(Operation::GetRecords, 1, throttled);
        let second = arrival().await;
        close(second - first, config.min_interval_between_calls + waits[4]);
        assert_eq!(get_records_calls(&fake, &shards[0]), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_iterator_resumes_after_the_last_record_received_without_duplicates_or_gaps()
    {
        let (fake, s, shards) = setup(1).await;
        for i in 0..4 {
            put(&fake, &s, &format!("r{i}")).await;
        }
        let mut reader = start(
            &fake,
            &shards[0],
            StartPosition::TrimHorizon,
            PollingConfig { prefetch: 1, ..config() },
        );
        let mut records = reader.records(1).await;
        // The queue holds r1; the iterator that follows it ages while nobody reads.
        tokio::time::sleep(Duration::from_secs(6 * 60)).await;
        assert_eq!(get_records_calls(&fake, &shards[0]), 2);
        records.extend(reader.records(3).await);
        assert_eq!(data(&records), ["r0", "r1", "r2", "r3"]);
        // Start, then one renewal after the expiry.
        assert_eq!(fake.counters().calls(Operation::GetShardIterator), 2);
        assert_eq!(get_records_calls(&fake, &shards[0]), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_iterator_after_an_aggregate_resumes_after_the_whole_aggregate() {
        let (fake, s, shards) = setup(1).await;
        put_aggregate(&fake, &s, &aggregate("agg", 3)).await;
        put(&fake, &s, "plain").await;
        let mut reader = start(
            &fake,
            &shards[0],
            StartPosition::TrimHorizon,
            PollingConfig { prefetch: 1, ..config() },
        );
        let mut records = reader.records(3).await;
        // No await between the receipt and the fault: the retriever has not called again.
        let expired = ApiError::from_code("ExpiredIteratorException", "Iterator expired.");
        fake.faults().fail_next_calls(Operation::GetRecords, 1, expired);
        records.extend(reader.records(1).await);
        assert_eq!(data(&records), ["agg-0", "agg-1", "agg-2", "plain"]);
        assert_eq!(fake.counters().calls(Operation::GetShardIterator), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_iterator_before_any_record_restarts_at_the_checkpoint() {
        let (fake, s, shards) = setup(1).await;
        let agg = put_aggregate(&fake, &s, &aggregate("agg", 3)).await;
        let expired = ApiError::from_code("ExpiredIteratorException", "Iterator expired.");
        fake.faults().fail_next_calls(Operation::GetRecords, 1, expired);
        let from = StartPosition::After { sequence: agg.clone(), sub_sequence: 0 };
        let mut reader = start(&fake, &shards[0], from, config());
        let records = reader.records(2).await;
        assert_eq!(positions(&records), [(agg.clone(), Some(1)), (agg, Some(2))]);
        assert_eq!(fake.counters().calls(Operation::GetShardIterator), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_non_retryable_error_is_sent_and_then_the_queue_closes() {
        let (fake, s, shards) = setup(1).await;
        put(&fake, &s, "r0").await;
        put(&fake, &s, "r1").await;
        let mut reader = start(&fake, &shards[0], StartPosition::TrimHorizon, config());
        assert_eq!(data(&reader.records(1).await), ["r0"]);
        let denied = ApiError::from_code("AccessDeniedException", "no");
        fake.faults().fail_next_calls(Operation::GetRecords, 1, denied.clone());
        match reader.next().await {
            Some(Err(RetrievalError::Api { shard, source })) => {
                assert_eq!(shard, shards[0].id);
                assert_eq!(source, denied);
            }
            other => panic!("expected the error, got {other:?}"),
        }
        assert!(reader.next().await.is_none());
        timeout(PATIENCE, reader.task).await.unwrap().unwrap();
        assert_eq!(get_records_calls(&fake, &shards[0]), 2, "no retry");
    }

    #[tokio::test(start_paused = true)]
    async fn a_shard_that_does_not_exist_is_an_error_without_retries() {
        let (fake, _s, shards) = setup(1).await;
        let mut missing = shards[0].clone();
        missing.id = ShardId::new("shardId-000000000042").unwrap();
        let mut reader = start(&fake, &missing, StartPosition::TrimHorizon, config());
        match reader.next().await {
            Some(Err(RetrievalError::Api { shard, source })) => {
                assert_eq!(shard, missing.id);
                assert_eq!(source.kind(), ApiErrorKind::NotFound);
            }
            other => panic!("expected the error, got {other:?}"),
        }
        assert!(reader.next().await.is_none());
        assert_eq!(fake.counters().calls(Operation::GetShardIterator), 1);
        assert_eq!(fake.counters().calls(Operation::GetRecords), 0);
    }

    /// GetRecords calls in each of `windows` one-second windows, starting 100 ms in (so that
    /// no call falls on a window's edge).
    async fn calls_per_second(fake: &FakeKinesis, shard: &Shard, windows: usize) -> Vec<u64> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut counts = Vec::new();
        let mut before = get_records_calls(fake, shard);
        for _ in 0..windows {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = get_records_calls(fake, shard);
            counts.push(now - before);
            before = now;
        }
        counts
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_shard_is_polled_once_per_idle_time_and_never_more_than_five_times_a_second() {
        let (fake, _s, shards) = setup(1).await;
        let _idle = start(&fake, &shards[0], StartPosition::Latest, PollingConfig::default());
        assert_eq!(calls_per_second(&fake, &shards[0], 5).await, [1; 5]);

        let (fake, _s, shards) = setup(1).await;
        let eager = PollingConfig { idle_time_between_reads: Duration::ZERO, ..config() };
        let _eager = start(&fake, &shards[0], StartPosition::Latest, eager);
        assert_eq!(calls_per_second(&fake, &shards[0], 10).await, [5; 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_calls_count_against_the_call_rate_even_without_backoff() {
        let (fake, _s, shards) = setup(1).await;
        let throttled = ApiError::from_code("ProvisionedThroughputExceededException", "slow down");
        fake.faults().fail_next_calls(Operation::GetRecords, usize::MAX, throttled);
        let config = PollingConfig {
            throttle_backoff: Backoff::new(Duration::ZERO, Duration::ZERO),
            ..config()
        };
        let _reader = start(&fake, &shards[0], StartPosition::Latest, config);
        assert_eq!(calls_per_second(&fake, &shards[0], 10).await, [5; 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn reads_pause_for_the_bytes_a_call_returned() {
        let (fake, s, shards) = setup(1).await;
        for size in [500, 100, 2000, 10] {
            put(&fake, &s, &"x".repeat(size)).await;
        }
        let config = PollingConfig {
            max_bytes_per_second: 1000,
            idle_time_between_reads: Duration::ZERO,
            ..config()
        };
        let mut reader = start(&fake, &shards[0], StartPosition::TrimHorizon, config);
        let mut arrivals = Vec::new();
        for _ in 0..4 {
            let batch = reader.batch().await;
            arrivals.push((Instant::now(), batch.bytes));
        }
        let gaps: Vec<_> = arrivals.windows(2).map(|w| w[1].0 - w[0].0).collect();
        // 500 bytes at 1000 B/s: 500 ms; 100 bytes: the 200 ms call interval; 2000: 2 s.
        let ms = Duration::from_millis;
        assert_eq!(gaps, [ms(500), ms(200), ms(2000)]);
        assert_eq!(arrivals.iter().map(|a| a.1).collect::<Vec<_>>(), [500, 100, 2000, 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_stops_the_calls_after_prefetch_batches() {
        let (fake, s, shards) = setup(1).await;
        for i in 0..10 {
            put(&fake, &s, &format!("r{i}")).await;
        }
        let config = PollingConfig { prefetch: 3, ..config() };
        let mut reader = start(&fake, &shards[0], StartPosition::TrimHorizon, config);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(get_records_calls(&fake, &shards[0]), 3);
        assert_eq!(data(&reader.records(1).await), ["r0"]);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(get_records_calls(&fake, &shards[0]), 4);
        let rest = reader.records(9).await;
        assert_eq!(data(&rest), (1..10).map(|i| format!("r{i}")).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_stops_the_task_promptly_even_mid_call() {
        let (fake, _s, shards) = setup(1).await;
        let mut reader = start(&fake, &shards[0], StartPosition::Latest, PollingConfig::default());
        tokio::time::sleep(Duration::from_millis(2500)).await;
        reader.cancel.cancel();
        timeout(Duration::from_millis(1), &mut reader.task).await.unwrap().unwrap();
        assert!(reader.queue.recv().await.is_none(), "closed without End or an error");

        // Stuck in a slow GetRecords call.
        fake.faults().delay_calls(Operation::GetRecords, Duration::from_secs(3600));
        let mut reader = start(&fake, &shards[0], StartPosition::Latest, PollingConfig::default());
        tokio::time::sleep(Duration::from_secs(1)).await;
        reader.cancel.cancel();
        timeout(Duration::from_millis(1), &mut reader.task).await.unwrap().unwrap();
        assert!(reader.queue.recv().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_receiver_stops_the_task() {
        let (fake, _s, shards) = setup(1).await;
        let reader = start(&fake, &shards[0], StartPosition::Latest, PollingConfig::default());
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let calls = get_records_calls(&fake, &shards[0]);
        drop(reader.queue);
        timeout(Duration::from_millis(1), reader.task).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(get_records_calls(&fake, &shards[0]), calls);
    }

    #[tokio::test(start_paused = true)]
    async fn latest_reads_only_what_is_written_after_the_start_and_empty_batches_on_request() {
        let (fake, s, shards) = setup(1).await;
        put(&fake, &s, "old").await;
        let config = PollingConfig { deliver_empty_batches: true, ..config() };
        let mut reader = start(&fake, &shards[0], StartPosition::Latest, config);
        let empty = reader.batch().await;
        assert!(empty.records.is_empty());
        assert_eq!(empty.kinesis_records, 0);
        put(&fake, &s, "new").await;
        let mut records = Vec::new();
        while records.is_empty() {
            records = reader.batch().await.records;
        }
        assert_eq!(data(&records), ["new"]);
    }

    #[tokio::test(start_paused = true)]
    async fn at_timestamp_starts_at_the_first_record_that_arrived_then() {
        let (fake, s, shards) = setup(1).await;
        put(&fake, &s, "early").await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let at: SystemTime = fake.now();
        put(&fake, &s, "late").await;
        let mut reader = start(&fake, &shards[0], StartPosition::AtTimestamp(at), config());
        assert_eq!(data(&reader.records(1).await), ["late"]);
    }

    fn kinesis_record(sequence: &str, key: &str, data: impl Into<Bytes>) -> KinesisRecord {
        KinesisRecord {
            sequence_number: SequenceNumber::new(sequence).unwrap(),
            partition_key: key.to_owned(),
            data: data.into(),
            approximate_arrival: None,
        }
    }

    #[test]
    fn batches_count_bytes_corrupt_and_filtered_records() {
        let range = HashKeyRange::new(HashKey(0), HashKey(1000)).unwrap();
        let inside = |i: u128| {
            UserRecord::new(PartitionKey::new("p").unwrap(), format!("in-{i}"))
                .with_explicit_hash_key(HashKey(i))
        };
        let mut good = AggregateBuilder::new();
        good.push(inside(1));
        good.push(inside(2));
        let mut stray = AggregateBuilder::new();
        stray.push(inside(3));
        stray.push(inside(3).with_explicit_hash_key(HashKey(u128::MAX)));
        stray.push(inside(4));
        let mut corrupt = MAGIC.to_vec();
        corrupt.extend_from_slice(&[0xAB; 20]);
        let records = [
            kinesis_record("10", "plain", "plain"),
            kinesis_record("11", "c", corrupt.clone()),
            kinesis_record("12", "a", stray.finish()),
            kinesis_record("13", "a", good.finish()),
        ];
        let mut builder = BatchBuilder {
            hash_range: Some(range),
            max_decompressed_len: DEFAULT_MAX_DECOMPRESSED_LEN,
            skip_through: None,
            last_sequence: None,
        };
        let batch = builder.build(&records, Some(7));
        let bytes: usize = records.iter().map(|r| r.data.len()).sum();
        assert_eq!(
            (batch.kinesis_records, batch.bytes, batch.corrupt, batch.filtered_out),
            (4, bytes, 1, 3)
        );
        assert_eq!(batch.millis_behind_latest, Some(7));
        let got: Vec<_> = batch
            .records
            .iter()
            .map(|r| (r.sequence_number.as_str().to_owned(), r.sub_sequence_number))
            .collect();
        let want = [("10", None), ("11", None), ("13", Some(0)), ("13", Some(1))];
        assert_eq!(got, want.map(|(s, sub)| (s.to_owned(), sub)));
        assert_eq!(batch.records[1].data, corrupt, "corrupt data is passed on unchanged");
    }

    #[test]
    fn the_checkpoint_skip_compares_sequence_numbers_as_numbers_and_disarms_once_passed() {
        let mut agg = AggregateBuilder::new();
        for i in 0..3 {
            agg.push(UserRecord::new(PartitionKey::new("p").unwrap(), format!("s{i}")));
        }
        // "9" < "10" numerically though not as text; a 57-digit number is past any 56-digit one.
        let checkpoint = ExtendedSequenceNumber::new(SequenceNumber::new("10").unwrap(), 1);
        let mut builder = BatchBuilder {
            hash_range: None,
            max_decompressed_len: DEFAULT_MAX_DECOMPRESSED_LEN,
            skip_through: Some(checkpoint),
            last_sequence: None,
        };
        let first = builder.build(
            &[kinesis_record("9", "k", "old"), kinesis_record("10", "a", agg.finish())],
            None,
        );
        assert_eq!(data(&first.records), ["s2"]);
        assert!(builder.skip_through.is_some(), "not past the checkpoint's sequence yet");
        let big = format!("1{}", "0".repeat(56));
        let second = builder.build(&[kinesis_record(&big, "k", "new")], None);
        assert_eq!(data(&second.records), ["new"]);
        assert!(builder.skip_through.is_none());
    }

    #[test]
    fn pacing_keeps_the_call_interval_the_byte_rate_and_the_idle_time() {
        let config = PollingConfig::default();
        let called = Instant::now();
        let answered = called + Duration::from_millis(30);
        let batch = |kinesis_records, bytes, behind| FetchedBatch {
            kinesis_records,
            bytes,
            millis_behind_latest: behind,
            ..FetchedBatch::default()
        };
        let ms = Duration::from_millis;
        // Small responses: the call interval.
        assert_eq!(
            next_call_at(&config, called, answered, &batch(3, 100, Some(0))),
            called + ms(200)
        );
        // 10 MiB at 2 MiB/s: the 5 s the GetRecords reference warns about.
        let full = batch(10, 10 << 20, Some(0));
        assert_eq!(next_call_at(&config, called, answered, &full), called + ms(5000));
        // Empty and caught up: idle, from the answer.
        assert_eq!(
            next_call_at(&config, called, answered, &batch(0, 0, Some(0))),
            answered + ms(1000)
        );
        assert_eq!(
            next_call_at(&config, called, answered, &batch(0, 0, None)),
            answered + ms(1000)
        );
        // Empty but behind: keep reading at the call interval.
        assert_eq!(
            next_call_at(&config, called, answered, &batch(0, 0, Some(60_000))),
            called + ms(200)
        );
        // A zero byte rate turns byte pacing off.
        let unlimited = PollingConfig { max_bytes_per_second: 0, ..config };
        assert_eq!(next_call_at(&unlimited, called, answered, &full), called + ms(200));
    }

    #[test]
    fn failures_are_renewed_retried_or_given_up_by_kind() {
        let cases = [
            ("ExpiredIteratorException", Recovery::NewIterator),
            ("ProvisionedThroughputExceededException", Recovery::Retry),
            ("LimitExceededException", Recovery::Retry),
            ("InternalFailure", Recovery::Retry),
            ("ResourceInUseException", Recovery::Retry),
            ("ResourceNotFoundException", Recovery::GiveUp),
            ("AccessDeniedException", Recovery::GiveUp),
            ("InvalidArgumentException", Recovery::GiveUp),
            ("KMSDisabledException", Recovery::GiveUp),
            ("SomethingNew", Recovery::GiveUp),
        ];
        for (code, want) in cases {
            assert_eq!(recovery(&ApiError::from_code(code, "m")), want, "{code}");
        }
    }
}
