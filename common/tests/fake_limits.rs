//! FakeKinesis enforces the AWS limits and stream states that the emulators do not (so they are
//! not in the contract suite): PutRecords request limits, writes while `CREATING`, stream
//! creation rules, and AWS's exact shard layout and error wording.

#![cfg(feature = "test-util")]

use std::time::Duration;

use bytes::Bytes;
use kinesis_common::fake::FakeKinesis;
use kinesis_common::{
    ApiErrorKind, HashKey, KinesisApi, PartitionKey, PutRecordsEntry, PutRecordsOutcome, ShardId,
    ShardIteratorPosition, StreamName, StreamStatus,
};

const MIB: usize = 1 << 20;

fn stream() -> StreamName {
    StreamName::new("limits").unwrap()
}

fn entry(key: &str, data_len: usize) -> PutRecordsEntry {
    PutRecordsEntry {
        partition_key: PartitionKey::new(key).unwrap(),
        explicit_hash_key: None,
        data: Bytes::from(vec![7u8; data_len]),
    }
}

async fn active(fake: &FakeKinesis, shards: u32) -> StreamName {
    let s = stream();
    fake.create_active_stream(&s, shards).unwrap();
    s
}

#[tokio::test(start_paused = true)]
async fn more_than_500_entries_reject_the_whole_request() {
    let fake = FakeKinesis::new();
    let s = active(&fake, 1).await;
    let entries = vec![entry("k", 1); 501];
    let err = fake.put_records(&s, entries).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::InvalidArgument);
    assert_eq!(err.code(), Some("ValidationException"));
    assert!(err.message().contains("500"), "{err}");
    assert!(
        fake.stream_records(&s).unwrap().is_empty(),
        "nothing of a rejected request is written"
    );
    let ok = fake.put_records(&s, vec![entry("k", 1); 500]).await.unwrap();
    assert_eq!(ok.len(), 500);
}

#[tokio::test(start_paused = true)]
async fn an_empty_request_is_rejected() {
    let fake = FakeKinesis::new();
    let s = active(&fake, 1).await;
    let err = fake.put_records(&s, Vec::new()).await.unwrap_err();
    assert_eq!(err.code(), Some("ValidationException"));
}

#[tokio::test(start_paused = true)]
async fn a_request_over_5_mib_counting_partition_keys_is_rejected() {
    let fake = FakeKinesis::new();
    let s = active(&fake, 1).await;
    // Five records of exactly 1 MiB each (data plus the one-byte key): 5 MiB, accepted.
    let exact: Vec<_> = (0..5).map(|_| entry("k", MIB - 1)).collect();
    assert!(fake.put_records(&s, exact).await.is_ok(), "exactly 5 MiB is within the limit");
    // One more byte of partition key tips it over.
    let mut over: Vec<_> = (0..5).map(|_| entry("k", MIB - 1)).collect();
    over.push(entry("kk", 0));
    let err = fake.put_records(&s, over).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::InvalidArgument);
    assert_eq!(err.code(), Some("InvalidArgumentException"));
    assert!(err.message().contains("5 MiB"), "{err}");
    assert_eq!(fake.stream_records(&s).unwrap().len(), 5, "the rejected request wrote nothing");
}

#[tokio::test(start_paused = true)]
async fn a_record_over_1_mib_of_data_and_key_rejects_the_request() {
    let fake = FakeKinesis::new();
    let s = active(&fake, 1).await;
    assert!(fake.put_records(&s, vec![entry("k", MIB - 1)]).await.is_ok());
    let err = fake.put_records(&s, vec![entry("small", 1), entry("k", MIB)]).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::InvalidArgument);
    assert!(err.message().contains("Record 1") && err.message().contains("1048576"), "{err}");
    assert_eq!(fake.stream_records(&s).unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_larger_max_record_size_admits_large_records_and_requests() {
    let fake = FakeKinesis::builder().max_record_size(10 * MIB).build();
    let s = active(&fake, 1).await;
    let outcomes = fake.put_records(&s, vec![entry("k", 10 * MIB - 1)]).await.unwrap();
    assert!(matches!(outcomes[0], PutRecordsOutcome::Written { .. }));
    let err = fake.put_records(&s, vec![entry("k", 10 * MIB)]).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::InvalidArgument);
}

