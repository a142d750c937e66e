//! [`RecordedMetrics`]: a `metrics` recorder for tests, keeping what was reported.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Counters (and gauges, as whole numbers) reported through the `metrics` facade, by series:
/// the name followed by its labels in braces, `name{label=value,...}` in the order they were
/// given (`name{}` without labels). Histograms are not kept.
///
/// Install it for a thread with `metrics::with_local_recorder` or
/// `metrics::set_default_local_recorder`; a clone shares the values.
#[derive(Debug, Clone, Default)]
pub struct RecordedMetrics(Arc<Mutex<HashMap<String, Arc<Count>>>>);

/// One series' value.
#[derive(Debug, Default)]
struct Count(Mutex<u64>);

impl metrics::CounterFn for Count {
    fn increment(&self, value: u64) {
        *self.0.lock().expect("not poisoned") += value;
    }
    fn absolute(&self, value: u64) {
        *self.0.lock().expect("not poisoned") = value;
    }
}

impl metrics::GaugeFn for Count {
    fn increment(&self, value: f64) {
        *self.0.lock().expect("not poisoned") += value as u64;
    }
    fn decrement(&self, value: f64) {
        *self.0.lock().expect("not poisoned") -= value as u64;
    }
    fn set(&self, value: f64) {
        *self.0.lock().expect("not poisoned") = value as u64;
    }
}

impl RecordedMetrics {
    /// The value of a series (`name{label=value,...}`); 0 if it was never reported.
    pub fn value(&self, series: &str) -> u64 {
        self.get(series).unwrap_or(0)
    }

    /// The value of the series `name` without labels; `None` if it was never reported.
    pub fn unlabelled(&self, name: &str) -> Option<u64> {
        self.get(&format!("{name}{{}}"))
    }

    fn get(&self, series: &str) -> Option<u64> {
        let series_map = self.0.lock().expect("not poisoned");
        series_map.get(series).map(|c| *c.0.lock().expect("not poisoned"))
    }

    fn series(&self, key: &metrics::Key) -> Arc<Count> {
        let labels: Vec<String> =
            key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        Arc::clone(self.0.lock().expect("not poisoned").entry(name).or_default())
    }
}

impl metrics::Recorder for RecordedMetrics {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(self.series(key))
    }

    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(self.series(key))
    }

    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_are_kept_by_name_and_labels() {
        let recorded = RecordedMetrics::default();
        metrics::with_local_recorder(&recorded, || {
            metrics::counter!("sent").increment(2);
            metrics::counter!("sent").increment(3);
            metrics::counter!("by_shard", "shard" => "s1").increment(7);
            metrics::gauge!("held").set(4.0);
            metrics::gauge!("held").decrement(1.0);
        });
        assert_eq!(recorded.unlabelled("sent"), Some(5));
        assert_eq!(recorded.value("by_shard{shard=s1}"), 7);
        assert_eq!(recorded.unlabelled("by_shard"), None);
        assert_eq!(recorded.unlabelled("held"), Some(3));
        assert_eq!(recorded.value("never"), 0);
    }
}
