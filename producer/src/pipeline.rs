//! The pipeline task: the one owner of the producer's state, feeding the pure policies and
//! doing the I/O.
//!
//! ```text
//! intake -> ShardMap::predict -> Aggregator -> per-shard Limiter queue -> Collector
//!       -> PutRecords (at most max_in_flight_requests at once) -> retrier::classify
//!            Delivered  -> answer every user record
//!            Retry      -> back to the limiter queue after a jittered backoff within the TTL
//!            WrongShard -> refresh the shard map, then route every user record again
//!            Reject     -> answer every user record with the error
//! ```
//!
//! Invariants: every user record that enters the pipeline is answered exactly once (see
//! `Pending`); a flush answers once every record that entered before it is answered; the
//! pipeline stops only when asked to (or when every handle is gone) and nothing is left.
//! Shard map refreshes run on their own task, so routing never waits for ListShards.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kinesis_common::backoff::Backoff;
use kinesis_common::{
    ApiError, ApiErrorKind, HashKey, KinesisApi, PutRecordsEntry, PutRecordsOutcome, Shard,
    ShardId, StreamName,
};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, warn};

use crate::aggregator::{self, Aggregator, KinesisEntry};
use crate::barrier::Barrier;
use crate::collector::{Batch, Collector};
use crate::config::{ProducerConfig, RecordOrder};
use crate::fast_hash::{FastMap, FastSet};
use crate::intake::Intake;
use crate::limiter::{Limiter, ShardRate};
use crate::metrics::Counters;
use crate::pending::{Budget, Pending};
use crate::retrier::{self, Verdict};
use crate::shard_map::ShardMap;

/// The clock of the pipeline: tokio's, so that tests under paused time are deterministic.
pub(crate) fn clock() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// What the producer handles send to the pipeline besides records (which come through the
/// [`Intake`]).
#[derive(Debug)]
pub(crate) enum Command {
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// Something waiting for its retry time.
#[derive(Debug)]
enum Retry {
    /// A Kinesis record to send again as it is.
    Entry(KinesisEntry),
    /// A user record to route again (its aggregate had to be broken up).
    Route(Pending),
}

/// How many commands, and how many records, are taken per turn before the timers are looked
/// at again.
const INBOX_BATCH: usize = 4096;

/// The pipeline's hold on the intake: when the pipeline goes, however it goes (its task
/// panicked or its runtime stopped), the intake is closed, so senders get their records back
/// instead of queueing them for nobody.
#[derive(Debug)]
struct IntakeEnd(Arc<Intake>);

impl Drop for IntakeEnd {
    fn drop(&mut self) {
        // What it held is dropped here, and each record answers `Stopped` (see `Pending`).
        let mut rest = VecDeque::new();
        self.0.close(&mut rest);
    }
}

pub(crate) struct Pipeline {
    api: Arc<dyn KinesisApi>,
    stream: StreamName,
    config: ProducerConfig,
    counters: Arc<Counters>,
    inbox: mpsc::UnboundedReceiver<Command>,
    inbox_open: bool,
    intake: IntakeEnd,
    /// Records taken from the intake and not yet routed, oldest first.
    arrived: VecDeque<Pending>,
    budget: Budget,

    map: ShardMap,
    aggregator: Aggregator,
    limiter: Limiter,
    /// Kinesis records waiting for their shard's limiter, per predicted shard.
    queues: FastMap<ShardId, VecDeque<KinesisEntry>>,
    limiter_wake: Option<Instant>,
    collector: Collector<KinesisEntry>,
    ready: VecDeque<Batch<KinesisEntry>>,
    /// Per shard, how many of its Kinesis records are in closed batches, in flight, waiting
    /// for a retry or for a wrong-shard judgement. Under `RecordOrder::PerKey` a shard's queue
    /// drains only while this is zero, so two requests never race for one shard.
    held: FastMap<ShardId, usize>,
    /// Under `RecordOrder::PerKey`, the hash keys of the user records in the collector's open
    /// batch (records of one partition key share theirs): a PutRecords answer may fail one entry
    /// and write the next, so a request never carries two Kinesis records with a key in common.
    batch_keys: FastSet<HashKey>,
    requests: HashMap<u64, Vec<KinesisEntry>>,
    /// Which request each PutRecords task carries, to recover a task that panicked.
    tasks: HashMap<tokio::task::Id, u64>,
    in_flight: JoinSet<(u64, Instant, Result<Vec<PutRecordsOutcome>, ApiError>)>,
    next_request: u64,
    retries: BTreeMap<(Instant, u64), Retry>,
    next_retry: u64,
    backoff: Backoff,
    rng: SmallRng,

