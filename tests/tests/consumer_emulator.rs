//! The consumer against the substrate: Kinesis through `SdkKinesis`, the lease table in the
//! substrate's DynamoDB through `DynamoLeaseStore`, one fresh stream and table per test, in
//! real time. What the driver tests (`consumer/tests/driver.rs`) check on fakes under paused
//! time, checked here on the emulators: every record exactly once and where it was written,
//! per-key order, checkpoints at each shard's last record, restarts, balancing, failover,
//! resharding during consumption, and records aggregated and compressed by the producer.
//!
//! Records written directly carry `k{key}:{n}` (n counts per key from 0); the producer's carry
//! `k{key}:{n}:{padding}`. Every record's place (shard, sequence, sub-sequence) is known from
//! the PutRecords answer or the producer's delivery, so each record handed out is checked
//! against where it was written, not only counted.
//!
//! Waits poll with deadlines; the only fixed sleeps are short quiet periods after the last
//! expected record (to catch a record handed out twice) and the "no churn" window of the
//! balancing test.
//!
//! Reading, restarting, resharding and the round trip run in both retrieval modes, as the
//! driver tests do: GetRecords polling under the scenario's name, enhanced fan-out
//! (SubscribeToShard) under a name with `fan_out` in it ([`in_both_modes!`]). In fan-out mode the workers reach Kinesis
//! through a [`LimitsProxy`] without limits, only to count requests, so each test checks
//! that its records came over subscriptions, not GetRecords. kinesis-mock never ends a
//! closed shard's subscription and sends no ChildShards over SubscribeToShard, so there a
//! closed shard ends through the retriever's closed-shard fallback (ListShards after 10 s
//! without records, then GetRecords to the end; see `consumer/src/retrieval/fanout.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kinesis_common::compression::{Codec, codec_of};
use kinesis_common::{
    ConsumerName, ExtendedSequenceNumber, HashKey, KinesisApi, PartitionKey, PutRecordsEntry,
    PutRecordsOutcome, SequenceNumber, Shard, ShardId, ShardIteratorPosition, StreamName,
};
use kinesis_consumer::testing::{CheckpointPolicy, ProcessorEvent, Recorder, RecordingProcessor};
use kinesis_consumer::{
    Consumer, ConsumerConfig, DynamoLeaseStore, InitialPosition, KinesisClientRecord, Lease,
    LeaseStore, PollingSettings, Retrieval, ShutdownReason, ShutdownReport, WorkerId,
};
use kinesis_integration_tests::proxy::{Limits, LimitsProxy, ProxyConfig, ProxyStats};
use kinesis_integration_tests::{
    create_stream, dynamodb, kinesis, open_shards, sdk_config, unique_name, unique_stream,
    wait_active,
};
use kinesis_producer::{Compression, Producer, ProducerConfig, Record};
use tokio::time::Instant;

/// Where a user record is in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    shard: ShardId,
    sequence: SequenceNumber,
    /// Its index in a KPL aggregate; `None` for a record written on its own.
    sub_sequence: Option<u64>,
}

impl Place {
    fn of(shard: &ShardId, record: &KinesisClientRecord) -> Self {
        Self {
            shard: shard.clone(),
            sequence: record.sequence_number.clone(),
            sub_sequence: record.sub_sequence_number,
        }
    }

    fn position(&self) -> ExtendedSequenceNumber {
        ExtendedSequenceNumber::new(self.sequence.clone(), self.sub_sequence.unwrap_or(0))
    }
}

/// A record written: its partition key and place.
#[derive(Debug, Clone)]
struct Written {
    key: String,
    place: Place,
}

/// Written records by their data (unique: the data carries the key and the per-key number).
type WrittenSet = HashMap<String, Written>;

/// How the workers under test read their shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// GetRecords polling.
    Polling,
    /// Enhanced fan-out: SubscribeToShard through a registered stream consumer.
    FanOut,
}

/// The stream consumer fan-out workers register: one per stream (each test has a stream of
/// its own), shared by the workers of the test's application, as the KCL shares one per
/// application.
const FAN_OUT_CONSUMER: &str = "cons-emulator";

/// A stream and a lease table of their own, and what was written to the stream.
struct Fixture {
    /// Direct to the substrate: writes, resharding, inspection.
    kinesis: Arc<dyn KinesisApi>,
    /// What the workers read through: `kinesis` when polling; in fan-out mode the same
    /// substrate through [`proxy`](Self::proxy).
    reader: Arc<dyn KinesisApi>,
    /// In fan-out mode, a proxy without limits that counts the workers' requests.
    proxy: Option<Arc<LimitsProxy>>,
    dynamodb: aws_sdk_dynamodb::Client,
    store: Arc<DynamoLeaseStore>,
    stream: StreamName,
    table: String,
    /// The next number per key.
    counts: HashMap<usize, usize>,
}

async fn fixture(prefix: &str, shards: u32) -> Fixture {
    fixture_in(Mode::Polling, prefix, shards).await
}

/// A [`fixture`] whose workers read in `mode`.
async fn fixture_in(mode: Mode, prefix: &str, shards: u32) -> Fixture {
    let kinesis = kinesis().await.expect("substrate Kinesis client");
    let dynamodb = dynamodb().await.expect("substrate DynamoDB client");
    let (reader, proxy) = match mode {
        Mode::Polling => (kinesis.clone(), None),
        Mode::FanOut => {
            let config = ProxyConfig { limits: Limits::none(), ..ProxyConfig::default() };
            let proxy = LimitsProxy::in_front_of_kinesis(config).await.expect("counting proxy");
            (proxy.kinesis().await.expect("Kinesis through the proxy"), Some(Arc::new(proxy)))
        }
    };
    let stream = unique_stream(prefix);
    create_stream(kinesis.as_ref(), &stream, shards).await.unwrap();
    let table = unique_name(&format!("{prefix}-leases"));
    let store = Arc::new(DynamoLeaseStore::from_client(dynamodb.clone(), table.clone()));
    Fixture { kinesis, reader, proxy, dynamodb, store, stream, table, counts: HashMap::new() }
}

