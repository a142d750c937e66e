//! Consumer throughput on the in-process fakes: user records per second handed to a no-op
//! processor that checkpoints after every batch, with KPL aggregates of 100-byte records
//! already waiting in the stream.
//!
//! What it measures is the consumer's own work (retrieval plumbing, de-aggregation, the
//! hash-range filter, batching, checkpoint writes to the in-memory lease table), not a
//! service: it reads through enhanced fan-out on `FakeKinesis`, which pushes as fast as it is
//! read (polling would be held to 2 MiB/s per shard by design, see `retrieval/polling.rs`).
//!
//! `cargo build --release -p kinesis-examples --bin consumer-bench && target/release/consumer-bench`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use kinesis_common::aggregation::{AggregateBuilder, UserRecord};
use kinesis_common::fake::FakeKinesis;
use kinesis_common::{
    ConsumerName, KinesisApi, PartitionKey, PutRecordsEntry, ShardId, StreamName,
};
use kinesis_consumer::lease::InMemoryLeaseStore;
use kinesis_consumer::{
    Batch, Checkpointer, Consumer, ConsumerConfig, InitialPosition, ProcessorError, Retrieval,
    ShardProcessor,
};

/// Measure the consumer's delivery rate on the fakes.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Shards of the stream.
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// User records written before the consumer starts.
    #[arg(long, default_value_t = 2_000_000)]
    records: usize,
    /// Bytes of data per user record.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Runs; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

struct NoOp {
    delivered: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl ShardProcessor for NoOp {
    async fn process(
        &mut self,
        batch: Batch,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.delivered.fetch_add(batch.records.len() as u64, Ordering::Relaxed);
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rates = Vec::new();
    for run in 0..args.runs {
        let rate = one_run(&args).await?;
        println!("run {}: {:.0} user records/s", run + 1, rate);
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!(
        "median {:.0} user records/s ({:.1} MB/s of user data), min {:.0}, max {:.0}",
        median,
        median * args.size as f64 / 1e6,
        rates[0],
        rates[rates.len() - 1]
    );
    Ok(())
}

async fn one_run(args: &Args) -> anyhow::Result<f64> {
    let fake = Arc::new(FakeKinesis::builder().consumer_delay(Duration::from_millis(1)).build());
    let stream = StreamName::new("bench")?;
    fake.create_active_stream(&stream, args.shards)?;
    // KPL-style aggregates of up to 50 KiB; the records of one aggregate share a partition
    // key, so every aggregate belongs wholly to the shard its key maps to.
    let data = vec![b'x'; args.size];
    let mut entries = Vec::new();
    let mut builder = AggregateBuilder::new();
    let mut key = 0usize;
    for _ in 0..args.records {
        let record = UserRecord::new(PartitionKey::new(format!("key-{key}"))?, data.clone());
        if builder.encoded_len_with(&record) > 50 * 1024 {
            entries.push(PutRecordsEntry {
                partition_key: PartitionKey::new(format!("key-{key}"))?,
                explicit_hash_key: None,
                data: builder.finish(),
            });
            builder.clear();
            key += 1;
            builder.push(UserRecord::new(PartitionKey::new(format!("key-{key}"))?, data.clone()));
        } else {
            builder.push(record);
        }
        if entries.len() == 100 {
            fake.put_records(&stream, std::mem::take(&mut entries)).await?;
        }
    }
    if !builder.is_empty() {
        entries.push(PutRecordsEntry {
            partition_key: PartitionKey::new(format!("key-{key}"))?,
            explicit_hash_key: None,
            data: builder.finish(),
        });
    }
    if !entries.is_empty() {
        fake.put_records(&stream, entries).await?;
    }

    let delivered = Arc::new(AtomicU64::new(0));
    let mut config = ConsumerConfig::default();
    config.initial_position = InitialPosition::TrimHorizon;
    config.retrieval = Retrieval::FanOut { consumer_name: ConsumerName::new("bench")? };
    let started = Instant::now();
    let consumer = {
        let delivered = delivered.clone();
        Consumer::builder(fake.clone(), Arc::new(InMemoryLeaseStore::new()))
            .stream(stream)
            .application_name("bench")
            .config(config)
            .start(move |_: &ShardId| NoOp { delivered: delivered.clone() })
            .await?
    };
    while delivered.load(Ordering::Relaxed) < args.records as u64 {
        if started.elapsed() > Duration::from_secs(300) {
            bail!(
                "only {} of {} records in 300 s",
                delivered.load(Ordering::Relaxed),
                args.records
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    consumer.shutdown().await?;
    Ok(args.records as f64 / elapsed.as_secs_f64())
}
