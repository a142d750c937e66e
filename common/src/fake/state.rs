//! The fake's whole state and its operations: plain synchronous code that takes `now` and runs
//! under the fake's lock. The async shell in `mod.rs` only counts, delays, injects call
//! failures and locks.
//!
//! Invariants: every stream in `streams` is settled (its lifecycle brought up to `now`) before
//! it is read or changed; every limit is checked before anything is written, so a rejected
//! request changes nothing but the counters.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::{
    ApiError, ConsumerDescription, ConsumerName, ConsumerStatus, GetRecordsOutput, HashKey,
    KinesisRecord, PutRecordsEntry, PutRecordsOutcome, Shard, ShardId, ShardIterator,
    ShardIteratorPosition, StreamName, StreamSummary, SubscribeToShardEvent,
};

use super::errors::{
    consumer_not_found, entry_throttled, expired_iterator, in_use, invalid_argument,
    limit_exceeded, shard_not_found, stream_not_found, validation,
};
use super::faults::{Counters, EntryFault, FaultPlan, WriteBudget};
use super::iterator::IteratorToken;
use super::stream::{DEFAULT_RETENTION, Reshard, StreamState, SubscriptionLease};
use super::{ACCOUNT, Clock, Config, REGION};

/// Most entries in one PutRecords request (Kinesis API reference, PutRecords).
pub(super) const MAX_PUT_ENTRIES: usize = 500;
/// Most bytes (data plus partition keys) in one PutRecords request (Kinesis API reference,
/// PutRecords; the 5 MiB that the producer builds to).
pub(super) const MAX_PUT_BYTES: usize = 5 << 20;
/// The request limit for streams whose records may exceed 1 MiB (Kinesis API reference,
/// PutRecords: "up to a limit of 10 MiB for the entire request" with large records).
pub(super) const MAX_PUT_BYTES_LARGE_RECORDS: usize = 10 << 20;
/// The default largest record, data plus partition key (Kinesis API reference, PutRecords:
/// "The record size limit applies to the total size of the partition key and data blob").
pub(super) const DEFAULT_MAX_RECORD_SIZE: usize = 1 << 20;
/// The largest configurable record (Kinesis API reference, UpdateMaxRecordSize: 1024 to 10240
/// KiB).
pub(super) const MAX_MAX_RECORD_SIZE: usize = 10 << 20;
/// The default and largest GetRecords `Limit` (Kinesis API reference, GetRecords).
const MAX_GET_RECORDS: u32 = 10_000;
/// Most bytes one GetRecords call returns (Kinesis developer guide, "Quotas and limits": 10 MB).
const MAX_GET_RECORDS_BYTES: usize = 10 << 20;
/// How long a shard iterator lives (Kinesis API reference, GetShardIterator).
const ITERATOR_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// Most consumers registered on one stream, and most of them `CREATING` at once (Kinesis
/// developer guide, "Quotas and limits", RegisterStreamConsumer).
const MAX_CONSUMERS: usize = 20;
const MAX_CREATING_CONSUMERS: usize = 5;
/// A second SubscribeToShard for the same consumer and shard within this time of a successful
/// one is `ResourceInUseException`; after it, the new call takes over the subscription
/// (Kinesis API reference, SubscribeToShard).
const RESUBSCRIBE_WINDOW: Duration = Duration::from_secs(5);
/// Most open shards across all streams of the account (Kinesis developer guide, "Quotas and
/// limits": 500 shards per account in us-east-1 by default). Also keeps a mistaken huge shard
/// count from exhausting memory.
const SHARD_QUOTA: u64 = 500;

/// Which SubscribeToShard session a subscription is.
#[derive(Debug, Clone)]
pub(super) struct SubscriptionKey {
    pub(super) stream: StreamName,
    pub(super) generation: u64,
    pub(super) shard: usize,
    pub(super) consumer: ConsumerName,
    pub(super) consumer_arn: String,
    pub(super) id: u64,
}

/// What a subscription should do next.
#[derive(Debug)]
pub(super) enum SubscriptionPoll {
    /// Deliver `event`; read on from `next`; the shard ended with it.
    Event { event: SubscribeToShardEvent, next: usize, ended: bool },
    /// Nothing to deliver: wait for a change, or at the latest until `until` (a pending
    /// lifecycle change that may close the shard).
    Wait { until: Option<Instant> },
}

