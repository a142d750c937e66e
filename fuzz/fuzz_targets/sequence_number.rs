//! Any bytes as the text of sequence numbers, checkpoints and explicit hash keys: the parsers
//! must not panic, must accept exactly what the Kinesis patterns allow, and what they accept
//! must round-trip and order like a reference comparison of decimal strings.
//!
//! The input is split at `0xFF` bytes (never part of UTF-8): the first two parts are two texts
//! (read as UTF-8, invalid bytes replaced), the third gives the sub-sequence number (up to 8
//! bytes, little-endian). Inputs without `0xFF` check one text on its own.

#![no_main]

use std::cmp::Ordering;

use kinesis_common::{ExtendedSequenceNumber, HashKey, SequenceNumber, ValidationError};
use libfuzzer_sys::fuzz_target;

/// The most digits a sequence number may have (Kinesis API reference, `SequenceNumber`).
const MAX_SEQUENCE_DIGITS: usize = 129;
/// 2^128 - 1, the largest hash key, in decimal.
const MAX_HASH_KEY: &str = "340282366920938463463374607431768211455";
const SENTINELS: [&str; 4] = ["AT_TIMESTAMP", "TRIM_HORIZON", "LATEST", "SHARD_END"];

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// The digits without leading zeros ("0" for zero): the reference canonical form.
fn canonical(digits: &str) -> &str {
    match digits.trim_start_matches('0') {
        "" => "0",
        trimmed => trimmed,
    }
}

/// The reference order of two digit strings: numeric, by length then digit by digit once the
/// leading zeros are gone.
fn reference_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (canonical(a), canonical(b));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The reference rank of a checkpoint in the KCL's order; sequence numbers rank between LATEST
/// and SHARD_END.
fn sentinel_rank(text: &str) -> Option<u8> {
    match text {
        "AT_TIMESTAMP" => Some(0),
        "TRIM_HORIZON" => Some(1),
        "LATEST" => Some(2),
        "SHARD_END" => Some(4),
        _ => None,
    }
}

/// `SequenceNumber::new` accepts exactly 1 to 129 ASCII digits (leading zeros count toward
/// the limit), and what it accepts round-trips in canonical form.
fn check_sequence(text: &str) -> Option<SequenceNumber> {
    let valid = is_digits(text) && text.len() <= MAX_SEQUENCE_DIGITS;
    match SequenceNumber::new(text) {
        Ok(sequence) => {
            assert!(valid, "accepted {text:?}");
            assert_eq!(sequence.as_str(), canonical(text), "canonical form of {text:?}");
            assert_eq!(sequence.to_string(), sequence.as_str());
            let again = SequenceNumber::new(sequence.as_str()).expect("canonical form parses");
            assert_eq!(again, sequence);
            assert_eq!(again.cmp(&sequence), Ordering::Equal);
            assert_eq!(text.parse::<SequenceNumber>().expect("FromStr agrees"), sequence);
            Some(sequence)
        }
        Err(error) => {
            assert!(!valid, "rejected {text:?}: {error}");
            assert!(matches!(error, ValidationError::SequenceNumber { .. }), "{error:?}");
            assert!(error.to_string().contains("1 to 129 decimal digits"), "{error}");
            None
        }
    }
}

/// `ExtendedSequenceNumber::from_checkpoint` accepts the four sentinels and sequence numbers,
/// and `checkpoint_str` / `sub_sequence` give back what a lease item would store.
fn check_checkpoint(text: &str, sub: u64) -> Option<ExtendedSequenceNumber> {
    let sequence = SequenceNumber::new(text).ok();
    match ExtendedSequenceNumber::from_checkpoint(text, sub) {
        Ok(position) => {
            if SENTINELS.contains(&text) {
                assert!(position.is_sentinel());
                assert_eq!(position.checkpoint_str(), text);
                assert_eq!(position.sub_sequence(), 0, "sentinels ignore the sub-sequence");
                assert_eq!(position.sequence(), None);
            } else {
                let sequence = sequence.expect("accepted only as a sequence number");
                assert!(!position.is_sentinel());
                assert_eq!(position.checkpoint_str(), sequence.as_str());
                assert_eq!(position.sub_sequence(), sub);
                assert_eq!(position.sequence(), Some(&sequence));
                assert_eq!(position, ExtendedSequenceNumber::new(sequence, sub));
            }
            let again = ExtendedSequenceNumber::from_checkpoint(
                position.checkpoint_str(),
                position.sub_sequence(),
            )
            .expect("stored attributes parse");
            assert_eq!(again, position);
            Some(position)
        }
        Err(error) => {
            assert!(sequence.is_none() && !SENTINELS.contains(&text), "rejected {text:?}");
            assert!(matches!(error, ValidationError::Checkpoint { .. }), "{error:?}");
            assert!(error.to_string().contains("TRIM_HORIZON, LATEST, AT_TIMESTAMP"), "{error}");
            None
        }
    }
}

