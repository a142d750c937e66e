//! What a [`LimitsProxy`](super::LimitsProxy) enforces and injects: [`ProxyConfig`],
//! [`Limits`] (Kinesis service limits, AWS values by default) and [`Faults`] (none by default).
//!
//! Plain data: the proxy copies the current settings at the start of each request, so a
//! change through the handle applies to the requests that start after it.

use std::time::Duration;

use super::ProxyError;

/// One mebibyte, the unit of every Kinesis size limit.
const MIB: u64 = 1024 * 1024;

/// Everything a proxy starts with.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// The Kinesis limits to enforce on `Kinesis_20131202.*` requests.
    pub limits: Limits,
    /// The faults to inject (any protocol).
    pub faults: Faults,
    /// Seed of the random generator that draws faults: the same seed and the same sequence of
    /// requests give the same faults.
    pub seed: u64,
    /// How long a stream's shard map (from ListShards) is trusted before the next PutRecords
    /// for that stream fetches it again. SplitShard, MergeShards, UpdateShardCount,
    /// CreateStream and DeleteStream passing through the proxy also make every map stale.
    pub shard_map_max_age: Duration,
}

impl Default for ProxyConfig {
    /// AWS limits, no faults, seed 0, shard maps trusted for 2 s.
    fn default() -> Self {
        Self {
            limits: Limits::aws(),
            faults: Faults::none(),
            seed: 0,
            shard_map_max_age: Duration::from_secs(2),
        }
    }
}

/// The Kinesis limits the proxy enforces. `None` turns a family of limits off.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Per-shard write throughput; over it, entries fail with
    /// `ProvisionedThroughputExceededException`.
    pub shard_write: Option<ShardWriteLimit>,
    /// Per-request caps of PutRecords and PutRecord; over them, the whole request fails.
    pub request: Option<RequestCaps>,
}

impl Limits {
    /// The limits of a provisioned stream on AWS.
    pub fn aws() -> Self {
        Self { shard_write: Some(ShardWriteLimit::aws()), request: Some(RequestCaps::aws()) }
    }

    /// No limits: the proxy only injects faults.
    pub fn none() -> Self {
        Self { shard_write: None, request: None }
    }
}

impl Default for Limits {
    /// [`Limits::aws`].
    fn default() -> Self {
        Self::aws()
    }
}

/// Write throughput of one shard, enforced with two token buckets (records and bytes) that
/// start full and refill continuously.
///
/// AWS: "Each shard can support up to 1,000 records per second for writes, up to a maximum
/// total data write rate of 1 MiB per second" (Kinesis Data Streams developer guide, "Quotas
/// and limits"; also the Kinesis API reference, PutRecords). A record's bytes are its data
/// (decoded from base64) plus its partition key's UTF-8 bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardWriteLimit {
    /// Records per second per shard (AWS: 1 000).
    pub records_per_second: u32,
    /// Bytes per second per shard (AWS: 1 MiB).
    pub bytes_per_second: u64,
    /// How much unused capacity a shard may save up, as time at the full rate: each bucket
    /// holds at most `rate × burst`. AWS measures per second and tolerates short bursts; 1 s
    /// is the default. A record is always admitted into a full bucket, even one smaller than
    /// the record, so a short burst cannot make a large record impossible to write.
    pub burst: Duration,
}

impl ShardWriteLimit {
    /// 1 000 records/s and 1 MiB/s per shard, with 1 s of burst.
    pub fn aws() -> Self {
        Self { records_per_second: 1000, bytes_per_second: MIB, burst: Duration::from_secs(1) }
    }
}

impl Default for ShardWriteLimit {
    /// [`ShardWriteLimit::aws`].
    fn default() -> Self {
        Self::aws()
    }
}

/// Caps on one PutRecords or PutRecord request.
///
/// AWS (Kinesis API reference, PutRecords): "Each PutRecords request can support up to 500
/// records. Each record in the request can be as large as 1 MiB, up to a limit of 5 MiB for
/// the entire request, including partition keys." The record cap applies to the data blob
/// ("the maximum size of the data payload of a record before base-64 encoding is up to
/// 1 MiB", developer guide, "Quotas and limits"); streams configured for larger records raise
/// it, hence the field.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestCaps {
    /// Entries per PutRecords (AWS: 500). Over it: `ValidationException`.
    pub max_records: usize,
    /// Data plus partition keys of all entries of a PutRecords (AWS: 5 MiB). Over it:
    /// `InvalidArgumentException` "Records size exceeds 5 MB limit".
    pub max_request_bytes: u64,
    /// Data bytes of one record (AWS: 1 MiB). Over it: `ValidationException`.
    pub max_record_bytes: u64,
}

impl RequestCaps {
    /// 500 records, 5 MiB per request, 1 MiB per record.
    pub fn aws() -> Self {
        Self { max_records: 500, max_request_bytes: 5 * MIB, max_record_bytes: MIB }
    }
}

impl Default for RequestCaps {
    /// [`RequestCaps::aws`].
    fn default() -> Self {
        Self::aws()
    }
}