    /// Aggregates written to another shard than predicted, with that answer, waiting for a
    /// fresh shard map to judge them by the actual shard's range.
    awaiting_map: Vec<(KinesisEntry, PutRecordsOutcome)>,
    refresh: JoinSet<Result<Vec<Shard>, ApiError>>,
    refresh_wanted: bool,
    refresh_failures: u32,
    next_refresh: Instant,

    /// Holds records for new shards while a resharding settles (per-key order).
    barrier: Barrier,
    next_seq: u64,

    generation: u64,
    /// Unanswered records per flush generation, oldest first (generations only grow, and
    /// nearly always one or two are alive: a queue beats a map per record).
    outstanding: VecDeque<(u64, usize)>,
    flush_waiters: Vec<(u64, oneshot::Sender<()>)>,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
}

/// The pipeline's ends of what it shares with the producer handles.
#[derive(Debug)]
pub(crate) struct Ends {
    /// Flushes and shutdowns.
    pub(crate) inbox: mpsc::UnboundedReceiver<Command>,
    /// Records.
    pub(crate) intake: Arc<Intake>,
    /// The outstanding budget the records hold.
    pub(crate) budget: Budget,
}

impl Pipeline {
    pub(crate) fn new(
        api: Arc<dyn KinesisApi>,
        stream: StreamName,
        config: ProducerConfig,
        counters: Arc<Counters>,
        ends: Ends,
        map: ShardMap,
    ) -> Self {
        let Ends { inbox, intake, budget } = ends;
        let now = clock();
        let aggregator = Aggregator::new(
            config.aggregation.clone(),
            config.aggregation_max_count,
            config.aggregation_max_size,
            config.max_record_size,
            config.aggregate_partition_key.clone(),
            config.compression,
            config.record_max_buffered_time,
        );
        // A burst of a tenth of a second: enough to fill a request per shard without letting
        // a quiet shard overrun its per-second limit.
        let limiter = Limiter::new(
            ShardRate::kinesis_limit_percent(config.rate_limit_percent),
            Duration::from_millis(100),
        );
        let collector = Collector::new(config.collection_max_count, config.collection_max_size);
        let backoff = Backoff::new(config.retry_backoff.0, config.retry_backoff.1);
        let next_refresh = now + config.shard_map_refresh_interval;
        Self {
            api,
            stream,
            config,
            counters,
            inbox,
            inbox_open: true,
            intake: IntakeEnd(intake),
            arrived: VecDeque::new(),
            budget,
            map,
            aggregator,
            limiter,
            queues: FastMap::default(),
            limiter_wake: None,
            collector,
            ready: VecDeque::new(),
            held: FastMap::default(),
            batch_keys: FastSet::default(),
            requests: HashMap::new(),
            tasks: HashMap::new(),
            in_flight: JoinSet::new(),
            next_request: 0,
            retries: BTreeMap::new(),
            next_retry: 0,
            backoff,
            rng: SmallRng::from_os_rng(),
            awaiting_map: Vec::new(),
            refresh: JoinSet::new(),
            refresh_wanted: false,
            refresh_failures: 0,
            next_refresh,
            barrier: Barrier::default(),
            next_seq: 0,
            generation: 0,
            outstanding: VecDeque::new(),
            flush_waiters: Vec::new(),
            shutdown_waiters: Vec::new(),
        }
    }

