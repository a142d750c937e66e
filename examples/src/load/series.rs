//! Per-second time series of a `produce` run: what was sent, delivered and failed in each
//! second, the send-to-delivery latency of the deliveries that completed in it, and the
//! producer's retries. [`SeriesRecorder`] buckets events by explicit timestamps (offsets from
//! the run's start), so it is pure; `produce` feeds it and [`plot`](super::plot) draws it.
//!
//! Invariants: a delivery is counted in the second it completed (its acceptance time plus its
//! latency), not the second it was sent; events never come earlier than the latest send
//! recorded (the *watermark*: sends are recorded in send order and every outcome follows its
//! send), so seconds that end at or before it are final and keep only their percentiles, not
//! their histograms. An event that breaks this is counted in the watermark's second.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::histogram::{LatencyHistogram, Percentiles};

/// The width of a bucket.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// One bucket of a run (normally one second).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Start of the bucket, seconds since the run started.
    pub start: f64,
    /// Its length in seconds: the interval, shorter for the last bucket of a run.
    pub length: f64,
    /// User records handed to the producer (accepted or refused).
    pub sent: u64,
    /// User records whose delivery completed in this bucket.
    pub delivered: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// User records that failed (expired, rejected, refused) in this bucket.
    pub failed: u64,
    /// Send-to-delivery latency of the records delivered in this bucket (count 0 if none).
    pub latency: Percentiles,
    /// Kinesis records the producer sent again after a failure, from its counters.
    pub retries: u64,
    /// Of those, retries caused by throttling.
    pub throttled: u64,
}

impl Point {
    fn rate(&self, n: u64) -> f64 {
        if self.length > 0.0 { n as f64 / self.length } else { 0.0 }
    }

    /// User records sent per second.
    pub fn sent_per_sec(&self) -> f64 {
        self.rate(self.sent)
    }

    /// User records delivered per second.
    pub fn delivered_per_sec(&self) -> f64 {
        self.rate(self.delivered)
    }

    /// Payload MiB delivered per second.
    pub fn mib_per_sec(&self) -> f64 {
        self.rate(self.bytes) / 1024.0 / 1024.0
    }

    /// User records failed per second.
    pub fn failed_per_sec(&self) -> f64 {
        self.rate(self.failed)
    }

    /// Retries per second.
    pub fn retries_per_sec(&self) -> f64 {
        self.rate(self.retries)
    }

    /// Throttled retries per second.
    pub fn throttled_per_sec(&self) -> f64 {
        self.rate(self.throttled)
    }
}

/// A run's buckets, one per interval from the start to the last outcome, without gaps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// The bucket width.
    #[serde(rename = "interval_secs", with = "super::duration_secs")]
    pub interval: Duration,
    /// The buckets, in time order.
    pub points: Vec<Point>,
}

/// The producer's cumulative retry counters at one moment of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSample {
    /// Since the run's start.
    pub at: Duration,
    /// Retries so far.
    pub retries: u64,
    /// Throttled retries so far.
    pub throttled: u64,
}

/// Counts of one bucket still open to events.
#[derive(Debug, Default)]
struct Open {
    sent: u64,
    delivered: u64,
    bytes: u64,
    failed: u64,
    latency: LatencyHistogram,
}

/// Counts of a bucket the watermark has passed.
#[derive(Debug, Clone, Copy, Default)]
struct Closed {
    sent: u64,
    delivered: u64,
    bytes: u64,
    failed: u64,
    latency: Percentiles,
}

impl From<Open> for Closed {
    fn from(o: Open) -> Self {
        Closed {
            sent: o.sent,
            delivered: o.delivered,
            bytes: o.bytes,
            failed: o.failed,
            latency: o.latency.percentiles(),
        }
    }
}

/// Buckets a run's events by time; see the module docs.
#[derive(Debug)]
pub struct SeriesRecorder {
    interval: Duration,
    open: BTreeMap<u64, Open>,
    closed: BTreeMap<u64, Closed>,
    watermark: Duration,
    last_event: Duration,
}

impl Default for SeriesRecorder {
    fn default() -> Self {
        Self::new(INTERVAL)
    }
}

impl SeriesRecorder {
    /// A recorder with buckets of `interval` (at least a millisecond).
    pub fn new(interval: Duration) -> Self {
        SeriesRecorder {
            interval: interval.max(Duration::from_millis(1)),
            open: BTreeMap::new(),
            closed: BTreeMap::new(),
            watermark: Duration::ZERO,
            last_event: Duration::ZERO,
        }
    }