#[test]
#[should_panic(expected = "outside 1 MiB..=10 MiB")]
fn max_record_size_beyond_10_mib_is_refused() {
    let _ = FakeKinesis::builder().max_record_size(10 * MIB + 1);
}

#[tokio::test(start_paused = true)]
async fn a_creating_stream_refuses_writes_and_reads_until_active() {
    let fake = FakeKinesis::builder().create_delay(Duration::from_millis(500)).build();
    let s = stream();
    fake.create_stream(&s, 2).await.unwrap();
    assert_eq!(fake.describe_stream_summary(&s).await.unwrap().status, StreamStatus::Creating);
    let err = fake.put_records(&s, vec![entry("k", 1)]).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::ResourceInUse);
    assert_eq!(err.code(), Some("ResourceInUseException"));
    assert!(err.message().contains("CREATING"), "{err}");
    assert_eq!(fake.list_shards(&s).await.unwrap_err().kind(), ApiErrorKind::ResourceInUse);
    let shard = ShardId::new("shardId-000000000000").unwrap();
    let err = fake.get_shard_iterator(&s, &shard, ShardIteratorPosition::Latest).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::ResourceInUse);
    assert_eq!(fake.delete_stream(&s).await.unwrap_err().kind(), ApiErrorKind::ResourceInUse);

    tokio::time::sleep(Duration::from_millis(499)).await;
    assert_eq!(fake.describe_stream_summary(&s).await.unwrap().status, StreamStatus::Creating);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(fake.describe_stream_summary(&s).await.unwrap().status, StreamStatus::Active);
    assert!(fake.put_records(&s, vec![entry("k", 1)]).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn new_streams_split_the_key_space_exactly_like_aws() {
    let fake = FakeKinesis::new();
    let s = active(&fake, 4).await;
    let shards = fake.list_shards(&s).await.unwrap();
    let ids: Vec<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "shardId-000000000000",
            "shardId-000000000001",
            "shardId-000000000002",
            "shardId-000000000003"
        ]
    );
    let quarter = 1u128 << 126;
    for (i, shard) in shards.iter().enumerate() {
        let i = i as u128;
        assert_eq!(shard.hash_range.start(), HashKey(i * quarter));
        let end = if i == 3 { u128::MAX } else { (i + 1) * quarter - 1 };
        assert_eq!(shard.hash_range.end(), HashKey(end));
    }
    // 85070591730234615865843651857942052863 is where AWS ends shard 0 of 4 (kinesis-mock is
    // one lower).
    assert_eq!(shards[0].hash_range.end().0, 85070591730234615865843651857942052863);
    let summary = fake.describe_stream_summary(&s).await.unwrap();
    assert_eq!(summary.arn, "arn:aws:kinesis:us-east-1:000000000000:stream/limits");
    assert_eq!(summary.open_shard_count, 4);
    assert_eq!(summary.retention, Duration::from_secs(24 * 3600));
}

