//! What `produce` sends, as plain values and policies that take their time and randomness as
//! arguments: the target [`Rate`] and its [`Pacer`], the record [`SizeSpec`], the
//! [`KeyChooser`], and the parsers for the command line's durations, byte sizes and rates.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;

use super::payload::HEADER_LEN;

/// The largest payload: a Kinesis record holds at most 1 MiB of data plus partition key
/// (Kinesis Data Streams quotas, "maximum size of the data payload of a record"); 64 bytes
/// are left for the key.
pub const MAX_PAYLOAD: usize = 1024 * 1024 - 64;

/// Parses a duration: one or more `<number><unit>` groups, units `ms`, `s`, `m`, `h`
/// (`500ms`, `30s`, `1.5m`, `1m30s`); a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration such as 500ms, 30s, 5m, 1h or 1m30s");
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let unit_len =
            rest[digits..].find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len() - digits);
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit = match &rest[digits..digits + unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::try_from_secs_f64(number * unit).map_err(|_| bad())?;
        rest = &rest[digits + unit_len..];
    }
    if text.is_empty() { Err(bad()) } else { Ok(total) }
}

/// Parses a byte size: a number with an optional binary unit `B`, `KiB`/`K`/`KB`, `MiB`/`M`/`MB`
/// (all powers of 1024): `100`, `4KiB`, `1.5MiB`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a size such as 100, 4KiB or 1MiB");
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let number: f64 = t[..split].parse().map_err(|_| bad())?;
    let unit = match t[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = number * unit;
    if !bytes.is_finite() || bytes < 0.0 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// How fast `produce` sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// As fast as the producer accepts records (its outstanding budget is the brake).
    Max,
    /// User records per second.
    Records(f64),
    /// Payload bytes per second.
    Bytes(f64),
}

impl FromStr for Rate {
    type Err = String;

    /// `max`, `<n>` or `<n>/s` records per second, or `<size>/s` bytes per second with a unit
    /// (`2MiB/s`, `512KiB/s`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        let per_sec = t.strip_suffix("/s").unwrap_or(t);
        let positive = |v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(format!("rate {text:?} must be above zero"))
            }
        };
        if let Ok(records) = per_sec.parse::<f64>() {
            return Ok(Rate::Records(positive(records)?));
        }
        let bytes = parse_bytes(per_sec).map_err(|_| {
            format!("{text:?} is not a rate: max, 1000 (records/s), 1000/s, or 2MiB/s")
        })?;
        Ok(Rate::Bytes(positive(bytes as f64)?))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Max => f.write_str("max"),
            Rate::Records(r) => write!(f, "{r} records/s"),
            Rate::Bytes(b) => write!(f, "{:.3} MiB/s", b / 1024.0 / 1024.0),
        }
    }
}

/// Spaces sends to a [`Rate`]: each record is given the time it may go, on a schedule that
/// advances by its cost (one record, or its bytes) over the rate.
///
/// A sender that fell behind (the producer's budget was full) catches up with at most
/// `burst` worth of records at once, rather than with everything it missed: the rate is a
/// ceiling, and a stall is visible in the report instead of hidden by a later flood.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate: Rate,
    burst: Duration,
    /// The schedule's time for the next record, since the start.
    next: Duration,
}

impl Pacer {
    /// A pacer for `rate` that catches up at most `burst` worth of records.
    pub fn new(rate: Rate, burst: Duration) -> Self {
        Self { rate, burst, next: Duration::ZERO }
    }

    /// When (since the start) a record of `bytes` may be sent, asked at `now` (since the
    /// start, never decreasing between calls); never before `now`.
    pub fn schedule(&mut self, now: Duration, bytes: usize) -> Duration {
        let per_sec = match self.rate {
            Rate::Max => return now,
            Rate::Records(r) => r,
            Rate::Bytes(b) => b / bytes.max(1) as f64,
        };
        self.next = self.next.max(now.saturating_sub(self.burst));
        let at = self.next.max(now);
        self.next += Duration::from_secs_f64(1.0 / per_sec);
        at
    }
}

/// The size of each record's payload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SizeSpec {
    /// Every record this many bytes.
    Fixed(usize),
    /// Uniform between the two, both included.
    Uniform(usize, usize),
    /// Exponentially distributed with this mean (a long tail), cut to the allowed range.
    Exponential(usize),
}

impl FromStr for SizeSpec {
    type Err = String;

