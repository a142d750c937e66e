//! The workloads of `benches/codec.rs` (one 51 200-byte aggregate of records of one size,
//! unique or 50 partition keys) without criterion, for two uses:
//!
//! - instruction counts: a fixed amount of work, of which only the function `run` is meant
//!   to be counted (setup, and dropping what encode built, are outside it):
//!
//!   ```sh
//!   cargo build --profile bench -p kinesis-common --example codec_profile
//!   valgrind --tool=callgrind --toggle-collect='*codec_profile::run*' \
//!       target/release/examples/codec_profile encode 100 unique 20
//!   ```
//!
//!   Arguments: operation (`md5`, `encode`, `push` (encode without `finish`), `finish`, `decode`, `decode_in_range`), record
//!   size in bytes, keys (`unique` or `50keys`), iterations. Divide the count by the
//!   iterations.
//!
//! - a quick wall-clock check that is less sensitive to a shared machine than criterion's
//!   median: `codec_profile time <record size> <rounds>` prints, for each operation, the
//!   best of `rounds` rounds of 30 operations (200 for MD5), and its ratio to MD5. Encode
//!   rounds keep their builders and aggregates until the round ends, as the bench's batches
//!   do.

use std::hint::black_box;

use bytes::Bytes;
use kinesis_common::aggregation::{AggregateBuilder, UserRecord, deaggregate};
use kinesis_common::{HashKeyRange, KinesisRecord, PartitionKey, SequenceNumber};
use md5::{Digest, Md5};

const AGGREGATE_LIMIT: usize = 51_200;

fn key(unique: bool, i: usize) -> PartitionKey {
    let text = if unique {
        format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", i, i % 7, i % 11, i % 13, i * 7919)
    } else {
        format!("user-{}", i % 50)
    };
    PartitionKey::new(text).expect("valid key")
}

fn fill(size: usize, unique: bool) -> Vec<UserRecord> {
    let mut builder = AggregateBuilder::new();
    for i in 0.. {
        let data: Vec<u8> = (0..size).map(|j| (i * 31 + j) as u8).collect();
        if builder.try_push(UserRecord::new(key(unique, i), data), AGGREGATE_LIMIT).is_err() {
            break;
        }
    }
    builder.into_records()
}

#[inline(never)]
fn run(
    operation: &str,
    inputs: Vec<Vec<UserRecord>>,
    builder: &AggregateBuilder,
    input: &KinesisRecord,
    iterations: usize,
) -> Vec<AggregateBuilder> {
    let mut kept = Vec::with_capacity(inputs.len());
    match operation {
        "md5" => {
            for _ in 0..iterations {
                black_box(Md5::digest(black_box(&input.data[..])));
            }
        }
        "encode" => {
            for records in inputs {
                let mut builder = AggregateBuilder::new();
                for record in records {
                    builder.try_push(record, AGGREGATE_LIMIT).expect("filled to this limit");
                }
                black_box(builder.finish());
                kept.push(builder);
            }
        }
        "push" => {
            for records in inputs {
                let mut builder = AggregateBuilder::new();
                for record in records {
                    builder.try_push(record, AGGREGATE_LIMIT).expect("filled to this limit");
                }
                kept.push(builder);
            }
        }
        "finish" => {
            for _ in 0..iterations {
                black_box(black_box(builder).finish());
            }
        }
        "decode" => {
            for _ in 0..iterations {
                black_box(deaggregate(black_box(input), None));
            }
        }
        "decode_in_range" => {
            for _ in 0..iterations {
                black_box(deaggregate(black_box(input), Some(HashKeyRange::FULL)));
            }
        }
        other => panic!("unknown operation {other}"),
    }
    kept
}

/// `time` mode: the best of `rounds` rounds of `per_round` operations, in µs per operation.
fn time(
    operation: &str,
    records: &[UserRecord],
    builder: &AggregateBuilder,
    input: &KinesisRecord,
    rounds: usize,
    per_round: usize,
) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let inputs = if matches!(operation, "encode" | "push") {
            vec![records.to_vec(); per_round]
        } else {
            Vec::new()
        };
        let start = std::time::Instant::now();
        let kept = run(operation, inputs, builder, input, per_round);
        let elapsed = start.elapsed().as_secs_f64() * 1e6 / per_round as f64;
        drop(kept);
        best = best.min(elapsed);
    }
    best
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("time") {
        let size: usize = args.get(2).map_or(100, |s| s.parse().expect("size"));
        let rounds: usize = args.get(3).map_or(50, |s| s.parse().expect("rounds"));
        for unique in [true, false] {
            let records = fill(size, unique);
            let mut builder = AggregateBuilder::new();
            for record in records.iter().cloned() {
                builder.push(record);
            }
            let input = KinesisRecord {
                sequence_number: SequenceNumber::new(
                    "49590338271490256608559692538361571095921575989136588898",
                )
                .expect("valid sequence number"),
                partition_key: "a".to_owned(),
                data: builder.finish(),
                approximate_arrival: None,
            };
            let md5 = time("md5", &records, &builder, &input, rounds, 200);
            let mut line = format!(
                "{size} B {:6}: md5 {md5:6.1} µs",
                if unique { "unique" } else { "50keys" }
            );
            for operation in ["encode", "push", "finish", "decode", "decode_in_range"] {
                let t = time(operation, &records, &builder, &input, rounds, 30);
                line += &format!(" | {operation} {t:6.1} ({:.2}x)", md5 / t);
            }
            println!("{line}");
        }
        return;
    }
    let operation = args.get(1).map_or("encode", String::as_str);
    let size: usize = args.get(2).map_or(100, |s| s.parse().expect("size"));
    let unique = args.get(3).is_none_or(|s| s == "unique");
    let iterations: usize = args.get(4).map_or(100, |s| s.parse().expect("iterations"));

    let records = fill(size, unique);
    let mut builder = AggregateBuilder::new();
    for record in records.iter().cloned() {
        builder.push(record);
    }
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
    let inputs = if matches!(operation, "encode" | "push") {
        vec![records.clone(); iterations]
    } else {
        Vec::new()
    };
    let kept = run(operation, inputs, &builder, &input, iterations);
    eprintln!(
        "{operation} {size} B {}: {} records, {} bytes, {iterations} iterations",
        if unique { "unique" } else { "50keys" },
        records.len(),
        aggregate.len()
    );
    drop(black_box(kept));
}
