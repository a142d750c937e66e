//! Sequence numbers and the extended sequence numbers that checkpoints are made of.
//!
//! Kinesis sequence numbers are decimal strings of up to 129 digits (Kinesis API reference,
//! `SequenceNumber` pattern `0|([1-9]\d{0,128})`); real streams hand out 56-digit ones. They
//! are never parsed into an integer here: they are compared as digit strings, shorter first.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::{ValidationError, clip};

/// The most digits a sequence number may have.
const MAX_DIGITS: usize = 129;

/// A Kinesis sequence number: 1 to 129 decimal digits, ordered numerically.
///
/// Leading zeros are removed on construction (Kinesis never sends them), so equal numbers have
/// equal text and ordering agrees with equality. Cheap to clone: the text is shared.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SequenceNumber(Arc<str>);

impl SequenceNumber {
    /// Checks that `value` is 1 to 129 decimal digits.
    pub fn new(value: impl Into<String>) -> Result<Self, ValidationError> {
        let value = value.into();
        if value.is_empty()
            || value.len() > MAX_DIGITS
            || !value.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(ValidationError::SequenceNumber { value: clip(&value, 140) });
        }
        let trimmed = value.trim_start_matches('0');
        if trimmed.len() == value.len() {
            Ok(Self(value.into()))
        } else if trimmed.is_empty() {
            Ok(Self("0".into()))
        } else {
            Ok(Self(trimmed.into()))
        }
    }

    /// The decimal text, as Kinesis sends and accepts it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        // No leading zeros: a longer string is a larger number; equal lengths compare by digit.
        self.0.len().cmp(&other.0.len()).then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SequenceNumber({})", self.0)
    }
}

impl FromStr for SequenceNumber {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A position in a shard as the KCL checkpoints it: a sentinel, or a sequence number with the
/// sub-sequence number of a user record inside a KPL aggregate.
///
/// Ordering follows the KCL's `ExtendedSequenceNumber`: `AT_TIMESTAMP < TRIM_HORIZON < LATEST <`
/// every (sequence, sub-sequence) pair, ordered by sequence then sub-sequence, `< SHARD_END`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExtendedSequenceNumber {
    /// Start at a timestamp given elsewhere (sentinel `AT_TIMESTAMP`).
    AtTimestamp,
    /// Start at the oldest record of the shard (sentinel `TRIM_HORIZON`).
    TrimHorizon,
    /// Start after the newest record of the shard (sentinel `LATEST`).
    Latest,
    /// A user record: the Kinesis record's sequence number and the index of the user record
    /// inside it (0 for a record that is not aggregated).
    Sequence {
        /// The Kinesis record's sequence number.
        sequence: SequenceNumber,
        /// The user record's index inside a KPL aggregate; 0 when not aggregated.
        sub_sequence: u64,
    },
    /// Every record of a closed shard has been processed (sentinel `SHARD_END`).
    ShardEnd,
}

impl ExtendedSequenceNumber {
    /// The text the KCL stores in the lease's `checkpoint` attribute for the sentinel.
    pub const TRIM_HORIZON: &'static str = "TRIM_HORIZON";
    /// See [`ExtendedSequenceNumber::TRIM_HORIZON`].
    pub const LATEST: &'static str = "LATEST";
    /// See [`ExtendedSequenceNumber::TRIM_HORIZON`].
    pub const AT_TIMESTAMP: &'static str = "AT_TIMESTAMP";
    /// See [`ExtendedSequenceNumber::TRIM_HORIZON`].
    pub const SHARD_END: &'static str = "SHARD_END";

    /// A position at a user record.
    pub fn new(sequence: SequenceNumber, sub_sequence: u64) -> Self {
        Self::Sequence { sequence, sub_sequence }
    }

    /// Reads a lease's `checkpoint` and `checkpointSubSequenceNumber` attributes.
    ///
    /// The sub-sequence number is ignored for sentinels, as the KCL does.
    pub fn from_checkpoint(checkpoint: &str, sub_sequence: u64) -> Result<Self, ValidationError> {
        match checkpoint {
            Self::TRIM_HORIZON => Ok(Self::TrimHorizon),
            Self::LATEST => Ok(Self::Latest),
            Self::AT_TIMESTAMP => Ok(Self::AtTimestamp),
            Self::SHARD_END => Ok(Self::ShardEnd),
            text => SequenceNumber::new(text)
                .map(|sequence| Self::Sequence { sequence, sub_sequence })
                .map_err(|_| ValidationError::Checkpoint { value: clip(text, 140) }),
        }
    }

