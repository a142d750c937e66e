//! The demo: two consumer workers sharing a DynamoDB lease table consume a fresh stream while
//! KPL-aggregated records are produced into it and a shard is split halfway (one worker shuts
//! down a third of the way through and hands its leases over), then check that nothing was
//! lost and every partition key's records kept their order (duplicates, which at-least-once
//! delivery allows, are counted and dropped by a `Deduplicator`).
//!
//! Run it with `cargo xtask demo`, which starts the local substrate first; against real AWS,
//! run `cargo run -p kinesis-examples --bin demo -- --stream <name>` with AWS credentials
//! (it creates and deletes that stream and a lease table named `<stream>-leases`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use kinesis_common::compression::Codec;
use kinesis_common::{HashKey, KinesisApi, ShardId, StreamName, StreamStatus};
use kinesis_consumer::{
    Batch, Checkpointer, Consumer, ConsumerConfig, Deduplicator, DynamoLeaseStore, InitialPosition,
    LeaseStore, PollingSettings, ProcessorError, Retrieval, ShardProcessor, WorkerId,
};
use kinesis_producer::{Compression, Producer, ProducerConfig, Record};

/// Produce, reshard, read back and verify.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Stream to create (and delete at the end); a unique name by default.
    #[arg(long)]
    stream: Option<String>,
    /// Shards the stream starts with.
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// User records to produce.
    #[arg(long, default_value_t = 20_000)]
    records: usize,
    /// Distinct partition keys.
    #[arg(long, default_value_t = 200)]
    keys: usize,
    /// Bytes of payload per record (before the embedded id).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Compress Kinesis records with zstd (the envelope is undone when reading back).
    #[arg(long)]
    zstd: bool,
    /// Keep the stream at the end.
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kinesis = kinesis_examples::kinesis().await;
    let name = args.stream.clone().unwrap_or_else(|| {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        format!("demo-{millis}")
    });
    let stream = StreamName::new(name)?;
    let started = Instant::now();

    println!("1. create stream {stream} with {} shards", args.shards);
    kinesis.create_stream(&stream, args.shards).await.context("CreateStream")?;
    wait_active(kinesis.as_ref(), &stream).await?;

    println!(
        "2. start two consumer workers sharing a lease table (parents before children, de-aggregation with each shard's hash range)"
    );
    let sdk = kinesis_examples::sdk_config().await;
    let table = format!("{stream}-leases");
    let leases: Arc<dyn LeaseStore> = Arc::new(DynamoLeaseStore::new(&sdk, table.clone()));
    let tally = Tally::new(args.records);
    let consumer_config = {
        let mut c = ConsumerConfig::default();
        c.initial_position = InitialPosition::TrimHorizon;
        // Short timings so the demo's handover takes seconds, not the KCL's 10-20 s.
        c.lease_duration = Duration::from_secs(6);
        c.renew_interval = Duration::from_secs(2);
        c.taker_interval = Duration::from_secs(3);
        c.parent_poll_interval = Duration::from_millis(500);
        let mut polling = PollingSettings::default();
        polling.idle_time_between_reads = Duration::from_millis(250);
        c.retrieval = Retrieval::Polling(polling);
        c
    };
    let start_worker = |name: &str| {
        let tally = tally.clone();
        Consumer::builder(Arc::clone(&kinesis), Arc::clone(&leases))
            .stream(stream.clone())
            .application_name(table.clone())
            .worker_id(WorkerId::new(name))
            .config(consumer_config.clone())
            .start(move |shard: &ShardId| DemoProcessor {
                shard: shard.clone(),
                tally: tally.clone(),
            })
    };
    let worker_1 = start_worker("worker-1").await?;
    let worker_2 = start_worker("worker-2").await?;
    // A third of the way through, stop worker-1 gracefully while records are still being
    // written: it checkpoints and releases its leases, and worker-2 takes them over at its
    // next taker cycle.
    let handover = {
        let tally = tally.clone();
        let third = args.records / 3;
        let worker_2_held = worker_2.watch_held_shards();
        tokio::spawn(async move {
            tally.wait_for(third, Duration::from_secs(120)).await;
            let held = (worker_1.held_shards(), worker_2_held.borrow().clone());
            let report = worker_1.shutdown().await;
            (tally.first_seen(), held, report)
        })
    };

    let config = ProducerConfig {
        compression: args.zstd.then_some(Compression {
            codec: Codec::Zstd,
            level: None,
            min_size: 512,
        }),
        ..ProducerConfig::default()
    };
    let producer = Producer::builder(Arc::clone(&kinesis))
        .stream(stream.clone())
        .config(config)
        .start()
        .await?;
    println!(
        "3. produce {} records over {} keys ({} B each{}) while the workers consume",
        args.records,
        args.keys,
        args.size,
        if args.zstd { ", zstd" } else { "" }
    );
    let mut receipts = Vec::with_capacity(args.records);
    let padding = "x".repeat(args.size);
    let mut split_done = None;
    for i in 0..args.records {
        let key = i % args.keys;
        // The payload says which record this is and its place among its key's records.
        let data = format!("{i} {key} {} {padding}", i / args.keys);
        receipts.push(producer.send(Record::new(format!("key-{key}"), data)).await?);
        if i == args.records / 2 {
            split_done = Some(split_hottest(kinesis.as_ref(), &stream).await?);
        }
    }
    let mut failed = 0;
    let mut aggregated = 0;
    let mut latencies = Vec::with_capacity(receipts.len());
    for receipt in receipts {
        match receipt.await {
            Ok(d) => {
                aggregated += usize::from(d.sub_sequence_number.is_some());
                latencies.push(d.latency);
            }
            Err(e) => {
                failed += 1;
                eprintln!("   delivery failed: {e}");
            }
        }
    }
    let metrics = producer.shutdown().await;
    latencies.sort();
    let p = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "   delivered {} user records in {} Kinesis records ({} PutRecords requests, {} retries, {} wrong-shard resends); {} aggregated; {} failed",
        metrics.user_records_put,
        metrics.kinesis_records_put,
        metrics.put_records_requests,
        metrics.retries,
        metrics.wrong_shard,
        aggregated,
        failed
    );
    println!(
        "   send-to-delivery latency p50 {:?}, p99 {:?} (every record is sent in one burst, so this is mostly waiting behind the per-shard rate limits)",
        p(0.5),
        p(0.99)
    );
    if let Some((parent, children)) = &split_done {
        println!("   split {parent} into {} and {} halfway through", children[0], children[1]);
    }

    println!("4. consumption");
    let (seen, (held_1, held_2), handed_over) = handover.await?;
    println!("   worker-1 held {held_1:?}, worker-2 held {held_2:?}");
    println!(
        "   worker-1 shut down after {seen} records: released {} lease(s) to worker-2",
        handed_over?.shards.len()
    );
    let complete = tally.wait_for(args.records, Duration::from_secs(120)).await;
    // Read a little longer so late duplicates, if any, are counted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("   worker-2 held {:?} at the end", worker_2.held_shards());
    worker_2.shutdown().await?;
    let summary = tally.summary();
    for (shard, n) in &summary.per_shard {
        println!("   {shard}: {n} user records");
    }
    let (missing, duplicated, order_violations) =
        (args.records - summary.distinct, summary.duplicates, summary.order_violations);
    println!(
        "   {duplicated} duplicate deliveries dropped by the Deduplicator (at-least-once: records after a checkpoint are read again by the next lease holder)"
    );
    if !complete {
        eprintln!("   gave up waiting: not every record arrived");
    }
    if !args.keep {
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        dynamodb.delete_table().table_name(&table).send().await.context("DeleteTable")?;
    }

    if !args.keep {
        kinesis.delete_stream(&stream).await.context("DeleteStream")?;
    }
    println!(
        "5. verdict: {} records produced, {missing} missing, {duplicated} duplicated, {order_violations} per-key order violations ({:.1} s)",
        args.records,
        started.elapsed().as_secs_f64()
    );
    ensure!(failed == 0 && missing == 0, "records were lost");
    ensure!(order_violations == 0, "per-key order was not kept");
    println!("   OK: nothing lost, per-key order kept");
    Ok(())
}

