//! FakeKinesis's resharding beyond the contract suite: validation of SplitShard and
//! MergeShards, the `UPDATING` period (busy for other updates, parent still taking writes),
//! and UpdateShardCount's uniform result with a lineage that a consumer can follow in order.

#![cfg(feature = "test-util")]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use kinesis_common::fake::FakeKinesis;
use kinesis_common::{
    ApiErrorKind, HashKey, KinesisApi, PartitionKey, PutRecordsEntry, PutRecordsOutcome, Shard,
    ShardId, ShardIteratorPosition, StreamName, StreamStatus,
};

fn stream() -> StreamName {
    StreamName::new("reshard").unwrap()
}

fn entries(prefix: &str, n: usize) -> Vec<PutRecordsEntry> {
    (0..n)
        .map(|i| PutRecordsEntry {
            partition_key: PartitionKey::new(format!("{prefix}-{i}")).unwrap(),
            explicit_hash_key: None,
            data: Bytes::from(format!("{prefix}-{i}")),
        })
        .collect()
}

async fn setup(shards: u32, update_delay: Duration) -> (FakeKinesis, StreamName, Vec<Shard>) {
    let fake = FakeKinesis::builder().update_delay(update_delay).build();
    let s = stream();
    fake.create_active_stream(&s, shards).unwrap();
    let list = fake.list_shards(&s).await.unwrap();
    (fake, s, list)
}

