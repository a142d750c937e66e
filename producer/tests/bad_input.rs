//! Bad input to the producer, on `FakeKinesis` under paused tokio time: records over the size
//! limit, empty and over-long partition keys, explicit hash keys out of range or not decimal,
//! an unknown stream, a stream being deleted, access denied.
//!
//! Each test checks two things: the caller gets an error whose text (the error and its
//! sources, as a logger prints them with `{:#}` or a report chain) names what to fix, and
//! nothing else is lost: the good records sent around the bad one are delivered, each once.
//! Missing credentials need the AWS SDK client and are tested in
//! `tests/tests/bad_input_emulator.rs`.

use std::sync::Arc;
use std::time::Duration;

use kinesis_common::aggregation::deaggregate;
use kinesis_common::error_chain as chain;
use kinesis_common::fake::{FakeKinesis, Operation};
use kinesis_common::{ApiError, ApiErrorKind, KinesisApi, StreamName};
use kinesis_producer::{
    BuildError, DeliveryError, Producer, ProducerConfig, Receipt, Record, SendError,
};

fn orders() -> StreamName {
    StreamName::new("orders").unwrap()
}

async fn setup(fake: &FakeKinesis, config: ProducerConfig) -> Producer {
    fake.create_active_stream(&orders(), 2).unwrap();
    let api: Arc<dyn KinesisApi> = Arc::new(fake.clone());
    Producer::builder(api).stream(orders()).config(config).start().await.unwrap()
}

fn good(i: usize) -> Record {
    Record::new(format!("key-{}", i % 13), format!("good-{i}"))
}

/// The data of every user record in the stream, as a KCL consumer would see it, sorted.
async fn stored(fake: &FakeKinesis) -> Vec<String> {
    let mut data = Vec::new();
    for shard in fake.list_shards(&orders()).await.unwrap() {
        for record in fake.records(&orders(), &shard.id).unwrap() {
            for user in deaggregate(&record, Some(shard.hash_range)).records {
                data.push(String::from_utf8_lossy(&user.data).into_owned());
            }
        }
    }
    data.sort();
    data
}

fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    let mut data: Vec<String> = range.map(|i| format!("good-{i}")).collect();
    data.sort();
    data
}

/// Sends 50 good records, `bad`, then 50 more good ones in the same burst (the same
/// aggregates and PutRecords requests as far as the producer batches them). Checks that `send`
/// refused `bad`, handing it back unchanged, that the 100 good ones were delivered and are in
/// the stream once each, and that the refused record was never counted; returns the refusal.
async fn refused_among_100_good(bad: Record) -> SendError {
    let fake = FakeKinesis::new();
    let producer = setup(&fake, ProducerConfig::default()).await;
    let mut receipts = Vec::new();
    for i in 0..50 {
        receipts.push(producer.send(good(i)).await.unwrap());
    }
    let refusal = producer.send(bad.clone()).await.unwrap_err();
    for i in 50..100 {
        receipts.push(producer.send(good(i)).await.unwrap());
    }
    for receipt in receipts {
        receipt.await.unwrap();
    }
    let metrics = producer.shutdown().await;
    assert_eq!((metrics.user_records_received, metrics.user_records_put), (100, 100));
    assert_eq!(metrics.user_records_failed, 0);
    assert_eq!(stored(&fake).await, expected(0..100), "the good records, each once");
    match &refusal {
        SendError::Invalid { record, .. } => assert_eq!(record, &bad, "handed back unchanged"),
        other => panic!("expected SendError::Invalid, got {other:?}"),
    }
    refusal
}

#[tokio::test(start_paused = true)]
async fn a_record_over_the_size_limit_is_refused_at_send_naming_the_limit_and_the_rest_arrive() {
    let refusal = refused_among_100_good(Record::new("big", vec![7u8; 1024 * 1024])).await;
    assert_eq!(
        chain(&refusal),
        "invalid record: record is 1048579 bytes (data plus partition key), over the limit of \
         1048576 bytes; split it, or raise the stream's maximum record size and the producer's \
         max_record_size"
    );
}

