//! Bad input that needs the substrate: a stream deleted while the producer writes to it and
//! while the consumer reads it (kinesis-mock keeps a deleted stream `DELETING` for
//! `DELETE_STREAM_DURATION`, 10 ms under `cargo xtask`, then answers
//! `ResourceNotFoundException`), and clients without credentials, through `SdkKinesis` and
//! `DynamoLeaseStore` as an application builds them.
//!
//! Access denied cannot be produced here: kinesis-mock and DynamoDB Local accept any
//! signature. It is covered with `FakeKinesis` fault injection in `producer/tests/bad_input.rs`
//! and `consumer/tests/bad_input.rs`, and through the SDK against a one-answer HTTP server in
//! `common/tests/bad_input.rs` (Kinesis) and `consumer/tests/bad_input.rs` (the lease table).
//!
//! Each test checks what the caller sees (the error and its sources, as `{:#}` prints them,
//! or the consumer's log line when there is no caller to return an error to) and that nothing
//! else is lost.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kinesis_common::error_chain as chain;
use kinesis_common::{
    ExtendedSequenceNumber, KinesisApi, PartitionKey, PutRecordsEntry, PutRecordsOutcome,
    SdkKinesis, ShardId, ShardIteratorPosition, StreamName,
};
use kinesis_consumer::testing::{CheckpointPolicy, Recorder, RecordingProcessor};
use kinesis_consumer::{
    Consumer, ConsumerConfig, DynamoLeaseStore, FatalError, InitialPosition, LeaseStore,
    LeaseStoreError, PollingSettings, Retrieval, RunError, StartError, WorkerId,
};
use kinesis_integration_tests::{
    create_stream, dynamodb, kinesis, open_shards, sdk_config, unique_name, unique_stream,
};
use kinesis_producer::{BuildError, DeliveryError, Producer, ProducerConfig, Record};
use tokio::time::Instant;

/// Every record's data in the stream's only shard, read from TRIM_HORIZON.
async fn stored(api: &dyn KinesisApi, stream: &StreamName) -> Vec<String> {
    let shard = open_shards(api, stream).await.unwrap().remove(0);
    let mut iterator = api
        .get_shard_iterator(stream, &shard.id, ShardIteratorPosition::TrimHorizon)
        .await
        .unwrap();
    let mut data = Vec::new();
    loop {
        let page = api.get_records(&iterator, Some(10_000)).await.unwrap();
        let empty = page.records.is_empty();
        data.extend(page.records.iter().map(|r| String::from_utf8_lossy(&r.data).into_owned()));
        match page.next_iterator {
            Some(next) if !empty => iterator = next,
            _ => return data,
        }
    }
}