/// `HashKey::from_decimal` accepts digits (leading zeros allowed) up to 2^128 - 1, and says
/// whether a rejected text was not decimal or out of range.
fn check_hash_key(text: &str) {
    let reference = if !is_digits(text) {
        Err("not decimal")
    } else if reference_cmp(text, MAX_HASH_KEY) == Ordering::Greater {
        Err("out of range")
    } else {
        Ok(canonical(text).parse::<u128>().expect("at most 2^128 - 1"))
    };
    match (HashKey::from_decimal(text), reference) {
        (Ok(key), Ok(value)) => {
            assert_eq!(key.0, value, "{text:?}");
            assert_eq!(key.to_string(), canonical(text));
            assert_eq!(HashKey::from_decimal(&key.to_string()), Ok(key));
        }
        (Err(ValidationError::HashKeyNotDecimal { .. }), Err("not decimal")) => {}
        (Err(ValidationError::HashKeyOutOfRange { .. }), Err("out of range")) => {}
        (got, expected) => {
            panic!("HashKey::from_decimal({text:?}): {got:?}, expected {expected:?}")
        }
    }
}

fn check_order(a: &str, b: &str, sub_a: u64, sub_b: u64) {
    if let (Some(x), Some(y)) = (SequenceNumber::new(a).ok(), SequenceNumber::new(b).ok()) {
        let expected = reference_cmp(a, b);
        assert_eq!(x.cmp(&y), expected, "{a:?} vs {b:?}");
        assert_eq!(x == y, expected == Ordering::Equal, "{a:?} vs {b:?}");
        assert_eq!(y.cmp(&x), expected.reverse());
        if let (Ok(p), Ok(q)) = (canonical(a).parse::<u128>(), canonical(b).parse::<u128>()) {
            assert_eq!(x.cmp(&y), p.cmp(&q), "{a:?} vs {b:?} as integers");
        }
    }
    let (Ok(x), Ok(y)) = (
        ExtendedSequenceNumber::from_checkpoint(a, sub_a),
        ExtendedSequenceNumber::from_checkpoint(b, sub_b),
    ) else {
        return;
    };
    let expected = match (sentinel_rank(a), sentinel_rank(b)) {
        (Some(p), Some(q)) => p.cmp(&q),
        (Some(p), None) => p.cmp(&3),
        (None, Some(q)) => 3.cmp(&q),
        (None, None) => reference_cmp(a, b).then(sub_a.cmp(&sub_b)),
    };
    assert_eq!(x.cmp(&y), expected, "{x:?} vs {y:?}");
    assert_eq!(x == y, expected == Ordering::Equal, "{x:?} vs {y:?}");
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0xFF);
    let a = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let b = parts.next().map(|p| String::from_utf8_lossy(p).into_owned());
    let sub_bytes = parts.next().unwrap_or_default();
    let mut sub = [0u8; 8];
    let n = sub_bytes.len().min(8);
    sub[..n].copy_from_slice(&sub_bytes[..n]);
    let sub = u64::from_le_bytes(sub);

    for text in std::iter::once(a.as_str()).chain(b.as_deref()) {
        check_sequence(text);
        check_checkpoint(text, sub);
        check_hash_key(text);
    }
    if let Some(b) = &b {
        // The second text gets a different sub-sequence so that equal numbers order by it.
        check_order(&a, b, sub, sub.rotate_left(32));
    }
});