#[tokio::test(start_paused = true)]
async fn an_empty_partition_key_is_refused_at_send_naming_the_limit_and_the_rest_arrive() {
    let refusal = refused_among_100_good(Record::new("", "no key")).await;
    assert_eq!(
        chain(&refusal),
        "invalid record: partition key is empty: it must be 1 to 256 Unicode characters"
    );
}

#[tokio::test(start_paused = true)]
async fn an_over_long_partition_key_is_refused_at_send_naming_the_limit_and_the_rest_arrive() {
    let refusal = refused_among_100_good(Record::new("ü".repeat(257), "long key")).await;
    assert_eq!(
        chain(&refusal),
        "invalid record: partition key has 257 characters: the limit is 256 Unicode characters"
    );
}

#[tokio::test(start_paused = true)]
async fn an_explicit_hash_key_out_of_range_is_refused_at_send_naming_the_range_and_the_rest_arrive()
{
    let two_pow_128 = "340282366920938463463374607431768211456";
    let refusal =
        refused_among_100_good(Record::new("k", "x").with_explicit_hash_key(two_pow_128)).await;
    assert_eq!(
        chain(&refusal),
        format!(
            "invalid record: explicit hash key \"{two_pow_128}\" is out of range: the largest is \
             2^128-1 (340282366920938463463374607431768211455)"
        )
    );
}

#[tokio::test(start_paused = true)]
async fn a_non_decimal_explicit_hash_key_is_refused_at_send_naming_the_form_and_the_rest_arrive() {
    let refusal =
        refused_among_100_good(Record::new("k", "x").with_explicit_hash_key("0x1F")).await;
    assert_eq!(
        chain(&refusal),
        "invalid record: explicit hash key \"0x1F\" is not a decimal integer in 0..=2^128-1"
    );
}

/// A producer whose `max_record_size` was raised above the stream's maximum record size:
/// `send` accepts the record, Kinesis refuses it.
#[tokio::test(start_paused = true)]
async fn a_record_over_the_streams_limit_is_rejected_by_kinesis_and_the_rest_arrive() {
    let fake = FakeKinesis::new();
    let config = ProducerConfig { max_record_size: 2 * 1024 * 1024, ..ProducerConfig::default() };
    let producer = setup(&fake, config).await;
    let mut receipts = Vec::new();
    for i in 0..50 {
        receipts.push(producer.send(good(i)).await.unwrap());
    }
    let big = producer.send(Record::new("big", vec![7u8; 1536 * 1024])).await.unwrap();
    for i in 50..100 {
        receipts.push(producer.send(good(i)).await.unwrap());
    }
    let error = big.await.unwrap_err();
    assert!(matches!(error, DeliveryError::Rejected { .. }), "{error:?}");
    let text = chain(&error);
    assert!(text.starts_with("record rejected: invalid argument (InvalidArgumentException)"));
    assert!(text.contains("exceeds the stream's max record size of 1048576 bytes"), "{text}");
    let mut failed = Vec::new();
    for receipt in receipts {
        if let Err(error) = receipt.await {
            failed.push(chain(&error));
        }
    }
    assert!(
        failed.is_empty(),
        "{} good records failed with the big one, the first with: {}",
        failed.len(),
        failed[0]
    );
    assert_eq!(stored(&fake).await, expected(0..100));
}

