//! The lease semantics, written once over a raw item table ([`Table`]) that both stores
//! implement: what each write sets and removes, what it is conditional on, what the lease
//! looks like afterwards, and the recovery from spurious conflicts.
//!
//! Why here and not in each store: the stores differ only in how an item is read and how a
//! conditional update is applied. Keeping the rest in one place means the in-memory store
//! exercises the same code that runs against DynamoDB, including the recovery path.

use async_trait::async_trait;
use kinesis_common::{ExtendedSequenceNumber, ShardId};

use super::error::{LeaseStoreError, LeaseWriteError};
use super::item::{self, RawItem, RawValue};
use super::{CreateOutcome, Lease, LeaseScan, WorkerId};

/// What a conditional write requires of the stored item. The item must exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Condition {
    /// `leaseCounter` must equal this.
    pub(crate) counter: u64,
    /// What `leaseOwner` must be.
    pub(crate) owner: OwnerCondition,
}

/// The owner part of a [`Condition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OwnerCondition {
    /// Any owner, or none.
    Any,
    /// `leaseOwner` equals this.
    Is(WorkerId),
    /// `leaseOwner` is absent.
    Absent,
}

/// Attributes a write sets and removes; all others are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Update {
    pub(crate) set: Vec<(&'static str, RawValue)>,
    pub(crate) remove: Vec<&'static str>,
}

impl Update {
    /// Applies the update to an item (the in-memory store's UpdateItem).
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn apply(&self, item: &mut RawItem) {
        for (name, value) in &self.set {
            item.insert((*name).to_owned(), value.clone());
        }
        for name in &self.remove {
            item.remove(*name);
        }
    }
}

impl Condition {
    /// Whether a stored item meets the condition (the in-memory store's ConditionExpression).
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn holds(&self, item: &RawItem) -> bool {
        let counter_ok = item.get(item::LEASE_COUNTER) == Some(&item::number(self.counter));
        let owner_ok = match &self.owner {
            OwnerCondition::Any => true,
            OwnerCondition::Is(owner) => {
                item.get(item::LEASE_OWNER) == Some(&RawValue::S(owner.as_str().to_owned()))
            }
            OwnerCondition::Absent => !item.contains_key(item::LEASE_OWNER),
        };
        counter_ok && owner_ok
    }
}

/// A failed raw write.
#[derive(Debug)]
pub(crate) enum TableError {
    /// The condition did not hold (`ConditionalCheckFailedException`).
    ConditionFailed,
    /// Anything else.
    Store(LeaseStoreError),
}

impl From<LeaseStoreError> for TableError {
    fn from(e: LeaseStoreError) -> Self {
        Self::Store(e)
    }
}

/// A raw item table: what a store must provide for [`LeaseOps`] to implement the lease
/// semantics over it.
#[async_trait]
pub(crate) trait Table: Send + Sync {
    /// Strongly consistent read of one item.
    async fn get_item(&self, key: &ShardId) -> Result<Option<RawItem>, LeaseStoreError>;
    /// Every item, strongly consistent, across all pages.
    async fn scan_items(&self) -> Result<Vec<RawItem>, LeaseStoreError>;
    /// Writes `item` unless an item with its key exists.
    async fn put_item_if_absent(&self, item: RawItem) -> Result<CreateOutcome, LeaseStoreError>;
    /// Applies `update` if `condition` holds, returning the item afterwards.
    async fn update_item(
        &self,
        key: &ShardId,
        condition: &Condition,
        update: &Update,
    ) -> Result<RawItem, TableError>;
    /// Deletes the item if `condition` holds.
    async fn delete_item(&self, key: &ShardId, condition: &Condition) -> Result<(), TableError>;
}

/// Which write, for logs.
#[derive(Debug, Clone, Copy)]
enum WriteOp {
    Renew,
    Take,
    Release,
    Checkpoint,
    UpdateChildren,
}

/// The lease semantics over any [`Table`]; both stores' [`LeaseStore`](super::LeaseStore)
/// implementations delegate here.
pub(crate) struct LeaseOps<'a, T: ?Sized>(pub(crate) &'a T);

