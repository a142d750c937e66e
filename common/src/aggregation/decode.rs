//! The decoder: [`deaggregate`] turns one Kinesis record into the user records a record
//! processor sees.
//!
//! Invariant: the result is all-or-nothing. Either every user record of a valid aggregate,
//! or the Kinesis record's data as one plain record, or (hash-range filter) nothing, with a
//! [`DeaggregationOutcome`] that says which and why. Never a prefix of an aggregate.

use std::str;

use std::sync::Arc;

use bytes::Bytes;

use super::digest::Digesting;
use super::lanes::digest_each;
use super::wire::{
    Cursor, TAG_DATA, TAG_EXPLICIT_HASH_KEY_INDEX, TAG_PARTITION_KEY_INDEX, WIRE_LEN, WIRE_VARINT,
};
use super::{DIGEST_LEN, FIXED_OVERHEAD, KinesisClientRecord, MAGIC};
use crate::compression::{self, Codec, EnvelopeError};
use crate::{HashKey, HashKeyRange, KinesisRecord, SharedStr};

/// What [`deaggregate`] made of one Kinesis record.
#[derive(Debug, Clone)]
pub struct Deaggregated {
    /// The user records to hand to the record processor, in sub-sequence order. Empty only
    /// for [`DeaggregationOutcome::FilteredOut`] and for a valid aggregate with zero records.
    pub records: Vec<KinesisClientRecord>,
    /// Why the records are what they are; count corrupt records from this.
    pub outcome: DeaggregationOutcome,
    /// The compression envelope the data came in, if any (see [`crate::compression`]).
    pub compression: Option<Codec>,
}

/// How a Kinesis record was decoded.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DeaggregationOutcome {
    /// Not a KPL aggregate: one plain record with the Kinesis record's data.
    Plain,
    /// A valid KPL aggregate: every user record, sub-sequence numbers `0..n`.
    Aggregated,
    /// Looked like a KPL aggregate (or a compression envelope) but is not a valid one: the
    /// data is handed on unchanged as one plain record, as the KCL does.
    PassedThrough(CorruptRecord),
    /// A valid aggregate of which at least one user record falls outside the shard's hash
    /// key range: the whole aggregate yields nothing on this shard, as in KCL 2.x and later
    /// (the KPL may have sent it to the wrong shard and retried it on the right one).
    FilteredOut {
        /// How many user records the aggregate held (all dropped).
        dropped: usize,
        /// How many of them were outside the range (or had an unusable explicit hash key).
        outside: usize,
    },
}

/// Why a Kinesis record that looked like an aggregate was passed through as plain data.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptRecord {
    /// Starts with the KPL magic but has no more than 16 bytes after it
    /// (KCL `AggregatorUtil`: aggregated only if more than the digest follows the magic).
    #[error("too short for an aggregated record")]
    TooShort,
    /// The trailing MD5 does not match the protobuf.
    #[error("aggregated record digest mismatch")]
    DigestMismatch,
    /// The protobuf does not parse as an `AggregatedRecord`.
    #[error("aggregated record protobuf does not parse")]
    Protobuf(#[source] ProtobufError),
    /// A user record names a partition key table entry that does not exist.
    #[error("partition key index out of range")]
    PartitionKeyIndexOutOfRange {
        /// The user record's position in the aggregate.
        record: usize,
        /// The index it names.
        index: u64,
        /// How many entries the table has.
        table_len: usize,
    },
    /// A user record names an explicit hash key table entry that does not exist.
    #[error("explicit hash key index out of range")]
    ExplicitHashKeyIndexOutOfRange {
        /// The user record's position in the aggregate.
        record: usize,
        /// The index it names.
        index: u64,
        /// How many entries the table has.
        table_len: usize,
    },
    /// A user record's explicit hash key is not a decimal integer below 2^128, and no shard
    /// range was given that would have filtered it out.
    #[error("invalid explicit hash key")]
    InvalidExplicitHashKey {
        /// The user record's position in the aggregate.
        record: usize,
    },
    /// The data starts with the compression envelope's magic but does not decompress.
    #[error("corrupt compression envelope")]
    Envelope(#[source] EnvelopeError),
}

/// Why an `AggregatedRecord` protobuf did not parse (Protocol Buffers "Encoding" guide;
/// proto2 `required` fields as protobuf-java enforces them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtobufError {
    /// A field runs past the end of its message.
    #[error("truncated field")]
    Truncated,
    /// A varint is longer than ten bytes.
    #[error("varint too long")]
    VarintTooLong,
    /// A field key is zero or does not fit 32 bits.
    #[error("invalid field key")]
    InvalidTag,
    /// A field uses the deprecated group wire types or an undefined one.
    #[error("unsupported wire type {0}")]
    UnsupportedWireType(u8),
    /// A proto2 `required` field is absent.
    #[error("missing required field {0}")]
    MissingRequiredField(&'static str),
    /// A `string` field is not valid UTF-8.
    #[error("string field is not utf-8")]
    InvalidUtf8,
}

/// De-aggregates one Kinesis record, undoing a compression envelope first, with
/// [`compression::DEFAULT_MAX_DECOMPRESSED_LEN`] as the decompression limit.
///
/// The rules, after the Java KCL (`AggregatorUtil.deaggregate`; KPL `aggregation-format.md`):
///
/// 1. Data that starts with the compression envelope's magic is decompressed
///    ([`crate::compression`]); if that fails, the data is handed on unchanged as one plain
///    record ([`CorruptRecord::Envelope`]). The decompressed bytes replace the data below.
/// 2. The data is an aggregate only if it starts with [`MAGIC`] and more than 16 bytes
///    follow. Anything else is one plain record: sub-sequence number `None`, hash key the MD5
///    of the Kinesis record's partition key. Never filtered by hash range.
/// 3. A digest mismatch, a protobuf that does not parse (truncation, a missing `required`
///    field, a string that is not UTF-8, in any message including tags), or a table index
///    out of range: the data is handed on unchanged as one plain record, and the outcome
///    says why. (The Java KCL keeps the user records decoded before a bad index and loses
///    the rest; here the whole aggregate is checked before any record is handed out, so a
///    corrupt aggregate is never half delivered.)
/// 4. Otherwise each user record gets its partition key from the table, its explicit hash
///    key if it has an index, the hash key (explicit, else MD5 of the partition key), the
///    Kinesis record's sequence number and arrival time, and sub-sequence number `0..n`.
///    Tags and unknown fields are read past and dropped. An aggregate inside a user record's
///    data is not opened (one level only).
/// 5. With `shard_range`, if any user record's hash key is outside it, or its explicit hash
///    key is not a decimal integer below 2^128, the whole aggregate yields no record
///    ([`DeaggregationOutcome::FilteredOut`]), as KCL 2.x does. Without a range nothing is
///    filtered; an unusable explicit hash key then makes the record pass through as in 3.
pub fn deaggregate(record: &KinesisRecord, shard_range: Option<HashKeyRange>) -> Deaggregated {
    deaggregate_with_limit(record, shard_range, compression::DEFAULT_MAX_DECOMPRESSED_LEN)
}

/// [`deaggregate`] with a chosen limit on the decompressed size of an envelope.
pub fn deaggregate_with_limit(
    record: &KinesisRecord,
    shard_range: Option<HashKeyRange>,
    max_decompressed_len: usize,
) -> Deaggregated {
    match prepare(record, max_decompressed_len) {
        Prepared::Done(deaggregated) => deaggregated,
        Prepared::Aggregate { data, codec, protobuf_end } => {
            // A valid aggregate decodes in two light passes, digested on the way; anything
            // else (including every corrupt aggregate) takes the thorough path, which says
            // exactly what is wrong. Nothing decoded is handed out before the digest has been
            // checked.
            let mut digest = Digesting::new(MAGIC.len());
            let decoded = decode_valid(record, &data, protobuf_end, shard_range, |buf, to| {
                digest.advance(buf, to)
            });
            let intact = digest.finish(&data, protobuf_end) == data[protobuf_end..];
            checked(record, data, codec, protobuf_end, shard_range, intact, decoded)
        }
    }
}

/// [`deaggregate`] for several Kinesis records (a GetRecords page, say): the same result for
/// each, in order, but the digests of the aggregates are computed together, sixteen at a time
/// on x86-64 processors with AVX-512 or AVX2 (see [`seal_all`](super::seal_all)), which is
/// several times faster when the page holds several aggregates.
pub fn deaggregate_all<'a>(
    records: impl IntoIterator<Item = &'a KinesisRecord>,
    shard_range: Option<HashKeyRange>,
) -> Vec<Deaggregated> {
    deaggregate_all_with_limit(records, shard_range, compression::DEFAULT_MAX_DECOMPRESSED_LEN)
}

