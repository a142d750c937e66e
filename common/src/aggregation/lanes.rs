//! MD5 of several messages at once, one message per SIMD lane.
//!
//! MD5 is one long chain of dependent steps, so a single digest leaves most of the processor
//! idle whatever the implementation. Digests of *different* messages are independent: sixteen
//! of them advance together in the 32-bit lanes of one AVX-512 register (single instructions
//! for MD5's rotations and boolean functions) or of two AVX2 registers (two independent
//! chains the processor overlaps), each step costing about what one scalar step costs. The
//! producer sends up to a hundred aggregates per request and the consumer reads many per
//! page, so both have messages to fill the lanes.
//!
//! Scheduling: messages go to lanes longest first; a lane that finishes takes the next
//! message, so lanes stay busy while messages remain; the last lane still running finishes on
//! the scalar code, which is faster for one message than a mostly idle register. Each lane
//! walks its message's whole 64-byte blocks in place, then one or two padding blocks built on
//! the side; the engines load one block per lane and transpose them into words in registers.
//! Without AVX2 (or off x86-64), every digest is the `md-5` crate's.
//!
//! The results are MD5 digests bit for bit: the tests compare every engine the CPU has with
//! `md-5` over messages of every length around the block and padding boundaries, in batches
//! of every size.

use md5::block_api::compress;
use md5::{Digest, Md5};

use super::DIGEST_LEN;

/// MD5 works on blocks of this many bytes.
const BLOCK: usize = 64;

/// Messages digested together.
const LANES: usize = 16;

/// MD5's initial state.
const IV: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// Fewer messages than this are digested one by one: the lanes only pay with company.
const MIN_BATCH: usize = 2;

/// Writes the MD5 digest of `messages[i]` to `out[i]` for every `i`.
///
/// # Panics
/// If the two slices differ in length.
pub(crate) fn digest_each(messages: &[&[u8]], out: &mut [[u8; DIGEST_LEN]]) {
    assert_eq!(messages.len(), out.len(), "one digest per message");
    #[cfg(target_arch = "x86_64")]
    if messages.len() >= MIN_BATCH
        && let Some(engine) = x86::engine()
    {
        digest_lanes(messages, out, engine);
        return;
    }
    for (message, digest) in messages.iter().zip(out) {
        *digest = Md5::digest(message).into();
    }
}

/// A message being digested in a lane.
struct Lane<'a> {
    /// Where its digest goes in `out`.
    index: usize,
    /// The message.
    data: &'a [u8],
    /// The message's whole blocks.
    whole: usize,
    /// Blocks digested so far (whole ones, then padding).
    next: usize,
    /// Whole blocks plus padding blocks.
    total: usize,
    /// The message's last partial block with MD5's padding and length: one or two blocks.
    tail: [u8; 2 * BLOCK],
}

impl<'a> Lane<'a> {
    fn new(index: usize, data: &'a [u8]) -> Self {
        let whole = data.len() / BLOCK;
        let rest = &data[whole * BLOCK..];
        let mut tail = [0u8; 2 * BLOCK];
        tail[..rest.len()].copy_from_slice(rest);
        tail[rest.len()] = 0x80;
        let padding = if rest.len() < BLOCK - 8 { 1 } else { 2 };
        let bits = (data.len() as u64).wrapping_mul(8);
        tail[padding * BLOCK - 8..padding * BLOCK].copy_from_slice(&bits.to_le_bytes());
        Self { index, data, whole, next: 0, total: whole + padding, tail }
    }

    /// The block digested next.
    fn block(&self) -> &[u8; BLOCK] {
        let bytes = if self.next < self.whole {
            &self.data[self.next * BLOCK..(self.next + 1) * BLOCK]
        } else {
            let at = (self.next - self.whole) * BLOCK;
            &self.tail[at..at + BLOCK]
        };
        bytes.try_into().expect("a block is 64 bytes")
    }