/// Everything the fake holds.
#[derive(Debug)]
pub(super) struct State {
    pub(super) fake: u64,
    pub(super) config: Config,
    pub(super) clock: Clock,
    pub(super) streams: BTreeMap<StreamName, StreamState>,
    pub(super) faults: FaultPlan,
    pub(super) counters: Counters,
    next_generation: u64,
    next_subscription: u64,
}

/// The stream called `name`, settled at `now`.
fn settled<'a>(
    streams: &'a mut BTreeMap<StreamName, StreamState>,
    name: &StreamName,
    now: Instant,
) -> Result<&'a mut StreamState, ApiError> {
    let stream = streams.get_mut(name).ok_or_else(|| stream_not_found(name))?;
    stream.settle(now);
    Ok(stream)
}

fn shard_of(stream: &StreamState, shard: &ShardId) -> Result<usize, ApiError> {
    stream.shard_index(shard).ok_or_else(|| shard_not_found(&stream.name, shard))
}

fn stream_arn(stream: &StreamName) -> String {
    format!("arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{stream}")
}

/// The stream an ARN names; only ARNs of this fake's account and region name one.
fn parse_stream_arn(arn: &str) -> Result<StreamName, ApiError> {
    let prefix = stream_arn(&StreamName::new("x").expect("valid name"));
    let prefix = &prefix[..prefix.len() - 1];
    match arn.strip_prefix(prefix) {
        Some(name) => StreamName::new(name)
            .map_err(|e| invalid_argument(format!("StreamARN {arn} is invalid: {e}"))),
        None if arn.starts_with("arn:") => Err(ApiError::from_code(
            "ResourceNotFoundException",
            format!("Stream {arn} under account {ACCOUNT} not found."),
        )),
        None => Err(validation(format!("StreamARN {arn:?} is not an ARN"))),
    }
}

/// The stream and consumer a consumer ARN (`<stream ARN>/consumer/<name>:<epoch seconds>`)
/// names.
fn parse_consumer_arn(arn: &str) -> Result<(StreamName, ConsumerName), ApiError> {
    let invalid = || validation(format!("ConsumerARN {arn:?} is not a consumer ARN"));
    let (stream_arn, tail) = arn.split_once("/consumer/").ok_or_else(invalid)?;
    let (name, _created) = tail.rsplit_once(':').ok_or_else(invalid)?;
    let consumer = ConsumerName::new(name).map_err(|_| invalid())?;
    Ok((parse_stream_arn(stream_arn)?, consumer))
}

/// Rejects a PutRecords request that breaks a request-wide limit, as AWS does (the whole
/// request fails; nothing is written).
fn check_put_request(entries: &[PutRecordsEntry], max_record_size: usize) -> Result<(), ApiError> {
    if entries.is_empty() {
        return Err(validation(
            "1 validation error detected: Value at 'records' failed to satisfy constraint: \
             Member must have length greater than or equal to 1",
        ));
    }
    if entries.len() > MAX_PUT_ENTRIES {
        return Err(validation(format!(
            "1 validation error detected: Value at 'records' failed to satisfy constraint: \
             Member must have length less than or equal to {MAX_PUT_ENTRIES} (got {})",
            entries.len()
        )));
    }
    if let Some((i, entry)) = entries.iter().enumerate().find(|(_, e)| e.size() > max_record_size) {
        return Err(invalid_argument(format!(
            "Record {i} has {} bytes of data and partition key, which exceeds the stream's max \
             record size of {max_record_size} bytes",
            entry.size()
        )));
    }
    let limit = if max_record_size > DEFAULT_MAX_RECORD_SIZE {
        MAX_PUT_BYTES_LARGE_RECORDS
    } else {
        MAX_PUT_BYTES
    };
    let total: usize = entries.iter().map(PutRecordsEntry::size).sum();
    if total > limit {
        return Err(invalid_argument(format!(
            "Records size exceeds {} MiB limit: the request holds {total} bytes of data and \
             partition keys",
            limit >> 20
        )));
    }
    Ok(())
}

impl State {
    pub(super) fn new(fake: u64, config: Config, clock: Clock) -> Self {
        Self {
            fake,
            config,
            clock,
            streams: BTreeMap::new(),
            faults: FaultPlan::default(),
            counters: Counters::default(),
            next_generation: 0,
            next_subscription: 0,
        }
    }

