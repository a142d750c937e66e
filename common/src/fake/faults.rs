//! Fault injection and call counters for [`FakeKinesis`](super::FakeKinesis).
//!
//! Owns the [`FaultPlan`] (what to break next) and the [`Counters`] (what was called). Both
//! live inside the fake's state, behind its lock, so a fault set by a test is seen by the very
//! next call of any task. Every fault is deterministic: counted faults are consumed in call
//! order, random ones come from an RNG seeded by the test, and rate limits are judged on tokio
//! time (which tests pause).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::{ApiError, ShardId, StreamName};

use super::Inner;

/// A Kinesis operation of the [`KinesisApi`](crate::KinesisApi) trait, for faults and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Operation {
    /// ListShards.
    ListShards,
    /// DescribeStreamSummary.
    DescribeStreamSummary,
    /// PutRecords.
    PutRecords,
    /// GetShardIterator.
    GetShardIterator,
    /// GetRecords.
    GetRecords,
    /// CreateStream.
    CreateStream,
    /// DeleteStream.
    DeleteStream,
    /// SplitShard.
    SplitShard,
    /// MergeShards.
    MergeShards,
    /// UpdateShardCount.
    UpdateShardCount,
    /// RegisterStreamConsumer.
    RegisterStreamConsumer,
    /// DescribeStreamConsumer.
    DescribeStreamConsumer,
    /// DeregisterStreamConsumer.
    DeregisterStreamConsumer,
    /// SubscribeToShard (the call that opens the event stream, not its events).
    SubscribeToShard,
}

/// A per-shard write quota, enforced entry by entry like the real service does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardWriteLimit {
    /// Records each shard accepts per second.
    pub records_per_second: u32,
    /// Bytes (data plus partition key) each shard accepts per second.
    pub bytes_per_second: u64,
}

impl ShardWriteLimit {
    /// The provisioned-mode quota: 1 000 records and 1 MiB per second per shard (Kinesis
    /// developer guide, "Quotas and limits"; Kinesis API reference, PutRecords).
    pub const AWS: Self = Self { records_per_second: 1_000, bytes_per_second: 1 << 20 };
}

/// A handle on the fake's fault plan; get one from
/// [`FakeKinesis::faults`](super::FakeKinesis::faults).
///
/// Setters return `&Self` so that faults chain:
///
/// ```
/// # use kinesis_common::fake::{FakeKinesis, Operation};
/// # use kinesis_common::ApiError;
/// let fake = FakeKinesis::new();
/// fake.faults()
///     .throttle_next_entries(3)
///     .fail_next_calls(Operation::GetRecords, 1, ApiError::from_code("InternalFailure", "boom"));
/// ```
///
/// Entry faults apply to the entries of PutRecords calls in the order the fake processes them
/// (request order within a call, call order across calls), whatever the stream.
#[derive(Clone)]
pub struct Faults {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults").finish_non_exhaustive()
    }
}

impl Faults {
    fn plan(&self, change: impl FnOnce(&mut FaultPlan)) -> &Self {
        change(&mut self.inner.lock().faults);
        self
    }

    /// Fails the next `n` PutRecords entries with a per-entry
    /// `ProvisionedThroughputExceededException` that names the entry's shard, as AWS does.
    pub fn throttle_next_entries(&self, n: usize) -> &Self {
        self.plan(|p| p.entry_faults.push_back((n, EntryFault::Throttle)))
    }

    /// Fails the next `n` PutRecords entries with `error` (for example an `InternalFailure`).
    /// Queued after any entry faults already planned.
    pub fn fail_next_entries(&self, n: usize, error: ApiError) -> &Self {
        self.plan(|p| p.entry_faults.push_back((n, EntryFault::Error(error))))
    }

    /// Throttles each PutRecords entry with probability `fraction`, drawn from an RNG seeded
    /// with `seed`, so that the same calls fail on every run. `0.0` turns this off.
    ///
    /// # Panics
    ///
    /// If `fraction` is not within `0.0..=1.0`.
    pub fn throttle_entries_randomly(&self, fraction: f64, seed: u64) -> &Self {
        assert!((0.0..=1.0).contains(&fraction), "fraction {fraction} is not within 0.0..=1.0");
        self.plan(|p| {
            p.random = (fraction > 0.0)
                .then(|| RandomThrottle { fraction, rng: StdRng::seed_from_u64(seed) });
        })
    }

