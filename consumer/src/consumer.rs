//! The consumer's handle and builder: [`Consumer::builder`] checks the configuration, makes
//! sure the lease table and the stream exist, creates the first leases and starts the
//! scheduler; [`Consumer::shutdown`] stops it gracefully.

use std::sync::Arc;
use std::time::Duration;

use kinesis_common::backoff::{Backoff, retry_within};
use kinesis_common::{ApiError, ApiErrorKind, ConsumerName, KinesisApi, ShardId, StreamName};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span};

use crate::config::{ConsumerConfig, InitialPosition, Retrieval};
use crate::lease::{LeaseStore, LeaseStoreError, WorkerId};
use crate::processor::{self, ProcessorFactory};
use crate::registration::{self, RegistrationError};
use crate::scheduler::{self, Outcome, Scheduler, ShutdownReport, SyncError};
use crate::shard_consumer::ShardContext;

/// Why a consumer could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// No stream was named.
    #[error("no stream given: call ConsumerBuilder::stream")]
    MissingStream,
    /// No application name was given.
    #[error("no application name given: call ConsumerBuilder::application_name")]
    MissingApplicationName,
    /// A setting is out of range.
    #[error("invalid consumer configuration: {0}")]
    Config(String),
    /// The stream does not exist.
    #[error("stream {stream} not found")]
    StreamNotFound {
        /// The stream.
        stream: StreamName,
        /// The service's answer.
        #[source]
        source: ApiError,
    },
    /// Listing the stream's shards failed.
    #[error("listing the shards of stream {stream} failed")]
    Kinesis {
        /// The stream.
        stream: StreamName,
        /// The service's answer.
        #[source]
        source: ApiError,
    },
    /// The enhanced fan-out consumer could not be registered or did not become active.
    #[error("fan-out consumer {name} of stream {stream} is not usable")]
    FanOutConsumer {
        /// The consumer's name.
        name: ConsumerName,
        /// The stream.
        stream: StreamName,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Creating or reading the lease table failed.
    #[error("the lease table is not usable")]
    LeaseTable(#[source] LeaseStoreError),
}

/// Why [`Consumer::shutdown`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The scheduler task panicked or was aborted.
    #[error("the consumer's scheduler task failed")]
    Scheduler(#[source] tokio::task::JoinError),
    /// The consumer had stopped by itself before it was asked to (see [`Consumer::stopped`]):
    /// what it consumes is gone. Its shard consumers were shut down as by a requested
    /// shutdown; `report` says how.
    #[error("the consumer stopped by itself")]
    Stopped {
        /// How each shard consumer ended.
        report: ShutdownReport,
        /// Why it stopped.
        #[source]
        cause: FatalError,
    },
}

/// Why a consumer stopped by itself: what it consumes no longer exists, and retrying cannot
/// bring it back. Errors that may pass or be fixed while the consumer runs (throttling,
/// timeouts, access denied) never stop it; they are logged and retried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FatalError {
    /// ListShards says the stream does not exist: it was deleted while being consumed.
    /// The checkpoints in the lease table stay as they were.
    #[error("stream {stream} no longer exists; it was deleted while being consumed")]
    StreamDeleted {
        /// The stream.
        stream: StreamName,
        /// The service's answer.
        #[source]
        source: ApiError,
    },
    /// The lease table was deleted while in use: the leases and checkpoints are gone.
    /// Restarting creates a new table, and reading starts again from the initial position.
    #[error("the lease table was deleted while in use; its leases and checkpoints are gone")]
    LeaseTableDeleted(#[source] LeaseStoreError),
}

/// First and largest backoff ceilings between start-up retries.
const START_BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));

/// Builds a [`Consumer`]; see [`Consumer::builder`].
#[must_use = "call start() to run the consumer"]
pub struct ConsumerBuilder {
    api: Arc<dyn KinesisApi>,
    store: Arc<dyn LeaseStore>,
    stream: Option<StreamName>,
    application_name: Option<String>,
    worker_id: Option<WorkerId>,
    config: ConsumerConfig,
}

