//! The lease-store contract suite: what the consumer relies on from the lease table, written
//! against [`LeaseStore`] alone, so that the same checks run against the in-memory store (in
//! `consumer/tests/lease_contract.rs`) and against DynamoDB Local or LocalStack through
//! [`DynamoLeaseStore`](super::DynamoLeaseStore) (in `tests/tests/lease_store_dynamodb.rs`).
//! A fake that passes them cannot drift from DynamoDB on these points.
//!
//! Every check takes a store whose table does not exist yet (a fresh name), creates it, and
//! panics with a message naming the violated behaviour, as a test assertion does. Checks that
//! need to plant or inspect items as another program would (a KCL worker, an operator) also
//! take a [`RawTable`] for the same table.
//!
//! [`list_reads_every_page`] needs a store configured with a scan page size below 30 items.

use kinesis_common::{ExtendedSequenceNumber, HashKey, HashKeyRange, SequenceNumber, ShardId};

use super::item::{self, RawItem, RawValue};
use super::{CreateOutcome, Lease, LeaseStore, LeaseStoreError, LeaseWriteError, WorkerId};

/// The attribute macro for implementing [`RawTable`], re-exported so that test crates need
/// no `async-trait` dependency of their own.
pub use async_trait::async_trait;

/// Direct access to the items of the table behind a store, bypassing the lease logic. Test
/// helpers: they panic on failure.
#[async_trait]
pub trait RawTable: Send + Sync {
    /// Writes `item` as is, replacing any item with its key (an unconditional PutItem).
    async fn put_raw(&self, item: RawItem);
    /// Reads the item with this `leaseKey` as is.
    async fn get_raw(&self, key: &str) -> Option<RawItem>;
    /// Creates the store's table with a key schema that is not a lease table's: a HASH key
    /// `id` of type N.
    async fn create_table_with_wrong_key(&self);
}

fn shard(n: u32) -> ShardId {
    ShardId::new(format!("shardId-{n:012}")).expect("valid shard id")
}

fn seq(digits: &str) -> SequenceNumber {
    SequenceNumber::new(digits).expect("valid sequence number")
}

/// A realistic 56-digit sequence number, varied by `n`.
fn sequence(n: u32) -> SequenceNumber {
    seq(&format!("4959033827149025660855969253836157109592157598913658{n:04}"))
}

async fn setup(store: &dyn LeaseStore) {
    store.create_table_if_missing().await.expect("create_table_if_missing on a fresh table");
}

/// Creates an unowned lease for `key` at TRIM_HORIZON and takes it for `owner`.
async fn held(store: &dyn LeaseStore, key: ShardId, owner: &WorkerId) -> Lease {
    let lease = Lease::new(key, ExtendedSequenceNumber::TrimHorizon);
    assert_eq!(store.create_if_absent(&lease).await.expect("create"), CreateOutcome::Created);
    store.take(&lease, owner).await.expect("take of a fresh lease")
}

fn assert_conflict(result: Result<Lease, LeaseWriteError>, what: &str) -> Option<Lease> {
    match result {
        Err(LeaseWriteError::Conflict { current, .. }) => current.map(|c| *c),
        other => panic!("{what}: expected a Conflict, got {other:?}"),
    }
}

/// Creating the table twice is fine: the second call finds it.
pub async fn create_table_is_idempotent(store: &dyn LeaseStore) {
    let first = store.create_table_if_missing().await.expect("first create");
    assert_eq!(first, CreateOutcome::Created, "a fresh table name must be created");
    let second = store.create_table_if_missing().await.expect("second create");
    assert_eq!(second, CreateOutcome::AlreadyExists, "the second call must find the table");
    assert!(store.list().await.expect("list").leases.is_empty(), "a new table is empty");
}

/// Calls on a table that does not exist fail as `TableNotFound`, not as a conflict.
pub async fn missing_table_is_table_not_found(store: &dyn LeaseStore) {
    match store.list().await {
        Err(LeaseStoreError::TableNotFound { .. }) => {}
        other => panic!("list on a missing table: expected TableNotFound, got {other:?}"),
    }
    match store.get(&shard(0)).await {
        Err(LeaseStoreError::TableNotFound { .. }) => {}
        other => panic!("get on a missing table: expected TableNotFound, got {other:?}"),
    }
}

