//! Throughput of the KPL aggregation codec against raw MD5 over the same bytes.
//!
//! MD5 is the floor for both directions: the encoder must digest the protobuf and the
//! decoder must check it. Each group fills one aggregate to the KPL default
//! `AggregationMaxSize` of 51 200 bytes (KPL `KinesisProducerConfiguration`) with records of
//! one size, and measures, over that aggregate:
//!
//! - `md5`: MD5 of the encoded aggregate's bytes (the floor);
//! - `encode`: `try_push` every user record into a new `AggregateBuilder` under the same
//!   limit, as an aggregator fills one, then `finish`;
//! - `finish`: `finish` alone on a filled builder;
//! - `decode`: `deaggregate` without a shard range;
//! - `decode_in_range`: `deaggregate` with the full hash key range, which hashes every
//!   partition key for the range check as the KCL does.
//!
//! The `…/16-aggregates` groups time sixteen such aggregates at a time, as the producer
//! writes a request's: `md5` and `finish` one by one, and `seal_all` (`finish_unsealed` of
//! each, then the sixteen digests computed together).
//!
//! Key schemes: `unique` gives every record its own 36-character key (UUID-like), `50keys`
//! draws from 50 keys. Run: `cargo bench -p kinesis-common --bench codec`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kinesis_common::aggregation::{AggregateBuilder, UserRecord, deaggregate, seal_all};
use kinesis_common::{HashKeyRange, KinesisRecord, PartitionKey, SequenceNumber};
use md5::{Digest, Md5};

/// KPL default `AggregationMaxSize`.
const AGGREGATE_LIMIT: usize = 51_200;

#[derive(Clone, Copy)]
enum Keys {
    Unique,
    Pool50,
}

impl Keys {
    fn name(self) -> &'static str {
        match self {
            Keys::Unique => "unique",
            Keys::Pool50 => "50keys",
        }
    }

    fn key(self, i: usize) -> PartitionKey {
        let text = match self {
            Keys::Unique => {
                format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", i, i % 7, i % 11, i % 13, i * 7919)
            }
            Keys::Pool50 => format!("user-{}", i % 50),
        };
        PartitionKey::new(text).expect("valid key")
    }
}

/// User records of `size` data bytes, as many as fit one aggregate.
fn fill(size: usize, keys: Keys) -> Vec<UserRecord> {
    let mut builder = AggregateBuilder::new();
    for i in 0.. {
        let data: Vec<u8> = (0..size).map(|j| (i * 31 + j) as u8).collect();
        if builder.try_push(UserRecord::new(keys.key(i), data), AGGREGATE_LIMIT).is_err() {
            break;
        }
    }
    builder.into_records()
}

fn build(records: Vec<UserRecord>) -> AggregateBuilder {
    let mut builder = AggregateBuilder::new();
    for record in records {
        builder.try_push(record, AGGREGATE_LIMIT).expect("filled to this limit");
    }
    builder
}

fn codec(c: &mut Criterion) {
    for keys in [Keys::Unique, Keys::Pool50] {
        for (size, label) in [(100, "100B"), (1024, "1KiB"), (10 * 1024, "10KiB")] {
            let records = fill(size, keys);
            let builder = build(records.clone());
            let aggregate: Bytes = builder.finish();
            let input = KinesisRecord {
                sequence_number: SequenceNumber::new(
                    "49590338271490256608559692538361571095921575989136588898",
                )
                .expect("valid sequence number"),
                partition_key: "a".to_owned(),
                data: aggregate.clone(),
                approximate_arrival: None,
            };

            let mut group = c.benchmark_group(format!("codec/{label}/{}", keys.name()));
            group.throughput(Throughput::ElementsAndBytes {
                elements: records.len() as u64,
                bytes: aggregate.len() as u64,
            });
            group.bench_function("md5", |b| b.iter(|| Md5::digest(black_box(&aggregate[..]))));
            group.bench_function("encode", |b| {
                b.iter_batched(
                    || records.clone(),
                    // The builder goes back out so that dropping the records is not timed:
                    // a producer keeps them after encoding anyway. One input per batch, so
                    // that each aggregate reuses the memory the last one freed, as in a
                    // running producer, rather than a batch of them all holding fresh pages
                    // (which timed the kernel's page faults more than the codec).
                    |records| {
                        let builder = build(records);
                        let encoded = builder.finish();
                        (builder, encoded)
                    },
                    BatchSize::PerIteration,
                )
            });
            group.bench_function("finish", |b| b.iter(|| black_box(&builder).finish()));
            group.bench_function("decode", |b| b.iter(|| deaggregate(black_box(&input), None)));
            group.bench_function("decode_in_range", |b| {
                b.iter(|| deaggregate(black_box(&input), Some(HashKeyRange::FULL)))
            });
            group.finish();

            let mut group =
                c.benchmark_group(format!("codec/{label}/{}/16-aggregates", keys.name()));
            group.throughput(Throughput::ElementsAndBytes {
                elements: 16 * records.len() as u64,
                bytes: 16 * aggregate.len() as u64,
            });
            let builders = vec![builder.clone(); 16];
            let aggregates = vec![aggregate.clone(); 16];
            group.bench_function("md5", |b| {
                b.iter(|| aggregates.iter().map(|a| Md5::digest(&a[..])).collect::<Vec<_>>())
            });
            group.bench_function("finish", |b| {
                b.iter(|| {
                    black_box(&builders).iter().map(AggregateBuilder::finish).collect::<Vec<_>>()
                })
            });
            group.bench_function("seal_all", |b| {
                b.iter(|| {
                    seal_all(
                        black_box(&builders)
                            .iter()
                            .map(AggregateBuilder::finish_unsealed)
                            .collect(),
                    )
                })
            });
            group.finish();
        }
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