    /// `100`, `1KiB`, `uniform:50..500`, `exp:1KiB`; every size at least the header
    /// (48 bytes) and at most 1 MiB less 64 bytes.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let size = |t: &str| -> Result<usize, String> {
            let n = parse_bytes(t)? as usize;
            if !(HEADER_LEN..=MAX_PAYLOAD).contains(&n) {
                return Err(format!(
                    "size {t:?} must be {HEADER_LEN} (the header) to {MAX_PAYLOAD} bytes"
                ));
            }
            Ok(n)
        };
        let t = text.trim();
        if let Some(range) = t.strip_prefix("uniform:") {
            let (lo, hi) = range
                .split_once("..")
                .ok_or_else(|| format!("{text:?}: write a uniform size as uniform:50..500"))?;
            let (lo, hi) = (size(lo)?, size(hi.trim_start_matches('='))?);
            if lo > hi {
                return Err(format!("{text:?}: the low end is above the high end"));
            }
            return Ok(SizeSpec::Uniform(lo, hi));
        }
        if let Some(mean) = t.strip_prefix("exp:") {
            return Ok(SizeSpec::Exponential(size(mean)?));
        }
        size(t)
            .map(SizeSpec::Fixed)
            .map_err(|e| format!("{e}; sizes are 100, 1KiB, uniform:50..500 or exp:1KiB"))
    }
}

impl fmt::Display for SizeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeSpec::Fixed(n) => write!(f, "{n} B"),
            SizeSpec::Uniform(lo, hi) => write!(f, "uniform {lo}..{hi} B"),
            SizeSpec::Exponential(mean) => write!(f, "exponential, mean {mean} B"),
        }
    }
}

impl SizeSpec {
    /// One record's size.
    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        match *self {
            SizeSpec::Fixed(n) => n,
            SizeSpec::Uniform(lo, hi) => rng.random_range(lo..=hi),
            SizeSpec::Exponential(mean) => {
                let u: f64 = rng.random::<f64>();
                let v = -(mean as f64) * (1.0 - u).ln();
                (v.round() as usize).clamp(HEADER_LEN, MAX_PAYLOAD)
            }
        }
    }

    /// The mean size, for turning a byte rate into a record rate in messages.
    pub fn mean(&self) -> f64 {
        match *self {
            SizeSpec::Fixed(n) | SizeSpec::Exponential(n) => n as f64,
            SizeSpec::Uniform(lo, hi) => (lo + hi) as f64 / 2.0,
        }
    }
}

/// Chooses each record's partition key among `keys` keys (`key-0` .. `key-<keys-1>`):
/// `hot_share` of the records go to `key-0`, the rest uniformly to all keys.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyChooser {
    keys: u32,
    hot_share: f64,
}

