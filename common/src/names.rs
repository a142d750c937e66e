//! Validated names: streams, shards, consumers and partition keys.
//!
//! Each newtype can only hold a value that Kinesis accepts, so code that holds one never has
//! to check it again.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use crate::{ValidationError, clip};

/// Stream, shard and consumer names share one alphabet and length limit
/// (Kinesis API reference: `StreamName`, `ShardId`, `ConsumerName` patterns `[a-zA-Z0-9_.-]+`,
/// length 1 to 128).
fn is_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $variant:ident, $field:ident) => {
        $(#[$doc])*
        ///
        /// Cheap to clone: the text is shared, not copied.
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Checks `value` against the Kinesis pattern `[a-zA-Z0-9_.-]{1,128}`.
            pub fn new(value: impl Into<String>) -> Result<Self, ValidationError> {
                let value = value.into();
                if is_name(&value) {
                    Ok(Self(value.into()))
                } else {
                    Err(ValidationError::$variant { $field: clip(&value, 140) })
                }
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = ValidationError;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }
    };
}

name_type!(
    /// The name of a Kinesis data stream.
    StreamName, StreamName, name
);
name_type!(
    /// The id of a shard, such as `shardId-000000000000`.
    ShardId, ShardId, id
);
name_type!(
    /// The name of an enhanced fan-out stream consumer.
    ConsumerName, ConsumerName, name
);

/// A partition key: 1 to 256 Unicode characters (Kinesis API reference, `PutRecordsRequestEntry`).
///
/// Kinesis counts characters, not bytes, so a key of 256 multi-byte characters is valid although
/// it is longer than 256 bytes.
///
/// Cheap to clone: the text is shared, not copied.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionKey(Arc<str>);

impl PartitionKey {
    /// The most Unicode characters a partition key may hold.
    pub const MAX_CHARS: usize = 256;

    /// Checks that `value` holds 1 to 256 Unicode characters.
    pub fn new(value: impl Into<String>) -> Result<Self, ValidationError> {
        let value = value.into();
        if value.is_empty() {
            return Err(ValidationError::PartitionKeyEmpty);
        }
        // Cheap path: 256 bytes are at most 256 characters.
        if value.len() > Self::MAX_CHARS {
            let chars = value.chars().count();
            if chars > Self::MAX_CHARS {
                return Err(ValidationError::PartitionKeyTooLong { chars });
            }
        }
        Ok(Self(value.into()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's UTF-8 bytes, which Kinesis hashes and counts against request size limits.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The size in bytes that the key adds to a record's size for Kinesis limits.
    pub fn len_bytes(&self) -> usize {
        self.0.len()
    }

    /// Whether both keys have the same text; cheap when they share it (clones of one key)
    /// and, for keys of equal length, when their first 16 bytes tell them apart.
    #[inline]
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        if Arc::ptr_eq(&self.0, &other.0) {
            return true;
        }
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        // Two overlapping words cover 4 to 16 bytes; longer keys are compared in full only
        // when their first 16 bytes agree.
        let word = |bytes: &[u8], at: usize| {
            u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
        };
        let half = |bytes: &[u8], at: usize| {
            u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
        };
        match a.len() {
            0..4 => a == b,
            len @ 4..8 => half(a, 0) == half(b, 0) && half(a, len - 4) == half(b, len - 4),
            len @ 8..=16 => word(a, 0) == word(b, 0) && word(a, len - 8) == word(b, len - 8),
            _ => word(a, 0) == word(b, 0) && word(a, 8) == word(b, 8) && a[16..] == b[16..],
        }
    }

    /// The key's text as an owned string.
    pub fn into_string(self) -> String {
        self.0.as_ref().to_owned()
    }
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for PartitionKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for PartitionKey {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for PartitionKey {
    type Error = ValidationError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<String> for PartitionKey {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_follow_the_kinesis_pattern() {
        assert!(StreamName::new("orders-v2.prod_1").is_ok());
        assert!(StreamName::new("a".repeat(128)).is_ok());
        assert_eq!(
            StreamName::new("a".repeat(129)),
            Err(ValidationError::StreamName { name: "a".repeat(129) })
        );
        assert!(StreamName::new("").is_err());
        assert!(StreamName::new("has space").is_err());
        assert!(StreamName::new("slash/no").is_err());
    }

    #[test]
    fn partition_keys_count_characters_not_bytes() {
        let two_byte = "é".repeat(256);
        assert_eq!(two_byte.len(), 512);
        assert!(PartitionKey::new(two_byte).is_ok());
        assert_eq!(
            PartitionKey::new("é".repeat(257)),
            Err(ValidationError::PartitionKeyTooLong { chars: 257 })
        );
        assert_eq!(PartitionKey::new(""), Err(ValidationError::PartitionKeyEmpty));
        assert!(PartitionKey::new("k".repeat(256)).is_ok());
    }

    #[test]
    fn errors_name_the_limit() {
        let err = PartitionKey::new("x".repeat(300)).unwrap_err();
        assert!(err.to_string().contains("256"), "{err}");
        let err = ShardId::new("").unwrap_err();
        assert!(err.to_string().contains("1 to 128"), "{err}");
    }
}
