//! The scheduler: one task per worker that takes leases (the lease coordinator's taker),
//! keeps the lease table in step with the stream's shards (shard sync and cleanup), and runs
//! a shard consumer with a lease keeper for every lease it holds.
//!
//! This module owns the set of running shard consumers and this worker's memory of the
//! lease table ([`LeaseObservations`]). Policies are the pure `taker` and `shard_sync`
//! modules; this is the I/O around them.
//!
//! Invariants:
//! - At most one shard consumer per shard runs on this worker, and only for a lease this
//!   worker took (every take is conditional on the counter it scanned).
//! - Finished leases (`SHARD_END`) are neither taken nor counted for balancing; the cleanup
//!   deletes them once their children have started.
//! - Every worker runs the shard sync; lease creation is conditional ("create if absent"),
//!   so workers syncing at once create each lease exactly once.
//! - Shutdown asks every shard consumer to finish (the processor's `shutdown_requested`,
//!   then the lease is released) and waits at most the shutdown timeout.
//! - The scheduler stops by itself only when what it consumes is gone: the shard sync's
//!   ListShards says the stream does not exist, or the lease table does not exist any more
//!   ([`FatalError`]). Everything else (throttling, access denied, passing faults) is retried
//!   at the next cycle, so a fixed IAM policy takes effect without a restart.

use std::collections::HashMap;

use kinesis_common::{ApiErrorKind, ShardId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::consumer::FatalError;
use crate::keeper::{self, KeeperConfig};
use crate::lease::{Lease, LeaseStoreError, LeaseWriteError, WorkerId};
use crate::metrics;
use crate::shard_consumer::{self, ShardContext, ShardNotice, ShardReport, error_chain};
use crate::shard_sync;
use crate::taker::{self, LeaseObservations, TakeKind};
use kinesis_common::ExtendedSequenceNumber;

/// What [`Consumer::shutdown`](crate::Consumer::shutdown) reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// How each shard consumer running at shutdown ended.
    pub shards: Vec<ShardReport>,
    /// Shards whose processors did not finish within the shutdown timeout; they were
    /// stopped, and their leases expire for other workers.
    pub timed_out: Vec<ShardId>,
}

/// How the scheduler task ended.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) report: ShutdownReport,
    /// Why it stopped by itself; `None` after a requested shutdown.
    pub(crate) fatal: Option<FatalError>,
}

struct Running {
    shutdown: CancellationToken,
}

pub(crate) struct Scheduler {
    context: ShardContext,
    me: WorkerId,
    observations: LeaseObservations,
    running: HashMap<ShardId, Running>,
    tasks: JoinSet<ShardReport>,
    /// The shard of each running task, to tell which shard a panicked task was running.
    task_shards: HashMap<tokio::task::Id, ShardId>,
    notices: mpsc::UnboundedReceiver<ShardNotice>,
    held: watch::Sender<Vec<ShardId>>,
    stop: CancellationToken,
    /// Set when what this worker consumes is gone; the loop then stops.
    fatal: Option<FatalError>,
}

