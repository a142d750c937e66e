//! The lease keeper: one task per held lease that renews it, writes its checkpoints and
//! releases it, and tells everyone else when it is lost.
//!
//! This module owns the held lease's mutable state (its current counter). Every write to a
//! held lease goes through its keeper, so renewals and checkpoints are serialised: they are
//! both conditional on the counter, and two concurrent writes would make one fail its
//! condition and look like a lost lease (the KCL synchronises on the lease object for the
//! same reason).
//!
//! Invariants:
//! - Renewal runs on the keeper's own task, never behind a processor: a slow `process` call
//!   cannot make a lease expire.
//! - A lease is lost when a write's condition fails (another worker took it), or when this
//!   worker has not managed to renew it for a whole lease duration by its own clock (other
//!   workers may have taken it by then; KCL `DynamoDBLeaseRenewer.getCurrentlyHeldLeases`
//!   drops such leases too). Once lost, the keeper writes nothing more.
//! - A checkpoint after the lease was lost is refused without writing
//!   ([`CheckpointError::LeaseLost`]).
//! - [`KeeperHandle::confirm`] renews at once: a conditional write that fails if another
//!   worker took the lease since this worker's last write, so a caller learns of a take
//!   without waiting for the next scheduled renewal.
//! - A released lease has no owner in the table, so another worker takes it at its next
//!   taker cycle without waiting for it to expire.

use std::sync::Arc;
use std::time::Duration;

use kinesis_common::backoff::Backoff;
use kinesis_common::{ExtendedSequenceNumber, ShardId};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::checkpoint::CheckpointError;
use crate::lease::{Lease, LeaseStore, LeaseWriteError};
use crate::metrics;

/// Whether the keeper still holds its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Holding {
    /// Held and being renewed.
    Held,
    /// Lost: another worker took it, or it could not be renewed in time.
    Lost(LostReason),
    /// Given up on purpose; no owner in the table.
    Released,
}

/// Why a lease was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LostReason {
    /// A write's condition failed: another worker took or deleted the lease.
    TakenOver,
    /// Renewals failed for a whole lease duration.
    NotRenewed,
}

/// Timing of a keeper.
#[derive(Debug, Clone)]
pub(crate) struct KeeperConfig {
    /// How long a lease lasts without renewal.
    pub(crate) lease_duration: Duration,
    /// How often it is renewed.
    pub(crate) renew_interval: Duration,
    /// Attempts for a checkpoint write failing with a store error.
    pub(crate) checkpoint_attempts: u32,
}

enum Command {
    Checkpoint {
        position: ExtendedSequenceNumber,
        reply: oneshot::Sender<Result<Lease, CheckpointError>>,
    },
    UpdateChildren {
        children: Vec<ShardId>,
        reply: oneshot::Sender<Result<(), CheckpointError>>,
    },
    Confirm {
        reply: oneshot::Sender<Result<(), CheckpointError>>,
    },
    Release {
        reply: oneshot::Sender<()>,
    },
}

/// A handle to a lease's keeper task. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct KeeperHandle {
    shard: ShardId,
    commands: mpsc::Sender<Command>,
    holding: watch::Receiver<Holding>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Checkpoint { position, .. } => write!(f, "Checkpoint({position})"),
            Self::UpdateChildren { children, .. } => write!(f, "UpdateChildren({children:?})"),
            Self::Confirm { .. } => f.write_str("Confirm"),
            Self::Release { .. } => f.write_str("Release"),
        }
    }
}

impl KeeperHandle {
    /// The shard whose lease this is.
    pub(crate) fn shard(&self) -> &ShardId {
        &self.shard
    }

    /// Whether the lease is still held.
    pub(crate) fn holding(&self) -> Holding {
        self.holding.borrow().clone()
    }

    /// Waits until the lease is no longer held (lost or released).
    pub(crate) async fn lost(&self) -> Holding {
        let mut holding = self.holding.clone();
        match holding.wait_for(|h| *h != Holding::Held).await {
            Ok(state) => state.clone(),
            // The keeper is gone without saying: nothing renews the lease any more.
            Err(_) => Holding::Lost(LostReason::NotRenewed),
        }
    }