/// The configuration most tests use: from the oldest record, quick polling of idle shards,
/// quick checks of parents, no cleanup of finished leases while a test looks at them.
fn config() -> ConsumerConfig {
    config_in(Mode::Polling)
}

/// [`config`] reading in `mode`; in fan-out mode through the stream consumer
/// [`FAN_OUT_CONSUMER`], left registered at shutdown (the stream's deletion removes it).
fn config_in(mode: Mode) -> ConsumerConfig {
    let mut config = ConsumerConfig::default();
    config.initial_position = InitialPosition::TrimHorizon;
    config.taker_interval = Duration::from_secs(2);
    config.parent_poll_interval = Duration::from_millis(500);
    config.cleanup_interval = Duration::from_secs(600);
    config.retrieval = match mode {
        Mode::Polling => {
            let mut polling = PollingSettings::default();
            polling.idle_time_between_reads = Duration::from_millis(200);
            Retrieval::Polling(polling)
        }
        Mode::FanOut => Retrieval::FanOut { consumer_name: consumer_name(FAN_OUT_CONSUMER) },
    };
    config
}

fn consumer_name(name: &str) -> ConsumerName {
    ConsumerName::new(name).expect("a valid consumer name")
}

/// [`config`] with short lease timings, so failover and balancing take seconds.
fn fast_leases() -> ConsumerConfig {
    let mut config = config();
    config.lease_duration = Duration::from_secs(3);
    config.renew_interval = Duration::from_secs(1);
    config.taker_interval = Duration::from_secs(2);
    config
}

impl Fixture {
    /// Writes `count` records with keys `k0..k{keys}` round robin, each numbered per key,
    /// with PutRecords (500 a request), and returns where each went.
    async fn put(&mut self, keys: usize, count: usize) -> WrittenSet {
        let mut written = WrittenSet::new();
        let mut pending: Vec<(String, String)> = Vec::new();
        for i in 0..count {
            let key = i % keys;
            let n = self.counts.entry(key).or_insert(0);
            pending.push((format!("k{key}"), format!("k{key}:{n}")));
            *n += 1;
            if pending.len() == 500 || i + 1 == count {
                let batch = std::mem::take(&mut pending);
                let entries = batch
                    .iter()
                    .map(|(key, data)| PutRecordsEntry {
                        partition_key: PartitionKey::new(key.clone()).unwrap(),
                        explicit_hash_key: None,
                        data: Bytes::from(data.clone()),
                    })
                    .collect();
                let outcomes = self.kinesis.put_records(&self.stream, entries).await.unwrap();
                assert_eq!(outcomes.len(), batch.len());
                for ((key, data), outcome) in batch.into_iter().zip(outcomes) {
                    let PutRecordsOutcome::Written { shard_id, sequence_number } = outcome else {
                        panic!("record {data} was not written: {outcome:?}");
                    };
                    let place =
                        Place { shard: shard_id, sequence: sequence_number, sub_sequence: None };
                    written.insert(data, Written { key, place });
                }
            }
        }
        written
    }

    /// Writes `count` records through the producer (KPL aggregation per shard, the
    /// producer's default), numbered per key like [`put`](Self::put) with `pad` bytes of
    /// padding, and returns where each was delivered.
    async fn produce(
        &mut self,
        keys: usize,
        count: usize,
        pad: usize,
        compression: Option<Compression>,
    ) -> WrittenSet {
        let producer = Producer::builder(self.kinesis.clone())
            .stream(self.stream.clone())
            .config(ProducerConfig { compression, ..ProducerConfig::default() })
            .start()
            .await
            .unwrap();
        let padding = "p".repeat(pad);
        let mut receipts = Vec::with_capacity(count);
        for i in 0..count {
            let key = i % keys;
            let n = self.counts.entry(key).or_insert(0);
            let data = format!("k{key}:{n}:{padding}");
            *n += 1;
            let receipt =
                producer.send(Record::new(format!("k{key}"), data.clone())).await.unwrap();
            receipts.push((format!("k{key}"), data, receipt));
        }
        let mut written = WrittenSet::new();
        for (key, data, receipt) in receipts {
            let delivery = receipt.await.unwrap_or_else(|e| panic!("{data} not delivered: {e:?}"));
            let place = Place {
                shard: delivery.shard_id,
                sequence: delivery.sequence_number,
                sub_sequence: delivery.sub_sequence_number,
            };
            written.insert(data, Written { key, place });
        }
        producer.shutdown().await;
        written
    }

    /// Starts a worker whose processors record into `recorder`.
    async fn start(
        &self,
        worker: &str,
        recorder: &Recorder,
        policy: CheckpointPolicy,
        config: ConsumerConfig,
    ) -> Consumer {
        let recorder = recorder.clone();
        Consumer::builder(self.reader.clone(), self.store.clone())
            .stream(self.stream.clone())
            .application_name(self.table.clone())
            .worker_id(WorkerId::new(worker))
            .config(config)
            .start(move |_: &ShardId| RecordingProcessor::new(recorder.clone(), policy))
            .await
            .unwrap()
    }

