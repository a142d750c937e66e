//! Any bytes into the envelope reader must give `None`, an error, or at most the limit;
//! any bytes through compress then decompress must come back unchanged.

#![no_main]

use kinesis_common::compression::{self, Codec};
use libfuzzer_sys::fuzz_target;

/// Small enough that bombs are cheap to reject while fuzzing.
const MAX_DECOMPRESSED: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    match compression::decompress(data, MAX_DECOMPRESSED) {
        Ok(None) => assert!(!compression::is_envelope(data)),
        Ok(Some(out)) => {
            assert!(out.len() <= MAX_DECOMPRESSED);
            let header = compression::header(data).expect("opened").expect("is an envelope");
            assert_eq!(header.uncompressed_len, out.len());
        }
        Err(_) => assert!(compression::is_envelope(data)),
    }

    // Round trip; the first byte picks the codec and level so both get exercised.
    let (codec, level) = match data.first() {
        Some(&b) if b & 1 == 1 => (Codec::Zstd, i32::from(b >> 1) % 6 + 1),
        Some(&b) => (Codec::Gzip, i32::from(b >> 1) % 10),
        None => (Codec::Gzip, 6),
    };
    let envelope = compression::compress(codec, Some(level), data).expect("compresses");
    let back = compression::decompress(&envelope, data.len()).expect("valid").expect("envelope");
    assert_eq!(&back[..], data);
});
