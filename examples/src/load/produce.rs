//! `produce`: sends numbered payloads through the producer at a target rate and reports what
//! became of them.
//!
//! Four tasks: the sender (this function: pacing, key and size choice, `send`), the
//! collector (awaits every receipt in send order, tallies outcomes and latencies, and buckets
//! them per second into a [`Series`]), the sampler of the producer's retry counters (once a
//! second, for the series), and the progress printer (once a second, if asked). Records are
//! sent from one task, so each key's sequence numbers are in send order, which is the order
//! the producer keeps per key ([`RecordOrder::PerKey`](kinesis_producer::RecordOrder)).
//!
//! Invariant: every id in `0..records` of the report ends up exactly once in `delivered` or
//! in `failed_ids`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kinesis_common::{ApiError, KinesisApi, StreamName};
use kinesis_producer::{DeliveryError, Producer, ProducerConfig, Receipt, Record, SendError};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::histogram::LatencyHistogram;
use super::ids::IdSet;
use super::payload::{self, Filler, Header, RunId};
use super::report::{ProduceReport, StopReason};
use super::retry_codes::RetryCodes;
use super::series::{CounterSample, INTERVAL, Series, SeriesRecorder};
use super::workload::{KeyChooser, Pacer, Rate, SizeSpec};
use super::{ProgressSink, spawn_stop_flag};

/// How far a stalled sender may catch up at once (see [`Pacer`]).
const CATCH_UP: Duration = Duration::from_millis(100);
/// Receipts waiting for the collector; beyond this the sender waits.
const RECEIPT_QUEUE: usize = 65_536;

/// What to send.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    /// The stream.
    pub stream: StreamName,
    /// The run id written into every payload.
    pub run_id: RunId,
    /// The target rate.
    pub rate: Rate,
    /// Payload sizes.
    pub size: SizeSpec,
    /// Partition keys.
    pub keys: KeyChooser,
    /// Stop after this many records.
    pub records: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// What fills payloads after the header.
    pub filler: Filler,
    /// Seed of key and size choice.
    pub seed: u64,
    /// The producer's settings (aggregation, compression, order, TTL, ...).
    pub producer: ProducerConfig,
}

/// Counters the progress printer reads.
#[derive(Debug, Default)]
struct Live {
    sent: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
}

