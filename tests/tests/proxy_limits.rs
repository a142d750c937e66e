//! The limits proxy in front of the substrate's Kinesis engine: per-shard write limits
//! (records and bytes), the PutRecords and PutRecord caps, and pass-through of everything
//! else, SubscribeToShard's event stream included.
//!
//! Rate tests are deterministic without real-time waits: a shard's budget starts full (one
//! second's worth) and every entry of one request is judged at the same instant, so within one
//! PutRecords a shard admits exactly its burst.
//!
//! The per-shard rate tests send more than 500 entries in one request (with the proxy's
//! request caps off), so they need an engine that does not enforce the cap itself:
//! kinesis-mock or LocalStack, the backends `cargo xtask test` runs. kinesalite refuses them.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use bytes::Bytes;
use kinesis_common::{
    ApiErrorKind, ConsumerName, ConsumerStatus, HashKey, KinesisApi, PartitionKey, PutRecordsEntry,
    PutRecordsOutcome, SequenceNumber, Shard, ShardId, ShardIteratorPosition, StreamName,
};
use kinesis_integration_tests::proxy::{
    Limits, LimitsProxy, ProxyConfig, RequestCaps, ShardWriteLimit,
};
use kinesis_integration_tests::{create_stream, kinesis, open_shards, unique_stream, wait_active};

/// Patience for the emulator's asynchronous state changes (consumer registration, reshards).
const PATIENCE: Duration = Duration::from_secs(30);

fn entry(key: &str, data: impl Into<Bytes>) -> PutRecordsEntry {
    PutRecordsEntry {
        partition_key: PartitionKey::new(key).unwrap(),
        explicit_hash_key: None,
        data: data.into(),
    }
}

/// An entry for a given shard: its explicit hash key is the start of the shard's range.
fn entry_for(shard: &Shard, i: usize) -> PutRecordsEntry {
    PutRecordsEntry {
        explicit_hash_key: Some(shard.hash_range.start()),
        ..entry(&format!("k{i}"), format!("record {i}"))
    }
}

/// Shard limits only: the tests that put more than 500 entries in one request lift the caps.
fn shard_limits_only() -> ProxyConfig {
    ProxyConfig {
        limits: Limits { shard_write: Some(ShardWriteLimit::aws()), request: None },
        ..ProxyConfig::default()
    }
}

async fn setup(
    prefix: &str,
    shards: u32,
    config: ProxyConfig,
) -> (LimitsProxy, Arc<dyn KinesisApi>, Arc<dyn KinesisApi>, StreamName) {
    let direct = kinesis().await.unwrap();
    let stream = unique_stream(prefix);
    create_stream(direct.as_ref(), &stream, shards).await.unwrap();
    let proxy = LimitsProxy::in_front_of_kinesis(config).await.unwrap();
    let via_proxy = proxy.kinesis().await.unwrap();
    (proxy, direct, via_proxy, stream)
}

/// Every sequence number in a shard, read directly (not through the proxy) from TRIM_HORIZON.
async fn read_shard(
    api: &dyn KinesisApi,
    stream: &StreamName,
    shard: &ShardId,
) -> Vec<SequenceNumber> {
    let mut iterator =
        api.get_shard_iterator(stream, shard, ShardIteratorPosition::TrimHorizon).await.unwrap();
    let mut out = Vec::new();
    loop {
        let page = api.get_records(&iterator, Some(10_000)).await.unwrap();
        let empty = page.records.is_empty();
        out.extend(page.records.into_iter().map(|r| r.sequence_number));
        match page.next_iterator {
            Some(next) if !empty => iterator = next,
            _ => return out,
        }
    }
}

/// The written entries' sequence numbers per shard, and how many entries were throttled.
fn split_outcomes(outcomes: &[PutRecordsOutcome]) -> (Vec<(ShardId, SequenceNumber)>, usize) {
    let mut written = Vec::new();
    let mut throttled = 0;
    for outcome in outcomes {
        match outcome {
            PutRecordsOutcome::Written { shard_id, sequence_number } => {
                written.push((shard_id.clone(), sequence_number.clone()));
            }
            PutRecordsOutcome::Failed(e) => {
                assert_eq!(e.kind(), ApiErrorKind::Throttled, "{e}");
                assert_eq!(e.code(), Some("ProvisionedThroughputExceededException"));
                throttled += 1;
            }
        }
    }
    (written, throttled)
}

