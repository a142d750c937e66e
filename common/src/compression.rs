//! The compression envelope: a self-describing wrapper this toolkit's producer may put around
//! a Kinesis record's data (an aggregated record or a plain one), and that this toolkit's
//! consumer ([`crate::aggregation::deaggregate`]) removes before it looks for an aggregate.
//!
//! **This is not a KPL or KCL format.** The Java KPL never writes it and the Java KCL (or any
//! other de-aggregator) does not understand it: such consumers see an enveloped record as one
//! opaque plain record whose data starts with [`ENVELOPE_MAGIC`]. Turn compression on only
//! when every consumer of the stream uses this toolkit (or removes the envelope itself).
//!
//! # Byte format (version 1)
//!
//! ```text
//! offset  size  field
//! 0       4     magic F6 4B 43 45  (0xF6 then ASCII "KCE")        ENVELOPE_MAGIC
//! 4       1     format version, 0x01                              ENVELOPE_VERSION
//! 5       1     codec: 0x01 gzip (RFC 1952, one member)           Codec::id
//!                      0x02 zstd (RFC 8878, one or more frames)
//! 6       4     uncompressed length, unsigned 32-bit big-endian
//! 10      ...   the compressed payload, nothing after it
//! ```
//!
//! Why this magic: `0xF6` never occurs in UTF-8, so no text or JSON record can start with
//! it, and it differs from the KPL magic (`F3 89 9A C2`) in the first byte, so neither
//! format can be taken for the other. It is not the gzip (`1F 8B`) or zstd (`28 B5 2F FD`)
//! magic either.
//!
//! # Invariants
//!
//! - Decompression never produces more than the caller's `max_len` bytes and never
//!   allocates more than that: the declared length is checked against the limit before any
//!   work, output is bounded by it, and the result must be exactly the declared length.
//!   The default limit, [`DEFAULT_MAX_DECOMPRESSED_LEN`], is the largest Kinesis record
//!   (10 MiB, `UpdateMaxRecordSize` / KPL 1.0.6 `MaxUserRecordSize`) plus 64 KiB of slack.
//! - Corrupt input is an error value, never a panic.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;

/// The four bytes an envelope starts with.
pub const ENVELOPE_MAGIC: [u8; 4] = [0xF6, 0x4B, 0x43, 0x45];

/// The envelope format version this crate writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;

/// Bytes before the compressed payload: magic, version, codec, uncompressed length.
pub const HEADER_LEN: usize = 10;

/// The default decompression limit: a 10 MiB Kinesis record (the largest a stream can be
/// configured to take, `UpdateMaxRecordSize` `MaxRecordSizeInKiB` 10240) plus 64 KiB.
pub const DEFAULT_MAX_DECOMPRESSED_LEN: usize = 10 * 1024 * 1024 + 64 * 1024;

/// A compression codec of the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// gzip (DEFLATE in an RFC 1952 member), via `flate2`. Levels 0 to 9, default 6.
    Gzip,
    /// Zstandard (RFC 8878), via `zstd`. Levels 1 to 22 (negative: faster), default 3.
    Zstd,
}

impl Codec {
    /// The codec's byte in the envelope header.
    pub const fn id(self) -> u8 {
        match self {
            Codec::Gzip => 0x01,
            Codec::Zstd => 0x02,
        }
    }

    /// The codec with header byte `id`, if there is one.
    pub const fn from_id(id: u8) -> Option<Codec> {
        match id {
            0x01 => Some(Codec::Gzip),
            0x02 => Some(Codec::Zstd),
            _ => None,
        }
    }

    /// The level used when none is given.
    pub const fn default_level(self) -> i32 {
        match self {
            Codec::Gzip => 6,
            Codec::Zstd => 3,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        })
    }
}

/// What an envelope's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// The codec of the payload.
    pub codec: Codec,
    /// The length of the data once decompressed.
    pub uncompressed_len: usize,
}

