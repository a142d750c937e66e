//! Interoperability with the KPL aggregated record vectors in `shared/vectors` (made with
//! the awslabs Python and Node aggregators and by hand; see its README).
//!
//! Every case listed in `index.json` is checked, so a new vector is picked up without a code
//! change: every `.bin` decodes to its `expected_user_records` (or, where the references
//! disagree and the JSON leaves the result open, to the behaviour this crate documents, with
//! nothing lost), and every `py/` case's user records encode to its `.bin` byte for byte.
//!
//! The vectors live beside the repository (`../../shared/vectors` from this package); when
//! they are missing the tests fail and say where they looked.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use kinesis_common::aggregation::{
    AggregateBuilder, CorruptRecord, DeaggregationOutcome, ProtobufError, UserRecord, deaggregate,
};
use kinesis_common::{HashKey, HashKeyRange, KinesisRecord, PartitionKey, SequenceNumber};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct IndexEntry {
    id: String,
    category: String,
    bin: String,
    json: String,
    expected_count: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct Case {
    kinesis_record: OuterRecord,
    #[serde(default)]
    input_user_records: Option<Vec<VectorRecord>>,
    expected_user_records: Option<Vec<VectorRecord>>,
}

#[derive(Debug, Deserialize)]
struct OuterRecord {
    partition_key: String,
    sequence_number: String,
}

#[derive(Debug, Deserialize)]
struct VectorRecord {
    partition_key: String,
    explicit_hash_key: Option<String>,
    data_b64: Option<String>,
    data_pattern: Option<DataPattern>,
    data_len: usize,
    sub_sequence_number: Option<u64>,
    aggregated: bool,
    hash_key: String,
}

/// Large data is described rather than stored: byte `i` is `(i * mul + add) mod 256`.
#[derive(Debug, Deserialize)]
struct DataPattern {
    kind: String,
    mul: u64,
    add: u64,
    len: usize,
}

impl VectorRecord {
    fn data(&self) -> Vec<u8> {
        let data = match (&self.data_b64, &self.data_pattern) {
            (Some(b64), _) => BASE64.decode(b64).expect("data_b64 is base64"),
            (None, Some(pattern)) => {
                assert_eq!(pattern.kind, "affine_bytes", "unknown data pattern");
                (0..pattern.len as u64)
                    .map(|i| ((i * pattern.mul + pattern.add) % 256) as u8)
                    .collect()
            }
            (None, None) => panic!("record has neither data_b64 nor data_pattern"),
        };
        assert_eq!(data.len(), self.data_len);
        data
    }

    fn user_record(&self) -> UserRecord {
        let record = UserRecord::new(
            PartitionKey::new(self.partition_key.clone()).expect("vector partition key is valid"),
            self.data(),
        );
        match &self.explicit_hash_key {
            Some(ehk) => {
                record.with_explicit_hash_key(HashKey::from_decimal(ehk).expect("valid EHK"))
            }
            None => record,
        }
    }
}

fn vectors_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors");
    assert!(
        dir.join("index.json").is_file(),
        "interop vectors not found: looked for {} (expected shared/vectors beside the \
         repository checkout)",
        dir.join("index.json").display()
    );
    dir
}

struct Loaded {
    entry: IndexEntry,
    case: Case,
    bin: Bytes,
}

fn load_all() -> Vec<Loaded> {
    let dir = vectors_dir();
    let index: Vec<IndexEntry> =
        serde_json::from_slice(&fs::read(dir.join("index.json")).expect("read index.json"))
            .expect("parse index.json");
    assert!(!index.is_empty(), "index.json lists no case");
    index
        .into_iter()
        .map(|entry| {
            let json = fs::read(dir.join(&entry.json))
                .unwrap_or_else(|e| panic!("{}: read {}: {e}", entry.id, entry.json));
            let case: Case = serde_json::from_slice(&json)
                .unwrap_or_else(|e| panic!("{}: parse {}: {e}", entry.id, entry.json));
            let bin = fs::read(dir.join(&entry.bin))
                .unwrap_or_else(|e| panic!("{}: read {}: {e}", entry.id, entry.bin));
            Loaded { entry, case, bin: Bytes::from(bin) }
        })
        .collect()
}

fn kinesis_record(loaded: &Loaded) -> KinesisRecord {
    KinesisRecord {
        sequence_number: SequenceNumber::new(loaded.case.kinesis_record.sequence_number.clone())
            .expect("vector sequence number is valid"),
        partition_key: loaded.case.kinesis_record.partition_key.clone(),
        data: loaded.bin.clone(),
        approximate_arrival: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
    }
}