    /// Runs until shut down (or every handle is dropped) and nothing is left in flight.
    pub(crate) async fn run(mut self) {
        let mut commands = Vec::with_capacity(INBOX_BATCH);
        loop {
            let now = clock();
            self.take_records(now);
            self.advance(now);
            // The permits of the records answered this turn, in one release per semaphore.
            self.budget.release();
            if self.finished() {
                break;
            }
            // Records left for the next turn: look at the rest, then come straight back.
            let wake = if self.arrived.is_empty() { self.next_wake(now) } else { now };
            tokio::select! {
                biased;
                Some(joined) = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                    match joined {
                        Ok((task, (id, started, result))) => {
                            self.tasks.remove(&task);
                            self.on_response(id, started, result);
                        }
                        // The request task panicked: nothing is known about the write, so its
                        // records are retried (duplicates possible, loss not).
                        Err(e) => {
                            warn!(error = %e, "PutRecords task failed; retrying its records");
                            if let Some(id) = self.tasks.remove(&e.id()) {
                                let error = ApiError::new(ApiErrorKind::Transient, "PutRecords task stopped");
                                self.on_response(id, clock(), Err(error));
                            }
                        }
                    }
                }
                Some(joined) = self.refresh.join_next(), if !self.refresh.is_empty() => {
                    let result = joined.unwrap_or_else(|e| Err(ApiError::new(ApiErrorKind::Other, e.to_string())));
                    self.on_shards(result);
                }
                // Up to a batch of commands at a time, moved once into a reused vector.
                taken = self.inbox.recv_many(&mut commands, INBOX_BATCH), if self.inbox_open => {
                    let now = clock();
                    if taken == 0 {
                        // Every handle is gone: behave as a shutdown nobody waits for, after
                        // taking what they queued.
                        self.inbox_open = false;
                        self.take_all(true, now);
                    }
                    for command in commands.drain(..) {
                        self.on_command(command, now);
                    }
                }
                // Records are taken at the top of the loop; this only wakes it.
                () = self.intake.0.ready(), if self.inbox_open => {}
                () = sleep_until(wake) => {}
            }
        }
        for waiter in self.flush_waiters.drain(..) {
            let _ = waiter.1.send(());
        }
        for waiter in self.shutdown_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    fn closing(&self) -> bool {
        !self.inbox_open || !self.shutdown_waiters.is_empty()
    }

    /// Whether buffers should be sent now rather than at their deadlines.
    fn eager(&self) -> bool {
        self.closing() || !self.flush_waiters.is_empty()
    }

    /// Done once the inbox is closed and the intake drained (shutdown, or every handle
    /// dropped) and every record that came in has been answered.
    fn finished(&self) -> bool {
        !self.inbox_open
            && self.arrived.is_empty()
            && self.outstanding.is_empty()
            && self.in_flight.is_empty()
    }

    /// Routes up to a batch of the records that arrived, taking more from the intake once
    /// those before them are routed.
    fn take_records(&mut self, now: Instant) {
        if self.arrived.is_empty() {
            self.intake.0.take(&mut self.arrived);
            self.counters.arrived(self.arrived.len());
        }
        for _ in 0..INBOX_BATCH {
            let Some(pending) = self.arrived.pop_front() else { break };
            self.on_record(pending, now);
        }
    }

    /// Routes every record accepted so far (and closes the intake if `close`): a flush or a
    /// shutdown covers every record accepted before it.
    fn take_all(&mut self, close: bool, now: Instant) {
        let before = self.arrived.len();
        if close {
            self.intake.0.close(&mut self.arrived);
        } else {
            self.intake.0.take(&mut self.arrived);
        }
        self.counters.arrived(self.arrived.len() - before);
        while let Some(pending) = self.arrived.pop_front() {
            self.on_record(pending, now);
        }
    }

    #[inline(always)]
    fn on_record(&mut self, mut pending: Pending, now: Instant) {
        pending.generation = self.generation;
        pending.seq = self.next_seq;
        self.next_seq += 1;
        match self.outstanding.back_mut() {
            Some((generation, count)) if *generation == self.generation => *count += 1,
            _ => self.outstanding.push_back((self.generation, 1)),
        }
        self.route(pending, now);
    }

