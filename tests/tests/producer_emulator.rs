//! The producer against the substrate's Kinesis engine, through the AWS-like limits proxy
//! (per-shard write limits, injected throttling, 5xx answers and connection resets): every
//! record arrives exactly once, where its delivery says, with each key's records in order —
//! also across a split during production, and with gzip and zstd compression.
//!
//! Faults are injected only before the proxy forwards a request, so nothing is written twice
//! and "exactly once" is a fair check; faults after forwarding (writes the client is told
//! failed) belong to the chaos suite, where duplicates are expected.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kinesis_common::aggregation::deaggregate;
use kinesis_common::compression::Codec;
use kinesis_common::{
    HashKey, KinesisApi, SequenceNumber, Shard, ShardId, ShardIteratorPosition, StreamName,
};
use kinesis_integration_tests::proxy::{Faults, Fraction, LimitsProxy, ProxyConfig};
use kinesis_integration_tests::{create_stream, kinesis, unique_stream, wait_active};
use kinesis_producer::{Compression, Producer, ProducerConfig, Record};

/// Where a delivery said a record went.
type Place = (ShardId, SequenceNumber, Option<u64>);

struct Run {
    records: usize,
    shards: u32,
    split_at: Option<usize>,
    compression: Option<Codec>,
    faults: bool,
}

async fn produce_and_verify(run: Run, prefix: &str) {
    let direct = kinesis().await.unwrap();
    let stream = unique_stream(prefix);
    create_stream(direct.as_ref(), &stream, run.shards).await.unwrap();

    let mut faults = Faults::none();
    if run.faults {
        faults.throttle_entries = Fraction::new(0.2).unwrap();
        faults.error_before_forward = Fraction::new(0.05).unwrap();
        faults.reset_before_forward = Fraction::new(0.02).unwrap();
        faults.scope = kinesis_integration_tests::proxy::FaultScope::operations(["PutRecords"]);
    }
    let proxy = LimitsProxy::in_front_of_kinesis(ProxyConfig {
        faults,
        seed: 11,
        ..ProxyConfig::default()
    })
    .await
    .unwrap();
    let config = ProducerConfig {
        compression: run.compression.map(|codec| Compression { codec, level: None, min_size: 256 }),
        ..ProducerConfig::default()
    };
    let producer = Producer::builder(proxy.kinesis().await.unwrap())
        .stream(stream.clone())
        .config(config)
        .start()
        .await
        .unwrap();

    let keys = 100;
    // About 40 aggregates for 20 000 records, so the injected faults surely hit some of them.
    let pad = "p".repeat(80);
    let mut receipts = Vec::with_capacity(run.records);
    for i in 0..run.records {
        let data = format!("{i} {} {} {pad}", i % keys, i / keys);
        receipts.push(producer.send(Record::new(format!("key-{}", i % keys), data)).await.unwrap());
        if Some(i) == run.split_at {
            split_widest(direct.as_ref(), &stream).await;
        }
    }
    let mut delivered: Vec<Place> = Vec::with_capacity(run.records);
    for r in receipts {
        let d = r.await.unwrap_or_else(|e| panic!("a record was not delivered: {e:?}"));
        delivered.push((d.shard_id, d.sequence_number, d.sub_sequence_number));
    }
    let metrics = producer.shutdown().await;
    if run.faults {
        assert!(metrics.retries > 0, "the faults were injected: {metrics:?}");
    }

    // Read back like a KCL worker: parents first, each shard de-aggregated with its range.
    let shards = direct.list_shards(&stream).await.unwrap();
    let mut found: HashMap<usize, Vec<Place>> = HashMap::new();
    let mut last_of_key: HashMap<usize, i64> = HashMap::new();
    for shard in Shard::parents_first(&shards) {
        for (seq, sub, data) in read_shard(direct.as_ref(), &stream, shard).await {
            let mut fields = data.split(' ');
            let id: usize = fields.next().unwrap().parse().unwrap();
            let key: usize = fields.next().unwrap().parse().unwrap();
            let nth: i64 = fields.next().unwrap().parse().unwrap();
            let last = last_of_key.entry(key).or_insert(-1);
            assert!(nth > *last, "key {key}: record {nth} after {last}");
            *last = nth;
            found.entry(id).or_default().push((shard.id.clone(), seq, sub));
        }
    }
    for (id, place) in delivered.iter().enumerate() {
        let copies = found.get(&id).map_or(&[][..], Vec::as_slice);
        assert_eq!(copies, std::slice::from_ref(place), "record {id}: delivered at {place:?}");
    }
    assert_eq!(found.len(), run.records);
    proxy.shutdown().await;
    direct.delete_stream(&stream).await.unwrap();
}

