//! What a chaos run does and when: the workload, the faults the proxies inject, and the
//! schedule of steps during production. Pure: no I/O, no clock.

use std::time::Duration;

use anyhow::{Result, bail};

/// Shards the stream starts with.
pub(crate) const SHARDS: u32 = 4;
/// Consumer worker processes (`chaos-w1` ..).
pub(crate) const WORKERS: usize = 3;
/// Payload sizes, as `kinesis-load produce --size` takes them.
pub(crate) const SIZE: &str = "uniform:100..600";
/// How long a record may take to be written, retries included.
pub(crate) const RECORD_TTL: Duration = Duration::from_secs(120);
/// How often the fake owner of a stolen lease bumps its counter (well inside a lease duration).
pub(crate) const THIEF_RENEW: Duration = Duration::from_secs(1);

/// One step of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Write this many records that are not payloads directly to the stream.
    BadInput(usize),
    /// Split the widest open shard (`kinesis-load reshard --action split`).
    Split,
    /// SIGKILL the worker holding the most leases.
    Kill,
    /// Rewrite a lease a live worker is processing to a fake owner, hold it, release it.
    Steal,
    /// Merge the narrowest adjacent pair (`kinesis-load reshard --action merge`).
    Merge,
    /// Start the killed worker again with the same worker id (once its leases were taken over).
    Restart,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::BadInput(n) => write!(f, "write {n} bad records"),
            Action::Split => f.write_str("split a shard"),
            Action::Kill => f.write_str("SIGKILL a worker"),
            Action::Steal => f.write_str("steal a lease in the table"),
            Action::Merge => f.write_str("merge two shards"),
            Action::Restart => f.write_str("restart the killed worker"),
        }
    }
}

/// A step and when it is due, after production started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    /// Due this long after the producer started.
    pub(crate) at: Duration,
    /// What it does.
    pub(crate) action: Action,
}

/// The faults of one proxy, as `limits-proxy` flags.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Faults {
    /// Share of PutRecords entries throttled (Kinesis only).
    pub(crate) throttle_entries: f64,
    /// Share of requests answered 500 without being forwarded.
    pub(crate) error_before: f64,
    /// Share of requests forwarded, then answered 500 anyway.
    pub(crate) error_after: f64,
    /// Share of connections reset before forwarding.
    pub(crate) reset_before: f64,
    /// Share of connections reset after the upstream answered.
    pub(crate) reset_after: f64,
    /// Added latency and its jitter, in milliseconds.
    pub(crate) latency_ms: (u64, u64),
}

impl Faults {
    /// The faults in front of Kinesis: 30 % of PutRecords entries throttled, 5 % of requests
    /// answered 500 (half before, half after forwarding), 1 % of connections reset, 1-5 ms added.
    pub(crate) fn kinesis() -> Self {
        Self { throttle_entries: 0.30, ..Self::dynamodb() }
    }

    /// The same in front of DynamoDB, without the throttling (there are no PutRecords).
    pub(crate) fn dynamodb() -> Self {
        Self {
            throttle_entries: 0.0,
            error_before: 0.025,
            error_after: 0.025,
            reset_before: 0.005,
            reset_after: 0.005,
            latency_ms: (1, 4),
        }
    }

