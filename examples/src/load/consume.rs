//! `consume`: one consumer worker that feeds every record to a [`Verifier`] and stops when
//! every expected record arrived, when nothing arrived for the idle time, at the time limit,
//! or on the caller's stop signal; then it shuts down gracefully (checkpointing and releasing
//! its leases) and reports.
//!
//! Each batch is tallied before it is checkpointed, so a record is counted at least once per
//! delivery, and a batch read again after a lease moved shows up as duplicates, never as a
//! loss.
//!
//! With an [`EventLog`] ([`consume_with_events`], `kinesis-load consume --events`), each
//! processor also logs its session: the checkpoint it started from, every batch (before it is
//! checkpointed), every checkpoint write (before it starts and when it ends) and how it ended,
//! one line at a time, so that `kinesis-load verify --events` can judge the run even when the
//! worker is killed (see [`events`](super::events) and [`audit`](super::audit)).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kinesis_common::ExtendedSequenceNumber;
use kinesis_common::{KinesisApi, ShardId, StreamName};
use kinesis_consumer::{
    Batch, CheckpointError, Checkpointer, Consumer, ConsumerConfig, Initialize, LeaseLost,
    LeaseStore, ProcessorError, Retrieval, ShardEnd, ShardEndCheckpointed, ShardProcessor,
    WorkerId,
};
use tokio::time::Instant;

use super::events::{Delivered, EndReason, Event, EventLog, ForeignRecord, now_micros};
use super::payload::{self, RunId, micros_since_epoch};
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

/// The processor of one shard: tallies (and logs), then checkpoints every batch.
struct LoadProcessor {
    shard: String,
    verifier: Arc<Mutex<Verifier>>,
    /// The run tallied, if one was named (other runs are logged as such).
    run: Option<RunId>,
    /// The event log and this processor's session in it.
    events: Option<(Arc<EventLog>, String)>,
}

impl LoadProcessor {
    /// Appends an event made for this session, if events are logged.
    fn log(&self, event: impl FnOnce(&str) -> Event) -> Result<(), ProcessorError> {
        if let Some((log, session)) = &self.events {
            log.write(&event(session)).map_err(|e| ProcessorError::from(format!("{e:#}")))?;
        }
        Ok(())
    }

    /// Logs a batch's records, as delivered, before anything is checkpointed.
    fn log_batch(&self, batch: &Batch, received: SystemTime) -> Result<(), ProcessorError> {
        if self.events.is_none() {
            return Ok(());
        }
        let mut records = Vec::with_capacity(batch.records.len());
        let mut foreign = Vec::new();
        let mut other_runs = 0;
        for record in &batch.records {
            let sequence = record.sequence_number.to_string();
            let sub = record.sub_sequence_number.unwrap_or(0);
            match payload::decode(&record.data) {
                Ok(h) if self.run.is_none_or(|run| run == h.run_id) => {
                    records.push(Delivered(sequence, sub, h.record_id, h.key_index, h.key_seq));
                }
                Ok(_) => other_runs += 1,
                Err(reason) => foreign.push(ForeignRecord(sequence, sub, reason.as_str().into())),
            }
        }
        self.log(|session| Event::Batch {
            t: micros_since_epoch(received),
            session: session.to_owned(),
            shard: self.shard.clone(),
            records,
            foreign,
            other_runs,
        })
    }

    /// Checkpoints at the last record handed out, logging the write before it starts and
    /// when it ends (nothing is logged when there is nothing to write).
    async fn checkpoint(
        &self,
        checkpointer: &mut Checkpointer,
    ) -> Result<Result<(), CheckpointError>, ProcessorError> {
        let target =
            checkpointer.last_handed_out().filter(|p| *p != checkpointer.last_checkpoint());
        let Some(position) = target.map(ToString::to_string) else {
            return Ok(checkpointer.checkpoint().await);
        };
        self.log_checkpoint_begin(&position)?;
        let result = checkpointer.checkpoint().await;
        self.log_checkpoint_done(&position, result.as_ref().err())?;
        Ok(result)
    }

