//! Bad input to the consumer: a lease table with a wrong key schema, lease items with missing
//! or mistyped attributes (a checkpoint that is not a sequence number among them), an unknown
//! stream, a stream deleted while it is read, access denied (Kinesis and the lease table),
//! missing credentials, and corrupt aggregated and compressed records.
//!
//! Each test checks what the caller or the operator sees (the error and its sources as
//! `{:#}` prints them, or the log line the consumer writes when there is no caller to return
//! an error to) and that nothing else is lost: the other shards, the other records, the
//! checkpoints already written.
//!
//! Most tests run the whole consumer on `FakeKinesis` and the in-memory lease store under
//! paused time, as `driver.rs` does. The lease-table tests that need the DynamoDB adapter
//! talk to a one-answer HTTP server on the loopback interface (DynamoDB Local cannot deny
//! access), and the missing-credentials test fails before it sends anything.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io::{BufRead, BufReader, Read, Write as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kinesis_common::aggregation::{AggregateBuilder, UserRecord};
use kinesis_common::compression::{self, Codec};
use kinesis_common::error_chain as chain;
use kinesis_common::fake::{FakeKinesis, Operation, RecordedMetrics};
use kinesis_common::{
    ApiError, ExtendedSequenceNumber, KinesisApi, PartitionKey, PutRecordsEntry, ShardId,
    StreamName,
};
use kinesis_consumer::lease::contract::RawTable;
use kinesis_consumer::lease::item::{self, RawItem, RawValue};
use kinesis_consumer::lease::{Fault, InMemoryLeaseStore, InvalidItem};
use kinesis_consumer::testing::{CheckpointPolicy, Recorder, RecordingProcessor};
use kinesis_consumer::{
    Consumer, ConsumerConfig, DynamoLeaseStore, FatalError, InitialPosition, LeaseStore,
    LeaseStoreError, PollingSettings, Retrieval, RunError, ShutdownReport, StartError, WorkerId,
};
use tokio::time::Instant;

fn shard(n: u32) -> ShardId {
    ShardId::new(format!("shardId-{n:012}")).unwrap()
}

struct World {
    kinesis: Arc<FakeKinesis>,
    store: Arc<InMemoryLeaseStore>,
    stream: StreamName,
}

fn world(shards: u32) -> World {
    let kinesis = Arc::new(FakeKinesis::new());
    let stream = StreamName::new("bad-input").unwrap();
    kinesis.create_active_stream(&stream, shards).unwrap();
    World { kinesis, store: Arc::new(InMemoryLeaseStore::with_table()), stream }
}

fn config() -> ConsumerConfig {
    let mut config = ConsumerConfig::default();
    config.initial_position = InitialPosition::TrimHorizon;
    config.taker_interval = Duration::from_secs(5);
    let mut polling = PollingSettings::default();
    polling.idle_time_between_reads = Duration::from_millis(500);
    config.retrieval = Retrieval::Polling(polling);
    config
}

fn entry(key: &str, data: impl Into<Bytes>) -> PutRecordsEntry {
    PutRecordsEntry {
        partition_key: PartitionKey::new(key).unwrap(),
        explicit_hash_key: None,
        data: data.into(),
    }
}

impl World {
    /// Writes `count` plain records `"{prefix}-{i}"` with keys `k0..k{keys}`.
    async fn put(&self, prefix: &str, keys: usize, count: usize) {
        let entries =
            (0..count).map(|i| entry(&format!("k{}", i % keys), format!("{prefix}-{i}"))).collect();
        self.kinesis.put_records(&self.stream, entries).await.unwrap();
    }

    async fn start(&self, recorder: &Recorder) -> Result<Consumer, StartError> {
        self.start_with(self.kinesis.clone(), self.store.clone(), recorder).await
    }

    async fn start_with(
        &self,
        kinesis: Arc<dyn KinesisApi>,
        store: Arc<dyn LeaseStore>,
        recorder: &Recorder,
    ) -> Result<Consumer, StartError> {
        let recorder = recorder.clone();
        Consumer::builder(kinesis, store)
            .stream(self.stream.clone())
            .application_name("bad-input-test")
            .worker_id(WorkerId::new("w1"))
            .config(config())
            .start(move |_: &ShardId| {
                RecordingProcessor::new(recorder.clone(), CheckpointPolicy::EveryBatch)
            })
            .await
    }

