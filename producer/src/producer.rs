//! [`Producer`]: the handle applications hold, its builder, and the blocking facade.
//!
//! Backpressure: every accepted record holds a share of two budgets, records and bytes
//! (`max_outstanding_records`, `max_outstanding_bytes`), until its receipt is answered. `send`
//! waits for room; `try_send` fails with [`SendError::Full`] instead. Memory use is therefore
//! bounded by the budgets whatever the rate of `send` and the state of the stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kinesis_common::backoff::{Backoff, retry_within};
use kinesis_common::{ApiError, ApiErrorKind, KinesisApi, StreamName};
use tokio::sync::{Mutex, Semaphore, TryAcquireError, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::{ConfigError, ProducerConfig};
use crate::intake::Intake;
use crate::key_cache::KeyCache;
use crate::metrics::{Counters, MetricsSnapshot};
use crate::pending::{Budget, Pending};
use crate::pipeline::{Command, Ends, Pipeline, clock};
use crate::receipt::Receipt;
use crate::record::{Record, SendError, ValidRecord};
use crate::shard_map::ShardMap;

/// Why a producer could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No stream was named.
    #[error("no stream given: call ProducerBuilder::stream")]
    MissingStream,
    /// A setting is out of range.
    #[error("invalid producer configuration")]
    Config(#[from] ConfigError),
    /// The stream does not exist (or the credentials cannot see it).
    #[error("stream {stream} not found")]
    StreamNotFound {
        /// The stream named.
        stream: StreamName,
        /// What Kinesis said.
        #[source]
        source: ApiError,
    },
    /// ListShards failed for another reason (credentials, network, throttling).
    #[error("listing the shards of stream {stream} failed")]
    ListShards {
        /// The stream named.
        stream: StreamName,
        /// What Kinesis said.
        #[source]
        source: ApiError,
    },
    /// ListShards answered shards whose ranges overlap.
    #[error("the shards of stream {stream} are inconsistent: {detail}")]
    InconsistentShards {
        /// The stream named.
        stream: StreamName,
        /// What is wrong.
        detail: String,
    },
    /// The blocking facade could not start its runtime.
    #[error("starting the producer's runtime failed")]
    Runtime(#[source] std::io::Error),
}

/// Builds a [`Producer`]: `Producer::builder(kinesis).stream(name).start().await?`.
#[derive(Clone)]
pub struct ProducerBuilder {
    api: Arc<dyn KinesisApi>,
    stream: Option<StreamName>,
    config: ProducerConfig,
}

impl std::fmt::Debug for ProducerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerBuilder")
            .field("stream", &self.stream)
            .field("config", &self.config)
            .finish()
    }
}

impl ProducerBuilder {
    /// The stream to write to.
    pub fn stream(mut self, stream: StreamName) -> Self {
        self.stream = Some(stream);
        self
    }

    /// The settings (default: [`ProducerConfig::default`]).
    pub fn config(mut self, config: ProducerConfig) -> Self {
        self.config = config;
        self
    }

    /// Checks the settings, lists the stream's shards (so an unknown stream fails here, with
    /// a clear error) and starts the pipeline task on the current tokio runtime.
    ///
    /// Throttling and transient failures of ListShards are retried with jittered backoff for
    /// up to [`ProducerConfig::start_timeout`] (30 s by default); the error is returned once
    /// that has passed.
    pub async fn start(self) -> Result<Producer, BuildError> {
        let stream = self.stream.ok_or(BuildError::MissingStream)?;
        self.config.validate()?;
        let backoff = Backoff::new(self.config.retry_backoff.0, self.config.retry_backoff.1);
        let listed = retry_within(
            backoff,
            self.config.start_timeout,
            "listing the shards at start",
            ApiError::is_retryable,
            || self.api.list_shards(&stream),
        );
        let shards = listed.await.map_err(|source| {
            if source.kind() == ApiErrorKind::NotFound {
                BuildError::StreamNotFound { stream: stream.clone(), source }
            } else {
                BuildError::ListShards { stream: stream.clone(), source }
            }
        })?;
        let map = ShardMap::new(&shards, clock()).map_err(|e| BuildError::InconsistentShards {
            stream: stream.clone(),
            detail: e.to_string(),
        })?;
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let intake = Arc::new(Intake::default());
        let records = Arc::new(Semaphore::new(self.config.max_outstanding_records));
        let bytes = Arc::new(Semaphore::new(self.config.max_outstanding_bytes));
        let pipeline = Pipeline::new(
            self.api,
            stream.clone(),
            self.config.clone(),
            Arc::clone(&counters),
            Ends {
                inbox: rx,
                intake: Arc::clone(&intake),
                budget: Budget::new(Arc::clone(&records), Arc::clone(&bytes)),
            },
            map,
        );
        let span = tracing::info_span!("kinesis_producer", stream = %stream);
        let task = tokio::spawn(tracing::Instrument::instrument(pipeline.run(), span));
        Ok(Producer {
            inner: Arc::new(Inner {
                tx,
                records,
                bytes,
                config: self.config,
                stream,
                closed: AtomicBool::new(false),
                keys: KeyCache::default(),
                intake,
                counters,
                task: Mutex::new(Some(task)),
            }),
        })
    }
}