    fn log_checkpoint_begin(&self, position: &str) -> Result<(), ProcessorError> {
        self.log(|session| Event::CheckpointBegin {
            t: now_micros(),
            session: session.to_owned(),
            shard: self.shard.clone(),
            position: position.to_owned(),
        })
    }

    fn log_checkpoint_done(
        &self,
        position: &str,
        error: Option<&CheckpointError>,
    ) -> Result<(), ProcessorError> {
        let outcome = match error {
            None => "ok".to_owned(),
            Some(e) if e.is_lease_lost() => "lease-lost".to_owned(),
            Some(e) => format!("error: {e}"),
        };
        self.log(|session| Event::CheckpointDone {
            t: now_micros(),
            session: session.to_owned(),
            shard: self.shard.clone(),
            position: position.to_owned(),
            outcome,
        })
    }

    fn log_end(&self, reason: EndReason) -> Result<(), ProcessorError> {
        self.log(|session| Event::End {
            t: now_micros(),
            session: session.to_owned(),
            shard: self.shard.clone(),
            reason,
        })
    }
}

#[async_trait::async_trait]
impl ShardProcessor for LoadProcessor {
    async fn initialize(&mut self, input: Initialize) -> Result<(), ProcessorError> {
        if let Some((log, session)) = &mut self.events {
            *session = log.new_session();
            log.write(&Event::Init {
                t: now_micros(),
                session: session.clone(),
                incarnation: log.incarnation().to_owned(),
                shard: self.shard.clone(),
                checkpoint: input.checkpoint.to_string(),
            })
            .map_err(|e| ProcessorError::from(format!("{e:#}")))?;
        }
        Ok(())
    }

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
        // Logged before the checkpoint: a worker killed after checkpointing has logged what
        // it delivered.
        self.log_batch(&batch, received)?;
        match self.checkpoint(checkpointer).await? {
            // Another worker took the shard (balancing steals leases): it reads again from the
            // last checkpoint, and the verifier counts those records as duplicates. Not a
            // failure of this processor; the consumer sees the loss and calls `lease_lost`.
            Err(e) if e.is_lease_lost() => Ok(()),
            other => Ok(other?),
        }
    }

    async fn shard_ended(&mut self, end: ShardEnd) -> Result<ShardEndCheckpointed, ProcessorError> {
        let position = ExtendedSequenceNumber::ShardEnd.to_string();
        self.log_checkpoint_begin(&position)?;
        let result = end.checkpoint().await;
        self.log_checkpoint_done(&position, result.as_ref().err())?;
        let proof = result?;
        self.log_end(EndReason::ShardEnd)?;
        Ok(proof)
    }

    async fn lease_lost(&mut self, _input: LeaseLost) {
        if let Err(e) = self.log_end(EndReason::LeaseLost) {
            tracing::error!(shard = %self.shard, error = %e, "could not log the lost lease");
        }
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        // Everything handed out was tallied in `process`.
        self.checkpoint(checkpointer).await??;
        self.log_end(EndReason::Shutdown)?;
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
    consume_with_events(kinesis, leases, options, None, progress, stop).await
}

/// [`consume`], also logging every session, batch and checkpoint to `events` (see
/// [`events`](super::events)). A failure to log fails the batch, which is then read again by
/// the lease's next holder, so the log never misses a delivery that was checkpointed.
pub async fn consume_with_events(
    kinesis: Arc<dyn KinesisApi>,
    leases: Arc<dyn LeaseStore>,
    options: ConsumeOptions,
    events: Option<Arc<EventLog>>,
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
        let events = events.clone();
        builder
            .start(move |shard: &ShardId| LoadProcessor {
                shard: shard.to_string(),
                verifier: Arc::clone(&verifier),
                run: run_id,
                events: events.clone().map(|log| (log, String::new())),
            })
            .await?
    };
    let worker = consumer.worker_id().to_string();
    if let Some(log) = &events {
        log.write(&Event::Worker {
            t: now_micros(),
            incarnation: log.incarnation().to_owned(),
            worker: worker.clone(),
            pid: std::process::id(),
        })?;
    }

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
    if let Some(log) = &events {
        log.write(&Event::WorkerStopped {
            t: now_micros(),
            incarnation: log.incarnation().to_owned(),
        })?;
    }
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