    pub(super) fn create_stream(
        &mut self,
        name: &StreamName,
        shard_count: u32,
        active_after: Duration,
        now: Instant,
    ) -> Result<(), ApiError> {
        // ShardCount is at least 1 (Kinesis API reference, CreateStream).
        if shard_count == 0 {
            return Err(validation(
                "1 validation error detected: Value '0' at 'shardCount' failed to satisfy \
                 constraint: Member must have value greater than or equal to 1",
            ));
        }
        if self.streams.contains_key(name) {
            return Err(in_use(format!("Stream {name} under account {ACCOUNT} already exists.")));
        }
        self.check_shard_quota(u64::from(shard_count))?;
        self.next_generation += 1;
        let mut stream = StreamState::new(
            name.clone(),
            stream_arn(name),
            self.next_generation,
            shard_count,
            now + active_after,
        );
        stream.settle(now);
        self.streams.insert(name.clone(), stream);
        Ok(())
    }

    pub(super) fn delete_stream(
        &mut self,
        name: &StreamName,
        now: Instant,
    ) -> Result<(), ApiError> {
        settled(&mut self.streams, name, now)?.require_active()?;
        self.streams.remove(name);
        Ok(())
    }

    pub(super) fn describe_stream_summary(
        &mut self,
        name: &StreamName,
        now: Instant,
    ) -> Result<StreamSummary, ApiError> {
        let stream = settled(&mut self.streams, name, now)?;
        Ok(StreamSummary {
            name: stream.name.clone(),
            arn: stream.arn.clone(),
            status: stream.status(),
            open_shard_count: stream.open_shard_count(),
            retention: DEFAULT_RETENTION,
        })
    }

    pub(super) fn list_shards(
        &mut self,
        name: &StreamName,
        now: Instant,
    ) -> Result<Vec<Shard>, ApiError> {
        let stream = settled(&mut self.streams, name, now)?;
        stream.require_usable()?;
        Ok((0..stream.shards.len()).map(|i| stream.describe_shard(i)).collect())
    }

    pub(super) fn put_records(
        &mut self,
        name: &StreamName,
        entries: Vec<PutRecordsEntry>,
        now: Instant,
    ) -> Result<Vec<PutRecordsOutcome>, ApiError> {
        self.counters.count_put_entries(entries.len());
        check_put_request(&entries, self.config.max_record_size)?;
        let stream = settled(&mut self.streams, name, now)?;
        stream.require_usable()?;
        let arrival = self.clock.system_time(now);
        let mut outcomes = Vec::with_capacity(entries.len());
        for entry in entries {
            let key = entry
                .explicit_hash_key
                .unwrap_or_else(|| HashKey::from_partition_key(&entry.partition_key));
            let shard = stream.owner_of(key);
            let failure = match self.faults.take_entry() {
                Some(EntryFault::Throttle) => {
                    Some(entry_throttled(&stream.name, &stream.shards[shard].id))
                }
                Some(EntryFault::Error(error)) => Some(error),
                None => self.faults.write_limit.and_then(|limit| {
                    let budget = stream.shards[shard]
                        .write_budget
                        .get_or_insert_with(|| WriteBudget::full(limit, now));
                    let taken = budget.try_take(limit, now, entry.size());
                    (!taken).then(|| entry_throttled(&stream.name, &stream.shards[shard].id))
                }),
            };
            self.counters.count_entry(failure.is_none());
            outcomes.push(match failure {
                Some(error) => PutRecordsOutcome::Failed(error),
                None => {
                    let key = entry.partition_key.into_string();
                    let sequence_number = stream.append(shard, key, entry.data, arrival);
                    let shard_id = stream.shards[shard].id.clone();
                    PutRecordsOutcome::Written { shard_id, sequence_number }
                }
            });
        }
        Ok(outcomes)
    }

    pub(super) fn get_shard_iterator(
        &mut self,
        name: &StreamName,
        shard: &ShardId,
        position: &ShardIteratorPosition,
        now: Instant,
    ) -> Result<ShardIterator, ApiError> {
        let stream = settled(&mut self.streams, name, now)?;
        stream.require_usable()?;
        let index = shard_of(stream, shard)?;
        let position = stream.position(index, position, self.clock.system_time(now))?;
        Ok(IteratorToken {
            fake: self.fake,
            generation: stream.generation,
            shard: index,
            position,
            issued: self.clock.since_start(now),
            stream: stream.name.clone(),
        }
        .encode())
    }

