//! The block scanner's operations with AVX-512 (F, BW, VL): compares write mask registers
//! directly, mask bytes are one masked move, candidates one `compress` per 16 lanes. With AVX2
//! the `movemask` and bit-to-byte steps cost more instructions than the compares themselves, and
//! the pass stayed compute-bound on two cores.

use std::arch::x86_64::*;

use super::{Block, Bounds, Isa, Lanes};
use crate::magnitude::Key;

pub(crate) struct Avx512;

/// The CPU features [`Avx512`] needs.
pub(super) fn available() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("popcnt")
}

impl Isa for Avx512 {
    #[inline(always)]
    unsafe fn block<L: Lanes>(w: *const L, copy: *mut L, b: Bounds) -> Block {
        L::block_avx512(w, copy, b)
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

#[inline(always)]
fn join(low: u16, high: u16) -> u32 {
    low as u32 | (high as u32) << 16
}

/// The [`Block`] of 32 f32 weights, copied to `copy`.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn block_u32(w: *const u32, copy: *mut u32, b: Bounds) -> Block {
    let abs = _mm512_set1_epi32(0x7fff_ffff);
    let [x, y] = [0, 16].map(|o| {
        let raw = _mm512_loadu_si512(w.add(o) as *const __m512i);
        _mm512_storeu_si512(copy.add(o) as *mut __m512i, raw);
        _mm512_and_si512(raw, abs)
    });
    let at_most = |t: i64| {
        let t = _mm512_set1_epi32(t as i32);
        join(_mm512_cmple_epi32_mask(x, t), _mm512_cmple_epi32_mask(y, t))
    };
    let inf = _mm512_set1_epi32(0x7f80_0000);
    Block {
        below: at_most(b.lo),
        below_mid: at_most(b.mid),
        under_hi: at_most(b.hi),
        nan: join(
            _mm512_cmpgt_epi32_mask(x, inf),
            _mm512_cmpgt_epi32_mask(y, inf),
        ),
    }
}

/// [`block_u32`] for 32 bf16 or f16 weights, compared in their own 16-bit space (`inf`: the
/// magnitude bits of infinity; NaNs lie above).
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
pub(super) unsafe fn block_u16(w: *const u16, copy: *mut u16, b: Bounds, inf: i16) -> Block {
    let raw = _mm512_loadu_si512(w as *const __m512i);
    _mm512_storeu_si512(copy as *mut __m512i, raw);
    let k = _mm512_and_si512(raw, _mm512_set1_epi16(0x7fff));
    let at_most = |t: i64| _mm512_cmple_epi16_mask(k, _mm512_set1_epi16(t as i16));
    Block {
        below: at_most(b.lo),
        below_mid: at_most(b.mid),
        under_hi: at_most(b.hi),
        nan: _mm512_cmpgt_epi16_mask(k, _mm512_set1_epi16(inf)),
    }
}

/// The u32 keys of the 16 f32 weights at `w`.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn keys16_u32(w: *const u32) -> __m512i {
    _mm512_and_si512(
        _mm512_loadu_si512(w as *const __m512i),
        _mm512_set1_epi32(0x7fff_ffff),
    )
}

/// The u32 keys of the 16 bf16 weights at `w`.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn keys16_u16(w: *const u16) -> __m512i {
    let bits = _mm512_cvtepu16_epi32(_mm256_loadu_si256(w as *const __m256i));
    _mm512_slli_epi32::<16>(_mm512_and_si512(bits, _mm512_set1_epi32(0x7fff)))
}

/// The u32 keys of the 16 f16 weights at `w`, one by one ([`Key::of_f16`], their one
/// definition): only the packer of a block with several candidates needs them.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn keys16_f16(w: *const u16) -> __m512i {
    let keys: [u32; 16] = std::array::from_fn(|i| u32::of_f16(*w.add(i)));
    _mm512_loadu_si512(keys.as_ptr() as *const __m512i)
}

