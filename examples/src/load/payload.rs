//! The record payload: a 48-byte header that names the run, the record and its place among
//! its partition key's records, then filler up to the requested size. The layout is in the
//! [module docs of `load`](super).
//!
//! Invariants: [`encode`] and [`decode`] round-trip every header; [`decode`] never panics and
//! refuses, with a [`Foreign`] reason, anything that is not a whole, intact payload of a
//! version it knows.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The first four bytes of every payload.
pub const MAGIC: [u8; 4] = *b"KTKL";
/// The header version this code writes and reads.
pub const VERSION: u8 = 1;
/// Bytes of the version 1 header; the smallest payload.
pub const HEADER_LEN: usize = 48;
/// Where the checksum sits; it covers every byte of the payload but its own four.
const CHECKSUM_AT: usize = 36;
/// Flag bit: the filler is text (compressible) rather than pseudo-random bytes.
const FLAG_TEXT_FILLER: u16 = 1;

/// Which run of the load generator wrote a record: chosen at random by `produce` and given to
/// `consume --run-id` to judge that run only. Written as 16 hexadecimal digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(pub u64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for RunId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix("0x").unwrap_or(s);
        u64::from_str_radix(digits, 16)
            .map(RunId)
            .map_err(|_| format!("run id {s:?} is not 1 to 16 hexadecimal digits"))
    }
}

impl Serialize for RunId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What the header says about a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The run that wrote it.
    pub run_id: RunId,
    /// The record's id in its run: records are numbered `0, 1, 2, ...` in send order.
    pub record_id: u64,
    /// Which partition key it was sent with (the key is `key-<index>`).
    pub key_index: u32,
    /// Its place among the records of its key: `0, 1, 2, ...` in send order.
    pub key_seq: u64,
    /// When it was handed to the producer (microsecond precision).
    pub sent_at: SystemTime,
}

/// What fills a payload after its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Filler {
    /// Pseudo-random bytes (incompressible), from the record id.
    #[default]
    Random,
    /// Repeated text that compresses well, to exercise compression.
    Text,
}

/// Why data is not a load-generator payload (the verifier counts these as foreign).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Foreign {
    /// Shorter than a header.
    TooShort,
    /// Does not start with [`MAGIC`].
    BadMagic,
    /// A header version this code does not know.
    UnknownVersion,
    /// The header length field is below [`HEADER_LEN`] or past the end of the data.
    BadHeaderLength,
    /// The checksum does not match: the payload was damaged on the way.
    ChecksumMismatch,
}

impl fmt::Display for Foreign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Foreign {
    /// A short name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooShort => "too-short",
            Self::BadMagic => "bad-magic",
            Self::UnknownVersion => "unknown-version",
            Self::BadHeaderLength => "bad-header-length",
            Self::ChecksumMismatch => "checksum-mismatch",
        }
    }
}

/// Encodes a payload of `size` bytes (at least [`HEADER_LEN`]: smaller sizes give a bare
/// header).
pub fn encode(header: &Header, size: usize, filler: Filler) -> Bytes {
    let size = size.max(HEADER_LEN);
    let mut out = vec![0u8; size];
    out[0..4].copy_from_slice(&MAGIC);
    out[4] = VERSION;
    out[5] = HEADER_LEN as u8;
    let flags = match filler {
        Filler::Random => 0,
        Filler::Text => FLAG_TEXT_FILLER,
    };
    out[6..8].copy_from_slice(&flags.to_be_bytes());
    out[8..16].copy_from_slice(&header.run_id.0.to_be_bytes());
    out[16..24].copy_from_slice(&header.record_id.to_be_bytes());
    out[24..32].copy_from_slice(&header.key_seq.to_be_bytes());
    out[32..36].copy_from_slice(&header.key_index.to_be_bytes());
    out[40..48].copy_from_slice(&micros_since_epoch(header.sent_at).to_be_bytes());
    fill(&mut out[HEADER_LEN..], filler, header.run_id.0 ^ header.record_id);
    let sum = checksum(&out);
    out[CHECKSUM_AT..CHECKSUM_AT + 4].copy_from_slice(&sum.to_be_bytes());
    Bytes::from(out)
}

