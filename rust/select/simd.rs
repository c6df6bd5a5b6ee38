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
    /// The u32 keys of the 8 weights at `w`.
    ///
    /// # Safety
    /// AVX2 must be available and `w` must point to 8 readable elements.
    #[cfg(target_arch = "x86_64")]
    unsafe fn keys8(w: *const Self) -> __m256i;
    fn key(self) -> u32;
}

impl Lanes for u32 {
    const SHIFT: u32 = 0;

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn block(w: *const u32, lo: i64, hi: i64) -> (u32, u32, u32) {
        block_u32(w, lo, hi)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn keys8(w: *const u32) -> __m256i {
        let bits = _mm256_loadu_si256(w as *const __m256i);
        _mm256_and_si256(bits, _mm256_set1_epi32(0x7fff_ffff))
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

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn keys8(w: *const u16) -> __m256i {
        let bits = _mm256_cvtepu16_epi32(_mm_loadu_si128(w as *const __m128i));
        _mm256_slli_epi32::<16>(_mm256_and_si256(bits, _mm256_set1_epi32(0x7fff)))
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

/// For each 8-bit mask, the lanes whose bits are set, in order (the rest are never read).
#[cfg(target_arch = "x86_64")]
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

/// Write the (key, start + i) pairs of the 32 weights at `w` whose bit `i` is set in `bits` to
/// `dst`, in order, and return how many. Branch-free: near the threshold the candidates fall
/// at random, and a loop over set bits mispredicted about once a block.
///
/// # Safety
/// AVX2 must be available, `w` must point to 32 readable elements and `dst` to room for 32
/// pairs (64 u32).
#[cfg(target_arch = "x86_64")]
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
    out: Option<&mut [u8]>,
    bracket: Bracket<K>,
    sink: Option<&mut S>,
) -> Counts {
    if let Some(o) = out.as_deref() {
        assert!(o.len() >= bits.len(), "mask shorter than its weights");
    }
    if let Some(a) = alive {
        assert!(
            a.len() >= bits.len(),
            "survivors shorter than their weights"
        );
    }
    let alive = alive.map(|a| a.as_ptr());
    let out = out.map(|o| o.as_mut_ptr());
    scan_raw(bits, alive, out, bracket, sink, None)
}

/// [`scan`] over masks that hold the survivors and receive the provisional mask: each block's
/// survivors are read before its mask bytes are written, so no copy of them is needed. Pushes
/// one word per 32 weights to `lost`: the bits of those alive before and provisionally pruned.
///
/// # Safety
/// AVX2 and POPCNT must be available ([`available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
pub(crate) unsafe fn scan_in_place<L: Lanes, K: Key, S: Sink<K>>(
    bits: &[L],
    masks: &mut [u8],
    bracket: Bracket<K>,
    sink: Option<&mut S>,
    lost: &mut Vec<u32>,
) -> Counts {
    assert!(masks.len() >= bits.len(), "mask shorter than its weights");
    let at = masks.as_mut_ptr();
    scan_raw(
        bits,
        Some(at as *const u8),
        Some(at),
        bracket,
        sink,
        Some(lost),
    )
}

/// # Safety
/// AVX2 and POPCNT must be available; `alive` and `out` must each point to `bits.len()` bytes
/// (they may be the same bytes: a block is read before it is written).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
unsafe fn scan_raw<L: Lanes, K: Key, S: Sink<K>>(
    bits: &[L],
    alive: Option<*const u8>,
    out: Option<*mut u8>,
    bracket: Bracket<K>,
    mut sink: Option<&mut S>,
    mut lost: Option<&mut Vec<u32>>,
) -> Counts {
    debug_assert_eq!(K::BITS, 31, "u32 keys only");
    let top = (0x7fff_ffffu32 >> L::SHIFT) as i64;
    let lo = minus_one(bracket.lo.to_u64(), L::SHIFT, top);
    let hi = minus_one(bracket.hi.to_u64(), L::SHIFT, top);
    let (mut n_alive, mut n_below, mut nan) = (0u32, 0u32, 0u32);
    let full = bits.len() / 32 * 32;
    if let Some(lost) = lost.as_deref_mut() {
        lost.reserve(bits.len().div_ceil(32));
    }
    let mut start = 0;
    while start < full {
        let (below, under_hi, nan_bits) = L::block(bits.as_ptr().add(start), lo, hi);
        let alive_bits = alive.map_or(u32::MAX, |a| alive_bits(a.add(start)));
        if let Some(o) = out {
            store_bits(o.add(start), !below & alive_bits);
        }
        if let Some(lost) = lost.as_deref_mut() {
            lost.push(below & alive_bits);
        }
        n_alive += alive_bits.count_ones();
        n_below += (below & alive_bits).count_ones();
        nan |= nan_bits & alive_bits;
        let mut in_bracket = !below & under_hi & alive_bits;
        if let (Some(sink), true) = (sink.as_deref_mut(), in_bracket != 0) {
            if let Some(dst) = sink.pair_room() {
                let n = pack_pairs(bits.as_ptr().add(start), start as u32, in_bracket, dst);
                sink.pairs_written(n);
                in_bracket = 0;
            }
            while in_bracket != 0 {
                let i = start + in_bracket.trailing_zeros() as usize;
                sink.push(K::from_u64(bits[i].key() as u64), i as u32);
                in_bracket &= in_bracket - 1;
            }
        }
        start += 32;
    }
    let (lo_key, hi_key) = (bracket.lo.to_u64(), bracket.hi.to_u64());
    let mut tail_lost = 0u32;
    for (i, w) in bits.iter().enumerate().skip(full) {
        let k = w.key() as u64;
        let is_alive = alive.is_none_or(|a| *a.add(i) != 0);
        let below = k < lo_key;
        if let Some(o) = out {
            *o.add(i) = (is_alive && !below) as u8;
        }
        if is_alive {
            n_alive += 1;
            n_below += below as u32;
            tail_lost |= (below as u32) << (i - full);
            nan |= (k > 0x7f80_0000) as u32;
            if let (Some(sink), false, true) = (sink.as_deref_mut(), below, k < hi_key) {
                sink.push(K::from_u64(k), i as u32);
            }
        }
    }
    if let (Some(lost), true) = (lost, full < bits.len()) {
        lost.push(tail_lost);
    }
    Counts {
        alive: n_alive as u64,
        below: n_below as u64,
        nan: nan != 0,
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// `pack_pairs` against the set-bit loop it replaces, for both lane widths and every
    /// density (no bits, all bits, single bits, random masks).
    fn packs_like_the_loop<L: Lanes>(w: &[L]) {
        if !available() {
            return; // the portable loop runs instead; nothing to compare
        }
        let mut masks = vec![0u32, u32::MAX, 1, 1 << 31, 0x8000_0001, 0x00ff_ff00];
        let mut state = 0x9e37_79b9u32;
        for _ in 0..200 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            masks.push(state);
        }
        for bits in masks {
            let start = 4096;
            let mut got = vec![0u32; 64];
            // SAFETY: AVX2 checked above; `w` holds 32 elements and `got` room for 32 pairs.
            let n = unsafe { pack_pairs(w.as_ptr(), start, bits, got.as_mut_ptr()) };
            let want: Vec<u32> = (0..32)
                .filter(|i| bits >> i & 1 == 1)
                .flat_map(|i| [w[i as usize].key(), start + i])
                .collect();
            assert_eq!(n, bits.count_ones() as usize);
            assert_eq!(&got[..2 * n], &want[..], "bits {bits:#x}");
        }
    }

    #[test]
    fn pack_pairs_keeps_the_candidates_in_order_f32() {
        let w: Vec<u32> = (0..32).map(|i| (i as f32 - 15.5).to_bits()).collect();
        packs_like_the_loop(&w);
    }

    #[test]
    fn pack_pairs_keeps_the_candidates_in_order_bf16() {
        let w: Vec<u16> = (0..32u16).map(|i| (i * 0x0411) ^ (i << 15)).collect();
        packs_like_the_loop(&w);
    }
}
