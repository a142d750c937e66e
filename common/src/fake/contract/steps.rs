//! The steps the contract checks are made of: creating a stream and waiting for it, writing
//! entries that must succeed, reading with retries on empty answers, and assertions on shard
//! layouts and errors. All of them tolerate real-service timing (see the parent module).

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::{
    ApiError, ApiErrorKind, ChildShard, HashKey, HashKeyRange, KinesisApi, KinesisRecord,
    PartitionKey, PutRecordsEntry, PutRecordsOutcome, SequenceNumber, Shard, ShardId,
    ShardIterator, ShardIteratorPosition, StreamName, StreamStatus, StreamSummary,
};

/// Pause between polls of a state that takes time to change.
pub(super) const POLL: Duration = Duration::from_millis(100);
/// The longest a check waits for a stream or consumer to change state or for records to show.
pub(super) const PATIENCE: Duration = Duration::from_secs(60);

/// An entry with a partition key and data, no explicit hash key.
pub(super) fn entry(key: &str, data: &[u8]) -> PutRecordsEntry {
    PutRecordsEntry {
        partition_key: PartitionKey::new(key).expect("valid partition key"),
        explicit_hash_key: None,
        data: Bytes::copy_from_slice(data),
    }
}

pub(super) fn sequences(records: &[KinesisRecord]) -> Vec<SequenceNumber> {
    records.iter().map(|r| r.sequence_number.clone()).collect()
}

/// A new starting hash key that splits `range` in two non-empty halves.
pub(super) fn split_point(range: HashKeyRange) -> HashKey {
    let (start, end) = (range.start().0, range.end().0);
    HashKey(start + (end - start) / 2 + 1)
}

pub(super) async fn summary(api: &dyn KinesisApi, stream: &StreamName) -> StreamSummary {
    api.describe_stream_summary(stream)
        .await
        .unwrap_or_else(|e| panic!("DescribeStreamSummary {stream}: {e}"))
}

