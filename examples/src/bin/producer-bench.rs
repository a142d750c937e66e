//! Producer benchmarks in process, with no network: what the pipeline itself costs.
//!
//! - `throughput`: user records/s through the whole pipeline (validation, hashing, shard
//!   prediction, KPL aggregation, limiter, collector, retrier, receipts) into a sink that
//!   accepts every PutRecords at once, on one core (a current-thread runtime).
//! - `latency`: send-to-delivery latency percentiles at a steady rate, unthrottled.
//! - `overload`: sends as fast as possible into a sink that throttles each shard like Kinesis
//!   (1 000 records/s, 1 MiB/s), with a byte budget, and samples the process's resident memory.
//!
//! Each prints one JSON line. BENCHMARKS.md has the commands and figures.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clap::{Parser, Subcommand};
use kinesis_common::{
    ApiError, ApiErrorKind, ConsumerDescription, ConsumerName, GetRecordsOutput, HashKey,
    HashKeyRange, KinesisApi, PutRecordsEntry, PutRecordsOutcome, SequenceNumber, Shard, ShardId,
    ShardIterator, ShardIteratorPosition, StreamName, StreamStatus, StreamSummary, Subscription,
};
use kinesis_producer::{Producer, ProducerConfig, Record};

#[derive(Debug, Parser)]
#[command(version, about = "In-process producer benchmarks (no network)")]
struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// User records/s through the pipeline on one core.
    Throughput {
        /// Shards of the simulated stream.
        #[arg(long, default_value_t = 64)]
        shards: u32,
        /// Bytes of data per record.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Records per run.
        #[arg(long, default_value_t = 2_000_000)]
        records: usize,
        /// Runs; the median is reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Send-to-delivery latency at a steady rate.
    Latency {
        /// Shards of the simulated stream.
        #[arg(long, default_value_t = 4)]
        shards: u32,
        /// Records per second.
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        /// Seconds to run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Resident memory while sending ten times what the shards accept.
    Overload {
        /// Shards of the simulated stream.
        #[arg(long, default_value_t = 4)]
        shards: u32,
        /// Outstanding byte budget in MiB.
        #[arg(long, default_value_t = 64)]
        budget_mib: usize,
        /// Bytes of data per record.
        #[arg(long, default_value_t = 1000)]
        size: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.bench {
        Bench::Throughput { shards, size, records, runs } => {
            // One core: the pipeline, the senders and the sink share one thread.
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let mut rates: Vec<f64> = (0..runs)
                .map(|_| rt.block_on(throughput(shards, size, records)))
                .collect::<anyhow::Result<_>>()?;
            rates.sort_by(f64::total_cmp);
            println!(
                "{{\"bench\":\"throughput\",\"shards\":{shards},\"size\":{size},\"records\":{records},\"runs\":{runs},\"median_records_per_sec\":{:.0},\"min\":{:.0},\"max\":{:.0}}}",
                rates[rates.len() / 2],
                rates[0],
                rates[rates.len() - 1]
            );
        }
        Bench::Latency { shards, rate, seconds } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(latency(shards, rate, seconds))?;
        }
        Bench::Overload { shards, budget_mib, size, seconds } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(overload(shards, budget_mib, size, seconds))?;
        }
    }
    Ok(())
}

async fn throughput(shards: u32, size: usize, records: usize) -> anyhow::Result<f64> {
    let sink = Arc::new(Sink::new(shards, None));
    let config = ProducerConfig {
        // The pipeline's own cost is measured: no rate ceiling, room for every record.
        rate_limit_percent: 1_000_000,
        max_outstanding_records: records,
        max_outstanding_bytes: records * (size + 16) + (1 << 20),
        ..ProducerConfig::default()
    };
    let producer = Producer::builder(sink).stream(stream()).config(config).start().await?;
    let data = bytes::Bytes::from(vec![b'x'; size]);
    let keys: Vec<String> = (0..10_000).map(|i| format!("key-{i}")).collect();
    let started = Instant::now();
    let mut receipts = Vec::with_capacity(records);
    for i in 0..records {
        receipts
            .push(producer.send(Record::new(keys[i % keys.len()].clone(), data.clone())).await?);
    }
    for r in receipts {
        r.await?;
    }
    let elapsed = started.elapsed();
    producer.shutdown().await;
    Ok(records as f64 / elapsed.as_secs_f64())
}

