//! In-memory fakes for tests (feature `test-util`): [`FakeKinesis`], an implementation of
//! [`KinesisApi`] that behaves like Amazon Kinesis Data Streams, and the [`contract`] suite
//! that holds it, and any other [`KinesisApi`], to that behaviour.
//!
//! # What the fake models
//!
//! - Streams: `CREATING` for [`FakeKinesisBuilder::create_delay`], then `ACTIVE`; writes,
//!   ListShards and GetShardIterator while `CREATING` are `ResourceInUseException`. A new
//!   stream's `n` shards split the hash key space evenly, exactly as AWS does (shard `i` covers
//!   `[i*2^128/n, (i+1)*2^128/n - 1]`), with ids `shardId-000000000000`, `…001`, ….
//!   DeleteStream removes the stream at once (AWS shows `DELETING` for a while) and its
//!   consumers with it.
//! - PutRecords: the AWS request limits (1 to 500 entries, 5 MiB, 1 MiB per record counting
//!   data and partition key, configurable up to 10 MiB with
//!   [`FakeKinesisBuilder::max_record_size`]) reject the whole request; entries are routed by
//!   explicit hash key or MD5 of the partition key to the open shard that owns the key, and
//!   get 56-digit sequence numbers that increase across the stream.
//! - Resharding: SplitShard, MergeShards and UpdateShardCount validate like AWS, keep the
//!   stream `UPDATING` for [`FakeKinesisBuilder::update_delay`] and then take effect (until
//!   then the old shards take the writes). Closed shards keep their records, get an ending
//!   sequence number, and end readers with their children. UpdateShardCount works by splits
//!   and merges, as AWS does, and ends with exactly the even ranges of a new stream of the
//!   target size; the intermediate shards it makes are closed at once and hold no records.
//! - Reading: every iterator type; iterators expire five minutes after they are issued;
//!   GetRecords returns at most `limit` (default and maximum 10 000) records and 10 MiB, the
//!   next iterator (none at the end of a closed shard, where the children are reported with
//!   all their parents), and `MillisBehindLatest` (the age of the oldest unread record).
//! - Enhanced fan-out: consumers are `CREATING` for [`FakeKinesisBuilder::consumer_delay`]
//!   (at most 20 per stream, 5 of them `CREATING`); SubscribeToShard sessions behave as
//!   described on [`FakeKinesis`].
//! - Faults ([`Faults`]): throttled or failed entries, counted or random with a seed; failed
//!   or delayed calls; per-shard write quotas. Counters ([`Counters`]) say what was called.
//! - Records are kept for ever (no retention trimming) and can be read back with
//!   [`FakeKinesis::records`] and [`FakeKinesis::stream_records`].
//!
//! Not modelled: retention (records are kept for ever), the `DELETING` states of streams and
//! consumers (deletion is immediate), read quotas (GetRecords 5 calls and 2 MiB per second per
//! shard) and control-plane call rates, on-demand streams, and UpdateShardCount's limit of ten
//! calls a day. Faults are global to the fake, not per stream.
//!
//! All time is tokio time: delays, expiry and quotas follow a paused test clock, and record
//! arrival times are a fixed base [`SystemTime`] plus the tokio time elapsed since the fake was
//! made, so a paused test sees the same timestamps on every run.
//!
//! Invariants: the fake's state sits behind one `std` mutex that is never held across an
//! `.await`; every operation is synchronous code on that state (module `state`), and the
//! trait methods only count the call, apply injected delays and failures, and lock.
//!
//! ```
//! use bytes::Bytes;
//! use kinesis_common::fake::FakeKinesis;
//! use kinesis_common::{KinesisApi, PartitionKey, PutRecordsEntry, StreamName};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), kinesis_common::ApiError> {
//! let fake = FakeKinesis::new();
//! let stream = StreamName::new("orders").unwrap();
//! fake.create_active_stream(&stream, 2)?;
//! let entry = PutRecordsEntry {
//!     partition_key: PartitionKey::new("customer-1").unwrap(),
//!     explicit_hash_key: None,
//!     data: Bytes::from_static(b"hello"),
//! };
//! fake.faults().throttle_next_entries(1);
//! let outcomes = fake.put_records(&stream, vec![entry.clone(), entry]).await?;
//! assert!(matches!(outcomes[0], kinesis_common::PutRecordsOutcome::Failed(_)));
//! assert_eq!(fake.stream_records(&stream)?.len(), 1);
//! # Ok(())
//! # }
//! ```

