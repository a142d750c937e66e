//! What the proxy counts: requests by operation, entries forwarded and throttled, injected
//! faults, and per-shard accepted records and bytes per second.
//!
//! [`Counters`] is the mutable state behind one lock; [`ProxyStats`] is the snapshot the
//! handle returns. Invariant: the per-second history of a shard keeps at most
//! [`SECONDS_KEPT`] seconds, so memory stays bounded however long a benchmark runs.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use serde::Serialize;

/// How many seconds of per-shard history are kept.
pub const SECONDS_KEPT: usize = 600;

/// A snapshot of the proxy's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProxyStats {
    /// Requests by operation: the `X-Amz-Target` operation (`PutRecords`, `ListShards`,
    /// `PutItem`, ...), or `"-"` for requests without that header.
    pub requests: BTreeMap<String, u64>,
    /// PutRecords and PutRecord entries sent upstream.
    pub entries_forwarded: u64,
    /// Entries failed with `ProvisionedThroughputExceededException` because their shard was
    /// over its limit (a throttled PutRecord counts one).
    pub entries_throttled: u64,
    /// Entries failed with `ProvisionedThroughputExceededException` by
    /// [`Faults::throttle_entries`](super::Faults::throttle_entries).
    pub entries_throttled_injected: u64,
    /// Requests refused whole by the request caps (`ValidationException`,
    /// `InvalidArgumentException`).
    pub requests_rejected: u64,
    /// Server errors injected, before or after forwarding.
    pub server_errors_injected: u64,
    /// Connections reset on purpose, before or after forwarding.
    pub resets_injected: u64,
    /// Requests the upstream could not be reached for (answered 502 `InternalFailure`).
    pub upstream_failures: u64,
    /// Data plus partition-key bytes of the entries sent upstream.
    pub record_bytes_forwarded: u64,
    /// Per shard, what the limits admitted; ordered by stream, then shard.
    pub shards: Vec<ShardUsage>,
}

impl ProxyStats {
    /// Requests seen for `operation`.
    pub fn requests_for(&self, operation: &str) -> u64 {
        self.requests.get(operation).copied().unwrap_or(0)
    }

    /// The usage of one shard, if it has taken writes through the proxy.
    pub fn shard(&self, stream: &str, shard: &str) -> Option<&ShardUsage> {
        self.shards.iter().find(|s| s.stream == stream && s.shard == shard)
    }
}

/// What one shard took through the proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShardUsage {
    /// The stream's name.
    pub stream: String,
    /// The shard's id.
    pub shard: String,
    /// Records admitted by the limits and sent upstream.
    pub accepted_records: u64,
    /// Their data plus partition-key bytes.
    pub accepted_bytes: u64,
    /// Records throttled by the shard's limit.
    pub throttled_records: u64,
    /// Admitted records and bytes per whole second since the proxy started (or since the
    /// stats were reset), oldest first, seconds without writes left out; at most
    /// [`SECONDS_KEPT`] entries.
    pub per_second: Vec<SecondUsage>,
}

impl ShardUsage {
    /// The busiest second's records and bytes.
    pub fn peak(&self) -> Option<SecondUsage> {
        self.per_second.iter().copied().max_by_key(|s| (s.records, s.bytes))
    }
}

/// Records and bytes a shard admitted during one second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SecondUsage {
    /// Whole seconds since the proxy started (or since the stats were reset).
    pub second: u64,
    /// Records admitted during that second.
    pub records: u64,
    /// Bytes admitted during that second.
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct ShardCounters {
    accepted_records: u64,
    accepted_bytes: u64,
    throttled_records: u64,
    per_second: VecDeque<SecondUsage>,
}

/// The live counters.
#[derive(Debug)]
pub(crate) struct Counters {
    epoch: Instant,
    stats: ProxyStats,
    shards: BTreeMap<(String, String), ShardCounters>,
}

impl Counters {
    /// Zero counters whose seconds count from `epoch`.
    pub(crate) fn new(epoch: Instant) -> Self {
        Self { epoch, stats: ProxyStats::default(), shards: BTreeMap::new() }
    }