impl<T: Table + ?Sized> LeaseOps<'_, T> {
    pub(crate) async fn list(&self) -> Result<LeaseScan, LeaseStoreError> {
        let mut scan = LeaseScan::default();
        for raw in self.0.scan_items().await? {
            if !item::is_lease_item(&raw) {
                continue;
            }
            match item::decode(&raw) {
                Ok(lease) => scan.leases.push(lease),
                Err(invalid) => {
                    tracing::warn!(%invalid, "skipping an invalid lease item");
                    scan.invalid.push(invalid);
                }
            }
        }
        scan.leases.sort_by(|a, b| a.key.cmp(&b.key));
        scan.invalid.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(scan)
    }

    pub(crate) async fn get(&self, key: &ShardId) -> Result<Option<Lease>, LeaseStoreError> {
        match self.0.get_item(key).await? {
            Some(raw) if item::is_lease_item(&raw) => Ok(Some(item::decode(&raw)?)),
            _ => Ok(None),
        }
    }

    pub(crate) async fn create_if_absent(
        &self,
        lease: &Lease,
    ) -> Result<CreateOutcome, LeaseStoreError> {
        self.0.put_item_if_absent(item::encode(lease)).await
    }

    pub(crate) async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseWriteError> {
        let mut expected = lease.clone();
        expected.counter += 1;
        let update = Update { set: vec![counter(&expected)], remove: vec![] };
        self.write(WriteOp::Renew, lease, owned_by(lease), update, expected).await
    }

    pub(crate) async fn take(
        &self,
        lease: &Lease,
        new_owner: &WorkerId,
    ) -> Result<Lease, LeaseWriteError> {
        let mut expected = lease.clone();
        expected.counter += 1;
        expected.owner = Some(new_owner.clone());
        let mut set = vec![
            counter(&expected),
            (item::LEASE_OWNER, RawValue::S(new_owner.as_str().to_owned())),
        ];
        // KCL DynamoDBLeaseRefresher.takeLease: the switch count only moves when the owner
        // actually changes (re-taking one's own expired lease is not a switch).
        if lease.owner.as_ref() != Some(new_owner) {
            expected.owner_switches_since_checkpoint += 1;
            set.push((
                item::OWNER_SWITCHES,
                item::number(expected.owner_switches_since_checkpoint),
            ));
        }
        let condition = Condition { counter: lease.counter, owner: OwnerCondition::Any };
        self.write(WriteOp::Take, lease, condition, Update { set, remove: vec![] }, expected).await
    }

    pub(crate) async fn release(&self, lease: &Lease) -> Result<Lease, LeaseWriteError> {
        let mut expected = lease.clone();
        expected.counter += 1;
        expected.owner = None;
        let update = Update { set: vec![counter(&expected)], remove: vec![item::LEASE_OWNER] };
        self.write(WriteOp::Release, lease, owned_by(lease), update, expected).await
    }

    pub(crate) async fn checkpoint(
        &self,
        lease: &Lease,
        position: &ExtendedSequenceNumber,
    ) -> Result<Lease, LeaseWriteError> {
        let mut expected = lease.clone();
        expected.counter += 1;
        expected.checkpoint = position.clone();
        expected.pending_checkpoint = None;
        expected.owner_switches_since_checkpoint = 0;
        // KCL DynamoDBLeaseSerializer.getDynamoUpdateLeaseUpdate: a checkpoint writes both
        // checkpoint attributes, resets the switch count and drops the prepared checkpoint.
        let update = Update {
            set: vec![
                counter(&expected),
                (item::CHECKPOINT, RawValue::S(position.checkpoint_str().to_owned())),
                (item::CHECKPOINT_SUB_SEQUENCE, item::number(position.sub_sequence())),
                (item::OWNER_SWITCHES, item::number(0)),
            ],
            remove: vec![
                item::PENDING_CHECKPOINT,
                item::PENDING_CHECKPOINT_SUB_SEQUENCE,
                item::PENDING_CHECKPOINT_STATE,
            ],
        };
        self.write(WriteOp::Checkpoint, lease, owned_by(lease), update, expected).await
    }

    pub(crate) async fn update_children(
        &self,
        lease: &Lease,
        children: &[ShardId],
    ) -> Result<Lease, LeaseWriteError> {
        let mut expected = lease.clone();
        expected.counter += 1;
        expected.child_shard_ids = children.to_vec();
        let mut update = Update { set: vec![counter(&expected)], remove: vec![] };
        match item::shard_set(children) {
            Some(set) => update.set.push((item::CHILD_SHARD_IDS, set)),
            None => update.remove.push(item::CHILD_SHARD_IDS),
        }
        self.write(WriteOp::UpdateChildren, lease, owned_by(lease), update, expected).await
    }

    pub(crate) async fn delete(&self, lease: &Lease) -> Result<(), LeaseWriteError> {
        let condition = match &lease.owner {
            Some(owner) => {
                Condition { counter: lease.counter, owner: OwnerCondition::Is(owner.clone()) }
            }
            None => Condition { counter: lease.counter, owner: OwnerCondition::Absent },
        };
        match self.0.delete_item(&lease.key, &condition).await {
            Ok(()) => Ok(()),
            Err(TableError::Store(e)) => Err(e.into()),
            Err(TableError::ConditionFailed) => match self.0.get_item(&lease.key).await? {
                // Gone: an earlier attempt of this delete (or another cleaner) removed it.
                None => Ok(()),
                Some(raw) => Err(conflict(lease, &condition, item::decode(&raw).ok())),
            },
        }
    }

    /// Applies a conditional update and reads the lease back from the answer. On a failed
    /// condition, re-reads the item: if it is exactly what this write would have produced,
    /// an earlier attempt of this write succeeded (DynamoDB answered 5xx after applying it,
    /// and the SDK's retry then failed the condition), and the write is reported as done.
    /// The KCL does the same for renewals (DynamoDBLeaseRenewer, "spurious renewal failure").
    async fn write(
        &self,
        op: WriteOp,
        lease: &Lease,
        condition: Condition,
        update: Update,
        expected: Lease,
    ) -> Result<Lease, LeaseWriteError> {
        match self.0.update_item(&lease.key, &condition, &update).await {
            Ok(raw) => Ok(item::decode(&raw).map_err(LeaseStoreError::from)?),
            Err(TableError::Store(e)) => Err(e.into()),
            Err(TableError::ConditionFailed) => {
                let current = match self.0.get_item(&lease.key).await? {
                    Some(raw) => Some(item::decode(&raw).map_err(LeaseStoreError::from)?),
                    None => None,
                };
                match current {
                    Some(current) if same_state(&current, &expected) => {
                        tracing::debug!(
                            lease = %lease.key,
                            ?op,
                            counter = current.counter,
                            "spurious conflict: an earlier attempt of this write succeeded; recovered"
                        );
                        Ok(current)
                    }
                    current => Err(conflict(lease, &condition, current)),
                }
            }
        }
    }
}

/// Whether the stored lease is the one a write would have produced. Compared in item form, so
/// that set order and duplicates do not matter.
fn same_state(current: &Lease, expected: &Lease) -> bool {
    item::encode(current) == item::encode(expected)
}

fn counter(expected: &Lease) -> (&'static str, RawValue) {
    (item::LEASE_COUNTER, item::number(expected.counter))
}

/// Conditional on the counter and on the owner the caller saw (absent if none).
fn owned_by(lease: &Lease) -> Condition {
    Condition {
        counter: lease.counter,
        owner: match &lease.owner {
            Some(owner) => OwnerCondition::Is(owner.clone()),
            None => OwnerCondition::Absent,
        },
    }
}

fn conflict(lease: &Lease, condition: &Condition, current: Option<Lease>) -> LeaseWriteError {
    LeaseWriteError::Conflict {
        key: lease.key.clone(),
        expected_counter: condition.counter,
        expected_owner: match &condition.owner {
            OwnerCondition::Is(owner) => Some(owner.clone()),
            _ => None,
        },
        current: current.map(Box::new),
    }
}