impl KeyChooser {
    /// A chooser over `keys` keys (at least 1) with `hot_share` (0 to 1) for `key-0`.
    pub fn new(keys: u32, hot_share: f64) -> Result<Self, String> {
        if keys == 0 {
            return Err("--keys must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&hot_share) {
            return Err(format!("--hot-key-share {hot_share} must be between 0 and 1"));
        }
        Ok(Self { keys, hot_share })
    }

    /// How many keys.
    pub fn keys(&self) -> u32 {
        self.keys
    }

    /// The key index of the next record.
    pub fn choose(&self, rng: &mut impl Rng) -> u32 {
        if self.hot_share > 0.0 && rng.random::<f64>() < self.hot_share {
            0
        } else {
            rng.random_range(0..self.keys)
        }
    }

    /// The partition key of an index.
    pub fn partition_key(index: u32) -> String {
        format!("key-{index}")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    #[test]
    fn durations_parse_in_the_usual_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        for bad in ["", "s", "10x", "-1s", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_and_rates_parse_with_binary_units() {
        assert_eq!(parse_bytes("100"), Ok(100));
        assert_eq!(parse_bytes("4KiB"), Ok(4096));
        assert_eq!(parse_bytes("1.5MiB"), Ok(1_572_864));
        assert!(parse_bytes("lots").is_err());
        assert_eq!("max".parse::<Rate>(), Ok(Rate::Max));
        assert_eq!("1000".parse::<Rate>(), Ok(Rate::Records(1000.0)));
        assert_eq!("250/s".parse::<Rate>(), Ok(Rate::Records(250.0)));
        assert_eq!("2MiB/s".parse::<Rate>(), Ok(Rate::Bytes(2_097_152.0)));
        assert!("0".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }

    #[test]
    fn size_specs_parse_and_refuse_sizes_below_the_header() {
        assert_eq!("100".parse::<SizeSpec>(), Ok(SizeSpec::Fixed(100)));
        assert_eq!("uniform:50..500".parse::<SizeSpec>(), Ok(SizeSpec::Uniform(50, 500)));
        assert_eq!("uniform:1KiB..=2KiB".parse::<SizeSpec>(), Ok(SizeSpec::Uniform(1024, 2048)));
        assert_eq!("exp:1KiB".parse::<SizeSpec>(), Ok(SizeSpec::Exponential(1024)));
        let err = "10".parse::<SizeSpec>().unwrap_err();
        assert!(err.contains("48"), "{err}");
        assert!("uniform:500..50".parse::<SizeSpec>().is_err());
        assert!("2MiB".parse::<SizeSpec>().is_err());
    }

    #[test]
    fn sampled_sizes_stay_in_range() {
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..1000 {
            let n = SizeSpec::Uniform(50, 60).sample(&mut rng);
            assert!((50..=60).contains(&n));
            let n = SizeSpec::Exponential(100).sample(&mut rng);
            assert!((HEADER_LEN..=MAX_PAYLOAD).contains(&n));
        }
        let mean: f64 =
            (0..20_000).map(|_| SizeSpec::Exponential(1000).sample(&mut rng) as f64).sum::<f64>()
                / 20_000.0;
        assert!((900.0..1100.0).contains(&mean), "{mean}");
    }

    #[test]
    fn the_hot_key_gets_its_share_and_the_rest_is_uniform() {
        let chooser = KeyChooser::new(100, 0.2).unwrap();
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = vec![0u32; 100];
        for _ in 0..100_000 {
            counts[chooser.choose(&mut rng) as usize] += 1;
        }
        // key-0: 20% + 80% / 100 = 20.8%; the others 0.8% each.
        assert!((20_000..21_600).contains(&counts[0]), "{}", counts[0]);
        assert!(counts[1..].iter().all(|c| (600..1000).contains(c)), "{counts:?}");
        assert!(KeyChooser::new(0, 0.0).is_err());
        assert!(KeyChooser::new(1, 1.5).is_err());
        assert_eq!(KeyChooser::partition_key(3), "key-3");
    }

    #[test]
    fn max_rate_never_waits() {
        let mut pacer = Pacer::new(Rate::Max, Duration::ZERO);
        assert_eq!(pacer.schedule(Duration::from_secs(3), 100), Duration::from_secs(3));
    }

    #[test]
    fn a_record_rate_spaces_sends_evenly() {
        let mut pacer = Pacer::new(Rate::Records(10.0), Duration::ZERO);
        let times: Vec<Duration> = (0..5).map(|_| pacer.schedule(Duration::ZERO, 100)).collect();
        let ms: Vec<u128> = times.iter().map(|t| t.as_millis()).collect();
        assert_eq!(ms, [0, 100, 200, 300, 400]);
    }

    #[test]
    fn a_byte_rate_charges_each_record_its_size() {
        let mut pacer = Pacer::new(Rate::Bytes(1000.0), Duration::ZERO);
        assert_eq!(pacer.schedule(Duration::ZERO, 500), Duration::ZERO);
        assert_eq!(pacer.schedule(Duration::ZERO, 250), Duration::from_millis(500));
        assert_eq!(pacer.schedule(Duration::ZERO, 100), Duration::from_millis(750));
    }

    #[test]
    fn a_stalled_sender_catches_up_at_most_a_burst() {
        let mut pacer = Pacer::new(Rate::Records(100.0), Duration::from_millis(50));
        pacer.schedule(Duration::ZERO, 1);
        // Ten seconds of stall: only 50 ms worth (5 records) may go at once.
        let now = Duration::from_secs(10);
        let at_once = (0..20).take_while(|_| pacer.schedule(now, 1) <= now).count();
        assert_eq!(at_once, 6);
    }

    proptest! {
        #[test]
        fn sends_never_exceed_the_rate_plus_the_burst(
            rate in 1.0f64..5000.0,
            burst_ms in 0u64..500,
            steps in proptest::collection::vec(0u64..50, 1..150),
        ) {
            let burst = Duration::from_millis(burst_ms);
            let mut pacer = Pacer::new(Rate::Records(rate), burst);
            let mut now = Duration::ZERO;
            let mut sent = Vec::new();
            for step in steps {
                now += Duration::from_millis(step);
                let at = pacer.schedule(now, 1);
                prop_assert!(at >= now);
                now = at; // the sender waits until then
                sent.push(at);
            }
            // In any window [t0, t1], at most rate * (t1 - t0 + burst) + 1 records.
            for (i, t0) in sent.iter().enumerate() {
                for (j, t1) in sent.iter().enumerate().skip(i) {
                    let allowed = rate * ((*t1 - *t0) + burst).as_secs_f64() + 1.0 + 1e-6;
                    prop_assert!((j - i + 1) as f64 <= allowed + 1.0,
                        "{} records in {:?}", j - i + 1, *t1 - *t0);
                }
            }
        }
    }
}
