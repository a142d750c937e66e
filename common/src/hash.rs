//! 128-bit hash keys and the hash key ranges of shards.
//!
//! Kinesis maps a record to a shard by a 128-bit unsigned hash key: the explicit hash key if
//! the record has one, else the MD5 digest of the partition key's UTF-8 bytes read as a
//! big-endian integer (Kinesis developer guide, "Partition key"; KPL `user_record.cc`).

use std::fmt;
use std::str::FromStr;

use md5::{Digest, Md5};

use crate::{PartitionKey, ValidationError, clip};

/// A 128-bit hash key that places a record on a shard.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HashKey(pub u128);

impl HashKey {
    /// The smallest hash key.
    pub const MIN: HashKey = HashKey(0);
    /// The largest hash key, 2^128 - 1.
    pub const MAX: HashKey = HashKey(u128::MAX);

    /// The hash key Kinesis computes for a partition key: MD5 of its UTF-8 bytes, big-endian.
    pub fn from_partition_key(key: &PartitionKey) -> Self {
        Self::from_partition_key_bytes(key.as_bytes())
    }

    /// Like [`HashKey::from_partition_key`], for raw key bytes (as found in aggregated records).
    pub fn from_partition_key_bytes(key: &[u8]) -> Self {
        let digest: [u8; 16] = Md5::digest(key).into();
        HashKey(u128::from_be_bytes(digest))
    }

    /// Parses an explicit hash key: a decimal integer in `0..=2^128-1` with no sign and no
    /// white space (Kinesis API reference, `ExplicitHashKey` pattern `0|([1-9]\d{0,38})`;
    /// leading zeros are accepted here, as the KPL's `BigInteger` parser does).
    pub fn from_decimal(text: &str) -> Result<Self, ValidationError> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ValidationError::HashKeyNotDecimal { value: clip(text, 64) });
        }
        let mut value: u128 = 0;
        for b in text.bytes() {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u128::from(b - b'0')))
                .ok_or_else(|| ValidationError::HashKeyOutOfRange { value: clip(text, 64) })?;
        }
        Ok(HashKey(value))
    }
}

impl FromStr for HashKey {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_decimal(s)
    }
}

impl fmt::Display for HashKey {
    /// The decimal form Kinesis uses on the wire.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HashKey({})", self.0)
    }
}

impl From<u128> for HashKey {
    fn from(value: u128) -> Self {
        HashKey(value)
    }
}

/// The inclusive range of hash keys a shard owns.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashKeyRange {
    start: HashKey,
    end: HashKey,
}

impl HashKeyRange {
    /// Every hash key: `0..=2^128-1`.
    pub const FULL: HashKeyRange = HashKeyRange { start: HashKey::MIN, end: HashKey::MAX };

    /// The range `start..=end`; `start` must not be after `end`.
    pub fn new(start: HashKey, end: HashKey) -> Result<Self, ValidationError> {
        if start > end {
            return Err(ValidationError::HashKeyRangeInverted { start: start.0, end: end.0 });
        }
        Ok(Self { start, end })
    }

    /// Parses the decimal start and end that ListShards returns.
    pub fn from_decimal(start: &str, end: &str) -> Result<Self, ValidationError> {
        Self::new(HashKey::from_decimal(start)?, HashKey::from_decimal(end)?)
    }

    /// The first hash key of the range.
    pub fn start(&self) -> HashKey {
        self.start
    }

    /// The last hash key of the range (inclusive).
    pub fn end(&self) -> HashKey {
        self.end
    }

    /// Whether `key` falls inside the range.
    pub fn contains(&self, key: HashKey) -> bool {
        self.start <= key && key <= self.end
    }

    /// Whether the two ranges share at least one hash key.
    pub fn overlaps(&self, other: &HashKeyRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

impl fmt::Debug for HashKeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.start.0, self.end.0)
    }
}

impl fmt::Display for HashKeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.start.0, self.end.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn partition_key_hash_is_big_endian_md5() {
        // md5("a") = 0cc175b9c0f1b6a831c399e269772661
        let key = PartitionKey::new("a").unwrap();
        assert_eq!(HashKey::from_partition_key(&key).0, 0x0cc175b9c0f1b6a831c399e269772661_u128);
    }

    #[test]
    fn explicit_hash_keys_cover_zero_to_two_pow_128_minus_one() {
        assert_eq!(HashKey::from_decimal("0").unwrap(), HashKey::MIN);
        assert_eq!(
            HashKey::from_decimal("340282366920938463463374607431768211455").unwrap(),
            HashKey::MAX
        );
        assert!(matches!(
            HashKey::from_decimal("340282366920938463463374607431768211456"),
            Err(ValidationError::HashKeyOutOfRange { .. })
        ));
        for bad in ["", "-1", "+1", " 1", "1.0", "0x10", "12a"] {
            assert!(
                matches!(
                    HashKey::from_decimal(bad),
                    Err(ValidationError::HashKeyNotDecimal { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(HashKey::from_decimal("007").unwrap(), HashKey(7));
    }

    #[test]
    fn ranges_are_inclusive_and_checked() {
        let r = HashKeyRange::new(HashKey(10), HashKey(20)).unwrap();
        assert!(r.contains(HashKey(10)) && r.contains(HashKey(20)));
        assert!(!r.contains(HashKey(9)) && !r.contains(HashKey(21)));
        assert!(HashKeyRange::new(HashKey(2), HashKey(1)).is_err());
        assert!(HashKeyRange::FULL.contains(HashKey::MAX));
        let s = HashKeyRange::new(HashKey(20), HashKey(30)).unwrap();
        assert!(r.overlaps(&s));
        let t = HashKeyRange::new(HashKey(21), HashKey(30)).unwrap();
        assert!(!r.overlaps(&t));
    }

    proptest! {
        #[test]
        fn decimal_round_trip(v in any::<u128>()) {
            prop_assert_eq!(HashKey::from_decimal(&HashKey(v).to_string()).unwrap(), HashKey(v));
        }
    }
}