/// Without aggregation a request carries hundreds of plain records: the refused request is
/// split in halves until the oversized record is alone, so it takes a handful of attempts (not
/// one per record) and every other record is written once, its own attempts bounded the same.
#[tokio::test(start_paused = true)]
async fn a_record_over_the_streams_limit_among_hundreds_of_plain_records_is_isolated_by_halving() {
    let fake = FakeKinesis::new();
    let config = ProducerConfig {
        max_record_size: 2 * 1024 * 1024,
        aggregation: kinesis_producer::Aggregation::Off,
        ..ProducerConfig::default()
    };
    let producer = setup(&fake, config).await;
    let unique = |i: usize| Record::new(format!("unique-{i}"), format!("good-{i}"));
    let mut receipts = Vec::new();
    for i in 0..150 {
        receipts.push(producer.send(unique(i)).await.unwrap());
    }
    let big = producer.send(Record::new("big", vec![7u8; 1536 * 1024])).await.unwrap();
    for i in 150..300 {
        receipts.push(producer.send(unique(i)).await.unwrap());
    }
    let error = big.await.unwrap_err();
    assert!(matches!(error, DeliveryError::Rejected { .. }), "{error:?}");
    assert!(chain(&error).contains("exceeds the stream's max record size"), "{}", chain(&error));
    // 301 records in requests of at most 500 (and 5 MiB): halving isolates one in at most
    // ceil(log2(301)) + 1 = 10 attempts.
    assert!((2..=10).contains(&error.attempts()), "attempts {}", error.attempts());
    for receipt in receipts {
        let delivery = receipt.await.unwrap();
        assert!(delivery.attempts <= 10, "attempts {}", delivery.attempts);
    }
    assert_eq!(stored(&fake).await, expected(0..300));
    // Far fewer requests than one per record.
    let requests = fake.counters().calls(Operation::PutRecords);
    assert!(requests <= 40, "{requests} PutRecords requests");
}

#[tokio::test(start_paused = true)]
async fn an_unknown_stream_fails_at_start_naming_the_stream() {
    let api: Arc<dyn KinesisApi> = Arc::new(FakeKinesis::new());
    let error = Producer::builder(api).stream(orders()).start().await.unwrap_err();
    assert!(matches!(error, BuildError::StreamNotFound { .. }), "{error:?}");
    assert_eq!(
        chain(&error),
        "stream orders not found: not found (ResourceNotFoundException): Stream orders under \
         account 000000000000 not found."
    );
}

