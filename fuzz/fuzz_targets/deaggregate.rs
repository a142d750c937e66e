//! Any bytes as the data of a Kinesis record: `deaggregate` must not panic, must not lose
//! data, and whatever it accepts as an aggregate must survive a re-encode unchanged; in a page
//! with copies and pieces of itself, `deaggregate_all` must give each record what
//! `deaggregate` gives it alone.

#![no_main]

use bytes::Bytes;
use kinesis_common::aggregation::{
    AggregateBuilder, Deaggregated, DeaggregationOutcome, UserRecord, deaggregate_all_with_limit,
    deaggregate_with_limit,
};
use kinesis_common::{HashKey, HashKeyRange, KinesisRecord, PartitionKey, SequenceNumber};
use libfuzzer_sys::fuzz_target;

/// Small enough that bombs are cheap to reject while fuzzing.
const MAX_DECOMPRESSED: usize = 1 << 20;

fn check(input: &KinesisRecord, out: &Deaggregated) {
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
        _ => {
            // Plain or passed through: exactly the input (or its decompressed form).
            assert_eq!(out.records.len(), 1);
            assert_eq!(out.records[0].sub_sequence_number, None);
            if out.compression.is_none() {
                assert_eq!(out.records[0].data, input.data);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let input = KinesisRecord {
        sequence_number: SequenceNumber::new(
            "49590338271490256608559692538361571095921575989136588898",
        )
        .expect("valid sequence number"),
        partition_key: "fuzz".to_owned(),
        data: Bytes::copy_from_slice(data),
        approximate_arrival: None,
    };
    let narrow = HashKeyRange::new(HashKey(1 << 64), HashKey(u128::MAX >> 1)).expect("ordered");
    for range in [None, Some(HashKeyRange::FULL), Some(narrow)] {
        let out = deaggregate_with_limit(&input, range, MAX_DECOMPRESSED);
        check(&input, &out);
    }

    // A page: the input twice (so that at least two digests are computed together when it
    // looks like an aggregate) and its two halves.
    let half = data.len() / 2;
    let page: Vec<KinesisRecord> = [data, data, &data[..half], &data[half..]]
        .into_iter()
        .map(|bytes| KinesisRecord { data: Bytes::copy_from_slice(bytes), ..input.clone() })
        .collect();
    for range in [None, Some(narrow)] {
        let together = deaggregate_all_with_limit(&page, range, MAX_DECOMPRESSED);
        assert_eq!(together.len(), page.len());
        for (record, out) in page.iter().zip(&together) {
            let alone = deaggregate_with_limit(record, range, MAX_DECOMPRESSED);
            assert_eq!(format!("{out:?}"), format!("{alone:?}"));
        }
    }

    // Re-encode what was accepted as an aggregate: decoding that must give the same records.
    let out = deaggregate_with_limit(&input, None, MAX_DECOMPRESSED);
    if !matches!(out.outcome, DeaggregationOutcome::Aggregated) || out.records.is_empty() {
        return;
    }
    let mut builder = AggregateBuilder::new();
    for record in &out.records {
        // Keys the aggregate may carry but PutRecords would refuse (empty, too long).
        let Ok(key) = PartitionKey::new(&*record.partition_key) else {
            return;
        };
        let mut user_record = UserRecord::new(key, record.data.clone());
        user_record.explicit_hash_key = record.explicit_hash_key;
        let expected_len = builder.encoded_len_with(&user_record);
        builder.push(user_record);
        assert_eq!(builder.encoded_len(), expected_len);
    }
    let encoded = builder.finish();
    assert_eq!(encoded.len(), builder.encoded_len());
    let again = deaggregate_with_limit(
        &KinesisRecord { data: encoded, ..input.clone() },
        None,
        MAX_DECOMPRESSED,
    );
    assert!(matches!(again.outcome, DeaggregationOutcome::Aggregated));
    assert_eq!(again.records.len(), out.records.len());
    for (a, b) in again.records.iter().zip(&out.records) {
        assert_eq!(a.partition_key, b.partition_key);
        assert_eq!(a.explicit_hash_key, b.explicit_hash_key);
        assert_eq!(a.data, b.data);
    }
});