/// Decodes a payload's header, checking magic, version, header length and checksum.
pub fn decode(data: &[u8]) -> Result<Header, Foreign> {
    if data.len() < 8 {
        return Err(Foreign::TooShort);
    }
    if data[0..4] != MAGIC {
        return Err(Foreign::BadMagic);
    }
    if data[4] != VERSION {
        return Err(Foreign::UnknownVersion);
    }
    if data.len() < HEADER_LEN {
        return Err(Foreign::TooShort);
    }
    let header_len = usize::from(data[5]);
    if header_len < HEADER_LEN || header_len > data.len() {
        return Err(Foreign::BadHeaderLength);
    }
    let stored = u32::from_be_bytes(field(data, CHECKSUM_AT));
    if stored != checksum(data) {
        return Err(Foreign::ChecksumMismatch);
    }
    Ok(Header {
        run_id: RunId(u64::from_be_bytes(field(data, 8))),
        record_id: u64::from_be_bytes(field(data, 16)),
        key_seq: u64::from_be_bytes(field(data, 24)),
        key_index: u32::from_be_bytes(field(data, 32)),
        sent_at: UNIX_EPOCH + Duration::from_micros(u64::from_be_bytes(field(data, 40))),
    })
}

/// `N` bytes at `at`; the caller checked the length.
fn field<const N: usize>(data: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&data[at..at + N]);
    out
}

/// Microseconds since the Unix epoch (0 for earlier times, which no clock here reports).
pub fn micros_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The checksum of a payload: FNV-1a's constants over little-endian 8-byte words (then the
/// remaining bytes one at a time) of bytes `0..36` and, separately continued, `40..`, folded
/// to 32 bits. Word-wise so that a 1 MiB payload costs well under a millisecond; it detects
/// damage, it is not meant to resist forgery.
fn checksum(data: &[u8]) -> u32 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    fn mix(mut h: u64, bytes: &[u8]) -> u64 {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            h = (h ^ u64::from_le_bytes(word.try_into().unwrap_or_default())).wrapping_mul(PRIME);
        }
        for &b in words.remainder() {
            h = (h ^ u64::from(b)).wrapping_mul(PRIME);
        }
        h
    }
    let h = mix(0xcbf2_9ce4_8422_2325, &data[..CHECKSUM_AT]);
    let h = mix(h, &data[CHECKSUM_AT + 4..]);
    (h ^ (h >> 32)) as u32
}