/// Waits until DescribeStreamSummary no longer finds the stream.
async fn wait_deleted(api: &dyn KinesisApi, stream: &StreamName) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.describe_stream_summary(stream).await.is_ok() {
        assert!(Instant::now() < deadline, "stream {stream} still exists after 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn records_sent_after_the_stream_is_deleted_come_back_naming_the_stream() {
    let direct = kinesis().await.unwrap();
    let stream = unique_stream("bad-deleted-producer");
    create_stream(direct.as_ref(), &stream, 1).await.unwrap();
    let config =
        ProducerConfig { record_ttl: Duration::from_secs(10), ..ProducerConfig::default() };
    let producer = Producer::builder(direct.clone())
        .stream(stream.clone())
        .config(config)
        .start()
        .await
        .unwrap();
    let mut receipts = Vec::new();
    for i in 0..100 {
        receipts.push(
            producer.send(Record::new(format!("k{}", i % 7), format!("good-{i}"))).await.unwrap(),
        );
    }
    for receipt in receipts {
        receipt.await.unwrap();
    }
    // The 100 are in the stream; KPL aggregation makes them fewer Kinesis records.
    assert!(!stored(direct.as_ref(), &stream).await.is_empty());

    direct.delete_stream(&stream).await.unwrap();
    wait_deleted(direct.as_ref(), &stream).await;
    let mut late = Vec::new();
    for i in 0..10 {
        late.push(producer.send(Record::new("k", format!("late-{i}"))).await.unwrap());
    }
    for (i, receipt) in late.into_iter().enumerate() {
        let error = receipt.await.unwrap_err();
        let text = chain(&error);
        match &error {
            DeliveryError::Rejected { .. } => {
                assert!(
                    text.starts_with("record rejected: not found (ResourceNotFoundException)"),
                    "{text}"
                );
            }
            other => panic!("expected Rejected: {other:?}"),
        }
        assert!(text.contains(stream.as_str()), "names the stream: {text}");
        assert_eq!(error.into_record().data, format!("late-{i}"), "the record comes back");
    }
    let metrics = producer.shutdown().await;
    assert_eq!((metrics.user_records_put, metrics.user_records_failed), (100, 10));
}

fn consumer_config() -> ConsumerConfig {
    let mut config = ConsumerConfig::default();
    config.initial_position = InitialPosition::TrimHorizon;
    config.taker_interval = Duration::from_secs(2);
    config.cleanup_interval = Duration::from_secs(600);
    let mut polling = PollingSettings::default();
    polling.idle_time_between_reads = Duration::from_millis(200);
    config.retrieval = Retrieval::Polling(polling);
    config
}

async fn checkpoints(store: &dyn LeaseStore) -> Vec<(ShardId, ExtendedSequenceNumber)> {
    let leases = store.list().await.unwrap().leases;
    leases.into_iter().map(|l| (l.key, l.checkpoint)).collect()
}

/// The consumer's own log line for this case (ERROR "retrieval failed", naming the shard and
/// the stream) is checked on the fake in `consumer/tests/bad_input.rs`; this crate has no
/// `tracing` dependency to capture it. Here: what the consumer's retriever is answered, that
/// the consumer stops by itself naming the stream, and that nothing read or checkpointed is
/// lost or repeated.
#[tokio::test]
async fn a_stream_deleted_while_consumed_keeps_its_checkpoints_and_the_consumer_stops_by_itself() {
    let direct = kinesis().await.unwrap();
    let stream = unique_stream("bad-deleted-consumer");
    create_stream(direct.as_ref(), &stream, 1).await.unwrap();
    let entries: Vec<PutRecordsEntry> = (0..100)
        .map(|i| PutRecordsEntry {
            partition_key: PartitionKey::new(format!("k{}", i % 7)).unwrap(),
            explicit_hash_key: None,
            data: Bytes::from(format!("r-{i}")),
        })
        .collect();
    let outcomes = direct.put_records(&stream, entries).await.unwrap();
    let last = match outcomes.last() {
        Some(PutRecordsOutcome::Written { shard_id, sequence_number }) => {
            (shard_id.clone(), ExtendedSequenceNumber::new(sequence_number.clone(), 0))
        }
        other => panic!("{other:?}"),
    };
    let table = unique_name("bad-deleted-leases");
    let dynamodb = dynamodb().await.unwrap();
    let store = Arc::new(DynamoLeaseStore::from_client(dynamodb.clone(), table.clone()));
    let recorder = Recorder::new();
    let processors = recorder.clone();
    let mut consumer = Consumer::builder(direct.clone(), store.clone())
        .stream(stream.clone())
        .application_name("bad-deleted")
        .worker_id(WorkerId::new("w1"))
        .config(consumer_config())
        .start(move |_: &ShardId| {
            RecordingProcessor::new(processors.clone(), CheckpointPolicy::EveryBatch)
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while recorder.record_count() < 100 || checkpoints(store.as_ref()).await != [last.clone()] {
        assert!(Instant::now() < deadline, "records {} of 100", recorder.record_count());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    direct.delete_stream(&stream).await.unwrap();
    wait_deleted(direct.as_ref(), &stream).await;
    // What the retriever is answered from now on: not found, naming the stream.
    let error = direct
        .get_shard_iterator(&stream, &last.0, ShardIteratorPosition::TrimHorizon)
        .await
        .unwrap_err();
    let text = chain(&error);
    assert!(text.starts_with("not found (ResourceNotFoundException)"), "{text}");
    assert!(text.contains(stream.as_str()), "{text}");
    // The retriever's "not found" makes the scheduler list the shards, which confirms it.
    tokio::time::timeout(Duration::from_secs(30), consumer.stopped())
        .await
        .expect("the consumer stops by itself once the stream is gone");
    assert_eq!(recorder.record_count(), 100, "nothing read twice");
    assert_eq!(checkpoints(store.as_ref()).await, [last], "the checkpoint written stays");
    let error = consumer.shutdown().await.unwrap_err();
    let text = chain(&error);
    assert!(
        text.starts_with(&format!(
            "the consumer stopped by itself: stream {stream} no longer exists; it was deleted \
             while being consumed: not found (ResourceNotFoundException)"
        )),
        "{text}"
    );
    let RunError::Stopped { report, cause: FatalError::StreamDeleted { .. } } = error else {
        panic!("{error:?}")
    };
    assert!(report.timed_out.is_empty());
    let _ = dynamodb.delete_table().table_name(&table).send().await;
}

#[tokio::test]
async fn clients_without_credentials_fail_at_start_before_sending_and_say_why() {
    let direct = kinesis().await.unwrap();
    let stream = unique_stream("bad-no-credentials");
    create_stream(direct.as_ref(), &stream, 1).await.unwrap();
    // The substrate's configuration (endpoints, region) without its credentials.
    let mut config = sdk_config().await.unwrap().to_builder();
    config.set_credentials_provider(None);
    let config = config.build();
    let kinesis: Arc<dyn KinesisApi> = Arc::new(SdkKinesis::new(&config));

    let error =
        Producer::builder(kinesis.clone()).stream(stream.clone()).start().await.unwrap_err();
    assert!(matches!(error, BuildError::ListShards { .. }), "{error:?}");
    let text = chain(&error);
    assert!(
        text.starts_with(&format!(
            "listing the shards of stream {stream} failed: access denied: ListShards could not \
             be signed: no usable AWS credentials (set AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, a profile, or a role, or give the SdkConfig a credentials \
             provider)"
        )),
        "{text}"
    );
    assert!(text.contains("Be sure to set an identity, such as credentials"), "{text}");

    let table = unique_name("bad-no-credentials-leases");
    let store = Arc::new(DynamoLeaseStore::new(&config, table.clone()));
    let error = Consumer::builder(kinesis, store)
        .stream(stream.clone())
        .application_name("bad-no-credentials")
        .start(|_: &ShardId| RecordingProcessor::new(Recorder::new(), CheckpointPolicy::Never))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StartError::LeaseTable(LeaseStoreError::AccessDenied { .. })),
        "{error:?}"
    );
    let text = chain(&error);
    assert!(
        text.starts_with(
            "the lease table is not usable: DescribeTable on the lease table was denied: no \
             usable AWS credentials"
        ),
        "{text}"
    );
    assert!(text.contains("Be sure to set an identity, such as credentials"), "{text}");
    // Nothing was created on the way: no lease table.
    let tables = dynamodb().await.unwrap().list_tables().send().await.unwrap();
    assert!(!tables.table_names().contains(&table));
    direct.delete_stream(&stream).await.unwrap();
}
