//! FakeKinesis's enhanced fan-out: consumer registration, SubscribeToShard sessions that wait
//! at the tip, end after five minutes or at the end of a closed shard, and the AWS rules for a
//! second subscription of the same consumer to the same shard.

#![cfg(feature = "test-util")]

use std::time::Duration;

use bytes::Bytes;
use kinesis_common::fake::FakeKinesis;
use kinesis_common::{
    ApiErrorKind, ConsumerDescription, ConsumerName, ConsumerStatus, HashKey, KinesisApi,
    PartitionKey, PutRecordsEntry, PutRecordsOutcome, SequenceNumber, ShardId,
    ShardIteratorPosition, StreamName,
};
use tokio::time::Instant;

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

struct Setup {
    fake: FakeKinesis,
    stream: StreamName,
    shards: Vec<ShardId>,
    consumer: ConsumerDescription,
}

async fn setup(shards: u32) -> Setup {
    let fake = FakeKinesis::builder().update_delay(Duration::ZERO).build();
    let stream = StreamName::new("efo").unwrap();
    fake.create_active_stream(&stream, shards).unwrap();
    let arn = fake.describe_stream_summary(&stream).await.unwrap().arn;
    let consumer =
        fake.register_stream_consumer(&arn, &ConsumerName::new("app").unwrap()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ids = fake.list_shards(&stream).await.unwrap().into_iter().map(|s| s.id).collect();
    Setup { fake, stream, shards: ids, consumer }
}

#[tokio::test(start_paused = true)]
async fn consumers_are_creating_then_active_and_can_be_deregistered() {
    let fake = FakeKinesis::builder().consumer_delay(Duration::from_millis(300)).build();
    let s = StreamName::new("efo").unwrap();
    fake.create_active_stream(&s, 1).unwrap();
    let arn = fake.describe_stream_summary(&s).await.unwrap().arn;
    let name = ConsumerName::new("app").unwrap();
    let registered = fake.register_stream_consumer(&arn, &name).await.unwrap();
    assert_eq!(registered.status, ConsumerStatus::Creating);
    assert!(registered.arn.starts_with(&format!("{arn}/consumer/app:")), "{}", registered.arn);
    let shard = fake.list_shards(&s).await.unwrap().remove(0).id;
    let err = fake
        .subscribe_to_shard(&registered.arn, &shard, ShardIteratorPosition::Latest)
        .await
        .err()
        .expect("a CREATING consumer cannot subscribe");
    assert_eq!(err.kind(), ApiErrorKind::ResourceInUse);
    assert_eq!(
        fake.register_stream_consumer(&arn, &name).await.unwrap_err().kind(),
        ApiErrorKind::ResourceInUse,
        "a consumer name is registered once"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let described = fake.describe_stream_consumer(&arn, &name).await.unwrap();
    assert_eq!((described.status, &described.arn), (ConsumerStatus::Active, &registered.arn));
    fake.deregister_stream_consumer(&arn, &name).await.unwrap();
    let err = fake.describe_stream_consumer(&arn, &name).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::NotFound);
}

#[tokio::test(start_paused = true)]
async fn a_stream_takes_at_most_20_consumers() {
    let fake = FakeKinesis::builder().consumer_delay(Duration::ZERO).build();
    let s = StreamName::new("efo").unwrap();
    fake.create_active_stream(&s, 1).unwrap();
    let arn = fake.describe_stream_summary(&s).await.unwrap().arn;
    for i in 0..20 {
        fake.register_stream_consumer(&arn, &ConsumerName::new(format!("c{i}")).unwrap())
            .await
            .unwrap();
    }
    let err =
        fake.register_stream_consumer(&arn, &ConsumerName::new("c20").unwrap()).await.unwrap_err();
    assert_eq!(err.code(), Some("LimitExceededException"));
}

#[tokio::test(start_paused = true)]
async fn unknown_consumers_and_streams_are_not_found() {
    let t = setup(1).await;
    let bogus = t.consumer.arn.replace("/consumer/app:", "/consumer/other:");
    let err = t
        .fake
        .subscribe_to_shard(&bogus, &t.shards[0], ShardIteratorPosition::Latest)
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), ApiErrorKind::NotFound);
    let other_stream = "arn:aws:kinesis:us-east-1:000000000000:stream/nope";
    let err = t
        .fake
        .register_stream_consumer(other_stream, &ConsumerName::new("x").unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::NotFound);
}