    fn on_command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Flush(reply) => {
                self.take_all(false, now);
                let generation = self.generation;
                self.generation += 1;
                if self.answered_up_to(generation) {
                    let _ = reply.send(());
                } else {
                    self.flush_waiters.push((generation, reply));
                }
            }
            Command::Shutdown(reply) => {
                // Stop taking records: whatever is already queued is still handled.
                self.take_all(true, now);
                self.inbox.close();
                self.shutdown_waiters.push(reply);
            }
        }
    }

    /// Sends a user record toward its predicted shard.
    #[inline]
    fn route(&mut self, pending: Pending, now: Instant) {
        if now >= pending.expires_at {
            self.expire(vec![pending]);
            return;
        }
        let shard = self.map.predict(pending.record.hash_key());
        let pending = if self.barrier.is_raised() && self.config.record_order == RecordOrder::PerKey
        {
            match self.barrier.hold(shard.map(|p| &p.id), pending) {
                Some(pending) => pending,
                None => return,
            }
        } else {
            pending
        };
        for entry in self.aggregator.add(shard, pending) {
            self.enqueue(entry, false);
        }
    }

    fn enqueue(&mut self, entry: KinesisEntry, front: bool) {
        match entry.predicted.clone() {
            Some(shard) => {
                let queue = self.queues.entry(shard).or_default();
                if front { queue.push_front(entry) } else { queue.push_back(entry) }
            }
            // No prediction, no limiter: Kinesis places it and its answer is right by definition.
            None => self.collect(entry),
        }
    }

    fn collect(&mut self, entry: KinesisEntry) {
        if self.config.record_order == RecordOrder::PerKey {
            self.batch_keys.extend(entry.users.iter().map(|u| u.record.hash_key()));
        }
        let batches = self.collector.push(entry);
        if !batches.is_empty() {
            for batch in batches {
                self.close_batch(batch);
            }
            self.batch_keys.clear();
            if self.config.record_order == RecordOrder::PerKey {
                let open = self.collector.pending();
                self.batch_keys
                    .extend(open.iter().flat_map(|e| e.users.iter().map(|u| u.record.hash_key())));
            }
        }
    }

    /// Whether the entry shares a partition key with the collector's open batch.
    fn conflicts(&self, entry: &KinesisEntry) -> bool {
        !self.batch_keys.is_empty()
            && entry.users.iter().any(|u| self.batch_keys.contains(&u.record.hash_key()))
    }

    /// A batch leaves the collector: its shards are held until its answer.
    fn close_batch(&mut self, batch: Batch<KinesisEntry>) {
        for entry in &batch.items {
            self.hold(entry.predicted.as_ref());
        }
        self.ready.push_back(batch);
    }

    /// Closes the collector's open batch now, whatever its deadline.
    fn close_open_batch(&mut self) {
        if let Some(batch) = self.collector.flush() {
            self.close_batch(batch);
        }
        self.batch_keys.clear();
    }

    fn hold(&mut self, shard: Option<&ShardId>) {
        if let Some(shard) = shard {
            *self.held.entry(shard.clone()).or_default() += 1;
        }
    }

    fn release(&mut self, shard: Option<&ShardId>) {
        if let Some(shard) = shard
            && let Some(count) = self.held.get_mut(shard)
        {
            *count -= 1;
            if *count == 0 {
                self.held.remove(shard);
            }
        }
    }

    /// Moves everything that is due one stage on, and starts requests.
    fn advance(&mut self, now: Instant) {
        let due: Vec<_> = {
            let later = self.retries.split_off(&(now, u64::MAX));
            std::mem::replace(&mut self.retries, later).into_values().collect()
        };
        for retry in due {
            self.on_retry_due(retry, now);
        }
        if now >= self.next_refresh {
            self.refresh_wanted = true;
            self.next_refresh = now + self.config.shard_map_refresh_interval;
        }
        self.start_refresh();
        self.expire_awaiting_map(now);
        let expired = self.barrier.take_expired(now);
        self.expire(expired);

        let eager = self.eager();
        let closed = if eager { self.aggregator.flush() } else { self.aggregator.poll(now) };
        for entry in closed {
            self.enqueue(entry, false);
        }
        self.drain_queues(now);
        if self.barrier.is_raised() && !self.stale_pending() {
            for pending in self.barrier.lower() {
                self.route(pending, now);
            }
            self.drain_queues(now);
        }
        let closed = if eager { self.collector.flush() } else { self.collector.poll(now) };
        if let Some(batch) = closed {
            self.close_batch(batch);
            self.batch_keys.clear();
        }
        while self.in_flight.len() < self.config.max_in_flight_requests {
            let Some(batch) = self.ready.pop_front() else { break };
            self.send(batch.items, now);
        }
    }

    /// Lets each shard's queue through its limiter as far as the tokens go.
    fn drain_queues(&mut self, now: Instant) {
        self.limiter_wake = None;
        let shards: Vec<ShardId> = self.queues.keys().cloned().collect();
        let ordered = self.config.record_order == RecordOrder::PerKey;
        for shard in shards {
            if ordered && self.held.contains_key(&shard) {
                // Its earlier records are unanswered: sending more now could overtake them.
                continue;
            }
            loop {
                let Some(front) = self.queues.get(&shard).and_then(VecDeque::front) else {
                    self.queues.remove(&shard);
                    break;
                };
                if now >= front.expires_at() {
                    let entry = self.pop_queue(&shard);
                    self.split_expired(entry, now);
                    continue;
                }
                if !self.map.is_open(&shard) {
                    // Predicted for a shard that has closed since: its records belong to the
                    // children now. Taken in queue order, so a key's records stay in order.
                    let entry = self.pop_queue(&shard);
                    for user in entry.users {
                        self.route(user, now);
                    }
                    continue;
                }
                if ordered && self.conflicts(front) {
                    // Send what the batch holds; this shard waits for that answer.
                    self.close_open_batch();
                    break;
                }
                match self.limiter.try_acquire(&shard, 1, front.size(), now) {
                    Ok(()) => {
                        let entry = self.pop_queue(&shard);
                        self.collect(entry);
                    }
                    Err(wait) => {
                        let at = now + wait;
                        self.limiter_wake = Some(self.limiter_wake.map_or(at, |w| w.min(at)));
                        break;
                    }
                }
            }
        }
    }

    /// Whether any record predicted for a shard that has closed is still in the pipeline
    /// (buffered, queued, in a batch, in flight, waiting for a retry or a judgement).
    fn stale_pending(&self) -> bool {
        let closed = |s: &ShardId| !self.map.is_open(s);
        self.queues.iter().any(|(s, q)| closed(s) && !q.is_empty())
            || self.held.keys().any(closed)
            || self.aggregator.has_buffer(closed)
            || self.collector.pending().iter().any(|e| e.predicted.as_ref().is_some_and(closed))
    }

    fn pop_queue(&mut self, shard: &ShardId) -> KinesisEntry {
        self.queues.get_mut(shard).and_then(VecDeque::pop_front).expect("the queue has a front")
    }

    fn send(&mut self, mut entries: Vec<KinesisEntry>, now: Instant) {
        aggregator::seal(&mut entries);
        let id = self.next_request;
        self.next_request += 1;
        let request: Vec<_> = entries
            .iter_mut()
            .map(|e| {
                e.attempts += 1;
                for user in &mut e.users {
                    user.attempts += 1;
                }
                e.entry.clone()
            })
            .collect();
        self.requests.insert(id, entries);
        let api = Arc::clone(&self.api);
        let stream = self.stream.clone();
        let timeout = self.config.request_timeout;
        let span = tracing::debug_span!(
            "put_records",
            stream = %self.stream,
            request = id,
            records = request.len(),
            bytes = request.iter().map(PutRecordsEntry::size).sum::<usize>(),
        );
        let task = self.in_flight.spawn(
            async move {
                let result = match tokio::time::timeout(timeout, api.put_records(&stream, request))
                    .await
                {
                    Ok(result) => result,
                    Err(_) => Err(ApiError::new(
                        ApiErrorKind::Transient,
                        format!(
                            "PutRecords timed out after {timeout:?}; it may still have succeeded"
                        ),
                    )),
                };
                if let Err(error) = &result {
                    debug!(%error, "PutRecords failed");
                }
                (id, now, result)
            }
            .instrument(span),
        );
        self.tasks.insert(task.id(), id);
    }

    fn on_response(
        &mut self,
        id: u64,
        started: Instant,
        result: Result<Vec<PutRecordsOutcome>, ApiError>,
    ) {
        let now = clock();
        let Some(entries) = self.requests.remove(&id) else { return };
        self.counters.request(entries.len(), now.saturating_duration_since(started));
        for entry in &entries {
            self.release(entry.predicted.as_ref());
        }
        match result {
            Ok(outcomes) if outcomes.len() == entries.len() => {
                for (entry, outcome) in entries.into_iter().zip(&outcomes) {
                    let verdict = retrier::classify(
                        &entry,
                        outcome,
                        &self.map,
                        self.config.fail_if_throttled,
                    );
                    self.apply(entry, verdict, now);
                }
            }
            Ok(outcomes) => {
                let error = ApiError::new(
                    ApiErrorKind::Transient,
                    format!(
                        "PutRecords answered {} results for {} records",
                        outcomes.len(),
                        entries.len()
                    ),
                );
                for entry in entries {
                    self.apply(entry, Verdict::Retry { error: error.clone() }, now);
                }
            }
            Err(error) if error.kind() == ApiErrorKind::InvalidArgument && entries.len() > 1 => {
                // Kinesis refuses a whole request for one bad record (one over the stream's
                // record size limit, say) and writes nothing: send each half on its own, so the
                // bad records end up alone and rejected while the others are written.
                debug!(%error, records = entries.len(), "PutRecords request refused; sending each half alone");
                self.counters.retry(error.code().unwrap_or("none"), false);
                self.bisect(entries, &error, now);
            }
            Err(error) => {
                debug!(%error, records = entries.len(), "PutRecords request failed");
                let verdict = retrier::classify_error(&error, self.config.fail_if_throttled);
                for entry in entries {
                    self.apply(entry, verdict.clone(), now);
                }
            }
        }
    }

    /// Splits a refused request in two and puts both halves first in line, as requests of
    /// their own. Entries of one request never share a shard's per-key order (see
    /// `batch_keys`), so the halves may be sent in any order; their shards stay held until
    /// they are answered.
    fn bisect(&mut self, entries: Vec<KinesisEntry>, error: &ApiError, now: Instant) {
        let mut alive = Vec::with_capacity(entries.len());
        for mut entry in entries {
            for user in &mut entry.users {
                user.last_error = Some(Box::new(error.clone()));
            }
            if let Some(entry) = self.split_expired(entry, now) {
                alive.push(entry);
            }
        }
        let second = alive.split_off(alive.len() / 2);
        for half in [second, alive] {
            if half.is_empty() {
                continue;
            }
            let bytes = half.iter().map(|e| e.size()).sum();
            for entry in &half {
                self.hold(entry.predicted.as_ref());
            }
            self.ready.push_front(Batch { items: half, bytes });
        }
    }

    fn apply(&mut self, entry: KinesisEntry, verdict: Verdict, now: Instant) {
        match verdict {
            Verdict::Delivered { shard_id, sequence_number, refresh_map } => {
                if refresh_map {
                    self.refresh_wanted = true;
                }
                // One latency sample per Kinesis record: its oldest user record's.
                let oldest = entry.users.iter().map(|p| p.accepted_at).min().unwrap_or(now);
                let waited = now.saturating_duration_since(oldest);
                self.counters.put(entry.users.len(), entry.size(), waited);
                let aggregated = entry.aggregated;
                // Answered in place: a record is not moved again on its way out.
                let mut users = entry.users;
                // Slots are asked for this many records ahead of the one answered.
                const AHEAD: usize = 8;
                for user in users.iter().take(AHEAD) {
                    user.prefetch_reply();
                }
                for index in 0..users.len() {
                    if let Some(ahead) = users.get(index + AHEAD) {
                        ahead.prefetch_reply();
                    }
                    let user = &mut users[index];
                    let (generation, share) = (user.generation, user.take_budget());
                    let sub = aggregated.then_some(index as u64);
                    user.deliver(shard_id.clone(), sequence_number.clone(), sub, now);
                    self.resolved(generation, share);
                }
            }
            Verdict::WrongShard { shard_id, sequence_number } => {
                debug!(predicted = ?entry.predicted, actual = %shard_id, "aggregate written to another shard; judging it after a shard map refresh");
                self.refresh_wanted = true;
                let outcome = PutRecordsOutcome::Written { shard_id, sequence_number };
                self.hold(entry.predicted.as_ref());
                self.awaiting_map.push((entry, outcome));
            }
            Verdict::Retry { error } => {
                let throttled = error.kind() == ApiErrorKind::Throttled;
                if throttled && let Some(shard) = &entry.predicted {
                    self.limiter.on_throttled(shard, now);
                }
                if matches!(error.kind(), ApiErrorKind::NotFound) {
                    self.refresh_wanted = true;
                }
                self.counters.retry(error.code().unwrap_or("none"), throttled);
                self.schedule_retry(entry, error, now);
            }
            Verdict::Reject { error } => {
                let code = error.code().unwrap_or("none").to_owned();
                self.counters.rejected(entry.users.len(), &code);
                for mut user in entry.users {
                    let (generation, share) = (user.generation, user.take_budget());
                    user.reject(error.clone());
                    self.resolved(generation, share);
                }
            }
        }
    }

    fn schedule_retry(&mut self, mut entry: KinesisEntry, error: ApiError, now: Instant) {
        for user in &mut entry.users {
            user.last_error = Some(Box::new(error.clone()));
        }
        let Some(entry) = self.split_expired(entry, now) else { return };
        let remaining = entry.expires_at().saturating_duration_since(now);
        let attempt = entry.attempts.saturating_sub(1);
        match self.backoff.delay_within(attempt, remaining, &mut self.rng) {
            Some(delay) => {
                let at = now + delay;
                let key = (at, self.next_retry);
                self.next_retry += 1;
                self.hold(entry.predicted.as_ref());
                self.retries.insert(key, Retry::Entry(entry));
            }
            None => self.expire(entry.users),
        }
    }

    /// Answers the expired user records of an entry. The rest come back as the same entry if
    /// nothing changed, or are routed again individually if an aggregate lost members (its
    /// data must be rebuilt). Returns the entry when it is still whole.
    fn split_expired(&mut self, mut entry: KinesisEntry, now: Instant) -> Option<KinesisEntry> {
        if entry.users.iter().all(|u| now < u.expires_at) {
            return Some(entry);
        }
        let (expired, alive): (Vec<_>, Vec<_>) =
            entry.users.drain(..).partition(|u| now >= u.expires_at);
        self.expire(expired);
        if entry.aggregated {
            for user in alive {
                self.schedule_route(user, now);
            }
            None
        } else {
            entry.users = alive;
            (!entry.users.is_empty()).then_some(entry)
        }
    }

    /// Routes a user record again after a backoff.
    fn schedule_route(&mut self, user: Pending, now: Instant) {
        let remaining = user.expires_at.saturating_duration_since(now);
        match self.backoff.delay_within(user.attempts.saturating_sub(1), remaining, &mut self.rng) {
            Some(delay) => {
                let key = (now + delay, self.next_retry);
                self.next_retry += 1;
                self.retries.insert(key, Retry::Route(user));
            }
            None => self.expire(vec![user]),
        }
    }

    fn on_retry_due(&mut self, retry: Retry, now: Instant) {
        match retry {
            Retry::Entry(mut entry) => {
                self.release(entry.predicted.as_ref());
                let stale = entry.predicted.as_ref().is_some_and(|s| !self.map.is_open(s));
                if stale && entry.aggregated {
                    // Its shard has closed: the records belong to the children now.
                    for user in entry.users {
                        self.route(user, now);
                    }
                } else {
                    entry.deadline = now;
                    if stale {
                        entry.predicted =
                            self.map.shard_for(entry.users[0].record.hash_key()).cloned();
                    }
                    self.enqueue(entry, true);
                }
            }
            Retry::Route(user) => self.route(user, now),
        }
    }

    fn expire(&mut self, users: Vec<Pending>) {
        if users.is_empty() {
            return;
        }
        self.counters.expired(users.len());
        for mut user in users {
            let (generation, share) = (user.generation, user.take_budget());
            user.expire();
            self.resolved(generation, share);
        }
    }

    fn expire_awaiting_map(&mut self, now: Instant) {
        if self.awaiting_map.iter().any(|(e, _)| now >= e.expires_at()) {
            let (expired, alive): (Vec<_>, Vec<_>) = std::mem::take(&mut self.awaiting_map)
                .into_iter()
                .partition(|(e, _)| now >= e.expires_at());
            self.awaiting_map = alive;
            for (entry, _) in expired {
                self.release(entry.predicted.as_ref());
                self.split_expired(entry, now);
            }
        }
    }

    /// Judges an aggregate written to another shard than predicted, now that the shard map
    /// is fresh: delivered if every user record lies in the actual shard's range, else every
    /// user record is routed again (the KCL drops the whole aggregate on that shard).
    fn judge_wrong_shard(&mut self, entry: KinesisEntry, outcome: PutRecordsOutcome, now: Instant) {
        self.release(entry.predicted.as_ref());
        match retrier::classify(&entry, &outcome, &self.map, self.config.fail_if_throttled) {
            Verdict::WrongShard { shard_id, .. } => {
                self.counters.wrong_shard();
                let error = ApiError::new(
                    ApiErrorKind::Other,
                    format!(
                        "written to {shard_id}, which does not own every record of the aggregate"
                    ),
                );
                for mut user in entry.users {
                    user.last_error = Some(Box::new(error.clone()));
                    self.route(user, now);
                }
            }
            verdict => self.apply(entry, verdict, now),
        }
    }

    /// Bookkeeping after a user record was answered: its share of the outstanding budget is
    /// given back (returned at the end of the turn), and flush waiters whose records are all
    /// answered are released.
    fn resolved(&mut self, generation: u64, share: Option<u32>) {
        self.budget.give_back(share);
        if let Some(at) = self.outstanding.iter().position(|(g, _)| *g == generation) {
            let count = &mut self.outstanding[at].1;
            *count -= 1;
            if *count == 0 {
                self.outstanding.remove(at);
            }
        }
        let mut i = 0;
        while i < self.flush_waiters.len() {
            let generation = self.flush_waiters[i].0;
            if self.answered_up_to(generation) {
                let (_, reply) = self.flush_waiters.swap_remove(i);
                let _ = reply.send(());
            } else {
                i += 1;
            }
        }
    }

    /// Whether every record of `generation` and earlier ones is answered.
    fn answered_up_to(&self, generation: u64) -> bool {
        self.outstanding.front().is_none_or(|(oldest, _)| *oldest > generation)
    }

    fn start_refresh(&mut self) {
        if !self.refresh_wanted || !self.refresh.is_empty() {
            return;
        }
        self.refresh_wanted = false;
        let api = Arc::clone(&self.api);
        let stream = self.stream.clone();
        let delay = if self.refresh_failures == 0 {
            Duration::ZERO
        } else {
            // ListShards failing: back off (KPL: 1 s growing to 30 s).
            Backoff::new(Duration::from_secs(1), Duration::from_secs(30))
                .delay(self.refresh_failures - 1, &mut self.rng)
        };
        let span = tracing::debug_span!("shard_map_refresh", stream = %self.stream, attempt = self.refresh_failures);
        self.refresh.spawn(
            async move {
                tokio::time::sleep(delay).await;
                api.list_shards(&stream).await
            }
            .instrument(span),
        );
    }

    fn on_shards(&mut self, result: Result<Vec<Shard>, ApiError>) {
        let now = clock();
        let was_open: HashSet<ShardId> = self.map.open_shards().cloned().collect();
        let updated = match result {
            Ok(shards) => self.map.update(&shards, now).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match updated {
            Ok(()) => {
                self.refresh_failures = 0;
                let opened: Vec<ShardId> =
                    self.map.open_shards().filter(|s| !was_open.contains(*s)).cloned().collect();
                let closed_any = was_open.iter().any(|s| !self.map.is_open(s));
                if closed_any && self.config.record_order == RecordOrder::PerKey {
                    self.barrier.raise(opened);
                }
                // Aggregates still open for closed shards go to their queues now, ahead of
                // anything newer, to be re-routed in order.
                let map = &self.map;
                let stale = self.aggregator.flush_shards(|s| !map.is_open(s));
                for entry in stale {
                    self.enqueue(entry, false);
                }
                let map = &self.map;
                self.limiter.retain(|s| map.is_open(s));
                for (entry, outcome) in std::mem::take(&mut self.awaiting_map) {
                    self.judge_wrong_shard(entry, outcome, now);
                }
            }
            Err(error) => {
                warn!(%error, "shard map refresh failed; predicting with the old map");
                self.refresh_failures += 1;
                self.refresh_wanted = true;
            }
        }
    }

    fn next_wake(&mut self, now: Instant) -> Instant {
        let far = now + Duration::from_secs(3600);
        let mut wake = self.next_refresh.min(far);
        if !self.eager() {
            for at in [self.aggregator.next_deadline(), self.collector.next_deadline()]
                .into_iter()
                .flatten()
            {
                wake = wake.min(at);
            }
        }
        if let Some(((at, _), _)) = self.retries.first_key_value() {
            wake = wake.min(*at);
        }
        if let Some(at) = self.barrier.next_expiry() {
            wake = wake.min(at);
        }
        if let Some(at) = self.limiter_wake {
            wake = wake.min(at);
        }
        if let Some(at) = self.awaiting_map.iter().map(|(e, _)| e.expires_at()).min() {
            wake = wake.min(at);
        }
        wake.max(now)
    }
}

async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
}