    pub(crate) fn request(&mut self, operation: &str) {
        *self.stats.requests.entry(operation.to_owned()).or_default() += 1;
    }

    pub(crate) fn forwarded(&mut self, entries: u64, bytes: u64) {
        self.stats.entries_forwarded += entries;
        self.stats.record_bytes_forwarded += bytes;
    }

    pub(crate) fn throttled_injected(&mut self, entries: u64) {
        self.stats.entries_throttled_injected += entries;
    }

    pub(crate) fn rejected(&mut self) {
        self.stats.requests_rejected += 1;
    }

    pub(crate) fn server_error_injected(&mut self) {
        self.stats.server_errors_injected += 1;
    }

    pub(crate) fn reset_injected(&mut self) {
        self.stats.resets_injected += 1;
    }

    pub(crate) fn upstream_failure(&mut self) {
        self.stats.upstream_failures += 1;
    }

    /// A record admitted for a shard at `now`.
    pub(crate) fn shard_accepted(&mut self, stream: &str, shard: &str, bytes: u64, now: Instant) {
        let second = now.saturating_duration_since(self.epoch).as_secs();
        let counters = self.shard_mut(stream, shard);
        counters.accepted_records += 1;
        counters.accepted_bytes += bytes;
        match counters.per_second.back_mut() {
            Some(last) if last.second == second => {
                last.records += 1;
                last.bytes += bytes;
            }
            _ => {
                if counters.per_second.len() == SECONDS_KEPT {
                    counters.per_second.pop_front();
                }
                counters.per_second.push_back(SecondUsage { second, records: 1, bytes });
            }
        }
    }

    /// A record the shard's limit throttled.
    pub(crate) fn shard_throttled(&mut self, stream: &str, shard: &str) {
        self.stats.entries_throttled += 1;
        self.shard_mut(stream, shard).throttled_records += 1;
    }

    fn shard_mut(&mut self, stream: &str, shard: &str) -> &mut ShardCounters {
        self.shards.entry((stream.to_owned(), shard.to_owned())).or_default()
    }

    pub(crate) fn snapshot(&self) -> ProxyStats {
        let mut stats = self.stats.clone();
        stats.shards = self
            .shards
            .iter()
            .map(|((stream, shard), c)| ShardUsage {
                stream: stream.clone(),
                shard: shard.clone(),
                accepted_records: c.accepted_records,
                accepted_bytes: c.accepted_bytes,
                throttled_records: c.throttled_records,
                per_second: c.per_second.iter().copied().collect(),
            })
            .collect();
        stats
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn per_second_usage_groups_by_second_and_stays_bounded() {
        let epoch = Instant::now();
        let at = |second: u64, millis: u64| {
            epoch + Duration::from_secs(second) + Duration::from_millis(millis)
        };
        let mut counters = Counters::new(epoch);
        counters.shard_accepted("s", "a", 10, at(0, 0));
        counters.shard_accepted("s", "a", 20, at(0, 999));
        counters.shard_accepted("s", "a", 5, at(3, 1));
        counters.shard_throttled("s", "a");
        let stats = counters.snapshot();
        let usage = stats.shard("s", "a").unwrap();
        assert_eq!(
            (usage.accepted_records, usage.accepted_bytes, usage.throttled_records),
            (3, 35, 1)
        );
        assert_eq!(
            usage.per_second,
            [
                SecondUsage { second: 0, records: 2, bytes: 30 },
                SecondUsage { second: 3, records: 1, bytes: 5 }
            ]
        );
        assert_eq!(usage.peak().unwrap().second, 0);
        assert_eq!(stats.entries_throttled, 1);

        for second in 0..(SECONDS_KEPT as u64 + 50) {
            counters.shard_accepted("s", "b", 1, at(second + 10, 0));
        }
        let stats = counters.snapshot();
        assert_eq!(stats.shard("s", "b").unwrap().per_second.len(), SECONDS_KEPT);
    }
}
