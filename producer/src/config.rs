//! The producer's settings, with the KPL's defaults unless said otherwise, and their checks.

use std::time::Duration;

use kinesis_common::PartitionKey;
use kinesis_common::compression::Codec;

/// How user records are packed into Kinesis records.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Aggregation {
    /// Each user record is its own Kinesis record.
    Off,
    /// KPL-compatible: records predicted for the same shard share an aggregate, sent with the
    /// outer partition key and the first record's hash key as explicit hash key.
    PerShard,
    /// Only records with the same partition key (and explicit hash key) share an aggregate,
    /// sent with that partition key, so per-key routing downstream (Lambda parallelisation,
    /// hot-key analysis) still sees the real keys.
    SamePartitionKey,
}

/// What order records of one partition key reach their shard in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RecordOrder {
    /// Records of one partition key are written in the order they were sent, retries
    /// included: at most one request per shard is unanswered at a time, a request never
    /// carries two Kinesis records with a partition key in common (PutRecords may fail one
    /// entry and write the next), and a shard whose record waits for a retry sends nothing
    /// else until the retry is answered (a throttled shard has no room anyway). Each shard
    /// therefore sends one request per round trip: with aggregation that request carries
    /// everything the limiter allows; without aggregation it carries at most one record per
    /// key, which limits throughput when few keys are hot.
    #[default]
    PerKey,
    /// As the KPL: requests for one shard may overlap and retries may be overtaken, so records
    /// of one key can be written out of order. Highest throughput over slow links.
    Relaxed,
}

/// Compression of Kinesis record data with the envelope of
/// [`kinesis_common::compression`]. Consumers other than this toolkit's see compressed records
/// as opaque data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    /// The codec.
    pub codec: Codec,
    /// The codec's level; `None` for its default.
    pub level: Option<i32>,
    /// Records whose data is smaller than this are sent uncompressed.
    pub min_size: usize,
}

/// The producer's settings. Start from [`ProducerConfig::default`] and change fields:
/// `ProducerConfig { record_ttl: Duration::from_secs(10), ..ProducerConfig::default() }`.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a record may wait in buffers before it is sent (KPL `RecordMaxBufferedTime`,
    /// default 100 ms).
    pub record_max_buffered_time: Duration,
    /// How long a record may take to be written, retries included, before it fails as expired
    /// (KPL `RecordTtl`, default 30 s).
    pub record_ttl: Duration,
    /// How records are aggregated (default [`Aggregation::PerShard`], as the KPL).
    pub aggregation: Aggregation,
    /// Most user records per aggregate (KPL `AggregationMaxCount`, default unlimited).
    pub aggregation_max_count: usize,
    /// Most bytes per encoded aggregate (KPL `AggregationMaxSize`, default 50 KiB; larger
    /// records are sent on their own).
    pub aggregation_max_size: usize,
    /// The partition key of aggregated Kinesis records in [`Aggregation::PerShard`] mode (KPL:
    /// `"a"`); they are placed by the explicit hash key of their first user record.
    pub aggregate_partition_key: PartitionKey,
    /// Most Kinesis records per PutRecords request (KPL `CollectionMaxCount`, at most 500).
    pub collection_max_count: usize,
    /// Most bytes per PutRecords request (KPL `CollectionMaxSize`, at most 5 MiB), enforced
    /// here because emulators do not.
    pub collection_max_size: usize,
    /// Largest user record, data plus partition key (KPL `MaxUserRecordSize`, default 1 MiB;
    /// up to 10 MiB for streams whose maximum record size was raised).
    pub max_record_size: usize,
    /// Most PutRecords requests in flight at once (default 24, the KPL's `MaxConnections`).
    pub max_in_flight_requests: usize,
    /// How long one PutRecords attempt may take (KPL `RequestTimeout`, default 6 s). A timed
    /// out request may have succeeded; retrying it may write duplicates.
    pub request_timeout: Duration,
    /// Whether records of a partition key keep their order (default [`RecordOrder::PerKey`];
    /// the KPL gives no such guarantee).
    pub record_order: RecordOrder,
    /// Fail throttled records at once instead of retrying them (KPL `FailIfThrottled`).
    pub fail_if_throttled: bool,
    /// Per-shard rate ceiling as a percentage of the shard limit of 1 000 records/s and
    /// 1 MiB/s (KPL `RateLimit`, default 150). The limiter lowers it on throttling and raises
    /// it back on success.
    pub rate_limit_percent: u32,
    /// Most bytes (data plus partition keys) accepted and not yet resolved; `send` waits for
    /// room beyond this (default 64 MiB).
    pub max_outstanding_bytes: usize,
    /// Most records accepted and not yet resolved (default 100 000).
    pub max_outstanding_records: usize,
    /// Compression of Kinesis record data (default off).
    pub compression: Option<Compression>,
    /// How often the shard map is rebuilt from ListShards when nothing else asks for it
    /// (default 60 s).
    pub shard_map_refresh_interval: Duration,
    /// First and largest retry backoff ceilings (defaults 100 ms and 5 s); delays are drawn
    /// with full jitter and never run past a record's TTL.
    pub retry_backoff: (Duration, Duration),
    /// How long [`ProducerBuilder::start`](crate::ProducerBuilder::start) keeps retrying
    /// ListShards when it fails with throttling or a transient error (default 30 s; zero:
    /// fail on the first such failure). An unknown stream or denied access fails at once.
    pub start_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            record_max_buffered_time: Duration::from_millis(100),
            record_ttl: Duration::from_secs(30),
            aggregation: Aggregation::PerShard,
            aggregation_max_count: usize::MAX,
            aggregation_max_size: 51_200,
            aggregate_partition_key: PartitionKey::new("a").expect("a valid key"),
            collection_max_count: 500,
            collection_max_size: 5 * 1024 * 1024,
            max_record_size: 1024 * 1024,
            max_in_flight_requests: 24,
            request_timeout: Duration::from_secs(6),
            record_order: RecordOrder::PerKey,
            fail_if_throttled: false,
            rate_limit_percent: 150,
            max_outstanding_bytes: 64 * 1024 * 1024,
            max_outstanding_records: 100_000,
            compression: None,
            shard_map_refresh_interval: Duration::from_secs(60),
            retry_backoff: (Duration::from_millis(100), Duration::from_secs(5)),
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// A setting is out of its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} is {value}: {rule}")]
pub struct ConfigError {
    /// The setting's name.
    pub setting: &'static str,
    /// Its value, as text.
    pub value: String,
    /// The range it must be in.
    pub rule: &'static str,
}