/// Survivor bits of 32 mask bytes (nonzero = alive).
#[target_feature(enable = "avx512bw,avx512vl")]
#[inline]
unsafe fn alive_bits(m: *const u8) -> u32 {
    let v = _mm256_loadu_si256(m as *const __m256i);
    _mm256_test_epi8_mask(v, v)
}

/// Write byte `i` of `o` = bit `i` of `keep` (0 or 1), 32 bytes.
#[target_feature(enable = "avx512bw,avx512vl")]
#[inline]
unsafe fn store_bits(o: *mut u8, keep: u32) {
    _mm256_storeu_si256(
        o as *mut __m256i,
        _mm256_maskz_mov_epi8(keep, _mm256_set1_epi8(1)),
    );
}

/// See [`Isa::pack_pairs`]: sixteen lanes at a time, keys and indices compressed, then
/// interleaved.
#[target_feature(enable = "avx512f,popcnt")]
#[inline]
unsafe fn pack_pairs<L: Lanes>(w: *const L, start: u32, bits: u32, dst: *mut u32) -> usize {
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    // Lane i of the pairs: key i/2 (from the first operand) or index i/2 (from the second).
    let first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let mut n = 0;
    for half in 0..2 {
        let m = (bits >> (16 * half)) as u16;
        let keys = _mm512_maskz_compress_epi32(m, L::keys16(w.add(16 * half)));
        let at = _mm512_set1_epi32((start + 16 * half as u32) as i32);
        let index = _mm512_maskz_compress_epi32(m, _mm512_add_epi32(at, lanes));
        let out = dst.add(2 * n) as *mut __m512i;
        _mm512_storeu_si512(out, _mm512_permutex2var_epi32(keys, first, index));
        let packed = m.count_ones() as usize;
        // Near the threshold a half rarely holds more than 8 candidates: the second 8 pairs'
        // permute and store would write only lanes past the end.
        if packed > 8 {
            _mm512_storeu_si512(out.add(1), _mm512_permutex2var_epi32(keys, second, index));
        }
        n += packed;
    }
    n
}

/// See [`super::window_filter`]: eight pairs a step, the keys compared as the low halves of
/// 64-bit lanes, the pairs in the window compressed in a register and stored whole (a
/// compressing store to memory is microcoded on some AVX-512 cores).
///
/// # Safety
/// The CPU must have AVX-512 F; `pairs` must point to `len` readable pairs and `dst` to room
/// for `len + 8`.
#[target_feature(enable = "avx512f,popcnt")]
pub(super) unsafe fn window_filter(
    pairs: *const u64,
    len: usize,
    bounds: super::WindowBounds,
    dst: *mut u64,
) -> (u64, bool, usize) {
    let low_half = _mm512_set1_epi64(0xFFFF_FFFF);
    let [lo, span, start, width] = [
        bounds.lo,
        bounds.hi - bounds.lo,
        bounds.start,
        bounds.end - bounds.start,
    ]
    .map(|b| _mm512_set1_epi64(b as i64));
    let (mut below, mut outside, mut n) = (0u64, 0u8, 0usize);
    let full = len / 8 * 8;
    for at in (0..full).step_by(8) {
        let pair = _mm512_loadu_si512(pairs.add(at).cast());
        let key = _mm512_and_si512(pair, low_half);
        below += _mm512_cmplt_epu64_mask(key, start).count_ones() as u64;
        outside |= _mm512_cmpge_epu64_mask(_mm512_sub_epi64(key, lo), span);
        let inside = _mm512_cmplt_epu64_mask(_mm512_sub_epi64(key, start), width);
        _mm512_storeu_si512(dst.add(n).cast(), _mm512_maskz_compress_epi64(inside, pair));
        n += inside.count_ones() as usize;
    }
    let (b, o, m) = super::window_filter_portable(pairs.add(full), len - full, bounds, dst.add(n));
    (below + b, outside != 0 || o, n + m)
}