/// [`deaggregate_all`] with a chosen limit on the decompressed size of an envelope.
pub fn deaggregate_all_with_limit<'a>(
    records: impl IntoIterator<Item = &'a KinesisRecord>,
    shard_range: Option<HashKeyRange>,
    max_decompressed_len: usize,
) -> Vec<Deaggregated> {
    let prepared: Vec<(&KinesisRecord, Prepared)> =
        records.into_iter().map(|r| (r, prepare(r, max_decompressed_len))).collect();
    let digests = {
        let protobufs: Vec<&[u8]> = prepared
            .iter()
            .filter_map(|(_, p)| match p {
                Prepared::Aggregate { data, protobuf_end, .. } => {
                    Some(&data[MAGIC.len()..*protobuf_end])
                }
                Prepared::Done(_) => None,
            })
            .collect();
        let mut digests = vec![[0u8; DIGEST_LEN]; protobufs.len()];
        digest_each(&protobufs, &mut digests);
        digests
    };
    let mut digests = digests.into_iter();
    prepared
        .into_iter()
        .map(|(record, prepared)| match prepared {
            Prepared::Done(deaggregated) => deaggregated,
            Prepared::Aggregate { data, codec, protobuf_end } => {
                let digest = digests.next().expect("one digest per aggregate");
                let intact = digest == data[protobuf_end..];
                // A corrupt aggregate goes straight to the thorough path's diagnosis.
                let decoded = if intact {
                    decode_valid(record, &data, protobuf_end, shard_range, |_, _| {})
                } else {
                    None
                };
                checked(record, data, codec, protobuf_end, shard_range, intact, decoded)
            }
        })
        .collect()
}

/// A Kinesis record on its way through [`deaggregate`].
enum Prepared {
    /// Not an aggregate (or an envelope or aggregate too broken to look into): the result.
    Done(Deaggregated),
    /// Magic and more than a digest's length: an aggregate if its digest matches.
    Aggregate { data: Bytes, codec: Option<Codec>, protobuf_end: usize },
}

/// Rules 1 and 2 of [`deaggregate`]: opens an envelope and tells aggregates from the rest.
fn prepare(record: &KinesisRecord, max_decompressed_len: usize) -> Prepared {
    let mut codec = None;
    let data = match compression::decompress(&record.data, max_decompressed_len) {
        Ok(None) => record.data.clone(),
        Ok(Some(decompressed)) => {
            codec = compression::codec_of(&record.data);
            decompressed
        }
        Err(error) => {
            return Prepared::Done(plain(
                record,
                record.data.clone(),
                None,
                DeaggregationOutcome::PassedThrough(CorruptRecord::Envelope(error)),
            ));
        }
    };

    if !data.starts_with(&MAGIC) {
        return Prepared::Done(plain(record, data, codec, DeaggregationOutcome::Plain));
    }
    if data.len() <= FIXED_OVERHEAD {
        let reason = CorruptRecord::TooShort;
        return Prepared::Done(plain(
            record,
            data,
            codec,
            DeaggregationOutcome::PassedThrough(reason),
        ));
    }
    let protobuf_end = data.len() - DIGEST_LEN;
    Prepared::Aggregate { data, codec, protobuf_end }
}

