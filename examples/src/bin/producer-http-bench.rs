//! `producer-http-bench`: the producer end to end over HTTP, shaped like `bench/py_producer.py`
//! (the awslabs Python `aws-kinesis-agg` + boto3 PutRecords path) so that
//! `bench/producer-vs-python.sh` can run both against the same endpoint (the limits proxy in
//! front of kinesalite) and the same stream shape.
//!
//! Builds `--records` user records first, untimed, as the Python driver does: `--size` random
//! bytes each, a partition key drawn uniformly from `key-0` .. `key-<keys-1>`. Then, timed,
//! sends every record through a [`Producer`] with the default configuration (KPL aggregation
//! per predicted shard up to 50 KiB, per-key order, adaptive rate limit, retries) and waits for
//! every receipt; `--record-order relaxed` switches to the KPL's order. Prints one JSON line:
//! user records, seconds, CPU seconds of the process over the timed part, user records/s, the
//! producer's counters.
//!
//! ```text
//! producer-http-bench --endpoint http://127.0.0.1:PORT --stream s --records 1000000
//! ```

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, ensure};
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use clap::{Parser, ValueEnum};
use kinesis_common::{KinesisApi, SdkKinesis, StreamName};
use kinesis_producer::{Producer, ProducerConfig, Record, RecordOrder};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

/// Send pre-built records through the producer over HTTP and time it.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The Kinesis endpoint (plain HTTP, such as the limits proxy); dummy credentials.
    #[arg(long)]
    endpoint: String,
    /// The stream, which must exist.
    #[arg(long)]
    stream: String,
    /// User records to send.
    #[arg(long)]
    records: usize,
    /// Data bytes per user record.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Distinct partition keys, `key-0` .. `key-<N-1>`.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Seed of the key choice and the data.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Per-key order (the default) or the KPL's relaxed order, which lets one PutRecords
    /// carry several aggregates per shard.
    #[arg(long, value_enum, default_value_t = OrderArg::PerKey)]
    record_order: OrderArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OrderArg {
    /// Each key's records are written in send order.
    PerKey,
    /// As the KPL: retries may overtake.
    Relaxed,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = aws_config::defaults(BehaviorVersion::v2026_01_12())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .endpoint_url(&args.endpoint)
        .load()
        .await;
    let kinesis: Arc<dyn KinesisApi> = Arc::new(SdkKinesis::new(&config));
    let stream = StreamName::new(args.stream.clone())?;

    let mut rng = SmallRng::seed_from_u64(args.seed);
    let keys: Vec<String> = (0..args.keys).map(|i| format!("key-{i}")).collect();
    let records: Vec<Record> = (0..args.records)
        .map(|_| {
            let mut data = vec![0; args.size];
            rng.fill_bytes(&mut data);
            Record::new(keys[rng.random_range(0..keys.len())].clone(), data)
        })
        .collect();

    let producer = Producer::builder(kinesis)
        .stream(stream)
        .config(ProducerConfig {
            record_order: match args.record_order {
                OrderArg::PerKey => RecordOrder::PerKey,
                OrderArg::Relaxed => RecordOrder::Relaxed,
            },
            ..ProducerConfig::default()
        })
        .start()
        .await
        .context("start the producer")?;
    let cpu_before = cpu_secs();
    let started = Instant::now();
    let mut receipts = Vec::with_capacity(records.len());
    for record in records {
        // `send` waits while the producer's budget is full.
        receipts.push(producer.send(record).await?);
    }
    let mut written = 0usize;
    for receipt in receipts {
        if receipt.await.is_ok() {
            written += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_secs().zip(cpu_before).map(|(after, before)| after - before);
    let metrics = producer.shutdown().await;
    ensure!(
        written == args.records,
        "{} of {} records not written",
        args.records - written,
        args.records
    );
    println!(
        "{}",
        serde_json::json!({
            "impl": "rust",
            "stream": args.stream,
            "user_records": written,
            "record_size": args.size,
            "keys": args.keys,
            "record_order": format!("{:?}", args.record_order),
            "kinesis_records": metrics.kinesis_records_put,
            "put_records_requests": metrics.put_records_requests,
            "retried_entries": metrics.retries,
            "throttled": metrics.throttled,
            "elapsed_secs": elapsed,
            "cpu_secs": cpu,
            "user_records_per_sec": written as f64 / elapsed,
            "mib_per_sec": (written * args.size) as f64 / elapsed / 1_048_576.0,
        })
    );
    Ok(())
}

/// CPU time of the whole process (every thread), user plus system, from `/proc/self/stat`
/// (fields 14 and 15, in USER_HZ = 100 ticks per second on Linux); `None` elsewhere.
fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after it are space-separated.
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ');
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}
