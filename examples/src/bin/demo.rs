//! The demo: produce KPL-aggregated records into a fresh stream, split a shard while
//! producing, read every shard back the way a KCL consumer does (parents before children,
//! de-aggregation with the hash-range filter), and check that nothing was lost, nothing
//! duplicated, and every partition key's records kept their order.
//!
//! Run it with `cargo xtask demo`, which starts the local substrate first; against real AWS,
//! run `cargo run -p kinesis-examples --bin demo -- --stream <name>` with AWS credentials
//! (it creates and deletes that stream).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use kinesis_common::aggregation::{DeaggregationOutcome, deaggregate};
use kinesis_common::compression::Codec;
use kinesis_common::{
    HashKey, KinesisApi, Shard, ShardId, ShardIteratorPosition, StreamName, StreamStatus,
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
        "2. produce {} records over {} keys ({} B each{})",
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
        println!("3. split {parent} into {} and {} while producing", children[0], children[1]);
    }

    println!(
        "4. read every shard back, parents first, de-aggregating with each shard's hash range"
    );
    let shards = kinesis.list_shards(&stream).await?;
    let mut seen: Vec<u32> = vec![0; args.records];
    let mut per_key_last: HashMap<usize, i64> = HashMap::new();
    let mut order_violations = 0;
    let mut filtered_aggregates = 0;
    let mut per_shard = BTreeMap::new();
    for shard in Shard::parents_first(&shards) {
        let (records, filtered) = read_shard(kinesis.as_ref(), &stream, shard).await?;
        filtered_aggregates += filtered;
        per_shard.insert(shard.id.clone(), records.len());
        for data in records {
            let mut fields = data.split(' ');
            let id: usize = fields.next().unwrap_or_default().parse().context("payload id")?;
            let key: usize = fields.next().unwrap_or_default().parse().context("payload key")?;
            let nth: i64 = fields.next().unwrap_or_default().parse().context("payload order")?;
            seen[id] += 1;
            let last = per_key_last.entry(key).or_insert(-1);
            if nth < *last {
                order_violations += 1;
            }
            *last = nth.max(*last);
        }
    }
    for (shard, n) in &per_shard {
        println!("   {shard}: {n} user records");
    }
    let missing = seen.iter().filter(|n| **n == 0).count();
    let duplicated = seen.iter().filter(|n| **n > 1).count();
    println!(
        "   {filtered_aggregates} aggregate(s) dropped by a shard's hash-range filter (copies of wrong-shard writes the producer re-sent)"
    );

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

/// Reads a shard from its start to its end (closed) or to the tip (open), returning the user
/// records' data as text and how many aggregates the hash-range filter dropped.
async fn read_shard(
    kinesis: &dyn KinesisApi,
    stream: &StreamName,
    shard: &Shard,
) -> anyhow::Result<(Vec<String>, usize)> {
    let mut iterator =
        kinesis.get_shard_iterator(stream, &shard.id, ShardIteratorPosition::TrimHorizon).await?;
    let mut out = Vec::new();
    let mut filtered = 0;
    let mut empty_reads = 0;
    loop {
        let page = kinesis.get_records(&iterator, Some(10_000)).await?;
        if page.records.is_empty() {
            empty_reads += 1;
        }
        for record in &page.records {
            let users = deaggregate(record, Some(shard.hash_range));
            if matches!(users.outcome, DeaggregationOutcome::FilteredOut { .. }) {
                filtered += 1;
            }
            for user in users.records {
                out.push(String::from_utf8(user.data.to_vec()).context("payload is text")?);
            }
        }
        match page.next_iterator {
            // An open shard has no end: it is read until two reads in a row come back empty.
            Some(next) if !(shard.is_open() && empty_reads >= 2) => iterator = next,
            _ => break,
        }
    }
    Ok((out, filtered))
}
