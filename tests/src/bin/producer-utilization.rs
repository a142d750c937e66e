//! Benchmark: how close a saturated producer runs to the per-shard write limit, and how many of
//! its writes get throttled, through the AWS-like limits proxy in front of a Kinesis emulator
//! (kinesalite for throughput work: it stays fast as shards fill).
//!
//! The producer is offered more than the shards accept for `--seconds`; the proxy enforces
//! 1 MiB/s and 1 000 records/s per shard as Kinesis does. Reported: accepted bytes per shard per
//! second over the steady window (the first seconds of adaptation and the last second are left
//! out) as a share of 1 MiB/s, and the share of PutRecords entries answered with
//! ProvisionedThroughputExceededException. One JSON line on stdout.
//!
//! `cargo xtask up --with-kinesalite --detach`, then
//! `cargo run --release -p kinesis-integration-tests --bin producer-utilization -- --endpoint $KTK_KINESALITE_ENDPOINT`.

use std::time::{Duration, Instant};

use anyhow::Context;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use clap::Parser;
use kinesis_common::{KinesisApi, SdkKinesis};
use kinesis_integration_tests::proxy::{LimitsProxy, ProxyConfig};
use kinesis_integration_tests::{create_stream, unique_stream};
use kinesis_producer::{Producer, ProducerConfig, Record};

/// Saturate a stream through the limits proxy and measure shard utilisation.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// The emulator's endpoint (plain HTTP on loopback).
    #[arg(long, env = "KTK_KINESALITE_ENDPOINT")]
    endpoint: String,
    /// Shards of the stream.
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// Seconds of saturation.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Seconds left out at the start while the limiter adapts.
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Bytes of data per user record.
    #[arg(long, default_value_t = 100)]
    size: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = aws_config::defaults(BehaviorVersion::v2026_01_12())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .endpoint_url(&args.endpoint)
        .load()
        .await;
    let direct = SdkKinesis::new(&base);
    let stream = unique_stream("utilization");
    create_stream(&direct, &stream, args.shards).await.context("create the stream")?;

    let proxy = LimitsProxy::start(&args.endpoint, ProxyConfig::default()).await?;
    let through_proxy = std::sync::Arc::new(SdkKinesis::new(&proxy.sdk_config(&base)));
    let producer = Producer::builder(through_proxy as std::sync::Arc<dyn KinesisApi>)
        .stream(stream.clone())
        .config(ProducerConfig::default())
        .start()
        .await?;

    let data = bytes::Bytes::from(vec![b'u'; args.size]);
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let mut n = 0u64;
    let mut receipts = Vec::new();
    while Instant::now() < until {
        // `send` waits when the budget is full: the producer is always saturated.
        receipts.push(producer.send(Record::new(format!("k{}", n % 10_000), data.clone())).await?);
        n += 1;
        if receipts.len() >= 200_000 {
            // Dropping a receipt does not cancel its record; failures still show in the
            // metrics. Awaiting them here would let the producer run dry.
            receipts.clear();
        }
    }
    let metrics = producer.shutdown().await;
    drop(receipts);
    let stats = proxy.stats();
    // Every second from the end of the warm-up to the last full second is saturated: after
    // `--seconds` the producer still drains its budget at the shards' pace.
    let mut shares = Vec::new();
    for shard in stats.shards.iter().filter(|s| s.stream == stream.as_str()) {
        let mut seconds: Vec<(u64, u64)> =
            shard.per_second.iter().map(|s| (s.second, s.bytes)).collect();
        seconds.sort_unstable();
        let (Some(first), Some(last)) = (seconds.first(), seconds.last()) else { continue };
        let window = (first.0 + args.warmup)..last.0;
        let bytes: Vec<u64> =
            seconds.iter().filter(|(s, _)| window.contains(s)).map(|(_, b)| *b).collect();
        if !bytes.is_empty() {
            shares.push(bytes.iter().sum::<u64>() as f64 / bytes.len() as f64 / 1_048_576.0);
        }
    }
    let attempts = metrics.kinesis_records_put + metrics.retries;
    println!(
        "{{\"bench\":\"producer-utilization\",\"shards\":{},\"seconds\":{},\"warmup\":{},\"size\":{},\"user_records\":{},\"kinesis_records\":{},\"requests\":{},\"mean_shard_utilisation\":{:.3},\"min_shard_utilisation\":{:.3},\"throttled_entries\":{},\"entry_attempts\":{attempts},\"throttled_share\":{:.4},\"failed\":{}}}",
        args.shards,
        args.seconds,
        args.warmup,
        args.size,
        metrics.user_records_put,
        metrics.kinesis_records_put,
        metrics.put_records_requests,
        shares.iter().sum::<f64>() / shares.len().max(1) as f64,
        shares.iter().copied().fold(f64::INFINITY, f64::min),
        metrics.throttled,
        metrics.throttled as f64 / attempts.max(1) as f64,
        metrics.user_records_failed,
    );
    proxy.shutdown().await;
    direct.delete_stream(&stream).await.ok();
    Ok(())
}