/// The behaviour this crate documents for the cases whose JSON leaves the result open
/// (`expected_user_records: null`), checked with and without the shard range.
fn check_open_case(loaded: &Loaded) {
    let id = loaded.entry.id.as_str();
    let input = kinesis_record(loaded);
    let passed_through = |range: Option<HashKeyRange>| {
        let out = deaggregate(&input, range);
        assert_eq!(out.records.len(), 1, "{id}: {:?}", out.outcome);
        assert_eq!(out.records[0].data, loaded.bin, "{id}: passed through unchanged");
        assert_eq!(out.records[0].sub_sequence_number, None, "{id}");
        assert_eq!(&*out.records[0].partition_key, input.partition_key.as_str(), "{id}");
        match out.outcome {
            DeaggregationOutcome::PassedThrough(reason) => reason,
            other => panic!("{id}: expected pass-through, got {other:?}"),
        }
    };
    let full = Some(HashKeyRange::FULL);
    match id {
        "edge/corrupt_pk_index_out_of_range" => {
            for range in [None, full] {
                assert!(matches!(
                    passed_through(range),
                    CorruptRecord::PartitionKeyIndexOutOfRange {
                        record: 1,
                        index: 7,
                        table_len: 1
                    }
                ));
            }
        }
        "edge/corrupt_ehk_index_out_of_range" => {
            for range in [None, full] {
                assert!(matches!(
                    passed_through(range),
                    CorruptRecord::ExplicitHashKeyIndexOutOfRange {
                        record: 1,
                        index: 3,
                        table_len: 1
                    }
                ));
            }
        }
        "edge/corrupt_invalid_utf8_pk" => {
            for range in [None, full] {
                assert!(matches!(
                    passed_through(range),
                    CorruptRecord::Protobuf(ProtobufError::InvalidUtf8)
                ));
            }
        }
        "edge/corrupt_missing_required_data" => {
            for range in [None, full] {
                assert!(matches!(
                    passed_through(range),
                    CorruptRecord::Protobuf(ProtobufError::MissingRequiredField("data"))
                ));
            }
        }
        "edge/corrupt_missing_required_pk_index" => {
            for range in [None, full] {
                assert!(matches!(
                    passed_through(range),
                    CorruptRecord::Protobuf(ProtobufError::MissingRequiredField(
                        "partition_key_index"
                    ))
                ));
            }
        }
        "edge/edge_ehk_out_of_range_2pow128" => {
            // With a shard range (the KCL always has one, the full range at worst), 2^128
            // is outside it: the whole aggregate is filtered, as in KCL 2.x.
            let out = deaggregate(&input, full);
            assert!(out.records.is_empty(), "{id}");
            assert!(
                matches!(out.outcome, DeaggregationOutcome::FilteredOut { dropped: 2, outside: 1 }),
                "{id}: {:?}",
                out.outcome
            );
            // Without a range nothing can be filtered and the key cannot be represented:
            // the record passes through unchanged.
            assert!(matches!(
                passed_through(None),
                CorruptRecord::InvalidExplicitHashKey { record: 1 }
            ));
        }
        _ => {
            // A new open case: hold it to the no-loss rule only.
            for range in [None, full] {
                let out = deaggregate(&input, range);
                let lossless = match &out.outcome {
                    DeaggregationOutcome::Aggregated => !out.records.is_empty(),
                    DeaggregationOutcome::FilteredOut { dropped, .. } => *dropped > 0,
                    _ => out.records.len() == 1 && out.records[0].data == loaded.bin,
                };
                assert!(lossless, "{id}: {:?} lost data", out.outcome);
            }
        }
    }
}

fn check_expected(loaded: &Loaded, expected: &[VectorRecord]) {
    let id = loaded.entry.id.as_str();
    let input = kinesis_record(loaded);
    // The KCL filters with the shard's range (the full range when it cannot find the shard);
    // every vector with an expected result was written to its right shard.
    for range in [None, Some(HashKeyRange::FULL)] {
        let out = deaggregate(&input, range);
        match loaded.entry.category.as_str() {
            "plain" => assert!(matches!(out.outcome, DeaggregationOutcome::Plain), "{id}"),
            "corrupted" if expected.len() == 1 && expected[0].sub_sequence_number.is_none() => {
                assert!(
                    matches!(out.outcome, DeaggregationOutcome::PassedThrough(_)),
                    "{id}: {:?}",
                    out.outcome
                )
            }
            _ => assert!(
                matches!(out.outcome, DeaggregationOutcome::Aggregated),
                "{id}: {:?}",
                out.outcome
            ),
        }
        if let Some(count) = loaded.entry.expected_count {
            assert_eq!(out.records.len(), count, "{id}: index.json expected_count");
        }
        assert_eq!(out.records.len(), expected.len(), "{id}: record count");
        for (position, (got, want)) in out.records.iter().zip(expected).enumerate() {
            let at = format!("{id} record {position}");
            assert_eq!(&*got.partition_key, want.partition_key.as_str(), "{at}: partition key");
            assert_eq!(
                got.explicit_hash_key.map(|k| k.to_string()),
                want.explicit_hash_key,
                "{at}: explicit hash key"
            );
            assert_eq!(got.data, want.data(), "{at}: data");
            assert_eq!(got.sub_sequence_number, want.sub_sequence_number, "{at}: sub-sequence");
            assert_eq!(got.is_aggregated(), want.aggregated, "{at}: aggregated");
            assert_eq!(got.hash_key().to_string(), want.hash_key, "{at}: hash key");
            assert_eq!(got.sequence_number, input.sequence_number, "{at}: sequence number");
            assert_eq!(got.approximate_arrival, input.approximate_arrival, "{at}: arrival");
        }
    }
}

