//! Property tests of the aggregation codec and the compression envelope:
//!
//! - size accounting: `encoded_len_with` / `encoded_len` always equal what `finish` writes;
//! - round trips: encode → deaggregate gives the user records back; compress → decompress;
//! - a differential check against `prost`, an independent protobuf implementation: our
//!   encoder writes exactly what prost writes for the same message, and our decoder accepts
//!   exactly the prost-encoded messages it should;
//! - robustness: any bytes at all into `deaggregate` never panic and never lose data;
//! - the batch forms: `seal_all` writes what `finish` writes, `deaggregate_all` returns what
//!   `deaggregate` returns record by record.

use bytes::Bytes;
use kinesis_common::aggregation::{
    AggregateBuilder, CorruptRecord, DeaggregationOutcome, MAGIC, UserRecord, deaggregate,
    deaggregate_all, deaggregate_with_limit, seal_all,
};
use kinesis_common::compression::{self, Codec};
use kinesis_common::{HashKey, HashKeyRange, KinesisRecord, PartitionKey, SequenceNumber};
use md5::{Digest, Md5};
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;

/// The KPL schema (`messages.proto`), derived by prost: the oracle.
mod oracle {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct AggregatedRecord {
        #[prost(string, repeated, tag = "1")]
        pub(crate) partition_key_table: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub(crate) explicit_hash_key_table: Vec<String>,
        #[prost(message, repeated, tag = "3")]
        pub(crate) records: Vec<Record>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Record {
        #[prost(uint64, required, tag = "1")]
        pub(crate) partition_key_index: u64,
        #[prost(uint64, optional, tag = "2")]
        pub(crate) explicit_hash_key_index: Option<u64>,
        #[prost(bytes = "vec", required, tag = "3")]
        pub(crate) data: Vec<u8>,
        #[prost(message, repeated, tag = "4")]
        pub(crate) tags: Vec<Tag>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Tag {
        #[prost(string, required, tag = "1")]
        pub(crate) key: String,
        #[prost(string, optional, tag = "2")]
        pub(crate) value: Option<String>,
    }
}

fn kinesis_record(data: impl Into<Bytes>) -> KinesisRecord {
    KinesisRecord {
        sequence_number: SequenceNumber::new("4959033827149025660855969253836157109592157598913")
            .unwrap(),
        partition_key: "outer-key".to_owned(),
        data: data.into(),
        approximate_arrival: None,
    }
}

fn frame(protobuf: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(protobuf);
    out.extend_from_slice(&Md5::digest(protobuf));
    out
}

fn partition_key() -> impl Strategy<Value = PartitionKey> {
    prop_oneof![
        3 => prop::sample::select(vec!["a", "b", "c", "ключ", "🦀"]).prop_map(String::from),
        3 => "[a-zA-Z0-9_-]{1,24}",
        1 => "\\PC{1,64}",
    ]
    .prop_map(|s| PartitionKey::new(s).expect("1 to 64 characters"))
}

fn explicit_hash_key() -> impl Strategy<Value = Option<HashKey>> {
    prop_oneof![
        4 => Just(None),
        2 => (0u128..3).prop_map(|k| Some(HashKey(k))),
        2 => any::<u128>().prop_map(|k| Some(HashKey(k))),
        1 => Just(Some(HashKey::MAX)),
    ]
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        16 => vec(any::<u8>(), 0..200),
        2 => vec(any::<u8>(), 0..2_000),
        // Three-byte length varints, cheap to generate.
        1 => (any::<u8>(), 16_000usize..20_000).prop_map(|(byte, len)| vec![byte; len]),
    ]
}

fn user_record() -> impl Strategy<Value = UserRecord> {
    (partition_key(), explicit_hash_key(), data()).prop_map(|(key, ehk, data)| UserRecord {
        partition_key: key,
        explicit_hash_key: ehk,
        data: Bytes::from(data),
    })
}

/// What the KPL rules say the message for `records` is, built independently of the crate:
/// tables in first-use order without duplicates, EHK index only when there is an EHK.
fn oracle_message(records: &[UserRecord]) -> oracle::AggregatedRecord {
    let mut message = oracle::AggregatedRecord::default();
    for record in records {
        let key = record.partition_key.as_str().to_owned();
        let pk_index = match message.partition_key_table.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                message.partition_key_table.push(key);
                message.partition_key_table.len() - 1
            }
        };
        let ehk_index = record.explicit_hash_key.map(|ehk| {
            let text = ehk.to_string();
            match message.explicit_hash_key_table.iter().position(|k| *k == text) {
                Some(i) => i as u64,
                None => {
                    message.explicit_hash_key_table.push(text);
                    message.explicit_hash_key_table.len() as u64 - 1
                }
            }
        });
        message.records.push(oracle::Record {
            partition_key_index: pk_index as u64,
            explicit_hash_key_index: ehk_index,
            data: record.data.to_vec(),
            tags: Vec::new(),
        });
    }
    message
}