async fn wait_active(fake: &FakeKinesis, s: &StreamName) {
    while fake.describe_stream_summary(s).await.unwrap().status != StreamStatus::Active {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn split_needs_a_key_strictly_inside_an_open_shard() {
    let (fake, s, shards) = setup(2, Duration::ZERO).await;
    let shard = &shards[0];
    let (start, end) = (shard.hash_range.start(), shard.hash_range.end());
    for bad in [start, HashKey(end.0 + 1), HashKey::MAX] {
        let err = fake.split_shard(&s, &shard.id, bad).await.unwrap_err();
        assert_eq!(err.kind(), ApiErrorKind::InvalidArgument, "split at {bad:?}");
    }
    let missing = ShardId::new("shardId-000000000099").unwrap();
    let err = fake.split_shard(&s, &missing, HashKey(1)).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::NotFound);
    fake.split_shard(&s, &shard.id, end).await.expect("the end itself leaves a one-key child");
    let err = fake.split_shard(&s, &shard.id, HashKey(start.0 + 1)).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::InvalidArgument, "a closed shard cannot split again");
    assert!(err.message().contains("already been merged or split"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn merge_needs_two_open_adjacent_shards() {
    let (fake, s, shards) = setup(3, Duration::ZERO).await;
    for (a, b) in [(0, 2), (1, 1)] {
        let err = fake.merge_shards(&s, &shards[a].id, &shards[b].id).await.unwrap_err();
        assert_eq!(err.kind(), ApiErrorKind::InvalidArgument, "merge {a} and {b}");
    }
    // Either order of two adjacent shards merges; the child's parents follow the call.
    fake.merge_shards(&s, &shards[2].id, &shards[1].id).await.unwrap();
    let child = fake.list_shards(&s).await.unwrap().pop().unwrap();
    assert_eq!(child.parent.as_ref(), Some(&shards[2].id));
    assert_eq!(child.adjacent_parent.as_ref(), Some(&shards[1].id));
    assert_eq!(child.hash_range.start(), shards[1].hash_range.start());
    let err = fake.merge_shards(&s, &shards[0].id, &shards[1].id).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::InvalidArgument, "a merged shard cannot merge again");
}

#[tokio::test(start_paused = true)]
async fn a_reshard_takes_effect_when_updating_ends_and_blocks_other_updates() {
    let (fake, s, shards) = setup(2, Duration::from_millis(500)).await;
    let parent = &shards[0];
    fake.split_shard(&s, &parent.id, HashKey(1 << 120)).await.unwrap();
    assert_eq!(fake.describe_stream_summary(&s).await.unwrap().status, StreamStatus::Updating);
    for err in [
        fake.split_shard(&s, &shards[1].id, HashKey(u128::MAX - 5)).await.unwrap_err(),
        fake.merge_shards(&s, &shards[0].id, &shards[1].id).await.unwrap_err(),
        fake.update_shard_count(&s, 3).await.unwrap_err(),
        fake.delete_stream(&s).await.unwrap_err(),
    ] {
        assert_eq!(err.kind(), ApiErrorKind::ResourceInUse, "{err}");
        assert!(err.message().contains("UPDATING"), "{err}");
    }
    // While UPDATING, the parent is still open and takes the writes.
    let mut to_parent = entries("during", 1);
    to_parent[0].explicit_hash_key = Some(HashKey(0));
    let outcome = fake.put_records(&s, to_parent.clone()).await.unwrap().remove(0);
    assert!(
        matches!(&outcome, PutRecordsOutcome::Written { shard_id, .. } if shard_id == &parent.id)
    );
    assert_eq!(fake.list_shards(&s).await.unwrap().len(), 2);

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.describe_stream_summary(&s).await.unwrap().status, StreamStatus::Active);
    let after = fake.list_shards(&s).await.unwrap();
    assert_eq!(after.len(), 4);
    let outcome = fake.put_records(&s, to_parent).await.unwrap().remove(0);
    assert!(
        matches!(&outcome, PutRecordsOutcome::Written { shard_id, .. } if shard_id == &after[2].id)
    );
}

#[tokio::test(start_paused = true)]
async fn children_start_after_their_parents_end() {
    let (fake, s, shards) = setup(2, Duration::ZERO).await;
    fake.put_records(&s, entries("x", 20)).await.unwrap();
    fake.merge_shards(&s, &shards[0].id, &shards[1].id).await.unwrap();
    let after = fake.list_shards(&s).await.unwrap();
    let child = &after[2];
    for parent in &after[..2] {
        let ending = parent.ending_sequence.clone().unwrap();
        assert!(child.starting_sequence > ending, "child starts after {} ends", parent.id);
        for record in fake.records(&s, &parent.id).unwrap() {
            assert!(record.sequence_number < ending, "a parent's records precede its end");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn update_shard_count_scales_within_double_and_half() {
    let (fake, s, _) = setup(4, Duration::ZERO).await;
    for target in [9, 1, 0] {
        let err = fake.update_shard_count(&s, target).await.unwrap_err();
        let expected =
            if target == 0 { ApiErrorKind::InvalidArgument } else { ApiErrorKind::Throttled };
        assert_eq!(err.kind(), expected, "target {target}: {err}");
    }
    let err = fake.update_shard_count(&s, 9).await.unwrap_err();
    assert_eq!(err.code(), Some("LimitExceededException"));
    fake.update_shard_count(&s, 8).await.unwrap();
    fake.update_shard_count(&s, 4).await.unwrap();
    assert_eq!(fake.describe_stream_summary(&s).await.unwrap().open_shard_count, 4);
}

/// Reads every shard to its end (or to its tip, if open) in an order that respects lineage:
/// a shard only after all of its parents. Returns the data in read order per partition key.
async fn read_in_lineage_order(
    fake: &FakeKinesis,
    s: &StreamName,
) -> BTreeMap<String, Vec<String>> {
    let shards = fake.list_shards(s).await.unwrap();
    let mut done: BTreeSet<ShardId> = BTreeSet::new();
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    while done.len() < shards.len() {
        let ready = shards
            .iter()
            .find(|sh| !done.contains(&sh.id) && sh.parents().all(|p| done.contains(p)))
            .expect("lineage has no cycles and no missing parents");
        let mut iterator = fake
            .get_shard_iterator(s, &ready.id, ShardIteratorPosition::TrimHorizon)
            .await
            .unwrap();
        loop {
            let page = fake.get_records(&iterator, None).await.unwrap();
            for r in &page.records {
                by_key
                    .entry(r.partition_key.clone())
                    .or_default()
                    .push(String::from_utf8(r.data.to_vec()).unwrap());
            }
            match page.next_iterator {
                Some(next) if !page.records.is_empty() => iterator = next,
                Some(_) => break,
                None => {
                    let children: BTreeSet<ShardId> =
                        page.child_shards.iter().map(|c| c.shard_id.clone()).collect();
                    let listed: BTreeSet<ShardId> = shards
                        .iter()
                        .filter(|c| c.parents().any(|p| p == &ready.id))
                        .map(|c| c.id.clone())
                        .collect();
                    assert_eq!(children, listed, "the end of {} names its children", ready.id);
                    break;
                }
            }
        }
        done.insert(ready.id.clone());
    }
    by_key
}

#[tokio::test(start_paused = true)]
async fn update_shard_count_ends_uniform_and_keeps_per_key_order_through_lineage() {
    for (from, to) in [(2, 3), (3, 2), (5, 3), (4, 8), (3, 5)] {
        let (fake, s, _) = setup(from, Duration::from_millis(200)).await;
        // The same keys before and after every change: order per key must hold across them.
        let keys: Vec<PutRecordsEntry> = entries("key", 40);
        let stamp = |round: usize| -> Vec<PutRecordsEntry> {
            keys.iter()
                .map(|e| PutRecordsEntry {
                    data: Bytes::from(format!("round-{round}")),
                    ..e.clone()
                })
                .collect()
        };
        fake.put_records(&s, stamp(0)).await.unwrap();
        fake.update_shard_count(&s, to).await.unwrap();
        fake.put_records(&s, stamp(1)).await.unwrap();
        wait_active(&fake, &s).await;
        fake.put_records(&s, stamp(2)).await.unwrap();

        let summary = fake.describe_stream_summary(&s).await.unwrap();
        assert_eq!(summary.open_shard_count, to, "{from} -> {to}");
        let mut open: Vec<Shard> =
            fake.list_shards(&s).await.unwrap().into_iter().filter(Shard::is_open).collect();
        open.sort_by_key(|sh| sh.hash_range.start());
        let reference = FakeKinesis::new();
        let fresh = StreamName::new("fresh").unwrap();
        reference.create_active_stream(&fresh, to).unwrap();
        let even: Vec<_> = reference
            .list_shards(&fresh)
            .await
            .unwrap()
            .into_iter()
            .map(|sh| sh.hash_range)
            .collect();
        let ranges: Vec<_> = open.iter().map(|sh| sh.hash_range).collect();
        assert_eq!(ranges, even, "{from} -> {to} ends with the ranges of a new {to}-shard stream");

        let by_key = read_in_lineage_order(&fake, &s).await;
        assert_eq!(by_key.len(), 40);
        for (key, rounds) in by_key {
            assert_eq!(rounds, ["round-0", "round-1", "round-2"], "{from} -> {to}, key {key}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn closed_shards_keep_their_records_for_readers() {
    let (fake, s, shards) = setup(1, Duration::ZERO).await;
    fake.put_records(&s, entries("before", 5)).await.unwrap();
    fake.split_shard(&s, &shards[0].id, HashKey(1 << 127)).await.unwrap();
    fake.put_records(&s, entries("after", 5)).await.unwrap();
    assert_eq!(fake.records(&s, &shards[0].id).unwrap().len(), 5);
    assert_eq!(fake.stream_records(&s).unwrap().len(), 10);
}
