//! The consumer's configuration: where to start, lease timing, retrieval and shutdown.
//!
//! Defaults follow the KCL 2.x where it has one (lease duration 10 s, renewal every third of
//! it, shard sync every 60 s, up to 10 000 records per GetRecords), and say so where they
//! differ. Durations are [`Duration`]s; nothing is in milliseconds.

use std::time::{Duration, SystemTime};

use kinesis_common::ConsumerName;

use crate::retrieval::polling::PollingConfig;
use crate::shard_sync;
use crate::taker::TakerConfig;

/// Where a consumer starts reading a stream that has no leases yet (after that, every shard
/// resumes from its lease's checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialPosition {
    /// At the oldest record the stream still keeps, through every ancestor shard.
    TrimHorizon,
    /// At records written after the consumer starts; only open shards are read. The KCL's
    /// default.
    Latest,
    /// At the first record that arrived at or after this time, through every ancestor shard.
    AtTimestamp(SystemTime),
}

impl InitialPosition {
    /// The lease-planning view of the position (the time is kept in the configuration).
    pub(crate) fn for_sync(self) -> shard_sync::InitialPosition {
        match self {
            Self::TrimHorizon => shard_sync::InitialPosition::TrimHorizon,
            Self::Latest => shard_sync::InitialPosition::Latest,
            Self::AtTimestamp(_) => shard_sync::InitialPosition::AtTimestamp,
        }
    }

    /// The timestamp of [`AtTimestamp`](Self::AtTimestamp).
    pub(crate) fn timestamp(self) -> Option<SystemTime> {
        match self {
            Self::AtTimestamp(time) => Some(time),
            _ => None,
        }
    }
}

/// Polling retrieval (GetRecords) settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PollingSettings {
    /// Most records per GetRecords call (Kinesis allows at most 10 000, the default).
    pub max_records: u32,
    /// How long to wait after a GetRecords call that returned nothing (KCL: 1.5 s; 1 s here,
    /// still well within the 5 calls per second per shard limit).
    pub idle_time_between_reads: Duration,
    /// How many batches retrieval may run ahead of processing (KCL: up to 3 by default).
    pub prefetch: usize,
}

impl Default for PollingSettings {
    fn default() -> Self {
        let polling = PollingConfig::default();
        Self {
            max_records: polling.max_records,
            idle_time_between_reads: polling.idle_time_between_reads,
            prefetch: polling.prefetch,
        }
    }
}

impl PollingSettings {
    /// The retriever's configuration.
    pub(crate) fn to_config(&self, deliver_empty_batches: bool) -> PollingConfig {
        PollingConfig {
            max_records: self.max_records.clamp(1, 10_000),
            idle_time_between_reads: self.idle_time_between_reads,
            prefetch: self.prefetch.max(1),
            deliver_empty_batches,
            ..PollingConfig::default()
        }
    }
}

/// How a consumer reads its shards.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retrieval {
    /// GetRecords polling, sharing each shard's 2 MiB/s and 5 calls/s with every other
    /// polling reader of the stream (the default).
    Polling(PollingSettings),
    /// Enhanced fan-out (SubscribeToShard): records pushed over HTTP/2 with a dedicated
    /// 2 MiB/s per shard for this consumer. The stream consumer `consumer_name` is
    /// registered at start if missing (the KCL names it after the application).
    FanOut {
        /// The registered stream consumer's name, shared by the application's workers.
        consumer_name: ConsumerName,
    },
}

impl Default for Retrieval {
    fn default() -> Self {
        Self::Polling(PollingSettings::default())
    }
}