async fn latency(shards: u32, rate: u64, seconds: u64) -> anyhow::Result<()> {
    let sink = Arc::new(Sink::new(shards, None));
    let config = ProducerConfig::default();
    let buffered = config.record_max_buffered_time;
    let producer = Producer::builder(sink).stream(stream()).config(config).start().await?;
    let total = rate * seconds;
    let mut interval = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut receipts = Vec::with_capacity(total as usize);
    for i in 0..total {
        interval.tick().await;
        receipts
            .push(producer.send(Record::new(format!("key-{}", i % 1000), vec![b'x'; 100])).await?);
    }
    let mut latencies = Vec::with_capacity(receipts.len());
    for r in receipts {
        latencies.push(r.await?.latency);
    }
    producer.shutdown().await;
    latencies.sort();
    let pct = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{{\"bench\":\"latency\",\"shards\":{shards},\"rate\":{rate},\"seconds\":{seconds},\"record_max_buffered_time_ms\":{},\"p50_ms\":{:.1},\"p99_ms\":{:.1},\"max_ms\":{:.1}}}",
        buffered.as_millis(),
        pct(0.5).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        latencies[latencies.len() - 1].as_secs_f64() * 1000.0
    );
    Ok(())
}

async fn overload(shards: u32, budget_mib: usize, size: usize, seconds: u64) -> anyhow::Result<()> {
    let sink = Arc::new(Sink::new(shards, Some((1000.0, 1_048_576.0))));
    let config = ProducerConfig {
        max_outstanding_bytes: budget_mib << 20,
        max_outstanding_records: 1_000_000,
        // Aggregation makes the byte limit the binding one, as in production.
        ..ProducerConfig::default()
    };
    let producer = Producer::builder(sink.clone()).stream(stream()).config(config).start().await?;
    let rss_before = rss_mib();
    let peak = Arc::new(Mutex::new(rss_before));
    let sampler = {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let now = rss_mib();
                let mut p = peak.lock().expect("not poisoned");
                *p = p.max(now);
            }
        })
    };
    // Senders try ten times what the shards take; `send` waits when the budget is full.
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let capacity_bytes_per_sec = f64::from(shards) * 1_048_576.0;
    let offered = (capacity_bytes_per_sec * 10.0 / size as f64) as u64;
    let mut sent = 0u64;
    let mut receipts = Vec::new();
    let data = bytes::Bytes::from(vec![b'x'; size]);
    let started = Instant::now();
    while Instant::now() < deadline {
        let due = (started.elapsed().as_secs_f64() * offered as f64) as u64;
        while sent < due && Instant::now() < deadline {
            let r =
                producer.send(Record::new(format!("key-{}", sent % 5000), data.clone())).await?;
            receipts.push(r);
            sent += 1;
            if receipts.len() > 100_000 {
                // Keep the benchmark's own bookkeeping flat: outcomes are checked in bulk.
                for r in receipts.drain(..50_000) {
                    drop(r);
                }
            }
        }
        tokio::task::yield_now().await;
    }
    let metrics = producer.shutdown().await;
    sampler.abort();
    let peak = *peak.lock().expect("not poisoned");
    println!(
        "{{\"bench\":\"overload\",\"shards\":{shards},\"budget_mib\":{budget_mib},\"size\":{size},\"seconds\":{seconds},\"offered_records_per_sec\":{offered},\"sent\":{sent},\"put\":{},\"failed\":{},\"throttled_retries\":{},\"rss_before_mib\":{rss_before:.1},\"peak_rss_mib\":{peak:.1},\"target_mib\":{}}}",
        metrics.user_records_put,
        metrics.user_records_failed,
        metrics.throttled,
        2 * budget_mib + 30
    );
    Ok(())
}

/// Resident set size of this process in MiB, from /proc.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn stream() -> StreamName {
    StreamName::new("bench").expect("valid")
}

/// A stream that stores nothing: every entry is written at once, or throttled per shard like
/// Kinesis when `limit` (records/s, bytes/s) is set.
struct Sink {
    shards: Vec<Shard>,
    limit: Option<(f64, f64)>,
    buckets: Mutex<HashMap<ShardId, (f64, f64, Instant)>>,
    sequence: std::sync::atomic::AtomicU64,
}

impl Sink {
    fn new(count: u32, limit: Option<(f64, f64)>) -> Self {
        let step = u128::MAX / u128::from(count);
        let shards = (0..count)
            .map(|i| {
                let start = step * u128::from(i) + u128::from(i > 0);
                let end = if i + 1 == count { u128::MAX } else { step * u128::from(i + 1) };
                Shard {
                    id: ShardId::new(format!("shardId-{i:012}")).expect("valid"),
                    parent: None,
                    adjacent_parent: None,
                    hash_range: HashKeyRange::new(HashKey(start), HashKey(end)).expect("ordered"),
                    starting_sequence: SequenceNumber::new("1").expect("valid"),
                    ending_sequence: None,
                }
            })
            .collect();
        Self { shards, limit, buckets: Mutex::new(HashMap::new()), sequence: 0.into() }
    }

