//! Propagation latency of the consumer: the time from a PutRecords call to the record being
//! handed to `ShardProcessor::process`, for polling retrieval (default settings and a short
//! idle wait) and for enhanced fan-out, measured one after the other in one run against the
//! same Kinesis endpoint.
//!
//! Each mode gets a fresh stream and lease table. Records are written one per PutRecords call
//! at a steady rate once the consumer holds every shard; each carries the time it was sent
//! (this process's monotonic clock), and the processor records the difference on arrival.
//!
//! Run it against the local substrate: `eval "$(cargo xtask up --detach)"`, then
//! `cargo run --release -p kinesis-examples --bin consumer-latency`, then `cargo xtask down`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use kinesis_common::fake::FakeKinesis;
use kinesis_common::{
    ConsumerName, KinesisApi, PartitionKey, PutRecordsEntry, ShardId, StreamName, StreamStatus,
};
use kinesis_consumer::lease::InMemoryLeaseStore;
use kinesis_consumer::{
    Batch, Checkpointer, Consumer, ConsumerConfig, DynamoLeaseStore, InitialPosition, LeaseStore,
    PollingSettings, ProcessorError, Retrieval, ShardProcessor, WorkerId,
};

/// Measure send-to-process latency for each retrieval mode.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Records per mode.
    #[arg(long, default_value_t = 1_000)]
    records: usize,
    /// Records written per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Shards of each stream.
    #[arg(long, default_value_t = 2)]
    shards: u32,
    /// Run against the in-process fakes (`FakeKinesis`, in-memory lease table) instead of the
    /// endpoint the environment names: what the consumer itself adds, without an emulator's
    /// or the network's delays.
    #[arg(long)]
    in_process: bool,
}

/// Latencies seen by the processors of one mode.
type Samples = Arc<Mutex<Vec<Duration>>>;

struct Timing {
    base: Instant,
    samples: Samples,
}

#[async_trait::async_trait]
impl ShardProcessor for Timing {
    async fn process(
        &mut self,
        batch: Batch,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let now = self.base.elapsed();
        {
            let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
            for record in &batch.records {
                let sent: [u8; 16] = record.data[..16].try_into()?;
                let sent = Duration::from_nanos(u128::from_be_bytes(sent) as u64);
                samples.push(now.saturating_sub(sent));
            }
        }
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sdk = kinesis_examples::sdk_config().await;
    let kinesis: Arc<dyn KinesisApi> = if args.in_process {
        Arc::new(FakeKinesis::builder().consumer_delay(Duration::from_millis(10)).build())
    } else {
        kinesis_examples::kinesis().await
    };
    let base = Instant::now();
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let fast_polling = {
        let mut polling = PollingSettings::default();
        polling.idle_time_between_reads = Duration::from_millis(200);
        polling
    };
    let modes = [
        ("polling (1 s idle wait, default)", Retrieval::Polling(PollingSettings::default())),
        ("polling (200 ms idle wait)", Retrieval::Polling(fast_polling)),
        ("enhanced fan-out", Retrieval::FanOut { consumer_name: ConsumerName::new("latency")? }),
    ];
    println!("| retrieval | records | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    for (i, (label, retrieval)) in modes.into_iter().enumerate() {
        let stream = StreamName::new(format!("latency-{tag:x}-{i}"))?;
        kinesis.create_stream(&stream, args.shards).await.context("CreateStream")?;
        wait_active(kinesis.as_ref(), &stream).await?;
        let table = format!("{stream}-leases");
        let leases: Arc<dyn LeaseStore> = if args.in_process {
            Arc::new(InMemoryLeaseStore::new())
        } else {
            Arc::new(DynamoLeaseStore::new(&sdk, table.clone()))
        };
        let samples: Samples = Arc::default();
        let mut config = ConsumerConfig::default();
        config.initial_position = InitialPosition::TrimHorizon;
        config.retrieval = retrieval;
        let consumer = {
            let samples = samples.clone();
            Consumer::builder(kinesis.clone(), leases)
                .stream(stream.clone())
                .application_name(table.clone())
                .worker_id(WorkerId::new("latency"))
                .config(config)
                .start(move |_: &ShardId| Timing { base, samples: samples.clone() })
                .await?
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while consumer.held_shards().len() < args.shards as usize {
            if Instant::now() > deadline {
                bail!("the consumer did not take every shard within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let retrieval reach its steady state (first GetRecords, subscriptions) first.
        tokio::time::sleep(Duration::from_secs(2)).await;

        let mut ticker = tokio::time::interval(Duration::from_secs(1) / args.rate.max(1));
        for n in 0..args.records {
            ticker.tick().await;
            let mut data = base.elapsed().as_nanos().to_be_bytes().to_vec();
            data.extend_from_slice(&[0; 48]);
            let entry = PutRecordsEntry {
                partition_key: PartitionKey::new(format!("key-{n}"))?,
                explicit_hash_key: None,
                data: Bytes::from(data),
            };
            kinesis.put_records(&stream, vec![entry]).await.context("PutRecords")?;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while samples.lock().map(|s| s.len()).unwrap_or(0) < args.records {
            if Instant::now() > deadline {
                bail!("{label}: not every record arrived within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        consumer.shutdown().await?;
        kinesis.delete_stream(&stream).await.context("DeleteStream")?;
        if !args.in_process {
            let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
            dynamodb.delete_table().table_name(&table).send().await.context("DeleteTable")?;
        }

        let mut samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
        samples.sort();
        let q = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        println!(
            "| {label} | {} | {} | {} | {} | {} |",
            samples.len(),
            ms(q(0.5)),
            ms(q(0.9)),
            ms(q(0.99)),
            ms(samples[samples.len() - 1])
        );
    }
    Ok(())
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1_000.0)
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
