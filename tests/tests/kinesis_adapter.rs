//! The aws-sdk-kinesis adapter against the substrate's Kinesis engine: what goes in through
//! PutRecords comes out of GetRecords, resharding shows up in ListShards with its lineage, and
//! service errors arrive as the right `ApiErrorKind`.
//!
//! Tests whose names contain `smoke` also run against LocalStack 4.7 (`cargo xtask test`).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kinesis_common::{
    ApiErrorKind, HashKey, KinesisApi, PartitionKey, PutRecordsEntry, PutRecordsOutcome,
    SequenceNumber, ShardId, ShardIteratorPosition, StreamName,
};
use kinesis_integration_tests::{create_stream, kinesis, open_shards, unique_stream, wait_active};

fn entry(key: &str, data: &str) -> PutRecordsEntry {
    PutRecordsEntry {
        partition_key: PartitionKey::new(key).unwrap(),
        explicit_hash_key: None,
        data: Bytes::from(data.to_owned()),
    }
}

/// Reads a shard from TRIM_HORIZON until a read returns nothing (open shard) or the shard ends.
async fn read_shard(
    api: &dyn KinesisApi,
    stream: &StreamName,
    shard: &ShardId,
) -> Vec<(SequenceNumber, String, Bytes)> {
    let mut iterator =
        api.get_shard_iterator(stream, shard, ShardIteratorPosition::TrimHorizon).await.unwrap();
    let mut out = Vec::new();
    loop {
        let page = api.get_records(&iterator, Some(1000)).await.unwrap();
        let empty = page.records.is_empty();
        out.extend(page.records.into_iter().map(|r| (r.sequence_number, r.partition_key, r.data)));
        match page.next_iterator {
            Some(next) if !empty => iterator = next,
            _ => return out,
        }
    }
}