impl std::fmt::Debug for ConsumerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("store", &self.store)
            .field("stream", &self.stream)
            .field("application_name", &self.application_name)
            .field("worker_id", &self.worker_id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ConsumerBuilder {
    /// The stream to consume (required).
    pub fn stream(mut self, stream: StreamName) -> Self {
        self.stream = Some(stream);
        self
    }

    /// The application's name (required), as the KCL's: it names the consumer in logs and
    /// metrics and, by convention, its lease table (build the [`DynamoLeaseStore`] with it)
    /// and its enhanced fan-out consumer.
    ///
    /// [`DynamoLeaseStore`]: crate::DynamoLeaseStore
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// This worker's id, stored as the owner of the leases it holds. Default: the host name
    /// (`HOSTNAME`) and a random suffix, unique per process. Give a stable id to resume the
    /// leases an earlier run of this worker still holds without waiting for them to expire.
    pub fn worker_id(mut self, id: WorkerId) -> Self {
        self.worker_id = Some(id);
        self
    }

    /// Where to start a stream that has no leases yet (default
    /// [`InitialPosition::Latest`], as the KCL).
    pub fn initial_position(mut self, position: InitialPosition) -> Self {
        self.config.initial_position = position;
        self
    }

    /// The lease duration; the renew interval becomes a third of it (default 10 s).
    pub fn lease_duration(mut self, duration: Duration) -> Self {
        self.config.lease_duration = duration;
        self.config.renew_interval = duration / 3;
        self
    }

    /// How shards are read: [`Retrieval::Polling`] (default) or [`Retrieval::FanOut`].
    pub fn retrieval(mut self, retrieval: Retrieval) -> Self {
        self.config.retrieval = retrieval;
        self
    }

    /// Replaces the whole configuration (the initial position included).
    pub fn config(mut self, config: ConsumerConfig) -> Self {
        self.config = config;
        self
    }

    /// Checks the configuration, creates the lease table if missing (on-demand billing),
    /// checks that the stream exists, creates leases for its shards, and starts the
    /// scheduler, which takes leases and runs a processor from `factory` for each.
    ///
    /// Throttling and transient failures of these calls are retried with jittered backoff
    /// for up to [`ConsumerConfig::start_timeout`] (60 s by default), as the KCL retries a
    /// worker's initialization; a missing stream, denied access or a lease table with the
    /// wrong key schema fail at once.
    pub async fn start<F: ProcessorFactory>(self, factory: F) -> Result<Consumer, StartError> {
        let stream = self.stream.ok_or(StartError::MissingStream)?;
        let application = self.application_name.ok_or(StartError::MissingApplicationName)?;
        self.config.validate().map_err(StartError::Config)?;
        let worker_id = self.worker_id.unwrap_or_else(default_worker_id);
        // Throttling and transient failures at start are retried for up to start_timeout.
        let backoff = Backoff::new(START_BACKOFF.0, START_BACKOFF.1);
        let start_timeout = self.config.start_timeout;
        let store = &self.store;
        retry_within(
            backoff,
            start_timeout,
            "creating or describing the lease table at start",
            LeaseStoreError::is_retryable,
            || store.create_table_if_missing(),
        )
        .await
        .map_err(StartError::LeaseTable)?;

        let fan_out = match &self.config.retrieval {
            Retrieval::FanOut { consumer_name } => {
                let api = self.api.as_ref();
                let registered = retry_within(
                    backoff,
                    start_timeout,
                    "registering the fan-out consumer",
                    |error: &RegistrationError| matches!(error, RegistrationError::Api(e) if e.is_retryable()),
                    || registration::ensure_registered(api, &stream, consumer_name),
                );
                let arn = registered.await.map_err(|error| match error {
                    RegistrationError::Api(source) if source.kind() == ApiErrorKind::NotFound => {
                        StartError::StreamNotFound { stream: stream.clone(), source }
                    }
                    other => StartError::FanOutConsumer {
                        name: consumer_name.clone(),
                        stream: stream.clone(),
                        source: Box::new(other),
                    },
                })?;
                Some((consumer_name.clone(), arn))
            }
            Retrieval::Polling(_) => None,
        };
        let deregister = (self.config.deregister_on_shutdown)
            .then(|| fan_out.as_ref().map(|(name, _)| (self.api.clone(), name.clone())))
            .flatten();

        let (notices_tx, notices) = mpsc::unbounded_channel();
        let context = ShardContext {
            consumer_arn: fan_out.map(|(_, arn)| arn),
            api: self.api,
            store: self.store,
            stream: stream.clone(),
            factory: processor::erase(factory),
            config: Arc::new(self.config),
            notices: notices_tx,
        };
        let synced = retry_within(
            backoff,
            start_timeout,
            "the first shard sync",
            SyncError::is_retryable,
            || scheduler::sync_shards(&context),
        );
        synced.await.map_err(|error| match error {
            SyncError::Kinesis(source) if source.kind() == ApiErrorKind::NotFound => {
                StartError::StreamNotFound { stream: stream.clone(), source }
            }
            SyncError::Kinesis(source) => StartError::Kinesis { stream: stream.clone(), source },
            SyncError::Store(source) => StartError::LeaseTable(source),
        })?;

        let stop = CancellationToken::new();
        let (held_tx, held) = watch::channel(Vec::new());
        let scheduler = Scheduler::new(context, worker_id.clone(), notices, held_tx, stop.clone());
        let span = info_span!("consumer", application = %application, worker = %worker_id, stream = %stream);
        info!(parent: &span, "consumer started");
        let task = tokio::spawn(scheduler.run().instrument(span));
        Ok(Consumer { worker_id, stream, stop, task: Some(task), outcome: None, held, deregister })
    }
}

fn default_worker_id() -> WorkerId {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_owned());
    let suffix: u64 =
        rand::Rng::random(&mut <rand::rngs::SmallRng as rand::SeedableRng>::from_os_rng());
    WorkerId::new(format!("{host}-{suffix:016x}"))
}