#[tokio::test(start_paused = true)]
async fn a_subscription_delivers_backlog_then_waits_at_the_tip_for_new_records() {
    let t = setup(1).await;
    let first = put(&t.fake, &t.stream, "a").await;
    let second = put(&t.fake, &t.stream, "b").await;
    let mut sub = t
        .fake
        .subscribe_to_shard(&t.consumer.arn, &t.shards[0], ShardIteratorPosition::TrimHorizon)
        .await
        .unwrap();
    let event = sub.next_event().await.unwrap().unwrap();
    let seqs: Vec<_> = event.records.iter().map(|r| r.sequence_number.clone()).collect();
    assert_eq!(seqs, [first, second.clone()], "one event carries the whole backlog");
    assert_eq!(event.continuation_sequence_number, Some(second));
    assert_eq!(event.millis_behind_latest, Some(0));

    let writer = {
        let (fake, s) = (t.fake.clone(), t.stream.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(7)).await;
            put(&fake, &s, "c").await
        })
    };
    let start = Instant::now();
    let event = sub.next_event().await.unwrap().unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(7), "the event comes when the record does");
    assert_eq!(event.records[0].sequence_number, writer.await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_subscription_ends_after_five_minutes() {
    let t = setup(1).await;
    let mut sub = t
        .fake
        .subscribe_to_shard(&t.consumer.arn, &t.shards[0], ShardIteratorPosition::Latest)
        .await
        .unwrap();
    let start = Instant::now();
    assert!(sub.next_event().await.unwrap().is_none());
    assert_eq!(start.elapsed(), Duration::from_secs(300));
    assert!(sub.next_event().await.unwrap().is_none(), "an ended subscription stays ended");
    // The ended session no longer holds the shard.
    assert!(
        t.fake
            .subscribe_to_shard(&t.consumer.arn, &t.shards[0], ShardIteratorPosition::Latest)
            .await
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn a_second_subscription_within_five_seconds_is_in_use_and_later_takes_over() {
    let t = setup(1).await;
    let subscribe =
        || t.fake.subscribe_to_shard(&t.consumer.arn, &t.shards[0], ShardIteratorPosition::Latest);
    let mut old = subscribe().await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let err = subscribe().await.err().expect("within 5 s the shard is in use");
    assert_eq!(err.kind(), ApiErrorKind::ResourceInUse);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut new = subscribe().await.expect("after 5 s a new subscription takes over");
    let err = old.next_event().await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::ResourceInUse, "the old session is told it lost");
    assert!(old.next_event().await.unwrap().is_none());
    put(&t.fake, &t.stream, "x").await;
    assert_eq!(new.next_event().await.unwrap().unwrap().records.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_subscription_frees_the_shard_at_once() {
    let t = setup(1).await;
    let subscribe =
        || t.fake.subscribe_to_shard(&t.consumer.arn, &t.shards[0], ShardIteratorPosition::Latest);
    drop(subscribe().await.unwrap());
    assert!(subscribe().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn resubscribing_after_the_continuation_sequence_number_resumes_exactly() {
    let t = setup(1).await;
    let a = put(&t.fake, &t.stream, "a").await;
    let mut sub = t
        .fake
        .subscribe_to_shard(&t.consumer.arn, &t.shards[0], ShardIteratorPosition::TrimHorizon)
        .await
        .unwrap();
    let continuation = sub.next_event().await.unwrap().unwrap().continuation_sequence_number;
    assert_eq!(continuation.as_ref(), Some(&a));
    drop(sub);
    let b = put(&t.fake, &t.stream, "b").await;
    let position = ShardIteratorPosition::AfterSequenceNumber(continuation.unwrap());
    let mut sub = t.fake.subscribe_to_shard(&t.consumer.arn, &t.shards[0], position).await.unwrap();
    let event = sub.next_event().await.unwrap().unwrap();
    assert_eq!(event.records.iter().map(|r| &r.sequence_number).collect::<Vec<_>>(), [&b]);
}

#[tokio::test(start_paused = true)]
async fn a_closed_shard_ends_the_subscription_with_its_children() {
    let t = setup(1).await;
    let parent = t.shards[0].clone();
    let before = put(&t.fake, &t.stream, "before").await;
    let mut sub = t
        .fake
        .subscribe_to_shard(&t.consumer.arn, &parent, ShardIteratorPosition::TrimHorizon)
        .await
        .unwrap();
    assert_eq!(sub.next_event().await.unwrap().unwrap().records[0].sequence_number, before);
    // The split happens while the session waits at the tip.
    let splitter = {
        let (fake, s, parent) = (t.fake.clone(), t.stream.clone(), parent.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            fake.split_shard(&s, &parent, HashKey(1 << 127)).await.unwrap();
        })
    };
    let last = sub.next_event().await.unwrap().expect("a final event at the shard's end");
    splitter.await.unwrap();
    assert!(last.records.is_empty());
    assert_eq!(last.continuation_sequence_number, None);
    let children: Vec<_> = last.child_shards.iter().map(|c| c.shard_id.clone()).collect();
    let listed: Vec<_> = t
        .fake
        .list_shards(&t.stream)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.parent.as_ref() == Some(&parent))
        .map(|s| s.id)
        .collect();
    assert_eq!(children, listed);
    for child in &last.child_shards {
        assert_eq!(child.parent_shards, std::slice::from_ref(&parent));
    }
    assert!(sub.next_event().await.unwrap().is_none(), "then the subscription ends");
}

#[tokio::test(start_paused = true)]
async fn a_subscription_notices_a_split_that_completes_while_it_waits() {
    // With an UPDATING period the split takes effect later, with no call to wake the session.
    let fake = FakeKinesis::builder().update_delay(Duration::from_secs(3)).build();
    let s = StreamName::new("efo").unwrap();
    fake.create_active_stream(&s, 1).unwrap();
    let arn = fake.describe_stream_summary(&s).await.unwrap().arn;
    let consumer =
        fake.register_stream_consumer(&arn, &ConsumerName::new("app").unwrap()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let parent = fake.list_shards(&s).await.unwrap().remove(0).id;
    let mut sub = fake
        .subscribe_to_shard(&consumer.arn, &parent, ShardIteratorPosition::Latest)
        .await
        .unwrap();
    fake.split_shard(&s, &parent, HashKey(1 << 127)).await.unwrap();
    let start = Instant::now();
    let last = sub.next_event().await.unwrap().unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(last.child_shards.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_merged_shard_ends_with_a_child_that_has_both_parents() {
    let t = setup(2).await;
    t.fake.merge_shards(&t.stream, &t.shards[0], &t.shards[1]).await.unwrap();
    let mut sub = t
        .fake
        .subscribe_to_shard(&t.consumer.arn, &t.shards[1], ShardIteratorPosition::TrimHorizon)
        .await
        .unwrap();
    let last = sub.next_event().await.unwrap().unwrap();
    assert_eq!(last.continuation_sequence_number, None);
    assert_eq!(last.child_shards.len(), 1);
    assert_eq!(last.child_shards[0].parent_shards, [t.shards[0].clone(), t.shards[1].clone()]);
}

#[tokio::test(start_paused = true)]
async fn deregistering_the_consumer_fails_its_subscriptions() {
    let t = setup(1).await;
    let mut sub = t
        .fake
        .subscribe_to_shard(&t.consumer.arn, &t.shards[0], ShardIteratorPosition::Latest)
        .await
        .unwrap();
    let arn = t.fake.describe_stream_summary(&t.stream).await.unwrap().arn;
    t.fake.deregister_stream_consumer(&arn, &t.consumer.name).await.unwrap();
    assert_eq!(sub.next_event().await.unwrap_err().kind(), ApiErrorKind::NotFound);
}