/// Polls DescribeStreamSummary until the stream is `ACTIVE`.
pub(super) async fn wait_active(api: &dyn KinesisApi, stream: &StreamName) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match api.describe_stream_summary(stream).await {
            Ok(s) if s.status == StreamStatus::Active => return,
            Ok(_) => {}
            // An eventually consistent service may not know a stream it just created.
            Err(e) if e.kind() == ApiErrorKind::NotFound => {}
            Err(e) => panic!("DescribeStreamSummary {stream} while waiting for ACTIVE: {e}"),
        }
        assert!(Instant::now() < deadline, "stream {stream} not ACTIVE within {PATIENCE:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// Creates the stream, waits until it is `ACTIVE`, and returns its shards by hash range.
pub(super) async fn create(api: &dyn KinesisApi, stream: &StreamName, shards: u32) -> Vec<Shard> {
    api.create_stream(stream, shards)
        .await
        .unwrap_or_else(|e| panic!("CreateStream {stream}: {e}"));
    wait_active(api, stream).await;
    let mut list = api.list_shards(stream).await.unwrap_or_else(|e| panic!("ListShards: {e}"));
    list.sort_by_key(|s| s.hash_range.start());
    assert_eq!(list.len(), shards as usize, "a new stream has the shards it was created with");
    list
}

/// Deletes the stream once no update is running.
pub(super) async fn finish(api: &dyn KinesisApi, stream: &StreamName) {
    wait_active(api, stream).await;
    api.delete_stream(stream).await.unwrap_or_else(|e| panic!("DeleteStream {stream}: {e}"));
}

/// PutRecords that must write every entry; returns each entry's shard and sequence number.
pub(super) async fn put_all(
    api: &dyn KinesisApi,
    stream: &StreamName,
    entries: &[PutRecordsEntry],
) -> Vec<(ShardId, SequenceNumber)> {
    let outcomes = api
        .put_records(stream, entries.to_vec())
        .await
        .unwrap_or_else(|e| panic!("PutRecords to {stream}: {e}"));
    assert_eq!(outcomes.len(), entries.len(), "PutRecords answers once per entry");
    outcomes
        .into_iter()
        .map(|o| match o {
            PutRecordsOutcome::Written { shard_id, sequence_number } => (shard_id, sequence_number),
            PutRecordsOutcome::Failed(e) => panic!("PutRecords entry failed: {e}"),
        })
        .collect()
}

pub(super) async fn iterator(
    api: &dyn KinesisApi,
    stream: &StreamName,
    shard: &ShardId,
    position: ShardIteratorPosition,
) -> ShardIterator {
    api.get_shard_iterator(stream, shard, position.clone())
        .await
        .unwrap_or_else(|e| panic!("GetShardIterator {shard} {position:?}: {e}"))
}

/// One GetRecords call; sleeps after an empty answer so that polling loops do not spin.
pub(super) async fn read_page(
    api: &dyn KinesisApi,
    iterator: ShardIterator,
) -> (Vec<KinesisRecord>, Option<ShardIterator>) {
    let page = api.get_records(&iterator, None).await.unwrap_or_else(|e| panic!("GetRecords: {e}"));
    if page.records.is_empty() && page.next_iterator.is_some() {
        tokio::time::sleep(POLL).await;
    }
    (page.records, page.next_iterator)
}

/// Reads from `iterator` until at least `count` records came back (AWS may answer empty for a
/// while even when records exist) or the shard ends.
pub(super) async fn read_at_least(
    api: &dyn KinesisApi,
    iterator: ShardIterator,
    count: usize,
) -> Vec<KinesisRecord> {
    let deadline = Instant::now() + PATIENCE;
    let mut records = Vec::new();
    let mut iterator = Some(iterator);
    while records.len() < count {
        let Some(current) = iterator.take() else { break };
        let (page, next) = read_page(api, current).await;
        records.extend(page);
        iterator = next;
        assert!(
            Instant::now() < deadline,
            "only {} of {count} records showed within {PATIENCE:?}",
            records.len()
        );
    }
    records
}

/// Reads a closed shard from TRIM_HORIZON to its end; returns its records and the children
/// reported with the end.
pub(super) async fn read_to_end(
    api: &dyn KinesisApi,
    stream: &StreamName,
    shard: &ShardId,
) -> (Vec<KinesisRecord>, Vec<ChildShard>) {
    let deadline = Instant::now() + PATIENCE;
    let mut iterator = iterator(api, stream, shard, ShardIteratorPosition::TrimHorizon).await;
    let mut records = Vec::new();
    loop {
        let page =
            api.get_records(&iterator, None).await.unwrap_or_else(|e| panic!("GetRecords: {e}"));
        records.extend(page.records.iter().cloned());
        match page.next_iterator {
            None => return (records, page.child_shards),
            Some(next) => {
                assert!(
                    Instant::now() < deadline,
                    "closed shard {shard} did not end in {PATIENCE:?}"
                );
                if page.records.is_empty() {
                    tokio::time::sleep(POLL).await;
                }
                iterator = next;
            }
        }
    }
}

/// The open shard whose range holds `key`.
pub(super) fn owner(shards: &[Shard], key: HashKey) -> &Shard {
    shards
        .iter()
        .find(|s| s.is_open() && s.hash_range.contains(key))
        .unwrap_or_else(|| panic!("no open shard owns hash key {key:?}: {shards:#?}"))
}

pub(super) fn find<'a>(shards: &'a [Shard], id: &ShardId) -> &'a Shard {
    shards.iter().find(|s| &s.id == id).unwrap_or_else(|| panic!("ListShards lost {id}"))
}

/// The shards whose parent is `parent`, by hash range.
pub(super) fn children_of<'a>(shards: &'a [Shard], parent: &ShardId) -> Vec<&'a Shard> {
    let mut children: Vec<&Shard> =
        shards.iter().filter(|s| s.parent.as_ref() == Some(parent)).collect();
    children.sort_by_key(|s| s.hash_range.start());
    children
}

/// Open shards that tile the key space: from 0 to 2^128-1, each starting after the last ends.
pub(super) fn assert_covers_key_space(shards: &[Shard]) {
    let mut open: Vec<&Shard> = shards.iter().filter(|s| s.is_open()).collect();
    open.sort_by_key(|s| s.hash_range.start());
    assert_eq!(open.first().map(|s| s.hash_range.start()), Some(HashKey::MIN), "ranges start at 0");
    assert_eq!(
        open.last().map(|s| s.hash_range.end()),
        Some(HashKey::MAX),
        "ranges end at 2^128-1"
    );
    for pair in open.windows(2) {
        assert_eq!(
            pair[0].hash_range.end().0.checked_add(1),
            Some(pair[1].hash_range.start().0),
            "open shard ranges are contiguous: {:?} then {:?}",
            pair[0].hash_range,
            pair[1].hash_range
        );
    }
}

pub(super) fn assert_kind<T: std::fmt::Debug>(
    result: Result<T, ApiError>,
    kind: ApiErrorKind,
    what: &str,
) {
    match result {
        Err(e) => assert_eq!(e.kind(), kind, "{what}: expected {kind:?}, got {e}"),
        Ok(v) => panic!("{what}: expected {kind:?}, got success {v:?}"),
    }
}

pub(super) fn assert_not_found<T: std::fmt::Debug>(result: Result<T, ApiError>, what: &str) {
    assert_kind(result, ApiErrorKind::NotFound, &format!("{what} on a stream that does not exist"));
}