pub mod contract;
mod errors;
mod faults;
mod iterator;
mod metrics;
mod state;
mod stream;
mod subscription;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{
    ApiError, ConsumerDescription, ConsumerName, GetRecordsOutput, HashKey, KinesisApi,
    KinesisRecord, PutRecordsEntry, PutRecordsOutcome, Shard, ShardId, ShardIterator,
    ShardIteratorPosition, StreamName, StreamSummary, Subscription,
};

pub use faults::{Counters, Faults, Operation, ShardWriteLimit};
pub use metrics::RecordedMetrics;

use state::State;
use subscription::FakeSubscription;

/// The account id in the fake's ARNs and messages (the emulators' default too).
const ACCOUNT: &str = "000000000000";
/// The region in the fake's ARNs.
const REGION: &str = "us-east-1";

/// Tells the iterators of one fake from another's.
static NEXT_FAKE: AtomicU64 = AtomicU64::new(1);

/// The fake's settings; see [`FakeKinesisBuilder`].
#[derive(Debug, Clone, Copy)]
struct Config {
    create_delay: Duration,
    update_delay: Duration,
    consumer_delay: Duration,
    max_record_size: usize,
}

/// Wall-clock time for record arrivals: a base time plus the tokio time since the fake began.
#[derive(Debug, Clone, Copy)]
struct Clock {
    base: SystemTime,
    start: Instant,
}

impl Clock {
    fn since_start(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.start)
    }

    fn system_time(&self, now: Instant) -> SystemTime {
        self.base + self.since_start(now)
    }
}