impl Scheduler {
    pub(crate) fn new(
        context: ShardContext,
        me: WorkerId,
        notices: mpsc::UnboundedReceiver<ShardNotice>,
        held: watch::Sender<Vec<ShardId>>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            context,
            me,
            observations: LeaseObservations::new(),
            running: HashMap::new(),
            tasks: JoinSet::new(),
            task_shards: HashMap::new(),
            notices,
            held,
            stop,
            fatal: None,
        }
    }

    /// Runs until `stop` is cancelled, then shuts every shard consumer down.
    pub(crate) async fn run(mut self) -> Outcome {
        let config = self.context.config.clone();
        let now = Instant::now();
        let mut taker = tokio::time::interval(config.taker_interval);
        let mut sync =
            tokio::time::interval_at(now + config.shard_sync_interval, config.shard_sync_interval);
        let mut cleanup =
            tokio::time::interval_at(now + config.cleanup_interval, config.cleanup_interval);
        for timer in [&mut taker, &mut sync, &mut cleanup] {
            timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                // Stop first: shard consumers see the same cancellation and may finish before
                // this loop runs again; shut_down must still collect them for the report.
                biased;
                () = self.stop.cancelled() => break,
                _ = taker.tick() => self.take_leases().await,
                _ = sync.tick() => self.sync_shards().await,
                _ = cleanup.tick() => self.clean_up().await,
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.finished(done);
                }
                Some(notice) = self.notices.recv() => match notice {
                    ShardNotice::ShardEnded { children_known } => {
                        if !children_known {
                            self.sync_shards().await;
                        }
                        self.take_leases().await;
                    }
                    // Reading a shard was answered "not found": a shard sync tells whether
                    // the stream itself is gone.
                    ShardNotice::NotFound => self.sync_shards().await,
                },
            }
            if let Some(fatal) = &self.fatal {
                error!(error = %fatal, source = %error_chain(fatal), "the consumer stops: what it consumes is gone");
                break;
            }
        }
        let fatal = self.fatal.take();
        Outcome { report: self.shut_down().await, fatal }
    }

    fn finished(
        &mut self,
        done: Result<(tokio::task::Id, ShardReport), tokio::task::JoinError>,
    ) -> Option<ShardReport> {
        let id = match &done {
            Ok((id, _)) => *id,
            Err(error) => error.id(),
        };
        if let Some(shard) = self.task_shards.remove(&id) {
            self.running.remove(&shard);
        }
        self.publish_held();
        match done {
            Ok((_, report)) => {
                debug!(shard = %report.shard_id, reason = ?report.reason, "shard consumer done");
                Some(report)
            }
            Err(error) => {
                // A processor panicked (or the task was aborted): its keeper stops once the
                // task's handle is dropped, and the lease expires for whoever takes it next.
                warn!(error = %error, "a shard consumer task failed");
                None
            }
        }
    }

    fn publish_held(&self) {
        let mut held: Vec<ShardId> = self.running.keys().cloned().collect();
        held.sort();
        metrics::leases_held(held.len());
        self.held.send_replace(held);
    }

    /// One taker cycle: scan the table, resume leases this worker owns but does not run,
    /// then take what the taker policy says.
    async fn take_leases(&mut self) {
        let scan = match self.context.store.list().await {
            Ok(scan) => scan,
            Err(error @ LeaseStoreError::TableNotFound { .. }) => {
                self.fatal = Some(FatalError::LeaseTableDeleted(error));
                return;
            }
            Err(error) => {
                warn!(error = %error, "could not scan the lease table; retrying at the next cycle");
                return;
            }
        };
        metrics::invalid_lease_items(scan.invalid.len());
        for invalid in &scan.invalid {
            warn!(item = %invalid.key, attribute = invalid.attribute, problem = %invalid.problem, "lease item is not valid; ignored");
        }
        let now = Instant::now().into_std();
        self.observations.observe(&scan.leases, now);
        let active: Vec<Lease> = scan
            .leases
            .into_iter()
            .filter(|l| l.checkpoint != ExtendedSequenceNumber::ShardEnd)
            .collect();
        let max = self.context.config.max_leases_per_worker;
        // Leases the table says are ours but that nothing here runs: left by an earlier run
        // of this worker id. Take them again (bumping the counter) rather than wait for them
        // to expire.
        let orphans: Vec<Lease> = active
            .iter()
            .filter(|l| l.is_owned_by(&self.me) && !self.running.contains_key(&l.key))
            .cloned()
            .collect();
        for lease in orphans {
            if self.running.len() >= max {
                break;
            }
            self.take(lease, "own").await;
        }
        let plan =
            taker::plan(&self.observations, &active, &self.me, now, &self.context.config.taker());
        debug!(
            target = plan.target,
            takes = plan.takes.len(),
            held = self.running.len(),
            "taker cycle"
        );
        for take in plan.takes {
            if self.running.len() >= max || self.stop.is_cancelled() {
                break;
            }
            let kind = match take.kind {
                TakeKind::Unowned => "unowned",
                TakeKind::Expired => "expired",
                TakeKind::VeryOld => "very_old",
                TakeKind::Steal => "steal",
            };
            self.take(take.lease, kind).await;
        }
        self.publish_held();
    }

    async fn take(&mut self, lease: Lease, kind: &'static str) {
        if self.running.contains_key(&lease.key) {
            return;
        }
        match self.context.store.take(&lease, &self.me).await {
            Ok(taken) => {
                info!(shard = %taken.key, kind, previous_owner = ?lease.owner, "lease taken");
                metrics::lease_taken(kind);
                self.start(taken);
            }
            Err(LeaseWriteError::Conflict { .. }) => {
                debug!(shard = %lease.key, "lease changed before it could be taken");
            }
            Err(error) => warn!(shard = %lease.key, error = %error, "could not take a lease"),
        }
    }

    fn start(&mut self, lease: Lease) {
        let config = &self.context.config;
        let (keeper, _task) = keeper::spawn(
            self.context.store.clone(),
            lease.clone(),
            KeeperConfig {
                lease_duration: config.lease_duration,
                renew_interval: config.renew_interval,
                checkpoint_attempts: config.checkpoint_attempts,
            },
        );
        let shutdown = self.stop.child_token();
        self.running.insert(lease.key.clone(), Running { shutdown: shutdown.clone() });
        let key = lease.key.clone();
        let task =
            self.tasks.spawn(shard_consumer::run(self.context.clone(), lease, keeper, shutdown));
        self.task_shards.insert(task.id(), key);
    }

    /// Lists the shards and creates leases for shards that have none.
    pub(crate) async fn sync_shards(&mut self) {
        match sync_shards(&self.context).await {
            Ok(_) => {}
            Err(SyncError::Kinesis(source)) if source.kind() == ApiErrorKind::NotFound => {
                let stream = self.context.stream.clone();
                self.fatal = Some(FatalError::StreamDeleted { stream, source });
            }
            Err(SyncError::Store(error @ LeaseStoreError::TableNotFound { .. })) => {
                self.fatal = Some(FatalError::LeaseTableDeleted(error));
            }
            Err(error) => {
                warn!(error = %error, source = %error_chain(&error), "shard sync failed; retrying at the next cycle");
            }
        }
    }

    /// Deletes finished leases whose children have started, and leases of shards that no
    /// longer exist.
    async fn clean_up(&mut self) {
        let store = &self.context.store;
        let result = async {
            let scan = store.list().await.map_err(|e| e.to_string())?;
            let shards = self
                .context
                .api
                .list_shards(&self.context.stream)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((scan, shards))
        }
        .await;
        let (scan, shards) = match result {
            Ok(found) => found,
            Err(error) => {
                warn!(%error, "lease cleanup skipped");
                return;
            }
        };
        let doomed = shard_sync::plan_cleanup(&shards, &scan.leases);
        for key in doomed {
            if self.running.contains_key(&key) {
                continue;
            }
            let Some(lease) = scan.leases.iter().find(|l| l.key == key) else { continue };
            match store.delete(lease).await {
                Ok(()) => info!(shard = %key, "finished lease deleted"),
                Err(error) => debug!(shard = %key, error = %error, "lease not deleted"),
            }
        }
    }

    async fn shut_down(mut self) -> ShutdownReport {
        info!(shards = self.running.len(), "consumer shutting down");
        for running in self.running.values() {
            running.shutdown.cancel();
        }
        let mut report = ShutdownReport::default();
        let deadline = Instant::now() + self.context.config.shutdown_timeout;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(done)) => {
                    if let Some(shard) = self.finished(done) {
                        report.shards.push(shard);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    report.timed_out = self.running.keys().cloned().collect();
                    report.timed_out.sort();
                    warn!(shards = ?report.timed_out, "shutdown timed out; stopping the remaining shards");
                    self.tasks.abort_all();
                    break;
                }
            }
        }
        report.shards.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        self.running.clear();
        self.task_shards.clear();
        self.publish_held();
        report
    }
}