/// How a consumer takes, keeps and gives up leases, reads shards and shuts down.
///
/// Build one with `ConsumerConfig::default()` and set the fields, or through the
/// [`ConsumerBuilder`](crate::ConsumerBuilder) methods.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// Where to start a stream that has no leases yet. Default [`InitialPosition::Latest`],
    /// as the KCL.
    pub initial_position: InitialPosition,
    /// How long a lease's counter may stay unchanged before other workers take it (KCL
    /// `failoverTimeMillis`, 10 s). A worker also stops processing a lease it could not renew
    /// for this long.
    pub lease_duration: Duration,
    /// How often each held lease is renewed (KCL: a third of the lease duration).
    pub renew_interval: Duration,
    /// How often the taker looks for leases to take (KCL: twice the lease duration plus a
    /// little, about 20 s).
    pub taker_interval: Duration,
    /// The most leases this worker holds (KCL `maxLeasesForWorker`, unlimited).
    pub max_leases_per_worker: usize,
    /// The most leases stolen in one taker cycle (KCL `maxLeasesToStealAtOneTime`: 1; 2
    /// here, so three workers joining one that holds 8 leases balance in two cycles; a steal
    /// never goes past the victim's excess over the target, so this cannot cause churn).
    pub max_leases_to_steal_at_one_time: usize,
    /// How often the shards are listed to create leases for new shards (KCL 60 s). A shard
    /// that ends creates its children's leases at once; this catches the rest.
    pub shard_sync_interval: Duration,
    /// How often finished and garbage leases are deleted (KCL `LeaseCleanupManager`: 1 min).
    pub cleanup_interval: Duration,
    /// How often a child shard checks whether its parents have finished (KCL: 10 s; 2 s
    /// here, a strongly consistent read of one item, so children start sooner).
    pub parent_poll_interval: Duration,
    /// How shards are read: polling (default) or enhanced fan-out.
    pub retrieval: Retrieval,
    /// Whether the processor is called with empty batches when the shard is idle (KCL
    /// `callProcessRecordsEvenForEmptyRecordList`, off by default), e.g. to checkpoint by
    /// time.
    pub deliver_empty_batches: bool,
    /// Whether [`Consumer::shutdown`](crate::Consumer::shutdown) deregisters the fan-out
    /// consumer (off by default: other workers of the application keep using it, and
    /// registering again takes seconds).
    pub deregister_on_shutdown: bool,
    /// How long [`Consumer::shutdown`](crate::Consumer::shutdown) waits for processors to
    /// finish `shutdown_requested` and release their leases; shards still running then are
    /// stopped, reported as timed out, and their leases expire for other workers.
    pub shutdown_timeout: Duration,
    /// Attempts for a checkpoint write that fails with a DynamoDB error (not a conflict,
    /// which is a lost lease) before the error is returned to the processor.
    pub checkpoint_attempts: u32,
    /// How long [`ConsumerBuilder::start`](crate::ConsumerBuilder::start) keeps retrying the
    /// lease table's creation or description and the first shard sync when they fail with
    /// throttling or a transient error (default 60 s; zero: fail on the first such failure,
    /// after the SDK's own attempts). A missing stream, denied access or a lease table with
    /// the wrong schema fail at once.
    pub start_timeout: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        let lease_duration = Duration::from_secs(10);
        Self {
            initial_position: InitialPosition::Latest,
            lease_duration,
            renew_interval: lease_duration / 3,
            taker_interval: lease_duration * 2,
            max_leases_per_worker: usize::MAX,
            max_leases_to_steal_at_one_time: 2,
            shard_sync_interval: Duration::from_secs(60),
            cleanup_interval: Duration::from_secs(60),
            parent_poll_interval: Duration::from_secs(2),
            retrieval: Retrieval::default(),
            deliver_empty_batches: false,
            deregister_on_shutdown: false,
            shutdown_timeout: Duration::from_secs(30),
            checkpoint_attempts: 3,
            start_timeout: Duration::from_secs(60),
        }
    }
}

impl ConsumerConfig {
    /// Checks that the durations make sense together.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let positive = [
            ("lease_duration", self.lease_duration),
            ("renew_interval", self.renew_interval),
            ("taker_interval", self.taker_interval),
            ("shard_sync_interval", self.shard_sync_interval),
            ("cleanup_interval", self.cleanup_interval),
            ("parent_poll_interval", self.parent_poll_interval),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return Err(format!("{name} must be greater than zero"));
        }
        if self.renew_interval >= self.lease_duration {
            return Err(format!(
                "renew_interval ({:?}) must be shorter than lease_duration ({:?}), or leases \
                 expire between renewals",
                self.renew_interval, self.lease_duration
            ));
        }
        if self.max_leases_per_worker == 0 {
            return Err("max_leases_per_worker must be at least 1".into());
        }
        Ok(())
    }

    /// The taker's view of the configuration.
    pub(crate) fn taker(&self) -> TakerConfig {
        TakerConfig {
            lease_duration: self.lease_duration,
            max_leases_per_worker: self.max_leases_per_worker,
            max_steal_per_cycle: self.max_leases_to_steal_at_one_time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_follow_the_kcl() {
        let config = ConsumerConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.lease_duration, Duration::from_secs(10));
        assert!(config.renew_interval * 3 <= config.lease_duration);
        assert_eq!(config.retrieval, Retrieval::Polling(PollingSettings::default()));
        assert_eq!(PollingSettings::default().max_records, 10_000);
    }

    #[test]
    fn renewing_no_faster_than_the_lease_expires_is_refused() {
        let config =
            ConsumerConfig { renew_interval: Duration::from_secs(10), ..Default::default() };
        let error = config.validate().unwrap_err();
        assert!(error.contains("renew_interval"), "{error}");
    }

    #[test]
    fn zero_durations_are_refused_by_name() {
        let config = ConsumerConfig { taker_interval: Duration::ZERO, ..Default::default() };
        assert_eq!(config.validate().unwrap_err(), "taker_interval must be greater than zero");
    }
}
