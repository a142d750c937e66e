//! FakeKinesis's shard iterators and GetRecords beyond what the emulators agree on: expiry after
//! five minutes, invalid and foreign iterators, sequence numbers of other shards, AT_TIMESTAMP
//! on a moving clock, MillisBehindLatest, and reading closed shards.

#![cfg(feature = "test-util")]

use std::time::Duration;

use bytes::Bytes;
use kinesis_common::fake::FakeKinesis;
use kinesis_common::{
    ApiErrorKind, HashKey, KinesisApi, PartitionKey, PutRecordsEntry, PutRecordsOutcome,
    SequenceNumber, ShardId, ShardIterator, ShardIteratorPosition, StreamName,
};

fn stream() -> StreamName {
    StreamName::new("iterators").unwrap()
}

fn entry(data: &str) -> PutRecordsEntry {
    PutRecordsEntry {
        partition_key: PartitionKey::new("k").unwrap(),
        explicit_hash_key: None,
        data: Bytes::from(data.to_owned()),
    }
}

async fn put(fake: &FakeKinesis, s: &StreamName, data: &str) -> SequenceNumber {
    match fake.put_records(s, vec![entry(data)]).await.unwrap().remove(0) {
        PutRecordsOutcome::Written { sequence_number, .. } => sequence_number,
        PutRecordsOutcome::Failed(e) => panic!("{e}"),
    }
}

async fn setup(shards: u32) -> (FakeKinesis, StreamName, Vec<ShardId>) {
    let fake = FakeKinesis::new();
    let s = stream();
    fake.create_active_stream(&s, shards).unwrap();
    let ids = fake.list_shards(&s).await.unwrap().into_iter().map(|s| s.id).collect();
    (fake, s, ids)
}

#[tokio::test(start_paused = true)]
async fn iterators_expire_five_minutes_after_they_are_issued() {
    let (fake, s, shards) = setup(1).await;
    put(&fake, &s, "a").await;
    let iterator =
        fake.get_shard_iterator(&s, &shards[0], ShardIteratorPosition::TrimHorizon).await.unwrap();
    tokio::time::advance(Duration::from_secs(300)).await;
    let page = fake.get_records(&iterator, None).await.expect("still valid at five minutes");
    let next = page.next_iterator.unwrap();
    tokio::time::advance(Duration::from_millis(1)).await;
    let err = fake.get_records(&iterator, None).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::ExpiredIterator);
    assert_eq!(err.code(), Some("ExpiredIteratorException"));
    assert!(fake.get_records(&next, None).await.is_ok(), "the next iterator is freshly issued");
    tokio::time::advance(Duration::from_secs(301)).await;
    assert_eq!(
        fake.get_records(&next, None).await.unwrap_err().kind(),
        ApiErrorKind::ExpiredIterator
    );
}

#[tokio::test(start_paused = true)]
async fn garbage_and_foreign_iterators_are_invalid_arguments() {
    let (fake, s, shards) = setup(1).await;
    for garbage in ["", "AAAAAAAAAAGjpJuzXV4R", "fakeiter1.x.y"] {
        let err = fake.get_records(&ShardIterator(garbage.into()), None).await.unwrap_err();
        assert_eq!(err.kind(), ApiErrorKind::InvalidArgument, "{garbage:?}");
    }
    let other = FakeKinesis::new();
    other.create_active_stream(&s, 1).unwrap();
    let foreign =
        other.get_shard_iterator(&s, &shards[0], ShardIteratorPosition::Latest).await.unwrap();
    let err = fake.get_records(&foreign, None).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::InvalidArgument, "another fake's iterator");
}

#[tokio::test(start_paused = true)]
async fn iterators_of_a_deleted_stream_do_not_read_its_namesake() {
    let (fake, s, shards) = setup(1).await;
    let iterator =
        fake.get_shard_iterator(&s, &shards[0], ShardIteratorPosition::TrimHorizon).await.unwrap();
    fake.delete_stream(&s).await.unwrap();
    fake.create_active_stream(&s, 1).unwrap();
    assert_eq!(fake.get_records(&iterator, None).await.unwrap_err().kind(), ApiErrorKind::NotFound);
}

