//! The lease table: one lease per shard, stored in DynamoDB with the KCL 2.x schema, and the
//! [`LeaseStore`] seam through which the rest of the consumer reads and writes it.
//!
//! This module owns the lease record ([`Lease`]), the store trait, its errors, the
//! `aws-sdk-dynamodb` adapter ([`DynamoLeaseStore`], the only DynamoDB code of the crate) and,
//! behind the `test-util` feature, an in-memory store with fault injection and the contract
//! suite that both stores pass.
//!
//! Invariants:
//! - Every write is conditional on the lease counter the caller last saw (and on the owner
//!   where it matters) and sets the counter to one more; a failed condition is the value
//!   [`LeaseWriteError::Conflict`], never a generic failure.
//! - A write whose condition failed only because an earlier attempt of the same write already
//!   succeeded (DynamoDB answered 5xx after applying it and the SDK retried, the KCL's
//!   "spurious renewal failure") is recognised by re-reading the item and reported as the
//!   success it was. The logic lives once, in `table.rs`, and runs for both stores.
//! - Items are updated attribute by attribute, never replaced, so attributes written by other
//!   KCL versions (e.g. KCL 3.x `throughputKBps`, `checkpointOwner`) survive our writes.
//! - Every write returns the lease as stored afterwards, so callers carry the new counter.

mod dynamo;
mod error;
pub mod item;
mod table;

#[cfg(any(test, feature = "test-util"))]
pub mod contract;
#[cfg(any(test, feature = "test-util"))]
mod memory;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use kinesis_common::{ExtendedSequenceNumber, HashKeyRange, ShardId};

pub use dynamo::{DEFAULT_TABLE_ACTIVE_TIMEOUT, DynamoLeaseStore};
pub use error::{BoxError, InvalidItem, LeaseStoreError, LeaseWriteError};
#[cfg(any(test, feature = "test-util"))]
pub use memory::{Fault, InMemoryLeaseStore, Operation};

/// The id of a worker, as stored in `leaseOwner`.
///
/// Any text: KCL workers use host names, UUIDs or both. Cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(Arc<str>);

impl WorkerId {
    /// A worker id with the given text.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into().into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl From<&str> for WorkerId {
    fn from(id: &str) -> Self {
        Self::new(id)
    }
}

/// One lease: who processes a shard, and how far they got.
///
/// A plain record of the item's attributes (see [`item`] for the names and types). Build one
/// with [`Lease::new`] and set the public fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The shard (`leaseKey`).
    pub key: ShardId,
    /// The worker holding the lease (`leaseOwner`); `None` when unassigned.
    pub owner: Option<WorkerId>,
    /// The optimistic-lock token (`leaseCounter`), bumped by every write.
    pub counter: u64,
    /// How far processing got (`checkpoint`, `checkpointSubSequenceNumber`).
    pub checkpoint: ExtendedSequenceNumber,
    /// A prepared checkpoint written by a KCL worker (`pendingCheckpoint*`). Read and kept,
    /// never written by this crate; a checkpoint removes it, as the KCL's does.
    pub pending_checkpoint: Option<ExtendedSequenceNumber>,
    /// Owner changes since the last checkpoint (`ownerSwitchesSinceCheckpoint`).
    pub owner_switches_since_checkpoint: u64,
    /// The shard's parents (`parentShardId`): one after a split, two after a merge.
    pub parent_shard_ids: Vec<ShardId>,
    /// The shard's children (`childShardIds`), written when the shard ends.
    pub child_shard_ids: Vec<ShardId>,
    /// The shard's hash key range (`startingHashKey`, `endingHashKey`), when known.
    pub hash_range: Option<HashKeyRange>,
}

impl Lease {
    /// An unowned lease with counter 0, starting at `checkpoint`, without parents, children
    /// or hash range.
    pub fn new(key: ShardId, checkpoint: ExtendedSequenceNumber) -> Self {
        Self {
            key,
            owner: None,
            counter: 0,
            checkpoint,
            pending_checkpoint: None,
            owner_switches_since_checkpoint: 0,
            parent_shard_ids: Vec::new(),
            child_shard_ids: Vec::new(),
            hash_range: None,
        }
    }