/// The no-loss rule: every outcome accounts for the input.
fn assert_lossless(input: &KinesisRecord, out: &kinesis_common::aggregation::Deaggregated) {
    match &out.outcome {
        DeaggregationOutcome::Aggregated => {
            for (position, record) in out.records.iter().enumerate() {
                assert_eq!(record.sub_sequence_number, Some(position as u64));
                assert_eq!(record.sequence_number, input.sequence_number);
            }
        }
        DeaggregationOutcome::FilteredOut { dropped, outside } => {
            assert!(out.records.is_empty());
            assert!(*outside >= 1 && outside <= dropped);
        }
        DeaggregationOutcome::Plain | DeaggregationOutcome::PassedThrough(_) => {
            assert_eq!(out.records.len(), 1);
            let only = &out.records[0];
            assert_eq!(only.sub_sequence_number, None);
            assert_eq!(&*only.partition_key, input.partition_key.as_str());
            if out.compression.is_none() {
                assert_eq!(only.data, input.data);
            }
        }
        other => panic!("unknown outcome {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn size_accounting_is_exact(records in vec(user_record(), 0..60)) {
        let mut builder = AggregateBuilder::new();
        for record in records {
            let predicted = builder.encoded_len_with(&record);
            builder.push(record);
            prop_assert_eq!(builder.encoded_len(), predicted);
        }
        prop_assert_eq!(builder.finish().len(), builder.encoded_len());
    }

    #[test]
    fn try_push_never_exceeds_the_limit(records in vec(user_record(), 1..60), limit in 20usize..5_000) {
        let mut builder = AggregateBuilder::new();
        let mut taken = 0;
        for record in records {
            match builder.try_push(record, limit) {
                Ok(()) => taken += 1,
                Err(rejected) => prop_assert!(rejected.encoded_len > limit),
            }
            prop_assert!(builder.encoded_len() <= limit);
        }
        prop_assert_eq!(builder.len(), taken);
        prop_assert!(builder.finish().len() <= limit);
    }

    #[test]
    fn encoding_matches_prost_byte_for_byte(records in vec(user_record(), 0..40)) {
        let mut builder = AggregateBuilder::new();
        for record in &records {
            builder.push(record.clone());
        }
        let ours = builder.finish();
        let expected = frame(&oracle_message(&records).encode_to_vec());
        prop_assert_eq!(&ours[..], &expected[..]);
        let decoded = oracle::AggregatedRecord::decode(&ours[4..ours.len() - 16]).unwrap();
        prop_assert_eq!(decoded, oracle_message(&records));
    }

    #[test]
    fn aggregates_filled_by_try_push_match_prost_byte_for_byte(
        records in vec(user_record(), 1..300),
        small in vec(vec(any::<u8>(), 0..8), 0..200),
    ) {
        // Many records, most of them small, so that the aggregate expects many and its key
        // table and record vectors grow the way a full aggregate's do.
        let mut records = records;
        let keys: Vec<PartitionKey> = records.iter().map(|r| r.partition_key.clone()).collect();
        for (i, data) in small.into_iter().enumerate() {
            let key = if i % 3 == 0 {
                PartitionKey::new(format!("small-{i}")).unwrap()
            } else {
                keys[i % keys.len()].clone()
            };
            records.insert(i % records.len(), UserRecord::new(key, data));
        }
        let mut builder = AggregateBuilder::new();
        for record in &records {
            builder.try_push(record.clone(), 10 << 20).expect("under 10 MiB");
        }
        prop_assert_eq!(builder.records(), &records[..]);
        let ours = builder.finish();
        prop_assert_eq!(ours.len(), builder.encoded_len());
        let expected = frame(&oracle_message(&records).encode_to_vec());
        prop_assert_eq!(&ours[..], &expected[..]);
    }

    #[test]
    fn encode_then_deaggregate_round_trips(records in vec(user_record(), 1..60)) {
        let mut builder = AggregateBuilder::new();
        for record in &records {
            builder.push(record.clone());
        }
        prop_assert_eq!(builder.first_hash_key(), Some(records[0].hash_key()));
        let input = kinesis_record(builder.finish());
        for range in [None, Some(HashKeyRange::FULL)] {
            let out = deaggregate(&input, range);
            prop_assert!(matches!(out.outcome, DeaggregationOutcome::Aggregated));
            prop_assert_eq!(out.records.len(), records.len());
            for (position, (got, want)) in out.records.iter().zip(&records).enumerate() {
                prop_assert_eq!(got.sub_sequence_number, Some(position as u64));
                prop_assert_eq!(&*got.partition_key, want.partition_key.as_str());
                prop_assert_eq!(got.explicit_hash_key, want.explicit_hash_key);
                prop_assert_eq!(got.hash_key(), want.hash_key());
                prop_assert_eq!(&got.data, &want.data);
            }
        }
    }

    #[test]
    fn the_hash_range_filter_is_all_or_nothing(
        records in vec(user_record(), 1..30),
        a in any::<u128>(),
        b in any::<u128>(),
    ) {
        let mut builder = AggregateBuilder::new();
        for record in &records {
            builder.push(record.clone());
        }
        let range = HashKeyRange::new(HashKey(a.min(b)), HashKey(a.max(b))).unwrap();
        let outside = records.iter().filter(|r| !range.contains(r.hash_key())).count();
        let out = deaggregate(&kinesis_record(builder.finish()), Some(range));
        if outside == 0 {
            prop_assert_eq!(out.records.len(), records.len());
        } else {
            prop_assert!(out.records.is_empty());
            let filtered = matches!(
                out.outcome,
                DeaggregationOutcome::FilteredOut { dropped, outside: o } if dropped == records.len() && o == outside
            );
            prop_assert!(filtered);
        }
    }

    #[test]
    fn compressed_aggregates_round_trip(records in vec(user_record(), 1..20), zstd in any::<bool>()) {
        let codec = if zstd { Codec::Zstd } else { Codec::Gzip };
        let mut builder = AggregateBuilder::new();
        for record in &records {
            builder.push(record.clone());
        }
        let aggregate = builder.finish();
        let envelope = compression::compress(codec, Some(1), &aggregate).unwrap();
        prop_assert_eq!(compression::decompress(&envelope, aggregate.len()).unwrap().unwrap(), aggregate.clone());
        let out = deaggregate(&kinesis_record(envelope), None);
        prop_assert_eq!(out.compression, Some(codec));
        prop_assert_eq!(out.records.len(), records.len());
    }

    #[test]
    fn compress_then_decompress_round_trips(data in vec(any::<u8>(), 0..8_000), level in -5i32..25, zstd in any::<bool>()) {
        let codec = if zstd { Codec::Zstd } else { Codec::Gzip };
        let envelope = compression::compress(codec, Some(level), &data).unwrap();
        prop_assert!(compression::is_envelope(&envelope));
        prop_assert_eq!(compression::decompress(&envelope, data.len()).unwrap().unwrap(), Bytes::from(data.clone()));
        if !data.is_empty() {
            prop_assert!(compression::decompress(&envelope, data.len() - 1).is_err());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_or_lose_data(data in vec(any::<u8>(), 0..300), prefix in 0u8..4) {
        let data = match prefix {
            // Plain bytes.
            0 => data,
            // The KPL magic in front, digest most likely wrong.
            1 => [&MAGIC[..], &data].concat(),
            // A correctly framed aggregate of arbitrary protobuf bytes.
            2 => frame(&data),
            // The envelope magic in front.
            _ => [&compression::ENVELOPE_MAGIC[..], &data].concat(),
        };
        let input = kinesis_record(data);
        for range in [None, Some(HashKeyRange::FULL), Some(HashKeyRange::new(HashKey(0), HashKey(1 << 100)).unwrap())] {
            let out = deaggregate_with_limit(&input, range, 1 << 20);
            assert_lossless(&input, &out);
        }
    }

    #[test]
    fn mutated_aggregates_never_panic_or_lose_data(
        records in vec(user_record(), 1..10),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        reframe in any::<bool>(),
    ) {
        let mut builder = AggregateBuilder::new();
        for record in records {
            builder.push(record);
        }
        let encoded = builder.finish();
        let mut protobuf = encoded[4..encoded.len() - 16].to_vec();
        for (at, byte) in flips {
            let at = at.index(protobuf.len());
            protobuf[at] ^= byte | 1;
        }
        let data = if reframe {
            frame(&protobuf)
        } else {
            [&MAGIC[..], &protobuf, &encoded[encoded.len() - 16..]].concat()
        };
        let input = kinesis_record(data);
        let out = deaggregate(&input, Some(HashKeyRange::FULL));
        assert_lossless(&input, &out);
        if !reframe {
            let mismatch = matches!(out.outcome, DeaggregationOutcome::PassedThrough(CorruptRecord::DigestMismatch));
            prop_assert!(mismatch);
        }
    }

    #[test]
    fn seal_all_writes_what_finish_writes(aggregates in vec(vec(user_record(), 0..30), 0..40)) {
        let builders: Vec<AggregateBuilder> = aggregates
            .into_iter()
            .map(|records| {
                let mut builder = AggregateBuilder::new();
                for record in records {
                    builder.push(record);
                }
                builder
            })
            .collect();
        let unsealed: Vec<_> = builders.iter().map(AggregateBuilder::finish_unsealed).collect();
        for (builder, unsealed) in builders.iter().zip(&unsealed) {
            prop_assert_eq!(unsealed.len(), builder.encoded_len());
        }
        let sealed = seal_all(unsealed);
        prop_assert_eq!(sealed.len(), builders.len());
        for (builder, sealed) in builders.iter().zip(sealed) {
            prop_assert_eq!(builder.finish(), sealed);
        }
    }

    /// A page of Kinesis records of every kind (aggregates, corrupt aggregates, compressed
    /// aggregates, plain data, arbitrary bytes behind the magic) de-aggregates together
    /// exactly as record by record.
    #[test]
    fn deaggregate_all_agrees_with_deaggregate(
        page in vec(
            (vec(user_record(), 0..12), 0u8..5, vec((any::<prop::sample::Index>(), any::<u8>()), 0..3)),
            0..40,
        ),
    ) {
        let inputs: Vec<KinesisRecord> = page
            .into_iter()
            .map(|(records, kind, flips)| {
                let mut builder = AggregateBuilder::new();
                for record in records {
                    builder.push(record);
                }
                let encoded = builder.finish().to_vec();
                let data = match kind {
                    // As encoded.
                    0 => encoded,
                    // Bytes flipped: most likely a digest mismatch.
                    1 => {
                        let mut data = encoded;
                        for (at, byte) in flips {
                            let at = at.index(data.len());
                            data[at] ^= byte | 1;
                        }
                        data
                    }
                    // Compressed.
                    2 => compression::compress(Codec::Zstd, Some(1), &encoded).unwrap().to_vec(),
                    // The magic and a few bytes: too short, or a digest of nothing much.
                    3 => encoded[..encoded.len().min(4 + flips.len() * 7)].to_vec(),
                    // Plain data.
                    _ => encoded[4..].to_vec(),
                };
                kinesis_record(data)
            })
            .collect();
        for range in [None, Some(HashKeyRange::FULL), Some(HashKeyRange::new(HashKey(0), HashKey(1 << 127)).unwrap())] {
            let together = deaggregate_all(&inputs, range);
            prop_assert_eq!(together.len(), inputs.len());
            for (input, together) in inputs.iter().zip(&together) {
                let alone = deaggregate(input, range);
                prop_assert_eq!(format!("{together:?}"), format!("{alone:?}"));
            }
        }
    }

    /// Any message prost can write, tags and bad indexes included: the decoder agrees with
    /// the schema on what is valid.
    #[test]
    fn decoder_agrees_with_prost_on_arbitrary_messages(
        partition_keys in vec("\\PC{0,8}", 0..4),
        explicit_hash_keys in vec(prop_oneof!["[0-9]{1,40}", "\\PC{0,4}"], 0..4),
        records in vec((0u64..5, proptest::option::of(0u64..5), vec(any::<u8>(), 0..16), vec(("\\PC{0,4}", proptest::option::of("\\PC{0,4}")), 0..2)), 0..6),
    ) {
        let message = oracle::AggregatedRecord {
            partition_key_table: partition_keys.clone(),
            explicit_hash_key_table: explicit_hash_keys.clone(),
            records: records.iter().map(|(pk, ehk, data, tags)| oracle::Record {
                partition_key_index: *pk,
                explicit_hash_key_index: *ehk,
                data: data.clone(),
                tags: tags.iter().map(|(key, value)| oracle::Tag { key: key.clone(), value: value.clone() }).collect(),
            }).collect(),
        };
        let protobuf = message.encode_to_vec();
        let input = kinesis_record(frame(&protobuf));
        let out = deaggregate(&input, None);
        assert_lossless(&input, &out);

        // What the schema and the documented rules say.
        let first_bad_index = message.records.iter().position(|r| {
            r.partition_key_index >= partition_keys.len() as u64
                || r.explicit_hash_key_index.is_some_and(|i| i >= explicit_hash_keys.len() as u64)
        });
        let first_bad_ehk = message.records.iter().position(|r| {
            r.explicit_hash_key_index
                .and_then(|i| explicit_hash_keys.get(i as usize))
                .is_some_and(|text| HashKey::from_decimal(text).is_err())
        });
        match &out.outcome {
            DeaggregationOutcome::PassedThrough(CorruptRecord::TooShort) => prop_assert!(protobuf.is_empty()),
            DeaggregationOutcome::PassedThrough(
                CorruptRecord::PartitionKeyIndexOutOfRange { record, .. }
                | CorruptRecord::ExplicitHashKeyIndexOutOfRange { record, .. },
            ) => prop_assert_eq!(Some(*record), first_bad_index),
            DeaggregationOutcome::PassedThrough(CorruptRecord::InvalidExplicitHashKey { record }) => {
                prop_assert_eq!(first_bad_index, None);
                prop_assert_eq!(Some(*record), first_bad_ehk);
            }
            DeaggregationOutcome::Aggregated => {
                prop_assert_eq!(first_bad_index, None);
                prop_assert_eq!(first_bad_ehk, None);
                prop_assert_eq!(out.records.len(), message.records.len());
                for (got, want) in out.records.iter().zip(&message.records) {
                    prop_assert_eq!(&*got.partition_key, partition_keys[want.partition_key_index as usize].as_str());
                    prop_assert_eq!(&got.data[..], &want.data[..]);
                    prop_assert_eq!(
                        got.explicit_hash_key.map(|k| k.0),
                        want.explicit_hash_key_index.map(|i| explicit_hash_keys[i as usize].parse::<u128>().unwrap())
                    );
                }
            }
            other => prop_assert!(false, "unexpected outcome {:?}", other),
        }
    }
}
