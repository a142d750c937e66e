//! Faults injected by the limits proxy in front of the substrate's Kinesis engine, as a caller
//! going through `SdkKinesis` (SDK retries off on the data plane) sees them: server errors and
//! resets arrive as `ApiErrorKind::Transient`, writes answered with an error after the
//! upstream took them are in the stream, latency is added, faults follow the seed and can be
//! switched at run time, and they hit requests of any protocol.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kinesis_common::{
    ApiErrorKind, KinesisApi, PartitionKey, PutRecordsEntry, PutRecordsOutcome,
    ShardIteratorPosition, StreamName,
};
use kinesis_integration_tests::proxy::{
    FaultScope, Faults, Fraction, LimitsProxy, ProxyConfig, ServerError,
};
use kinesis_integration_tests::{create_stream, kinesis, open_shards, unique_stream};

fn entry(key: &str, data: &str) -> PutRecordsEntry {
    PutRecordsEntry {
        partition_key: PartitionKey::new(key).unwrap(),
        explicit_hash_key: None,
        data: Bytes::from(data.to_owned()),
    }
}

fn on_put_records(faults: Faults) -> Faults {
    Faults { scope: FaultScope::operations(["PutRecords"]), ..faults }
}

async fn setup(
    prefix: &str,
    config: ProxyConfig,
) -> (LimitsProxy, Arc<dyn KinesisApi>, Arc<dyn KinesisApi>, StreamName) {
    let direct = kinesis().await.unwrap();
    let stream = unique_stream(prefix);
    create_stream(direct.as_ref(), &stream, 1).await.unwrap();
    let proxy = LimitsProxy::in_front_of_kinesis(config).await.unwrap();
    let via_proxy = proxy.kinesis().await.unwrap();
    (proxy, direct, via_proxy, stream)
}

/// The partition keys stored in the stream's only shard, read directly from TRIM_HORIZON.
async fn stored_keys(api: &dyn KinesisApi, stream: &StreamName) -> Vec<String> {
    let shard = open_shards(api, stream).await.unwrap().remove(0);
    let mut iterator = api
        .get_shard_iterator(stream, &shard.id, ShardIteratorPosition::TrimHorizon)
        .await
        .unwrap();
    let mut keys = Vec::new();
    loop {
        let page = api.get_records(&iterator, Some(10_000)).await.unwrap();
        let empty = page.records.is_empty();
        keys.extend(page.records.into_iter().map(|r| r.partition_key));
        match page.next_iterator {
            Some(next) if !empty => iterator = next,
            _ => return keys,
        }
    }
}

#[tokio::test]
async fn injected_server_errors_reach_the_caller_as_transient_and_write_nothing() {
    let (proxy, direct, via_proxy, stream) = setup("fault-500", ProxyConfig::default()).await;
    for (error, code) in [
        (ServerError::InternalFailure, "InternalFailure"),
        (ServerError::ServiceUnavailable, "ServiceUnavailable"),
    ] {
        proxy.set_faults(on_put_records(Faults {
            error_before_forward: Fraction::ALWAYS,
            server_error: error,
            ..Faults::none()
        }));
        let err = via_proxy.put_records(&stream, vec![entry("lost", "x")]).await.unwrap_err();
        assert_eq!(err.kind(), ApiErrorKind::Transient, "{err}");
        assert!(err.is_retryable());
        assert_eq!(err.code(), Some(code));
    }
    assert!(stored_keys(direct.as_ref(), &stream).await.is_empty());

    // Faults off again: the next write goes through.
    proxy.set_faults(Faults::none());
    via_proxy.put_records(&stream, vec![entry("kept", "x")]).await.unwrap();
    assert_eq!(stored_keys(direct.as_ref(), &stream).await, ["kept"]);
    assert_eq!(proxy.stats().server_errors_injected, 2);
    direct.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn a_reset_connection_reaches_the_caller_as_transient() {
    let config = ProxyConfig {
        faults: on_put_records(Faults { reset_before_forward: Fraction::ALWAYS, ..Faults::none() }),
        ..ProxyConfig::default()
    };
    let (proxy, direct, via_proxy, stream) = setup("fault-reset", config).await;
    let err = via_proxy.put_records(&stream, vec![entry("lost", "x")]).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Transient, "{err}");
    assert!(stored_keys(direct.as_ref(), &stream).await.is_empty());
    assert_eq!(proxy.stats().resets_injected, 1);
    direct.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn a_write_answered_with_500_after_the_upstream_took_it_is_in_the_stream() {
    let config = ProxyConfig {
        faults: on_put_records(Faults { error_after_forward: Fraction::ALWAYS, ..Faults::none() }),
        ..ProxyConfig::default()
    };
    let (_proxy, direct, via_proxy, stream) = setup("fault-after", config).await;
    let err = via_proxy.put_records(&stream, vec![entry("written", "x")]).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Transient, "{err}");
    assert_eq!(stored_keys(direct.as_ref(), &stream).await, ["written"]);
    direct.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn a_connection_reset_after_the_upstream_took_the_write_leaves_it_in_the_stream() {
    let config = ProxyConfig {
        faults: on_put_records(Faults { reset_after_forward: Fraction::ALWAYS, ..Faults::none() }),
        ..ProxyConfig::default()
    };
    let (_proxy, direct, via_proxy, stream) = setup("fault-reset-after", config).await;
    let err = via_proxy.put_records(&stream, vec![entry("written", "x")]).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::Transient, "{err}");
    assert_eq!(stored_keys(direct.as_ref(), &stream).await, ["written"]);
    direct.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn added_latency_delays_each_request_by_at_least_the_configured_time() {
    let (proxy, direct, via_proxy, stream) = setup("fault-latency", ProxyConfig::default()).await;
    let latency = Duration::from_millis(300);
    proxy.set_faults(on_put_records(Faults {
        latency,
        latency_jitter: Duration::from_millis(50),
        ..Faults::none()
    }));
    // Real time, measured only as a lower bound: the proxy sleeps at least `latency`.
    let started = Instant::now();
    via_proxy.put_records(&stream, vec![entry("slow", "x")]).await.unwrap();
    assert!(started.elapsed() >= latency, "took only {:?}", started.elapsed());
    direct.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn injected_entry_throttling_fails_entries_under_the_limit() {
    let (proxy, direct, via_proxy, stream) = setup("fault-throttle", ProxyConfig::default()).await;
    proxy.set_faults(Faults { throttle_entries: Fraction::ALWAYS, ..Faults::none() });
    let outcomes =
        via_proxy.put_records(&stream, vec![entry("a", "x"), entry("b", "y")]).await.unwrap();
    for outcome in &outcomes {
        let PutRecordsOutcome::Failed(e) = outcome else { panic!("{outcome:?}") };
        assert_eq!(e.kind(), ApiErrorKind::Throttled);
    }

    // Half the entries, drawn from the seed: the ones that pass are written.
    proxy.set_faults(Faults { throttle_entries: Fraction::new(0.5).unwrap(), ..Faults::none() });
    let entries: Vec<_> = (0..40).map(|i| entry(&format!("k{i}"), "x")).collect();
    let outcomes = via_proxy.put_records(&stream, entries).await.unwrap();
    let written: Vec<String> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o, PutRecordsOutcome::Written { .. }))
        .map(|(i, _)| format!("k{i}"))
        .collect();
    assert!(!written.is_empty() && written.len() < 40, "{} of 40 written", written.len());
    assert_eq!(stored_keys(direct.as_ref(), &stream).await, written);
    let stats = proxy.stats();
    assert_eq!(stats.entries_throttled_injected, 2 + 40 - written.len() as u64);
    assert_eq!(stats.entries_throttled, 0);
    direct.delete_stream(&stream).await.unwrap();
}