    fn index(&self, at: Duration) -> u64 {
        u64::try_from(at.as_nanos() / self.interval.as_nanos()).unwrap_or(u64::MAX)
    }

    /// The open bucket of an event at `at` (not before the watermark).
    fn bucket(&mut self, at: Duration) -> &mut Open {
        let at = at.max(self.watermark);
        self.last_event = self.last_event.max(at);
        let index = self.index(at);
        self.open.entry(index).or_default()
    }

    /// A record was handed to the producer at `at`; nothing earlier will be recorded after it.
    pub fn sent(&mut self, at: Duration) {
        self.bucket(at).sent += 1;
        if at > self.watermark {
            self.watermark = at;
            // Buckets that end at or before the watermark are final.
            let first_open = self.index(at);
            let still_open = self.open.split_off(&first_open);
            for (index, bucket) in std::mem::replace(&mut self.open, still_open) {
                self.closed.insert(index, bucket.into());
            }
        }
    }

    /// A record accepted at `accepted` was delivered after `latency`, so at
    /// `accepted + latency`.
    pub fn delivered(&mut self, accepted: Duration, latency: Duration, bytes: u64) {
        let bucket = self.bucket(accepted.saturating_add(latency));
        bucket.delivered += 1;
        bucket.bytes += bytes;
        bucket.latency.record(latency);
    }

    /// A record failed at `at`.
    pub fn failed(&mut self, at: Duration) {
        self.bucket(at).failed += 1;
    }

    /// The series up to `end` (or the last event, if later), with the retries of `samples`
    /// (cumulative, in time order; counting starts from zero at the start): the increase
    /// between two samples goes to the bucket holding the midpoint of the two.
    pub fn finish(mut self, end: Duration, samples: &[CounterSample]) -> Series {
        let end = end.max(self.last_event);
        for (index, bucket) in std::mem::take(&mut self.open) {
            self.closed.insert(index, bucket.into());
        }
        // The bucket holding the instant just before the end (a run that ends on a boundary
        // has no empty bucket after it), or a later one holding an event.
        let before_end = (!end.is_zero()).then(|| self.index(end - Duration::from_nanos(1)));
        let last = match (before_end, self.closed.keys().next_back()) {
            (Some(a), Some(b)) => Some(a.max(*b)),
            (a, b) => a.or(b.copied()),
        };
        let Some(last) = last else {
            return Series { interval: self.interval, points: Vec::new() };
        };
        let step = self.interval.as_secs_f64();
        let mut points: Vec<Point> = (0..=last)
            .map(|index| {
                let c = self.closed.get(&index).copied().unwrap_or_default();
                let start = index as f64 * step;
                Point {
                    start,
                    length: step,
                    sent: c.sent,
                    delivered: c.delivered,
                    bytes: c.bytes,
                    failed: c.failed,
                    latency: c.latency,
                    retries: 0,
                    throttled: 0,
                }
            })
            .collect();
        // The last bucket ends with the run, unless the run ends exactly on a boundary.
        if let Some(p) = points.last_mut() {
            let tail = end.as_secs_f64() - p.start;
            if tail > 0.0 && tail < step {
                p.length = tail;
            }
        }
        let mut previous = CounterSample::default();
        for sample in samples {
            let mid = (previous.at + sample.at.max(previous.at)) / 2;
            let index = (self.index(mid) as usize).min(points.len() - 1);
            points[index].retries += sample.retries.saturating_sub(previous.retries);
            points[index].throttled += sample.throttled.saturating_sub(previous.throttled);
            previous = *sample;
        }
        Series { interval: self.interval, points }
    }