/// Why an envelope could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The data ends inside the header.
    #[error("truncated envelope header")]
    TruncatedHeader,
    /// The version byte is not one this crate reads.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    /// The codec byte names no known codec.
    #[error("unknown envelope codec {0:#04x}")]
    UnknownCodec(u8),
    /// The declared uncompressed length is over the caller's limit (a decompression bomb,
    /// or a limit set too low).
    #[error("declared length {declared} exceeds the limit {max}")]
    TooLarge {
        /// The length the header declares.
        declared: usize,
        /// The caller's limit.
        max: usize,
    },
    /// The payload did not decompress to exactly the declared length.
    #[error("decompressed length differs from the declared {declared}")]
    LengthMismatch {
        /// The length the header declares.
        declared: usize,
    },
    /// Bytes follow the compressed payload.
    #[error("trailing bytes after the compressed payload")]
    TrailingData,
    /// The codec rejected the payload.
    #[error("corrupt {codec} payload")]
    Payload {
        /// The payload's codec.
        codec: Codec,
        /// What the codec said.
        #[source]
        source: Arc<io::Error>,
    },
}

/// Why data could not be put in an envelope.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompressError {
    /// The header's 32-bit length field cannot hold the data's length.
    #[error("data of {len} bytes is too large for an envelope")]
    TooLarge {
        /// The data's length.
        len: usize,
    },
    /// The codec failed.
    #[error("{codec} compression failed")]
    Codec {
        /// The codec that failed.
        codec: Codec,
        /// What it said.
        #[source]
        source: io::Error,
    },
}

/// Whether `data` starts with the envelope magic (and so is meant to be an envelope).
pub fn is_envelope(data: &[u8]) -> bool {
    data.starts_with(&ENVELOPE_MAGIC)
}

/// The codec of an envelope, if `data` is one with a known codec byte.
pub fn codec_of(data: &[u8]) -> Option<Codec> {
    header(data).ok().flatten().map(|header| header.codec)
}

/// Reads an envelope header: `Ok(None)` if `data` does not start with the magic.
pub fn header(data: &[u8]) -> Result<Option<EnvelopeHeader>, EnvelopeError> {
    if !is_envelope(data) {
        return Ok(None);
    }
    let Some(&[version, codec, l0, l1, l2, l3]) = data.get(ENVELOPE_MAGIC.len()..HEADER_LEN) else {
        return Err(EnvelopeError::TruncatedHeader);
    };
    if version != ENVELOPE_VERSION {
        return Err(EnvelopeError::UnsupportedVersion(version));
    }
    let codec = Codec::from_id(codec).ok_or(EnvelopeError::UnknownCodec(codec))?;
    let uncompressed_len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
    Ok(Some(EnvelopeHeader { codec, uncompressed_len }))
}

/// Puts `data` in an envelope compressed with `codec` at `level` (the codec's default when
/// `None`; out-of-range levels are clamped to the codec's range).
///
/// The result can be larger than `data` for small or random input; a producer should send
/// the data as it is when the envelope does not make it smaller.
pub fn compress(codec: Codec, level: Option<i32>, data: &[u8]) -> Result<Bytes, CompressError> {
    let len = u32::try_from(data.len()).map_err(|_| CompressError::TooLarge { len: data.len() })?;
    let mut out = Vec::with_capacity(HEADER_LEN + data.len() / 2 + 64);
    out.extend_from_slice(&ENVELOPE_MAGIC);
    out.push(ENVELOPE_VERSION);
    out.push(codec.id());
    out.extend_from_slice(&len.to_be_bytes());
    let level = level.unwrap_or(codec.default_level());
    let failed = |source| CompressError::Codec { codec, source };
    match codec {
        Codec::Gzip => {
            let level = flate2::Compression::new(level.clamp(0, 9).unsigned_abs());
            let mut encoder = flate2::write::GzEncoder::new(out, level);
            encoder.write_all(data).map_err(failed)?;
            out = encoder.finish().map_err(failed)?;
        }
        Codec::Zstd => {
            let range = zstd::compression_level_range();
            let level = level.clamp(*range.start(), *range.end());
            let payload = zstd::bulk::compress(data, level).map_err(failed)?;
            out.extend_from_slice(&payload);
        }
    }
    Ok(Bytes::from(out))
}