/// A probability in `0.0..=1.0`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Fraction(f64);

impl Fraction {
    /// Never.
    pub const NEVER: Self = Self(0.0);
    /// Always.
    pub const ALWAYS: Self = Self(1.0);

    /// A fraction; fails unless `value` is in `0.0..=1.0`.
    pub fn new(value: f64) -> Result<Self, ProxyError> {
        if (0.0..=1.0).contains(&value) {
            Ok(Self(value))
        } else {
            Err(ProxyError::Fraction { value })
        }
    }

    /// The probability.
    pub fn get(self) -> f64 {
        self.0
    }

    /// Whether this is [`Fraction::NEVER`].
    pub fn is_never(self) -> bool {
        self.0 == 0.0
    }
}

/// The server error an injected failure answers with.
///
/// Both are AWS "common errors" (Kinesis API reference, "Common Errors"): `InternalFailure`
/// with HTTP 500, `ServiceUnavailable` with HTTP 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerError {
    /// HTTP 500 `InternalFailure`.
    #[default]
    InternalFailure,
    /// HTTP 503 `ServiceUnavailable`.
    ServiceUnavailable,
}

/// Which requests faults apply to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FaultScope {
    /// Every request, of any protocol.
    #[default]
    Everything,
    /// Only requests whose `X-Amz-Target` operation (the part after the dot, such as
    /// `PutRecords` or `PutItem`) is one of these.
    Operations(Vec<String>),
}

impl FaultScope {
    /// Only these operations.
    pub fn operations<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::Operations(names.into_iter().map(Into::into).collect())
    }

    /// Whether a request for `operation` (`None` without `X-Amz-Target`) is in scope.
    pub fn includes(&self, operation: Option<&str>) -> bool {
        match self {
            Self::Everything => true,
            Self::Operations(names) => operation.is_some_and(|op| names.iter().any(|n| n == op)),
        }
    }
}

/// Faults injected into requests in [`scope`](Faults::scope), drawn from the proxy's seeded
/// random generator.
///
/// Per request, in this order: a reset before forwarding, else the added latency, then a
/// server error instead of forwarding, else the request is forwarded; then a reset after the
/// upstream answered, else a server error in place of a successful upstream answer. The
/// per-entry throttle applies to the entries of PutRecords requests that are forwarded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Faults {
    /// Which requests the faults apply to.
    pub scope: FaultScope,
    /// Share of requests answered with [`server_error`](Faults::server_error) without being
    /// forwarded: nothing was written.
    pub error_before_forward: Fraction,
    /// Share of requests forwarded and, when the upstream succeeded, answered with
    /// [`server_error`](Faults::server_error) anyway: the write happened but the client sees
    /// a failure (and will likely write again). Requests the proxy answers itself are left
    /// alone.
    pub error_after_forward: Fraction,
    /// The error both kinds of injected server error answer with.
    pub server_error: ServerError,
    /// Share of requests whose TCP connection is reset (RST) without an answer, before
    /// forwarding.
    pub reset_before_forward: Fraction,
    /// Share of requests whose connection is reset after the upstream answered: the write
    /// happened, the client sees a dropped connection. (Answers the proxy makes itself, such
    /// as an all-throttled PutRecords or a refused request, are never reset afterwards.)
    pub reset_after_forward: Fraction,
    /// Fixed delay added before forwarding.
    pub latency: Duration,
    /// Uniformly random delay in `0..=latency_jitter` added to [`latency`](Faults::latency).
    pub latency_jitter: Duration,
    /// Share of PutRecords entries failed with `ProvisionedThroughputExceededException` even
    /// under the shard limits (chaos for retry paths). Such entries are not forwarded.
    pub throttle_entries: Fraction,
}

impl Faults {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether any fault is configured.
    pub fn is_none(&self) -> bool {
        self.error_before_forward.is_never()
            && self.error_after_forward.is_never()
            && self.reset_before_forward.is_never()
            && self.reset_after_forward.is_never()
            && self.latency.is_zero()
            && self.latency_jitter.is_zero()
            && self.throttle_entries.is_never()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_outside_zero_to_one_are_rejected() {
        assert!(Fraction::new(0.0).is_ok());
        assert!(Fraction::new(1.0).is_ok());
        assert!(Fraction::new(-0.1).is_err());
        assert!(Fraction::new(1.5).is_err());
        assert!(Fraction::new(f64::NAN).is_err());
    }

    #[test]
    fn scope_of_operations_excludes_requests_without_a_target() {
        let scope = FaultScope::operations(["PutRecords"]);
        assert!(scope.includes(Some("PutRecords")));
        assert!(!scope.includes(Some("ListShards")));
        assert!(!scope.includes(None));
        assert!(FaultScope::Everything.includes(None));
    }

    #[test]
    fn defaults_are_aws_limits_and_no_faults() {
        let config = ProxyConfig::default();
        assert_eq!(config.limits, Limits::aws());
        assert!(config.faults.is_none());
        let caps = RequestCaps::aws();
        assert_eq!((caps.max_records, caps.max_request_bytes), (500, 5 * 1024 * 1024));
    }
}