    fn shard_for(&self, key: HashKey) -> &Shard {
        let at = self.shards.partition_point(|s| s.hash_range.end() < key);
        &self.shards[at.min(self.shards.len() - 1)]
    }
}

fn unsupported() -> ApiError {
    ApiError::new(ApiErrorKind::Other, "not part of the benchmark sink")
}

#[async_trait]
impl KinesisApi for Sink {
    async fn list_shards(&self, _: &StreamName) -> Result<Vec<Shard>, ApiError> {
        Ok(self.shards.clone())
    }

    async fn describe_stream_summary(&self, s: &StreamName) -> Result<StreamSummary, ApiError> {
        Ok(StreamSummary {
            name: s.clone(),
            arn: "arn:bench".into(),
            status: StreamStatus::Active,
            open_shard_count: self.shards.len() as u32,
            retention: Duration::from_secs(86_400),
        })
    }

    async fn put_records(
        &self,
        _: &StreamName,
        entries: Vec<PutRecordsEntry>,
    ) -> Result<Vec<PutRecordsOutcome>, ApiError> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("not poisoned");
        Ok(entries
            .iter()
            .map(|e| {
                let key = e
                    .explicit_hash_key
                    .unwrap_or_else(|| HashKey::from_partition_key(&e.partition_key));
                let shard = self.shard_for(key);
                if let Some((records_per_sec, bytes_per_sec)) = self.limit {
                    let (records, bytes, at) = buckets.entry(shard.id.clone()).or_insert((
                        records_per_sec,
                        bytes_per_sec,
                        now,
                    ));
                    let elapsed = now.duration_since(*at).as_secs_f64();
                    *records = (*records + elapsed * records_per_sec).min(records_per_sec);
                    *bytes = (*bytes + elapsed * bytes_per_sec).min(bytes_per_sec);
                    *at = now;
                    let size = e.size() as f64;
                    if *records < 1.0 || *bytes < size {
                        return PutRecordsOutcome::Failed(ApiError::from_code(
                            "ProvisionedThroughputExceededException",
                            "Rate exceeded",
                        ));
                    }
                    *records -= 1.0;
                    *bytes -= size;
                }
                let n = self.sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                PutRecordsOutcome::Written {
                    shard_id: shard.id.clone(),
                    sequence_number: SequenceNumber::new(format!(
                        "4959033827149025660855969253836157109592157598913{n:08}"
                    ))
                    .expect("digits"),
                }
            })
            .collect())
    }

    async fn get_shard_iterator(
        &self,
        _: &StreamName,
        _: &ShardId,
        _: ShardIteratorPosition,
    ) -> Result<ShardIterator, ApiError> {
        Err(unsupported())
    }
    async fn get_records(
        &self,
        _: &ShardIterator,
        _: Option<u32>,
    ) -> Result<GetRecordsOutput, ApiError> {
        Err(unsupported())
    }
    async fn create_stream(&self, _: &StreamName, _: u32) -> Result<(), ApiError> {
        Err(unsupported())
    }
    async fn delete_stream(&self, _: &StreamName) -> Result<(), ApiError> {
        Err(unsupported())
    }
    async fn split_shard(&self, _: &StreamName, _: &ShardId, _: HashKey) -> Result<(), ApiError> {
        Err(unsupported())
    }
    async fn merge_shards(&self, _: &StreamName, _: &ShardId, _: &ShardId) -> Result<(), ApiError> {
        Err(unsupported())
    }
    async fn update_shard_count(&self, _: &StreamName, _: u32) -> Result<(), ApiError> {
        Err(unsupported())
    }
    async fn register_stream_consumer(
        &self,
        _: &str,
        _: &ConsumerName,
    ) -> Result<ConsumerDescription, ApiError> {
        Err(unsupported())
    }
    async fn describe_stream_consumer(
        &self,
        _: &str,
        _: &ConsumerName,
    ) -> Result<ConsumerDescription, ApiError> {
        Err(unsupported())
    }
    async fn deregister_stream_consumer(&self, _: &str, _: &ConsumerName) -> Result<(), ApiError> {
        Err(unsupported())
    }
    async fn subscribe_to_shard(
        &self,
        _: &str,
        _: &ShardId,
        _: ShardIteratorPosition,
    ) -> Result<Box<dyn Subscription>, ApiError> {
        Err(unsupported())
    }
}