    async fn leases(&self) -> Vec<Lease> {
        let scan = self.store.list().await.unwrap();
        assert!(scan.invalid.is_empty(), "invalid lease items: {:?}", scan.invalid);
        scan.leases
    }

    async fn checkpoints(&self) -> BTreeMap<ShardId, ExtendedSequenceNumber> {
        self.leases().await.into_iter().map(|l| (l.key, l.checkpoint)).collect()
    }

    /// How many leases each worker owns, by worker id.
    async fn owners(&self) -> BTreeMap<String, usize> {
        let mut owners = BTreeMap::new();
        for lease in self.leases().await {
            if let Some(owner) = lease.owner {
                *owners.entry(owner.as_str().to_owned()).or_insert(0) += 1;
            }
        }
        owners
    }

    /// Waits until every lease's checkpoint is exactly `expected`.
    async fn wait_for_checkpoints(
        &self,
        expected: &BTreeMap<ShardId, ExtendedSequenceNumber>,
        limit: Duration,
    ) {
        eventually("checkpoints at each shard's last record", limit, || async {
            let checkpoints = self.checkpoints().await;
            if &checkpoints == expected {
                Ok(())
            } else {
                Err(format!("checkpoints {checkpoints:?}, expected {expected:?}"))
            }
        })
        .await;
    }

    /// Another application on the same stream: a lease table of its own, workers reading
    /// through the same [`reader`](Self::reader). End it with
    /// [`finish_application`](Self::finish_application), before the stream's [`finish`](Self::finish).
    fn other_application(&self, prefix: &str) -> Fixture {
        let table = unique_name(&format!("{prefix}-leases"));
        let store = Arc::new(DynamoLeaseStore::from_client(self.dynamodb.clone(), table.clone()));
        Fixture {
            kinesis: self.kinesis.clone(),
            reader: self.reader.clone(),
            proxy: self.proxy.clone(),
            dynamodb: self.dynamodb.clone(),
            store,
            stream: self.stream.clone(),
            table,
            counts: HashMap::new(),
        }
    }

    /// What the workers' requests were, in fan-out mode (`None` when polling).
    fn requests(&self) -> Option<ProxyStats> {
        self.proxy.as_ref().map(|proxy| proxy.stats())
    }

    /// In fan-out mode, that the workers read over subscriptions: at least `subscriptions`
    /// SubscribeToShard calls, and GetRecords only for the closed-shard fallback, which
    /// starts each of at most `fallbacks` closed shards with one GetShardIterator call.
    /// Nothing to check when polling.
    fn assert_fanned_out(&self, subscriptions: u64, fallbacks: u64) {
        let Some(stats) = self.requests() else { return };
        let requests = &stats.requests;
        eprintln!("the workers' Kinesis requests: {requests:?}");
        let subscribed = stats.requests_for("SubscribeToShard");
        assert!(subscribed >= subscriptions, "{subscribed} subscriptions: {requests:?}");
        let iterators = stats.requests_for("GetShardIterator");
        assert!(iterators <= fallbacks, "{iterators} shard iterators: {requests:?}");
        if iterators == 0 {
            assert_eq!(stats.requests_for("GetRecords"), 0, "{requests:?}");
        }
    }

    /// Deletes the stream and the lease table.
    async fn finish(self) {
        self.kinesis.delete_stream(&self.stream).await.unwrap();
        self.finish_application().await;
    }

    /// Deletes the lease table of an [`other_application`](Self::other_application).
    async fn finish_application(self) {
        // Best effort: a table left behind is harmless on an emulator.
        let _ = self.dynamodb.delete_table().table_name(&self.table).send().await;
    }
}