async fn wait_active(kinesis: &dyn KinesisApi, stream: &StreamName) -> anyhow::Result<()> {
    for _ in 0..600 {
        if kinesis.describe_stream_summary(stream).await?.status == StreamStatus::Active {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("stream {stream} did not become ACTIVE within 30 s")
}

/// Splits the open shard with the widest hash range in the middle of it.
async fn split_hottest(
    kinesis: &dyn KinesisApi,
    stream: &StreamName,
) -> anyhow::Result<(ShardId, [ShardId; 2])> {
    let shards = kinesis.list_shards(stream).await?;
    let widest = shards
        .iter()
        .filter(|s| s.is_open())
        .max_by_key(|s| s.hash_range.end().0 - s.hash_range.start().0)
        .context("no open shard")?;
    let (start, end) = (widest.hash_range.start().0, widest.hash_range.end().0);
    kinesis.split_shard(stream, &widest.id, HashKey(start + (end - start) / 2 + 1)).await?;
    wait_active(kinesis, stream).await?;
    let after = kinesis.list_shards(stream).await?;
    let children: Vec<ShardId> = after
        .iter()
        .filter(|s| s.parent.as_ref() == Some(&widest.id))
        .map(|s| s.id.clone())
        .collect();
    ensure!(children.len() == 2, "split made {} children", children.len());
    Ok((widest.id.clone(), [children[0].clone(), children[1].clone()]))
}

/// What the workers delivered, shared by every processor.
#[derive(Clone)]
struct Tally {
    inner: Arc<Mutex<TallyState>>,
}

struct TallyState {
    /// Drops records delivered twice (after a lease handover) by their id.
    dedup: Deduplicator<usize>,
    distinct: usize,
    per_key_last: HashMap<usize, i64>,
    order_violations: usize,
    per_shard: BTreeMap<ShardId, usize>,
}

struct Summary {
    distinct: usize,
    duplicates: u64,
    order_violations: usize,
    per_shard: BTreeMap<ShardId, usize>,
}

impl Tally {
    fn new(records: usize) -> Self {
        let state = TallyState {
            dedup: Deduplicator::new(records),
            distinct: 0,
            per_key_last: HashMap::new(),
            order_violations: 0,
            per_shard: BTreeMap::new(),
        };
        Self { inner: Arc::new(Mutex::new(state)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TallyState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, shard: &ShardId, data: &str) -> anyhow::Result<()> {
        let mut fields = data.split(' ');
        let id: usize = fields.next().unwrap_or_default().parse().context("payload id")?;
        let key: usize = fields.next().unwrap_or_default().parse().context("payload key")?;
        let nth: i64 = fields.next().unwrap_or_default().parse().context("payload order")?;
        let mut guard = self.lock();
        let state = &mut *guard;
        *state.per_shard.entry(shard.clone()).or_insert(0) += 1;
        if !state.dedup.first_seen(id) {
            return Ok(());
        }
        state.distinct += 1;
        let last = state.per_key_last.entry(key).or_insert(-1);
        if nth < *last {
            state.order_violations += 1;
        }
        *last = nth.max(*last);
        Ok(())
    }

    fn first_seen(&self) -> usize {
        self.lock().distinct
    }

    /// Waits until `n` distinct records arrived; false if none arrived for `stall`.
    async fn wait_for(&self, n: usize, stall: Duration) -> bool {
        let mut last = (self.first_seen(), Instant::now());
        while self.first_seen() < n {
            let now = self.first_seen();
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > stall {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }

    fn summary(&self) -> Summary {
        let state = self.lock();
        Summary {
            distinct: state.distinct,
            duplicates: state.dedup.duplicates(),
            order_violations: state.order_violations,
            per_shard: state.per_shard.clone(),
        }
    }
}

/// The demo's record processor: tallies every record and checkpoints after every batch.
struct DemoProcessor {
    shard: ShardId,
    tally: Tally,
}

#[async_trait::async_trait]
impl ShardProcessor for DemoProcessor {
    async fn process(
        &mut self,
        batch: Batch,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        for record in &batch.records {
            let text = std::str::from_utf8(&record.data)?;
            self.tally.record(&self.shard, text)?;
        }
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        // Everything handed out was tallied in `process`: checkpoint it before handing over.
        checkpointer.checkpoint().await?;
        Ok(())
    }
}