/// Fills `out` with the filler's bytes; random filler comes from xorshift64* seeded by `seed`.
fn fill(out: &mut [u8], filler: Filler, seed: u64) {
    match filler {
        Filler::Random => {
            let mut state = seed | 1;
            let mut chunks = out.chunks_exact_mut(8);
            let mut next = || {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes()
            };
            for chunk in &mut chunks {
                chunk.copy_from_slice(&next());
            }
            let rest = chunks.into_remainder();
            let word = next();
            rest.copy_from_slice(&word[..rest.len()]);
        }
        Filler::Text => {
            const TEXT: &[u8] =
                b"kinesis-load filler: the quick brown fox jumps over the lazy dog. ";
            for (byte, text) in out.iter_mut().zip(TEXT.iter().cycle()) {
                *byte = *text;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn header(record_id: u64) -> Header {
        Header {
            run_id: RunId(0xfeed_beef),
            record_id,
            key_index: 7,
            key_seq: 3,
            sent_at: UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
        }
    }

    #[test]
    fn a_payload_has_the_requested_size_and_decodes_to_its_header() {
        for size in [0, 47, 48, 49, 100, 1000] {
            for filler in [Filler::Random, Filler::Text] {
                let data = encode(&header(9), size, filler);
                assert_eq!(data.len(), size.max(HEADER_LEN));
                assert_eq!(decode(&data), Ok(header(9)));
            }
        }
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let data = encode(&header(0x0102), 48, Filler::Random);
        assert_eq!(&data[0..4], b"KTKL");
        assert_eq!(data[4], 1);
        assert_eq!(data[5], 48);
        assert_eq!(&data[8..16], &0xfeed_beef_u64.to_be_bytes());
        assert_eq!(&data[16..24], &0x0102_u64.to_be_bytes());
        assert_eq!(&data[24..32], &3_u64.to_be_bytes());
        assert_eq!(&data[32..36], &7_u32.to_be_bytes());
        assert_eq!(&data[40..48], &1_700_000_000_123_456_u64.to_be_bytes());
    }

    #[test]
    fn text_filler_compresses_and_random_filler_does_not_repeat() {
        let text = encode(&header(1), 300, Filler::Text);
        assert!(text[HEADER_LEN..].starts_with(b"kinesis-load filler"));
        let a = encode(&header(1), 300, Filler::Random);
        let b = encode(&header(2), 300, Filler::Random);
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
    }

    #[test]
    fn data_that_is_not_a_payload_is_foreign_with_a_reason() {
        assert_eq!(decode(b""), Err(Foreign::TooShort));
        assert_eq!(
            decode(b"hello world, not a payload at all......................"),
            Err(Foreign::BadMagic)
        );
        let good = encode(&header(1), 100, Filler::Random);
        let mut v2 = good.to_vec();
        v2[4] = 2;
        assert_eq!(decode(&v2), Err(Foreign::UnknownVersion));
        assert_eq!(decode(&good[..40]), Err(Foreign::TooShort));
        let mut long = good.to_vec();
        long[5] = 200;
        assert_eq!(decode(&long), Err(Foreign::BadHeaderLength));
        let mut flipped = good.to_vec();
        flipped[70] ^= 1;
        assert_eq!(decode(&flipped), Err(Foreign::ChecksumMismatch));
        // A demo-style text record is foreign, not a crash.
        assert_eq!(
            decode(b"12 3 4 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
            Err(Foreign::BadMagic)
        );
    }

    #[test]
    fn run_ids_print_and_parse_as_hex() {
        assert_eq!(RunId(0xab).to_string(), "00000000000000ab");
        assert_eq!("ab".parse::<RunId>(), Ok(RunId(0xab)));
        assert_eq!("0xAB".parse::<RunId>(), Ok(RunId(0xab)));
        assert!("xyz".parse::<RunId>().is_err());
        let json = serde_json::to_string(&RunId(1)).unwrap();
        assert_eq!(json, "\"0000000000000001\"");
        assert_eq!(serde_json::from_str::<RunId>(&json).unwrap(), RunId(1));
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(
            run in any::<u64>(), id in any::<u64>(), key in any::<u32>(), seq in any::<u64>(),
            micros in 0u64..4_000_000_000_000_000, size in 0usize..2000, text in any::<bool>(),
        ) {
            let header = Header {
                run_id: RunId(run), record_id: id, key_index: key, key_seq: seq,
                sent_at: UNIX_EPOCH + Duration::from_micros(micros),
            };
            let filler = if text { Filler::Text } else { Filler::Random };
            let data = encode(&header, size, filler);
            prop_assert_eq!(data.len(), size.max(HEADER_LEN));
            prop_assert_eq!(decode(&data), Ok(header));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&data);
        }

        #[test]
        fn any_single_damaged_byte_is_caught(size in 48usize..400, at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let data = encode(&header(5), size, Filler::Random);
            let mut damaged = data.to_vec();
            damaged[at.index(size)] ^= 1 << bit;
            prop_assert!(decode(&damaged).is_err());
        }
    }
}