/// `create_if_absent` writes a lease once and never overwrites it.
pub async fn create_if_absent_creates_once(store: &dyn LeaseStore) {
    setup(store).await;
    let mut lease = Lease::new(shard(1), ExtendedSequenceNumber::Latest);
    lease.hash_range = Some(HashKeyRange::new(HashKey(0), HashKey(u128::MAX / 2)).unwrap());
    assert_eq!(store.create_if_absent(&lease).await.unwrap(), CreateOutcome::Created);
    let mut other = lease.clone();
    other.checkpoint = ExtendedSequenceNumber::TrimHorizon;
    assert_eq!(
        store.create_if_absent(&other).await.unwrap(),
        CreateOutcome::AlreadyExists,
        "a second create must find the lease"
    );
    let stored = store.get(&lease.key).await.unwrap().expect("created lease is readable");
    assert_eq!(stored, lease, "the first lease is stored as written and not overwritten");
    assert_eq!(store.get(&shard(2)).await.unwrap(), None, "an absent lease reads as None");
}

/// Renewing a held lease bumps the counter by one and changes nothing else.
pub async fn renew_bumps_counter(store: &dyn LeaseStore) {
    setup(store).await;
    let worker = WorkerId::new("worker-a");
    let lease = held(store, shard(1), &worker).await;
    let renewed = store.renew(&lease).await.expect("renew of a held lease");
    let mut expected = lease.clone();
    expected.counter += 1;
    assert_eq!(renewed, expected, "renew changes only the counter");
    assert_eq!(store.get(&lease.key).await.unwrap(), Some(renewed.clone()));
    let again = store.renew(&renewed).await.expect("renew with the new counter");
    assert_eq!(again.counter, lease.counter + 2);
}

/// A renewal with a counter that is no longer current is a conflict and writes nothing.
pub async fn renew_with_stale_counter_conflicts(store: &dyn LeaseStore) {
    setup(store).await;
    let worker = WorkerId::new("worker-a");
    let lease = held(store, shard(1), &worker).await;
    let renewed = store.renew(&lease).await.unwrap();
    let renewed = store.renew(&renewed).await.unwrap();
    let current = assert_conflict(store.renew(&lease).await, "renew with a stale counter");
    assert_eq!(current, Some(renewed.clone()), "the conflict carries the current lease");
    assert_eq!(store.get(&lease.key).await.unwrap(), Some(renewed), "nothing was written");
}

/// Repeating a write that succeeded, with the same lease, reports the same success and writes
/// nothing more: the store cannot tell it from a retry whose first answer was lost (see
/// [`LeaseStore`]'s docs), so writes are idempotent per caller view.
pub async fn repeated_write_is_idempotent(store: &dyn LeaseStore) {
    setup(store).await;
    let worker = WorkerId::new("worker-a");
    let lease = held(store, shard(1), &worker).await;
    let renewed = store.renew(&lease).await.unwrap();
    assert_eq!(store.renew(&lease).await.expect("repeated renew"), renewed);
    let position = ExtendedSequenceNumber::new(sequence(3), 1);
    let done = store.checkpoint(&renewed, &position).await.unwrap();
    assert_eq!(store.checkpoint(&renewed, &position).await.expect("repeated checkpoint"), done);
    let released = store.release(&done).await.unwrap();
    assert_eq!(store.release(&done).await.expect("repeated release"), released);
    assert_eq!(store.get(&lease.key).await.unwrap(), Some(released));
}

/// A renewal by a worker that does not own the lease is a conflict, even with the right
/// counter.
pub async fn renew_by_another_owner_conflicts(store: &dyn LeaseStore) {
    setup(store).await;
    let lease = held(store, shard(1), &WorkerId::new("worker-a")).await;
    let mut impostor = lease.clone();
    impostor.owner = Some(WorkerId::new("worker-b"));
    assert_conflict(store.renew(&impostor).await, "renew by a worker that does not own it");
    let mut unowned = lease.clone();
    unowned.owner = None;
    assert_conflict(store.renew(&unowned).await, "renew that believes the lease unowned");
    assert_eq!(store.get(&lease.key).await.unwrap(), Some(lease), "nothing was written");
}