    /// Writes a checkpoint; returns the lease as stored afterwards.
    pub(crate) async fn checkpoint(
        &self,
        position: ExtendedSequenceNumber,
    ) -> Result<Lease, CheckpointError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Checkpoint { position, reply }).await?;
        answer.await.map_err(|_| self.lost_error())?
    }

    /// Records the shard's children on the lease.
    pub(crate) async fn update_children(
        &self,
        children: Vec<ShardId>,
    ) -> Result<(), CheckpointError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::UpdateChildren { children, reply }).await?;
        answer.await.map_err(|_| self.lost_error())?
    }

    /// Renews the lease now, conditional on this worker's last write as every write is: `Ok`
    /// proves that the lease is still held; [`CheckpointError::LeaseLost`] if another worker
    /// took it meanwhile (the keeper then marks it lost); [`CheckpointError::Store`] if the
    /// table failed (still held as far as is known; try again).
    pub(crate) async fn confirm(&self) -> Result<(), CheckpointError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Confirm { reply }).await?;
        answer.await.map_err(|_| self.lost_error())?
    }

    /// Gives the lease up (if still held) and stops the keeper. Waits until the release was
    /// tried.
    pub(crate) async fn release(&self) {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Release { reply }).await.is_ok() {
            let _ = answer.await;
        }
    }

    async fn send(&self, command: Command) -> Result<(), CheckpointError> {
        if self.holding() != Holding::Held {
            return Err(self.lost_error());
        }
        self.commands.send(command).await.map_err(|_| self.lost_error())
    }

    fn lost_error(&self) -> CheckpointError {
        CheckpointError::LeaseLost { shard: self.shard.clone() }
    }
}

/// Starts the keeper of `lease`, which this worker has just taken (its counter is the one
/// stored). The task ends once the lease is lost or released, or every handle is dropped.
pub(crate) fn spawn(
    store: Arc<dyn LeaseStore>,
    lease: Lease,
    config: KeeperConfig,
) -> (KeeperHandle, tokio::task::JoinHandle<()>) {
    let (commands, inbox) = mpsc::channel(8);
    let (holding_tx, holding) = watch::channel(Holding::Held);
    let handle = KeeperHandle { shard: lease.key.clone(), commands, holding };
    let keeper = Keeper { store, lease, config, holding: holding_tx, last_renewed: Instant::now() };
    let task = tokio::spawn(keeper.run(inbox));
    (handle, task)
}

struct Keeper {
    store: Arc<dyn LeaseStore>,
    lease: Lease,
    config: KeeperConfig,
    holding: watch::Sender<Holding>,
    /// When a write last bumped the counter (by this worker's clock).
    last_renewed: Instant,
}