    /// Fails the next `n` calls of `operation` as a whole with `error`, after any injected
    /// delay. Pass `usize::MAX` to fail every call until [`clear`](Self::clear).
    pub fn fail_next_calls(&self, operation: Operation, n: usize, error: ApiError) -> &Self {
        self.plan(|p| p.call_faults.entry(operation).or_default().push_back((n, error)))
    }

    /// Makes every call of `operation` wait `delay` of tokio time before it runs (a slow
    /// network or service). `Duration::ZERO` removes the delay.
    pub fn delay_calls(&self, operation: Operation, delay: Duration) -> &Self {
        self.plan(|p| {
            if delay.is_zero() {
                p.delays.remove(&operation);
            } else {
                p.delays.insert(operation, delay);
            }
        })
    }

    /// Enforces `limit` on every shard of every stream, like AWS: an entry over the quota fails
    /// with `ProvisionedThroughputExceededException`. Each shard may burst one second's quota.
    pub fn limit_shard_writes(&self, limit: ShardWriteLimit) -> &Self {
        let mut state = self.inner.lock();
        state.faults.write_limit = Some(limit);
        // A new quota starts every shard with a full bucket.
        state.reset_write_budgets();
        drop(state);
        self
    }

    /// Removes the per-shard write quota (the default: the fake never throttles by itself).
    pub fn unlimit_shard_writes(&self) -> &Self {
        self.plan(|p| p.write_limit = None)
    }

    /// Removes every planned fault, delay and quota.
    pub fn clear(&self) {
        self.plan(|p| *p = FaultPlan::default());
    }
}

/// What to do to a PutRecords entry.
#[derive(Debug, Clone)]
pub(super) enum EntryFault {
    /// The AWS throttling error, worded for the entry's shard.
    Throttle,
    /// This error, as given.
    Error(ApiError),
}

#[derive(Debug)]
struct RandomThrottle {
    fraction: f64,
    rng: StdRng,
}

/// Faults planned by a test. Pure data: the fake's operations consult it under the lock.
#[derive(Debug, Default)]
pub(super) struct FaultPlan {
    entry_faults: VecDeque<(usize, EntryFault)>,
    random: Option<RandomThrottle>,
    call_faults: HashMap<Operation, VecDeque<(usize, ApiError)>>,
    delays: HashMap<Operation, Duration>,
    pub(super) write_limit: Option<ShardWriteLimit>,
}

impl FaultPlan {
    /// The delay and the failure, if any, for one call of `operation`; consumes a counted fault.
    pub(super) fn take_call(&mut self, operation: Operation) -> (Duration, Option<ApiError>) {
        let delay = self.delays.get(&operation).copied().unwrap_or_default();
        let failure = self.call_faults.get_mut(&operation).and_then(take_counted);
        (delay, failure)
    }

    /// The fault for the next PutRecords entry, if any: counted faults first, then the random
    /// draw (which is made for every entry without a counted fault, so that the sequence of
    /// draws depends only on the number of entries).
    pub(super) fn take_entry(&mut self) -> Option<EntryFault> {
        if let Some(fault) = take_counted(&mut self.entry_faults) {
            return Some(fault);
        }
        let random = self.random.as_mut()?;
        random.rng.random_bool(random.fraction).then_some(EntryFault::Throttle)
    }
}

/// Takes one use of the first counted fault, dropping it once used up.
fn take_counted<T: Clone>(queue: &mut VecDeque<(usize, T)>) -> Option<T> {
    while let Some((remaining, _)) = queue.front() {
        if *remaining == 0 {
            queue.pop_front();
        } else {
            break;
        }
    }
    let (remaining, fault) = queue.front_mut()?;
    if *remaining != usize::MAX {
        *remaining -= 1;
    }
    let fault = fault.clone();
    if *remaining == 0 {
        queue.pop_front();
    }
    Some(fault)
}

/// A shard's write budget under a [`ShardWriteLimit`]: two token buckets (records, bytes) that
/// refill continuously and hold at most one second's quota.
#[derive(Debug, Clone)]
pub(super) struct WriteBudget {
    records: f64,
    bytes: f64,
    refilled_at: Instant,
}