    /// The text for the lease's `checkpoint` attribute.
    pub fn checkpoint_str(&self) -> &str {
        match self {
            Self::AtTimestamp => Self::AT_TIMESTAMP,
            Self::TrimHorizon => Self::TRIM_HORIZON,
            Self::Latest => Self::LATEST,
            Self::Sequence { sequence, .. } => sequence.as_str(),
            Self::ShardEnd => Self::SHARD_END,
        }
    }

    /// The value for the lease's `checkpointSubSequenceNumber` attribute (0 for sentinels).
    pub fn sub_sequence(&self) -> u64 {
        match self {
            Self::Sequence { sub_sequence, .. } => *sub_sequence,
            _ => 0,
        }
    }

    /// The sequence number, unless this is a sentinel.
    pub fn sequence(&self) -> Option<&SequenceNumber> {
        match self {
            Self::Sequence { sequence, .. } => Some(sequence),
            _ => None,
        }
    }

    /// Whether this is one of the sentinels rather than a record's position.
    pub fn is_sentinel(&self) -> bool {
        !matches!(self, Self::Sequence { .. })
    }
}

impl fmt::Display for ExtendedSequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sequence { sequence, sub_sequence } => write!(f, "{sequence}/{sub_sequence}"),
            other => f.write_str(other.checkpoint_str()),
        }
    }
}

impl fmt::Debug for ExtendedSequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExtendedSequenceNumber({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seq(s: &str) -> SequenceNumber {
        SequenceNumber::new(s).unwrap()
    }

    #[test]
    fn sequence_numbers_order_numerically_not_lexically() {
        assert!(seq("9") < seq("10"));
        assert!(seq("49590338271490256608559692538361571095921575989136588898") > seq("9"));
        assert_eq!(seq("0007"), seq("7"));
        assert_eq!(seq("000"), seq("0"));
        let long = "9".repeat(129);
        assert!(SequenceNumber::new(long.clone()).is_ok());
        assert!(SequenceNumber::new(format!("1{long}")).is_err());
        for bad in ["", "-1", "1e5", "12 ", "abc"] {
            assert!(SequenceNumber::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn extended_sequence_numbers_order_as_the_kcl_does() {
        let a = ExtendedSequenceNumber::new(seq("100"), 0);
        let b = ExtendedSequenceNumber::new(seq("100"), 3);
        let c = ExtendedSequenceNumber::new(seq("99999"), 0);
        let ordered = [
            ExtendedSequenceNumber::AtTimestamp,
            ExtendedSequenceNumber::TrimHorizon,
            ExtendedSequenceNumber::Latest,
            a,
            b,
            c,
            ExtendedSequenceNumber::ShardEnd,
        ];
        for w in ordered.windows(2) {
            assert!(w[0] < w[1], "{:?} < {:?}", w[0], w[1]);
        }
    }

    #[test]
    fn checkpoints_round_trip_through_lease_attributes() {
        for text in ["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "SHARD_END"] {
            let esn = ExtendedSequenceNumber::from_checkpoint(text, 0).unwrap();
            assert_eq!(esn.checkpoint_str(), text);
            assert!(esn.is_sentinel());
        }
        let esn = ExtendedSequenceNumber::from_checkpoint("12345", 7).unwrap();
        assert_eq!((esn.checkpoint_str(), esn.sub_sequence()), ("12345", 7));
        let err = ExtendedSequenceNumber::from_checkpoint("SHARD_ENDED", 0).unwrap_err();
        assert!(err.to_string().contains("SHARD_END"), "{err}");
    }

    proptest! {
        #[test]
        fn digit_string_order_matches_integer_order(a in any::<u128>(), b in any::<u128>()) {
            prop_assert_eq!(seq(&a.to_string()).cmp(&seq(&b.to_string())), a.cmp(&b));
        }

        #[test]
        fn long_sequence_numbers_order_by_length_then_digits(
            a in "[1-9][0-9]{0,128}", b in "[1-9][0-9]{0,128}"
        ) {
            let expected = a.len().cmp(&b.len()).then(a.cmp(&b));
            prop_assert_eq!(seq(&a).cmp(&seq(&b)), expected);
        }
    }
}