    /// The blocks left, for the scalar finish.
    fn rest(&self) -> (&[[u8; BLOCK]], &[[u8; BLOCK]]) {
        let whole = self.data[..self.whole * BLOCK].as_chunks::<BLOCK>().0;
        let tail = self.tail.as_chunks::<BLOCK>().0;
        let padding = self.total - self.whole;
        if self.next < self.whole {
            (&whole[self.next..], &tail[..padding])
        } else {
            (&[], &tail[self.next - self.whole..padding])
        }
    }
}

/// Per-lane state: `state[word][lane]`.
type LaneState = [[u32; LANES]; 4];

/// One block per lane (an idle lane's is never read back).
type LaneBlocks<'a> = [&'a [u8; BLOCK]; LANES];

/// What an idle lane digests.
const IDLE: [u8; BLOCK] = [0; BLOCK];

/// Digests one block per lane.
type Engine = fn(&mut LaneState, &LaneBlocks<'_>);

fn digest_lanes(messages: &[&[u8]], out: &mut [[u8; DIGEST_LEN]], engine: Engine) {
    // Longest first, so that the lanes run out of work at about the same time.
    let mut order: Vec<usize> = (0..messages.len()).collect();
    order.sort_unstable_by_key(|&i| std::cmp::Reverse(messages[i].len()));
    let mut queue = order.into_iter().map(|i| Lane::new(i, messages[i]));

    let mut state: LaneState = [[0; LANES]; 4];
    let mut lanes: [Option<Lane<'_>>; LANES] = std::array::from_fn(|_| None);
    for (n, lane) in lanes.iter_mut().enumerate() {
        *lane = queue.next();
        for (word, iv) in state.iter_mut().zip(IV) {
            word[n] = iv;
        }
    }
    loop {
        let busy = lanes.iter().filter(|l| l.is_some()).count();
        if busy <= 1 {
            // One message left (or none): the scalar code is faster for it.
            if let Some((n, lane)) =
                lanes.iter().enumerate().find_map(|(n, l)| Some((n, l.as_ref()?)))
            {
                let mut one = [state[0][n], state[1][n], state[2][n], state[3][n]];
                let (whole, tail) = lane.rest();
                compress(&mut one, whole);
                compress(&mut one, tail);
                out[lane.index] = to_digest(one);
            }
            return;
        }
        let blocks: LaneBlocks<'_> =
            std::array::from_fn(|n| lanes[n].as_ref().map_or(&IDLE, Lane::block));
        engine(&mut state, &blocks);
        for (n, slot) in lanes.iter_mut().enumerate() {
            let Some(lane) = slot else { continue };
            lane.next += 1;
            if lane.next == lane.total {
                out[lane.index] = to_digest([state[0][n], state[1][n], state[2][n], state[3][n]]);
                *slot = queue.next();
                for (word, iv) in state.iter_mut().zip(IV) {
                    word[n] = iv;
                }
            }
        }
    }
}

fn to_digest(state: [u32; 4]) -> [u8; DIGEST_LEN] {
    let mut digest = [0u8; DIGEST_LEN];
    for (bytes, word) in digest.as_chunks_mut::<4>().0.iter_mut().zip(state) {
        *bytes = word.to_le_bytes();
    }
    digest
}

/// MD5's additive constants, one per step.
#[cfg(target_arch = "x86_64")]
const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

/// The 64 steps of MD5 on `$lanes`-wide vectors, given the vector operations as macros:
/// `$add(x, y)`, `$f/$g/$h/$i(b, c, d)` (the four rounds' boolean functions),
/// `$rotl(x, left, right)` and `$splat(u32)`.
#[cfg(target_arch = "x86_64")]
macro_rules! md5_block {
    ($state:ident, $m:ident, $add:ident, $f:ident, $g:ident, $h:ident, $i:ident, $rotl:ident, $splat:ident) => {{
        let [mut a, mut b, mut c, mut d] = $state;
        let (a0, b0, c0, d0) = (a, b, c, d);
        macro_rules! step {
            ($fun:ident, $w:ident, $x:ident, $y:ident, $z:ident, $k:expr, $word:expr, $s:literal) => {
                // `$w + K + M` does not wait for the previous step: only `F` and what
                // follows it are on the chain from step to step.
                $w = $add(
                    $rotl!($add($add($w, $add($splat(K[$k]), $m[$word])), $fun($x, $y, $z)), $s),
                    $x,
                );
            };
        }
        macro_rules! four {
            ($fun:ident, $k:expr, $w0:expr, $w1:expr, $w2:expr, $w3:expr, $s0:literal, $s1:literal, $s2:literal, $s3:literal) => {
                step!($fun, a, b, c, d, $k, $w0, $s0);
                step!($fun, d, a, b, c, $k + 1, $w1, $s1);
                step!($fun, c, d, a, b, $k + 2, $w2, $s2);
                step!($fun, b, c, d, a, $k + 3, $w3, $s3);
            };
        }
        four!($f, 0, 0, 1, 2, 3, 7, 12, 17, 22);
        four!($f, 4, 4, 5, 6, 7, 7, 12, 17, 22);
        four!($f, 8, 8, 9, 10, 11, 7, 12, 17, 22);
        four!($f, 12, 12, 13, 14, 15, 7, 12, 17, 22);
        four!($g, 16, 1, 6, 11, 0, 5, 9, 14, 20);
        four!($g, 20, 5, 10, 15, 4, 5, 9, 14, 20);
        four!($g, 24, 9, 14, 3, 8, 5, 9, 14, 20);
        four!($g, 28, 13, 2, 7, 12, 5, 9, 14, 20);
        four!($h, 32, 5, 8, 11, 14, 4, 11, 16, 23);
        four!($h, 36, 1, 4, 7, 10, 4, 11, 16, 23);
        four!($h, 40, 13, 0, 3, 6, 4, 11, 16, 23);
        four!($h, 44, 9, 12, 15, 2, 4, 11, 16, 23);
        four!($i, 48, 0, 7, 14, 5, 6, 10, 15, 21);
        four!($i, 52, 12, 3, 10, 1, 6, 10, 15, 21);
        four!($i, 56, 8, 15, 6, 13, 6, 10, 15, 21);
        four!($i, 60, 4, 11, 2, 9, 6, 10, 15, 21);
        [$add(a, a0), $add(b, b0), $add(c, c0), $add(d, d0)]
    }};
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    //! The x86-64 engines. Every `unsafe` here is either a call to a function compiled for
    //! a CPU feature, made only after `is_x86_feature_detected!` found the feature, or an
    //! unaligned load or store of exactly the bytes of a `[u32; 8]` or `[u32; 16]`.

    use std::arch::x86_64::*;

    use super::{BLOCK, Engine, K, LANES, LaneBlocks, LaneState};

    const _: () = assert!(LANES == 16, "the engines digest sixteen messages at a time");

    /// The fastest engine this CPU runs, if any beats the scalar code.
    pub(super) fn engine() -> Option<Engine> {
        if is_x86_feature_detected!("avx512f") {
            Some(avx512)
        } else if is_x86_feature_detected!("avx2") {
            Some(avx2)
        } else {
            None
        }
    }

    /// The AVX2 engine, for tests on CPUs where `engine` prefers another.
    #[cfg(test)]
    pub(super) fn avx2_engine() -> Option<Engine> {
        is_x86_feature_detected!("avx2").then_some(avx2 as Engine)
    }

    fn avx2(state: &mut LaneState, blocks: &LaneBlocks<'_>) {
        // SAFETY: `engine` returns this function only when the CPU has AVX2.
        unsafe { avx2_block(state, blocks) }
    }

    fn avx512(state: &mut LaneState, blocks: &LaneBlocks<'_>) {
        // SAFETY: `engine` returns this function only when the CPU has AVX-512F.
        unsafe { avx512_block(state, blocks) }
    }

    /// Loads 32 bytes.
    #[target_feature(enable = "avx2")]
    fn load8(bytes: &[u8; 32]) -> __m256i {
        // SAFETY: `bytes` is 32 readable bytes; `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
    }

    /// Transposes eight rows of eight words: `out[j][n] = rows[n][j]`.
    #[target_feature(enable = "avx2")]
    fn transpose8(r: [__m256i; 8]) -> [__m256i; 8] {
        let t: [__m256i; 8] = std::array::from_fn(|k| {
            let (a, b) = (r[k & !1], r[k | 1]);
            if k % 2 == 0 { _mm256_unpacklo_epi32(a, b) } else { _mm256_unpackhi_epi32(a, b) }
        });
        // u[4g + i]: word i (low half) and i + 4 (high half) of rows 4g..4g + 4.
        let u: [__m256i; 8] = std::array::from_fn(|k| {
            let (g, i) = (k / 4, k % 4);
            let (a, b) = (t[4 * g + i / 2], t[4 * g + 2 + i / 2]);
            if i % 2 == 0 { _mm256_unpacklo_epi64(a, b) } else { _mm256_unpackhi_epi64(a, b) }
        });
        std::array::from_fn(|j| {
            let (a, b) = (u[j % 4], u[4 + j % 4]);
            if j < 4 {
                _mm256_permute2x128_si256::<0x20>(a, b)
            } else {
                _mm256_permute2x128_si256::<0x31>(a, b)
            }
        })
    }

    /// The blocks as sixteen vectors of words: `m[j]` holds word `j` of every lane's block.
    #[target_feature(enable = "avx2")]
    fn words_pair(blocks: &LaneBlocks<'_>) -> [Pair; 16] {
        let half = |lanes: &[&[u8; BLOCK]], words: usize| {
            transpose8(std::array::from_fn(|n| {
                load8(lanes[n][words * 4..words * 4 + 32].try_into().expect("32 bytes"))
            }))
        };
        let (lo, hi) = blocks.split_at(LANES / 2);
        let (lo_0, lo_8, hi_0, hi_8) = (half(lo, 0), half(lo, 8), half(hi, 0), half(hi, 8));
        std::array::from_fn(|j| {
            if j < 8 { Pair(lo_0[j], hi_0[j]) } else { Pair(lo_8[j - 8], hi_8[j - 8]) }
        })
    }

    /// The blocks as sixteen vectors of words: `m[j]` holds word `j` of every lane's block.
    #[target_feature(enable = "avx512f")]
    fn words16(blocks: &LaneBlocks<'_>) -> [__m512i; 16] {
        // SAFETY: each block is 64 readable bytes; `loadu` has no alignment requirement.
        let r: [__m512i; 16] =
            std::array::from_fn(|n| unsafe { _mm512_loadu_si512(blocks[n].as_ptr().cast()) });
        // Within each 128-bit quarter k: t[2p] and t[2p + 1] interleave rows 2p and 2p + 1.
        let t: [__m512i; 16] = std::array::from_fn(|k| {
            let (a, b) = (r[k & !1], r[k | 1]);
            if k % 2 == 0 { _mm512_unpacklo_epi32(a, b) } else { _mm512_unpackhi_epi32(a, b) }
        });
        // u[4g + i], quarter k: word 4k + i of rows 4g..4g + 4.
        let u: [__m512i; 16] = std::array::from_fn(|k| {
            let (g, i) = (k / 4, k % 4);
            let (a, b) = (t[4 * g + i / 2], t[4 * g + 2 + i / 2]);
            if i % 2 == 0 { _mm512_unpacklo_epi64(a, b) } else { _mm512_unpackhi_epi64(a, b) }
        });
        // Gather the quarters: word 4k + i of groups 0..4 into one vector.
        let mut m = [_mm512_setzero_si512(); 16];
        for i in 0..4 {
            let v0 = _mm512_shuffle_i32x4::<0x44>(u[i], u[4 + i]);
            let v1 = _mm512_shuffle_i32x4::<0xEE>(u[i], u[4 + i]);
            let v2 = _mm512_shuffle_i32x4::<0x44>(u[8 + i], u[12 + i]);
            let v3 = _mm512_shuffle_i32x4::<0xEE>(u[8 + i], u[12 + i]);
            m[i] = _mm512_shuffle_i32x4::<0x88>(v0, v2);
            m[4 + i] = _mm512_shuffle_i32x4::<0xDD>(v0, v2);
            m[8 + i] = _mm512_shuffle_i32x4::<0x88>(v1, v3);
            m[12 + i] = _mm512_shuffle_i32x4::<0xDD>(v1, v3);
        }
        m
    }

    /// Two registers of eight lanes: two independent chains, which the processor overlaps.
    #[derive(Clone, Copy)]
    struct Pair(__m256i, __m256i);

    #[target_feature(enable = "avx2")]
    fn load_pair(v: &[u32; LANES]) -> Pair {
        let (lo, hi) = v.split_at(LANES / 2);
        // SAFETY: each half is 32 readable bytes; `loadu` has no alignment requirement.
        unsafe {
            Pair(_mm256_loadu_si256(lo.as_ptr().cast()), _mm256_loadu_si256(hi.as_ptr().cast()))
        }
    }

    #[target_feature(enable = "avx2")]
    fn store_pair(v: Pair, to: &mut [u32; LANES]) {
        let (lo, hi) = to.split_at_mut(LANES / 2);
        // SAFETY: each half is 32 writable bytes; `storeu` has no alignment requirement.
        unsafe {
            _mm256_storeu_si256(lo.as_mut_ptr().cast(), v.0);
            _mm256_storeu_si256(hi.as_mut_ptr().cast(), v.1);
        }
    }

    #[target_feature(enable = "avx2")]
    fn avx2_block(state: &mut LaneState, blocks: &LaneBlocks<'_>) {
        macro_rules! both {
            ($op:expr, $($v:ident),+) => {
                Pair($op($($v.0),+), $op($($v.1),+))
            };
        }
        let ones = _mm256_set1_epi32(-1);
        let add = |x: Pair, y: Pair| both!(_mm256_add_epi32, x, y);
        let splat = |k: u32| {
            let k = _mm256_set1_epi32(k as i32);
            Pair(k, k)
        };
        // F = d ^ (b & (c ^ d)), G = c ^ (d & (b ^ c)), H = b ^ c ^ d, I = c ^ (b | !d).
        let f1 = |b, c, d| _mm256_xor_si256(d, _mm256_and_si256(b, _mm256_xor_si256(c, d)));
        let g1 = |b, c, d| _mm256_xor_si256(c, _mm256_and_si256(d, _mm256_xor_si256(b, c)));
        let h1 = |b, c, d| _mm256_xor_si256(_mm256_xor_si256(b, c), d);
        let i1 = |b, c, d| _mm256_xor_si256(c, _mm256_or_si256(b, _mm256_xor_si256(d, ones)));
        let f = |b: Pair, c: Pair, d: Pair| both!(f1, b, c, d);
        let g = |b: Pair, c: Pair, d: Pair| both!(g1, b, c, d);
        let h = |b: Pair, c: Pair, d: Pair| both!(h1, b, c, d);
        let i = |b: Pair, c: Pair, d: Pair| both!(i1, b, c, d);
        macro_rules! rotl {
            ($x:expr, $s:literal) => {{
                let x: Pair = $x;
                let one = |x| {
                    _mm256_or_si256(_mm256_slli_epi32::<$s>(x), _mm256_srli_epi32::<{ 32 - $s }>(x))
                };
                both!(one, x)
            }};
        }
        let m = words_pair(blocks);
        let s = [
            load_pair(&state[0]),
            load_pair(&state[1]),
            load_pair(&state[2]),
            load_pair(&state[3]),
        ];
        let out = md5_block!(s, m, add, f, g, h, i, rotl, splat);
        for (v, to) in out.into_iter().zip(state.iter_mut()) {
            store_pair(v, to);
        }
    }

    #[target_feature(enable = "avx512f")]
    fn load16(v: &[u32; LANES]) -> __m512i {
        // SAFETY: `v` is 64 readable bytes; `loadu` has no alignment requirement.
        unsafe { _mm512_loadu_si512(v.as_ptr().cast()) }
    }

    #[target_feature(enable = "avx512f")]
    fn store16(v: __m512i, to: &mut [u32; LANES]) {
        // SAFETY: `to` is 64 writable bytes; `storeu` has no alignment requirement.
        unsafe { _mm512_storeu_si512(to.as_mut_ptr().cast(), v) }
    }

    #[target_feature(enable = "avx512f")]
    fn avx512_block(state: &mut LaneState, blocks: &LaneBlocks<'_>) {
        let add = |x, y| _mm512_add_epi32(x, y);
        let splat = |k: u32| _mm512_set1_epi32(k as i32);
        // The truth tables of F, G, H and I over (b, c, d) = (0xF0, 0xCC, 0xAA).
        let f = |b, c, d| _mm512_ternarylogic_epi32::<0xCA>(b, c, d);
        let g = |b, c, d| _mm512_ternarylogic_epi32::<0xE4>(b, c, d);
        let h = |b, c, d| _mm512_ternarylogic_epi32::<0x96>(b, c, d);
        let i = |b, c, d| _mm512_ternarylogic_epi32::<0x39>(b, c, d);
        macro_rules! rotl {
            ($x:expr, $s:literal) => {
                _mm512_rol_epi32::<$s>($x)
            };
        }
        let m = words16(blocks);
        let s = [load16(&state[0]), load16(&state[1]), load16(&state[2]), load16(&state[3])];
        let out = md5_block!(s, m, add, f, g, h, i, rotl, splat);
        for (v, to) in out.into_iter().zip(state.iter_mut()) {
            store16(v, to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn expected(messages: &[Vec<u8>]) -> Vec<[u8; DIGEST_LEN]> {
        messages.iter().map(|m| Md5::digest(m).into()).collect()
    }

    fn digests(messages: &[Vec<u8>]) -> Vec<[u8; DIGEST_LEN]> {
        let mut out = vec![[0u8; DIGEST_LEN]; messages.len()];
        let slices: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        digest_each(&slices, &mut out);
        out
    }

    fn message(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    #[test]
    fn known_digests() {
        let messages =
            vec![b"".to_vec(), b"a".to_vec(), b"abc".to_vec(), b"message digest".to_vec()];
        let hex: Vec<String> = digests(&messages)
            .iter()
            .map(|d| d.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        assert_eq!(
            hex,
            [
                "d41d8cd98f00b204e9800998ecf8427e",
                "0cc175b9c0f1b6a831c399e269772661",
                "900150983cd24fb0d6963f7d28e17f72",
                "f96b697d7cb7938d525a2f31aaf161d0",
            ]
        );
    }

    #[test]
    fn every_length_around_the_block_and_padding_boundaries() {
        // Lengths 0..=200 cover no whole block, one, two and three, and tails on both sides
        // of the 56-byte padding limit; in one batch, so lanes finish at different times.
        let messages: Vec<Vec<u8>> = (0..=200).map(|n| message(n, n as u8)).collect();
        assert_eq!(digests(&messages), expected(&messages));
    }

    #[test]
    fn every_batch_size_up_to_three_registers() {
        for count in 0..=3 * LANES + 1 {
            let messages: Vec<Vec<u8>> =
                (0..count).map(|n| message(1000 + 37 * n, n as u8)).collect();
            assert_eq!(digests(&messages), expected(&messages), "{count} messages");
        }
    }

    #[test]
    fn every_engine_this_cpu_has_agrees_with_md5() {
        // `digest_each` picks the best engine; the others are checked here directly.
        #[cfg(target_arch = "x86_64")]
        {
            let messages: Vec<Vec<u8>> = (0..40).map(|n| message(n * 29, n as u8)).collect();
            let slices: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            let mut engines: Vec<Engine> = Vec::new();
            engines.extend(x86::avx2_engine());
            if let Some(best) = x86::engine() {
                engines.push(best);
            }
            for engine in engines {
                let mut out = vec![[0u8; DIGEST_LEN]; messages.len()];
                digest_lanes(&slices, &mut out, engine);
                assert_eq!(out, expected(&messages));
            }
        }
    }

    proptest! {
        #[test]
        fn digests_match_md5(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..20),
        ) {
            prop_assert_eq!(digests(&messages), expected(&messages));
        }
    }
}