    /// The `limits-proxy` flags.
    pub(crate) fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--error-before".to_owned(),
            self.error_before.to_string(),
            "--error-after".to_owned(),
            self.error_after.to_string(),
            "--reset-before".to_owned(),
            self.reset_before.to_string(),
            "--reset-after".to_owned(),
            self.reset_after.to_string(),
            "--latency".to_owned(),
            format!("{}ms", self.latency_ms.0),
            "--latency-jitter".to_owned(),
            format!("{}ms", self.latency_ms.1),
        ];
        if self.throttle_entries > 0.0 {
            args.extend(["--throttle-entries".to_owned(), self.throttle_entries.to_string()]);
        }
        args
    }

    /// In words, for the summary.
    pub(crate) fn describe(&self) -> String {
        let mut text = String::new();
        if self.throttle_entries > 0.0 {
            text.push_str(&format!(
                "{:.0} % of PutRecords entries throttled, ",
                self.throttle_entries * 100.0
            ));
        }
        text.push_str(&format!(
            "{:.1} % of requests answered 500 ({:.1} % before and {:.1} % after forwarding), \
             {:.1} % of connections reset ({:.1} % before, {:.1} % after), {}-{} ms added",
            (self.error_before + self.error_after) * 100.0,
            self.error_before * 100.0,
            self.error_after * 100.0,
            (self.reset_before + self.reset_after) * 100.0,
            self.reset_before * 100.0,
            self.reset_after * 100.0,
            self.latency_ms.0,
            self.latency_ms.0 + self.latency_ms.1
        ));
        text
    }
}

/// Everything a run does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// Records produced.
    pub(crate) records: u64,
    /// How long production should take.
    pub(crate) production: Duration,
    /// Records per second (rounded up).
    pub(crate) rate: u64,
    /// Distinct partition keys.
    pub(crate) keys: u32,
    /// The consumers' lease duration.
    pub(crate) lease_duration: Duration,
    /// The consumers' taker interval.
    pub(crate) taker_interval: Duration,
    /// How long the fake owner holds a stolen lease.
    pub(crate) steal_hold: Duration,
    /// The steps, in time order.
    pub(crate) steps: Vec<Step>,
    /// How long to wait, after production ended, for every record to be delivered.
    pub(crate) complete_within: Duration,
    /// Faults in front of Kinesis.
    pub(crate) kinesis_faults: Faults,
    /// Faults in front of DynamoDB.
    pub(crate) dynamodb_faults: Faults,
}

/// Where the steps fall, as fractions of the production time.
const SCHEDULE: [(f64, Action); 9] = [
    (0.05, Action::BadInput(5)),
    (0.15, Action::Split),
    (0.25, Action::Kill),
    (0.35, Action::BadInput(5)),
    (0.40, Action::Steal),
    (0.55, Action::Merge),
    (0.65, Action::BadInput(5)),
    (0.80, Action::Restart),
    (0.90, Action::BadInput(5)),
];

impl Plan {
    /// The plan for the given size: 100 000 records over 100 s by default, 10 000 over 40 s
    /// with `short`. Fails when the production time is too short to fit the steps for this
    /// lease duration.
    pub(crate) fn new(
        short: bool,
        records: Option<u64>,
        production: Option<Duration>,
        lease_duration: Duration,
    ) -> Result<Self> {
        let records = records.unwrap_or(if short { 10_000 } else { 100_000 });
        let production = production.unwrap_or(Duration::from_secs(if short { 40 } else { 100 }));
        if records < 1_000 {
            bail!(
                "--records {records}: at least 1000 records, so that every step falls during production"
            );
        }
        if lease_duration < Duration::from_secs(2) {
            bail!(
                "--lease-duration {lease_duration:?}: at least 2 s (renewals run every third of it)"
            );
        }
        let rate = (records as f64 / production.as_secs_f64()).ceil() as u64;
        if rate > 4_000 {
            bail!(
                "{records} records in {production:?} is {rate} records/s: more than the {SHARDS} shards \
                 take (1000 records/s each); give a longer --duration"
            );
        }
        let taker_interval = lease_duration / 2;
        let steal_hold = lease_duration * 2;
        let at = |fraction: f64| production.mul_f64(fraction);
        // The killed worker's leases must expire and be taken before the restart is due.
        let takeover = lease_duration + taker_interval * 2 + Duration::from_secs(5);
        let kill_to_restart = at(0.80) - at(0.25);
        if kill_to_restart < takeover {
            bail!(
                "--duration {production:?} is too short for a {lease_duration:?} lease: the kill and the \
                 restart are {kill_to_restart:?} apart, a takeover needs about {takeover:?}; \
                 give at least {:.0} s",
                takeover.as_secs_f64() / 0.55 + 1.0
            );
        }
        if at(0.40) + steal_hold + Duration::from_secs(2) > at(0.95) {
            bail!(
                "--duration {production:?} is too short to hold a stolen lease for {steal_hold:?} \
                 during production; give at least {:.0} s",
                (steal_hold.as_secs_f64() + 2.0) / 0.55 + 1.0
            );
        }
        let steps = SCHEDULE.iter().map(|&(f, action)| Step { at: at(f), action }).collect();
        Ok(Self {
            records,
            production,
            rate,
            keys: if short { 200 } else { 500 },
            lease_duration,
            taker_interval,
            steal_hold,
            steps,
            complete_within: Duration::from_secs(if short { 90 } else { 180 }),
            kinesis_faults: Faults::kinesis(),
            dynamodb_faults: Faults::dynamodb(),
        })
    }