/// Which of 30 sequential single-entry PutRecords fail through a proxy with this seed.
async fn failure_pattern(seed: u64, via: &dyn KinesisApi, stream: &StreamName) -> Vec<bool> {
    let mut pattern = Vec::new();
    for i in 0..30 {
        let result = via.put_records(stream, vec![entry(&format!("s{seed}-{i}"), "x")]).await;
        pattern.push(result.is_err());
    }
    pattern
}

#[tokio::test]
async fn the_same_seed_injects_the_same_faults() {
    let config = ProxyConfig {
        faults: on_put_records(Faults {
            error_before_forward: Fraction::new(0.5).unwrap(),
            ..Faults::none()
        }),
        seed: 42,
        ..ProxyConfig::default()
    };
    let (first, direct, via_first, stream) = setup("fault-seed", config.clone()).await;
    let a = failure_pattern(42, via_first.as_ref(), &stream).await;
    let second = LimitsProxy::in_front_of_kinesis(config).await.unwrap();
    let b = failure_pattern(42, second.kinesis().await.unwrap().as_ref(), &stream).await;
    assert_eq!(a, b);
    assert!(a.contains(&true) && a.contains(&false), "{a:?}");
    first.shutdown().await;
    second.shutdown().await;
    direct.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn faults_hit_requests_of_any_protocol() {
    // A DynamoDB call through a proxy whose upstream is the Kinesis engine: the fault answers
    // before anything is forwarded, so which service is behind the proxy does not matter.
    let proxy = LimitsProxy::in_front_of_kinesis(ProxyConfig {
        faults: Faults { error_before_forward: Fraction::ALWAYS, ..Faults::none() },
        ..ProxyConfig::default()
    })
    .await
    .unwrap();
    let dynamodb = proxy.dynamodb_client().await.unwrap();
    let err = dynamodb.list_tables().send().await.unwrap_err();
    let status = err.raw_response().map(|r| r.status().as_u16());
    assert_eq!(status, Some(500), "{err:?}");
    assert_eq!(aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&err), Some("InternalFailure"));
    let stats = proxy.stats();
    assert_eq!(stats.requests_for("ListTables"), 1);
    assert_eq!(stats.server_errors_injected, 1);
}

#[tokio::test]
async fn requests_out_of_the_fault_scope_pass_untouched() {
    let config = ProxyConfig {
        faults: on_put_records(Faults { error_before_forward: Fraction::ALWAYS, ..Faults::none() }),
        ..ProxyConfig::default()
    };
    let (proxy, direct, via_proxy, stream) = setup("fault-scope", config).await;
    // ListShards and DescribeStreamSummary are not PutRecords: they go through.
    let shards = via_proxy.list_shards(&stream).await.unwrap();
    assert_eq!(shards, direct.list_shards(&stream).await.unwrap());
    via_proxy.describe_stream_summary(&stream).await.unwrap();
    assert_eq!(proxy.stats().server_errors_injected, 0);
    direct.delete_stream(&stream).await.unwrap();
}
