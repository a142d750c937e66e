//! The consumer's metrics, reported through the `metrics` facade for whatever recorder the
//! application installed. Names are prefixed `kinesis_consumer_`; per-shard series carry a
//! `shard` label.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `kinesis_consumer_millis_behind_latest` | gauge | shard | how far the last batch is behind the newest record |
//! | `kinesis_consumer_records_processed_total` | counter | shard | user records handed to the processor |
//! | `kinesis_consumer_bytes_processed_total` | counter | shard | bytes of user record data handed to the processor |
//! | `kinesis_consumer_process_seconds` | histogram | shard | time in `process` per batch |
//! | `kinesis_consumer_corrupt_records_total` | counter | shard | corrupt aggregates passed through whole |
//! | `kinesis_consumer_filtered_records_total` | counter | shard | user records of aggregates outside the shard's range |
//! | `kinesis_consumer_redelivered_records_total` | counter | shard | Kinesis records an endpoint handed out again, dropped |
//! | `kinesis_consumer_checkpoints_total` | counter | shard | checkpoint writes |
//! | `kinesis_consumer_leases_held` | gauge | | leases this worker holds |
//! | `kinesis_consumer_invalid_lease_items` | gauge | | lease table items with missing or mistyped attributes, ignored (at the last scan) |
//! | `kinesis_consumer_leases_taken_total` | counter | kind | leases taken (`unowned`, `expired`, `very_old`, `steal`, `own`) |
//! | `kinesis_consumer_leases_lost_total` | counter | shard | leases lost to another worker or to failed renewals |
//! | `kinesis_consumer_lease_renewal_failures_total` | counter | shard | renewals that failed with a table error |
//! | `kinesis_consumer_shards_ended_total` | counter | | shards checkpointed at `SHARD_END` |
//! | `kinesis_consumer_get_records_calls_total` | counter | stream, shard | GetRecords calls (polling retrieval) |
//! | `kinesis_consumer_get_records_throttled_total` | counter | stream, shard | GetRecords calls throttled |
//! | `kinesis_consumer_expired_iterator_total` | counter | stream, shard | iterators that expired and were renewed |
//! | `kinesis_consumer_retrieval_retries_total` | counter | stream, shard | retried GetRecords / GetShardIterator failures |

use std::time::Duration;

use kinesis_common::ShardId;

fn shard_label(shard: &ShardId) -> String {
    shard.as_str().to_owned()
}

pub(crate) fn batch(shard: &ShardId, records: usize, bytes: usize, millis_behind: Option<u64>) {
    let label = shard_label(shard);
    metrics::counter!("kinesis_consumer_records_processed_total", "shard" => label.clone())
        .increment(records as u64);
    metrics::counter!("kinesis_consumer_bytes_processed_total", "shard" => label.clone())
        .increment(bytes as u64);
    if let Some(millis) = millis_behind {
        metrics::gauge!("kinesis_consumer_millis_behind_latest", "shard" => label)
            .set(millis as f64);
    }
}

pub(crate) fn processed(shard: &ShardId, elapsed: Duration) {
    metrics::histogram!("kinesis_consumer_process_seconds", "shard" => shard_label(shard))
        .record(elapsed.as_secs_f64());
}

pub(crate) fn decoding(shard: &ShardId, corrupt: usize, filtered_out: usize, redelivered: usize) {
    if redelivered > 0 {
        metrics::counter!("kinesis_consumer_redelivered_records_total", "shard" => shard_label(shard))
            .increment(redelivered as u64);
    }
    if corrupt > 0 {
        metrics::counter!("kinesis_consumer_corrupt_records_total", "shard" => shard_label(shard))
            .increment(corrupt as u64);
    }
    if filtered_out > 0 {
        metrics::counter!("kinesis_consumer_filtered_records_total", "shard" => shard_label(shard))
            .increment(filtered_out as u64);
    }
}

pub(crate) fn checkpoint_written(shard: &ShardId) {
    metrics::counter!("kinesis_consumer_checkpoints_total", "shard" => shard_label(shard))
        .increment(1);
}

pub(crate) fn invalid_lease_items(count: usize) {
    metrics::gauge!("kinesis_consumer_invalid_lease_items").set(count as f64);
}

pub(crate) fn leases_held(count: usize) {
    metrics::gauge!("kinesis_consumer_leases_held").set(count as f64);
}

pub(crate) fn lease_taken(kind: &'static str) {
    metrics::counter!("kinesis_consumer_leases_taken_total", "kind" => kind).increment(1);
}

pub(crate) fn lease_lost(shard: &ShardId) {
    metrics::counter!("kinesis_consumer_leases_lost_total", "shard" => shard_label(shard))
        .increment(1);
}

pub(crate) fn renewal_failed(shard: &ShardId) {
    metrics::counter!("kinesis_consumer_lease_renewal_failures_total", "shard" => shard_label(shard))
        .increment(1);
}

pub(crate) fn shard_ended() {
    metrics::counter!("kinesis_consumer_shards_ended_total").increment(1);
}
