//! FakeKinesis's injectable faults (throttled and failed entries, failed and delayed calls,
//! per-shard write quotas) and its call counters. No emulator throttles, so these are fake-only.

#![cfg(feature = "test-util")]

use std::time::Duration;

use bytes::Bytes;
use kinesis_common::fake::{FakeKinesis, Operation, ShardWriteLimit};
use kinesis_common::{
    ApiError, ApiErrorKind, KinesisApi, PartitionKey, PutRecordsEntry, PutRecordsOutcome,
    ShardIteratorPosition, StreamName,
};
use tokio::time::Instant;

fn stream() -> StreamName {
    StreamName::new("faults").unwrap()
}

fn entries(n: usize, data_len: usize) -> Vec<PutRecordsEntry> {
    (0..n)
        .map(|i| PutRecordsEntry {
            partition_key: PartitionKey::new(format!("key-{i}")).unwrap(),
            explicit_hash_key: None,
            data: Bytes::from(vec![1u8; data_len]),
        })
        .collect()
}

fn failed(outcomes: &[PutRecordsOutcome]) -> Vec<usize> {
    outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o, PutRecordsOutcome::Failed(_)))
        .map(|(i, _)| i)
        .collect()
}

fn setup(shards: u32) -> (FakeKinesis, StreamName) {
    let fake = FakeKinesis::new();
    fake.create_active_stream(&stream(), shards).unwrap();
    (fake, stream())
}

#[tokio::test(start_paused = true)]
async fn throttled_entries_fail_alone_with_the_aws_error_naming_their_shard() {
    let (fake, s) = setup(2);
    fake.faults().throttle_next_entries(3);
    let first = fake.put_records(&s, entries(2, 1)).await.unwrap();
    let second = fake.put_records(&s, entries(3, 1)).await.unwrap();
    assert_eq!(failed(&first), [0, 1]);
    assert_eq!(failed(&second), [0], "the count carries across requests, then stops");
    let PutRecordsOutcome::Failed(error) = &first[0] else { unreachable!() };
    assert_eq!(error.kind(), ApiErrorKind::Throttled);
    assert_eq!(error.code(), Some("ProvisionedThroughputExceededException"));
    assert!(error.message().contains("shardId-00000000000"), "{error}");
    assert!(error.message().contains("stream faults"), "{error}");
    assert_eq!(fake.stream_records(&s).unwrap().len(), 2, "only the entries that passed are kept");
}

#[tokio::test(start_paused = true)]
async fn failed_entries_carry_the_injected_error() {
    let (fake, s) = setup(1);
    let boom = ApiError::from_code("InternalFailure", "injected");
    fake.faults().fail_next_entries(1, boom.clone()).throttle_next_entries(1);
    let outcomes = fake.put_records(&s, entries(3, 1)).await.unwrap();
    assert_eq!(outcomes[0], PutRecordsOutcome::Failed(boom));
    let PutRecordsOutcome::Failed(throttled) = &outcomes[1] else { panic!("{outcomes:?}") };
    assert_eq!(throttled.kind(), ApiErrorKind::Throttled, "faults queue in the order planned");
    assert!(matches!(outcomes[2], PutRecordsOutcome::Written { .. }));
}

#[tokio::test(start_paused = true)]
async fn random_throttling_is_repeatable_for_a_seed() {
    let pattern = |seed| async move {
        let (fake, s) = setup(4);
        fake.faults().throttle_entries_randomly(0.3, seed);
        let mut all = Vec::new();
        for _ in 0..4 {
            all.extend(failed(&fake.put_records(&s, entries(250, 1)).await.unwrap()));
        }
        all
    };
    let a = pattern(7).await;
    assert_eq!(a, pattern(7).await, "the same seed fails the same entries");
    assert_ne!(a, pattern(8).await, "another seed fails others");
    assert!((200..400).contains(&a.len()), "about 30% of 1000 entries fail, got {}", a.len());
}

#[tokio::test(start_paused = true)]
async fn random_throttling_can_be_turned_off() {
    let (fake, s) = setup(1);
    fake.faults().throttle_entries_randomly(1.0, 1);
    assert_eq!(failed(&fake.put_records(&s, entries(5, 1)).await.unwrap()).len(), 5);
    fake.faults().throttle_entries_randomly(0.0, 1);
    assert!(failed(&fake.put_records(&s, entries(5, 1)).await.unwrap()).is_empty());
}