/// Rules 3 to 5 of [`deaggregate`], given whether the digest matched and what the fast
/// decoder made of the aggregate.
fn checked(
    record: &KinesisRecord,
    data: Bytes,
    codec: Option<Codec>,
    protobuf_end: usize,
    shard_range: Option<HashKeyRange>,
    intact: bool,
    decoded: Option<Deaggregated>,
) -> Deaggregated {
    if !intact {
        let reason = CorruptRecord::DigestMismatch;
        return plain(record, data, codec, DeaggregationOutcome::PassedThrough(reason));
    }
    if let Some(deaggregated) = decoded {
        return Deaggregated { compression: codec, ..deaggregated };
    }
    let parsed = match parse_aggregated_record(&data, MAGIC.len(), protobuf_end) {
        Ok(parsed) => parsed,
        Err(error) => {
            let reason = CorruptRecord::Protobuf(error);
            return plain(record, data, codec, DeaggregationOutcome::PassedThrough(reason));
        }
    };
    match expand(record, &data, &parsed, shard_range) {
        Ok(deaggregated) => Deaggregated { compression: codec, ..deaggregated },
        Err(reason) => plain(record, data, codec, DeaggregationOutcome::PassedThrough(reason)),
    }
}

/// The Kinesis record as one plain user record carrying `data`.
fn plain(
    record: &KinesisRecord,
    data: Bytes,
    compression: Option<Codec>,
    outcome: DeaggregationOutcome,
) -> Deaggregated {
    let user_record = KinesisClientRecord {
        sequence_number: record.sequence_number.clone(),
        sub_sequence_number: None,
        partition_key: SharedStr::from(record.partition_key.as_str()),
        explicit_hash_key: None,
        data,
        approximate_arrival: record.approximate_arrival,
    };
    Deaggregated { records: vec![user_record], outcome, compression }
}

/// An `AggregatedRecord` read from the input; strings are validated UTF-8, data are ranges
/// of the input.
struct Parsed<'a> {
    partition_keys: Vec<&'a str>,
    explicit_hash_keys: Vec<&'a str>,
    records: Vec<RawRecord>,
}

struct RawRecord {
    partition_key_index: u64,
    explicit_hash_key_index: Option<u64>,
    data: (usize, usize),
}

/// Decodes the `AggregatedRecord` in `data[MAGIC.len()..end]` if it is valid and every user
/// record can be delivered or the aggregate is filtered out; `None` for anything else (a
/// protobuf error, an index out of range, an unusable explicit hash key without a range),
/// which [`parse_aggregated_record`] and [`expand`] then diagnose. When this returns
/// `Some`, they would return the same.
///
/// May run before the digest is checked (it calls `digested(buf, upto)` as it reads, so
/// that the caller can digest on the way), so it must not assume anything about the bytes;
/// the caller discards the result if the digest fails.
///
/// First pass: the key tables (fields may come in any order, so they are only known once
/// the whole message has been read) and the number of records. Second pass: the records,
/// each straight into its output record; the usual layout (`partition_key_index`, then
/// `explicit_hash_key_index` if any, then `data`, nothing else) is read without the generic
/// field loop.
fn decode_valid(
    record: &KinesisRecord,
    data: &Bytes,
    end: usize,
    shard_range: Option<HashKeyRange>,
    mut digested: impl FnMut(&[u8], usize),
) -> Option<Deaggregated> {
    let buf = &data[..];
    // All partition keys, one after the other, and where each ends: one allocation for the
    // whole table, which every record's key is a part of.
    let mut key_bytes: Vec<u8> = Vec::new();
    let mut key_ends: Vec<usize> = Vec::new();
    let mut explicit_hash_keys: Vec<&str> = Vec::new();
    let mut record_count = 0;
    let mut first_record = end;
    let mut cursor = Cursor::new(buf, MAGIC.len(), end);
    while !cursor.is_done() {
        let field_start = cursor.position();
        match cursor.key().ok()? {
            (1, WIRE_LEN) => {
                let (from, to) = cursor.len_delimited().ok()?;
                key_bytes.extend_from_slice(&buf[from..to]);
                key_ends.push(key_bytes.len());
            }
            (2, WIRE_LEN) => explicit_hash_keys.push(utf8(buf, cursor.len_delimited().ok()?).ok()?),
            (3, WIRE_LEN) => {
                cursor.len_delimited().ok()?;
                first_record = first_record.min(field_start);
                record_count += 1;
            }
            (_, wire_type) => cursor.skip(wire_type).ok()?,
        }
    }

    // The keys are valid UTF-8 each if and only if their concatenation is and every key
    // ends on a character boundary of it; checked at once, which is cheaper than key by key.
    let key_text = String::from_utf8(key_bytes).ok()?;
    if !key_ends.iter().all(|&end| key_text.is_char_boundary(end)) {
        return None;
    }
    let key_text: Arc<str> = Arc::from(key_text);
    let key_range = |index: usize| {
        let start = if index == 0 { 0 } else { key_ends[index - 1] };
        start..key_ends[index]
    };

    let pk_count = key_ends.len() as u64;
    let ehk_count = explicit_hash_keys.len() as u64;
    // Hash keys are needed only for the range check; each table entry is hashed or parsed
    // at most once.
    let mut pk_hashes: Vec<Option<HashKey>> =
        if shard_range.is_some() { vec![None; key_ends.len()] } else { Vec::new() };
    let mut ehk_values = vec![Cached::Unknown; explicit_hash_keys.len()];
    let mut records = Vec::with_capacity(record_count);
    let mut outside = 0;
    let mut position = 0u64;
    let mut cursor = Cursor::new(buf, first_record, end);
    while !cursor.is_done() {
        let (from, to) = match cursor.key().ok()? {
            (3, WIRE_LEN) => cursor.len_delimited().ok()?,
            (_, wire_type) => {
                cursor.skip(wire_type).ok()?;
                continue;
            }
        };
        digested(buf, to);
        let raw = match read_record(buf, from, to) {
            Some(raw) => raw,
            None => parse_record(buf, from, to).ok()?,
        };
        let sub_sequence_number = position;
        position += 1;
        if raw.partition_key_index >= pk_count {
            return None;
        }
        let pk_index = raw.partition_key_index as usize;
        let explicit_hash_key = match raw.explicit_hash_key_index {
            None => None,
            Some(index) if index >= ehk_count => return None,
            Some(index) => {
                let index = index as usize;
                if let Cached::Unknown = ehk_values[index] {
                    ehk_values[index] = HashKey::from_decimal(explicit_hash_keys[index])
                        .map_or(Cached::Invalid, Cached::Valid);
                }
                match ehk_values[index] {
                    Cached::Valid(key) => Some(key),
                    // Not a hash key at all: outside any range.
                    _ if shard_range.is_some() => {
                        outside += 1;
                        continue;
                    }
                    _ => return None,
                }
            }
        };
        if let Some(range) = shard_range {
            let hash_key = match explicit_hash_key {
                Some(key) => key,
                None => *pk_hashes[pk_index].get_or_insert_with(|| {
                    HashKey::from_partition_key_bytes(key_text[key_range(pk_index)].as_bytes())
                }),
            };
            if !range.contains(hash_key) {
                outside += 1;
                continue;
            }
        }
        if outside > 0 {
            // The aggregate is lost to the filter already; only count from here on.
            continue;
        }
        records.push(KinesisClientRecord {
            sequence_number: record.sequence_number.clone(),
            sub_sequence_number: Some(sub_sequence_number),
            partition_key: SharedStr::part(&key_text, key_range(pk_index)),
            explicit_hash_key,
            data: data.slice(raw.data.0..raw.data.1),
            approximate_arrival: record.approximate_arrival,
        });
    }

    if outside > 0 {
        return Some(Deaggregated {
            records: Vec::new(),
            outcome: DeaggregationOutcome::FilteredOut { dropped: record_count, outside },
            compression: None,
        });
    }
    Some(Deaggregated { records, outcome: DeaggregationOutcome::Aggregated, compression: None })
}