/// What every clone of one fake shares.
struct Inner {
    state: Mutex<State>,
    /// Woken on every change that a waiting subscription may care about.
    changed: Notify,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock cannot leave the state half-changed in a
        // way that matters more than its own failure: keep serving the other tasks.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An in-memory Amazon Kinesis Data Streams; see the [module docs](self) for what it models.
///
/// Cheap to clone: clones share one fake. `Send + Sync`; use it from any number of tasks, as
/// `Arc<dyn KinesisApi>` or directly (for [`faults`](Self::faults), [`counters`](Self::counters)
/// and the record views).
///
/// SubscribeToShard sessions ([`KinesisApi::subscribe_to_shard`]) push one event per batch of
/// available records, wait on tokio time at the tip of an open shard, end (`Ok(None)`) after
/// five minutes, and end a closed shard with an event that has no continuation sequence number
/// and lists the children. As on AWS, subscribing again with the same consumer and shard
/// within five seconds of a successful subscription that is still open is
/// `ResourceInUseException`; after five seconds the new session takes over and the old one
/// fails with `ResourceInUseException` on its next event (Kinesis API reference,
/// SubscribeToShard). Subscribing again after the old session ended or was dropped is allowed
/// at once.
#[derive(Clone)]
pub struct FakeKinesis {
    inner: Arc<Inner>,
}

impl fmt::Debug for FakeKinesis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("FakeKinesis")
            .field("streams", &state.streams.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Default for FakeKinesis {
    fn default() -> Self {
        Self::new()
    }
}

/// Settings for a [`FakeKinesis`]; start from [`FakeKinesis::builder`].
#[derive(Debug, Clone)]
pub struct FakeKinesisBuilder {
    config: Config,
    clock_base: Option<SystemTime>,
}

impl FakeKinesisBuilder {
    /// How long a new stream stays `CREATING` (default 100 ms; kinesis-mock's is 500 ms).
    pub fn create_delay(mut self, delay: Duration) -> Self {
        self.config.create_delay = delay;
        self
    }

    /// How long a stream stays `UPDATING` after SplitShard, MergeShards or UpdateShardCount
    /// before the change takes effect (default 100 ms).
    pub fn update_delay(mut self, delay: Duration) -> Self {
        self.config.update_delay = delay;
        self
    }

    /// How long a new consumer stays `CREATING` (default 100 ms).
    pub fn consumer_delay(mut self, delay: Duration) -> Self {
        self.config.consumer_delay = delay;
        self
    }

    /// The largest record, data plus partition key, in bytes, for every stream (default 1 MiB).
    /// Above 1 MiB the PutRecords request limit becomes 10 MiB, as for AWS streams with large
    /// records (Kinesis API reference, UpdateMaxRecordSize and PutRecords).
    ///
    /// # Panics
    ///
    /// If `bytes` is outside 1 MiB..=10 MiB, the range UpdateMaxRecordSize accepts.
    pub fn max_record_size(mut self, bytes: usize) -> Self {
        assert!(
            (state::DEFAULT_MAX_RECORD_SIZE..=state::MAX_MAX_RECORD_SIZE).contains(&bytes),
            "max record size {bytes} is outside 1 MiB..=10 MiB"
        );
        self.config.max_record_size = bytes;
        self
    }

    /// The wall-clock time the fake's clock starts at (default: the time of
    /// [`build`](Self::build)). Record arrival times are this plus the tokio time since `build`.
    pub fn clock_base(mut self, base: SystemTime) -> Self {
        self.clock_base = Some(base);
        self
    }

    /// Makes the fake. Call it inside the test's runtime when the test pauses time, so that
    /// the fake's clock starts on the paused clock.
    pub fn build(self) -> FakeKinesis {
        let clock =
            Clock { base: self.clock_base.unwrap_or_else(SystemTime::now), start: Instant::now() };
        let fake = NEXT_FAKE.fetch_add(1, Ordering::Relaxed);
        FakeKinesis {
            inner: Arc::new(Inner {
                state: Mutex::new(State::new(fake, self.config, clock)),
                changed: Notify::new(),
            }),
        }
    }
}

impl FakeKinesis {
    /// A fake with the default settings.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Settings for a fake.
    pub fn builder() -> FakeKinesisBuilder {
        FakeKinesisBuilder {
            config: Config {
                create_delay: Duration::from_millis(100),
                update_delay: Duration::from_millis(100),
                consumer_delay: Duration::from_millis(100),
                max_record_size: state::DEFAULT_MAX_RECORD_SIZE,
            },
            clock_base: None,
        }
    }

    /// The fault plan, to inject throttling, failures, delays and write quotas.
    pub fn faults(&self) -> Faults {
        Faults { inner: Arc::clone(&self.inner) }
    }

    /// A snapshot of the call counters.
    pub fn counters(&self) -> Counters {
        self.inner.lock().counters.clone()
    }

    /// Sets every counter back to zero.
    pub fn reset_counters(&self) {
        self.inner.lock().counters = Counters::default();
    }

    /// The fake's wall-clock time: what it stamps on a record arriving now.
    pub fn now(&self) -> SystemTime {
        self.inner.lock().clock.system_time(Instant::now())
    }

    /// Creates a stream that is `ACTIVE` at once, for test setup; not counted as a call and not
    /// subject to faults.
    pub fn create_active_stream(
        &self,
        stream: &StreamName,
        shard_count: u32,
    ) -> Result<(), ApiError> {
        self.inner.lock().create_stream(stream, shard_count, Duration::ZERO, Instant::now())
    }

    /// Every record written to one shard, oldest first (the fake never trims).
    pub fn records(
        &self,
        stream: &StreamName,
        shard: &ShardId,
    ) -> Result<Vec<KinesisRecord>, ApiError> {
        self.inner.lock().shard_records(stream, shard, Instant::now())
    }

    /// Every record written to a stream with the shard that took it, in the order they were
    /// written.
    pub fn stream_records(
        &self,
        stream: &StreamName,
    ) -> Result<Vec<(ShardId, KinesisRecord)>, ApiError> {
        self.inner.lock().stream_records(stream, Instant::now())
    }

    /// Counts the call, waits out an injected delay, and fails it if a fault says so.
    async fn begin(&self, operation: Operation) -> Result<(), ApiError> {
        let (delay, failure) = {
            let mut state = self.inner.lock();
            state.counters.count_call(operation);
            state.faults.take_call(operation)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        failure.map_or(Ok(()), Err)
    }

    /// Runs `operation` on the state at the current tokio time.
    fn run<T>(
        &self,
        operation: impl FnOnce(&mut State, Instant) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        operation(&mut self.inner.lock(), Instant::now())
    }

    /// Like [`run`](Self::run), for operations that change what subscriptions may see.
    fn change<T>(
        &self,
        operation: impl FnOnce(&mut State, Instant) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let result = self.run(operation);
        self.inner.changed.notify_waiters();
        result
    }
}

#[async_trait]
impl KinesisApi for FakeKinesis {
    async fn list_shards(&self, stream: &StreamName) -> Result<Vec<Shard>, ApiError> {
        self.begin(Operation::ListShards).await?;
        self.run(|s, now| s.list_shards(stream, now))
    }

    async fn describe_stream_summary(
        &self,
        stream: &StreamName,
    ) -> Result<StreamSummary, ApiError> {
        self.begin(Operation::DescribeStreamSummary).await?;
        self.run(|s, now| s.describe_stream_summary(stream, now))
    }

    async fn put_records(
        &self,
        stream: &StreamName,
        entries: Vec<PutRecordsEntry>,
    ) -> Result<Vec<PutRecordsOutcome>, ApiError> {
        self.begin(Operation::PutRecords).await?;
        self.change(|s, now| s.put_records(stream, entries, now))
    }

    async fn get_shard_iterator(
        &self,
        stream: &StreamName,
        shard: &ShardId,
        position: ShardIteratorPosition,
    ) -> Result<ShardIterator, ApiError> {
        self.begin(Operation::GetShardIterator).await?;
        self.run(|s, now| s.get_shard_iterator(stream, shard, &position, now))
    }

    async fn get_records(
        &self,
        iterator: &ShardIterator,
        limit: Option<u32>,
    ) -> Result<GetRecordsOutput, ApiError> {
        self.begin(Operation::GetRecords).await?;
        self.run(|s, now| s.get_records(iterator, limit, now))
    }

    async fn create_stream(&self, stream: &StreamName, shard_count: u32) -> Result<(), ApiError> {
        self.begin(Operation::CreateStream).await?;
        self.run(|s, now| {
            let delay = s.config.create_delay;
            s.create_stream(stream, shard_count, delay, now)
        })
    }

    async fn delete_stream(&self, stream: &StreamName) -> Result<(), ApiError> {
        self.begin(Operation::DeleteStream).await?;
        self.change(|s, now| s.delete_stream(stream, now))
    }

    async fn split_shard(
        &self,
        stream: &StreamName,
        shard: &ShardId,
        new_starting_hash_key: HashKey,
    ) -> Result<(), ApiError> {
        self.begin(Operation::SplitShard).await?;
        self.change(|s, now| s.split_shard(stream, shard, new_starting_hash_key, now))
    }

    async fn merge_shards(
        &self,
        stream: &StreamName,
        shard: &ShardId,
        adjacent: &ShardId,
    ) -> Result<(), ApiError> {
        self.begin(Operation::MergeShards).await?;
        self.change(|s, now| s.merge_shards(stream, shard, adjacent, now))
    }

    async fn update_shard_count(&self, stream: &StreamName, target: u32) -> Result<(), ApiError> {
        self.begin(Operation::UpdateShardCount).await?;
        self.change(|s, now| s.update_shard_count(stream, target, now))
    }

    async fn register_stream_consumer(
        &self,
        stream_arn: &str,
        name: &ConsumerName,
    ) -> Result<ConsumerDescription, ApiError> {
        self.begin(Operation::RegisterStreamConsumer).await?;
        self.run(|s, now| s.register_consumer(stream_arn, name, now))
    }

    async fn describe_stream_consumer(
        &self,
        stream_arn: &str,
        name: &ConsumerName,
    ) -> Result<ConsumerDescription, ApiError> {
        self.begin(Operation::DescribeStreamConsumer).await?;
        self.run(|s, now| s.describe_consumer(stream_arn, name, now))
    }

    async fn deregister_stream_consumer(
        &self,
        stream_arn: &str,
        name: &ConsumerName,
    ) -> Result<(), ApiError> {
        self.begin(Operation::DeregisterStreamConsumer).await?;
        self.change(|s, now| s.deregister_consumer(stream_arn, name, now))
    }

    async fn subscribe_to_shard(
        &self,
        consumer_arn: &str,
        shard: &ShardId,
        position: ShardIteratorPosition,
    ) -> Result<Box<dyn Subscription>, ApiError> {
        self.begin(Operation::SubscribeToShard).await?;
        let now = Instant::now();
        // A takeover must wake the session it replaces.
        let (key, start) =
            self.change(|s, now| s.subscribe(consumer_arn, shard, &position, now))?;
        Ok(Box::new(FakeSubscription::new(Arc::clone(&self.inner), key, start, now)))
    }
}