/// A write to a lease that does not exist is a conflict whose current lease is `None`.
pub async fn write_to_missing_lease_conflicts(store: &dyn LeaseStore) {
    setup(store).await;
    let mut ghost = Lease::new(shard(9), ExtendedSequenceNumber::TrimHorizon);
    ghost.owner = Some(WorkerId::new("worker-a"));
    let current = assert_conflict(store.renew(&ghost).await, "renew of a missing lease");
    assert_eq!(current, None);
    assert_eq!(store.get(&ghost.key).await.unwrap(), None, "no item was created");
}

/// Taking sets the owner, bumps the counter and counts an owner switch; re-taking one's own
/// lease is not a switch. A take with a stale counter is a conflict.
pub async fn take_changes_owner_and_counts_switches(store: &dyn LeaseStore) {
    setup(store).await;
    let a = WorkerId::new("worker-a");
    let b = WorkerId::new("worker-b");
    let lease = Lease::new(shard(1), ExtendedSequenceNumber::TrimHorizon);
    store.create_if_absent(&lease).await.unwrap();
    let by_a = store.take(&lease, &a).await.expect("take an unowned lease");
    assert_eq!(by_a.owner, Some(a.clone()));
    assert_eq!(by_a.counter, lease.counter + 1);
    assert_eq!(by_a.owner_switches_since_checkpoint, 1, "unowned -> a is a switch");
    let by_b = store.take(&by_a, &b).await.expect("steal from a");
    assert_eq!(by_b.owner, Some(b.clone()));
    assert_eq!(by_b.counter, lease.counter + 2);
    assert_eq!(by_b.owner_switches_since_checkpoint, 2);
    let again = store.take(&by_b, &b).await.expect("re-take own lease");
    assert_eq!(again.owner_switches_since_checkpoint, 2, "re-taking one's own lease is no switch");
    assert_conflict(store.take(&by_a, &a).await, "take with a stale counter");
    assert_eq!(store.get(&lease.key).await.unwrap(), Some(again));
}

/// Releasing removes the owner and bumps the counter, so another worker can take the lease
/// at once; the old owner can no longer renew or release it.
pub async fn release_clears_owner(store: &dyn LeaseStore) {
    setup(store).await;
    let a = WorkerId::new("worker-a");
    let lease = held(store, shard(1), &a).await;
    let released = store.release(&lease).await.expect("release a held lease");
    assert_eq!(released.owner, None);
    assert_eq!(released.counter, lease.counter + 1);
    assert_eq!(store.get(&lease.key).await.unwrap(), Some(released.clone()));
    assert_conflict(store.renew(&lease).await, "renew after release");
    assert_conflict(
        store.checkpoint(&lease, &ExtendedSequenceNumber::ShardEnd).await,
        "checkpoint after release",
    );
    let b = WorkerId::new("worker-b");
    let taken = store.take(&released, &b).await.expect("another worker takes it at once");
    assert_eq!(taken.owner, Some(b));
}

/// A checkpoint stores (sequence, sub-sequence) or a sentinel, bumps the counter and resets
/// the owner switches.
pub async fn checkpoint_stores_position(store: &dyn LeaseStore) {
    setup(store).await;
    let a = WorkerId::new("worker-a");
    let b = WorkerId::new("worker-b");
    let lease = held(store, shard(1), &a).await;
    let lease = store.take(&lease, &b).await.unwrap();
    assert_eq!(lease.owner_switches_since_checkpoint, 2);
    let position = ExtendedSequenceNumber::new(sequence(7), 3);
    let done = store.checkpoint(&lease, &position).await.expect("checkpoint a held lease");
    assert_eq!(done.checkpoint, position);
    assert_eq!(done.counter, lease.counter + 1);
    assert_eq!(done.owner_switches_since_checkpoint, 0, "a checkpoint resets owner switches");
    assert_eq!(store.get(&lease.key).await.unwrap(), Some(done.clone()));
    let mut current = done;
    // A 129-digit sequence number is stored as text, not as a number.
    let longest = ExtendedSequenceNumber::new(seq(&"9".repeat(129)), 0);
    for position in [
        longest,
        ExtendedSequenceNumber::TrimHorizon,
        ExtendedSequenceNumber::Latest,
        ExtendedSequenceNumber::AtTimestamp,
        ExtendedSequenceNumber::ShardEnd,
    ] {
        current = store.checkpoint(&current, &position).await.expect("checkpoint");
        assert_eq!(current.checkpoint, position);
        let stored = store.get(&lease.key).await.unwrap().expect("lease");
        assert_eq!(stored.checkpoint, position, "{position} round-trips");
    }
}