/// Reads a `Record` message laid out as encoders write it: `partition_key_index`, then
/// `explicit_hash_key_index` if present, then `data`, ending the message. `None` for any
/// other layout, which [`parse_record`] reads instead.
#[inline]
fn read_record(buf: &[u8], start: usize, end: usize) -> Option<RawRecord> {
    // The most common case: a one-byte key index and a data length below 128.
    if let Some(&[TAG_PARTITION_KEY_INDEX, index, TAG_DATA, len]) = buf.get(start..start + 4)
        && index < 0x80
        && len < 0x80
        && start + 4 + usize::from(len) == end
    {
        let partition_key_index = u64::from(index);
        return Some(RawRecord {
            partition_key_index,
            explicit_hash_key_index: None,
            data: (start + 4, end),
        });
    }
    let mut cursor = Cursor::new(buf, start, end);
    if !cursor.eat(TAG_PARTITION_KEY_INDEX) {
        return None;
    }
    let partition_key_index = cursor.varint().ok()?;
    let explicit_hash_key_index =
        if cursor.eat(TAG_EXPLICIT_HASH_KEY_INDEX) { Some(cursor.varint().ok()?) } else { None };
    if !cursor.eat(TAG_DATA) {
        return None;
    }
    let (from, to) = cursor.len_delimited().ok()?;
    (to == end).then_some(RawRecord {
        partition_key_index,
        explicit_hash_key_index,
        data: (from, to),
    })
}

fn parse_aggregated_record(
    data: &[u8],
    start: usize,
    end: usize,
) -> Result<Parsed<'_>, ProtobufError> {
    let mut parsed =
        Parsed { partition_keys: Vec::new(), explicit_hash_keys: Vec::new(), records: Vec::new() };
    let mut cursor = Cursor::new(data, start, end);
    // Fields may come in any order; protobuf-java accepts that, and so does this.
    while !cursor.is_done() {
        match cursor.key()? {
            (1, WIRE_LEN) => parsed.partition_keys.push(utf8(data, cursor.len_delimited()?)?),
            (2, WIRE_LEN) => parsed.explicit_hash_keys.push(utf8(data, cursor.len_delimited()?)?),
            (3, WIRE_LEN) => {
                let (from, to) = cursor.len_delimited()?;
                parsed.records.push(parse_record(data, from, to)?);
            }
            (_, wire_type) => cursor.skip(wire_type)?,
        }
    }
    Ok(parsed)
}

fn parse_record(data: &[u8], start: usize, end: usize) -> Result<RawRecord, ProtobufError> {
    let (mut partition_key_index, mut explicit_hash_key_index, mut payload) = (None, None, None);
    let mut cursor = Cursor::new(data, start, end);
    // A repeated occurrence of a singular field replaces the earlier one (proto2 rules).
    while !cursor.is_done() {
        match cursor.key()? {
            (1, WIRE_VARINT) => partition_key_index = Some(cursor.varint()?),
            (2, WIRE_VARINT) => explicit_hash_key_index = Some(cursor.varint()?),
            (3, WIRE_LEN) => payload = Some(cursor.len_delimited()?),
            (4, WIRE_LEN) => {
                let (from, to) = cursor.len_delimited()?;
                check_tag(data, from, to)?;
            }
            (_, wire_type) => cursor.skip(wire_type)?,
        }
    }
    Ok(RawRecord {
        partition_key_index: partition_key_index
            .ok_or(ProtobufError::MissingRequiredField("partition_key_index"))?,
        explicit_hash_key_index,
        data: payload.ok_or(ProtobufError::MissingRequiredField("data"))?,
    })
}

/// Tags are not surfaced (KPL `aggregation-format.md`: "not yet implemented in the KPL and
/// KCL APIs"), but a malformed tag still makes the message malformed.
fn check_tag(data: &[u8], start: usize, end: usize) -> Result<(), ProtobufError> {
    let mut key = false;
    let mut cursor = Cursor::new(data, start, end);
    while !cursor.is_done() {
        match cursor.key()? {
            (1, WIRE_LEN) => {
                utf8(data, cursor.len_delimited()?)?;
                key = true;
            }
            (2, WIRE_LEN) => {
                utf8(data, cursor.len_delimited()?)?;
            }
            (_, wire_type) => cursor.skip(wire_type)?,
        }
    }
    if key { Ok(()) } else { Err(ProtobufError::MissingRequiredField("tags.key")) }
}

fn utf8(data: &[u8], (start, end): (usize, usize)) -> Result<&str, ProtobufError> {
    str::from_utf8(&data[start..end]).map_err(|_| ProtobufError::InvalidUtf8)
}