    /// Buckets still holding a histogram (for the memory bound: about the longest latency in
    /// seconds, not the run's length).
    pub fn open_buckets(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn deliveries_count_in_the_second_they_complete() {
        let mut r = SeriesRecorder::default();
        r.sent(ms(100));
        r.delivered(ms(100), ms(200), 1000); // at 0.3 s
        r.sent(ms(900));
        r.delivered(ms(900), ms(1500), 500); // at 2.4 s
        r.sent(ms(1200));
        r.failed(ms(2100));
        let s = r.finish(ms(2500), &[]);
        assert_eq!(s.points.len(), 3);
        let counts: Vec<_> =
            s.points.iter().map(|p| (p.sent, p.delivered, p.bytes, p.failed)).collect();
        assert_eq!(counts, [(2, 1, 1000, 0), (1, 0, 0, 0), (0, 1, 500, 1)]);
        assert_eq!(s.points[0].latency.count, 1);
        assert_eq!(s.points[0].latency.max, ms(200));
        assert_eq!(s.points[1].latency.count, 0);
        assert_eq!(s.points[2].latency.max, ms(1500));
        assert_eq!(s.points[2].start, 2.0);
        assert!((s.points[2].length - 0.5).abs() < 1e-9);
        assert!((s.points[2].delivered_per_sec() - 2.0).abs() < 1e-9);
        assert!((s.points[0].mib_per_sec() - 1000.0 / 1048576.0).abs() < 1e-12);
    }

    #[test]
    fn percentiles_are_per_second() {
        let mut r = SeriesRecorder::default();
        for i in 0..100 {
            r.sent(ms(i));
            r.delivered(ms(i), ms(10 + i), 1); // all complete within second 0
        }
        r.sent(ms(1000));
        r.delivered(ms(1000), ms(500), 1);
        let s = r.finish(ms(2000), &[]);
        let p0 = s.points[0].latency;
        assert_eq!(p0.count, 100);
        assert!(p0.p50 >= ms(59) && p0.p50 <= ms(61), "{p0:?}");
        assert!(p0.p99 >= ms(108) && p0.p99 <= ms(110), "{p0:?}");
        assert_eq!(p0.max, ms(109));
        assert_eq!(s.points[1].latency.p50, ms(500));
        assert_eq!(s.points.len(), 2, "a run ending on a boundary has no empty bucket after it");
        assert_eq!(s.points[1].length, 1.0);
    }

    #[test]
    fn seconds_without_events_are_zero_not_missing() {
        let mut r = SeriesRecorder::default();
        r.sent(ms(0));
        r.sent(ms(3500));
        let s = r.finish(ms(3500), &[]);
        let sent: Vec<u64> = s.points.iter().map(|p| p.sent).collect();
        assert_eq!(sent, [1, 0, 0, 1]);
        assert_eq!(s.points.iter().map(|p| p.start).collect::<Vec<_>>(), [0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn passed_seconds_drop_their_histograms_and_late_events_go_to_the_watermark() {
        let mut r = SeriesRecorder::default();
        for s in 0..10u64 {
            r.sent(Duration::from_secs(s));
            r.delivered(Duration::from_secs(s), ms(300), 1);
        }
        assert_eq!(r.open_buckets(), 1, "only the watermark's second is open");
        // An outcome that claims an earlier time than the latest send is counted at the
        // watermark (second 9), never in a closed second.
        r.failed(Duration::from_secs(2));
        let s = r.finish(Duration::from_secs(10), &[]);
        assert_eq!(s.points[2].failed, 0);
        assert_eq!(s.points[9].failed, 1);
        assert_eq!(s.points.iter().map(|p| p.delivered).sum::<u64>(), 10);
    }

    #[test]
    fn counter_increases_go_to_the_bucket_of_their_midpoint() {
        let mut r = SeriesRecorder::default();
        r.sent(ms(0));
        let sample = |at, retries, throttled| CounterSample { at: ms(at), retries, throttled };
        // Ticks slightly late, as timers are; the last sample is the run's end.
        let samples =
            [sample(1003, 5, 4), sample(2001, 5, 4), sample(3002, 12, 10), sample(3400, 13, 10)];
        let s = r.finish(ms(3400), &samples);
        let retries: Vec<u64> = s.points.iter().map(|p| p.retries).collect();
        let throttled: Vec<u64> = s.points.iter().map(|p| p.throttled).collect();
        assert_eq!(retries, [5, 0, 7, 1]);
        assert_eq!(throttled, [4, 0, 6, 0]);
        assert!((s.points[3].retries_per_sec() - 2.5).abs() < 1e-9);
    }

    #[test]
    fn an_empty_run_has_no_points_and_serializes() {
        let s = SeriesRecorder::default().finish(Duration::ZERO, &[]);
        assert!(s.points.is_empty());
        let mut r = SeriesRecorder::new(ms(500));
        r.sent(ms(700));
        let s = r.finish(ms(700), &[]);
        assert_eq!(s.points.len(), 2);
        assert_eq!(s.points[1].start, 0.5);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["interval_secs"], serde_json::json!(0.5));
        assert_eq!(serde_json::from_value::<Series>(json).unwrap(), s);
    }
}
