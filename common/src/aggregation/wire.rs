//! Protobuf wire primitives for the aggregated record messages: tag bytes, varints, sizes.
//!
//! Hand-written rather than generated so that the encoder can count sizes incrementally and
//! write in one pass, and the decoder can slice user data out of the input without copying
//! and check proto2 `required` fields (Protocol Buffers "Encoding" guide).

use super::decode::ProtobufError;

/// Wire type of a varint field.
pub(super) const WIRE_VARINT: u8 = 0;
/// Wire type of a fixed 64-bit field.
pub(super) const WIRE_FIXED64: u8 = 1;
/// Wire type of a length-delimited field.
pub(super) const WIRE_LEN: u8 = 2;
/// Wire type of a fixed 32-bit field.
pub(super) const WIRE_FIXED32: u8 = 5;

/// `AggregatedRecord.partition_key_table` (field 1, length-delimited).
pub(super) const TAG_PARTITION_KEY_TABLE: u8 = 0x0A;
/// `AggregatedRecord.explicit_hash_key_table` (field 2, length-delimited).
pub(super) const TAG_EXPLICIT_HASH_KEY_TABLE: u8 = 0x12;
/// `AggregatedRecord.records` (field 3, length-delimited).
pub(super) const TAG_RECORDS: u8 = 0x1A;
/// `Record.partition_key_index` (field 1, varint).
pub(super) const TAG_PARTITION_KEY_INDEX: u8 = 0x08;
/// `Record.explicit_hash_key_index` (field 2, varint).
pub(super) const TAG_EXPLICIT_HASH_KEY_INDEX: u8 = 0x10;
/// `Record.data` (field 3, length-delimited).
pub(super) const TAG_DATA: u8 = 0x1A;

/// How many bytes the varint encoding of `value` takes (1 per 7 bits, at least 1).
#[inline]
pub(super) const fn varint_len(value: u64) -> usize {
    // (highest set bit + 1) / 7 rounded up, without a division: `(log2 * 9 + 73) / 64`.
    let log2 = 63 - (value | 1).leading_zeros() as usize;
    (log2 * 9 + 73) / 64
}

/// How many bytes a length-delimited field with a one-byte tag and `len` bytes of payload
/// takes.
#[inline]
pub(super) const fn len_field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Appends the varint encoding of `value`.
#[inline]
pub(super) fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// A cursor over a protobuf message held in `buf[pos..end]`; positions are absolute in
/// `buf`, so the decoder can slice the input `Bytes` with them.
pub(super) struct Cursor<'a> {
    /// The input up to the end of the message: reads past `end` fail as out of bounds.
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor over `buf[start..end]`; the caller guarantees `start <= end <= buf.len()`.
    #[inline]
    pub(super) fn new(buf: &'a [u8], start: usize, end: usize) -> Self {
        debug_assert!(start <= end && end <= buf.len());
        Self { buf: &buf[..end], pos: start, end }
    }

    /// Whether the whole message has been read.
    #[inline]
    pub(super) fn is_done(&self) -> bool {
        self.pos >= self.end
    }

    /// Where the cursor is (absolute).
    #[inline]
    pub(super) fn position(&self) -> usize {
        self.pos
    }

    /// Moves past the next byte if it is `byte`.
    #[inline]
    pub(super) fn eat(&mut self, byte: u8) -> bool {
        let next = self.buf.get(self.pos) == Some(&byte);
        self.pos += usize::from(next);
        next
    }

    /// Reads a varint. Like protobuf-java, a tenth byte's bits beyond 64 are dropped; an
    /// eleventh byte is an error.
    #[inline]
    pub(super) fn varint(&mut self) -> Result<u64, ProtobufError> {
        // Fast path: one byte (small indexes, lengths below 128).
        if let Some(&byte) = self.buf.get(self.pos)
            && byte < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(byte));
        }
        self.varint_slow()
    }

    fn varint_slow(&mut self) -> Result<u64, ProtobufError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(ProtobufError::Truncated);
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7F).wrapping_shl(7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(ProtobufError::VarintTooLong)
    }

    /// Reads a field key: `(field number, wire type)`.
    #[inline]
    pub(super) fn key(&mut self) -> Result<(u32, u8), ProtobufError> {
        // Fast path: every field this format defines has a one-byte key.
        if let Some(&byte) = self.buf.get(self.pos)
            && byte < 0x80
        {
            self.pos += 1;
            if byte >> 3 == 0 {
                return Err(ProtobufError::InvalidTag);
            }
            return Ok((u32::from(byte >> 3), byte & 7));
        }
        let key = self.varint()?;
        let key = u32::try_from(key).map_err(|_| ProtobufError::InvalidTag)?;
        if key >> 3 == 0 {
            return Err(ProtobufError::InvalidTag);
        }
        Ok((key >> 3, (key & 7) as u8))
    }

    /// Reads the length of a length-delimited field and returns the absolute range of its
    /// payload, moving past it.
    #[inline]
    pub(super) fn len_delimited(&mut self) -> Result<(usize, usize), ProtobufError> {
        let len = self.varint()?;
        let remaining = self.end - self.pos;
        let len = usize::try_from(len).ok().filter(|&l| l <= remaining);
        let Some(len) = len else {
            return Err(ProtobufError::Truncated);
        };
        let start = self.pos;
        self.pos += len;
        Ok((start, self.pos))
    }

    /// Skips a field this format does not define (or one with an unexpected wire type, which
    /// protobuf-java also treats as unknown).
    pub(super) fn skip(&mut self, wire_type: u8) -> Result<(), ProtobufError> {
        let width = match wire_type {
            WIRE_VARINT => {
                self.varint()?;
                return Ok(());
            }
            WIRE_LEN => {
                self.len_delimited()?;
                return Ok(());
            }
            WIRE_FIXED64 => 8,
            WIRE_FIXED32 => 4,
            // Groups (3, 4) were deprecated before proto2 shipped; nothing writes them here.
            other => return Err(ProtobufError::UnsupportedWireType(other)),
        };
        if self.end - self.pos < width {
            return Err(ProtobufError::Truncated);
        }
        self.pos += width;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_len_matches_encoding() {
        let mut values = vec![0, u64::MAX];
        for shift in 1..64 {
            values.extend([(1u64 << shift) - 1, 1u64 << shift]);
        }
        for value in values {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            assert_eq!(buf.len(), varint_len(value), "{value}");
            let mut cursor = Cursor::new(&buf, 0, buf.len());
            assert_eq!(cursor.varint().unwrap(), value);
            assert!(cursor.is_done());
        }
    }

    #[test]
    fn varints_past_ten_bytes_are_rejected() {
        let buf = [0xFF; 11];
        assert_eq!(Cursor::new(&buf, 0, 11).varint(), Err(ProtobufError::VarintTooLong));
        assert_eq!(Cursor::new(&buf, 0, 5).varint(), Err(ProtobufError::Truncated));
    }

    #[test]
    fn lengths_past_the_end_are_truncation() {
        let buf = [0x05, 1, 2];
        assert_eq!(Cursor::new(&buf, 0, 3).len_delimited(), Err(ProtobufError::Truncated));
        let buf = [0x02, 1, 2];
        assert_eq!(Cursor::new(&buf, 0, 3).len_delimited(), Ok((1, 3)));
    }

    #[test]
    fn field_number_zero_is_invalid() {
        let buf = [0x00];
        assert_eq!(Cursor::new(&buf, 0, 1).key(), Err(ProtobufError::InvalidTag));
        let buf = [0x80, 0x00];
        assert_eq!(Cursor::new(&buf, 0, 2).key(), Err(ProtobufError::InvalidTag));
    }
}