#[tokio::test]
async fn entries_over_a_thousand_records_per_second_on_one_shard_are_throttled_and_the_rest_are_written()
 {
    let (proxy, direct, _, stream) = setup("proxy-rate", 1, shard_limits_only()).await;
    let client = proxy.kinesis_client().await.unwrap();
    let entries: Vec<_> = (0..1500)
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("key-{i}"))
                .data(Blob::new(format!("record {i}")))
                .build()
                .unwrap()
        })
        .collect();
    let answer = client
        .put_records()
        .stream_name(stream.as_str())
        .set_records(Some(entries))
        .send()
        .await
        .unwrap();

    let results = answer.records();
    assert_eq!(results.len(), 1500, "one result per entry");
    let throttled: Vec<_> = results.iter().filter(|r| r.error_code().is_some()).collect();
    assert!(throttled.len() >= 500, "only {} of 1500 throttled", throttled.len());
    assert_eq!(answer.failed_record_count(), Some(throttled.len() as i32));
    for result in &throttled {
        assert_eq!(result.error_code(), Some("ProvisionedThroughputExceededException"));
        let message = result.error_message().unwrap_or_default();
        assert!(
            message.starts_with("Rate exceeded for shard shardId-")
                && message.contains(stream.as_str()),
            "{message}"
        );
    }

    // What was accepted is in the stream, and nothing else.
    let shard = &open_shards(direct.as_ref(), &stream).await.unwrap()[0];
    let mut accepted: Vec<String> =
        results.iter().filter_map(|r| r.sequence_number().map(str::to_owned)).collect();
    let mut stored: Vec<String> = read_shard(direct.as_ref(), &stream, &shard.id)
        .await
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    accepted.sort();
    stored.sort();
    assert_eq!(stored, accepted);

    let stats = proxy.stats();
    assert_eq!(stats.entries_throttled, throttled.len() as u64);
    assert_eq!(stats.entries_forwarded, accepted.len() as u64);
    let usage = stats.shard(stream.as_str(), shard.id.as_str()).unwrap();
    assert_eq!(usage.accepted_records, accepted.len() as u64);
    direct.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn each_shard_has_its_own_thousand_records_per_second() {
    let (_proxy, direct, via_proxy, stream) = setup("proxy-pershard", 2, shard_limits_only()).await;
    let shards = open_shards(direct.as_ref(), &stream).await.unwrap();
    // 1 100 entries for each shard, interleaved, in one request.
    let entries: Vec<_> = (0..2200).map(|i| entry_for(&shards[i % 2], i)).collect();
    let outcomes = via_proxy.put_records(&stream, entries).await.unwrap();
    let (written, throttled) = split_outcomes(&outcomes);
    for shard in &shards {
        let accepted = written.iter().filter(|(id, _)| id == &shard.id).count();
        assert!(accepted >= 1000, "shard {} took only {accepted}: budgets are shared", shard.id);
        assert_eq!(
            read_shard(direct.as_ref(), &stream, &shard.id).await.len(),
            accepted,
            "shard {}",
            shard.id
        );
    }
    assert!(throttled >= 100, "only {throttled} of 2200 throttled: no per-shard limit");
    direct.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn bytes_over_a_mebibyte_per_second_on_one_shard_are_throttled() {
    let (proxy, direct, via_proxy, stream) = setup("proxy-bytes", 1, ProxyConfig::default()).await;
    // 8 × 200 KiB in one request: five fit in the shard's 1 MiB, three do not.
    let entries: Vec<_> = (0..8).map(|i| entry(&format!("k{i}"), vec![b'x'; 200 * 1024])).collect();
    let outcomes = via_proxy.put_records(&stream, entries).await.unwrap();
    let (written, throttled) = split_outcomes(&outcomes);
    assert!(throttled >= 3, "only {throttled} of 8 throttled");
    assert!(!written.is_empty());
    let shard = &open_shards(direct.as_ref(), &stream).await.unwrap()[0];
    assert_eq!(read_shard(direct.as_ref(), &stream, &shard.id).await.len(), written.len());
    assert!(proxy.stats().record_bytes_forwarded <= 1024 * 1024);
    direct.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn put_record_over_the_limit_fails_whole_with_provisioned_throughput_exceeded() {
    // 1 byte per second: the first record empties the shard's budget for about ten seconds,
    // far longer than the next call takes.
    let config = ProxyConfig {
        limits: Limits {
            shard_write: Some(ShardWriteLimit { bytes_per_second: 1, ..ShardWriteLimit::aws() }),
            request: Some(RequestCaps::aws()),
        },
        ..ProxyConfig::default()
    };
    let (proxy, direct, _, stream) = setup("proxy-putrecord", 1, config).await;
    let client = proxy.kinesis_client().await.unwrap();
    let put = || {
        client
            .put_record()
            .stream_name(stream.as_str())
            .partition_key("k")
            .data(Blob::new("123456789"))
            .send()
    };
    let first = put().await.unwrap();
    let err = put().await.unwrap_err();
    let service_error = err.into_service_error();
    assert!(service_error.is_provisioned_throughput_exceeded_exception(), "{service_error:?}");
    let message = aws_sdk_kinesis::error::ProvideErrorMetadata::message(&service_error)
        .unwrap_or_default()
        .to_owned();
    assert!(message.starts_with("Rate exceeded for shard shardId-"), "{message}");

    let shard = &open_shards(direct.as_ref(), &stream).await.unwrap()[0];
    let stored = read_shard(direct.as_ref(), &stream, &shard.id).await;
    assert_eq!(stored.len(), 1, "only the first PutRecord was written");
    assert_eq!(stored[0].as_str(), first.sequence_number());
    assert_eq!(proxy.stats().entries_throttled, 1);
    direct.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn put_records_over_500_entries_is_refused_as_invalid_argument() {
    let (proxy, direct, via_proxy, stream) = setup("proxy-501", 1, ProxyConfig::default()).await;
    let entries: Vec<_> = (0..501).map(|i| entry(&format!("k{i}"), "x")).collect();
    let err = via_proxy.put_records(&stream, entries).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::InvalidArgument, "{err}");
    assert_eq!(err.code(), Some("ValidationException"));
    assert!(err.message().contains("less than or equal to 500"), "{err}");
    let shard = &open_shards(direct.as_ref(), &stream).await.unwrap()[0];
    assert!(read_shard(direct.as_ref(), &stream, &shard.id).await.is_empty());
    assert_eq!(proxy.stats().requests_rejected, 1);
    direct.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn put_records_over_5_mib_with_partition_keys_is_refused_as_invalid_argument() {
    let (_proxy, direct, via_proxy, stream) = setup("proxy-5mib", 1, ProxyConfig::default()).await;
    // Five records of exactly 1 MiB: the partition keys push the request over 5 MiB.
    let entries: Vec<_> =
        (0..5).map(|i| entry(&format!("k{i}"), vec![b'x'; 1024 * 1024])).collect();
    let err = via_proxy.put_records(&stream, entries).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::InvalidArgument, "{err}");
    assert_eq!(err.code(), Some("InvalidArgumentException"));
    assert_eq!(err.message(), "Records size exceeds 5 MB limit");
    direct.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn a_record_over_1_mib_is_refused_as_a_validation_error() {
    let (_proxy, direct, via_proxy, stream) = setup("proxy-1mib", 1, ProxyConfig::default()).await;
    let entries = vec![entry("small", "x"), entry("big", vec![b'x'; 1024 * 1024 + 1])];
    let err = via_proxy.put_records(&stream, entries).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::InvalidArgument, "{err}");
    assert_eq!(err.code(), Some("ValidationException"));
    assert!(err.message().contains("'records.2.member.data'"), "{err}");
    direct.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn after_a_split_through_the_proxy_each_child_has_its_own_budget() {
    let (_proxy, direct, via_proxy, stream) = setup("proxy-split", 1, shard_limits_only()).await;
    let parent = open_shards(direct.as_ref(), &stream).await.unwrap().remove(0);
    let mid = HashKey(
        parent.hash_range.start().0 + (parent.hash_range.end().0 - parent.hash_range.start().0) / 2,
    );
    via_proxy.split_shard(&stream, &parent.id, mid).await.unwrap();
    wait_active(direct.as_ref(), &stream, PATIENCE).await.unwrap();
    let children = open_shards(direct.as_ref(), &stream).await.unwrap();
    assert_eq!(children.len(), 2);

    let entries: Vec<_> = (0..2200).map(|i| entry_for(&children[i % 2], i)).collect();
    let outcomes = via_proxy.put_records(&stream, entries).await.unwrap();
    let (written, throttled) = split_outcomes(&outcomes);
    for child in &children {
        let accepted = written.iter().filter(|(id, _)| id == &child.id).count();
        assert!(accepted >= 1000, "child {} took only {accepted}", child.id);
    }
    assert!(throttled >= 100, "only {throttled} throttled");
    direct.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn subscribe_to_shard_streams_events_through_the_proxy() {
    let (proxy, direct, via_proxy, stream) = setup("proxy-efo", 1, ProxyConfig::default()).await;
    let shard = open_shards(direct.as_ref(), &stream).await.unwrap().remove(0);
    let written: Vec<_> = (0..3).map(|i| entry(&format!("k{i}"), format!("r{i}"))).collect();
    via_proxy.put_records(&stream, written).await.unwrap();

    let stream_arn = via_proxy.describe_stream_summary(&stream).await.unwrap().arn;
    let name = ConsumerName::new("proxy-consumer").unwrap();
    let consumer = via_proxy.register_stream_consumer(&stream_arn, &name).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    // Registration is asynchronous in the emulator: poll until ACTIVE.
    while via_proxy.describe_stream_consumer(&stream_arn, &name).await.unwrap().status
        != ConsumerStatus::Active
    {
        assert!(tokio::time::Instant::now() < deadline, "consumer not ACTIVE within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut subscription = via_proxy
        .subscribe_to_shard(&consumer.arn, &shard.id, ShardIteratorPosition::TrimHorizon)
        .await
        .unwrap();
    let mut received = 0;
    while received < 3 {
        let event = tokio::time::timeout(PATIENCE, subscription.next_event())
            .await
            .expect("no SubscribeToShard event through the proxy")
            .unwrap()
            .expect("the subscription ended early");
        received += event.records.len();
    }
    assert_eq!(received, 3);
    assert_eq!(proxy.stats().requests_for("SubscribeToShard"), 1);
    drop(subscription);
    direct.delete_stream(&stream).await.unwrap();
}