struct Inner {
    tx: mpsc::UnboundedSender<Command>,
    records: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    config: ProducerConfig,
    stream: StreamName,
    closed: AtomicBool,
    keys: KeyCache,
    intake: Arc<Intake>,
    counters: Arc<Counters>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// A KPL-style producer for one stream. Cheap to clone; every clone feeds the same pipeline.
///
/// Dropping every clone without [`shutdown`](Producer::shutdown) still writes everything
/// accepted, in the background, as long as the runtime runs.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("stream", &self.inner.stream).finish_non_exhaustive()
    }
}

/// Permits for a byte budget are counted in bytes; a record never needs more than the whole
/// budget (the configuration check makes the budget at least one maximal record).
fn byte_permits(size: usize, budget: usize) -> u32 {
    u32::try_from(size.min(budget)).unwrap_or(u32::MAX)
}

impl Producer {
    /// Starts building a producer over `api` (for AWS: `Arc::new(SdkKinesis::new(&config))`).
    pub fn builder(api: Arc<dyn KinesisApi>) -> ProducerBuilder {
        ProducerBuilder { api, stream: None, config: ProducerConfig::default() }
    }

    /// The stream this producer writes to.
    pub fn stream(&self) -> &StreamName {
        &self.inner.stream
    }

    /// Accepts a record, waiting only for room in the outstanding budget. The returned
    /// [`Receipt`] resolves once the record is written or has failed for good.
    ///
    /// Invalid records (too large, bad partition or explicit hash key) are refused at once
    /// with [`SendError::Invalid`]; after [`shutdown`](Self::shutdown) began, records are
    /// refused with [`SendError::Closed`]. The record comes back in both cases.
    pub async fn send(&self, record: Record) -> Result<Receipt, SendError> {
        // As the semaphores' futures would: a task that sends in a loop still yields to the
        // others (on a current-thread runtime, the pipeline) once its budget is spent. First,
        // so that a send cancelled here has done nothing.
        tokio::task::coop::consume_budget().await;
        let record = self.validate(record)?;
        let inner = &self.inner;
        // Taking permits at once when there is room skips building and polling a future per
        // semaphore. A semaphore hands released permits to its waiters first, so this never
        // overtakes a sender already waiting.
        let records = match inner.records.try_acquire() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => match inner.records.acquire().await {
                Ok(permit) => permit,
                Err(_) => return Err(SendError::Closed { record: record.into_record() }),
            },
            Err(TryAcquireError::Closed) => {
                return Err(SendError::Closed { record: record.into_record() });
            }
        };
        let n = byte_permits(record.size(), inner.config.max_outstanding_bytes);
        let bytes = match inner.bytes.try_acquire_many(n) {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => match inner.bytes.acquire_many(n).await {
                Ok(permit) => permit,
                Err(_) => return Err(SendError::Closed { record: record.into_record() }),
            },
            Err(TryAcquireError::Closed) => {
                return Err(SendError::Closed { record: record.into_record() });
            }
        };
        // Held from here as counts in the record; the pipeline returns them once it answers.
        records.forget();
        bytes.forget();
        self.enqueue(record, n)
    }

    /// Like [`send`](Self::send), but never waits: fails with [`SendError::Full`] when the
    /// outstanding budget has no room.
    pub fn try_send(&self, record: Record) -> Result<Receipt, SendError> {
        let record = self.validate(record)?;
        let inner = &self.inner;
        let refused = |e: TryAcquireError, record: ValidRecord| match e {
            TryAcquireError::Closed => SendError::Closed { record: record.into_record() },
            TryAcquireError::NoPermits => SendError::Full { record: record.into_record() },
        };
        let records = match inner.records.try_acquire() {
            Ok(permit) => permit,
            Err(e) => return Err(refused(e, record)),
        };
        let n = byte_permits(record.size(), inner.config.max_outstanding_bytes);
        let bytes = match inner.bytes.try_acquire_many(n) {
            Ok(permit) => permit,
            Err(e) => return Err(refused(e, record)),
        };
        records.forget();
        bytes.forget();
        self.enqueue(record, n)
    }

    fn validate(&self, record: Record) -> Result<ValidRecord, SendError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed { record });
        }
        ValidRecord::with_cache(record, self.inner.config.max_record_size, &self.inner.keys)
    }

    /// Hands an accepted record, which holds a record permit and `bytes` byte permits, to the
    /// pipeline.
    fn enqueue(&self, record: ValidRecord, bytes: u32) -> Result<Receipt, SendError> {
        let config = &self.inner.config;
        let accepted_at = clock();
        let queued = self.inner.intake.push(record, |record, reply| {
            Pending::new(record, accepted_at, accepted_at + config.record_ttl, reply, Some(bytes))
        });
        match queued {
            Ok(receipt) => {
                self.inner.counters.received();
                Ok(receipt)
            }
            Err(record) => {
                // Shut down, or the pipeline is gone: hand the record back, with its permits.
                self.inner.records.add_permits(1);
                self.inner.bytes.add_permits(bytes as usize);
                Err(SendError::Closed { record: record.into_record() })
            }
        }
    }

    /// Waits until every record accepted before this call has an outcome. Records still
    /// buffered are sent at once rather than at their deadlines.
    pub async fn flush(&self) {
        let (reply, done) = oneshot::channel();
        if self.inner.tx.send(Command::Flush(reply)).is_ok() {
            // An error means the pipeline stopped, which answers every record first.
            let _ = done.await;
        }
    }

    /// Stops accepting records, sends everything buffered, waits for every accepted record
    /// to have an outcome (each record's TTL bounds the wait), and stops the pipeline task.
    /// Returns the final counters. Safe to call more than once and from any clone.
    pub async fn shutdown(&self) -> MetricsSnapshot {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        // Senders waiting for budget fail with `Closed` and get their records back.
        inner.records.close();
        inner.bytes.close();
        let (reply, done) = oneshot::channel();
        if inner.tx.send(Command::Shutdown(reply)).is_ok() {
            let _ = done.await;
        }
        let task = inner.task.lock().await.take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "producer pipeline task failed");
        }
        self.metrics()
    }

    /// The producer's counters now.
    pub fn metrics(&self) -> MetricsSnapshot {
        let inner = &self.inner;
        let config = &inner.config;
        // Closed semaphores report their permits as they were.
        let records =
            config.max_outstanding_records.saturating_sub(inner.records.available_permits());
        let bytes = config.max_outstanding_bytes.saturating_sub(inner.bytes.available_permits());
        inner.counters.snapshot(records as u64, bytes as u64)
    }
}

