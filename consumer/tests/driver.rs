//! Driver tests of the consumer: the scheduler, keepers, shard consumers and polling
//! retrieval together, on `FakeKinesis` and the in-memory lease store, under paused time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use kinesis_common::fake::{FakeKinesis, Operation};
use kinesis_common::{
    ConsumerName, ExtendedSequenceNumber, HashKey, KinesisApi, PartitionKey, PutRecordsEntry,
    Shard, ShardId, StreamName,
};
use kinesis_consumer::lease::InMemoryLeaseStore;
use kinesis_consumer::testing::{
    CheckpointPolicy, Hook, ProcessorEvent, Recorder, RecordingProcessor,
};
use kinesis_consumer::{
    Batch, Checkpointer, Consumer, ConsumerConfig, InitialPosition, LeaseStore, PollingSettings,
    ProcessorError, Retrieval, ShardProcessor, ShutdownReason, WorkerId,
};
use tokio::time::Instant;

struct World {
    kinesis: Arc<FakeKinesis>,
    store: Arc<InMemoryLeaseStore>,
    stream: StreamName,
}

/// How the consumer under test reads its shards.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Polling,
    FanOut,
}

fn world(_mode: Mode, shards: u32) -> World {
    let kinesis = Arc::new(FakeKinesis::new());
    let stream = StreamName::new("driver").unwrap();
    kinesis.create_active_stream(&stream, shards).unwrap();
    World { kinesis, store: Arc::new(InMemoryLeaseStore::with_table()), stream }
}

fn config(mode: Mode) -> ConsumerConfig {
    let mut config = ConsumerConfig::default();
    config.initial_position = InitialPosition::TrimHorizon;
    config.taker_interval = Duration::from_secs(5);
    config.retrieval = match mode {
        Mode::Polling => {
            let mut polling = PollingSettings::default();
            polling.idle_time_between_reads = Duration::from_millis(500);
            Retrieval::Polling(polling)
        }
        Mode::FanOut => Retrieval::FanOut { consumer_name: ConsumerName::new("driver").unwrap() },
    };
    config
}

impl World {
    /// Writes `count` records with keys `k0..k{keys}`, data `"{key}:{n}"` where n counts
    /// per key from `first`.
    async fn put(&self, keys: usize, count: usize, first: &mut HashMap<usize, usize>) {
        let mut entries = Vec::new();
        for i in 0..count {
            let key = i % keys;
            let n = first.entry(key).or_insert(0);
            entries.push(PutRecordsEntry {
                partition_key: PartitionKey::new(format!("k{key}")).unwrap(),
                explicit_hash_key: None,
                data: Bytes::from(format!("k{key}:{n}")),
            });
            *n += 1;
            if entries.len() == 500 {
                self.kinesis.put_records(&self.stream, std::mem::take(&mut entries)).await.unwrap();
            }
        }
        if !entries.is_empty() {
            self.kinesis.put_records(&self.stream, entries).await.unwrap();
        }
    }

    async fn start(
        &self,
        worker: &str,
        recorder: &Recorder,
        policy: CheckpointPolicy,
        config: ConsumerConfig,
        hook: Option<Hook>,
    ) -> Consumer {
        let recorder = recorder.clone();
        Consumer::builder(self.kinesis.clone(), self.store.clone())
            .stream(self.stream.clone())
            .application_name("driver-test")
            .worker_id(WorkerId::new(worker))
            .config(config)
            .start(move |_: &ShardId| {
                let processor = RecordingProcessor::new(recorder.clone(), policy);
                match &hook {
                    Some(hook) => processor.with_hook(hook.clone()),
                    None => processor,
                }
            })
            .await
            .unwrap()
    }

    async fn checkpoints(&self) -> BTreeMap<ShardId, ExtendedSequenceNumber> {
        let scan = self.store.list().await.unwrap();
        scan.leases.into_iter().map(|l| (l.key, l.checkpoint)).collect()
    }

    /// How many leases each worker owns, by worker id.
    async fn owners(&self) -> BTreeMap<String, usize> {
        let mut owners = BTreeMap::new();
        for lease in self.store.list().await.unwrap().leases {
            if let Some(owner) = lease.owner {
                *owners.entry(owner.as_str().to_owned()).or_insert(0) += 1;
            }
        }
        owners
    }