/// One record's outcome, as the collector receives it, with the time since the run's start
/// at which the producer accepted or refused it.
enum Outcome {
    Pending { id: u64, size: usize, accepted: Duration, receipt: Receipt },
    Refused { id: u64, label: &'static str, at: Duration },
}

/// What the collector tallied.
#[derive(Debug, Default)]
struct Collected {
    delivered: u64,
    bytes: u64,
    failed_ids: IdSet,
    latency: LatencyHistogram,
    max_attempts: u32,
    aggregated: u64,
    errors_by_code: BTreeMap<String, u64>,
    per_shard: BTreeMap<String, u64>,
    last_outcome: Option<Instant>,
    series: SeriesRecorder,
}

/// Sends records until the count, the duration or `stop` ends the run, waits for every
/// outcome, and reports. `progress`, if given, gets a line once a second.
///
/// For retries by code, the first call installs [`RetryCodes`] as the process's global
/// `metrics` recorder, unless the process has one already.
pub async fn produce(
    api: Arc<dyn KinesisApi>,
    options: ProduceOptions,
    progress: Option<ProgressSink>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ProduceReport> {
    Ok(produce_with_series(api, options, progress, stop).await?.0)
}

/// [`produce()`], and the run second by second: records sent, delivered and failed, payload
/// bytes, latency percentiles of the deliveries completed in each second, and the producer's
/// retries (see [`series`](super::series)).
pub async fn produce_with_series(
    api: Arc<dyn KinesisApi>,
    options: ProduceOptions,
    progress: Option<ProgressSink>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(ProduceReport, Series)> {
    let producer = Producer::builder(api)
        .stream(options.stream.clone())
        .config(options.producer.clone())
        .start()
        .await?;
    let retry_codes = RetryCodes::install();
    let codes_before = retry_codes.map(RetryCodes::snapshot).unwrap_or_default();
    let (stopped, stop_task) = spawn_stop_flag(stop);
    let live = Arc::new(Live::default());
    let (tx, rx) = mpsc::channel(RECEIPT_QUEUE);
    let start = Instant::now();
    let collector = tokio::spawn(collect(rx, Arc::clone(&live), start));
    // The producer's cumulative retry counters once a second, for the series.
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (producer, samples) = (producer.clone(), Arc::clone(&samples));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(start + INTERVAL, INTERVAL);
            loop {
                let now = tick.tick().await;
                let m = producer.metrics();
                let sample =
                    CounterSample { at: now - start, retries: m.retries, throttled: m.throttled };
                samples.lock().unwrap_or_else(|e| e.into_inner()).push(sample);
            }
        })
    };
    let printer = progress.map(|sink| {
        let (producer, live) = (producer.clone(), Arc::clone(&live));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
            let mut last = (start, 0);
            loop {
                let now = tick.tick().await;
                let sent = live.sent.load(Relaxed);
                let m = producer.metrics();
                let rate = (sent - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
                last = (now, sent);
                sink(&format!(
                    "[{:>5.0}s] sent {sent} ({rate:.0}/s), delivered {}, failed {}, in flight {}, retries {}, throttled {}",
                    (now - start).as_secs_f64(),
                    live.delivered.load(Relaxed),
                    live.failed.load(Relaxed),
                    m.outstanding_records,
                    m.retries,
                    m.throttled
                ));
            }
        })
    });

    let stopped_by = send_loop(&producer, &options, &tx, &live, &stopped, start).await;
    drop(tx);
    let collected = collector.await?;
    let metrics = producer.shutdown().await;
    sampler.abort();
    if let Some(printer) = printer {
        printer.abort();
    }
    stop_task.abort();
    let codes_after = retry_codes.map(RetryCodes::snapshot).unwrap_or_default();

    let records = live.sent.load(Relaxed);
    let elapsed =
        collected.last_outcome.unwrap_or_else(Instant::now).saturating_duration_since(start);
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    samples.push(CounterSample {
        at: start.elapsed(),
        retries: metrics.retries,
        throttled: metrics.throttled,
    });
    let series = collected.series.finish(elapsed, &samples);
    let report = ProduceReport {
        stream: options.stream.to_string(),
        run_id: options.run_id,
        records,
        delivered: collected.delivered,
        failed: collected.failed_ids.len(),
        failed_ids: collected.failed_ids,
        bytes: collected.bytes,
        elapsed,
        records_per_sec: collected.delivered as f64 / secs,
        mib_per_sec: collected.bytes as f64 / secs / 1024.0 / 1024.0,
        latency: collected.latency.percentiles(),
        max_attempts: collected.max_attempts,
        aggregated: collected.aggregated,
        kinesis_records: metrics.kinesis_records_put,
        put_records_requests: metrics.put_records_requests,
        retries: metrics.retries,
        throttled: metrics.throttled,
        wrong_shard: metrics.wrong_shard,
        retries_by_code: RetryCodes::difference(&codes_before, &codes_after),
        errors_by_code: collected.errors_by_code,
        per_shard: collected.per_shard,
        stopped_by,
    };
    Ok((report, series))
}

/// Sends until a limit or the stop flag; returns why it stopped.
async fn send_loop(
    producer: &Producer,
    options: &ProduceOptions,
    tx: &mpsc::Sender<Outcome>,
    live: &Live,
    stopped: &AtomicBool,
    start: Instant,
) -> StopReason {
    let mut rng = SmallRng::seed_from_u64(options.seed);
    let mut pacer = Pacer::new(options.rate, CATCH_UP);
    let mut key_seqs = vec![0u64; options.keys.keys() as usize];
    let mut id = 0u64;
    loop {
        if options.records.is_some_and(|n| id >= n) {
            return StopReason::Records;
        }
        if stopped.load(Relaxed) {
            return StopReason::Interrupted;
        }
        let key = options.keys.choose(&mut rng);
        let size = options.size.sample(&mut rng);
        let now = start.elapsed();
        let at = pacer.schedule(now, size);
        if options.duration.is_some_and(|d| at >= d) {
            return StopReason::Duration;
        }
        // Sleeping costs about a millisecond however short, so sends up to a millisecond
        // early go at once; the schedule, not the sleeps, keeps the rate.
        if at > now + Duration::from_millis(1) {
            tokio::time::sleep_until(start + at).await;
        }
        let seq = &mut key_seqs[key as usize];
        let header = Header {
            run_id: options.run_id,
            record_id: id,
            key_index: key,
            key_seq: *seq,
            sent_at: SystemTime::now(),
        };
        *seq += 1;
        let data = payload::encode(&header, size, options.filler);
        let sent = producer.send(Record::new(KeyChooser::partition_key(key), data)).await;
        let at = start.elapsed();
        let outcome = match sent {
            Ok(receipt) => Outcome::Pending { id, size, accepted: at, receipt },
            Err(SendError::Invalid { .. }) => Outcome::Refused { id, label: "invalid", at },
            Err(_) => Outcome::Refused { id, label: "closed", at },
        };
        let closed = matches!(outcome, Outcome::Refused { label: "closed", .. });
        live.sent.fetch_add(1, Relaxed);
        id += 1;
        if tx.send(outcome).await.is_err() || closed {
            return StopReason::Closed;
        }
    }
}