    pub(super) fn get_records(
        &mut self,
        iterator: &ShardIterator,
        limit: Option<u32>,
        now: Instant,
    ) -> Result<GetRecordsOutput, ApiError> {
        let limit = limit.unwrap_or(MAX_GET_RECORDS);
        if limit == 0 || limit > MAX_GET_RECORDS {
            return Err(invalid_argument(format!(
                "Limit {limit} is out of range: GetRecords takes 1 to {MAX_GET_RECORDS} records"
            )));
        }
        let token = IteratorToken::decode(iterator)
            .filter(|t| t.fake == self.fake)
            .ok_or_else(|| invalid_argument("Invalid ShardIterator."))?;
        let stream = settled(&mut self.streams, &token.stream, now)
            .ok()
            .filter(|s| s.generation == token.generation)
            .ok_or_else(|| stream_not_found(&token.stream))?;
        let shard = stream
            .shards
            .get(token.shard)
            .ok_or_else(|| invalid_argument("Invalid ShardIterator."))?;
        self.counters.count_get_records(&stream.name, &shard.id);
        let age = self.clock.since_start(now).saturating_sub(token.issued);
        if age > ITERATOR_LIFETIME {
            return Err(expired_iterator(format!(
                "Iterator expired. The iterator was created {} ms ago, which is further in the \
                 past than the tolerated delay of {} ms.",
                age.as_millis(),
                ITERATOR_LIFETIME.as_millis()
            )));
        }
        let shard = token.shard;
        let batch = stream.read(
            shard,
            token.position,
            limit as usize,
            MAX_GET_RECORDS_BYTES,
            self.clock.system_time(now),
        );
        let issued = self.clock.since_start(now);
        let next_iterator = (!batch.shard_ended)
            .then(|| IteratorToken { position: batch.next, issued, ..token }.encode());
        let child_shards = if batch.shard_ended { stream.child_shards(shard) } else { Vec::new() };
        Ok(GetRecordsOutput {
            records: batch.records,
            next_iterator,
            millis_behind_latest: Some(batch.millis_behind),
            child_shards,
        })
    }

    pub(super) fn split_shard(
        &mut self,
        name: &StreamName,
        shard: &ShardId,
        at: HashKey,
        now: Instant,
    ) -> Result<(), ApiError> {
        let update_delay = self.config.update_delay;
        self.check_shard_quota(1)?;
        let stream = settled(&mut self.streams, name, now)?;
        stream.require_active()?;
        let index = shard_of(stream, shard)?;
        stream.check_split(index, at)?;
        stream.begin_update(Reshard::Split { shard: index, at }, now + update_delay, now);
        Ok(())
    }

    pub(super) fn merge_shards(
        &mut self,
        name: &StreamName,
        shard: &ShardId,
        adjacent: &ShardId,
        now: Instant,
    ) -> Result<(), ApiError> {
        let update_delay = self.config.update_delay;
        let stream = settled(&mut self.streams, name, now)?;
        stream.require_active()?;
        let (a, b) = (shard_of(stream, shard)?, shard_of(stream, adjacent)?);
        stream.check_merge(a, b)?;
        stream.begin_update(Reshard::Merge { shard: a, adjacent: b }, now + update_delay, now);
        Ok(())
    }

    pub(super) fn update_shard_count(
        &mut self,
        name: &StreamName,
        target: u32,
        now: Instant,
    ) -> Result<(), ApiError> {
        let update_delay = self.config.update_delay;
        let open = settled(&mut self.streams, name, now)?.open_shard_count();
        self.check_shard_quota(u64::from(target).saturating_sub(u64::from(open)))?;
        let stream = settled(&mut self.streams, name, now)?;
        stream.require_active()?;
        // TargetShardCount is at least 1 (Kinesis API reference, UpdateShardCount).
        if target == 0 {
            return Err(validation(
                "1 validation error detected: Value '0' at 'targetShardCount' failed to satisfy \
                 constraint: Member must have value greater than or equal to 1",
            ));
        }
        // At most double and at least half the open shard count (Kinesis API reference,
        // UpdateShardCount).
        if u64::from(target) > 2 * u64::from(open) {
            return Err(limit_exceeded(format!(
                "UpdateShardCount cannot scale up over double your current open shard count. \
                 Current open shard count: {open}, Target shard count: {target}"
            )));
        }
        if 2 * u64::from(target) < u64::from(open) {
            return Err(limit_exceeded(format!(
                "UpdateShardCount cannot scale down below half your current open shard count. \
                 Current open shard count: {open}, Target shard count: {target}"
            )));
        }
        stream.begin_update(Reshard::Uniform { target }, now + update_delay, now);
        Ok(())
    }