    async fn last_sequences(&self) -> BTreeMap<ShardId, ExtendedSequenceNumber> {
        let shards = self.kinesis.list_shards(&self.stream).await.unwrap();
        let mut last = BTreeMap::new();
        for shard in shards {
            if let Some(record) = self.kinesis.records(&self.stream, &shard.id).unwrap().last() {
                last.insert(
                    shard.id,
                    ExtendedSequenceNumber::new(record.sequence_number.clone(), 0),
                );
            }
        }
        last
    }
}

/// Waits (in paused time, which advances while everything is idle) until `done` holds.
async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn data(record: &kinesis_consumer::KinesisClientRecord) -> String {
    String::from_utf8(record.data.to_vec()).unwrap()
}

/// The numbers delivered per key, in delivery order.
fn per_key(
    records: &[(ShardId, kinesis_consumer::KinesisClientRecord)],
) -> BTreeMap<String, Vec<usize>> {
    let mut keys: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (_, record) in records {
        let text = data(record);
        let (key, n) = text.split_once(':').unwrap();
        keys.entry(key.to_owned()).or_default().push(n.parse().unwrap());
    }
    keys
}

async fn one_worker_reads_every_record_of_four_shards_in_order_and_checkpoints(mode: Mode) {
    let world = world(mode, 4);
    let mut counts = HashMap::new();
    world.put(40, 2_000, &mut counts).await;
    let recorder = Recorder::new();
    let consumer =
        world.start("w1", &recorder, CheckpointPolicy::EveryBatch, config(mode), None).await;

    wait_until("every record", Duration::from_secs(60), || recorder.record_count() >= 2_000).await;
    let expected = world.last_sequences().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while world.checkpoints().await != expected {
        assert!(Instant::now() < deadline, "checkpoints {:?}", world.checkpoints().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(consumer.held_shards().len(), 4);
    // The records came the way the mode says.
    let counters = world.kinesis.counters();
    let (subscribes, get_records) =
        (counters.calls(Operation::SubscribeToShard), counters.calls(Operation::GetRecords));
    match mode {
        Mode::Polling => assert_eq!(subscribes, 0),
        Mode::FanOut => assert_eq!((subscribes, get_records), (4, 0)),
    }

    let records = recorder.records();
    assert_eq!(records.len(), 2_000, "no record twice");
    for (key, numbers) in per_key(&records) {
        assert_eq!(numbers, (0..50).collect::<Vec<_>>(), "order of {key}");
    }
    // Each shard's records came in sequence order, and each from its own shard.
    let mut by_shard: BTreeMap<&ShardId, Vec<&kinesis_common::SequenceNumber>> = BTreeMap::new();
    for (shard, record) in &records {
        by_shard.entry(shard).or_default().push(&record.sequence_number);
    }
    for (shard, sequences) in by_shard {
        let stored: Vec<_> = world.kinesis.records(&world.stream, shard).unwrap();
        let stored: Vec<_> = stored.iter().map(|r| &r.sequence_number).collect();
        assert_eq!(sequences, stored, "shard {shard}");
    }

    let report = consumer.shutdown().await.unwrap();
    assert_eq!(report.shards.len(), 4);
    assert!(report.timed_out.is_empty());
    assert!(report.shards.iter().all(|s| s.reason == Some(ShutdownReason::Requested)));
    let scan = world.store.list().await.unwrap();
    assert!(scan.leases.iter().all(|l| l.owner.is_none()), "released: {:?}", scan.leases);
    let requested = recorder
        .events()
        .iter()
        .filter(|e| matches!(e, ProcessorEvent::ShutdownRequested(_)))
        .count();
    assert_eq!(requested, 4);
}

async fn a_restarted_worker_resumes_after_its_checkpoint_without_loss_or_repeats(mode: Mode) {
    let world = world(mode, 2);
    let mut counts = HashMap::new();
    world.put(10, 300, &mut counts).await;
    let first = Recorder::new();
    let consumer =
        world.start("w1", &first, CheckpointPolicy::EveryBatch, config(mode), None).await;
    wait_until("first records", Duration::from_secs(60), || first.record_count() >= 300).await;
    consumer.shutdown().await.unwrap();

    world.put(10, 200, &mut counts).await;
    let second = Recorder::new();
    let consumer =
        world.start("w2", &second, CheckpointPolicy::EveryBatch, config(mode), None).await;
    wait_until("new records", Duration::from_secs(60), || second.record_count() >= 200).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    consumer.shutdown().await.unwrap();

    assert_eq!(first.record_count(), 300);
    assert_eq!(second.record_count(), 200, "nothing before the checkpoint is repeated");
    for (key, numbers) in per_key(&second.records()) {
        assert_eq!(numbers, (30..50).collect::<Vec<_>>(), "{key} resumes after its checkpoint");
    }
}

async fn a_lease_stolen_mid_batch_gets_lease_lost_and_writes_no_checkpoint(mode: Mode) {
    lease_stolen_mid_batch(mode, CheckpointPolicy::EveryBatch).await;
}

async fn a_lease_lost_checkpoint_passed_up_with_a_question_mark_is_a_lost_lease(mode: Mode) {
    lease_stolen_mid_batch(mode, CheckpointPolicy::EveryBatchOrFail).await;
}

async fn lease_stolen_mid_batch(mode: Mode, policy: CheckpointPolicy) {
    let world = world(mode, 1);
    let mut counts = HashMap::new();
    world.put(5, 50, &mut counts).await;
    let store = world.store.clone();
    let stolen = Arc::new(AtomicBool::new(false));
    let hook: Hook = {
        let stolen = stolen.clone();
        Arc::new(move |shard: ShardId, _batch: Batch| {
            let store = store.clone();
            let stolen = stolen.clone();
            Box::pin(async move {
                if !stolen.swap(true, Ordering::SeqCst) {
                    let lease = store.get(&shard).await.unwrap().unwrap();
                    store.take(&lease, &WorkerId::new("thief")).await.unwrap();
                }
            })
        })
    };
    let recorder = Recorder::new();
    let consumer = world.start("w1", &recorder, policy, config(mode), Some(hook)).await;
    wait_until("lease lost", Duration::from_secs(30), || {
        recorder.events().iter().any(|e| matches!(e, ProcessorEvent::LeaseLost(_)))
    })
    .await;

    let events = recorder.events();
    let shard = ShardId::new("shardId-000000000000").unwrap();
    let checkpoint = events.iter().find_map(|e| match e {
        ProcessorEvent::Checkpointed(_, result) => Some(result.clone()),
        _ => None,
    });
    let error = checkpoint.expect("the processor tried to checkpoint").unwrap_err();
    assert!(error.contains("no longer held"), "{error}");
    assert_eq!(events.last(), Some(&ProcessorEvent::LeaseLost(shard.clone())));
    let lease = world.store.get(&shard).await.unwrap().unwrap();
    assert_eq!(lease.owner, Some(WorkerId::new("thief")));
    assert_eq!(lease.checkpoint, ExtendedSequenceNumber::TrimHorizon, "nothing written");
    wait_until("the shard consumer stops", Duration::from_secs(5), || {
        consumer.held_shards().is_empty()
    })
    .await;
    let report = consumer.shutdown().await.unwrap();
    assert!(report.shards.is_empty(), "{report:?}");
}

/// Splits shard 0 of a one-shard stream and waits until the children are listed.
async fn split(world: &World) -> Vec<Shard> {
    let parent = ShardId::new("shardId-000000000000").unwrap();
    world.kinesis.split_shard(&world.stream, &parent, HashKey(1u128 << 127)).await.unwrap();
    loop {
        let shards = world.kinesis.list_shards(&world.stream).await.unwrap();
        if shards.iter().filter(|s| s.is_open()).count() == 2 {
            return shards;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn children_start_only_after_their_parent_checkpointed_shard_end(mode: Mode) {
    let world = world(mode, 1);
    let mut counts = HashMap::new();
    world.put(10, 200, &mut counts).await;
    split(&world).await;
    world.put(10, 200, &mut counts).await;

    // The parent's processor is slow: children would overtake it if they did not wait.
    let parent = ShardId::new("shardId-000000000000").unwrap();
    let hook: Hook = {
        let parent = parent.clone();
        Arc::new(move |shard: ShardId, _batch: Batch| {
            let slow = shard == parent;
            Box::pin(async move {
                if slow {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            })
        })
    };
    let recorder = Recorder::new();
    let consumer =
        world.start("w1", &recorder, CheckpointPolicy::EveryBatch, config(mode), Some(hook)).await;
    wait_until("every record", Duration::from_secs(120), || recorder.record_count() >= 400).await;

    let events = recorder.events();
    let ended = events
        .iter()
        .position(|e| *e == ProcessorEvent::ShardEnded(parent.clone()))
        .expect("the parent ended");
    let first_child_batch = events
        .iter()
        .position(|e| matches!(e, ProcessorEvent::Batch(shard, _) if *shard != parent))
        .expect("the children were read");
    assert!(ended < first_child_batch, "{events:?}");
    for (key, numbers) in per_key(&recorder.records()) {
        assert_eq!(numbers, (0..40).collect::<Vec<_>>(), "order of {key} across the split");
    }
    let lease = world.store.get(&parent).await.unwrap().unwrap();
    assert_eq!(lease.checkpoint, ExtendedSequenceNumber::ShardEnd);
    assert_eq!(lease.child_shard_ids.len(), 2);
    consumer.shutdown().await.unwrap();
}

async fn per_key_order_holds_across_a_split_and_a_merge_during_consumption(mode: Mode) {
    let world = world(mode, 1);
    let mut counts = HashMap::new();
    let recorder = Recorder::new();
    let consumer =
        world.start("w1", &recorder, CheckpointPolicy::EveryBatch, config(mode), None).await;
    world.put(16, 320, &mut counts).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let shards = split(&world).await;
    world.put(16, 320, &mut counts).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let children: Vec<&Shard> = shards.iter().filter(|s| s.is_open()).collect();
    world.kinesis.merge_shards(&world.stream, &children[0].id, &children[1].id).await.unwrap();
    loop {
        let shards = world.kinesis.list_shards(&world.stream).await.unwrap();
        if shards.iter().filter(|s| s.is_open()).count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    world.put(16, 320, &mut counts).await;
    wait_until("every record", Duration::from_secs(300), || recorder.record_count() >= 960).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    assert_eq!(recorder.record_count(), 960, "no record twice");
    for (key, numbers) in per_key(&recorder.records()) {
        assert_eq!(numbers, (0..60).collect::<Vec<_>>(), "order of {key}");
    }
    let shards_read: HashSet<ShardId> = recorder.records().into_iter().map(|(s, _)| s).collect();
    assert_eq!(shards_read.len(), 4, "parent, two children, merged child");
    consumer.shutdown().await.unwrap();
}

async fn three_workers_balance_eight_shards_within_two_taker_cycles(mode: Mode) {
    let world = world(mode, 8);
    let recorder = Recorder::new();
    let config = config(mode);
    let interval = config.taker_interval;
    let a = world.start("a", &recorder, CheckpointPolicy::Never, config.clone(), None).await;
    wait_until("a holds all", Duration::from_secs(10), || a.held_shards().len() == 8).await;

    let b = world.start("b", &recorder, CheckpointPolicy::Never, config.clone(), None).await;
    let c = world.start("c", &recorder, CheckpointPolicy::Never, config.clone(), None).await;
    // Two taker cycles of the new workers (their first runs at start). The table says who
    // owns what; a worker robbed of a lease notices at its next renewal.
    tokio::time::sleep(interval + Duration::from_millis(500)).await;
    let owners = world.owners().await;
    let counts: Vec<usize> = owners.values().copied().collect();
    assert_eq!(owners.keys().cloned().collect::<Vec<_>>(), ["a", "b", "c"], "{owners:?}");
    assert!(counts.iter().all(|&n| (2..=3).contains(&n)), "owned {owners:?}");
    assert_eq!(counts.iter().sum::<usize>(), 8);

    // Within a renewal each worker runs exactly the shards it owns, and it stays balanced:
    // nobody steals from a worker at or below its share.
    tokio::time::sleep(interval * 4).await;
    assert_eq!(world.owners().await, owners, "no churn");
    let held = [a.held_shards(), b.held_shards(), c.held_shards()];
    let running: Vec<usize> = held.iter().map(Vec::len).collect();
    assert_eq!(running, counts, "{held:?}");
    let all: HashSet<&ShardId> = held.iter().flatten().collect();
    assert_eq!(all.len(), 8, "every shard run once: {held:?}");
    for worker in [a, b, c] {
        worker.shutdown().await.unwrap();
    }
}

async fn a_dead_workers_shards_are_taken_over_within_the_lease_duration_and_a_cycle(mode: Mode) {
    let world = world(mode, 4);
    let config = config(mode);
    let recorder = Recorder::new();
    let a = world.start("a", &recorder, CheckpointPolicy::EveryBatch, config.clone(), None).await;
    wait_until("a holds all", Duration::from_secs(10), || a.held_shards().len() == 4).await;
    let b = world.start("b", &recorder, CheckpointPolicy::EveryBatch, config.clone(), None).await;
    wait_until("balanced", Duration::from_secs(30), || b.held_shards().len() == 2).await;

    a.abort();
    let died = Instant::now();
    let mut counts = HashMap::new();
    world.put(8, 400, &mut counts).await;
    wait_until("b holds all", Duration::from_secs(60), || b.held_shards().len() == 4).await;
    let took = died.elapsed();
    assert!(
        took <= config.lease_duration + config.taker_interval + Duration::from_secs(1),
        "took {took:?}"
    );
    wait_until("every record", Duration::from_secs(60), || recorder.record_count() >= 400).await;
    for (key, numbers) in per_key(&recorder.records()) {
        assert_eq!(numbers, (0..50).collect::<Vec<_>>(), "{key}");
    }
    b.shutdown().await.unwrap();
}

/// Fails its first `process` call, then records like a `RecordingProcessor`.
struct FailsOnce {
    failed: Arc<AtomicBool>,
    inner: RecordingProcessor,
}

#[async_trait]
impl ShardProcessor for FailsOnce {
    async fn process(
        &mut self,
        batch: Batch,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        if !self.failed.swap(true, Ordering::SeqCst) {
            return Err("downstream unavailable".into());
        }
        self.inner.process(batch, checkpointer).await
    }
}

async fn a_failed_batch_is_not_checkpointed_and_is_read_again(mode: Mode) {
    let world = world(mode, 1);
    let mut counts = HashMap::new();
    world.put(4, 40, &mut counts).await;
    let recorder = Recorder::new();
    let failed = Arc::new(AtomicBool::new(false));
    let consumer = {
        let recorder = recorder.clone();
        let failed = failed.clone();
        Consumer::builder(world.kinesis.clone(), world.store.clone())
            .stream(world.stream.clone())
            .application_name("driver-test")
            .worker_id(WorkerId::new("w1"))
            .config(config(mode))
            .start(move |_: &ShardId| FailsOnce {
                failed: failed.clone(),
                inner: RecordingProcessor::new(recorder.clone(), CheckpointPolicy::EveryBatch),
            })
            .await
            .unwrap()
    };
    wait_until("records after the failure", Duration::from_secs(60), || {
        recorder.record_count() >= 40
    })
    .await;
    assert!(failed.load(Ordering::SeqCst));
    for (key, numbers) in per_key(&recorder.records()) {
        assert_eq!(numbers, (0..10).collect::<Vec<_>>(), "{key}: nothing lost");
    }
    consumer.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_unknown_stream_fails_at_start_with_its_name() {
    let world = world(Mode::Polling, 1);
    let error = Consumer::builder(world.kinesis.clone(), world.store.clone())
        .stream(StreamName::new("missing").unwrap())
        .application_name("driver-test")
        .start(|_: &ShardId| RecordingProcessor::new(Recorder::new(), CheckpointPolicy::Never))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "stream missing not found");
}

async fn a_processor_slower_than_the_lease_duration_keeps_its_lease(mode: Mode) {
    let world = world(mode, 1);
    let mut counts = HashMap::new();
    world.put(2, 10, &mut counts).await;
    let hook: Hook = Arc::new(|_: ShardId, _: Batch| {
        Box::pin(async { tokio::time::sleep(Duration::from_secs(60)).await })
    });
    let recorder = Recorder::new();
    let config = config(mode);
    let slow = world
        .start("slow", &recorder, CheckpointPolicy::EveryBatch, config.clone(), Some(hook))
        .await;
    wait_until("the first batch", Duration::from_secs(10), || recorder.record_count() > 0).await;
    let shard = ShardId::new("shardId-000000000000").unwrap();
    let before = world.store.get(&shard).await.unwrap().unwrap().counter;
    // Another worker watches the lease for six lease durations while `process` runs.
    let other =
        world.start("other", &Recorder::new(), CheckpointPolicy::Never, config.clone(), None).await;
    tokio::time::sleep(Duration::from_secs(55)).await;
    let lease = world.store.get(&shard).await.unwrap().unwrap();
    assert_eq!(lease.owner, Some(WorkerId::new("slow")));
    assert!(lease.counter >= before + 15, "renewed {} times", lease.counter - before);
    assert!(other.held_shards().is_empty());
    assert!(!recorder.events().iter().any(|e| matches!(e, ProcessorEvent::LeaseLost(_))));
    other.shutdown().await.unwrap();
    slow.shutdown().await.unwrap();
}

async fn a_processor_slower_than_a_subscription_loses_nothing(mode: Mode) {
    let world = world(mode, 1);
    let mut counts = HashMap::new();
    world.put(4, 40, &mut counts).await;
    // The first batch takes six minutes: longer than a SubscribeToShard session (five) and
    // than an iterator lives (five).
    let first = Arc::new(AtomicBool::new(true));
    let hook: Hook = Arc::new(move |_: ShardId, _: Batch| {
        let slow = first.swap(false, Ordering::SeqCst);
        Box::pin(async move {
            if slow {
                tokio::time::sleep(Duration::from_secs(360)).await;
            }
        })
    });
    let recorder = Recorder::new();
    let consumer =
        world.start("w1", &recorder, CheckpointPolicy::EveryBatch, config(mode), Some(hook)).await;
    wait_until("the first batch", Duration::from_secs(30), || recorder.record_count() > 0).await;
    // Written while the processor is stuck.
    for _ in 0..6 {
        world.put(4, 20, &mut counts).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    wait_until("every record", Duration::from_secs(120), || recorder.record_count() >= 160).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(recorder.record_count(), 160, "no record twice");
    for (key, numbers) in per_key(&recorder.records()) {
        assert_eq!(numbers, (0..40).collect::<Vec<_>>(), "{key}");
    }
    consumer.shutdown().await.unwrap();
}

/// Every scenario above, once per retrieval mode.
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {
        mod polling {
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    super::$name(super::Mode::Polling).await;
                }
            )*
        }
        mod fan_out {
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    super::$name(super::Mode::FanOut).await;
                }
            )*
        }
    };
}

in_both_modes!(
    a_lease_lost_checkpoint_passed_up_with_a_question_mark_is_a_lost_lease,
    a_processor_slower_than_a_subscription_loses_nothing,
    one_worker_reads_every_record_of_four_shards_in_order_and_checkpoints,
    a_restarted_worker_resumes_after_its_checkpoint_without_loss_or_repeats,
    a_lease_stolen_mid_batch_gets_lease_lost_and_writes_no_checkpoint,
    children_start_only_after_their_parent_checkpointed_shard_end,
    per_key_order_holds_across_a_split_and_a_merge_during_consumption,
    three_workers_balance_eight_shards_within_two_taker_cycles,
    a_dead_workers_shards_are_taken_over_within_the_lease_duration_and_a_cycle,
    a_failed_batch_is_not_checkpointed_and_is_read_again,
    a_processor_slower_than_the_lease_duration_keeps_its_lease,
);