/// Awaits every outcome in send order and tallies it, also per second since `start`.
async fn collect(mut rx: mpsc::Receiver<Outcome>, live: Arc<Live>, start: Instant) -> Collected {
    let mut c = Collected::default();
    while let Some(outcome) = rx.recv().await {
        match outcome {
            Outcome::Pending { id, size, accepted, receipt } => {
                c.series.sent(accepted);
                match receipt.await {
                    Ok(delivery) => {
                        c.series.delivered(accepted, delivery.latency, size as u64);
                        c.delivered += 1;
                        c.bytes += size as u64;
                        c.latency.record(delivery.latency);
                        c.max_attempts = c.max_attempts.max(delivery.attempts);
                        c.aggregated += u64::from(delivery.sub_sequence_number.is_some());
                        *c.per_shard.entry(delivery.shard_id.to_string()).or_default() += 1;
                        live.delivered.fetch_add(1, Relaxed);
                    }
                    Err(error) => {
                        c.series.failed(start.elapsed());
                        c.failed_ids.insert(id);
                        c.max_attempts = c.max_attempts.max(error.attempts());
                        *c.errors_by_code.entry(error_label(&error)).or_default() += 1;
                        live.failed.fetch_add(1, Relaxed);
                    }
                }
            }
            Outcome::Refused { id, label, at } => {
                c.series.sent(at);
                c.series.failed(at);
                c.failed_ids.insert(id);
                *c.errors_by_code.entry(label.to_owned()).or_default() += 1;
                live.failed.fetch_add(1, Relaxed);
            }
        }
        c.last_outcome = Some(Instant::now());
    }
    c
}

/// `expired:<code>`, `rejected:<code>` or `stopped`.
fn error_label(error: &DeliveryError) -> String {
    fn code(e: &ApiError) -> String {
        e.code().map_or_else(|| format!("{:?}", e.kind()), str::to_owned)
    }
    match error {
        DeliveryError::Expired { last_error, .. } => {
            format!("expired:{}", last_error.as_ref().map_or_else(|| "no-attempt".to_owned(), code))
        }
        DeliveryError::Rejected { error, .. } => format!("rejected:{}", code(error)),
        DeliveryError::Stopped { .. } => "stopped".to_owned(),
        _ => "other".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesis_common::ApiErrorKind;

    #[test]
    fn errors_are_labelled_by_outcome_and_code() {
        let record = Record::new("k", "x");
        let throttled = ApiError::from_code("ProvisionedThroughputExceededException", "slow down");
        let e = DeliveryError::Expired {
            record: record.clone(),
            attempts: 3,
            last_error: Some(throttled),
        };
        assert_eq!(error_label(&e), "expired:ProvisionedThroughputExceededException");
        let e = DeliveryError::Expired { record: record.clone(), attempts: 0, last_error: None };
        assert_eq!(error_label(&e), "expired:no-attempt");
        let denied = ApiError::new(ApiErrorKind::AccessDenied, "no");
        let e = DeliveryError::Rejected { record: record.clone(), attempts: 1, error: denied };
        assert_eq!(error_label(&e), "rejected:AccessDenied");
        assert_eq!(error_label(&DeliveryError::Stopped { record, attempts: 1 }), "stopped");
    }
}