/// Opens an envelope: `Ok(None)` if `data` does not start with the magic (it is not an
/// envelope), the decompressed data if it is a valid one that decompresses to at most
/// `max_len` bytes, an error otherwise.
pub fn decompress(data: &[u8], max_len: usize) -> Result<Option<Bytes>, EnvelopeError> {
    let Some(EnvelopeHeader { codec, uncompressed_len: declared }) = header(data)? else {
        return Ok(None);
    };
    if declared > max_len {
        return Err(EnvelopeError::TooLarge { declared, max: max_len });
    }
    let payload = &data[HEADER_LEN..];
    let failed = |source| EnvelopeError::Payload { codec, source: Arc::new(source) };
    let out = match codec {
        Codec::Gzip => {
            let mut decoder = flate2::bufread::GzDecoder::new(payload);
            // One byte past the declared length tells "too long" from "exact".
            let mut out = Vec::with_capacity(declared.saturating_add(1));
            (&mut decoder).take(declared as u64 + 1).read_to_end(&mut out).map_err(failed)?;
            if out.len() != declared {
                return Err(EnvelopeError::LengthMismatch { declared });
            }
            if !decoder.into_inner().is_empty() {
                return Err(EnvelopeError::TrailingData);
            }
            out
        }
        Codec::Zstd => {
            // Single-shot into a buffer of the declared capacity: output past it is an error,
            // and no window buffer is allocated beyond it. Trailing garbage fails to parse
            // as a further frame.
            let out = zstd::bulk::decompress(payload, declared).map_err(failed)?;
            if out.len() != declared {
                return Err(EnvelopeError::LengthMismatch { declared });
            }
            out
        }
    };
    Ok(Some(Bytes::from(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODECS: [Codec; 2] = [Codec::Gzip, Codec::Zstd];

    fn sample() -> Vec<u8> {
        (0..50_000u32).flat_map(|i| format!("record {} ", i % 97).into_bytes()).collect()
    }

    #[test]
    fn round_trips_with_every_codec_and_level() {
        let data = sample();
        for codec in CODECS {
            for level in [None, Some(0), Some(1), Some(9), Some(-100), Some(100)] {
                let envelope = compress(codec, level, &data).unwrap();
                // gzip level 0 (and below, clamped) stores without compressing.
                let stored = codec == Codec::Gzip && level.is_some_and(|l| l <= 0);
                assert!(stored || envelope.len() < data.len() / 4, "{codec} {level:?}");
                assert_eq!(codec_of(&envelope), Some(codec));
                let back = decompress(&envelope, data.len()).unwrap().unwrap();
                assert_eq!(back, data);
            }
        }
    }

    #[test]
    fn empty_data_round_trips() {
        for codec in CODECS {
            let envelope = compress(codec, None, b"").unwrap();
            assert_eq!(decompress(&envelope, 0).unwrap().unwrap(), Bytes::new());
        }
    }

    #[test]
    fn header_layout_is_as_documented() {
        let envelope = compress(Codec::Zstd, None, b"hello").unwrap();
        assert_eq!(&envelope[..10], &[0xF6, 0x4B, 0x43, 0x45, 1, 2, 0, 0, 0, 5]);
        let envelope = compress(Codec::Gzip, None, b"hello").unwrap();
        assert_eq!(&envelope[..10], &[0xF6, 0x4B, 0x43, 0x45, 1, 1, 0, 0, 0, 5]);
        assert_eq!(&envelope[10..12], &[0x1F, 0x8B]);
    }

    #[test]
    fn data_without_the_magic_is_not_an_envelope() {
        assert!(decompress(b"", 10).unwrap().is_none());
        assert!(decompress(b"{\"json\":1}", 10).unwrap().is_none());
        assert!(decompress(&crate::aggregation::MAGIC, 10).unwrap().is_none());
        assert!(!is_envelope(&[0xF6, 0x4B, 0x43]));
    }

    #[test]
    fn corrupt_headers_are_errors() {
        let good = compress(Codec::Gzip, None, b"hello").unwrap();
        for cut in 4..HEADER_LEN {
            assert!(matches!(decompress(&good[..cut], 100), Err(EnvelopeError::TruncatedHeader)));
        }
        let mut bad = good.to_vec();
        bad[4] = 2;
        assert!(matches!(decompress(&bad, 100), Err(EnvelopeError::UnsupportedVersion(2))));
        let mut bad = good.to_vec();
        bad[5] = 0x7F;
        assert!(matches!(decompress(&bad, 100), Err(EnvelopeError::UnknownCodec(0x7F))));
    }

    #[test]
    fn corrupt_payloads_are_errors_not_panics() {
        let data = sample();
        for codec in CODECS {
            let good = compress(codec, None, &data).unwrap();
            // Truncated payload.
            for cut in [HEADER_LEN, HEADER_LEN + 1, good.len() / 2, good.len() - 1] {
                assert!(decompress(&good[..cut], data.len()).is_err(), "{codec} cut {cut}");
            }
            // A flipped byte in the middle of the payload.
            let mut bad = good.to_vec();
            let middle = bad.len() / 2;
            bad[middle] ^= 0x55;
            assert!(decompress(&bad, data.len()).is_err(), "{codec} flipped");
            // Trailing garbage.
            let mut bad = good.to_vec();
            bad.extend_from_slice(b"garbage");
            assert!(decompress(&bad, data.len()).is_err(), "{codec} trailing");
        }
    }

    #[test]
    fn declared_length_must_match_exactly() {
        for codec in CODECS {
            let mut bad = compress(codec, None, b"hello world").unwrap().to_vec();
            bad[9] = 10; // declares one byte less than the payload holds
            assert!(decompress(&bad, 100).is_err(), "{codec} shorter");
            bad[9] = 12; // declares one byte more
            assert!(
                matches!(
                    decompress(&bad, 100),
                    Err(EnvelopeError::LengthMismatch { declared: 12 })
                ),
                "{codec} longer"
            );
        }
    }

    #[test]
    fn bombs_are_stopped_at_the_limit() {
        let zeros = vec![0u8; 4 * 1024 * 1024];
        for codec in CODECS {
            let envelope = compress(codec, None, &zeros).unwrap();
            assert!(envelope.len() < 64 * 1024, "{codec}: {}", envelope.len());
            // Honest header, limit below it: refused before any work.
            assert!(matches!(
                decompress(&envelope, 1024 * 1024),
                Err(EnvelopeError::TooLarge { declared, max }) if declared == zeros.len() && max == 1024 * 1024
            ));
            // Lying header (claims 1 KiB): output stops at the declared length.
            let mut lying = envelope.to_vec();
            lying[6..10].copy_from_slice(&1024u32.to_be_bytes());
            assert!(decompress(&lying, DEFAULT_MAX_DECOMPRESSED_LEN).is_err(), "{codec}");
            // Within the limit it opens.
            assert_eq!(decompress(&envelope, zeros.len()).unwrap().unwrap().len(), zeros.len());
        }
    }

    #[test]
    fn errors_display_short_lowercase_phrases() {
        let error = EnvelopeError::UnknownCodec(9);
        assert_eq!(error.to_string(), "unknown envelope codec 0x09");
        let error = decompress(&[0xF6, 0x4B, 0x43, 0x45, 1, 1, 0, 0, 0, 1, 0xFF], 10).unwrap_err();
        assert_eq!(error.to_string(), "corrupt gzip payload");
        assert!(std::error::Error::source(&error).is_some());
    }
}