/// A checkpoint by a worker whose lease was taken is a conflict, and the checkpoint is not
/// written.
pub async fn checkpoint_after_take_conflicts(store: &dyn LeaseStore) {
    setup(store).await;
    let a = WorkerId::new("worker-a");
    let lease = held(store, shard(1), &a).await;
    let stolen = store.take(&lease, &WorkerId::new("worker-b")).await.unwrap();
    let position = ExtendedSequenceNumber::new(sequence(1), 0);
    let current = assert_conflict(
        store.checkpoint(&lease, &position).await,
        "checkpoint by a worker that lost the lease",
    );
    assert_eq!(current, Some(stolen.clone()));
    assert_eq!(
        store.get(&lease.key).await.unwrap(),
        Some(stolen),
        "the checkpoint was not written"
    );
}

/// Delete is conditional on counter and owner; deleting a deleted lease succeeds.
pub async fn delete_is_conditional(store: &dyn LeaseStore) {
    setup(store).await;
    let a = WorkerId::new("worker-a");
    let lease = held(store, shard(1), &a).await;
    let renewed = store.renew(&lease).await.unwrap();
    match store.delete(&lease).await {
        Err(LeaseWriteError::Conflict { .. }) => {}
        other => panic!("delete with a stale counter: expected a Conflict, got {other:?}"),
    }
    let mut wrong_owner = renewed.clone();
    wrong_owner.owner = Some(WorkerId::new("worker-b"));
    assert!(
        matches!(store.delete(&wrong_owner).await, Err(LeaseWriteError::Conflict { .. })),
        "delete by another owner must be a conflict"
    );
    assert!(store.get(&lease.key).await.unwrap().is_some(), "nothing was deleted");
    store.delete(&renewed).await.expect("delete with the current counter");
    assert_eq!(store.get(&lease.key).await.unwrap(), None);
    store.delete(&renewed).await.expect("deleting a deleted lease succeeds");
    // Unowned leases are deleted when they are unowned.
    let free = Lease::new(shard(2), ExtendedSequenceNumber::ShardEnd);
    store.create_if_absent(&free).await.unwrap();
    store.delete(&free).await.expect("delete an unowned lease");
    assert_eq!(store.get(&free.key).await.unwrap(), None);
}

/// `list` returns every lease even when the scan needs several pages. Needs a store whose
/// scan page size is below 30.
pub async fn list_reads_every_page(store: &dyn LeaseStore) {
    setup(store).await;
    for n in 0..30 {
        store
            .create_if_absent(&Lease::new(shard(n), ExtendedSequenceNumber::Latest))
            .await
            .unwrap();
    }
    let scan = store.list().await.expect("list");
    assert!(scan.invalid.is_empty(), "{:?}", scan.invalid);
    let keys: Vec<ShardId> = scan.leases.iter().map(|l| l.key.clone()).collect();
    assert_eq!(keys, (0..30).map(shard).collect::<Vec<_>>(), "every lease, ordered by key");
}

/// Two parents (a merge), children and the hash range round-trip; an empty child list removes
/// the attribute (DynamoDB rejects empty sets).
pub async fn shard_lineage_round_trips(store: &dyn LeaseStore) {
    setup(store).await;
    let mut merged = Lease::new(shard(5), ExtendedSequenceNumber::TrimHorizon);
    merged.parent_shard_ids = vec![shard(3), shard(4)];
    merged.hash_range = Some(HashKeyRange::new(HashKey(1 << 100), HashKey::MAX).unwrap());
    store.create_if_absent(&merged).await.unwrap();
    let stored = store.get(&merged.key).await.unwrap().expect("lease");
    assert_eq!(stored, merged, "two parents and the hash range round-trip");

    let a = WorkerId::new("worker-a");
    let lease = store.take(&stored, &a).await.unwrap();
    let ended = store.update_children(&lease, &[shard(6), shard(7)]).await.expect("children");
    assert_eq!(ended.child_shard_ids, vec![shard(6), shard(7)]);
    assert_eq!(store.get(&lease.key).await.unwrap(), Some(ended.clone()));
    let cleared = store.update_children(&ended, &[]).await.expect("clear children");
    assert!(cleared.child_shard_ids.is_empty());
    assert_eq!(store.get(&lease.key).await.unwrap(), Some(cleared));
}

