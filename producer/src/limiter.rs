//! The per-shard rate limiter: token buckets for records and bytes that adapt to throttling.
//!
//! A shard accepts 1 000 records and 1 MiB per second of writes (Kinesis developer guide,
//! "Quotas and limits"). The KPL limits each predicted shard to a fixed multiple of that
//! (`RateLimit`, 150 % by default) and does not react to throttling at all, which is how a
//! saturated KPL falls into retry storms. This limiter starts at the configured ceiling and
//! adapts like TCP congestion control (AIMD): every throttled entry multiplies the shard's rate
//! by [`DECREASE_FACTOR`] (at most once per [`DECREASE_COOLDOWN`], so one burst of rejections
//! counts as one signal), and every second without throttling adds back [`INCREASE_STEP`] of
//! the ceiling. A producer that is alone on a stream therefore runs just under the shard limit
//! with few throttled entries; one that shares the stream finds its fair share.
//!
//! Pure: the caller passes `now`. Invariant: over any window of length `T` a shard is granted
//! at most `rate * T + burst` records and bytes, for the highest rate in force in the window.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kinesis_common::ShardId;

/// The factor a shard's rate is multiplied by on a throttling signal.
pub(crate) const DECREASE_FACTOR: f64 = 0.7;
/// Throttling signals closer together than this count once.
pub(crate) const DECREASE_COOLDOWN: Duration = Duration::from_millis(200);
/// The share of the ceiling added back per second without throttling.
pub(crate) const INCREASE_STEP: f64 = 0.05;
/// The rate never falls below this share of the ceiling, so a shard always drains.
pub(crate) const FLOOR: f64 = 0.05;

/// Per-shard write rates: the ceiling the limiter starts at and returns to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ShardRate {
    /// Records per second.
    pub(crate) records_per_sec: f64,
    /// Bytes per second (data plus partition key, as Kinesis counts them).
    pub(crate) bytes_per_sec: f64,
}

impl ShardRate {
    /// The Kinesis per-shard write limit (1 000 records/s, 1 MiB/s) times `percent` / 100.
    pub(crate) fn kinesis_limit_percent(percent: u32) -> Self {
        let f = f64::from(percent) / 100.0;
        Self { records_per_sec: 1000.0 * f, bytes_per_sec: 1_048_576.0 * f }
    }
}

/// One token bucket: `capacity` tokens, refilled at `rate` per second.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    capacity: f64,
}

impl Bucket {
    fn full(capacity: f64) -> Self {
        Self { tokens: capacity, capacity }
    }

    fn refill(&mut self, rate: f64, elapsed: Duration) {
        self.tokens = (self.tokens + rate * elapsed.as_secs_f64()).min(self.capacity);
    }

    /// How long until `amount` tokens are there at `rate`; zero if they are there now.
    fn wait_for(&self, amount: f64, rate: f64) -> Duration {
        // A request larger than the bucket can never fit; let it through when the bucket is
        // full instead of blocking forever (a 10 MiB record on a 1 MiB/s shard).
        let amount = amount.min(self.capacity);
        if self.tokens >= amount {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((amount - self.tokens) / rate)
        }
    }
}

/// The state of one shard.
#[derive(Debug, Clone)]
struct ShardState {
    records: Bucket,
    bytes: Bucket,
    /// The share of the ceiling in force, in `FLOOR..=1.0`.
    share: f64,
    last_refill: Instant,
    last_decrease: Option<Instant>,
}

/// Token buckets per shard, adapting to throttling.
#[derive(Debug)]
pub(crate) struct Limiter {
    ceiling: ShardRate,
    /// How many seconds of the ceiling a bucket holds: the burst a quiet shard may send.
    burst: Duration,
    shards: HashMap<ShardId, ShardState>,
}

impl Limiter {
    /// A limiter whose shards start at `ceiling` and may burst `burst` worth of it.
    pub(crate) fn new(ceiling: ShardRate, burst: Duration) -> Self {
        Self { ceiling, burst, shards: HashMap::new() }
    }

    fn state(&mut self, shard: &ShardId, now: Instant) -> &mut ShardState {
        let ceiling = self.ceiling;
        let burst = self.burst.as_secs_f64();
        let state = self.shards.entry(shard.clone()).or_insert_with(|| ShardState {
            records: Bucket::full((ceiling.records_per_sec * burst).max(1.0)),
            bytes: Bucket::full((ceiling.bytes_per_sec * burst).max(1.0)),
            share: 1.0,
            last_refill: now,
            last_decrease: None,
        });
        let elapsed = now.saturating_duration_since(state.last_refill);
        if !elapsed.is_zero() {
            // Additive increase: back toward the ceiling while not throttled.
            state.share = (state.share + INCREASE_STEP * elapsed.as_secs_f64()).min(1.0);
            state.records.refill(ceiling.records_per_sec * state.share, elapsed);
            state.bytes.refill(ceiling.bytes_per_sec * state.share, elapsed);
            state.last_refill = now;
        }
        state
    }

    /// Takes `records` and `bytes` from the shard's buckets if both have enough; otherwise
    /// takes nothing and says how long to wait before trying again.
    pub(crate) fn try_acquire(
        &mut self,
        shard: &ShardId,
        records: u32,
        bytes: usize,
        now: Instant,
    ) -> Result<(), Duration> {
        let ceiling = self.ceiling;
        let state = self.state(shard, now);
        let (records, bytes) = (f64::from(records), bytes as f64);
        let wait = state
            .records
            .wait_for(records, ceiling.records_per_sec * state.share)
            .max(state.bytes.wait_for(bytes, ceiling.bytes_per_sec * state.share));
        if !wait.is_zero() {
            return Err(wait);
        }
        state.records.tokens -= records.min(state.records.capacity);
        state.bytes.tokens -= bytes.min(state.bytes.capacity);
        Ok(())
    }

