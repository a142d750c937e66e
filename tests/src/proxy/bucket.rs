//! Per-shard write budgets: two token buckets (records and bytes) per shard.
//!
//! Pure policy: every call takes `now`. Invariants: a bucket never holds more than its
//! capacity; a record is admitted only when both buckets allow it, and then takes from both;
//! a full bucket admits any single record (its balance may go below zero, and refills from
//! there), so a record larger than the capacity is slow but never impossible.

use std::time::Instant;

use super::config::ShardWriteLimit;

/// One token bucket with a continuous refill.
#[derive(Debug, Clone)]
struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    fn full(per_second: f64, burst_seconds: f64, now: Instant) -> Self {
        // At least one unit, so a tiny burst still lets something through.
        let capacity = (per_second * burst_seconds).max(1.0);
        Self { capacity, per_second, tokens: capacity, updated: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.updated = self.updated.max(now);
    }

    fn allows(&self, amount: f64) -> bool {
        self.tokens >= amount || self.tokens >= self.capacity
    }
}

/// The write budget of one shard.
#[derive(Debug, Clone)]
pub(crate) struct ShardBudget {
    records: TokenBucket,
    bytes: TokenBucket,
}

impl ShardBudget {
    /// A budget that starts full, as a shard that has not been written to recently.
    pub(crate) fn new(limit: &ShardWriteLimit, now: Instant) -> Self {
        let burst = limit.burst.as_secs_f64();
        Self {
            records: TokenBucket::full(f64::from(limit.records_per_second), burst, now),
            bytes: TokenBucket::full(limit.bytes_per_second as f64, burst, now),
        }
    }

    /// Admits one record of `bytes` bytes if the shard has room at `now`, taking its tokens.
    pub(crate) fn try_admit(&mut self, bytes: u64, now: Instant) -> bool {
        self.records.refill(now);
        self.bytes.refill(now);
        let bytes = bytes as f64;
        if self.records.allows(1.0) && self.bytes.allows(bytes) {
            self.records.tokens -= 1.0;
            self.bytes.tokens -= bytes;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limit(records: u32, bytes: u64, burst_ms: u64) -> ShardWriteLimit {
        ShardWriteLimit {
            records_per_second: records,
            bytes_per_second: bytes,
            burst: Duration::from_millis(burst_ms),
        }
    }

    fn admitted(budget: &mut ShardBudget, n: usize, bytes: u64, now: Instant) -> usize {
        (0..n).filter(|_| budget.try_admit(bytes, now)).count()
    }

    #[test]
    fn a_full_budget_admits_one_second_of_records_at_one_instant() {
        let now = Instant::now();
        let mut budget = ShardBudget::new(&ShardWriteLimit::aws(), now);
        assert_eq!(admitted(&mut budget, 1500, 10, now), 1000);
    }

    #[test]
    fn records_refill_at_the_configured_rate() {
        let now = Instant::now();
        let mut budget = ShardBudget::new(&ShardWriteLimit::aws(), now);
        assert_eq!(admitted(&mut budget, 1000, 1, now), 1000);
        assert!(!budget.try_admit(1, now));
        let later = now + Duration::from_millis(100);
        assert_eq!(admitted(&mut budget, 1000, 1, later), 100);
    }

    #[test]
    fn bytes_limit_applies_independently_of_the_record_count() {
        let now = Instant::now();
        let mut budget = ShardBudget::new(&ShardWriteLimit::aws(), now);
        // 1 MiB/s: four 256 KiB records fit, the fifth does not.
        assert_eq!(admitted(&mut budget, 10, 256 * 1024, now), 4);
    }

    #[test]
    fn refill_never_exceeds_the_burst() {
        let now = Instant::now();
        let mut budget = ShardBudget::new(&limit(1000, 1 << 20, 500), now);
        let much_later = now + Duration::from_secs(60);
        assert_eq!(admitted(&mut budget, 2000, 1, much_later), 500);
    }

    #[test]
    fn a_full_bucket_admits_a_record_larger_than_its_capacity_once() {
        let now = Instant::now();
        let mut budget = ShardBudget::new(&limit(1000, 1000, 100), now);
        assert!(budget.try_admit(5000, now), "a full bucket admits one large record");
        assert!(!budget.try_admit(1, now), "and then owes the difference");
        // 100 bytes of capacity, 4 900 bytes of debt: back to full after 5 s.
        assert!(!budget.try_admit(1, now + Duration::from_millis(4800)));
        assert!(budget.try_admit(1, now + Duration::from_millis(5000)));
    }

    #[test]
    fn a_rejected_record_takes_no_tokens() {
        let now = Instant::now();
        let mut budget = ShardBudget::new(&ShardWriteLimit::aws(), now);
        assert!(budget.try_admit(1 << 20, now));
        assert!(!budget.try_admit(10, now));
        // The record bucket was not charged for the rejected one.
        let later = now + Duration::from_secs(1);
        assert_eq!(admitted(&mut budget, 1000, 1, later), 1000);
    }
}