/// Attributes this crate does not know (e.g. KCL 3.x's) survive every write.
pub async fn unknown_attributes_survive_writes(store: &dyn LeaseStore, raw: &dyn RawTable) {
    setup(store).await;
    let key = shard(1);
    let mut planted = kcl_item(&key);
    planted.insert("throughputKBps".into(), RawValue::N("12.5".into()));
    planted.insert("checkpointOwner".into(), RawValue::S("kcl-3-worker".into()));
    planted.insert("pendingCheckpointState".into(), RawValue::B(vec![1, 2, 3]));
    raw.put_raw(planted).await;
    let lease = store.get(&key).await.unwrap().expect("planted lease decodes");
    let a = WorkerId::new("worker-a");
    let lease = store.take(&lease, &a).await.unwrap();
    let lease = store.renew(&lease).await.unwrap();
    let after = raw.get_raw(key.as_str()).await.expect("item");
    assert_eq!(after.get("throughputKBps"), Some(&RawValue::N("12.5".into())));
    assert_eq!(after.get("checkpointOwner"), Some(&RawValue::S("kcl-3-worker".into())));
    store.checkpoint(&lease, &ExtendedSequenceNumber::new(sequence(2), 0)).await.unwrap();
    let after = raw.get_raw(key.as_str()).await.expect("item");
    assert_eq!(
        after.get("throughputKBps"),
        Some(&RawValue::N("12.5".into())),
        "kept by checkpoint"
    );
    assert_eq!(after.get(item::PENDING_CHECKPOINT), None, "a checkpoint drops the pending one");
    assert_eq!(after.get(item::PENDING_CHECKPOINT_STATE), None);
}

/// A lease as a KCL 2.x worker writes it (`DynamoDBLeaseSerializer`): owned, checkpointed
/// mid-aggregate, with a pending checkpoint, one parent and a hash range.
pub fn kcl_item(key: &ShardId) -> RawItem {
    let s = |v: &str| RawValue::S(v.to_owned());
    let n = |v: &str| RawValue::N(v.to_owned());
    RawItem::from([
        (item::LEASE_KEY.into(), s(key.as_str())),
        (item::LEASE_OWNER.into(), s("kcl-worker-1")),
        (item::LEASE_COUNTER.into(), n("42")),
        (item::CHECKPOINT.into(), s("49590338271490256608559692538361571095921575989136588898")),
        (item::CHECKPOINT_SUB_SEQUENCE.into(), n("7")),
        (
            item::PENDING_CHECKPOINT.into(),
            s("49590338271490256608559692538361571095921575989136589999"),
        ),
        (item::PENDING_CHECKPOINT_SUB_SEQUENCE.into(), n("0")),
        (item::OWNER_SWITCHES.into(), n("3")),
        (item::PARENT_SHARD_IDS.into(), RawValue::Ss(vec!["shardId-000000000000".into()])),
        (item::STARTING_HASH_KEY.into(), s("0")),
        (item::ENDING_HASH_KEY.into(), s("170141183460469231731687303715884105727")),
    ])
}

/// An item written by a KCL 2.x worker decodes to the lease it describes.
pub async fn kcl_written_item_decodes(store: &dyn LeaseStore, raw: &dyn RawTable) {
    setup(store).await;
    let key = shard(1);
    raw.put_raw(kcl_item(&key)).await;
    let lease = store.get(&key).await.unwrap().expect("KCL item decodes");
    assert_eq!(lease.owner, Some(WorkerId::new("kcl-worker-1")));
    assert_eq!(lease.counter, 42);
    assert_eq!(
        lease.checkpoint,
        ExtendedSequenceNumber::new(
            seq("49590338271490256608559692538361571095921575989136588898"),
            7
        )
    );
    assert_eq!(
        lease.pending_checkpoint,
        Some(ExtendedSequenceNumber::new(
            seq("49590338271490256608559692538361571095921575989136589999"),
            0
        ))
    );
    assert_eq!(lease.owner_switches_since_checkpoint, 3);
    assert_eq!(lease.parent_shard_ids, vec![shard(0)]);
    assert!(lease.child_shard_ids.is_empty());
    assert_eq!(
        lease.hash_range,
        Some(HashKeyRange::new(HashKey(0), HashKey(u128::MAX >> 1)).unwrap())
    );
    // A minimal KCL item: optional numbers and sets absent.
    let minimal = RawItem::from([
        (item::LEASE_KEY.into(), RawValue::S(shard(2).as_str().into())),
        (item::LEASE_COUNTER.into(), RawValue::N("0".into())),
        (item::CHECKPOINT.into(), RawValue::S("TRIM_HORIZON".into())),
    ]);
    raw.put_raw(minimal).await;
    let lease = store.get(&shard(2)).await.unwrap().expect("minimal item decodes");
    assert_eq!(lease, Lease::new(shard(2), ExtendedSequenceNumber::TrimHorizon));
    assert_eq!(store.list().await.unwrap().leases.len(), 2);
}