#[tokio::test(start_paused = true)]
async fn sequence_numbers_must_belong_to_the_shard() {
    let (fake, s, shards) = setup(2).await;
    let mut to_second = entry("x");
    to_second.explicit_hash_key = Some(HashKey::MAX);
    let outcome = fake.put_records(&s, vec![to_second]).await.unwrap().remove(0);
    let PutRecordsOutcome::Written { sequence_number, shard_id } = outcome else { panic!() };
    assert_eq!(shard_id, shards[1]);
    let wrong_shard = ShardIteratorPosition::AtSequenceNumber(sequence_number.clone());
    let err = fake.get_shard_iterator(&s, &shards[0], wrong_shard).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::InvalidArgument);
    assert!(err.message().contains("shardId-000000000001"), "{err}");
    let made_up = ShardIteratorPosition::AfterSequenceNumber(SequenceNumber::new("12345").unwrap());
    let err = fake.get_shard_iterator(&s, &shards[1], made_up).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::InvalidArgument);
    let right = ShardIteratorPosition::AtSequenceNumber(sequence_number);
    assert!(fake.get_shard_iterator(&s, &shards[1], right).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn at_timestamp_starts_at_the_first_record_arriving_at_or_after_it() {
    let (fake, s, shards) = setup(1).await;
    put(&fake, &s, "t0").await;
    tokio::time::advance(Duration::from_secs(10)).await;
    let t10 = fake.now();
    let second = put(&fake, &s, "t10").await;
    tokio::time::advance(Duration::from_secs(10)).await;
    let third = put(&fake, &s, "t20").await;

    let read = |at| {
        let (fake, s, shard) = (fake.clone(), s.clone(), shards[0].clone());
        async move {
            let position = ShardIteratorPosition::AtTimestamp(at);
            let iterator = fake.get_shard_iterator(&s, &shard, position).await.unwrap();
            let page = fake.get_records(&iterator, None).await.unwrap();
            page.records.into_iter().map(|r| r.sequence_number).collect::<Vec<_>>()
        }
    };
    assert_eq!(read(t10).await, [second, third.clone()]);
    assert_eq!(read(t10 + Duration::from_millis(1)).await, std::slice::from_ref(&third));
    assert_eq!(read(fake.now()).await, [third], "now: the record that arrived now");
}

#[tokio::test(start_paused = true)]
async fn at_timestamp_in_the_future_is_an_invalid_argument() {
    let (fake, s, shards) = setup(1).await;
    let future = fake.now() + Duration::from_millis(1);
    let position = ShardIteratorPosition::AtTimestamp(future);
    let err = fake.get_shard_iterator(&s, &shards[0], position).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::InvalidArgument);
    assert!(err.message().contains("cannot be greater than the currentTimestampInMillis"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn millis_behind_latest_is_the_age_of_the_oldest_unread_record() {
    let (fake, s, shards) = setup(1).await;
    put(&fake, &s, "a").await;
    tokio::time::advance(Duration::from_secs(2)).await;
    put(&fake, &s, "b").await;
    tokio::time::advance(Duration::from_secs(3)).await;
    let iterator =
        fake.get_shard_iterator(&s, &shards[0], ShardIteratorPosition::TrimHorizon).await.unwrap();
    let page = fake.get_records(&iterator, Some(1)).await.unwrap();
    assert_eq!(page.millis_behind_latest, Some(3_000), "b arrived 3 s ago and is unread");
    let page = fake.get_records(&page.next_iterator.unwrap(), None).await.unwrap();
    assert_eq!(page.millis_behind_latest, Some(0), "caught up");
}

#[tokio::test(start_paused = true)]
async fn get_records_limit_must_be_between_1_and_10000() {
    let (fake, s, shards) = setup(1).await;
    let iterator =
        fake.get_shard_iterator(&s, &shards[0], ShardIteratorPosition::Latest).await.unwrap();
    for limit in [0, 10_001] {
        let err = fake.get_records(&iterator, Some(limit)).await.unwrap_err();
        assert_eq!(err.kind(), ApiErrorKind::InvalidArgument, "limit {limit}");
    }
}

#[tokio::test(start_paused = true)]
async fn get_records_returns_at_most_10_mib() {
    let fake = FakeKinesis::builder().max_record_size(4 << 20).build();
    let s = stream();
    fake.create_active_stream(&s, 1).unwrap();
    let shard = fake.list_shards(&s).await.unwrap().remove(0).id;
    for _ in 0..3 {
        let mut big = entry("");
        big.data = Bytes::from(vec![0u8; (4 << 20) - 1]);
        fake.put_records(&s, vec![big]).await.unwrap();
    }
    let iterator =
        fake.get_shard_iterator(&s, &shard, ShardIteratorPosition::TrimHorizon).await.unwrap();
    let page = fake.get_records(&iterator, None).await.unwrap();
    assert_eq!(page.records.len(), 2, "a third 4 MiB record would pass 10 MiB");
    let page = fake.get_records(&page.next_iterator.unwrap(), None).await.unwrap();
    assert_eq!(page.records.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_open_shard_at_its_tip_returns_nothing_and_a_next_iterator() {
    let (fake, s, shards) = setup(1).await;
    let iterator =
        fake.get_shard_iterator(&s, &shards[0], ShardIteratorPosition::TrimHorizon).await.unwrap();
    let page = fake.get_records(&iterator, None).await.unwrap();
    assert!(page.records.is_empty() && page.child_shards.is_empty());
    let next = page.next_iterator.expect("an open shard never ends");
    put(&fake, &s, "later").await;
    assert_eq!(fake.get_records(&next, None).await.unwrap().records.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn latest_on_a_closed_shard_ends_at_once_with_the_children() {
    let fake = FakeKinesis::builder().update_delay(Duration::ZERO).build();
    let s = stream();
    fake.create_active_stream(&s, 1).unwrap();
    let parent = fake.list_shards(&s).await.unwrap().remove(0);
    put(&fake, &s, "before").await;
    fake.split_shard(&s, &parent.id, HashKey(1 << 100)).await.unwrap();
    let iterator =
        fake.get_shard_iterator(&s, &parent.id, ShardIteratorPosition::Latest).await.unwrap();
    let page = fake.get_records(&iterator, None).await.unwrap();
    assert!(page.records.is_empty());
    assert_eq!(page.next_iterator, None);
    assert_eq!(page.child_shards.len(), 2);
    let ending = fake.list_shards(&s).await.unwrap().remove(0).ending_sequence.unwrap();
    let at_end = ShardIteratorPosition::AtSequenceNumber(ending);
    let iterator = fake.get_shard_iterator(&s, &parent.id, at_end).await.unwrap();
    assert_eq!(fake.get_records(&iterator, None).await.unwrap().next_iterator, None);
}
