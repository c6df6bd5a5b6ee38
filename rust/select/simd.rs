//! The fused pass's inner block for f32 and bf16 weights in the u32 key space, with AVX2: the
//! compares of 32 weights become three 32-bit masks through `movemask`, and the provisional mask
//! bytes (survivors folded in) are written once from a bit-to-byte expansion.
//!
//! The portable loop in [`super::scan`] builds the same bitmasks with a shift and an OR per
//! lane, which LLVM cannot turn into `movemask`: it stayed compute-bound at several times the
//! read floor. bf16 is compared in its own 16-bit space (16 lanes per vector, no widening): its
//! u32 key is its magnitude bits shifted left by 16, so bracket bounds are rounded up to
//! multiples of 2^16 once per chunk instead of widening every weight.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::scan::{Counts, Sink};
use super::Bracket;
use crate::magnitude::Key;

/// Bracket bounds as "key > bound" thresholds for signed lane compares: `k < lo` is
/// `!(k > lo - 1)`. Keys never exceed `top` (sign bit clear), so larger bounds clamp to it.
fn minus_one(bound: u64, shift: u32, top: i64) -> i64 {
    let rounded = bound.div_ceil(1 << shift) as i64; // k << shift < bound  <=>  k < ceil(bound / 2^shift)
    (rounded - 1).min(top)
}

/// Whether this CPU runs the AVX2 block scanner.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("popcnt")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Raw weight bits this scanner reads: f32 (u32 lanes) or bf16 (u16 lanes).
pub(crate) trait Lanes: Copy {
    /// Bits of the key shift: the u32 key is `(bits & ABS) << SHIFT`.
    const SHIFT: u32;
    /// Compare 32 weights at `w`; returns (k < lo, k < hi, k is NaN) bitmasks.
    ///
    /// # Safety
    /// AVX2 must be available and `w` must point to 32 readable elements.
    #[cfg(target_arch = "x86_64")]
    unsafe fn block(w: *const Self, lo: i64, hi: i64) -> (u32, u32, u32);
    fn key(self) -> u32;
}

impl Lanes for u32 {
    const SHIFT: u32 = 0;

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn block(w: *const u32, lo: i64, hi: i64) -> (u32, u32, u32) {
        block_u32(w, lo, hi)
    }

    #[inline(always)]
    fn key(self) -> u32 {
        self & 0x7fff_ffff
    }
}

/// Bits of the lanes of four 8-lane compares.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn mask_of(m: [__m256i; 4]) -> u32 {
    let mut bits = 0u32;
    for (v, m) in m.into_iter().enumerate() {
        bits |= (_mm256_movemask_ps(_mm256_castsi256_ps(m)) as u32) << (8 * v);
    }
    bits
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn block_u32(w: *const u32, lo: i64, hi: i64) -> (u32, u32, u32) {
    let abs = _mm256_set1_epi32(0x7fff_ffff);
    let (lo, hi) = (_mm256_set1_epi32(lo as i32), _mm256_set1_epi32(hi as i32));
    let inf = _mm256_set1_epi32(0x7f80_0000);
    let k = [0, 8, 16, 24]
        .map(|o| _mm256_and_si256(_mm256_loadu_si256(w.add(o) as *const __m256i), abs));
    let not_below = mask_of(k.map(|k| _mm256_cmpgt_epi32(k, lo)));
    let not_under_hi = mask_of(k.map(|k| _mm256_cmpgt_epi32(k, hi)));
    let nan = mask_of(k.map(|k| _mm256_cmpgt_epi32(k, inf)));
    (!not_below, !not_under_hi, nan)
}

impl Lanes for u16 {
    const SHIFT: u32 = 16;

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn block(w: *const u16, lo: i64, hi: i64) -> (u32, u32, u32) {
        block_u16(w, lo, hi)
    }

    #[inline(always)]
    fn key(self) -> u32 {
        ((self & 0x7fff) as u32) << 16
    }
}