/// A running consumer: a scheduler that takes leases of the stream's shards and runs a
/// [`ShardProcessor`](crate::ShardProcessor) for each.
///
/// Stop it with [`shutdown`](Self::shutdown). Dropping it without shutting down starts the
/// same graceful shutdown in the background, without waiting for it.
pub struct Consumer {
    worker_id: WorkerId,
    stream: StreamName,
    stop: CancellationToken,
    task: Option<JoinHandle<Outcome>>,
    /// The scheduler's outcome once [`Consumer::stopped`] saw it end.
    outcome: Option<Result<Outcome, tokio::task::JoinError>>,
    held: watch::Receiver<Vec<ShardId>>,
    /// The fan-out consumer to deregister at shutdown, if asked to.
    deregister: Option<(Arc<dyn KinesisApi>, ConsumerName)>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("worker_id", &self.worker_id)
            .field("stream", &self.stream)
            .field("held", &*self.held.borrow())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A builder for a consumer reading through `kinesis`, with its leases in `lease_store`.
    pub fn builder(
        kinesis: Arc<dyn KinesisApi>,
        lease_store: Arc<dyn LeaseStore>,
    ) -> ConsumerBuilder {
        ConsumerBuilder {
            api: kinesis,
            store: lease_store,
            stream: None,
            application_name: None,
            worker_id: None,
            config: ConsumerConfig::default(),
        }
    }

    /// This worker's id.
    pub fn worker_id(&self) -> &WorkerId {
        &self.worker_id
    }

    /// The stream being consumed.
    pub fn stream(&self) -> &StreamName {
        &self.stream
    }

    /// The shards whose leases this worker holds now (sorted).
    pub fn held_shards(&self) -> Vec<ShardId> {
        self.held.borrow().clone()
    }

    /// A watch of [`held_shards`](Self::held_shards), updated on every change.
    pub fn watch_held_shards(&self) -> watch::Receiver<Vec<ShardId>> {
        self.held.clone()
    }

    /// Stops gracefully: no more leases are taken; each processor's `shutdown_requested` is
    /// called (it may checkpoint), then its lease is released so another worker takes it at
    /// once. Waits for all of it, at most the configured shutdown timeout.
    ///
    /// With [`ConsumerConfig::deregister_on_shutdown`] and fan-out retrieval, the stream
    /// consumer is deregistered afterwards; a failure to do so is logged, not returned, as
    /// the consumer itself stopped cleanly.
    ///
    /// If the consumer had stopped by itself ([`stopped`](Self::stopped)), returns
    /// [`RunError::Stopped`] with the reason.
    pub async fn shutdown(mut self) -> Result<ShutdownReport, RunError> {
        self.stop.cancel();
        let outcome = match (self.outcome.take(), self.task.take()) {
            (Some(outcome), _) => outcome,
            (None, Some(task)) => task.await,
            (None, None) => Ok(Outcome::default()),
        }
        .map_err(RunError::Scheduler)?;
        if let Some((api, name)) = self.deregister.take()
            && let Err(error) = registration::deregister(api.as_ref(), &self.stream, &name).await
        {
            tracing::warn!(consumer = %name, error = %error, "could not deregister the fan-out consumer");
        }
        match outcome.fatal {
            None => Ok(outcome.report),
            Some(cause) => Err(RunError::Stopped { report: outcome.report, cause }),
        }
    }

    /// Waits until the consumer stops by itself, which it does only when what it consumes is
    /// gone ([`FatalError`]: the stream or the lease table was deleted); then
    /// [`shutdown`](Self::shutdown) returns the reason. Never completes while the consumer
    /// runs. Cancel-safe, so it fits a `select!` beside the application's own stop signal:
    ///
    /// ```no_run
    /// # async fn example(
    /// #     mut consumer: kinesis_consumer::Consumer,
    /// #     stop_signal: tokio::sync::oneshot::Receiver<()>,
    /// # ) -> Result<(), kinesis_consumer::RunError> {
    /// tokio::select! {
    ///     _ = stop_signal => {}
    ///     () = consumer.stopped() => {}
    /// }
    /// let report = consumer.shutdown().await?; // the reason, if it stopped by itself
    /// # let _ = report; Ok(()) }
    /// ```
    pub async fn stopped(&mut self) {
        if self.outcome.is_some() {
            return;
        }
        let Some(task) = self.task.as_mut() else { return };
        let outcome = task.await;
        self.task = None;
        self.outcome = Some(outcome);
    }

    /// Stops at once, as if the process died: no processor is called, no lease is released
    /// or checkpointed; other workers take the leases once they expire. For tests of
    /// failover, and for callers that must stop now.
    pub fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Not after `abort`, which took the task: a graceful stop would release the leases.
        if self.task.is_some() {
            self.stop.cancel();
        }
    }
}