/// Splits the open shard with the widest range in its middle and waits for ACTIVE.
async fn split_widest(api: &dyn KinesisApi, stream: &StreamName) {
    let shards = api.list_shards(stream).await.unwrap();
    let widest = shards
        .iter()
        .filter(|s| s.is_open())
        .max_by_key(|s| s.hash_range.end().0 - s.hash_range.start().0)
        .unwrap();
    let (start, end) = (widest.hash_range.start().0, widest.hash_range.end().0);
    api.split_shard(stream, &widest.id, HashKey(start + (end - start) / 2 + 1)).await.unwrap();
    wait_active(api, stream, Duration::from_secs(30)).await.unwrap();
}

/// Every user record of a shard as (sequence, sub-sequence, data), filtered by its range.
async fn read_shard(
    api: &dyn KinesisApi,
    stream: &StreamName,
    shard: &Shard,
) -> Vec<(SequenceNumber, Option<u64>, String)> {
    let mut iterator = api
        .get_shard_iterator(stream, &shard.id, ShardIteratorPosition::TrimHorizon)
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut empty = 0;
    loop {
        let page = api.get_records(&iterator, None).await.unwrap();
        empty = if page.records.is_empty() { empty + 1 } else { 0 };
        for record in &page.records {
            for user in deaggregate(record, Some(shard.hash_range)).records {
                out.push((
                    user.sequence_number,
                    user.sub_sequence_number,
                    String::from_utf8(user.data.to_vec()).unwrap(),
                ));
            }
        }
        match page.next_iterator {
            Some(next) if !(shard.is_open() && empty >= 2) => iterator = next,
            _ => return out,
        }
    }
}

#[tokio::test]
async fn producer_writes_20k_records_exactly_once_through_throttling_and_faults() {
    let run = Run { records: 20_000, shards: 4, split_at: None, compression: None, faults: true };
    produce_and_verify(run, "prod-faults").await;
}

#[tokio::test]
async fn producer_keeps_records_whole_and_ordered_across_a_split_during_production() {
    let run =
        Run { records: 20_000, shards: 4, split_at: Some(8_000), compression: None, faults: true };
    produce_and_verify(run, "prod-split").await;
}

#[tokio::test]
async fn producer_round_trips_gzip_compressed_records() {
    let run = Run {
        records: 20_000,
        shards: 4,
        split_at: None,
        compression: Some(Codec::Gzip),
        faults: true,
    };
    produce_and_verify(run, "prod-gzip").await;
}

#[tokio::test]
async fn producer_round_trips_zstd_compressed_records() {
    let run = Run {
        records: 20_000,
        shards: 4,
        split_at: None,
        compression: Some(Codec::Zstd),
        faults: true,
    };
    produce_and_verify(run, "prod-zstd").await;
}

#[tokio::test]
async fn smoke_producer_round_trip() {
    let run = Run { records: 3_000, shards: 2, split_at: None, compression: None, faults: false };
    produce_and_verify(run, "prod-smoke").await;
}

#[tokio::test]
async fn producer_start_fails_clearly_for_an_unknown_stream() {
    let api: Arc<dyn KinesisApi> = kinesis().await.unwrap();
    let err = Producer::builder(api).stream(unique_stream("absent")).start().await.unwrap_err();
    assert!(matches!(err, kinesis_producer::BuildError::StreamNotFound { .. }), "{err:?}");
}
