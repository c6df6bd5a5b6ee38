//! The block scanner's operations with AVX2: compares become bitmasks through `movemask`, mask
//! bytes come from a bit-to-byte expansion, candidates are packed by a table of lane orders.

use std::arch::x86_64::*;

use super::{Block, Bounds, Isa, Lanes};
use crate::magnitude::Key;

pub(crate) struct Avx2;

impl Isa for Avx2 {
    #[inline(always)]
    unsafe fn block<L: Lanes>(w: *const L, copy: *mut L, b: Bounds) -> Block {
        L::block_avx2(w, copy, b)
    }

    #[inline(always)]
    unsafe fn alive_bits(m: *const u8) -> u32 {
        alive_bits(m)
    }

    #[inline(always)]
    unsafe fn store_bits(o: *mut u8, keep: u32) {
        store_bits(o, keep)
    }

    #[inline(always)]
    unsafe fn pack_pairs<L: Lanes>(w: *const L, start: u32, bits: u32, dst: *mut u32) -> usize {
        pack_pairs(w, start, bits, dst)
    }
}

/// Bits of the lanes of four 8-lane compares.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn mask_of(m: [__m256i; 4]) -> u32 {
    let mut bits = 0u32;
    for (v, m) in m.into_iter().enumerate() {
        bits |= (_mm256_movemask_ps(_mm256_castsi256_ps(m)) as u32) << (8 * v);
    }
    bits
}

/// The [`Block`] of 32 f32 weights, copied to `copy`.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn block_u32(w: *const u32, copy: *mut u32, b: Bounds) -> Block {
    let abs = _mm256_set1_epi32(0x7fff_ffff);
    let [lo, mid, hi] = [b.lo, b.mid, b.hi].map(|x| _mm256_set1_epi32(x as i32));
    let inf = _mm256_set1_epi32(0x7f80_0000);
    let k = [0, 8, 16, 24].map(|o| {
        let raw = _mm256_loadu_si256(w.add(o) as *const __m256i);
        _mm256_storeu_si256(copy.add(o) as *mut __m256i, raw);
        _mm256_and_si256(raw, abs)
    });
    let above = |t: __m256i| mask_of(k.map(|k| _mm256_cmpgt_epi32(k, t)));
    Block {
        below: !above(lo),
        below_mid: !above(mid),
        under_hi: !above(hi),
        nan: above(inf),
    }
}

/// Bits of the lanes of two 16-lane compares (32 elements in order).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn mask_of_pair(x: __m256i, y: __m256i) -> u32 {
    // packs interleaves the two inputs by 128-bit lane; the permute restores element order.
    let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi16(x, y));
    _mm256_movemask_epi8(packed) as u32
}

/// [`block_u32`] for 32 bf16 or f16 weights, compared in their own 16-bit space (`inf`: the
/// magnitude bits of infinity; NaNs lie above).
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn block_u16(w: *const u16, copy: *mut u16, b: Bounds, inf: i16) -> Block {
    let abs = _mm256_set1_epi16(0x7fff);
    let [lo, mid, hi] = [b.lo, b.mid, b.hi].map(|x| _mm256_set1_epi16(x as i16));
    let inf = _mm256_set1_epi16(inf);
    let [x, y] = [0, 16].map(|o| {
        let raw = _mm256_loadu_si256(w.add(o) as *const __m256i);
        _mm256_storeu_si256(copy.add(o) as *mut __m256i, raw);
        _mm256_and_si256(raw, abs)
    });
    let above = |t: __m256i| mask_of_pair(_mm256_cmpgt_epi16(x, t), _mm256_cmpgt_epi16(y, t));
    Block {
        below: !above(lo),
        below_mid: !above(mid),
        under_hi: !above(hi),
        nan: above(inf),
    }
}

/// The u32 keys of the 8 f32 weights at `w`.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn keys8_u32(w: *const u32) -> __m256i {
    let bits = _mm256_loadu_si256(w as *const __m256i);
    _mm256_and_si256(bits, _mm256_set1_epi32(0x7fff_ffff))
}

/// The u32 keys of the 8 bf16 weights at `w`.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn keys8_u16(w: *const u16) -> __m256i {
    let bits = _mm256_cvtepu16_epi32(_mm_loadu_si128(w as *const __m128i));
    _mm256_slli_epi32::<16>(_mm256_and_si256(bits, _mm256_set1_epi32(0x7fff)))
}

/// The u32 keys of the 8 f16 weights at `w`, one by one ([`Key::of_f16`], their one definition):
/// only the packer of a block with several candidates needs them.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn keys8_f16(w: *const u16) -> __m256i {
    let keys: [u32; 8] = std::array::from_fn(|i| u32::of_f16(*w.add(i)));
    _mm256_loadu_si256(keys.as_ptr() as *const __m256i)
}

/// Survivor bits of 32 mask bytes (nonzero = alive).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn alive_bits(m: *const u8) -> u32 {
    let dead = _mm256_cmpeq_epi8(
        _mm256_loadu_si256(m as *const __m256i),
        _mm256_setzero_si256(),
    );
    !(_mm256_movemask_epi8(dead) as u32)
}

/// Write byte `i` of `o` = bit `i` of `keep` (0 or 1), 32 bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_bits(o: *mut u8, keep: u32) {
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(keep as i32),
        _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3,
            3, 3, 3,
        ),
    );
    let select = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select);
    _mm256_storeu_si256(
        o as *mut __m256i,
        _mm256_and_si256(set, _mm256_set1_epi8(1)),
    );
}

/// For each 8-bit mask, the lanes whose bits are set, in order (the rest are never read).
const PACK: [[u32; 8]; 256] = {
    let mut table = [[0u32; 8]; 256];
    let mut m = 0;
    while m < 256 {
        let (mut n, mut lane) = (0, 0);
        while lane < 8 {
            if (m >> lane) & 1 == 1 {
                table[m][n] = lane as u32;
                n += 1;
            }
            lane += 1;
        }
        m += 1;
    }
    table
};

/// See [`Isa::pack_pairs`]: eight lanes at a time, reordered by [`PACK`].
#[target_feature(enable = "avx2,popcnt")]
#[inline]
unsafe fn pack_pairs<L: Lanes>(w: *const L, start: u32, bits: u32, dst: *mut u32) -> usize {
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mut n = 0;
    for group in 0..4 {
        let m = ((bits >> (8 * group)) & 0xff) as usize;
        let order = _mm256_loadu_si256(PACK[m].as_ptr() as *const __m256i);
        let keys = _mm256_permutevar8x32_epi32(L::keys8(w.add(8 * group)), order);
        let first = _mm256_set1_epi32((start + 8 * group as u32) as i32);
        let index = _mm256_permutevar8x32_epi32(_mm256_add_epi32(first, lanes), order);
        // (k0 i0 k1 i1 | k4 i4 k5 i5) and (k2 i2 k3 i3 | k6 i6 k7 i7), then lanes regrouped.
        let (lo, hi) = (
            _mm256_unpacklo_epi32(keys, index),
            _mm256_unpackhi_epi32(keys, index),
        );
        let out = dst.add(2 * n) as *mut __m256i;
        _mm256_storeu_si256(out, _mm256_permute2x128_si256::<0x20>(lo, hi));
        _mm256_storeu_si256(out.add(1), _mm256_permute2x128_si256::<0x31>(lo, hi));
        n += m.count_ones() as usize;
    }
    n
}