impl Keeper {
    async fn run(mut self, mut inbox: mpsc::Receiver<Command>) {
        let mut next_renewal = self.last_renewed + self.config.renew_interval;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next_renewal) => {
                    next_renewal = self.renew().await;
                }
                command = inbox.recv() => match command {
                    Some(Command::Checkpoint { position, reply }) => {
                        let _ = reply.send(self.checkpoint(position).await);
                    }
                    Some(Command::UpdateChildren { children, reply }) => {
                        let _ = reply.send(self.update_children(children).await);
                    }
                    Some(Command::Confirm { reply }) => {
                        let _ = reply.send(self.confirm().await);
                    }
                    Some(Command::Release { reply }) => {
                        self.release().await;
                        let _ = reply.send(());
                        return;
                    }
                    // Every handle is gone: stop renewing; the lease expires for others.
                    None => return,
                },
            }
            if *self.holding.borrow() != Holding::Held {
                return;
            }
        }
    }

    /// Renews once; returns when to renew next.
    async fn renew(&mut self) -> Instant {
        if self.expired_locally() {
            return Instant::now();
        }
        match self.store.renew(&self.lease).await {
            Ok(lease) => {
                self.renewed(lease);
                self.last_renewed + self.config.renew_interval
            }
            Err(LeaseWriteError::Conflict { .. }) => {
                self.lose(LostReason::TakenOver);
                Instant::now()
            }
            Err(error) => {
                warn!(shard = %self.lease.key, error = %error, "lease renewal failed; retrying");
                metrics::renewal_failed(&self.lease.key);
                if self.expired_locally() {
                    return Instant::now();
                }
                // Retry sooner than a full interval, but stay inside the lease duration.
                let retry = (self.config.renew_interval / 4).max(Duration::from_millis(100));
                Instant::now() + retry
            }
        }
    }

    /// Whether the lease went unrenewed for a whole lease duration; marks it lost if so.
    fn expired_locally(&mut self) -> bool {
        if self.last_renewed.elapsed() >= self.config.lease_duration {
            self.lose(LostReason::NotRenewed);
            true
        } else {
            false
        }
    }

    fn renewed(&mut self, lease: Lease) {
        self.lease = lease;
        self.last_renewed = Instant::now();
    }

    fn lose(&mut self, reason: LostReason) {
        info!(shard = %self.lease.key, ?reason, "lease lost");
        metrics::lease_lost(&self.lease.key);
        self.holding.send_replace(Holding::Lost(reason));
    }

    async fn checkpoint(
        &mut self,
        position: ExtendedSequenceNumber,
    ) -> Result<Lease, CheckpointError> {
        let key = self.lease.key.clone();
        let lost = || CheckpointError::LeaseLost { shard: key.clone() };
        let backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        let mut rng = SmallRng::from_os_rng();
        let mut attempt = 0;
        loop {
            if self.expired_locally() {
                return Err(lost());
            }
            match self.store.checkpoint(&self.lease, &position).await {
                Ok(lease) => {
                    debug!(shard = %self.lease.key, %position, "checkpoint written");
                    metrics::checkpoint_written(&self.lease.key);
                    self.renewed(lease.clone());
                    return Ok(lease);
                }
                Err(LeaseWriteError::Conflict { .. }) => {
                    self.lose(LostReason::TakenOver);
                    return Err(lost());
                }
                Err(LeaseWriteError::Store(error)) => {
                    attempt += 1;
                    if attempt >= self.config.checkpoint_attempts.max(1) || !error.is_retryable() {
                        return Err(CheckpointError::Store {
                            shard: self.lease.key.clone(),
                            source: error,
                        });
                    }
                    tokio::time::sleep(backoff.delay(attempt, &mut rng)).await;
                }
            }
        }
    }

    /// One renewal now, its outcome told (see [`KeeperHandle::confirm`]).
    async fn confirm(&mut self) -> Result<(), CheckpointError> {
        let lost = CheckpointError::LeaseLost { shard: self.lease.key.clone() };
        if self.expired_locally() {
            return Err(lost);
        }
        match self.store.renew(&self.lease).await {
            Ok(lease) => {
                self.renewed(lease);
                Ok(())
            }
            Err(LeaseWriteError::Conflict { .. }) => {
                self.lose(LostReason::TakenOver);
                Err(lost)
            }
            Err(LeaseWriteError::Store(source)) => {
                metrics::renewal_failed(&self.lease.key);
                Err(CheckpointError::Store { shard: self.lease.key.clone(), source })
            }
        }
    }

    async fn update_children(&mut self, children: Vec<ShardId>) -> Result<(), CheckpointError> {
        if self.lease.child_shard_ids == children {
            return Ok(());
        }
        match self.store.update_children(&self.lease, &children).await {
            Ok(lease) => {
                self.renewed(lease);
                Ok(())
            }
            Err(LeaseWriteError::Conflict { .. }) => {
                self.lose(LostReason::TakenOver);
                Err(CheckpointError::LeaseLost { shard: self.lease.key.clone() })
            }
            Err(LeaseWriteError::Store(source)) => {
                Err(CheckpointError::Store { shard: self.lease.key.clone(), source })
            }
        }
    }

    async fn release(&mut self) {
        if *self.holding.borrow() != Holding::Held || self.expired_locally() {
            return;
        }
        match self.store.release(&self.lease).await {
            Ok(_) => debug!(shard = %self.lease.key, "lease released"),
            Err(error) => {
                // Not fatal: the lease expires for other workers after the lease duration.
                warn!(shard = %self.lease.key, error = %error, "lease release failed; it will expire");
            }
        }
        self.holding.send_replace(Holding::Released);
    }
}

#[cfg(test)]
mod tests {
    use kinesis_common::SequenceNumber;

    use super::*;
    use crate::lease::{Fault, InMemoryLeaseStore, Operation, WorkerId};

    fn config() -> KeeperConfig {
        KeeperConfig {
            lease_duration: Duration::from_secs(9),
            renew_interval: Duration::from_secs(3),
            checkpoint_attempts: 3,
        }
    }

    /// A lease of shard 0 created and taken by `me`.
    async fn held(store: &InMemoryLeaseStore) -> Lease {
        let lease =
            Lease::new(ShardId::new("shardId-0").unwrap(), ExtendedSequenceNumber::TrimHorizon);
        store.create_if_absent(&lease).await.unwrap();
        store.take(&lease, &WorkerId::new("me")).await.unwrap()
    }

    fn position(sequence: &str, sub: u64) -> ExtendedSequenceNumber {
        ExtendedSequenceNumber::new(SequenceNumber::new(sequence).unwrap(), sub)
    }