/// Lists the stream's shards and the leases, and creates the leases the shard sync policy
/// plans, parents first.
pub(crate) async fn sync_shards(context: &ShardContext) -> Result<usize, SyncError> {
    let shards = context.api.list_shards(&context.stream).await.map_err(SyncError::Kinesis)?;
    let scan = context.store.list().await.map_err(SyncError::Store)?;
    let planned = shard_sync::plan_new_leases(
        &shards,
        &scan.leases,
        context.config.initial_position.for_sync(),
    );
    let mut created = 0;
    for lease in &planned {
        match context.store.create_if_absent(lease).await.map_err(SyncError::Store)? {
            crate::lease::CreateOutcome::Created => {
                created += 1;
                debug!(shard = %lease.key, checkpoint = %lease.checkpoint, "lease created");
            }
            crate::lease::CreateOutcome::AlreadyExists => {}
        }
    }
    if created > 0 {
        info!(created, "shard sync created leases");
    }
    Ok(created)
}

/// Why a shard sync failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    #[error("listing the shards failed")]
    Kinesis(#[source] kinesis_common::ApiError),
    #[error("the lease table failed")]
    Store(#[source] crate::lease::LeaseStoreError),
}

impl SyncError {
    /// Whether the same sync may succeed if tried again after a pause.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            Self::Kinesis(error) => error.is_retryable(),
            Self::Store(error) => error.is_retryable(),
        }
    }
}