/// Polls `probe` until it succeeds, failing with its last complaint after `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(state) if Instant::now() >= deadline => {
                panic!("timed out after {limit:?} waiting for {what}: {state}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits until `recorder` has at least `count` records.
async fn wait_for_records(recorder: &Recorder, count: usize, limit: Duration) {
    eventually("every record", limit, || async {
        let got = recorder.record_count();
        if got >= count { Ok(()) } else { Err(format!("{got} of {count} records")) }
    })
    .await;
}

/// Time for a record handed out twice to show up after the last expected one (several
/// polls at the tests' 200 ms idle time).
const QUIET: Duration = Duration::from_millis(1500);

fn text(record: &KinesisClientRecord) -> String {
    String::from_utf8(record.data.to_vec()).expect("the tests write UTF-8")
}

/// The key and per-key number a record's data carries.
fn key_and_number(data: &str) -> (&str, usize) {
    let mut fields = data.split(':');
    let key = fields.next().unwrap();
    let n = fields.next().and_then(|n| n.parse().ok());
    (key, n.unwrap_or_else(|| panic!("malformed record data {data:?}")))
}

/// Every record of `expected` was handed out exactly once, from where it was written, with
/// its partition key, and nothing else was.
fn assert_exactly_once(records: &[(ShardId, KinesisClientRecord)], expected: &WrittenSet) {
    let mut seen: HashSet<&str> = HashSet::with_capacity(records.len());
    for (shard, record) in records {
        let data = text(record);
        let Some((data, written)) = expected.get_key_value(&data) else {
            panic!("unexpected record {data:?} from {shard} at {:?}", record.sequence_number)
        };
        assert_eq!(Place::of(shard, record), written.place, "record {data:?} handed out from");
        assert_eq!(&*record.partition_key, written.key, "partition key of {data:?}");
        assert!(seen.insert(data), "record {data:?} handed out twice");
    }
    if seen.len() != expected.len() {
        let mut missing: Vec<&String> =
            expected.keys().filter(|d| !seen.contains(d.as_str())).collect();
        missing.sort();
        missing.truncate(10);
        panic!(
            "{} of {} records never handed out, among them {missing:?}",
            expected.len() - seen.len(),
            expected.len()
        );
    }
}

/// Each key's records were handed out in the order they were written.
fn assert_per_key_order(records: &[(ShardId, KinesisClientRecord)]) {
    let mut last: HashMap<String, (usize, ShardId)> = HashMap::new();
    for (shard, record) in records {
        let data = text(record);
        let (key, n) = key_and_number(&data);
        if let Some((before, from)) = last.insert(key.to_owned(), (n, shard.clone())) {
            assert!(
                n > before,
                "key {key}: {n} (from {shard}) handed out after {before} (from {from})"
            );
        }
    }
}

/// The position of each shard's last written record: where its lease's checkpoint must end.
fn last_positions(written: &WrittenSet) -> BTreeMap<ShardId, ExtendedSequenceNumber> {
    let mut last: BTreeMap<ShardId, ExtendedSequenceNumber> = BTreeMap::new();
    for w in written.values() {
        let position = w.place.position();
        let entry = last.entry(w.place.shard.clone()).or_insert_with(|| position.clone());
        if position > *entry {
            *entry = position;
        }
    }
    last
}

/// Every shard of a graceful shutdown ended as requested, in time.
fn assert_clean_shutdown(report: &ShutdownReport, shards: usize) {
    assert_eq!(report.shards.len(), shards, "{report:?}");
    assert!(report.timed_out.is_empty(), "{report:?}");
    assert!(
        report.shards.iter().all(|s| s.reason == Some(ShutdownReason::Requested)),
        "{report:?}"
    );
}

/// The checkpoint each shard's processor was initialized with, by shard.
fn initialized(recorder: &Recorder) -> BTreeMap<ShardId, ExtendedSequenceNumber> {
    recorder
        .events()
        .into_iter()
        .filter_map(|event| match event {
            ProcessorEvent::Initialized(shard, checkpoint) => Some((shard, checkpoint)),
            _ => None,
        })
        .collect()
}

/// How many processors were initialized.
fn starts(recorder: &Recorder) -> usize {
    recorder.events().iter().filter(|e| matches!(e, ProcessorEvent::Initialized(..))).count()
}

/// The events other than batches and checkpoints: how the processors started and ended.
fn lifecycle(recorder: &Recorder) -> Vec<ProcessorEvent> {
    let events = recorder.events().into_iter();
    events
        .filter(|e| !matches!(e, ProcessorEvent::Batch(..) | ProcessorEvent::Checkpointed(..)))
        .collect()
}

/// Runs each scenario `async fn scenario(mode: Mode)` as two tests: `$polling` reading with
/// GetRecords, `$fan_out` with SubscribeToShard (the driver tests' `in_both_modes!`, with
/// the polling tests keeping their names).
macro_rules! in_both_modes {
    ($($scenario:ident => $polling:ident, $fan_out:ident;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $polling() {
                $scenario(Mode::Polling).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $fan_out() {
                $scenario(Mode::FanOut).await;
            }
        )*
    };
}

in_both_modes! {
    reads_10k_records_from_4_shards =>
        consumer_reads_10k_records_from_4_shards_and_checkpoints,
        consumer_reads_10k_records_from_4_shards_and_checkpoints_fan_out;
    restarted_worker_resumes =>
        restarted_worker_resumes_after_checkpoint,
        restarted_worker_resumes_after_checkpoint_fan_out;
    split_and_merge_during_consumption =>
        split_and_merge_during_consumption_keep_per_key_order,
        split_and_merge_during_consumption_keep_per_key_order_fan_out;
}

async fn reads_10k_records_from_4_shards(mode: Mode) {
    let mut f = fixture_in(mode, "cons-10k", 4).await;
    // Half is waiting when the worker starts, half is written while it reads; at most 1 000
    // records a GetRecords call, so each shard is read in several pages and batches (fan-out
    // pushes events of its own size).
    let writing = Instant::now();
    let mut written = f.put(100, 5_000).await;
    let mut config = config_in(mode);
    if let Retrieval::Polling(polling) = &mut config.retrieval {
        polling.max_records = 1_000;
    }
    let recorder = Recorder::new();
    let consumer = f.start("w1", &recorder, CheckpointPolicy::EveryBatch, config).await;
    written.extend(f.put(100, 5_000).await);
    eprintln!("wrote 10 000 records in {:?}", writing.elapsed());
    let expected_checkpoints = last_positions(&written);
    assert_eq!(expected_checkpoints.len(), 4, "every shard got records");

    wait_for_records(&recorder, written.len(), Duration::from_secs(60)).await;
    f.wait_for_checkpoints(&expected_checkpoints, Duration::from_secs(15)).await;
    eprintln!("read and checkpointed after {:?}", writing.elapsed());
    assert_eq!(consumer.held_shards().len(), 4);
    tokio::time::sleep(QUIET).await;

    let batches = recorder
        .events()
        .iter()
        .filter(|e| matches!(e, ProcessorEvent::Batch(_, n) if *n > 0))
        .count();
    assert!(batches >= 12, "several batches per shard, {batches} in all");
    let records = recorder.records();
    assert_exactly_once(&records, &written);
    assert_per_key_order(&records);
    let initialized = initialized(&recorder);
    assert_eq!(initialized.len(), 4);
    assert_eq!(starts(&recorder), 4, "{:?}", lifecycle(&recorder));
    assert!(
        initialized.values().all(|c| *c == ExtendedSequenceNumber::TrimHorizon),
        "{initialized:?}"
    );

    let report = consumer.shutdown().await.unwrap();
    assert_clean_shutdown(&report, 4);
    let leases = f.leases().await;
    assert!(leases.iter().all(|l| l.owner.is_none()), "released: {leases:?}");
    assert_eq!(f.checkpoints().await, expected_checkpoints, "nothing moved at shutdown");
    f.assert_fanned_out(4, 0);
    f.finish().await;
}

async fn restarted_worker_resumes(mode: Mode) {
    let mut f = fixture_in(mode, "cons-restart", 4).await;
    let first_written = f.put(20, 2_000).await;
    let first = Recorder::new();
    let consumer = f.start("w1", &first, CheckpointPolicy::EveryBatch, config_in(mode)).await;
    wait_for_records(&first, first_written.len(), Duration::from_secs(60)).await;
    let checkpoints = last_positions(&first_written);
    f.wait_for_checkpoints(&checkpoints, Duration::from_secs(15)).await;
    let report = consumer.shutdown().await.unwrap();
    assert_clean_shutdown(&report, 4);
    assert_exactly_once(&first.records(), &first_written);

    let second_written = f.put(20, 1_000).await;
    let second = Recorder::new();
    let restarted = Instant::now();
    let consumer = f.start("w2", &second, CheckpointPolicy::EveryBatch, config_in(mode)).await;
    wait_for_records(&second, second_written.len(), Duration::from_secs(60)).await;
    eprintln!("the second worker read everything {:?} after it started", restarted.elapsed());
    f.wait_for_checkpoints(&last_positions(&second_written), Duration::from_secs(15)).await;
    tokio::time::sleep(QUIET).await;

    // The new worker took the released leases and started right after each checkpoint:
    // every new record once, and nothing from before (it would be an unexpected record).
    assert_eq!(initialized(&second), checkpoints, "resumed at the first worker's checkpoints");
    // Once each: no shard consumer failed and was started again (a subscription of the first
    // worker still open on the service's side must be waited out, not fail the shard).
    assert_eq!(starts(&second), 4, "{:?}", lifecycle(&second));
    let records = second.records();
    assert_exactly_once(&records, &second_written);
    assert_per_key_order(&records);
    assert_eq!(first.record_count(), first_written.len(), "the first worker read nothing more");

    let report = consumer.shutdown().await.unwrap();
    assert_clean_shutdown(&report, 4);
    f.assert_fanned_out(8, 0);
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_balance_8_shards_within_two_taker_cycles() {
    let f = fixture("cons-balance", 8).await;
    let config = fast_leases();
    let interval = config.taker_interval;
    let recorder = Recorder::new();
    let a = f.start("a", &recorder, CheckpointPolicy::Never, config.clone()).await;
    eventually("a holds all 8", Duration::from_secs(15), || async {
        let held = a.held_shards().len();
        if held == 8 { Ok(()) } else { Err(format!("a holds {held}")) }
    })
    .await;

    let joined = Instant::now();
    let b = f.start("b", &recorder, CheckpointPolicy::Never, config.clone()).await;
    let c = f.start("c", &recorder, CheckpointPolicy::Never, config.clone()).await;
    // The new workers' first taker cycle runs at their start, the second one interval later.
    // The table says who owns what; a robbed worker notices at its next renewal.
    let limit = interval * 2 + Duration::from_secs(3);
    let owners = eventually("a balanced table", limit, || async {
        let owners = f.owners().await;
        let balanced = owners.len() == 3
            && owners.values().all(|n| (2..=3).contains(n))
            && owners.values().sum::<usize>() == 8;
        if balanced { Ok(owners) } else { Err(format!("owners {owners:?}")) }
    })
    .await;
    eprintln!("balanced {owners:?} {:?} after b and c started", joined.elapsed());
    assert_eq!(owners.keys().map(String::as_str).collect::<Vec<_>>(), ["a", "b", "c"]);

    // Each worker runs exactly the shards it owns (after at most a renewal), every shard once.
    let workers = [("a", &a), ("b", &b), ("c", &c)];
    eventually("each worker running what it owns", Duration::from_secs(5), || async {
        let held: Vec<Vec<ShardId>> = workers.iter().map(|(_, w)| w.held_shards()).collect();
        let running: Vec<usize> = held.iter().map(Vec::len).collect();
        let owned: Vec<usize> = workers.iter().map(|(id, _)| owners[*id]).collect();
        let distinct: HashSet<&ShardId> = held.iter().flatten().collect();
        if running == owned && distinct.len() == 8 {
            Ok(())
        } else {
            Err(format!("running {held:?}, owned {owned:?}"))
        }
    })
    .await;

    // And it stays balanced: nobody steals from a worker at the target.
    tokio::time::sleep(interval * 2).await;
    assert_eq!(f.owners().await, owners, "no churn");

    for worker in [a, b, c] {
        let held = worker.held_shards().len();
        let report = worker.shutdown().await.unwrap();
        assert_clean_shutdown(&report, held);
    }
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_shards_taken_over_within_lease_duration() {
    let mut f = fixture("cons-failover", 4).await;
    let config = fast_leases();
    let (rec_a, rec_b) = (Recorder::new(), Recorder::new());
    let a = f.start("a", &rec_a, CheckpointPolicy::EveryBatch, config.clone()).await;
    eventually("a holds all 4", Duration::from_secs(15), || async {
        let held = a.held_shards().len();
        if held == 4 { Ok(()) } else { Err(format!("a holds {held}")) }
    })
    .await;
    let b = f.start("b", &rec_b, CheckpointPolicy::EveryBatch, config.clone()).await;
    eventually("two shards each", Duration::from_secs(15), || async {
        let held = (a.held_shards(), b.held_shards());
        if held.0.len() == 2 && held.1.len() == 2 { Ok(()) } else { Err(format!("{held:?}")) }
    })
    .await;
    let a_shards = a.held_shards();

    // Records before the kill, processed and checkpointed by both workers.
    let before = f.put(16, 800).await;
    eventually("records before the kill", Duration::from_secs(30), || async {
        let got = rec_a.record_count() + rec_b.record_count();
        if got >= before.len() { Ok(()) } else { Err(format!("{got} of {}", before.len())) }
    })
    .await;
    let checkpoints = last_positions(&before);
    f.wait_for_checkpoints(&checkpoints, Duration::from_secs(15)).await;
    let mut all = rec_a.records();
    all.extend(rec_b.records());
    assert_exactly_once(&all, &before);

    a.abort();
    let killed = Instant::now();
    // Let the runtime drop the aborted tasks before writing what only b may read.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a_events = rec_a.events().len();
    let b_before = rec_b.record_count();
    let after = f.put(16, 800).await;

    // b sees a's last renewal at its next scan, at most a taker interval after the kill; the
    // lease expires a lease duration after that sighting and is taken at the scan after that:
    // at worst about a lease duration and two taker intervals.
    let limit = config.lease_duration + config.taker_interval + Duration::from_secs(4);
    eventually("b holds all 4", limit + Duration::from_secs(10), || async {
        let held = b.held_shards().len();
        if held == 4 { Ok(()) } else { Err(format!("b holds {held}")) }
    })
    .await;
    let took = killed.elapsed();
    eprintln!("b took over a's shards {took:?} after the kill");
    assert!(took <= limit, "took {took:?}, more than {limit:?}");
    // a released nothing: b had to wait for the leases to expire, a lease duration after a's
    // last renewal (at most a renew interval before the kill).
    let earliest = config.lease_duration - config.renew_interval;
    assert!(took >= earliest, "took {took:?}, less than {earliest:?}: were the leases released?");
    let owners = f.owners().await;
    assert_eq!(owners, BTreeMap::from([("b".to_owned(), 4)]));

    wait_for_records(&rec_b, b_before + after.len(), Duration::from_secs(30)).await;
    f.wait_for_checkpoints(&last_positions(&after), Duration::from_secs(15)).await;
    tokio::time::sleep(QUIET).await;
    let killed_events = &rec_a.events()[a_events..];
    assert!(
        killed_events.is_empty(),
        "the killed worker's processors were called: {killed_events:?}"
    );
    let after_kill = rec_b.records().split_off(b_before);
    assert_exactly_once(&after_kill, &after);
    let mut all = rec_a.records();
    all.extend(rec_b.records());
    assert_per_key_order(&all);
    // b resumed a's shards at a's checkpoints.
    let resumed = initialized(&rec_b);
    for shard in &a_shards {
        assert_eq!(resumed.get(shard), checkpoints.get(shard), "{shard} resumed at");
    }

    let report = b.shutdown().await.unwrap();
    assert_clean_shutdown(&report, 4);
    f.finish().await;
}

/// Splits `shard` in the middle of its range and waits until the stream is ACTIVE again.
async fn split(f: &Fixture, shard: &Shard) {
    let (start, end) = (shard.hash_range.start().0, shard.hash_range.end().0);
    let middle = HashKey(start + (end - start) / 2 + 1);
    f.kinesis.split_shard(&f.stream, &shard.id, middle).await.unwrap();
    wait_active(f.kinesis.as_ref(), &f.stream, Duration::from_secs(30)).await.unwrap();
}

/// In fan-out mode on kinesis-mock, each closed shard (both parents and the first child) ends
/// through the closed-shard fallback, 10 s after its last record: the merged shard, two
/// generations down, starts some 20 s after the split.
async fn split_and_merge_during_consumption(mode: Mode) {
    let mut f = fixture_in(mode, "cons-reshard", 2).await;
    let recorder = Recorder::new();
    let started = Instant::now();
    let consumer = f.start("w1", &recorder, CheckpointPolicy::EveryBatch, config_in(mode)).await;
    let keys = 32;
    let mut written = f.put(keys, 320).await;
    wait_for_records(&recorder, 1, Duration::from_secs(30)).await;

    // Split the second shard while its records are being read.
    let before_split = open_shards(f.kinesis.as_ref(), &f.stream).await.unwrap();
    let (s0, s1) = (before_split[0].clone(), before_split[1].clone());
    split(&f, &s1).await;
    let after_split = open_shards(f.kinesis.as_ref(), &f.stream).await.unwrap();
    let ids: Vec<&ShardId> = after_split.iter().map(|s| &s.id).collect();
    assert_eq!(after_split.len(), 3, "{after_split:?}");
    assert_eq!(ids[0], &s0.id);
    let (c1, c2) = (after_split[1].clone(), after_split[2].clone());
    assert_eq!((&c1.parent, &c2.parent), (&Some(s1.id.clone()), &Some(s1.id.clone())));
    written.extend(f.put(keys, 320).await);

    // Merge the first shard with the first child right after writing to it (likely before
    // its records were all read): the merged shard has parents of two generations.
    f.kinesis.merge_shards(&f.stream, &s0.id, &c1.id).await.unwrap();
    wait_active(f.kinesis.as_ref(), &f.stream, Duration::from_secs(30)).await.unwrap();
    let after_merge = open_shards(f.kinesis.as_ref(), &f.stream).await.unwrap();
    assert_eq!(after_merge.len(), 2, "{after_merge:?}");
    let merged = after_merge[0].clone();
    assert_eq!(after_merge[1].id, c2.id);
    assert_eq!(merged.parents().collect::<Vec<_>>(), [&s0.id, &c1.id]);
    written.extend(f.put(keys, 320).await);

    wait_for_records(&recorder, written.len(), Duration::from_secs(60)).await;
    eprintln!("read everything {:?} after the worker started", started.elapsed());
    tokio::time::sleep(QUIET).await;
    let records = recorder.records();
    assert_exactly_once(&records, &written);
    assert_per_key_order(&records);
    let read: HashSet<&ShardId> = records.iter().map(|(s, _)| s).collect();
    assert_eq!(read.len(), 5, "two parents, two children, the merged shard: {read:?}");
    assert_eq!(starts(&recorder), 5, "each shard's processor once: {:?}", lifecycle(&recorder));

    // Children start only after every parent checkpointed SHARD_END.
    let events = recorder.events();
    let at = |wanted: &dyn Fn(&ProcessorEvent) -> bool, what: &str| {
        events.iter().position(wanted).unwrap_or_else(|| panic!("no event {what}: {events:?}"))
    };
    let ended = |shard: &ShardId| {
        at(&|e| matches!(e, ProcessorEvent::ShardEnded(s) if s == shard), &format!("{shard} ended"))
    };
    let first_batch = |shard: &ShardId| {
        at(&|e| matches!(e, ProcessorEvent::Batch(s, _) if s == shard), &format!("{shard} read"))
    };
    for (child, parents) in
        [(&c1.id, vec![&s1.id]), (&c2.id, vec![&s1.id]), (&merged.id, vec![&s0.id, &c1.id])]
    {
        for parent in parents {
            assert!(ended(parent) < first_batch(child), "{child} read before {parent} ended");
        }
    }
    let checkpoints = f.checkpoints().await;
    for parent in [&s0.id, &s1.id, &c1.id] {
        assert_eq!(checkpoints.get(parent), Some(&ExtendedSequenceNumber::ShardEnd), "{parent}");
    }
    let report = consumer.shutdown().await.unwrap();
    assert_clean_shutdown(&report, 2);
    // Five shards subscribed to; the three closed ones may end through the fallback.
    f.assert_fanned_out(5, 3);
    f.finish().await;
}

/// The stream's registered consumers (ListStreamConsumers): status by name.
async fn registered(
    control: &aws_sdk_kinesis::Client,
    stream_arn: &str,
) -> BTreeMap<String, String> {
    let listed = control.list_stream_consumers().stream_arn(stream_arn).send().await.unwrap();
    listed
        .consumers()
        .iter()
        .map(|c| (c.consumer_name().to_owned(), c.consumer_status().as_str().to_owned()))
        .collect()
}

/// Two applications fanning out from one stream, each with a lease table and a stream
/// consumer of its own: each reads every record once, in per-key order, and checkpoints
/// every shard's last record in its own table. Each registers its consumer at start and
/// deregisters it at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fan_out_applications_each_receive_everything() {
    let mut f = fixture_in(Mode::FanOut, "cons-two-apps", 4).await;
    let g = f.other_application("cons-two-apps-b");
    let stream_arn = f.kinesis.describe_stream_summary(&f.stream).await.unwrap().arn;
    let control = aws_sdk_kinesis::Client::new(&sdk_config().await.unwrap());
    assert_eq!(registered(&control, &stream_arn).await, BTreeMap::new(), "none before");

    // Some records are waiting when the applications start, more come while they read.
    let mut written = f.put(40, 2_000).await;
    let mut running = Vec::new();
    for (app, name) in [(&f, "app-a"), (&g, "app-b")] {
        let mut config = config_in(Mode::FanOut);
        config.retrieval = Retrieval::FanOut { consumer_name: consumer_name(name) };
        config.deregister_on_shutdown = true;
        let recorder = Recorder::new();
        let consumer = app.start("w1", &recorder, CheckpointPolicy::EveryBatch, config).await;
        running.push((consumer, recorder));
    }
    let active = |name: &str| (name.to_owned(), "ACTIVE".to_owned());
    assert_eq!(
        registered(&control, &stream_arn).await,
        BTreeMap::from([active("app-a"), active("app-b")]),
        "each application registered its stream consumer"
    );
    written.extend(f.put(40, 2_000).await);

    let expected_checkpoints = last_positions(&written);
    assert_eq!(expected_checkpoints.len(), 4, "every shard got records");
    let applications = [(&f, "app-a"), (&g, "app-b")];
    for ((app, name), (_, recorder)) in applications.iter().zip(&running) {
        wait_for_records(recorder, written.len(), Duration::from_secs(60)).await;
        app.wait_for_checkpoints(&expected_checkpoints, Duration::from_secs(15)).await;
        eprintln!("{name} read and checkpointed everything");
    }
    tokio::time::sleep(QUIET).await;
    for ((_, name), (consumer, recorder)) in applications.iter().zip(&running) {
        assert_eq!(consumer.held_shards().len(), 4, "{name}");
        assert_eq!(starts(recorder), 4, "{name}: {:?}", lifecycle(recorder));
        let records = recorder.records();
        assert_exactly_once(&records, &written);
        assert_per_key_order(&records);
    }
    // A subscription per shard and application, and no GetRecords.
    f.assert_fanned_out(8, 0);

    for (consumer, _) in running {
        let report = consumer.shutdown().await.unwrap();
        assert_clean_shutdown(&report, 4);
    }
    eventually("both stream consumers deregistered", Duration::from_secs(15), || async {
        let listed = registered(&control, &stream_arn).await;
        if listed.is_empty() { Ok(()) } else { Err(format!("still registered: {listed:?}")) }
    })
    .await;
    g.finish_application().await;
    f.finish().await;
}

/// The raw Kinesis records of a shard (until two empty pages, or the end of a closed shard).
async fn raw_records(f: &Fixture, shard: &ShardId) -> Vec<Bytes> {
    let mut iterator = f
        .kinesis
        .get_shard_iterator(&f.stream, shard, ShardIteratorPosition::TrimHorizon)
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut empty = 0;
    loop {
        let page = f.kinesis.get_records(&iterator, None).await.unwrap();
        empty = if page.records.is_empty() { empty + 1 } else { 0 };
        out.extend(page.records.into_iter().map(|r| r.data));
        match page.next_iterator {
            Some(next) if empty < 2 => iterator = next,
            _ => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_aggregated_and_compressed_records_arrive_as_user_records() {
    let mut f = fixture("cons-agg", 4).await;
    let compression = Compression { codec: Codec::Zstd, level: None, min_size: 256 };
    let written = f.produce(50, 4_000, 100, Some(compression)).await;

    // On the wire: few Kinesis records, each a zstd envelope.
    let mut kinesis_records = 0;
    for shard in open_shards(f.kinesis.as_ref(), &f.stream).await.unwrap() {
        for data in raw_records(&f, &shard.id).await {
            assert_eq!(
                codec_of(&data),
                Some(Codec::Zstd),
                "a record of {} is compressed",
                shard.id
            );
            kinesis_records += 1;
        }
    }
    assert!(kinesis_records * 10 <= written.len(), "{kinesis_records} Kinesis records");

    let recorder = Recorder::new();
    let consumer = f.start("w1", &recorder, CheckpointPolicy::EveryBatch, config()).await;
    wait_for_records(&recorder, written.len(), Duration::from_secs(60)).await;
    // Checkpoints are (sequence, sub-sequence) of each shard's last user record.
    f.wait_for_checkpoints(&last_positions(&written), Duration::from_secs(15)).await;
    tokio::time::sleep(QUIET).await;

    let records = recorder.records();
    assert!(records.iter().all(|(_, r)| r.is_aggregated()), "every record from an aggregate");
    assert_exactly_once(&records, &written);
    assert_per_key_order(&records);
    eprintln!("{} user records from {kinesis_records} Kinesis records", records.len());

    let report = consumer.shutdown().await.unwrap();
    assert_clean_shutdown(&report, 4);
    f.finish().await;
}

/// Also runs against LocalStack (`cargo xtask test` runs tests named `smoke` there).
///
/// LocalStack 4.7's Kinesis (kinesis-mock 0.4.13) reads a shard's first record again from an
/// iterator positioned after it (the NextShardIterator of a page that ended at the first
/// record, or AFTER_SEQUENCE_NUMBER of the first record), so a reader that gets a shard's
/// first record on its own gets it on every later call. Kinesis and kinesis-mock 0.6.2 do
/// not. So everything is written before the worker starts, in two producer runs, which
/// leaves at least two Kinesis records in each shard for the first GetRecords call.
///
/// The fan-out variant passes there too: LocalStack's own SubscribeToShard (Python, in front
/// of kinesis-mock 0.4.13) delivers the records of an open shard; unlike kinesis-mock 0.6.2 it
/// sends no heartbeat events on an idle shard and `ContinuationSequenceNumber` is always "0".
async fn round_trip(mode: Mode) {
    let mut f = fixture_in(mode, "cons-smoke", 2).await;
    let mut written = f.produce(20, 250, 40, None).await;
    written.extend(f.produce(20, 250, 40, None).await);
    let mut per_shard: BTreeMap<&ShardId, HashSet<&SequenceNumber>> = BTreeMap::new();
    for w in written.values() {
        per_shard.entry(&w.place.shard).or_default().insert(&w.place.sequence);
    }
    assert_eq!(per_shard.len(), 2, "both shards got records");
    assert!(per_shard.values().all(|s| s.len() >= 2), "two Kinesis records a shard or more");
    let recorder = Recorder::new();
    let consumer = f.start("w1", &recorder, CheckpointPolicy::EveryBatch, config_in(mode)).await;
    wait_for_records(&recorder, written.len(), Duration::from_secs(60)).await;
    f.wait_for_checkpoints(&last_positions(&written), Duration::from_secs(15)).await;
    tokio::time::sleep(QUIET).await;

    let records = recorder.records();
    assert!(records.iter().all(|(_, r)| r.is_aggregated()), "every record from an aggregate");
    assert_exactly_once(&records, &written);
    assert_per_key_order(&records);
    assert_eq!(starts(&recorder), 2, "{:?}", lifecycle(&recorder));

    let report = consumer.shutdown().await.unwrap();
    assert_clean_shutdown(&report, 2);
    let leases = f.leases().await;
    assert_eq!(leases.len(), 2);
    assert!(leases.iter().all(|l| l.owner.is_none()), "released: {leases:?}");
    f.assert_fanned_out(2, 0);
    f.finish().await;
}

in_both_modes! {
    round_trip => consumer_round_trip_smoke, consumer_round_trip_fan_out_smoke;
}