    #[tokio::test(start_paused = true)]
    async fn renews_every_interval_on_its_own() {
        let store = Arc::new(InMemoryLeaseStore::with_table());
        let lease = held(&store).await;
        let (keeper, _task) = spawn(store.clone(), lease.clone(), config());
        tokio::time::sleep(Duration::from_millis(9_500)).await;
        let stored = store.get(&lease.key).await.unwrap().unwrap();
        assert_eq!(stored.counter, lease.counter + 3, "three renewals in 9.5 s");
        assert_eq!(keeper.holding(), Holding::Held);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_taken_by_another_worker_is_lost_at_the_next_renewal_and_never_written() {
        let store = Arc::new(InMemoryLeaseStore::with_table());
        let lease = held(&store).await;
        let (keeper, _task) = spawn(store.clone(), lease.clone(), config());
        store.take(&lease, &WorkerId::new("thief")).await.unwrap();
        assert_eq!(keeper.lost().await, Holding::Lost(LostReason::TakenOver));
        let error = keeper.checkpoint(position("5", 0)).await.unwrap_err();
        assert!(error.is_lease_lost(), "{error}");
        let stored = store.get(&lease.key).await.unwrap().unwrap();
        assert_eq!(stored.owner, Some(WorkerId::new("thief")));
        assert_eq!(stored.checkpoint, ExtendedSequenceNumber::TrimHorizon);
    }

    #[tokio::test(start_paused = true)]
    async fn confirm_proves_the_lease_held_or_finds_it_taken_before_the_next_renewal() {
        let store = Arc::new(InMemoryLeaseStore::with_table());
        let lease = held(&store).await;
        let (keeper, _task) = spawn(store.clone(), lease.clone(), config());
        keeper.confirm().await.unwrap();
        let stored = store.get(&lease.key).await.unwrap().unwrap();
        assert_eq!(stored.counter, lease.counter + 1, "a renewal was written");
        // Taken by another worker between renewals: the next confirm finds out at once.
        store.take(&stored, &WorkerId::new("thief")).await.unwrap();
        let error = keeper.confirm().await.unwrap_err();
        assert!(error.is_lease_lost(), "{error}");
        assert_eq!(keeper.holding(), Holding::Lost(LostReason::TakenOver));
        // A table failure is not a loss.
        let store = Arc::new(InMemoryLeaseStore::with_table());
        let lease = held(&store).await;
        let (keeper, _task) = spawn(store.clone(), lease, config());
        store.inject(Operation::UpdateItem, Fault::Transient);
        let error = keeper.confirm().await.unwrap_err();
        assert!(matches!(error, CheckpointError::Store { .. }), "{error}");
        assert_eq!(keeper.holding(), Holding::Held);
        keeper.confirm().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_failing_for_a_lease_duration_lose_the_lease() {
        let store = Arc::new(InMemoryLeaseStore::with_table());
        let lease = held(&store).await;
        for _ in 0..100 {
            store.inject(Operation::UpdateItem, Fault::Transient);
        }
        let (keeper, _task) = spawn(store.clone(), lease.clone(), config());
        let started = Instant::now();
        assert_eq!(keeper.lost().await, Holding::Lost(LostReason::NotRenewed));
        let after = started.elapsed();
        assert!(after >= Duration::from_secs(9) && after < Duration::from_secs(10), "{after:?}");
        // Retried more often than once per interval while failing.
        assert!(store.calls(Operation::UpdateItem) > 5, "{}", store.calls(Operation::UpdateItem));
    }

    #[tokio::test(start_paused = true)]
    async fn a_checkpoint_survives_one_table_failure_and_counts_as_a_renewal() {
        let store = Arc::new(InMemoryLeaseStore::with_table());
        let lease = held(&store).await;
        let (keeper, _task) = spawn(store.clone(), lease.clone(), config());
        store.inject(Operation::UpdateItem, Fault::Transient);
        let written = keeper.checkpoint(position("42", 3)).await.unwrap();
        assert_eq!(written.checkpoint, position("42", 3));
        let stored = store.get(&lease.key).await.unwrap().unwrap();
        assert_eq!(stored, written);
        assert_eq!(keeper.holding(), Holding::Held);
    }

    #[tokio::test(start_paused = true)]
    async fn release_leaves_the_lease_unowned_and_stops_renewing() {
        let store = Arc::new(InMemoryLeaseStore::with_table());
        let lease = held(&store).await;
        let (keeper, task) = spawn(store.clone(), lease.clone(), config());
        keeper.release().await;
        task.await.unwrap();
        let stored = store.get(&lease.key).await.unwrap().unwrap();
        assert_eq!(stored.owner, None);
        assert_eq!(keeper.holding(), Holding::Released);
        let writes = store.calls(Operation::UpdateItem);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(store.calls(Operation::UpdateItem), writes, "no renewal after release");
    }
}