#[tokio::test(start_paused = true)]
async fn stream_creation_rejects_zero_shards_and_duplicates() {
    let fake = FakeKinesis::new();
    let s = stream();
    assert_eq!(fake.create_stream(&s, 0).await.unwrap_err().kind(), ApiErrorKind::InvalidArgument);
    fake.create_stream(&s, 1).await.unwrap();
    let err = fake.create_stream(&s, 1).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::ResourceInUse);
    assert!(err.message().contains("already exists"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn the_account_takes_at_most_500_open_shards() {
    let fake = FakeKinesis::new();
    let err = fake.create_stream(&stream(), u32::MAX).await.unwrap_err();
    assert_eq!(err.code(), Some("LimitExceededException"));
    fake.create_active_stream(&StreamName::new("a").unwrap(), 300).unwrap();
    let b = StreamName::new("b").unwrap();
    fake.create_active_stream(&b, 200).unwrap();
    assert_eq!(fake.create_stream(&stream(), 1).await.unwrap_err().kind(), ApiErrorKind::Throttled);
    let shard = fake.list_shards(&b).await.unwrap().remove(0);
    let err = fake.split_shard(&b, &shard.id, HashKey(1)).await.unwrap_err();
    assert_eq!(err.code(), Some("LimitExceededException"));
    assert!(fake.update_shard_count(&b, 100).await.is_ok(), "scaling down frees shards");
}

#[tokio::test(start_paused = true)]
async fn not_found_errors_name_the_stream_and_the_shard() {
    let fake = FakeKinesis::new();
    let missing = StreamName::new("no-such-stream").unwrap();
    let err = fake.describe_stream_summary(&missing).await.unwrap_err();
    assert_eq!(err.code(), Some("ResourceNotFoundException"));
    assert_eq!(err.message(), "Stream no-such-stream under account 000000000000 not found.");

    let s = active(&fake, 1).await;
    let shard = ShardId::new("shardId-000000000007").unwrap();
    let err = fake.get_shard_iterator(&s, &shard, ShardIteratorPosition::Latest).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::NotFound);
    assert!(err.message().contains("shardId-000000000007") && err.message().contains("limits"));
}

#[tokio::test(start_paused = true)]
async fn deleted_streams_can_be_created_again_empty() {
    let fake = FakeKinesis::new();
    let s = active(&fake, 1).await;
    fake.put_records(&s, vec![entry("k", 3)]).await.unwrap();
    fake.delete_stream(&s).await.unwrap();
    assert_eq!(fake.stream_records(&s).unwrap_err().kind(), ApiErrorKind::NotFound);
    fake.create_active_stream(&s, 1).unwrap();
    assert!(fake.stream_records(&s).unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn records_and_stream_records_show_everything_written() {
    let fake = FakeKinesis::new();
    let s = active(&fake, 2).await;
    let entries: Vec<_> = (0..10).map(|i| entry(&format!("key-{i}"), i)).collect();
    let outcomes = fake.put_records(&s, entries).await.unwrap();
    let all = fake.stream_records(&s).unwrap();
    assert_eq!(all.len(), 10);
    for ((shard, record), outcome) in all.iter().zip(&outcomes) {
        let PutRecordsOutcome::Written { shard_id, sequence_number } = outcome else { panic!() };
        assert_eq!((shard, &record.sequence_number), (shard_id, sequence_number));
    }
    let per_shard: usize = fake
        .list_shards(&s)
        .await
        .unwrap()
        .iter()
        .map(|shard| fake.records(&s, &shard.id).unwrap().len())
        .sum();
    assert_eq!(per_shard, 10);
}

#[tokio::test(start_paused = true)]
async fn record_arrival_times_follow_the_paused_clock_from_the_base() {
    let base = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let fake = FakeKinesis::builder().clock_base(base).build();
    let s = active(&fake, 1).await;
    tokio::time::sleep(Duration::from_secs(90)).await;
    fake.put_records(&s, vec![entry("k", 1)]).await.unwrap();
    let (_, record) = fake.stream_records(&s).unwrap().remove(0);
    assert_eq!(record.approximate_arrival, Some(base + Duration::from_secs(90)));
    assert_eq!(fake.now(), base + Duration::from_secs(90));
}

#[tokio::test(start_paused = true)]
async fn concurrent_writers_get_unique_increasing_sequence_numbers() {
    let fake = FakeKinesis::new();
    let s = active(&fake, 2).await;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let (fake, s) = (fake.clone(), s.clone());
        tasks.spawn(async move {
            for i in 0..20 {
                fake.put_records(&s, vec![entry(&format!("{t}-{i}"), 4)]).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    for shard in fake.list_shards(&s).await.unwrap() {
        let records = fake.records(&s, &shard.id).unwrap();
        for pair in records.windows(2) {
            assert!(pair[0].sequence_number < pair[1].sequence_number);
        }
    }
    assert_eq!(fake.stream_records(&s).unwrap().len(), 160);
}