impl WriteBudget {
    /// A full budget.
    pub(super) fn full(limit: ShardWriteLimit, now: Instant) -> Self {
        Self {
            records: f64::from(limit.records_per_second),
            bytes: limit.bytes_per_second as f64,
            refilled_at: now,
        }
    }

    /// Takes one record of `size` bytes if the budget allows it.
    ///
    /// A record larger than one second's byte quota passes when the byte bucket is full and
    /// leaves it in debt: the service absorbs occasional large records from burst capacity
    /// (Kinesis developer guide, "Quotas and limits").
    pub(super) fn try_take(&mut self, limit: ShardWriteLimit, now: Instant, size: usize) -> bool {
        let records_cap = f64::from(limit.records_per_second);
        let bytes_cap = limit.bytes_per_second as f64;
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.records = (self.records + elapsed * records_cap).min(records_cap);
        self.bytes = (self.bytes + elapsed * bytes_cap).min(bytes_cap);
        self.refilled_at = now;
        let size = size as f64;
        if self.records >= 1.0 && (self.bytes >= size || self.bytes >= bytes_cap) {
            self.records -= 1.0;
            self.bytes -= size;
            true
        } else {
            false
        }
    }
}

/// What the fake was asked to do, for assertions; a snapshot from
/// [`FakeKinesis::counters`](super::FakeKinesis::counters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    calls: BTreeMap<Operation, u64>,
    put_entries: u64,
    entries_written: u64,
    entries_failed: u64,
    get_records: BTreeMap<(StreamName, ShardId), u64>,
}

impl Counters {
    /// How many times `operation` was called, including calls that failed.
    pub fn calls(&self, operation: Operation) -> u64 {
        self.calls.get(&operation).copied().unwrap_or(0)
    }

    /// How many entries all PutRecords calls carried, including calls rejected as a whole.
    pub fn put_entries(&self) -> u64 {
        self.put_entries
    }

    /// How many PutRecords entries were written.
    pub fn entries_written(&self) -> u64 {
        self.entries_written
    }

    /// How many PutRecords entries failed one by one (throttled or failed by a fault).
    pub fn entries_failed(&self) -> u64 {
        self.entries_failed
    }

    /// How many GetRecords calls carried an iterator of this shard (including calls that failed
    /// because the iterator had expired).
    pub fn get_records_calls(&self, stream: &StreamName, shard: &ShardId) -> u64 {
        self.get_records.get(&(stream.clone(), shard.clone())).copied().unwrap_or(0)
    }

    pub(super) fn count_call(&mut self, operation: Operation) {
        *self.calls.entry(operation).or_default() += 1;
    }

    pub(super) fn count_put_entries(&mut self, entries: usize) {
        self.put_entries += entries as u64;
    }

    pub(super) fn count_entry(&mut self, written: bool) {
        if written {
            self.entries_written += 1;
        } else {
            self.entries_failed += 1;
        }
    }

    pub(super) fn count_get_records(&mut self, stream: &StreamName, shard: &ShardId) {
        *self.get_records.entry((stream.clone(), shard.clone())).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn counted_faults_are_used_in_order_then_dropped() {
        let mut queue: VecDeque<(usize, u8)> = VecDeque::from([(2, 1), (0, 9), (1, 2)]);
        let taken: Vec<_> = std::iter::from_fn(|| take_counted(&mut queue)).collect();
        assert_eq!(taken, [1, 1, 2]);
        let mut forever: VecDeque<(usize, u8)> = VecDeque::from([(usize::MAX, 7)]);
        for _ in 0..1000 {
            assert_eq!(take_counted(&mut forever), Some(7));
        }
    }

    #[test]
    fn write_budget_refills_one_second_of_quota() {
        let limit = ShardWriteLimit { records_per_second: 10, bytes_per_second: 100 };
        let start = Instant::now();
        let mut budget = WriteBudget::full(limit, start);
        let taken = (0..20).filter(|_| budget.try_take(limit, start, 1)).count();
        assert_eq!(taken, 10, "a full bucket holds one second of records");
        assert!(!budget.try_take(limit, start + Duration::from_millis(50), 1));
        assert!(budget.try_take(limit, start + Duration::from_millis(100), 1));
        let later = start + Duration::from_secs(10);
        assert!(budget.try_take(limit, later, 1000), "a full byte bucket lets one big record by");
        assert!(!budget.try_take(limit, later + Duration::from_secs(1), 1), "then it is in debt");
    }
}
