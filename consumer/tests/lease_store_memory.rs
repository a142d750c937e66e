//! The in-memory store's fault injection, and the recovery from spurious conflicts that both
//! stores share: a write whose answer was lost but which DynamoDB applied is reported as done.

use kinesis_common::{ExtendedSequenceNumber, SequenceNumber, ShardId};
use kinesis_consumer::lease::{
    CreateOutcome, Fault, InMemoryLeaseStore, Lease, LeaseStore, LeaseStoreError, LeaseWriteError,
    Operation, WorkerId,
};

fn shard(n: u32) -> ShardId {
    ShardId::new(format!("shardId-{n:012}")).unwrap()
}

async fn held(store: &InMemoryLeaseStore, owner: &str) -> Lease {
    let lease = Lease::new(shard(1), ExtendedSequenceNumber::TrimHorizon);
    store.create_if_absent(&lease).await.unwrap();
    store.take(&lease, &WorkerId::new(owner)).await.unwrap()
}

#[tokio::test]
async fn renew_whose_answer_was_lost_after_it_applied_is_recovered() {
    let store = InMemoryLeaseStore::with_table();
    let lease = held(&store, "a").await;
    store.inject(Operation::UpdateItem, Fault::AppliedThenConditionFailed);
    let renewed = store.renew(&lease).await.expect("spurious conflict recovered");
    assert_eq!(renewed.counter, lease.counter + 1);
    assert_eq!(store.get(&lease.key).await.unwrap(), Some(renewed));
    assert_eq!(store.calls(Operation::GetItem), 2, "one re-read after the failed condition");
}

#[tokio::test]
async fn take_release_and_checkpoint_recover_from_spurious_conflicts() {
    let store = InMemoryLeaseStore::with_table();
    let lease = held(&store, "a").await;
    store.inject(Operation::UpdateItem, Fault::AppliedThenConditionFailed);
    let taken = store.take(&lease, &WorkerId::new("b")).await.expect("take recovered");
    assert_eq!(taken.owner, Some(WorkerId::new("b")));
    let position = ExtendedSequenceNumber::new(SequenceNumber::new("123456789").unwrap(), 4);
    store.inject(Operation::UpdateItem, Fault::AppliedThenConditionFailed);
    let done = store.checkpoint(&taken, &position).await.expect("checkpoint recovered");
    assert_eq!(done.checkpoint, position);
    store.inject(Operation::UpdateItem, Fault::AppliedThenConditionFailed);
    let released = store.release(&done).await.expect("release recovered");
    assert_eq!(released.owner, None);
    store.inject(Operation::DeleteItem, Fault::AppliedThenConditionFailed);
    store.delete(&released).await.expect("delete recovered: the lease is gone");
}

#[tokio::test]
async fn real_conflict_is_not_mistaken_for_a_spurious_one() {
    let store = InMemoryLeaseStore::with_table();
    let lease = held(&store, "a").await;
    // Another worker steals the lease: same counter our renewal would have produced, but
    // another owner.
    let stolen = store.take(&lease, &WorkerId::new("b")).await.unwrap();
    assert_eq!(stolen.counter, lease.counter + 1);
    match store.renew(&lease).await {
        Err(LeaseWriteError::Conflict { expected_counter, expected_owner, current, .. }) => {
            assert_eq!(expected_counter, lease.counter);
            assert_eq!(expected_owner, Some(WorkerId::new("a")));
            assert_eq!(current.map(|c| *c), Some(stolen));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // A checkpoint that would have produced the same counter and owner but another position
    // is not recovered either.
    let lease = store.get(&shard(1)).await.unwrap().unwrap();
    let first = ExtendedSequenceNumber::new(SequenceNumber::new("10").unwrap(), 0);
    let second = ExtendedSequenceNumber::new(SequenceNumber::new("20").unwrap(), 0);
    store.checkpoint(&lease, &first).await.unwrap();
    let result = store.checkpoint(&lease, &second).await;
    assert!(matches!(result, Err(LeaseWriteError::Conflict { .. })), "{result:?}");
}

#[tokio::test]
async fn transient_failure_after_apply_is_recovered_by_retrying_the_same_write() {
    let store = InMemoryLeaseStore::with_table();
    let lease = held(&store, "a").await;
    store.inject(Operation::UpdateItem, Fault::AppliedThenTransient);
    let err = store.renew(&lease).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    // The caller retries with the lease it had: the re-read shows the write was applied.
    let renewed = store.renew(&lease).await.expect("retry recognises the applied write");
    assert_eq!(renewed.counter, lease.counter + 1);
}

#[tokio::test]
async fn throttling_and_transient_faults_write_nothing_and_are_retryable() {
    let store = InMemoryLeaseStore::with_table();
    let lease = held(&store, "a").await;
    store.inject(Operation::UpdateItem, Fault::Throttled);
    store.inject(Operation::UpdateItem, Fault::Transient);
    for expected in ["throttled", "transiently"] {
        match store.renew(&lease).await {
            Err(LeaseWriteError::Store(e)) => {
                assert!(e.is_retryable());
                assert!(e.to_string().contains(expected), "{e}");
            }
            other => panic!("expected a store error, got {other:?}"),
        }
    }
    assert_eq!(store.get(&lease.key).await.unwrap(), Some(lease.clone()), "nothing written");
    store.inject(Operation::Scan, Fault::Throttled);
    assert!(matches!(store.list().await, Err(LeaseStoreError::Throttled { .. })));
    assert_eq!(store.calls(Operation::UpdateItem), 3);
}

#[tokio::test]
async fn create_whose_answer_was_lost_reports_already_exists() {
    let store = InMemoryLeaseStore::with_table();
    let lease = Lease::new(shard(1), ExtendedSequenceNumber::Latest);
    store.inject(Operation::PutItem, Fault::AppliedThenConditionFailed);
    assert_eq!(store.create_if_absent(&lease).await.unwrap(), CreateOutcome::AlreadyExists);
    assert_eq!(store.get(&lease.key).await.unwrap(), Some(lease));
}

#[tokio::test]
async fn errors_read_as_short_phrases_that_name_the_problem() {
    let store = InMemoryLeaseStore::with_table();
    let lease = held(&store, "a").await;
    let stolen = store.take(&lease, &WorkerId::new("b")).await.unwrap();
    store.renew(&stolen).await.unwrap();
    let err = store.renew(&lease).await.unwrap_err();
    assert!(err.is_conflict() && !err.is_retryable());
    assert_eq!(err.to_string(), "lease shardId-000000000001 changed since counter 1");
}