/// The stream is deleted while the producer runs. AWS (and kinesis-mock) answer PutRecords
/// with `ResourceInUseException` while the stream is `DELETING` and with
/// `ResourceNotFoundException` once it is gone; the fake deletes at once, so the `DELETING`
/// window is injected with kinesis-mock's own answer.
#[tokio::test(start_paused = true)]
async fn records_sent_while_the_stream_is_deleted_come_back_naming_the_stream_and_earlier_ones_stay()
 {
    let fake = FakeKinesis::new();
    let producer = setup(&fake, ProducerConfig::default()).await;
    let mut receipts = Vec::new();
    for i in 0..100 {
        receipts.push(producer.send(good(i)).await.unwrap());
    }
    producer.flush().await;
    for receipt in receipts {
        receipt.await.unwrap();
    }

    fake.faults().fail_next_calls(
        Operation::PutRecords,
        usize::MAX,
        ApiError::from_code(
            "ResourceInUseException",
            "Stream arn:aws:kinesis:us-east-1:000000000000:stream/orders is not currently \
             ACTIVE or UPDATING.",
        ),
    );
    let late: Vec<Receipt> = {
        let mut late = Vec::new();
        for i in 100..110 {
            late.push(producer.send(good(i)).await.unwrap());
        }
        late
    };
    // Retried while DELETING (a busy resource may come back), then the stream is gone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    fake.faults().clear();
    fake.delete_stream(&orders()).await.unwrap();
    for receipt in late {
        match receipt.await {
            Err(error @ DeliveryError::Rejected { .. }) => {
                assert!(error.attempts() >= 2, "retried while DELETING: {error:?}");
                assert_eq!(
                    chain(&error),
                    "record rejected: not found (ResourceNotFoundException): Stream orders \
                     under account 000000000000 not found."
                );
                assert!(error.record().data.starts_with(b"good-1"), "the record comes back");
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
    }
    let metrics = producer.shutdown().await;
    assert_eq!((metrics.user_records_put, metrics.user_records_failed), (100, 10));
}

#[tokio::test(start_paused = true)]
async fn access_denied_at_start_fails_at_once_naming_the_stream_and_the_missing_permission() {
    let fake = FakeKinesis::new();
    fake.create_active_stream(&orders(), 1).unwrap();
    fake.faults().fail_next_calls(Operation::ListShards, 1, access_denied("ListShards"));
    let api: Arc<dyn KinesisApi> = Arc::new(fake.clone());
    let start = tokio::time::Instant::now();
    let error = Producer::builder(api).stream(orders()).start().await.unwrap_err();
    assert!(matches!(error, BuildError::ListShards { .. }), "{error:?}");
    assert_eq!(
        chain(&error),
        format!("listing the shards of stream orders failed: {}", access_denied("ListShards"))
    );
    // Not retried: retrying cannot grant a permission.
    assert_eq!(fake.counters().calls(Operation::ListShards), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_at_start_are_retried_and_the_producer_starts() {
    let fake = FakeKinesis::new();
    fake.faults()
        .fail_next_calls(Operation::ListShards, 3, ApiError::new(ApiErrorKind::Transient, "reset"))
        .fail_next_calls(
            Operation::ListShards,
            2,
            ApiError::new(ApiErrorKind::Throttled, "slow down"),
        );
    let producer = setup(&fake, ProducerConfig::default()).await;
    assert_eq!(fake.counters().calls(Operation::ListShards), 6);
    let delivery = producer.send(good(0)).await.unwrap().await.unwrap();
    assert_eq!(delivery.attempts, 1);
    producer.shutdown().await;
    assert_eq!(stored(&fake).await, expected(0..1));
}

#[tokio::test(start_paused = true)]
async fn transient_failures_at_start_fail_it_once_the_start_timeout_passed() {
    let fake = FakeKinesis::new();
    fake.create_active_stream(&orders(), 1).unwrap();
    let reset = ApiError::new(ApiErrorKind::Transient, "connection reset");
    fake.faults().fail_next_calls(Operation::ListShards, usize::MAX, reset.clone());
    let api: Arc<dyn KinesisApi> = Arc::new(fake.clone());
    let config =
        ProducerConfig { start_timeout: Duration::from_secs(10), ..ProducerConfig::default() };
    let start = tokio::time::Instant::now();
    let error = Producer::builder(api).stream(orders()).config(config).start().await.unwrap_err();
    assert!(matches!(error, BuildError::ListShards { .. }), "{error:?}");
    assert_eq!(chain(&error), format!("listing the shards of stream orders failed: {reset}"));
    assert!(start.elapsed() <= Duration::from_secs(10), "{:?}", start.elapsed());
    assert!(fake.counters().calls(Operation::ListShards) > 3);
}

#[tokio::test(start_paused = true)]
async fn access_denied_on_a_write_rejects_its_records_at_once_and_later_records_arrive() {
    let fake = FakeKinesis::new();
    let producer = setup(&fake, ProducerConfig::default()).await;
    fake.faults().fail_next_calls(Operation::PutRecords, 1, access_denied("PutRecords"));
    let refused = producer.send(Record::new("k", "denied")).await.unwrap();
    match refused.await {
        Err(error @ DeliveryError::Rejected { attempts: 1, .. }) => {
            assert_eq!(chain(&error), format!("record rejected: {}", access_denied("PutRecords")));
            assert_eq!(error.into_record(), Record::new("k", "denied"));
        }
        other => panic!("expected Rejected after one attempt, got {other:?}"),
    }
    // The policy was fixed: the producer did not stop, the next records go through.
    let mut receipts = Vec::new();
    for i in 0..100 {
        receipts.push(producer.send(good(i)).await.unwrap());
    }
    for receipt in receipts {
        receipt.await.unwrap();
    }
    assert_eq!(stored(&fake).await, expected(0..100));
    assert_eq!(producer.shutdown().await.rejected, 1);
}

/// What AWS answers when the IAM policy lacks the action (the `ApiError` Display prefixes its
/// kind and code).
fn access_denied(action: &str) -> ApiError {
    let error = ApiError::from_code(
        "AccessDeniedException",
        format!(
            "User: arn:aws:iam::000000000000:user/app is not authorized to perform: \
             kinesis:{action} on resource: arn:aws:kinesis:us-east-1:000000000000:stream/orders \
             because no identity-based policy allows the kinesis:{action} action"
        ),
    );
    assert_eq!(error.kind(), ApiErrorKind::AccessDenied);
    error
}