    /// The data of the records stored in each shard.
    async fn stored(&self) -> BTreeMap<ShardId, Vec<String>> {
        let mut stored = BTreeMap::new();
        for s in self.kinesis.list_shards(&self.stream).await.unwrap() {
            let records = self.kinesis.records(&self.stream, &s.id).unwrap();
            let data = records.iter().map(|r| String::from_utf8_lossy(&r.data).into_owned());
            stored.insert(s.id, data.collect());
        }
        stored
    }

    async fn checkpoints(&self) -> BTreeMap<ShardId, ExtendedSequenceNumber> {
        let scan = self.store.list().await.unwrap();
        scan.leases.into_iter().map(|l| (l.key, l.checkpoint)).collect()
    }
}

/// The data delivered per shard, in delivery order.
fn delivered(recorder: &Recorder) -> BTreeMap<ShardId, Vec<String>> {
    let mut out: BTreeMap<ShardId, Vec<String>> = BTreeMap::new();
    for (shard, record) in recorder.records() {
        out.entry(shard).or_default().push(String::from_utf8_lossy(&record.data).into_owned());
    }
    out
}

/// Waits (in paused time, which advances while everything is idle) until `done` holds.
async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The consumer's warnings and errors, as a log subscriber would print them (message, then
/// `field=value`), for this test's thread only. The consumer's tasks run on it: the tests use
/// tokio's current-thread runtime.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(self.clone())
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn matching(&self, parts: &[&str]) -> Vec<String> {
        self.lines().into_iter().filter(|l| parts.iter().all(|p| l.contains(p))).collect()
    }
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl tracing::Subscriber for Log {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.is_event() && *metadata.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(format!("{} ", event.metadata().level()));
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// A consumer counter of one shard.
fn per_shard(counters: &RecordedMetrics, name: &str, shard: &ShardId) -> u64 {
    counters.value(&format!("{name}{{shard={shard}}}"))
}

#[tokio::test(start_paused = true)]
async fn corrupt_aggregates_and_envelopes_arrive_as_plain_records_with_their_bytes_and_are_counted()
{
    let counters = RecordedMetrics::default();
    let _metrics = metrics::set_default_local_recorder(&counters);
    let world = world(1);

    let mut builder = AggregateBuilder::new();
    for i in 0..5 {
        builder
            .push(UserRecord::new(PartitionKey::new(format!("u{i}")).unwrap(), format!("agg-{i}")));
    }
    let aggregate = builder.finish();
    // A KPL aggregate whose MD5 trailer does not match (one bit flipped in transit or by a
    // buggy producer): the KCL hands such a record on as one plain record.
    let mut bad_digest = aggregate.to_vec();
    *bad_digest.last_mut().unwrap() ^= 0x01;
    // A compression envelope whose zstd payload is cut short.
    let mut bad_envelope =
        compression::compress(Codec::Zstd, None, b"a compressed record").unwrap().to_vec();
    bad_envelope.truncate(bad_envelope.len() - 3);
    let good_envelope = compression::compress(Codec::Gzip, None, b"zipped").unwrap();

    world.put("before", 3, 10).await;
    let middle = vec![
        entry("a", aggregate.clone()),
        entry("a", bad_digest.clone()),
        entry("z", bad_envelope.clone()),
        entry("g", good_envelope),
    ];
    world.kinesis.put_records(&world.stream, middle).await.unwrap();
    world.put("after", 3, 10).await;

    let recorder = Recorder::new();
    let consumer = world.start(&recorder).await.unwrap();
    // 10 plain, 5 from the aggregate, the 2 corrupt ones whole, 1 decompressed, 10 plain.
    wait_until("every record", Duration::from_secs(60), || recorder.record_count() >= 28).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records: Vec<_> = recorder.records().into_iter().map(|(_, r)| r).collect();
    assert_eq!(records.len(), 28, "each record once");
    let data: Vec<Bytes> = records.iter().map(|r| r.data.clone()).collect();
    let text = |range: std::ops::Range<usize>| -> Vec<String> {
        data[range].iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect()
    };
    assert_eq!(text(0..10), (0..10).map(|i| format!("before-{i}")).collect::<Vec<_>>());
    assert_eq!(text(10..15), (0..5).map(|i| format!("agg-{i}")).collect::<Vec<_>>());
    let subs: Vec<_> = records[10..15].iter().map(|r| r.sub_sequence_number).collect();
    assert_eq!(subs, (0..5).map(Some).collect::<Vec<_>>());
    // The corrupt ones: plain records with the Kinesis record's bytes, exactly as written.
    assert_eq!(data[15], bad_digest, "corrupt aggregate passed on with its original bytes");
    assert_eq!(records[15].sub_sequence_number, None);
    assert_eq!(&*records[15].partition_key, "a");
    assert_eq!(data[16], bad_envelope, "corrupt envelope passed on with its original bytes");
    assert_eq!(records[16].sub_sequence_number, None);
    assert_eq!(&*records[16].partition_key, "z");
    assert_eq!(text(17..18), ["zipped"]);
    assert_eq!(text(18..28), (0..10).map(|i| format!("after-{i}")).collect::<Vec<_>>());

    assert_eq!(per_shard(&counters, "kinesis_consumer_corrupt_records_total", &shard(0)), 2);
    assert_eq!(per_shard(&counters, "kinesis_consumer_records_processed_total", &shard(0)), 28);
    // The corrupt records did not stop the checkpoint: it is at the last record.
    let last = world.kinesis.records(&world.stream, &shard(0)).unwrap().last().unwrap().clone();
    let expected = ExtendedSequenceNumber::new(last.sequence_number, 0);
    assert_eq!(world.checkpoints().await.get(&shard(0)), Some(&expected));
    consumer.shutdown().await.unwrap();
}

/// A minimal lease item as a KCL worker writes it.
fn lease_item(key: &ShardId, counter: &str, checkpoint: &str) -> RawItem {
    RawItem::from([
        (item::LEASE_KEY.into(), RawValue::S(key.as_str().into())),
        (item::LEASE_COUNTER.into(), RawValue::N(counter.into())),
        (item::CHECKPOINT.into(), RawValue::S(checkpoint.into())),
    ])
}

#[tokio::test(start_paused = true)]
async fn bad_lease_items_are_reported_by_item_and_attribute_and_the_other_shards_are_processed() {
    let log = Log::default();
    let _log = log.capture();
    let counters = RecordedMetrics::default();
    let _metrics = metrics::set_default_local_recorder(&counters);
    let world = world(4);
    world.put("r", 40, 400).await;
    // Shard 1: a mistyped counter; shard 2: no checkpoint; shard 3: a checkpoint that is not a
    // sequence number.
    let mut mistyped = lease_item(&shard(1), "0", "TRIM_HORIZON");
    mistyped.insert(item::LEASE_COUNTER.into(), RawValue::S("7".into()));
    let mut missing = lease_item(&shard(2), "0", "TRIM_HORIZON");
    missing.remove(item::CHECKPOINT);
    let not_a_sequence =
        lease_item(&shard(3), "0", "4959033827149025660855969253836157109592157598913658889B");
    let planted = [mistyped, missing, not_a_sequence];
    for bad in &planted {
        world.store.put_raw(bad.clone()).await;
    }

    let recorder = Recorder::new();
    let consumer = world.start(&recorder).await.unwrap();
    let stored = world.stored().await;
    let good = stored[&shard(0)].len();
    wait_until("shard 0", Duration::from_secs(60), || recorder.record_count() >= good).await;
    // Three more taker cycles: the bad leases are never taken, nor overwritten.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(delivered(&recorder), BTreeMap::from([(shard(0), stored[&shard(0)].clone())]));
    assert_eq!(consumer.held_shards(), [shard(0)]);
    for bad in &planted {
        let key = match &bad[item::LEASE_KEY] {
            RawValue::S(key) => key.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(world.store.get_raw(&key).await.as_ref(), Some(bad), "{key} left as it was");
    }

    // What an operator sees: LeaseStore::list names each item and attribute ...
    let scan = world.store.list().await.unwrap();
    let messages: Vec<String> = scan.invalid.iter().map(InvalidItem::to_string).collect();
    assert_eq!(
        messages,
        [
            "lease item \"shardId-000000000001\" has an invalid leaseCounter attribute: expected a \
             number (N), found a string (S)",
            "lease item \"shardId-000000000002\" has an invalid checkpoint attribute: missing",
            "lease item \"shardId-000000000003\" has an invalid checkpoint attribute: \
             \"4959033827149025660855969253836157109592157598913658889B\" is neither a sequence \
             number (decimal digits) nor one of TRIM_HORIZON, LATEST, AT_TIMESTAMP, SHARD_END",
        ]
    );
    // ... and the running consumer warns about each at every taker cycle.
    for (invalid, attribute) in
        scan.invalid.iter().zip(["leaseCounter", "checkpoint", "checkpoint"])
    {
        let warned = log.matching(&[
            "WARN lease item is not valid; ignored",
            &format!("item={}", invalid.key),
            &format!("attribute=\"{attribute}\""),
        ]);
        assert!(warned.len() >= 3, "{:#?}", log.lines());
    }
    // ... and a gauge to alert on.
    assert_eq!(counters.unlabelled("kinesis_consumer_invalid_lease_items"), Some(3));

    // The operator fixes shard 3's checkpoint: the consumer takes the lease at the next cycle
    // and reads the shard.
    world.store.put_raw(lease_item(&shard(3), "1", "TRIM_HORIZON")).await;
    let expected = good + stored[&shard(3)].len();
    wait_until("shard 3", Duration::from_secs(30), || recorder.record_count() >= expected).await;
    assert_eq!(delivered(&recorder)[&shard(3)], stored[&shard(3)]);
    assert_eq!(counters.unlabelled("kinesis_consumer_invalid_lease_items"), Some(2));
    consumer.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_lease_table_with_a_wrong_key_schema_fails_start_naming_the_table_and_what_to_do() {
    let world = world(1);
    let store = Arc::new(InMemoryLeaseStore::new());
    store.create_table_with_wrong_key().await;
    let recorder = Recorder::new();
    let error =
        world.start_with(world.kinesis.clone(), store.clone(), &recorder).await.unwrap_err();
    assert!(matches!(error, StartError::LeaseTable(LeaseStoreError::WrongSchema { .. })));
    assert_eq!(
        chain(&error),
        "the lease table is not usable: lease table \"in-memory\" has key schema [id HASH (N)]; \
         a lease table needs exactly one HASH key `leaseKey` of type S: use another table name \
         or delete this table"
    );
    // Nothing was written to the foreign table and no processor ran.
    assert_eq!(store.get_raw(shard(0).as_str()).await, None);
    assert!(recorder.events().is_empty());
}

/// What AWS answers when the IAM policy lacks the action.
fn access_denied(service: &str, action: &str, resource: &str) -> String {
    format!(
        "User: arn:aws:iam::000000000000:user/app is not authorized to perform: \
         {service}:{action} on resource: {resource} because no identity-based policy allows \
         the {service}:{action} action"
    )
}

const STREAM_ARN: &str = "arn:aws:kinesis:us-east-1:000000000000:stream/bad-input";

#[tokio::test(start_paused = true)]
async fn access_denied_to_the_stream_fails_start_naming_the_stream_and_the_permission() {
    let world = world(1);
    let message = access_denied("kinesis", "ListShards", STREAM_ARN);
    world.kinesis.faults().fail_next_calls(
        Operation::ListShards,
        1,
        ApiError::from_code("AccessDeniedException", message.clone()),
    );
    let started = Instant::now();
    let error = world.start(&Recorder::new()).await.unwrap_err();
    assert!(matches!(error, StartError::Kinesis { .. }), "{error:?}");
    assert_eq!(
        chain(&error),
        format!(
            "listing the shards of stream bad-input failed: access denied \
             (AccessDeniedException): {message}"
        )
    );
    // Not retried: waiting does not grant a permission.
    assert_eq!(world.kinesis.counters().calls(Operation::ListShards), 1);
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn access_denied_to_get_records_is_logged_naming_the_shard_and_the_shard_is_read_once_allowed()
 {
    let log = Log::default();
    let _log = log.capture();
    let world = world(2);
    world.put("r", 10, 100).await;
    let message = access_denied("kinesis", "GetRecords", STREAM_ARN);
    world.kinesis.faults().fail_next_calls(
        Operation::GetRecords,
        1,
        ApiError::from_code("AccessDeniedException", message.clone()),
    );
    let recorder = Recorder::new();
    let consumer = world.start(&recorder).await.unwrap();
    // The denied shard's lease is released without a checkpoint and taken again at a later
    // taker cycle (the policy was fixed meanwhile): every record arrives, each once.
    wait_until("every record", Duration::from_secs(60), || recorder.record_count() >= 100).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(delivered(&recorder), world.stored().await);
    let errors =
        log.matching(&["ERROR retrieval failed", "error=reading shard shardId-00000000000"]);
    assert_eq!(errors.len(), 1, "{:#?}", log.lines());
    assert!(errors[0].contains("kind: AccessDenied"), "{}", errors[0]);
    assert!(errors[0].contains(&message), "{}", errors[0]);
    consumer.shutdown().await.unwrap();
}

/// The stream is deleted while the consumer reads it. AWS (and kinesis-mock) answer
/// `ResourceInUseException` while the stream is `DELETING` and `ResourceNotFoundException`
/// once it is gone; the fake deletes at once, so the `DELETING` window is injected with
/// kinesis-mock's own answer. The first "not found" while reading makes the scheduler list the
/// shards, which confirms it: the consumer stops by itself, its checkpoints stay, and
/// `shutdown` says why.
#[tokio::test(start_paused = true)]
async fn a_stream_deleted_while_read_stops_the_consumer_naming_the_stream_and_its_checkpoints_stay()
{
    let log = Log::default();
    let _log = log.capture();
    let world = world(2);
    world.put("r", 10, 100).await;
    let recorder = Recorder::new();
    let mut consumer = world.start(&recorder).await.unwrap();
    wait_until("every record", Duration::from_secs(60), || recorder.record_count() >= 100).await;
    let mut last = BTreeMap::new();
    for (shard, _) in world.stored().await {
        let records = world.kinesis.records(&world.stream, &shard).unwrap();
        let sequence = records.last().unwrap().sequence_number.clone();
        last.insert(shard, ExtendedSequenceNumber::new(sequence, 0));
    }
    wait_until("checkpoints", Duration::from_secs(10), || {
        futures_now(world.store.list()).is_some_and(|scan| {
            scan.unwrap()
                .leases
                .into_iter()
                .map(|l| (l.key, l.checkpoint))
                .collect::<BTreeMap<_, _>>()
                == last
        })
    })
    .await;

    world.kinesis.faults().fail_next_calls(
        Operation::GetRecords,
        4,
        ApiError::from_code(
            "ResourceInUseException",
            format!("Stream {STREAM_ARN} is not currently ACTIVE or UPDATING."),
        ),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(futures_now(consumer.stopped()).is_none(), "a stream being deleted is retried");
    world.kinesis.delete_stream(&world.stream).await.unwrap();
    // Within one idle wait and one shard sync, not the shard sync interval.
    tokio::time::timeout(Duration::from_secs(10), consumer.stopped())
        .await
        .expect("the consumer stops by itself once the stream is gone");

    let errors = log.matching(&["ERROR retrieval failed", "ResourceNotFoundException"]);
    assert!(!errors.is_empty(), "{:#?}", log.lines());
    assert!(errors[0].contains("Stream bad-input under account 000000000000 not found"));
    assert!(errors[0].contains("error=reading shard shardId-00000000000"), "{}", errors[0]);
    assert_eq!(recorder.record_count(), 100, "nothing read twice");
    assert_eq!(world.checkpoints().await, last, "the checkpoints written stay");
    let error = consumer.shutdown().await.unwrap_err();
    assert_eq!(
        chain(&error),
        "the consumer stopped by itself: stream bad-input no longer exists; it was deleted while \
         being consumed: not found (ResourceNotFoundException): Stream bad-input under account \
         000000000000 not found."
    );
    let RunError::Stopped { report, cause } = error else { panic!("{error:?}") };
    assert!(matches!(cause, FatalError::StreamDeleted { .. }));
    assert!(report.timed_out.is_empty());
    assert!(held_none(&report), "every shard consumer was shut down: {report:?}");
}

/// Whether every shard consumer in the report ended (none was left running).
fn held_none(report: &ShutdownReport) -> bool {
    report.shards.iter().all(|s| s.reason.is_some() || s.error.is_some())
}

/// The lease table is deleted while the consumer runs: its leases and checkpoints are gone,
/// so the consumer stops by itself at its next lease-table scan, and says so.
#[tokio::test(start_paused = true)]
async fn a_lease_table_deleted_while_in_use_stops_the_consumer_and_says_the_checkpoints_are_gone() {
    let world = world(2);
    world.put("r", 10, 100).await;
    let recorder = Recorder::new();
    let mut consumer = world.start(&recorder).await.unwrap();
    wait_until("every record", Duration::from_secs(60), || recorder.record_count() >= 100).await;
    world.store.delete_table();
    // The taker scans every 5 s in this test's configuration.
    tokio::time::timeout(Duration::from_secs(10), consumer.stopped())
        .await
        .expect("the consumer stops by itself once the lease table is gone");
    let error = consumer.shutdown().await.unwrap_err();
    assert_eq!(
        chain(&error),
        "the consumer stopped by itself: the lease table was deleted while in use; its leases \
         and checkpoints are gone: lease table \"in-memory\" does not exist"
    );
    assert!(matches!(error, RunError::Stopped { cause: FatalError::LeaseTableDeleted(_), .. }));
}

/// Throttling, access denied and passing faults on every call never stop the consumer: it
/// keeps retrying, and reads everything once they pass.
#[tokio::test(start_paused = true)]
async fn errors_that_may_pass_never_stop_the_consumer() {
    let world = world(2);
    world.put("r", 10, 100).await;
    let stored = world.stored().await;
    let message = access_denied("kinesis", "ListShards", STREAM_ARN);
    let recorder = Recorder::new();
    let mut consumer = world.start(&recorder).await.unwrap();
    let listed = world.kinesis.counters().calls(Operation::ListShards);
    world.kinesis.faults().fail_next_calls(
        Operation::ListShards,
        3,
        ApiError::from_code("AccessDeniedException", message),
    );
    world.kinesis.faults().fail_next_calls(
        Operation::GetRecords,
        20,
        ApiError::from_code("ProvisionedThroughputExceededException", "slow down"),
    );
    for _ in 0..20 {
        world.store.inject(kinesis_consumer::lease::Operation::Scan, Fault::Transient);
    }
    // The shard sync and the cleanup list the shards once a minute each: all 3 denied calls
    // happen within three minutes.
    let stopped = tokio::time::timeout(Duration::from_secs(180), consumer.stopped()).await;
    assert!(stopped.is_err(), "the consumer stopped by itself");
    let calls = world.kinesis.counters().calls(Operation::ListShards);
    assert!(calls >= listed + 3, "{listed} then {calls}");
    assert!(world.store.calls(kinesis_consumer::lease::Operation::Scan) >= 20);
    wait_until("every record", Duration::from_secs(120), || recorder.record_count() >= 100).await;
    assert_eq!(delivered(&recorder), stored);
    consumer.shutdown().await.unwrap();
}

/// Throttling and passing faults at start (the lease table's creation, the first shard sync)
/// are retried, as the KCL retries a worker's initialization: the consumer starts and reads
/// everything.
#[tokio::test(start_paused = true)]
async fn transient_failures_at_start_are_retried_and_the_consumer_reads_everything() {
    let mut world = world(2);
    world.store = Arc::new(InMemoryLeaseStore::new());
    world.put("r", 10, 100).await;
    let stored = world.stored().await;
    use kinesis_consumer::lease::Operation as Store;
    world.store.inject(Store::CreateTable, Fault::Transient);
    world.store.inject(Store::CreateTable, Fault::Throttled);
    world.store.inject(Store::Scan, Fault::Transient);
    let reset = ApiError::from_code("InternalFailure", "connection reset");
    world.kinesis.faults().fail_next_calls(Operation::ListShards, 2, reset);
    let recorder = Recorder::new();
    let consumer = world.start(&recorder).await.unwrap();
    assert_eq!(world.store.calls(Store::CreateTable), 3);
    // Two failed syncs at ListShards, one at the Scan, then one that worked (the scheduler
    // may have listed again since).
    assert!(world.kinesis.counters().calls(Operation::ListShards) >= 4);
    wait_until("every record", Duration::from_secs(60), || recorder.record_count() >= 100).await;
    assert_eq!(delivered(&recorder), stored);
    consumer.shutdown().await.unwrap();
}

/// Faults that do not pass fail the start once `start_timeout` has passed, with the last
/// error; faults that cannot pass by waiting (access denied) fail it at once.
#[tokio::test(start_paused = true)]
async fn transient_failures_at_start_fail_it_once_the_start_timeout_passed() {
    let world = world(1);
    let reset = ApiError::from_code("InternalFailure", "connection reset");
    world.kinesis.faults().fail_next_calls(Operation::ListShards, usize::MAX, reset);
    let mut config = config();
    config.start_timeout = Duration::from_secs(10);
    let started = Instant::now();
    let error = Consumer::builder(world.kinesis.clone(), world.store.clone())
        .stream(world.stream.clone())
        .application_name("bad-input-test")
        .config(config)
        .start(|_: &ShardId| RecordingProcessor::new(Recorder::new(), CheckpointPolicy::EveryBatch))
        .await
        .unwrap_err();
    assert!(matches!(error, StartError::Kinesis { .. }), "{error:?}");
    assert_eq!(
        chain(&error),
        "listing the shards of stream bad-input failed: transient failure (InternalFailure): \
         connection reset"
    );
    assert!(started.elapsed() <= Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(world.kinesis.counters().calls(Operation::ListShards) > 3);
}

/// Polls a future once: `Some` if it is ready. The in-memory store never waits.
fn futures_now<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// Answers every HTTP request on a loopback port with the same DynamoDB error, as AWS does
/// for a caller whose IAM policy lacks the action. Returns the endpoint URL. The server
/// thread lives until the test process ends.
fn dynamodb_denying(message: String) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let answer = format!(
                "{{\"__type\":\"com.amazon.coral.service#AccessDeniedException\",\"message\":{message:?}}}"
            );
            let response = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.0\r\n\
                 x-amzn-requestid: bad-input-test\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = reader.into_inner().write_all(response.as_bytes());
        }
    });
    url
}

fn dynamodb_config(endpoint: &str) -> aws_sdk_dynamodb::config::Builder {
    aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
}

#[tokio::test]
async fn access_denied_to_the_lease_table_fails_start_naming_the_operation_and_the_permission() {
    let table = "arn:aws:dynamodb:us-east-1:000000000000:table/bad-input-test";
    let message = access_denied("dynamodb", "DescribeTable", table);
    let endpoint = dynamodb_denying(message.clone());
    let credentials =
        aws_sdk_dynamodb::config::Credentials::new("id", "secret", None, None, "test");
    let client = aws_sdk_dynamodb::Client::from_conf(
        dynamodb_config(&endpoint).credentials_provider(credentials).build(),
    );
    let store = Arc::new(DynamoLeaseStore::from_client(client, "bad-input-test"));
    let world = world(1);
    let error = world.start_with(world.kinesis.clone(), store, &Recorder::new()).await.unwrap_err();
    assert!(
        matches!(error, StartError::LeaseTable(LeaseStoreError::AccessDenied { .. })),
        "{error:?}"
    );
    let text = chain(&error);
    assert!(
        text.starts_with(
            "the lease table is not usable: DescribeTable on the lease table was denied"
        ),
        "{text}"
    );
    // The SDK prints DynamoDB's message inside its own `Error { .. }` debug form.
    assert!(text.contains(&format!("{message:?}")), "{text}");
}

#[tokio::test]
async fn a_lease_table_without_credentials_fails_start_before_sending_and_says_why() {
    // Nothing listens on port 1: the call must fail before it is sent.
    let client = aws_sdk_dynamodb::Client::from_conf(dynamodb_config("http://127.0.0.1:1").build());
    let store = Arc::new(DynamoLeaseStore::from_client(client, "bad-input-test"));
    let world = world(1);
    let error = world.start_with(world.kinesis.clone(), store, &Recorder::new()).await.unwrap_err();
    let text = chain(&error);
    // Not a passing fault: retrying cannot help.
    assert!(
        text.starts_with(
            "the lease table is not usable: DescribeTable on the lease table was denied: no \
             usable AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a \
             profile, or a role, or give the SdkConfig a credentials provider)"
        ),
        "{text}"
    );
    let StartError::LeaseTable(source) = &error else { panic!("{error:?}") };
    assert!(matches!(source, LeaseStoreError::AccessDenied { .. }), "{source:?}");
    assert!(!source.is_retryable());
    assert!(text.contains("no identity resolver"), "{text}");
    assert!(text.contains("Be sure to set an identity, such as credentials"), "{text}");
}