#[tokio::test]
async fn smoke_put_records_then_get_records_round_trip() {
    let api = kinesis().await.unwrap();
    let stream = unique_stream("roundtrip");
    create_stream(api.as_ref(), &stream, 2).await.unwrap();

    let entries: Vec<_> =
        (0..40).map(|i| entry(&format!("key-{}", i % 7), &format!("record {i}"))).collect();
    let outcomes = api.put_records(&stream, entries.clone()).await.unwrap();
    assert_eq!(outcomes.len(), entries.len());

    // Each record is in the shard PutRecords named, in put order per shard.
    let mut expected: BTreeMap<ShardId, Vec<(SequenceNumber, String, Bytes)>> = BTreeMap::new();
    for (entry, outcome) in entries.iter().zip(&outcomes) {
        let PutRecordsOutcome::Written { shard_id, sequence_number } = outcome else {
            panic!("entry failed: {outcome:?}");
        };
        expected.entry(shard_id.clone()).or_default().push((
            sequence_number.clone(),
            entry.partition_key.as_str().to_owned(),
            entry.data.clone(),
        ));
    }
    for shard in open_shards(api.as_ref(), &stream).await.unwrap() {
        let got = read_shard(api.as_ref(), &stream, &shard.id).await;
        let want = expected.remove(&shard.id).unwrap_or_default();
        assert_eq!(got, want, "shard {}", shard.id);
        // Sequence numbers increase along a shard, compared as numbers.
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
    }
    assert!(
        expected.is_empty(),
        "records reported in shards ListShards does not know: {expected:?}"
    );
    api.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn explicit_hash_keys_route_to_the_shard_that_owns_them() {
    let api = kinesis().await.unwrap();
    let stream = unique_stream("ehk");
    create_stream(api.as_ref(), &stream, 3).await.unwrap();
    let shards = open_shards(api.as_ref(), &stream).await.unwrap();
    for shard in &shards {
        // Ranges come from ListShards: emulators draw boundaries differently from AWS.
        for key in [shard.hash_range.start(), shard.hash_range.end()] {
            let e = PutRecordsEntry { explicit_hash_key: Some(key), ..entry("any", "x") };
            let outcome = api.put_records(&stream, vec![e]).await.unwrap().remove(0);
            match outcome {
                PutRecordsOutcome::Written { shard_id, .. } => assert_eq!(shard_id, shard.id),
                failed => panic!("{failed:?}"),
            }
        }
    }
    api.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn smoke_split_and_merge_show_their_parents_in_list_shards() {
    let api = kinesis().await.unwrap();
    let stream = unique_stream("reshard");
    create_stream(api.as_ref(), &stream, 2).await.unwrap();
    let before = open_shards(api.as_ref(), &stream).await.unwrap();
    let parent = &before[0];
    let mid = HashKey(
        parent.hash_range.start().0 + (parent.hash_range.end().0 - parent.hash_range.start().0) / 2,
    );

    api.split_shard(&stream, &parent.id, mid).await.unwrap();
    wait_active(api.as_ref(), &stream, Duration::from_secs(30)).await.unwrap();
    let all = api.list_shards(&stream).await.unwrap();
    let closed = all.iter().find(|s| s.id == parent.id).unwrap();
    assert!(!closed.is_open(), "the split parent is closed");
    let children: Vec<_> = all.iter().filter(|s| s.parent.as_ref() == Some(&parent.id)).collect();
    assert_eq!(children.len(), 2, "{all:#?}");
    assert!(children.iter().all(|c| c.is_open() && c.adjacent_parent.is_none()));
    assert!(children.iter().any(|c| c.hash_range.start() == mid));

    // Merge the upper child with the other original shard, which is adjacent to it.
    let upper = children.iter().max_by_key(|c| c.hash_range.start()).unwrap();
    let neighbour = &before[1];
    api.merge_shards(&stream, &upper.id, &neighbour.id).await.unwrap();
    wait_active(api.as_ref(), &stream, Duration::from_secs(30)).await.unwrap();
    let all = api.list_shards(&stream).await.unwrap();
    let merged = all
        .iter()
        .find(|s| {
            s.parent.as_ref() == Some(&upper.id)
                && s.adjacent_parent.as_ref() == Some(&neighbour.id)
        })
        .unwrap_or_else(|| panic!("no merge child in {all:#?}"));
    assert!(merged.is_open());
    assert_eq!(merged.hash_range.start(), upper.hash_range.start());
    assert_eq!(merged.hash_range.end(), neighbour.hash_range.end());
    assert_eq!(merged.parents().count(), 2);
    api.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn smoke_unknown_stream_is_not_found() {
    let api = kinesis().await.unwrap();
    let stream = unique_stream("missing");
    let err = api.list_shards(&stream).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::NotFound, "{err}");
    assert!(!err.is_retryable());
    let err = api.put_records(&stream, vec![entry("k", "v")]).await.unwrap_err();
    assert_eq!(err.kind(), ApiErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn a_closed_shard_read_to_its_end_names_its_children() {
    let api = kinesis().await.unwrap();
    let stream = unique_stream("childshards");
    create_stream(api.as_ref(), &stream, 1).await.unwrap();
    let parent = open_shards(api.as_ref(), &stream).await.unwrap().remove(0);
    api.put_records(&stream, vec![entry("a", "before split")]).await.unwrap();
    api.split_shard(&stream, &parent.id, HashKey(1u128 << 127)).await.unwrap();
    wait_active(api.as_ref(), &stream, Duration::from_secs(30)).await.unwrap();

    let mut iterator = api
        .get_shard_iterator(&stream, &parent.id, ShardIteratorPosition::TrimHorizon)
        .await
        .unwrap();
    let mut records = 0;
    let mut children = Vec::new();
    for _ in 0..20 {
        let page = api.get_records(&iterator, None).await.unwrap();
        records += page.records.len();
        children.extend(page.child_shards);
        match page.next_iterator {
            Some(next) => iterator = next,
            None => break,
        }
    }
    assert_eq!(records, 1);
    assert_eq!(children.len(), 2, "the last read of a closed shard names both children");
    assert!(children.iter().all(|c| c.parent_shards == vec![parent.id.clone()]));
    api.delete_stream(&stream).await.unwrap();
}