/// A producer for code that is not async: owns a small tokio runtime and blocks on it.
///
/// Do not use it from inside an async runtime (blocking calls there panic); use [`Producer`].
#[derive(Debug)]
pub struct BlockingProducer {
    producer: Producer,
    runtime: tokio::runtime::Runtime,
}

impl BlockingProducer {
    /// Starts a producer from `builder` on a runtime of its own with one worker thread.
    pub fn start(builder: ProducerBuilder) -> Result<Self, BuildError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kinesis-producer")
            .enable_all()
            .build()
            .map_err(BuildError::Runtime)?;
        let producer = runtime.block_on(builder.start())?;
        Ok(Self { producer, runtime })
    }

    /// [`Producer::send`], blocking while the budget is full. Wait for the outcome with
    /// [`Receipt::wait`].
    pub fn send(&self, record: Record) -> Result<Receipt, SendError> {
        self.runtime.block_on(self.producer.send(record))
    }

    /// [`Producer::try_send`].
    pub fn try_send(&self, record: Record) -> Result<Receipt, SendError> {
        self.producer.try_send(record)
    }

    /// [`Producer::flush`], blocking.
    pub fn flush(&self) {
        self.runtime.block_on(self.producer.flush());
    }

    /// [`Producer::shutdown`], blocking; then stops the runtime.
    pub fn shutdown(self) -> MetricsSnapshot {
        self.runtime.block_on(self.producer.shutdown())
    }

    /// [`Producer::metrics`].
    pub fn metrics(&self) -> MetricsSnapshot {
        self.producer.metrics()
    }

    /// The async producer inside, for code that has both worlds.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }
}