/// Bits of the lanes of two 16-lane compares (32 elements in order).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn mask_of_pair(x: __m256i, y: __m256i) -> u32 {
    // packs interleaves the two inputs by 128-bit lane; the permute restores element order.
    let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi16(x, y));
    _mm256_movemask_epi8(packed) as u32
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn block_u16(w: *const u16, lo: i64, hi: i64) -> (u32, u32, u32) {
    let abs = _mm256_set1_epi16(0x7fff);
    let (lo, hi) = (_mm256_set1_epi16(lo as i16), _mm256_set1_epi16(hi as i16));
    let inf = _mm256_set1_epi16(0x7f80);
    let a = _mm256_and_si256(_mm256_loadu_si256(w as *const __m256i), abs);
    let b = _mm256_and_si256(_mm256_loadu_si256(w.add(16) as *const __m256i), abs);
    let not_below = mask_of_pair(_mm256_cmpgt_epi16(a, lo), _mm256_cmpgt_epi16(b, lo));
    let not_under_hi = mask_of_pair(_mm256_cmpgt_epi16(a, hi), _mm256_cmpgt_epi16(b, hi));
    let nan = mask_of_pair(_mm256_cmpgt_epi16(a, inf), _mm256_cmpgt_epi16(b, inf));
    (!not_below, !not_under_hi, nan)
}

/// Survivor bits of 32 mask bytes (nonzero = alive).
///
/// # Safety
/// AVX2 must be available and `m` must point to 32 readable bytes.
#[cfg(target_arch = "x86_64")]
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
///
/// # Safety
/// AVX2 must be available and `o` must point to 32 writable bytes.
#[cfg(target_arch = "x86_64")]
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

/// The fused pass over one chunk of f32 or bf16 weights in the u32 key space: what
/// [`super::scan`]'s portable loop computes, block by block with AVX2, the tail portably.
/// `out: None` skips the provisional mask (the streaming threshold wants counts only).
///
/// # Safety
/// AVX2 and POPCNT must be available ([`available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
pub(crate) unsafe fn scan<L: Lanes, K: Key, S: Sink<K>>(
    bits: &[L],
    alive: Option<&[u8]>,
    mut out: Option<&mut [u8]>,
    bracket: Bracket<K>,
    mut sink: Option<&mut S>,
) -> Counts {
    debug_assert_eq!(K::BITS, 31, "u32 keys only");
    let top = (0x7fff_ffffu32 >> L::SHIFT) as i64;
    let lo = minus_one(bracket.lo.to_u64(), L::SHIFT, top);
    let hi = minus_one(bracket.hi.to_u64(), L::SHIFT, top);
    if let Some(o) = out.as_deref() {
        assert!(o.len() >= bits.len(), "mask shorter than its weights");
    }
    let alive = alive.map(|a| &a[..bits.len()]);
    let (mut n_alive, mut n_below, mut nan) = (0u32, 0u32, 0u32);
    let full = bits.len() / 32 * 32;
    let mut start = 0;
    while start < full {
        let (below, under_hi, nan_bits) = L::block(bits.as_ptr().add(start), lo, hi);
        let alive_bits = alive.map_or(u32::MAX, |a| alive_bits(a.as_ptr().add(start)));
        if let Some(o) = out.as_deref_mut() {
            store_bits(o.as_mut_ptr().add(start), !below & alive_bits);
        }
        n_alive += alive_bits.count_ones();
        n_below += (below & alive_bits).count_ones();
        nan |= nan_bits & alive_bits;
        let mut in_bracket = !below & under_hi & alive_bits;
        if let Some(sink) = sink.as_deref_mut() {
            while in_bracket != 0 {
                let i = start + in_bracket.trailing_zeros() as usize;
                sink.push(K::from_u64(bits[i].key() as u64), i as u32);
                in_bracket &= in_bracket - 1;
            }
        }
        start += 32;
    }
    let (lo_key, hi_key) = (bracket.lo.to_u64(), bracket.hi.to_u64());
    for i in full..bits.len() {
        let k = bits[i].key() as u64;
        let is_alive = alive.is_none_or(|a| a[i] != 0);
        let below = k < lo_key;
        if let Some(o) = out.as_deref_mut() {
            o[i] = (is_alive && !below) as u8;
        }
        if is_alive {
            n_alive += 1;
            n_below += below as u32;
            nan |= (k > 0x7f80_0000) as u32;
            if let (Some(sink), false, true) = (sink.as_deref_mut(), below, k < hi_key) {
                sink.push(K::from_u64(k), i as u32);
            }
        }
    }
    Counts {
        alive: n_alive as u64,
        below: n_below as u64,
        nan: nan != 0,
    }
}