#[test]
fn every_vector_decodes_as_expected_or_as_documented() {
    let all = load_all();
    for loaded in &all {
        match &loaded.case.expected_user_records {
            Some(expected) => check_expected(loaded, expected),
            None => check_open_case(loaded),
        }
    }
}

#[test]
fn every_py_vector_encodes_byte_for_byte() {
    let all = load_all();
    let mut checked = 0;
    for loaded in all.iter().filter(|l| l.entry.id.starts_with("py/")) {
        let id = &loaded.entry.id;
        let inputs = loaded
            .case
            .input_user_records
            .as_ref()
            .or(loaded.case.expected_user_records.as_ref())
            .unwrap_or_else(|| panic!("{id}: no user records to encode"));
        let mut builder = AggregateBuilder::new();
        for record in inputs {
            let record = record.user_record();
            let expected_len = builder.encoded_len_with(&record);
            builder.push(record);
            assert_eq!(builder.encoded_len(), expected_len, "{id}");
        }
        let encoded = builder.finish();
        assert_eq!(encoded.len(), loaded.bin.len(), "{id}: length");
        assert!(encoded == loaded.bin, "{id}: bytes differ");
        checked += 1;
    }
    assert!(checked > 0, "no py/ case in index.json");
}

#[test]
fn the_bad_md5_vector_is_our_encoding_with_its_last_byte_flipped() {
    let all = load_all();
    let Some(loaded) = all.iter().find(|l| l.entry.id == "edge/corrupt_bad_md5") else {
        return;
    };
    let mut builder = AggregateBuilder::new();
    for record in loaded.case.input_user_records.as_ref().expect("inputs") {
        builder.push(record.user_record());
    }
    let encoded = builder.finish();
    assert_eq!(encoded.len(), loaded.bin.len());
    let last = encoded.len() - 1;
    assert_eq!(encoded[..last], loaded.bin[..last]);
    assert_ne!(encoded[last], loaded.bin[last]);
}

const ONE_MIB: usize = 1024 * 1024;

#[test]
fn filling_to_one_mib_splits_as_the_reference_aggregator_does() {
    let all = load_all();
    let find = |id: &str| all.iter().find(|l| l.entry.id == id);
    let (Some(part0), Some(part1)) =
        (find("py/agg_split_at_1mib.part0"), find("py/agg_split_at_1mib.part1"))
    else {
        return;
    };
    let records: Vec<UserRecord> = [part0, part1]
        .iter()
        .flat_map(|l| l.case.expected_user_records.as_ref().expect("records"))
        .map(VectorRecord::user_record)
        .collect();
    let mut aggregates = Vec::new();
    let mut builder = AggregateBuilder::new();
    for record in records {
        if let Err(rejected) = builder.try_push(record, ONE_MIB) {
            aggregates.push(builder.finish());
            builder.clear();
            builder.try_push(rejected.record, ONE_MIB).expect("fits alone");
        }
    }
    aggregates.push(builder.finish());
    assert_eq!(aggregates, vec![part0.bin.clone(), part1.bin.clone()]);
}

#[test]
fn the_near_one_mib_vector_is_exactly_at_the_limit() {
    let all = load_all();
    let Some(loaded) = all.iter().find(|l| l.entry.id == "py/agg_near_1mib") else {
        return;
    };
    let record = loaded.case.expected_user_records.as_ref().expect("records")[0].user_record();
    let mut builder = AggregateBuilder::new();
    assert_eq!(builder.encoded_len_with(&record), ONE_MIB);
    let mut bigger = record.clone();
    bigger.data = Bytes::from([&record.data[..], b"!"].concat());
    assert!(builder.try_push(bigger, ONE_MIB).is_err());
    builder.try_push(record, ONE_MIB).expect("exactly at the limit");
    assert_eq!(builder.finish(), loaded.bin);
}