    /// Whether `worker` holds this lease.
    pub fn is_owned_by(&self, worker: &WorkerId) -> bool {
        self.owner.as_ref() == Some(worker)
    }
}

/// What a create call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// It did not exist and was created.
    Created,
    /// It existed already; nothing was written.
    AlreadyExists,
}

/// The result of [`LeaseStore::list`]: the leases, and the items that could not be read.
///
/// One bad item does not hide the others: a consumer keeps working on the shards whose leases
/// it can read, and reports the bad ones (each names the item and attribute to fix). A bad
/// item is never overwritten: creating its lease fails as "already exists", and no write
/// can name it without a counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseScan {
    /// The leases, ordered by key.
    pub leases: Vec<Lease>,
    /// Items that are not valid leases, ordered by key.
    pub invalid: Vec<InvalidItem>,
}

/// The lease table.
///
/// Every write is conditional on the counter of the lease passed in (the caller's last view)
/// and, where noted, on its owner; a failed condition is [`LeaseWriteError::Conflict`] and
/// nothing was written. Every write sets the counter to `lease.counter + 1` and returns the
/// lease as stored afterwards.
///
/// A write whose condition fails is checked against a fresh read: when the stored lease is
/// exactly what the write would have produced, the write is reported as done. That recovers
/// writes DynamoDB applied but answered with a 5xx (the SDK's retry then fails the
/// condition), and makes every write idempotent for the lease passed in: repeating a write
/// that succeeded returns the same lease again.
#[async_trait]
pub trait LeaseStore: Send + Sync + fmt::Debug {
    /// Creates the lease table (on-demand billing, hash key `leaseKey` S) unless it exists,
    /// and waits until it is `ACTIVE`. A table that exists with another key schema is
    /// [`LeaseStoreError::WrongSchema`].
    async fn create_table_if_missing(&self) -> Result<CreateOutcome, LeaseStoreError>;

    /// Every lease, read with strong consistency, and the items that are not valid leases.
    async fn list(&self) -> Result<LeaseScan, LeaseStoreError>;

    /// The lease of `key`, read with strong consistency; `None` when there is none.
    async fn get(&self, key: &ShardId) -> Result<Option<Lease>, LeaseStoreError>;

    /// Writes `lease` as is, unless a lease with its key exists.
    async fn create_if_absent(&self, lease: &Lease) -> Result<CreateOutcome, LeaseStoreError>;

    /// Renews a held lease: counter + 1, conditional on counter and owner.
    async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseWriteError>;

    /// Takes a lease for `new_owner` (expired, unowned, or stolen): sets the owner, counter + 1
    /// and, if the owner changes, `ownerSwitchesSinceCheckpoint` + 1; conditional on counter.
    async fn take(&self, lease: &Lease, new_owner: &WorkerId) -> Result<Lease, LeaseWriteError>;

    /// Gives a held lease up so another worker can take it at once: removes the owner,
    /// counter + 1; conditional on counter and owner.
    async fn release(&self, lease: &Lease) -> Result<Lease, LeaseWriteError>;

    /// Records a checkpoint of a held lease: sets the position, counter + 1, resets
    /// `ownerSwitchesSinceCheckpoint` and removes any pending checkpoint; conditional on
    /// counter and owner.
    async fn checkpoint(
        &self,
        lease: &Lease,
        position: &ExtendedSequenceNumber,
    ) -> Result<Lease, LeaseWriteError>;

    /// Records the children of a held lease's shard at shard end (an empty list removes
    /// them), counter + 1; conditional on counter and owner.
    async fn update_children(
        &self,
        lease: &Lease,
        children: &[ShardId],
    ) -> Result<Lease, LeaseWriteError>;

    /// Deletes a lease, conditional on counter, and on owner (or on being unowned).
    /// Deleting a lease that is already gone succeeds.
    async fn delete(&self, lease: &Lease) -> Result<(), LeaseWriteError>;
}
