//! [`LatencyHistogram`]: latencies in log-linear buckets (64 per power of two, so any
//! percentile is within 1/64 ≈ 1.6% of the exact one), mergeable across workers, and
//! [`Percentiles`], the summary a report prints.
//!
//! Invariants: `count` is the sum of the buckets; a value's bucket index never decreases as
//! the value grows, so the value at a rank lies in the same bucket as the exact one.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Sub-buckets per power of two (a power of two itself).
const SUB: u64 = 64;
const SUB_BITS: u32 = SUB.trailing_zeros();

/// Latencies at microsecond resolution in log-linear buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    /// `[bucket index, count]` for every non-empty bucket, in index order when serialized.
    #[serde(with = "sparse")]
    buckets: Vec<u64>,
    count: u64,
    /// The largest value, in microseconds (exact).
    max_micros: u64,
    /// The sum, in microseconds, for the mean.
    sum_micros: u128,
}

/// The percentiles a report shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Percentiles {
    /// How many values.
    pub count: u64,
    /// Median.
    #[serde(with = "super::duration_secs")]
    pub p50: Duration,
    /// 90th percentile.
    #[serde(with = "super::duration_secs")]
    pub p90: Duration,
    /// 99th percentile.
    #[serde(with = "super::duration_secs")]
    pub p99: Duration,
    /// 99.9th percentile.
    #[serde(with = "super::duration_secs")]
    pub p999: Duration,
    /// The largest.
    #[serde(with = "super::duration_secs")]
    pub max: Duration,
    /// The mean.
    #[serde(with = "super::duration_secs")]
    pub mean: Duration,
}

/// The bucket of a value in microseconds: exact below `2 * SUB`, then `SUB` buckets per power
/// of two.
fn bucket_of(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let exponent = 63 - v.leading_zeros(); // >= SUB_BITS + 1
    let shift = exponent - SUB_BITS;
    (u64::from(shift) * SUB + (v >> shift)) as usize
}

/// The largest value of a bucket.
fn bucket_upper(index: usize) -> u64 {
    let index = index as u64;
    if index < 2 * SUB {
        return index;
    }
    let shift = index / SUB - 1;
    let mantissa = index % SUB + SUB;
    ((mantissa + 1) << shift).wrapping_sub(1)
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let index = bucket_of(micros);
        if self.buckets.len() <= index {
            self.buckets.resize(index + 1, 0);
        }
        self.buckets[index] += 1;
        self.count += 1;
        self.max_micros = self.max_micros.max(micros);
        self.sum_micros += u128::from(micros);
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds every latency of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.max_micros = self.max_micros.max(other.max_micros);
        self.sum_micros += other.sum_micros;
    }

    /// The latency at quantile `q` (0 to 1): the value of rank `ceil(q * count)`, reported as
    /// its bucket's upper bound (never above the largest value); zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (index, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_micros(bucket_upper(index).min(self.max_micros));
            }
        }
        Duration::from_micros(self.max_micros)
    }

    /// The usual percentiles.
    pub fn percentiles(&self) -> Percentiles {
        let mean = if self.count == 0 { 0 } else { self.sum_micros / u128::from(self.count) };
        Percentiles {
            count: self.count,
            p50: self.quantile(0.5),
            p90: self.quantile(0.9),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
            max: Duration::from_micros(self.max_micros),
            mean: Duration::from_micros(u64::try_from(mean).unwrap_or(u64::MAX)),
        }
    }
}

/// The buckets as `[index, count]` pairs of the non-empty ones.
mod sparse {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(buckets: &[u64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            buckets.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| [i as u64, *n]),
        )
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        let pairs = Vec::<[u64; 2]>::deserialize(d)?;
        let mut buckets = Vec::new();
        for [index, n] in pairs {
            // 64 powers of two with SUB buckets each cover every u64.
            let index = usize::try_from(index)
                .ok()
                .filter(|i| *i < 64 * super::SUB as usize)
                .ok_or_else(|| serde::de::Error::custom("latency bucket index out of range"))?;
            if buckets.len() <= index {
                buckets.resize(index + 1, 0);
            }
            buckets[index] += n;
        }
        Ok(buckets)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn buckets_are_exact_below_128_us_and_contiguous_above() {
        for v in 0..128 {
            assert_eq!(bucket_of(v), v as usize);
            assert_eq!(bucket_upper(v as usize), v);
        }
        for v in [128, 129, 255, 256, 1000, 1 << 40, u64::MAX] {
            let b = bucket_of(v);
            assert!(bucket_upper(b) >= v, "{v}");
            assert!(b == 0 || bucket_upper(b - 1) < v, "{v}");
        }
        assert!(bucket_of(u64::MAX) < 64 * SUB as usize);
    }

    #[test]
    fn percentiles_of_a_known_series() {
        let mut h = LatencyHistogram::new();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p = h.percentiles();
        assert_eq!(p.count, 100);
        assert_eq!(p.max, Duration::from_millis(100));
        let close = |got: Duration, want_ms: u64| {
            let want = want_ms as f64 * 1000.0;
            let got = got.as_micros() as f64;
            assert!(got >= want && got <= want * (1.0 + 1.0 / 64.0), "{got} vs {want}");
        };
        close(p.p50, 50);
        close(p.p90, 90);
        close(p.p99, 99);
        assert_eq!(LatencyHistogram::new().quantile(0.5), Duration::ZERO);
    }

    #[test]
    fn serializes_sparsely_and_round_trips() {
        let mut h = LatencyHistogram::new();
        h.record(Duration::from_micros(3));
        h.record(Duration::from_micros(3));
        h.record(Duration::from_secs(2));
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["buckets"][0], serde_json::json!([3, 2]));
        assert_eq!(serde_json::from_value::<LatencyHistogram>(json).unwrap(), h);
    }

    proptest! {
        #[test]
        fn a_quantile_is_within_a_bucket_of_the_exact_one(
            values in proptest::collection::vec(0u64..10_000_000, 1..300),
            q in 0.0f64..=1.0,
        ) {
            let mut h = LatencyHistogram::new();
            for v in &values {
                h.record(Duration::from_micros(*v));
            }
            let mut sorted = values.clone();
            sorted.sort_unstable();
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            let exact = sorted[rank - 1];
            let got = h.quantile(q).as_micros() as u64;
            prop_assert!(got >= exact && got as f64 <= exact as f64 * (1.0 + 1.0 / 64.0) + 1.0,
                "q {} exact {} got {}", q, exact, got);
        }

        #[test]
        fn merging_equals_recording_both(
            a in proptest::collection::vec(0u64..1_000_000, 0..100),
            b in proptest::collection::vec(0u64..1_000_000, 0..100),
        ) {
            let (mut ha, mut hb, mut both) = (LatencyHistogram::new(), LatencyHistogram::new(), LatencyHistogram::new());
            for v in &a { ha.record(Duration::from_micros(*v)); both.record(Duration::from_micros(*v)); }
            for v in &b { hb.record(Duration::from_micros(*v)); both.record(Duration::from_micros(*v)); }
            ha.merge(&hb);
            prop_assert_eq!(ha.percentiles(), both.percentiles());
            prop_assert_eq!(ha.count(), both.count());
        }
    }
}