/// Items that are not valid leases give `InvalidItem` naming the item and attribute; `list`
/// reports them beside the good leases instead of failing.
pub async fn invalid_items_are_reported(store: &dyn LeaseStore, raw: &dyn RawTable) {
    setup(store).await;
    let good = Lease::new(shard(0), ExtendedSequenceNumber::Latest);
    store.create_if_absent(&good).await.unwrap();
    let cases: [(u32, &str, &str, RawValue); 5] = [
        (1, item::LEASE_COUNTER, "found a string (S)", RawValue::S("7".into())),
        (2, item::CHECKPOINT, "neither a sequence number", RawValue::S("12ab".into())),
        (
            3,
            item::PARENT_SHARD_IDS,
            "found a string (S)",
            RawValue::S("shardId-000000000000".into()),
        ),
        (4, item::CHECKPOINT_SUB_SEQUENCE, "not a non-negative integer", RawValue::N("-1".into())),
        (5, item::ENDING_HASH_KEY, "", RawValue::S("x".into())),
    ];
    for (n, attribute, _, value) in &cases {
        let mut bad = kcl_item(&shard(*n));
        bad.insert((*attribute).to_owned(), value.clone());
        raw.put_raw(bad).await;
    }
    let mut missing_counter = kcl_item(&shard(6));
    missing_counter.remove(item::LEASE_COUNTER);
    raw.put_raw(missing_counter).await;

    for (n, attribute, problem, _) in &cases {
        match store.get(&shard(*n)).await {
            Err(LeaseStoreError::InvalidItem(invalid)) => {
                assert_eq!(invalid.key, shard(*n).as_str());
                assert_eq!(invalid.attribute, *attribute);
                assert!(invalid.problem.contains(problem), "{invalid}");
            }
            other => {
                panic!("get of an item with a bad {attribute}: expected InvalidItem, got {other:?}")
            }
        }
    }
    match store.get(&shard(6)).await {
        Err(LeaseStoreError::InvalidItem(invalid)) => {
            assert_eq!(invalid.attribute, item::LEASE_COUNTER);
            assert_eq!(invalid.problem, "missing");
        }
        other => panic!("get of an item without leaseCounter: expected InvalidItem, got {other:?}"),
    }
    let scan = store.list().await.expect("list does not fail for bad items");
    assert_eq!(scan.leases, vec![good]);
    let bad: Vec<(&str, &str)> =
        scan.invalid.iter().map(|i| (i.key.as_str(), i.attribute)).collect();
    let expected: Vec<(String, &str)> = cases
        .iter()
        .map(|(n, attribute, _, _)| (shard(*n).as_str().to_owned(), *attribute))
        .chain([(shard(6).as_str().to_owned(), item::LEASE_COUNTER)])
        .collect();
    let expected: Vec<(&str, &str)> = expected.iter().map(|(k, a)| (k.as_str(), *a)).collect();
    assert_eq!(bad, expected, "every bad item is reported once, by key and attribute");
    // A bad item is never overwritten by a create.
    let replacement = Lease::new(shard(1), ExtendedSequenceNumber::TrimHorizon);
    assert_eq!(store.create_if_absent(&replacement).await.unwrap(), CreateOutcome::AlreadyExists);
}

/// A table keyed otherwise than a lease table is refused with `WrongSchema`.
pub async fn wrong_key_schema_is_rejected(store: &dyn LeaseStore, raw: &dyn RawTable) {
    raw.create_table_with_wrong_key().await;
    match store.create_table_if_missing().await {
        Err(LeaseStoreError::WrongSchema { found, .. }) => {
            assert!(found.contains("id") && found.contains("HASH"), "names what it found: {found}");
        }
        other => panic!(
            "create_table_if_missing on a wrongly keyed table: expected WrongSchema, got {other:?}"
        ),
    }
}