    pub(super) fn register_consumer(
        &mut self,
        stream_arn: &str,
        name: &ConsumerName,
        now: Instant,
    ) -> Result<ConsumerDescription, ApiError> {
        let active_after = self.config.consumer_delay;
        let created = self.clock.system_time(now);
        let stream = settled(&mut self.streams, &parse_stream_arn(stream_arn)?, now)?;
        stream.require_usable()?;
        if stream.consumers.contains_key(name) {
            return Err(in_use(format!(
                "Consumer {name} under stream {} already exists for account {ACCOUNT}.",
                stream.name
            )));
        }
        if stream.consumers.len() >= MAX_CONSUMERS {
            return Err(limit_exceeded(format!(
                "Stream {} already has {MAX_CONSUMERS} registered consumers, the most allowed.",
                stream.name
            )));
        }
        let creating =
            stream.consumers.values().filter(|c| c.status(now) == ConsumerStatus::Creating).count();
        if creating >= MAX_CREATING_CONSUMERS {
            return Err(limit_exceeded(format!(
                "Stream {} already has {MAX_CREATING_CONSUMERS} consumers in CREATING status.",
                stream.name
            )));
        }
        let epoch_seconds =
            created.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
        let arn = format!("{}/consumer/{name}:{epoch_seconds}", stream.arn);
        let consumer = super::stream::ConsumerState { arn, active_at: now + active_after };
        let description = ConsumerDescription {
            name: name.clone(),
            arn: consumer.arn.clone(),
            status: consumer.status(now),
        };
        stream.consumers.insert(name.clone(), consumer);
        Ok(description)
    }

    pub(super) fn describe_consumer(
        &mut self,
        stream_arn: &str,
        name: &ConsumerName,
        now: Instant,
    ) -> Result<ConsumerDescription, ApiError> {
        let stream = settled(&mut self.streams, &parse_stream_arn(stream_arn)?, now)?;
        let consumer = stream
            .consumers
            .get(name)
            .ok_or_else(|| consumer_not_found(&format!("{stream_arn}/consumer/{name}")))?;
        Ok(ConsumerDescription {
            name: name.clone(),
            arn: consumer.arn.clone(),
            status: consumer.status(now),
        })
    }

    /// Removes the consumer at once (AWS shows it `DELETING` for a while first) and ends its
    /// subscriptions.
    pub(super) fn deregister_consumer(
        &mut self,
        stream_arn: &str,
        name: &ConsumerName,
        now: Instant,
    ) -> Result<(), ApiError> {
        let stream = settled(&mut self.streams, &parse_stream_arn(stream_arn)?, now)?;
        if stream.consumers.remove(name).is_none() {
            return Err(consumer_not_found(&format!("{stream_arn}/consumer/{name}")));
        }
        stream.subscriptions.retain(|(consumer, _), _| consumer != name);
        Ok(())
    }

    /// Opens a SubscribeToShard session; returns it and the record index it starts at.
    pub(super) fn subscribe(
        &mut self,
        consumer_arn: &str,
        shard: &ShardId,
        position: &ShardIteratorPosition,
        now: Instant,
    ) -> Result<(SubscriptionKey, usize), ApiError> {
        let (stream_name, consumer) = parse_consumer_arn(consumer_arn)?;
        let stream = settled(&mut self.streams, &stream_name, now)
            .map_err(|_| consumer_not_found(consumer_arn))?;
        let registered = stream
            .consumers
            .get(&consumer)
            .filter(|c| c.arn == consumer_arn)
            .ok_or_else(|| consumer_not_found(consumer_arn))?;
        if registered.status(now) != ConsumerStatus::Active {
            return Err(in_use(format!("Consumer {consumer_arn} is not in ACTIVE status.")));
        }
        let index = shard_of(stream, shard)?;
        let start = stream.position(index, position, self.clock.system_time(now))?;
        let lease_key = (consumer.clone(), index);
        if let Some(lease) = stream.subscriptions.get(&lease_key)
            && now.saturating_duration_since(lease.started) < RESUBSCRIBE_WINDOW
        {
            return Err(in_use(format!(
                "Another active subscription exists for consumer {consumer_arn} on shard \
                 {shard}; a new one may take over {} seconds after the last successful \
                 SubscribeToShard.",
                RESUBSCRIBE_WINDOW.as_secs()
            )));
        }
        self.next_subscription += 1;
        let id = self.next_subscription;
        stream.subscriptions.insert(lease_key, SubscriptionLease { id, started: now });
        let key = SubscriptionKey {
            stream: stream_name,
            generation: stream.generation,
            shard: index,
            consumer,
            consumer_arn: consumer_arn.to_owned(),
            id,
        };
        Ok((key, start))
    }