impl ProducerConfig {
    /// Checks every setting against its range (KPL `KinesisProducerConfiguration` ranges, and
    /// the PutRecords limits of the Kinesis API reference).
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn check(
            ok: bool,
            setting: &'static str,
            value: impl ToString,
            rule: &'static str,
        ) -> Result<(), ConfigError> {
            if ok { Ok(()) } else { Err(ConfigError { setting, value: value.to_string(), rule }) }
        }
        const MIB: usize = 1024 * 1024;
        check(
            (64..=10 * MIB).contains(&self.max_record_size),
            "max_record_size",
            self.max_record_size,
            "must be 64 bytes to 10 MiB (streams accept at most 10 MiB records)",
        )?;
        check(
            (64..=10 * MIB).contains(&self.aggregation_max_size),
            "aggregation_max_size",
            self.aggregation_max_size,
            "must be 64 bytes to 10 MiB",
        )?;
        check(
            self.aggregation_max_count >= 1,
            "aggregation_max_count",
            self.aggregation_max_count,
            "must be at least 1",
        )?;
        check(
            (1..=500).contains(&self.collection_max_count),
            "collection_max_count",
            self.collection_max_count,
            "must be 1 to 500 (PutRecords takes at most 500 records)",
        )?;
        check(
            (52_224..=5 * MIB).contains(&self.collection_max_size),
            "collection_max_size",
            self.collection_max_size,
            "must be 51 KiB to 5 MiB (PutRecords takes at most 5 MiB)",
        )?;
        check(
            self.record_ttl >= Duration::from_millis(100),
            "record_ttl",
            format!("{:?}", self.record_ttl),
            "must be at least 100 ms",
        )?;
        check(
            self.request_timeout >= Duration::from_millis(100),
            "request_timeout",
            format!("{:?}", self.request_timeout),
            "must be at least 100 ms",
        )?;
        check(
            self.max_in_flight_requests >= 1,
            "max_in_flight_requests",
            self.max_in_flight_requests,
            "must be at least 1",
        )?;
        check(
            self.rate_limit_percent >= 1,
            "rate_limit_percent",
            self.rate_limit_percent,
            "must be at least 1",
        )?;
        check(
            self.max_outstanding_records >= 1,
            "max_outstanding_records",
            self.max_outstanding_records,
            "must be at least 1",
        )?;
        check(
            self.max_outstanding_bytes >= self.max_record_size,
            "max_outstanding_bytes",
            self.max_outstanding_bytes,
            "must be at least max_record_size, or the largest record could never be accepted",
        )?;
        check(
            self.retry_backoff.0 > Duration::ZERO,
            "retry_backoff",
            format!("{:?}", self.retry_backoff),
            "the first ceiling must be above zero",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_follow_the_kpl() {
        let c = ProducerConfig::default();
        c.validate().unwrap();
        assert_eq!(c.record_max_buffered_time, Duration::from_millis(100));
        assert_eq!(c.aggregation_max_size, 51_200);
        assert_eq!(c.rate_limit_percent, 150);
    }

    #[test]
    fn out_of_range_settings_name_themselves_and_their_range() {
        let c = ProducerConfig { collection_max_count: 501, ..ProducerConfig::default() };
        let err = c.validate().unwrap_err();
        assert_eq!(err.setting, "collection_max_count");
        assert!(err.to_string().contains("at most 500"), "{err}");
        let c = ProducerConfig { max_record_size: 11 * 1024 * 1024, ..ProducerConfig::default() };
        assert_eq!(c.validate().unwrap_err().setting, "max_record_size");
    }
}
