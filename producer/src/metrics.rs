//! The producer's counters: kept in atomics for [`MetricsSnapshot`], and reported through the
//! `metrics` facade (names prefixed `kinesis_producer_`) for whatever recorder the application
//! installed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Counters since the producer started.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) user_records_received: AtomicU64,
    pub(crate) user_records_put: AtomicU64,
    pub(crate) user_records_failed: AtomicU64,
    pub(crate) kinesis_records_put: AtomicU64,
    pub(crate) bytes_put: AtomicU64,
    pub(crate) put_records_requests: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) throttled: AtomicU64,
    pub(crate) wrong_shard: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) rejected: AtomicU64,
}

impl Counters {
    /// A record was accepted by `send`: counted at once for [`MetricsSnapshot`]; reported
    /// to the `metrics` facade by [`arrived`](Self::arrived) when the pipeline takes it, a
    /// batch at a time (a recorder's lookup per record would cost more than the record).
    pub(crate) fn received(&self) {
        self.user_records_received.fetch_add(1, Relaxed);
    }

    /// The pipeline took `users` accepted records.
    pub(crate) fn arrived(&self, users: usize) {
        if users > 0 {
            metrics::counter!("kinesis_producer_user_records_received_total")
                .increment(users as u64);
        }
    }

    /// A Kinesis record carrying `users` user records and `bytes` bytes was written.
    pub(crate) fn put(&self, users: usize, bytes: usize, oldest: Duration) {
        self.user_records_put.fetch_add(users as u64, Relaxed);
        self.kinesis_records_put.fetch_add(1, Relaxed);
        self.bytes_put.fetch_add(bytes as u64, Relaxed);
        metrics::counter!("kinesis_producer_user_records_put_total").increment(users as u64);
        metrics::counter!("kinesis_producer_kinesis_records_put_total").increment(1);
        metrics::counter!("kinesis_producer_bytes_put_total").increment(bytes as u64);
        metrics::histogram!("kinesis_producer_user_records_per_kinesis_record")
            .record(users as f64);
        metrics::histogram!("kinesis_producer_oldest_send_to_delivery_seconds")
            .record(oldest.as_secs_f64());
    }

    pub(crate) fn request(&self, entries: usize, elapsed: Duration) {
        self.put_records_requests.fetch_add(1, Relaxed);
        metrics::counter!("kinesis_producer_put_records_requests_total").increment(1);
        metrics::histogram!("kinesis_producer_request_seconds").record(elapsed.as_secs_f64());
        metrics::histogram!("kinesis_producer_kinesis_records_per_request").record(entries as f64);
    }

    pub(crate) fn retry(&self, code: &str, throttled: bool) {
        self.retries.fetch_add(1, Relaxed);
        metrics::counter!("kinesis_producer_retries_total", "code" => code.to_owned()).increment(1);
        if throttled {
            self.throttled.fetch_add(1, Relaxed);
            metrics::counter!("kinesis_producer_throttled_total").increment(1);
        }
    }

    pub(crate) fn wrong_shard(&self) {
        self.wrong_shard.fetch_add(1, Relaxed);
        metrics::counter!("kinesis_producer_wrong_shard_total").increment(1);
    }

    pub(crate) fn expired(&self, users: usize) {
        self.expired.fetch_add(users as u64, Relaxed);
        self.user_records_failed.fetch_add(users as u64, Relaxed);
        metrics::counter!("kinesis_producer_user_records_expired_total").increment(users as u64);
    }

    pub(crate) fn rejected(&self, users: usize, code: &str) {
        self.rejected.fetch_add(users as u64, Relaxed);
        self.user_records_failed.fetch_add(users as u64, Relaxed);
        metrics::counter!("kinesis_producer_user_records_rejected_total", "code" => code.to_owned())
            .increment(users as u64);
    }

    pub(crate) fn snapshot(
        &self,
        outstanding_records: u64,
        outstanding_bytes: u64,
    ) -> MetricsSnapshot {
        metrics::gauge!("kinesis_producer_outstanding_records").set(outstanding_records as f64);
        metrics::gauge!("kinesis_producer_outstanding_bytes").set(outstanding_bytes as f64);
        MetricsSnapshot {
            user_records_received: self.user_records_received.load(Relaxed),
            user_records_put: self.user_records_put.load(Relaxed),
            user_records_failed: self.user_records_failed.load(Relaxed),
            kinesis_records_put: self.kinesis_records_put.load(Relaxed),
            bytes_put: self.bytes_put.load(Relaxed),
            put_records_requests: self.put_records_requests.load(Relaxed),
            retries: self.retries.load(Relaxed),
            throttled: self.throttled.load(Relaxed),
            wrong_shard: self.wrong_shard.load(Relaxed),
            expired: self.expired.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            outstanding_records,
            outstanding_bytes,
        }
    }
}

/// The producer's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// User records accepted by `send`.
    pub user_records_received: u64,
    /// User records written.
    pub user_records_put: u64,
    /// User records that failed (expired or rejected).
    pub user_records_failed: u64,
    /// Kinesis records written (an aggregate counts once).
    pub kinesis_records_put: u64,
    /// Bytes of Kinesis record data and partition keys written.
    pub bytes_put: u64,
    /// PutRecords requests answered.
    pub put_records_requests: u64,
    /// Kinesis records sent again after a failure.
    pub retries: u64,
    /// Retries caused by throttling.
    pub throttled: u64,
    /// Aggregates written to another shard than predicted and sent again.
    pub wrong_shard: u64,
    /// User records whose TTL ran out.
    pub expired: u64,
    /// User records Kinesis refused for good.
    pub rejected: u64,
    /// User records accepted and not yet resolved.
    pub outstanding_records: u64,
    /// Bytes of user records accepted and not yet resolved.
    pub outstanding_bytes: u64,
}