/// An explicit hash key table entry, parsed at most once per aggregate.
#[derive(Clone, Copy)]
enum Cached {
    Unknown,
    Valid(HashKey),
    Invalid,
}

/// Turns a parsed aggregate into user records, or says why it cannot be delivered.
fn expand(
    record: &KinesisRecord,
    data: &Bytes,
    parsed: &Parsed<'_>,
    shard_range: Option<HashKeyRange>,
) -> Result<Deaggregated, CorruptRecord> {
    let pk_count = parsed.partition_keys.len();
    let ehk_count = parsed.explicit_hash_keys.len();
    // Check every index before handing anything out: all or nothing.
    for (position, raw) in parsed.records.iter().enumerate() {
        if raw.partition_key_index >= pk_count as u64 {
            return Err(CorruptRecord::PartitionKeyIndexOutOfRange {
                record: position,
                index: raw.partition_key_index,
                table_len: pk_count,
            });
        }
        if let Some(index) = raw.explicit_hash_key_index
            && index >= ehk_count as u64
        {
            return Err(CorruptRecord::ExplicitHashKeyIndexOutOfRange {
                record: position,
                index,
                table_len: ehk_count,
            });
        }
    }

    // Hash keys are needed only for the range check; each table entry is hashed or parsed
    // at most once.
    let mut pk_hashes: Vec<Option<HashKey>> =
        if shard_range.is_some() { vec![None; pk_count] } else { Vec::new() };
    let mut ehk_values = vec![Cached::Unknown; ehk_count];
    let mut records = Vec::with_capacity(parsed.records.len());
    let mut outside = 0;
    // Each distinct key is copied once; its records share it.
    let mut shared_keys: Vec<Option<SharedStr>> = vec![None; pk_count];
    for (position, raw) in parsed.records.iter().enumerate() {
        // Both indexes were checked above.
        let pk_index = raw.partition_key_index as usize;
        let partition_key = parsed.partition_keys[pk_index];
        let explicit_hash_key = match raw.explicit_hash_key_index {
            None => None,
            Some(index) => {
                let index = index as usize;
                if let Cached::Unknown = ehk_values[index] {
                    ehk_values[index] = HashKey::from_decimal(parsed.explicit_hash_keys[index])
                        .map_or(Cached::Invalid, Cached::Valid);
                }
                match ehk_values[index] {
                    Cached::Valid(key) => Some(key),
                    // Not a hash key at all: outside any range.
                    _ if shard_range.is_some() => {
                        outside += 1;
                        continue;
                    }
                    _ => return Err(CorruptRecord::InvalidExplicitHashKey { record: position }),
                }
            }
        };
        if let Some(range) = shard_range {
            let hash_key = match explicit_hash_key {
                Some(key) => key,
                None => *pk_hashes[pk_index].get_or_insert_with(|| {
                    HashKey::from_partition_key_bytes(partition_key.as_bytes())
                }),
            };
            if !range.contains(hash_key) {
                outside += 1;
                continue;
            }
        }
        if outside > 0 {
            // The aggregate is lost to the filter already; only count from here on.
            continue;
        }
        records.push(KinesisClientRecord {
            sequence_number: record.sequence_number.clone(),
            sub_sequence_number: Some(position as u64),
            partition_key: shared_keys[pk_index]
                .get_or_insert_with(|| SharedStr::from(partition_key))
                .clone(),
            explicit_hash_key,
            data: data.slice(raw.data.0..raw.data.1),
            approximate_arrival: record.approximate_arrival,
        });
    }

    if outside > 0 {
        return Ok(Deaggregated {
            records: Vec::new(),
            outcome: DeaggregationOutcome::FilteredOut { dropped: parsed.records.len(), outside },
            compression: None,
        });
    }
    Ok(Deaggregated { records, outcome: DeaggregationOutcome::Aggregated, compression: None })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use md5::{Digest, Md5};

    use super::*;
    use crate::aggregation::{AggregateBuilder, UserRecord};
    use crate::{PartitionKey, SequenceNumber};

    fn kinesis_record(data: impl Into<Bytes>) -> KinesisRecord {
        KinesisRecord {
            sequence_number: SequenceNumber::new(
                "49590338271490256608559692538361571095921575989136588898",
            )
            .unwrap(),
            partition_key: "outer".to_owned(),
            data: data.into(),
            approximate_arrival: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        }
    }

    /// Magic + `protobuf` + MD5(`protobuf`): a correctly framed aggregate of any protobuf.
    fn frame(protobuf: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(protobuf);
        out.extend_from_slice(&Md5::digest(protobuf));
        out
    }

    fn key(text: &str) -> PartitionKey {
        PartitionKey::new(text).unwrap()
    }

    fn aggregate(records: &[UserRecord]) -> Bytes {
        let mut builder = AggregateBuilder::new();
        for record in records {
            builder.push(record.clone());
        }
        builder.finish()
    }

    fn assert_passed_through(input: &KinesisRecord, out: &Deaggregated) {
        assert_eq!(out.records.len(), 1, "{:?}", out.outcome);
        let only = &out.records[0];
        assert_eq!(only.data, input.data);
        assert_eq!(only.sub_sequence_number, None);
        assert_eq!(&*only.partition_key, input.partition_key.as_str());
        assert_eq!(only.hash_key(), HashKey::from_partition_key_bytes(b"outer"));
        assert_eq!(only.sequence_number, input.sequence_number);
        assert_eq!(only.approximate_arrival, input.approximate_arrival);
    }

    #[test]
    fn records_share_their_keys_text() {
        let records = [
            UserRecord::new(key("ключ"), "1"),
            UserRecord::new(key("k"), "2"),
            UserRecord::new(key("ключ"), "3"),
            UserRecord::new(key("ß"), "4"),
        ];
        let out = deaggregate(&kinesis_record(aggregate(&records)), Some(HashKeyRange::FULL));
        let keys: Vec<&str> = out.records.iter().map(|r| &*r.partition_key).collect();
        assert_eq!(keys, ["ключ", "k", "ключ", "ß"]);
        for (got, want) in out.records.iter().zip(&records) {
            assert_eq!(got.hash_key(), want.hash_key());
        }
    }

    #[test]
    fn plain_data_is_one_plain_record() {
        for data in [&b""[..], b"{\"a\":1}", &MAGIC[..3]] {
            let input = kinesis_record(data.to_vec());
            let out = deaggregate(&input, Some(HashKeyRange::FULL));
            assert!(matches!(out.outcome, DeaggregationOutcome::Plain));
            assert_passed_through(&input, &out);
            assert!(!out.records[0].is_aggregated());
            assert_eq!(out.records[0].extended_sequence_number().sub_sequence(), 0);
        }
    }

    #[test]
    fn magic_with_sixteen_bytes_or_fewer_is_too_short() {
        for extra in [0, 1, 15, 16] {
            let mut data = MAGIC.to_vec();
            data.resize(4 + extra, 0);
            let input = kinesis_record(data);
            let out = deaggregate(&input, None);
            assert!(matches!(
                out.outcome,
                DeaggregationOutcome::PassedThrough(CorruptRecord::TooShort)
            ));
            assert_passed_through(&input, &out);
        }
        // Magic + MD5 of the empty protobuf: 20 bytes, still not an aggregate (KCL).
        let input = kinesis_record(frame(b""));
        assert!(matches!(
            deaggregate(&input, None).outcome,
            DeaggregationOutcome::PassedThrough(CorruptRecord::TooShort)
        ));
    }

    #[test]
    fn valid_aggregate_yields_every_record_with_inherited_fields() {
        let records = [
            UserRecord::new(key("a"), "one"),
            UserRecord::new(key("b"), "").with_explicit_hash_key(HashKey(5)),
            UserRecord::new(key("a"), "three"),
        ];
        let input = kinesis_record(aggregate(&records));
        let out = deaggregate(&input, None);
        assert!(matches!(out.outcome, DeaggregationOutcome::Aggregated));
        assert_eq!(out.compression, None);
        assert_eq!(out.records.len(), 3);
        for (position, (got, want)) in out.records.iter().zip(&records).enumerate() {
            assert_eq!(got.sub_sequence_number, Some(position as u64));
            assert_eq!(&*got.partition_key, want.partition_key.as_str());
            assert_eq!(got.explicit_hash_key, want.explicit_hash_key);
            assert_eq!(got.hash_key(), want.hash_key());
            assert_eq!(got.data, want.data);
            assert_eq!(got.sequence_number, input.sequence_number);
            assert_eq!(got.approximate_arrival, input.approximate_arrival);
            assert!(got.is_aggregated());
        }
    }

    #[test]
    fn user_data_is_a_slice_of_the_input_not_a_copy() {
        let input = kinesis_record(aggregate(&[UserRecord::new(key("a"), vec![7u8; 1000])]));
        let out = deaggregate(&input, None);
        let range = input.data.as_ptr_range();
        assert!(range.contains(&out.records[0].data.as_ptr()));
    }

    #[test]
    fn digest_mismatch_passes_the_record_through() {
        let mut data = aggregate(&[UserRecord::new(key("a"), "x")]).to_vec();
        let last = data.len() - 1;
        data[last] ^= 1;
        let input = kinesis_record(data);
        let out = deaggregate(&input, Some(HashKeyRange::FULL));
        assert!(matches!(
            out.outcome,
            DeaggregationOutcome::PassedThrough(CorruptRecord::DigestMismatch)
        ));
        assert_passed_through(&input, &out);
    }

    fn passed_through_reason(protobuf: &[u8], range: Option<HashKeyRange>) -> CorruptRecord {
        let input = kinesis_record(frame(protobuf));
        let out = deaggregate(&input, range);
        assert_passed_through(&input, &out);
        match out.outcome {
            DeaggregationOutcome::PassedThrough(reason) => reason,
            other => panic!("expected pass-through, got {other:?}"),
        }
    }

    #[test]
    fn protobuf_errors_pass_the_record_through() {
        use ProtobufError::*;
        let cases: &[(&[u8], ProtobufError)] = &[
            // Record without data.
            (&[0x0A, 1, b'k', 0x1A, 2, 0x08, 0], MissingRequiredField("data")),
            // Record without partition_key_index.
            (&[0x0A, 1, b'k', 0x1A, 2, 0x1A, 0], MissingRequiredField("partition_key_index")),
            // Partition key that is not UTF-8.
            (&[0x0A, 2, 0xFF, 0xFE, 0x1A, 4, 0x08, 0, 0x1A, 0], InvalidUtf8),
            // Two keys, each half of "é": invalid alone, valid one after the other.
            (&[0x0A, 1, 0xC3, 0x0A, 1, 0xA9, 0x1A, 4, 0x08, 0, 0x1A, 0], InvalidUtf8),
            // Explicit hash key that is not UTF-8.
            (&[0x0A, 1, b'k', 0x12, 1, 0xC0, 0x1A, 4, 0x08, 0, 0x1A, 0], InvalidUtf8),
            // Record length past the end.
            (&[0x0A, 1, b'k', 0x1A, 9, 0x08, 0, 0x1A, 0], Truncated),
            // Tag without its required key.
            (
                &[0x0A, 1, b'k', 0x1A, 8, 0x08, 0, 0x1A, 0, 0x22, 2, 0x12, 0],
                MissingRequiredField("tags.key"),
            ),
            // Tag value that is not UTF-8.
            (
                &[0x0A, 1, b'k', 0x1A, 11, 0x08, 0, 0x1A, 0, 0x22, 5, 0x0A, 0, 0x12, 1, 0xFF],
                InvalidUtf8,
            ),
            // Field number 0.
            (&[0x00, 0x00], InvalidTag),
            // Group wire type.
            (&[0x0B, 0x0C], UnsupportedWireType(3)),
            // Eleven-byte varint.
            (
                &[0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
                VarintTooLong,
            ),
        ];
        for (protobuf, expected) in cases {
            match passed_through_reason(protobuf, Some(HashKeyRange::FULL)) {
                CorruptRecord::Protobuf(got) => assert_eq!(got, *expected, "{protobuf:02x?}"),
                other => panic!("{protobuf:02x?}: {other:?}"),
            }
        }
    }

    #[test]
    fn out_of_range_indexes_pass_the_whole_record_through() {
        // Record 0 is fine, record 1 names partition key 7 of a one-entry table.
        let protobuf = [0x0A, 1, b'k', 0x1A, 4, 0x08, 0, 0x1A, 0, 0x1A, 4, 0x08, 7, 0x1A, 0];
        assert!(matches!(
            passed_through_reason(&protobuf, None),
            CorruptRecord::PartitionKeyIndexOutOfRange { record: 1, index: 7, table_len: 1 }
        ));
        let protobuf = [0x0A, 1, b'k', 0x1A, 6, 0x08, 0, 0x10, 0, 0x1A, 0];
        assert!(matches!(
            passed_through_reason(&protobuf, Some(HashKeyRange::FULL)),
            CorruptRecord::ExplicitHashKeyIndexOutOfRange { record: 0, index: 0, table_len: 0 }
        ));
    }

    #[test]
    fn unusable_explicit_hash_key_is_filtered_with_a_range_and_passed_through_without() {
        // EHK table: "1", "2^128" (one past the largest), "x".
        let big = b"340282366920938463463374607431768211456";
        for bad in [&big[..], b"x", b"", b"-1"] {
            let mut protobuf = vec![0x0A, 1, b'k', 0x12, 1, b'1', 0x12, bad.len() as u8];
            protobuf.extend_from_slice(bad);
            protobuf.extend_from_slice(&[0x1A, 6, 0x08, 0, 0x10, 0, 0x1A, 0]);
            protobuf.extend_from_slice(&[0x1A, 6, 0x08, 0, 0x10, 1, 0x1A, 0]);
            let input = kinesis_record(frame(&protobuf));
            let out = deaggregate(&input, Some(HashKeyRange::FULL));
            assert!(out.records.is_empty());
            assert!(matches!(
                out.outcome,
                DeaggregationOutcome::FilteredOut { dropped: 2, outside: 1 }
            ));
            let out = deaggregate(&input, None);
            assert!(matches!(
                out.outcome,
                DeaggregationOutcome::PassedThrough(CorruptRecord::InvalidExplicitHashKey {
                    record: 1
                })
            ));
            assert_passed_through(&input, &out);
        }
    }

    #[test]
    fn one_record_outside_the_shard_drops_the_whole_aggregate() {
        let records = [
            UserRecord::new(key("a"), "in").with_explicit_hash_key(HashKey(10)),
            UserRecord::new(key("b"), "out").with_explicit_hash_key(HashKey(30)),
            UserRecord::new(key("c"), "in").with_explicit_hash_key(HashKey(20)),
        ];
        let input = kinesis_record(aggregate(&records));
        let shard = HashKeyRange::new(HashKey(10), HashKey(20)).unwrap();
        let out = deaggregate(&input, Some(shard));
        assert!(out.records.is_empty());
        assert!(matches!(
            out.outcome,
            DeaggregationOutcome::FilteredOut { dropped: 3, outside: 1 }
        ));
        // Inclusive bounds; no range means no filter.
        let wide = HashKeyRange::new(HashKey(10), HashKey(30)).unwrap();
        assert_eq!(deaggregate(&input, Some(wide)).records.len(), 3);
        assert_eq!(deaggregate(&input, None).records.len(), 3);
    }

    #[test]
    fn partition_key_hashes_are_checked_against_the_range() {
        let record = UserRecord::new(key("a"), "x");
        let hash = record.hash_key();
        let input = kinesis_record(aggregate(&[record]));
        let exact = HashKeyRange::new(hash, hash).unwrap();
        assert_eq!(deaggregate(&input, Some(exact)).records.len(), 1);
        let below = HashKeyRange::new(HashKey(0), HashKey(hash.0 - 1)).unwrap();
        assert!(deaggregate(&input, Some(below)).records.is_empty());
    }

    #[test]
    fn plain_and_corrupt_records_are_never_filtered() {
        let nowhere = HashKeyRange::new(HashKey(0), HashKey(0)).unwrap();
        let input = kinesis_record(&b"plain"[..]);
        assert_eq!(deaggregate(&input, Some(nowhere)).records.len(), 1);
        let input = kinesis_record(frame(&[0x1A, 2, 0x08, 0]));
        assert_eq!(deaggregate(&input, Some(nowhere)).records.len(), 1);
    }

    #[test]
    fn zero_record_aggregate_yields_nothing() {
        let input = kinesis_record(frame(&[0x0A, 1, b'k']));
        let out = deaggregate(&input, None);
        assert!(matches!(out.outcome, DeaggregationOutcome::Aggregated));
        assert!(out.records.is_empty());
    }

    #[test]
    fn fields_in_any_order_unknown_fields_and_tags_are_accepted() {
        let protobuf = [
            // Record before the tables, with a tag, an unknown varint field and a repeated
            // data field (the last one wins).
            0x1A, 17, 0x1A, 1, b'x', 0x22, 4, 0x0A, 0, 0x12, 0, 0x08, 0, 0x28, 0x7F, 0x1A, 2, b'o',
            b'k', //
            0x3D, 1, 2, 3, 4, // unknown fixed32 field 7
            0x41, 1, 2, 3, 4, 5, 6, 7, 8, // unknown fixed64 field 8
            0x4A, 1, 0, // unknown length-delimited field 9
            0x08, 1, // partition_key_table as a varint: wrong wire type, skipped
            0x0A, 1, b'k',
        ];
        let input = kinesis_record(frame(&protobuf));
        let out = deaggregate(&input, None);
        assert!(matches!(out.outcome, DeaggregationOutcome::Aggregated), "{:?}", out.outcome);
        assert_eq!(out.records.len(), 1);
        assert_eq!(&*out.records[0].partition_key, "k");
        assert_eq!(out.records[0].data, &b"ok"[..]);
    }

    #[test]
    fn nested_aggregates_stay_data() {
        let inner = aggregate(&[UserRecord::new(key("i"), "inner")]);
        let input = kinesis_record(aggregate(&[UserRecord::new(key("o"), inner.clone())]));
        let out = deaggregate(&input, None);
        assert_eq!(out.records.len(), 1);
        assert_eq!(out.records[0].data, inner);
    }

    #[test]
    fn compressed_aggregates_are_opened_transparently() {
        let records = [UserRecord::new(key("a"), "alpha"), UserRecord::new(key("b"), "bravo")];
        let aggregate = aggregate(&records);
        for codec in [Codec::Gzip, Codec::Zstd] {
            let input = kinesis_record(compression::compress(codec, None, &aggregate).unwrap());
            let out = deaggregate(&input, Some(HashKeyRange::FULL));
            assert!(matches!(out.outcome, DeaggregationOutcome::Aggregated));
            assert_eq!(out.compression, Some(codec));
            assert_eq!(out.records[1].data, &b"bravo"[..]);
            // A compressed plain record comes out decompressed.
            let input = kinesis_record(compression::compress(codec, None, b"plain").unwrap());
            let out = deaggregate(&input, None);
            assert!(matches!(out.outcome, DeaggregationOutcome::Plain));
            assert_eq!(out.compression, Some(codec));
            assert_eq!(out.records[0].data, &b"plain"[..]);
        }
    }

    #[test]
    fn corrupt_envelopes_pass_the_record_through_unchanged() {
        let good = compression::compress(Codec::Zstd, None, b"some data").unwrap();
        let mut truncated = good.to_vec();
        truncated.truncate(good.len() - 2);
        let mut bad_codec = good.to_vec();
        bad_codec[5] = 9;
        for data in [truncated, bad_codec, good[..6].to_vec()] {
            let input = kinesis_record(data);
            let out = deaggregate(&input, None);
            assert!(matches!(
                out.outcome,
                DeaggregationOutcome::PassedThrough(CorruptRecord::Envelope(_))
            ));
            assert_eq!(out.compression, None);
            assert_passed_through(&input, &out);
        }
        // Over the limit: a bomb.
        let input = kinesis_record(compression::compress(Codec::Gzip, None, &[0u8; 4096]).unwrap());
        let out = deaggregate_with_limit(&input, None, 4095);
        assert!(matches!(
            out.outcome,
            DeaggregationOutcome::PassedThrough(CorruptRecord::Envelope(
                EnvelopeError::TooLarge { .. }
            ))
        ));
        assert_passed_through(&input, &out);
    }

    #[test]
    fn a_corrupt_aggregate_inside_a_valid_envelope_passes_through_decompressed() {
        let mut aggregate = aggregate(&[UserRecord::new(key("a"), "x")]).to_vec();
        aggregate[6] ^= 1;
        let input = kinesis_record(compression::compress(Codec::Gzip, None, &aggregate).unwrap());
        let out = deaggregate(&input, None);
        assert!(matches!(
            out.outcome,
            DeaggregationOutcome::PassedThrough(CorruptRecord::DigestMismatch)
        ));
        assert_eq!(out.compression, Some(Codec::Gzip));
        assert_eq!(out.records[0].data, aggregate);
    }

    /// The two-pass decoder and the thorough one agree on every message the fast one
    /// accepts; the fast one accepts every valid aggregate an encoder writes.
    mod fast_and_thorough_agree {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::*;

        fn thorough(
            input: &KinesisRecord,
            range: Option<HashKeyRange>,
        ) -> Result<Deaggregated, CorruptRecord> {
            let end = input.data.len() - DIGEST_LEN;
            let parsed = parse_aggregated_record(&input.data, MAGIC.len(), end)
                .map_err(CorruptRecord::Protobuf)?;
            expand(input, &input.data, &parsed, range)
        }

        fn fast(input: &KinesisRecord, range: Option<HashKeyRange>) -> Option<Deaggregated> {
            let end = input.data.len() - DIGEST_LEN;
            let mut digest = Digesting::new(MAGIC.len());
            let out =
                decode_valid(input, &input.data, end, range, |buf, to| digest.advance(buf, to));
            assert_eq!(digest.finish(&input.data, end), input.data[end..]);
            out
        }

        fn same(a: &Deaggregated, b: &Deaggregated) -> bool {
            let outcome = match (&a.outcome, &b.outcome) {
                (DeaggregationOutcome::Aggregated, DeaggregationOutcome::Aggregated) => true,
                (
                    DeaggregationOutcome::FilteredOut { dropped, outside },
                    DeaggregationOutcome::FilteredOut { dropped: d, outside: o },
                ) => dropped == d && outside == o,
                _ => false,
            };
            outcome && a.records == b.records
        }

        proptest! {
            #[test]
            fn on_mutated_aggregates(
                records in vec(
                    ("[a-c]{1,3}", proptest::option::of(0u128..4), vec(any::<u8>(), 0..20)),
                    0..12,
                ),
                flips in vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
                narrow in any::<bool>(),
            ) {
                let mut builder = AggregateBuilder::new();
                for (key_text, ehk, data) in records {
                    let mut record = UserRecord::new(key(&key_text), data);
                    record.explicit_hash_key = ehk.map(HashKey);
                    builder.push(record);
                }
                let encoded = builder.finish();
                let mut protobuf = encoded[MAGIC.len()..encoded.len() - DIGEST_LEN].to_vec();
                let unchanged = flips.is_empty() || protobuf.is_empty();
                if !protobuf.is_empty() {
                    for (at, byte) in flips {
                        let at = at.index(protobuf.len());
                        protobuf[at] ^= byte | 1;
                    }
                }
                let input = kinesis_record(frame(&protobuf));
                let narrow = narrow.then(|| HashKeyRange::new(HashKey(0), HashKey(2)).unwrap());
                for range in [None, Some(HashKeyRange::FULL), narrow] {
                    let fast = fast(&input, range);
                    let thorough = thorough(&input, range);
                    if unchanged {
                        prop_assert!(fast.is_some());
                    }
                    if let Some(fast) = fast {
                        let thorough = thorough.expect("the thorough decoder accepts it too");
                        prop_assert!(same(&fast, &thorough), "{:?} / {:?}", fast, thorough);
                    }
                }
            }
        }
    }
}
