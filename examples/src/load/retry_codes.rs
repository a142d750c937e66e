//! [`RetryCodes`]: the producer's retries by AWS error code.
//!
//! The producer's [`MetricsSnapshot`](kinesis_producer::MetricsSnapshot) counts retries in
//! total only; the breakdown by code exists only as the `kinesis_producer_retries_total`
//! counter of the `metrics` facade, labelled `code`. This module is a minimal global
//! recorder that keeps that one counter and ignores every other metric.
//!
//! Invariant: one recorder per process (the facade allows one); counts are since it was
//! installed and shared by every producer of the process, so a report takes the difference
//! between two [`RetryCodes::snapshot`]s around its run.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// The counter this recorder keeps.
const RETRIES: &str = "kinesis_producer_retries_total";

/// Retries by code, since the recorder was installed.
#[derive(Debug, Default)]
pub struct RetryCodes {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
}

static INSTALLED: OnceLock<Option<&'static RetryCodes>> = OnceLock::new();

impl RetryCodes {
    /// Installs the recorder as the process's global one, once; `None` if another recorder
    /// was installed first (retries by code are then not reported).
    pub fn install() -> Option<&'static RetryCodes> {
        *INSTALLED.get_or_init(|| {
            let codes: &'static RetryCodes = Box::leak(Box::default());
            metrics::set_global_recorder(Forward(codes)).ok().map(|()| codes)
        })
    }

    /// The counts now.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        counters
            .iter()
            .map(|(code, n)| (code.clone(), n.load(std::sync::atomic::Ordering::Relaxed)))
            .collect()
    }

    /// The counts of `after` less those of `before`, without zeros.
    pub fn difference(
        before: &BTreeMap<String, u64>,
        after: &BTreeMap<String, u64>,
    ) -> BTreeMap<String, u64> {
        after
            .iter()
            .map(|(code, n)| (code.clone(), n - before.get(code).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    fn counter(&self, key: &Key) -> Counter {
        if key.name() != RETRIES {
            return Counter::noop();
        }
        let code =
            key.labels().find(|l| l.key() == "code").map_or("unknown", |l| l.value()).to_owned();
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        Counter::from_arc(Arc::clone(counters.entry(code).or_default()))
    }
}

/// The recorder installed globally: forwards to the leaked [`RetryCodes`].
struct Forward(&'static RetryCodes);

impl Recorder for Forward {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0.counter(key)
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_retry_counter_by_code_and_ignores_the_rest() {
        let codes = RetryCodes::default();
        let recorder = Forward(Box::leak(Box::new(codes)));
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!(RETRIES, "code" => "ProvisionedThroughputExceededException")
                .increment(2);
            metrics::counter!(RETRIES, "code" => "InternalFailure").increment(1);
            metrics::counter!("kinesis_producer_user_records_put_total").increment(9);
        });
        let before = BTreeMap::from([("InternalFailure".to_owned(), 1)]);
        let after = recorder.0.snapshot();
        assert_eq!(after.len(), 2);
        assert_eq!(
            RetryCodes::difference(&before, &after),
            BTreeMap::from([("ProvisionedThroughputExceededException".to_owned(), 2)])
        );
    }
}