    /// The worker ids, `chaos-w1` ..
    pub(crate) fn worker_ids() -> Vec<String> {
        (1..=WORKERS).map(|n| format!("chaos-w{n}")).collect()
    }
}

/// Parses `500ms`, `30s`, `2m`, `1h` (one number and unit).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 =
        number.parse().map_err(|_| format!("{text:?} is not a duration such as 30s"))?;
    let secs = match unit {
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: the unit must be ms, s, m or h")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"))
}

/// A duration as `kinesis-load` flags take it (whole milliseconds).
pub(crate) fn millis_arg(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_plans_fit_their_steps_into_production() {
        for short in [false, true] {
            let plan = Plan::new(short, None, None, Duration::from_secs(5)).unwrap();
            assert_eq!(plan.records, if short { 10_000 } else { 100_000 });
            assert!(plan.steps.windows(2).all(|w| w[0].at <= w[1].at), "in time order");
            assert!(plan.steps.iter().all(|s| s.at < plan.production));
            let when = |action: Action| plan.steps.iter().find(|s| s.action == action).unwrap().at;
            assert!(when(Action::Split) < when(Action::Merge));
            assert!(when(Action::Kill) < when(Action::Steal));
            assert!(when(Action::Restart) - when(Action::Kill) > plan.lease_duration * 2);
            assert!(when(Action::Steal) + plan.steal_hold < plan.production);
            let bad: usize = plan
                .steps
                .iter()
                .map(|s| if let Action::BadInput(n) = s.action { n } else { 0 })
                .sum();
            assert_eq!(bad, 20);
        }
        let short = Plan::new(true, None, None, Duration::from_secs(5)).unwrap();
        assert_eq!(short.rate, 250);
        assert_eq!(short.taker_interval, Duration::from_millis(2500));
    }

    #[test]
    fn a_production_too_short_for_the_lease_duration_is_refused_with_a_fix() {
        let error = Plan::new(true, None, Some(Duration::from_secs(20)), Duration::from_secs(10))
            .unwrap_err()
            .to_string();
        assert!(error.contains("too short") && error.contains("give at least"), "{error}");
        assert!(Plan::new(true, Some(10), None, Duration::from_secs(5)).is_err());
        assert!(
            Plan::new(false, None, Some(Duration::from_secs(10)), Duration::from_secs(2)).is_err()
        );
        assert!(Plan::new(true, None, None, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn faults_become_proxy_flags() {
        let args = Faults::kinesis().args();
        assert!(args.windows(2).any(|w| w == ["--throttle-entries", "0.3"]), "{args:?}");
        assert!(args.windows(2).any(|w| w == ["--error-after", "0.025"]), "{args:?}");
        assert!(!Faults::dynamodb().args().iter().any(|a| a == "--throttle-entries"));
        assert!(
            Faults::kinesis().describe().starts_with("30 % of PutRecords entries throttled, 5.0 %")
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(millis_arg(Duration::from_millis(2500)), "2500ms");
    }
}
