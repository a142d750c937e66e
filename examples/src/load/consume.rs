//! `consume`: one consumer worker that feeds every record to a [`Verifier`] and stops when
//! every expected record arrived, when nothing arrived for the idle time, at the time limit,
//! or on the caller's stop signal; then it shuts down gracefully (checkpointing and releasing
//! its leases) and reports.
//!
//! Each batch is tallied before it is checkpointed, so a record is counted at least once per
//! delivery, and a batch read again after a lease moved shows up as duplicates, never as a
//! loss.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kinesis_common::{KinesisApi, ShardId, StreamName};
use kinesis_consumer::{
    Batch, Checkpointer, Consumer, ConsumerConfig, LeaseStore, ProcessorError, Retrieval,
    ShardProcessor, WorkerId,
};
use tokio::time::Instant;

use super::report::{ConsumeReport, StopReason};
use super::verify::{Expectation, Scope, Verifier, judge};
use super::{ProgressSink, spawn_stop_flag};

/// How often the stop conditions are checked.
const POLL: Duration = Duration::from_millis(100);

/// How to consume and when to stop.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// The stream.
    pub stream: StreamName,
    /// The application name: the lease table's name and the workers' common name.
    pub application: String,
    /// This worker's id (default: the consumer's, host name and a random suffix).
    pub worker: Option<WorkerId>,
    /// The consumer's settings: initial position, retrieval, lease timing.
    pub consumer: ConsumerConfig,
    /// Tally this run only.
    pub run_id: Option<crate::load::RunId>,
    /// Stop once every expected record arrived, and judge missing records against it.
    pub expectation: Option<Expectation>,
    /// Other workers share the shards: leave missing records to `verify`.
    pub shared: bool,
    /// Stop after this long without a record.
    pub idle: Duration,
    /// Stop after this long in any case.
    pub timeout: Option<Duration>,
}

/// The processor of one shard: tallies, then checkpoints every batch.
struct LoadProcessor {
    shard: String,
    verifier: Arc<Mutex<Verifier>>,
}

#[async_trait::async_trait]
impl ShardProcessor for LoadProcessor {
    async fn process(
        &mut self,
        batch: Batch,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let received = SystemTime::now();
        {
            let mut verifier = self.verifier.lock().unwrap_or_else(|e| e.into_inner());
            for record in &batch.records {
                verifier.observe(&self.shard, &record.data, received);
            }
        }
        match checkpointer.checkpoint().await {
            // Another worker took the shard (balancing steals leases): it reads again from the
            // last checkpoint, and the verifier counts those records as duplicates. Not a
            // failure of this processor; the consumer sees the loss and calls `lease_lost`.
            Err(e) if e.is_lease_lost() => Ok(()),
            other => Ok(other?),
        }
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        // Everything handed out was tallied in `process`.
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

/// Runs one worker until a stop condition, shuts it down and reports. `progress`, if given,
/// gets a line once a second.
pub async fn consume(
    kinesis: Arc<dyn KinesisApi>,
    leases: Arc<dyn LeaseStore>,
    options: ConsumeOptions,
    progress: Option<ProgressSink>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ConsumeReport> {
    let run_id = options.run_id.or(options.expectation.as_ref().map(|e| e.run_id));
    let verifier = Arc::new(Mutex::new(Verifier::new(run_id)));
    let start = Instant::now();
    let (stopped, stop_task) = spawn_stop_flag(stop);
    let mut builder = Consumer::builder(kinesis, leases)
        .stream(options.stream.clone())
        .application_name(options.application.clone())
        .config(options.consumer.clone());
    if let Some(worker) = &options.worker {
        builder = builder.worker_id(worker.clone());
    }
    let consumer = {
        let verifier = Arc::clone(&verifier);
        builder
            .start(move |shard: &ShardId| LoadProcessor {
                shard: shard.to_string(),
                verifier: Arc::clone(&verifier),
            })
            .await?
    };
    let worker = consumer.worker_id().to_string();

    let records = || verifier.lock().unwrap_or_else(|e| e.into_inner()).tally().records();
    let mut last_activity = (records(), Instant::now());
    let mut next_progress = start + Duration::from_secs(1);
    let mut last_progress = (start, 0);
    let stopped_by = loop {
        tokio::time::sleep(POLL).await;
        let now = Instant::now();
        let seen = records();
        if seen != last_activity.0 {
            last_activity = (seen, now);
        }
        if let (Some(sink), true) = (&progress, now >= next_progress) {
            let line = {
                let v = verifier.lock().unwrap_or_else(|e| e.into_inner());
                let t = v.tally();
                let rate = (seen - last_progress.1) as f64 / (now - last_progress.0).as_secs_f64();
                format!(
                    "[{:>5.0}s] records {seen} ({rate:.0}/s), distinct {}, duplicates {}, foreign {}, order violations {}, shards held {:?}",
                    (now - start).as_secs_f64(),
                    t.distinct(),
                    t.deliveries() - t.distinct(),
                    t.foreign.values().sum::<u64>(),
                    t.runs.values().map(|r| r.order_violations).sum::<u64>(),
                    consumer.held_shards().iter().map(ToString::to_string).collect::<Vec<_>>()
                )
            };
            sink(&line);
            last_progress = (now, seen);
            next_progress += Duration::from_secs(1);
        }
        if let Some(e) = &options.expectation {
            let v = verifier.lock().unwrap_or_else(|e| e.into_inner());
            if v.tally().runs.get(&e.run_id).is_some_and(|run| e.missing(&run.seen) == 0) {
                break StopReason::Complete;
            }
        }
        if stopped.load(std::sync::atomic::Ordering::Relaxed) {
            break StopReason::Interrupted;
        }
        if now - last_activity.1 >= options.idle {
            break StopReason::Idle;
        }
        if options.timeout.is_some_and(|t| now - start >= t) {
            break StopReason::Timeout;
        }
    };
    stop_task.abort();
    consumer.shutdown().await?;
    let elapsed = start.elapsed();
    let tally = verifier.lock().unwrap_or_else(|e| e.into_inner()).tally().clone();
    let scope = if options.shared { Scope::Share } else { Scope::Whole };
    let verdict = judge(&tally, options.expectation.as_ref(), scope);
    Ok(ConsumeReport {
        stream: options.stream.to_string(),
        application: options.application,
        worker,
        retrieval: match &options.consumer.retrieval {
            Retrieval::FanOut { consumer_name } => format!("fan-out:{consumer_name}"),
            _ => "polling".to_owned(),
        },
        run_id,
        expectation: options.expectation,
        shared: options.shared,
        stopped_by,
        elapsed,
        tally,
        verdict,
    })
}