#[tokio::test(start_paused = true)]
async fn whole_calls_fail_for_the_planned_count_of_that_operation_only() {
    let (fake, s) = setup(1);
    let throttled = ApiError::from_code("LimitExceededException", "slow down");
    fake.faults().fail_next_calls(Operation::ListShards, 2, throttled.clone());
    assert_eq!(fake.list_shards(&s).await.unwrap_err(), throttled);
    assert!(fake.describe_stream_summary(&s).await.is_ok(), "other operations are unaffected");
    assert_eq!(fake.list_shards(&s).await.unwrap_err(), throttled);
    assert!(fake.list_shards(&s).await.is_ok(), "the fault is used up");
    let counters = fake.counters();
    assert_eq!(counters.calls(Operation::ListShards), 3, "failed calls are counted too");
    assert_eq!(counters.calls(Operation::DescribeStreamSummary), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_put_records_call_writes_nothing() {
    let (fake, s) = setup(1);
    let transient = ApiError::from_code("InternalFailure", "injected");
    fake.faults().fail_next_calls(Operation::PutRecords, 1, transient);
    let err = fake.put_records(&s, entries(3, 1)).await.unwrap_err();
    assert!(err.is_retryable());
    assert!(fake.stream_records(&s).unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn failing_every_call_lasts_until_cleared() {
    let (fake, s) = setup(1);
    let err = ApiError::from_code("InternalFailure", "down");
    fake.faults().fail_next_calls(Operation::DescribeStreamSummary, usize::MAX, err);
    for _ in 0..50 {
        assert!(fake.describe_stream_summary(&s).await.is_err());
    }
    fake.faults().clear();
    assert!(fake.describe_stream_summary(&s).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn delayed_calls_take_the_delay_in_tokio_time() {
    let (fake, s) = setup(1);
    fake.faults().delay_calls(Operation::PutRecords, Duration::from_secs(3));
    let start = Instant::now();
    fake.put_records(&s, entries(1, 1)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    let start = Instant::now();
    fake.list_shards(&s).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO, "only the delayed operation waits");
    fake.faults().delay_calls(Operation::PutRecords, Duration::ZERO);
    let start = Instant::now();
    fake.put_records(&s, entries(1, 1)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_delayed_call_sees_the_state_after_its_delay() {
    let (fake, s) = setup(1);
    fake.faults().delay_calls(Operation::GetShardIterator, Duration::from_secs(1));
    let shard = fake.list_shards(&s).await.unwrap().remove(0).id;
    let reader = {
        let (fake, s, shard) = (fake.clone(), s.clone(), shard.clone());
        tokio::spawn(async move {
            fake.get_shard_iterator(&s, &shard, ShardIteratorPosition::Latest).await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    fake.put_records(&s, entries(1, 1)).await.unwrap();
    let latest = reader.await.unwrap();
    let page = fake.get_records(&latest, None).await.unwrap();
    assert!(page.records.is_empty(), "LATEST was taken after the delay, after the record");
}

#[tokio::test(start_paused = true)]
async fn the_aws_shard_quota_throttles_past_1000_records_per_second() {
    let (fake, s) = setup(1);
    fake.faults().limit_shard_writes(ShardWriteLimit::AWS);
    let mut written = 0;
    for _ in 0..3 {
        let outcomes = fake.put_records(&s, entries(500, 1)).await.unwrap();
        written += outcomes.len() - failed(&outcomes).len();
    }
    assert_eq!(written, 1000, "one second's quota is available at once");
    tokio::time::advance(Duration::from_millis(500)).await;
    let outcomes = fake.put_records(&s, entries(500, 1)).await.unwrap();
    assert!(failed(&outcomes).is_empty(), "half a second refills 500 records");
    let outcomes = fake.put_records(&s, entries(1, 1)).await.unwrap();
    let PutRecordsOutcome::Failed(error) = &outcomes[0] else { panic!("quota exhausted") };
    assert_eq!(error.code(), Some("ProvisionedThroughputExceededException"));
    assert_eq!(fake.counters().entries_failed(), 501);
}

#[tokio::test(start_paused = true)]
async fn the_aws_shard_quota_throttles_past_1_mib_per_second() {
    let (fake, s) = setup(1);
    fake.faults().limit_shard_writes(ShardWriteLimit::AWS);
    // Four entries of 300 000 bytes (plus key): three fit in 1 MiB, the fourth does not.
    let outcomes = fake.put_records(&s, entries(4, 300_000)).await.unwrap();
    assert_eq!(failed(&outcomes), [3]);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(failed(&fake.put_records(&s, entries(3, 300_000)).await.unwrap()).is_empty());
}

#[tokio::test(start_paused = true)]
async fn shard_quotas_are_per_shard() {
    let (fake, s) = setup(2);
    fake.faults()
        .limit_shard_writes(ShardWriteLimit { records_per_second: 10, bytes_per_second: 1 << 20 });
    let shards = fake.list_shards(&s).await.unwrap();
    let mut to_each: Vec<PutRecordsEntry> = Vec::new();
    for shard in &shards {
        for mut e in entries(10, 1) {
            e.explicit_hash_key = Some(shard.hash_range.start());
            to_each.push(e);
        }
    }
    assert!(failed(&fake.put_records(&s, to_each).await.unwrap()).is_empty());
    fake.faults().unlimit_shard_writes();
    assert!(failed(&fake.put_records(&s, entries(100, 1)).await.unwrap()).is_empty());
}

#[tokio::test(start_paused = true)]
async fn counters_record_calls_entries_and_reads_per_shard() {
    let (fake, s) = setup(2);
    fake.faults().throttle_next_entries(1);
    fake.put_records(&s, entries(4, 1)).await.unwrap();
    let _ = fake.put_records(&s, Vec::new()).await;
    let shards = fake.list_shards(&s).await.unwrap();
    let iterator = fake
        .get_shard_iterator(&s, &shards[1].id, ShardIteratorPosition::TrimHorizon)
        .await
        .unwrap();
    let page = fake.get_records(&iterator, None).await.unwrap();
    fake.get_records(&page.next_iterator.unwrap(), None).await.unwrap();

    let counters = fake.counters();
    assert_eq!(counters.calls(Operation::PutRecords), 2);
    assert_eq!(counters.put_entries(), 4);
    assert_eq!((counters.entries_written(), counters.entries_failed()), (3, 1));
    assert_eq!(counters.calls(Operation::GetRecords), 2);
    assert_eq!(counters.get_records_calls(&s, &shards[1].id), 2);
    assert_eq!(counters.get_records_calls(&s, &shards[0].id), 0);
    fake.reset_counters();
    assert_eq!(fake.counters(), Default::default());
}