    /// The next step of subscription `key`, which has read up to `position`.
    pub(super) fn poll_subscription(
        &mut self,
        key: &SubscriptionKey,
        position: usize,
        now: Instant,
    ) -> Result<SubscriptionPoll, ApiError> {
        let system_now = self.clock.system_time(now);
        let stream = settled(&mut self.streams, &key.stream, now)
            .ok()
            .filter(|s| s.generation == key.generation)
            .ok_or_else(|| stream_not_found(&key.stream))?;
        if stream.consumers.get(&key.consumer).is_none_or(|c| c.arn != key.consumer_arn) {
            return Err(consumer_not_found(&key.consumer_arn));
        }
        let lease = stream.subscriptions.get(&(key.consumer.clone(), key.shard));
        if lease.map(|l| l.id) != Some(key.id) {
            return Err(in_use(format!(
                "The subscription of consumer {} to shard {} was taken over by a newer \
                 SubscribeToShard call.",
                key.consumer_arn, stream.shards[key.shard].id
            )));
        }
        let batch = stream.read(
            key.shard,
            position,
            MAX_GET_RECORDS as usize,
            MAX_GET_RECORDS_BYTES,
            system_now,
        );
        if batch.records.is_empty() && !batch.shard_ended {
            return Ok(SubscriptionPoll::Wait { until: stream.pending_until() });
        }
        let continuation_sequence_number = if batch.shard_ended {
            None
        } else {
            batch.records.last().map(|r| r.sequence_number.clone())
        };
        let child_shards =
            if batch.shard_ended { stream.child_shards(key.shard) } else { Vec::new() };
        let event = SubscribeToShardEvent {
            records: batch.records,
            continuation_sequence_number,
            millis_behind_latest: Some(batch.millis_behind),
            child_shards,
        };
        Ok(SubscriptionPoll::Event { event, next: batch.next, ended: batch.shard_ended })
    }

    /// Ends subscription `key`, so that the consumer may subscribe to the shard again.
    pub(super) fn release_subscription(&mut self, key: &SubscriptionKey) {
        if let Some(stream) = self.streams.get_mut(&key.stream) {
            let lease_key = (key.consumer.clone(), key.shard);
            if stream.generation == key.generation
                && stream.subscriptions.get(&lease_key).is_some_and(|l| l.id == key.id)
            {
                stream.subscriptions.remove(&lease_key);
            }
        }
    }

    /// Every record of one shard, oldest first.
    pub(super) fn shard_records(
        &mut self,
        name: &StreamName,
        shard: &ShardId,
        now: Instant,
    ) -> Result<Vec<KinesisRecord>, ApiError> {
        let stream = settled(&mut self.streams, name, now)?;
        let index = shard_of(stream, shard)?;
        Ok(stream.shards[index].records.iter().map(|r| r.record.clone()).collect())
    }

    /// Every record of a stream with its shard, in the order they were written.
    pub(super) fn stream_records(
        &mut self,
        name: &StreamName,
        now: Instant,
    ) -> Result<Vec<(ShardId, KinesisRecord)>, ApiError> {
        let stream = settled(&mut self.streams, name, now)?;
        let mut all: Vec<(u64, ShardId, KinesisRecord)> = stream
            .shards
            .iter()
            .flat_map(|s| s.records.iter().map(|r| (r.counter, s.id.clone(), r.record.clone())))
            .collect();
        all.sort_by_key(|(counter, _, _)| *counter);
        Ok(all.into_iter().map(|(_, shard, record)| (shard, record)).collect())
    }

    /// `LimitExceededException` if `more` open shards would pass the account's shard quota.
    fn check_shard_quota(&self, more: u64) -> Result<(), ApiError> {
        let open: u64 = self.streams.values().map(|s| u64::from(s.open_shard_count())).sum();
        if open + more > SHARD_QUOTA {
            return Err(limit_exceeded(format!(
                "This request would exceed the shard limit for the account {ACCOUNT}: \
                 {open} open shards plus {more} more exceed {SHARD_QUOTA}."
            )));
        }
        Ok(())
    }

    /// Forgets every shard's write budget, so that a new quota starts from a full bucket.
    pub(super) fn reset_write_budgets(&mut self) {
        for stream in self.streams.values_mut() {
            for shard in &mut stream.shards {
                shard.write_budget = None;
            }
        }
    }
}