    /// Records a throttling answer for the shard: multiplicative decrease, once per cooldown.
    pub(crate) fn on_throttled(&mut self, shard: &ShardId, now: Instant) {
        let state = self.state(shard, now);
        if state
            .last_decrease
            .is_some_and(|at| now.saturating_duration_since(at) < DECREASE_COOLDOWN)
        {
            return;
        }
        state.share = (state.share * DECREASE_FACTOR).max(FLOOR);
        state.last_decrease = Some(now);
        // Spend the burst too: a throttled shard has no spare capacity right now.
        state.records.tokens = state.records.tokens.min(0.0);
        state.bytes.tokens = state.bytes.tokens.min(0.0);
    }

    /// The share of the ceiling in force for the shard (1.0 for a shard never seen).
    #[cfg(test)]
    pub(crate) fn share(&self, shard: &ShardId) -> f64 {
        self.shards.get(shard).map_or(1.0, |s| s.share)
    }

    /// Forgets shards that are no longer open.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&ShardId) -> bool) {
        self.shards.retain(|id, _| keep(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shard(n: u32) -> ShardId {
        ShardId::new(format!("shardId-{n:012}")).unwrap()
    }

    fn limiter() -> Limiter {
        Limiter::new(ShardRate::kinesis_limit_percent(100), Duration::from_millis(100))
    }

    #[test]
    fn a_quiet_shard_grants_its_burst_then_asks_to_wait() {
        let mut l = limiter();
        let t0 = Instant::now();
        let s = shard(0);
        // Burst of 100 ms at 1000 records/s is 100 records.
        assert_eq!(l.try_acquire(&s, 100, 100, t0), Ok(()));
        let wait = l.try_acquire(&s, 10, 10, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.010).abs() < 1e-6, "{wait:?}");
        assert_eq!(l.try_acquire(&s, 10, 10, t0 + wait), Ok(()));
    }

    #[test]
    fn shards_are_independent() {
        let mut l = limiter();
        let t0 = Instant::now();
        assert_eq!(l.try_acquire(&shard(0), 100, 0, t0), Ok(()));
        assert_eq!(l.try_acquire(&shard(1), 100, 0, t0), Ok(()));
        assert!(l.try_acquire(&shard(0), 1, 0, t0).is_err());
    }

    #[test]
    fn bytes_limit_as_well_as_records() {
        let mut l = limiter();
        let t0 = Instant::now();
        let s = shard(0);
        // 100 ms of 1 MiB/s is 104857.6 bytes.
        assert_eq!(l.try_acquire(&s, 1, 100_000, t0), Ok(()));
        assert!(l.try_acquire(&s, 1, 10_000, t0).is_err());
    }

    #[test]
    fn an_oversized_request_passes_when_the_bucket_is_full() {
        let mut l = limiter();
        let t0 = Instant::now();
        let s = shard(0);
        assert_eq!(l.try_acquire(&s, 1, 5 * 1_048_576, t0), Ok(()));
        // And it emptied the bucket.
        assert!(l.try_acquire(&s, 1, 1000, t0).is_err());
    }

    #[test]
    fn throttling_shrinks_the_rate_once_per_cooldown_and_success_grows_it_back() {
        let mut l = limiter();
        let t0 = Instant::now();
        let s = shard(0);
        l.on_throttled(&s, t0);
        l.on_throttled(&s, t0 + Duration::from_millis(50));
        // The second signal fell inside the cooldown: one decrease, plus 50 ms of increase.
        assert!((l.share(&s) - DECREASE_FACTOR).abs() < 0.01, "{}", l.share(&s));
        l.on_throttled(&s, t0 + DECREASE_COOLDOWN);
        let after_two = DECREASE_FACTOR * DECREASE_FACTOR;
        assert!((l.share(&s) - after_two).abs() < 0.02, "{}", l.share(&s));
        // Twenty seconds without throttling restore the ceiling (5 % per second).
        let _ = l.try_acquire(&s, 0, 0, t0 + Duration::from_secs(25));
        assert!((l.share(&s) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn the_rate_never_falls_below_the_floor() {
        let mut l = limiter();
        let mut t = Instant::now();
        let s = shard(0);
        for _ in 0..100 {
            t += DECREASE_COOLDOWN;
            l.on_throttled(&s, t);
        }
        assert!(l.share(&s) >= FLOOR);
        // And the shard still drains.
        assert!(l.try_acquire(&s, 1, 1, t + Duration::from_secs(1)).is_ok());
    }

    proptest! {
        /// Whatever the pattern of requests and throttles, a shard is never granted more than
        /// the ceiling's rate over the elapsed time plus one burst.
        #[test]
        fn never_grants_more_than_rate_times_time_plus_burst(
            steps in proptest::collection::vec((0u64..50, 1u32..50, 1usize..20_000, any::<bool>()), 1..300)
        ) {
            let mut l = limiter();
            let t0 = Instant::now();
            let mut t = t0;
            let s = shard(0);
            let (mut records, mut bytes) = (0u64, 0u64);
            for (advance_ms, n, size, throttle) in steps {
                t += Duration::from_millis(advance_ms);
                if throttle {
                    l.on_throttled(&s, t);
                }
                if l.try_acquire(&s, n, size, t).is_ok() {
                    records += u64::from(n);
                    bytes += size as u64;
                }
            }
            let secs = t.duration_since(t0).as_secs_f64();
            prop_assert!(records as f64 <= 1000.0 * (secs + 0.1) + 1e-6);
            prop_assert!(bytes as f64 <= 1_048_576.0 * (secs + 0.1) + 1e-6);
        }
    }
}
