//! The weight types the block scanner reads, and how each reaches its key and its
//! instruction-set versions of a block.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::minus_one;
#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512, Block, Bounds};
use crate::magnitude::Key;

/// Raw weight bits this scanner reads: f32 (u32 lanes), bf16 (u16 lanes) or f16 ([`F16Bits`]).
/// Each compares its magnitude bits (sign cleared) in its own width: they increase with the key.
pub(crate) trait Lanes: Copy + Default {
    /// The u32 key of this weight.
    fn key(self) -> u32;
    /// The largest magnitude bits whose key is below `bound` (-1 if none): the "bits <= t"
    /// form of "key < bound" that the lane compares take.
    fn below(bound: u64) -> i64;
    /// [`Isa::block`] with AVX2.
    ///
    /// # Safety
    /// AVX2 must be available, `w` must point to 32 readable elements and `copy` to 32
    /// writable ones.
    #[cfg(target_arch = "x86_64")]
    unsafe fn block_avx2(w: *const Self, copy: *mut Self, bounds: Bounds) -> Block;
    /// [`Isa::block`] with AVX-512.
    ///
    /// # Safety
    /// AVX-512 F and BW must be available, `w` must point to 32 readable elements and `copy`
    /// to 32 writable ones.
    #[cfg(target_arch = "x86_64")]
    unsafe fn block_avx512(w: *const Self, copy: *mut Self, bounds: Bounds) -> Block;
    /// The u32 keys of the 8 weights at `w`.
    ///
    /// # Safety
    /// AVX2 must be available and `w` must point to 8 readable elements.
    #[cfg(target_arch = "x86_64")]
    unsafe fn keys8(w: *const Self) -> __m256i;
    /// The u32 keys of the 16 weights at `w`.
    ///
    /// # Safety
    /// AVX-512 F must be available and `w` must point to 16 readable elements.
    #[cfg(target_arch = "x86_64")]
    unsafe fn keys16(w: *const Self) -> __m512i;
}

impl Lanes for u32 {
    #[inline(always)]
    fn key(self) -> u32 {
        self & 0x7fff_ffff
    }

    fn below(bound: u64) -> i64 {
        minus_one(bound, 0, 0x7fff_ffff)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn block_avx2(w: *const u32, copy: *mut u32, bounds: Bounds) -> Block {
        avx2::block_u32(w, copy, bounds)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn block_avx512(w: *const u32, copy: *mut u32, bounds: Bounds) -> Block {
        avx512::block_u32(w, copy, bounds)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn keys8(w: *const u32) -> __m256i {
        avx2::keys8_u32(w)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn keys16(w: *const u32) -> __m512i {
        avx512::keys16_u32(w)
    }
}

/// bf16: the u32 key is the magnitude bits shifted left by 16.
impl Lanes for u16 {
    #[inline(always)]
    fn key(self) -> u32 {
        ((self & 0x7fff) as u32) << 16
    }

    fn below(bound: u64) -> i64 {
        minus_one(bound, 16, 0x7fff)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn block_avx2(w: *const u16, copy: *mut u16, bounds: Bounds) -> Block {
        avx2::block_u16(w, copy, bounds, BF16_INF)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn block_avx512(w: *const u16, copy: *mut u16, bounds: Bounds) -> Block {
        avx512::block_u16(w, copy, bounds, BF16_INF)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn keys8(w: *const u16) -> __m256i {
        avx2::keys8_u16(w)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn keys16(w: *const u16) -> __m512i {
        avx512::keys16_u16(w)
    }
}

const BF16_INF: i16 = 0x7f80;
const F16_INF: i16 = 0x7c00;

/// f16 weight bits: 16-bit lanes like bf16's, keyed by [`Key::of_f16`] instead of a shift.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
pub(crate) struct F16Bits(u16);

impl F16Bits {
    pub(crate) fn cast(bits: &[u16]) -> &[F16Bits] {
        // SAFETY: `F16Bits` is a transparent wrapper of `u16`.
        unsafe { std::slice::from_raw_parts(bits.as_ptr().cast(), bits.len()) }
    }
}

impl Lanes for F16Bits {
    #[inline(always)]
    fn key(self) -> u32 {
        <u32 as Key>::of_f16(self.0)
    }

    fn below(bound: u64) -> i64 {
        // Keys increase with the magnitude bits, so those below `bound` are a prefix of 0..2^15:
        // find its end by bisection.
        let (mut lo, mut hi) = (0u16, 0x8000u16);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if (F16Bits(mid).key() as u64) < bound {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo as i64 - 1
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn block_avx2(w: *const F16Bits, copy: *mut F16Bits, bounds: Bounds) -> Block {
        avx2::block_u16(w.cast(), copy.cast(), bounds, F16_INF)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn block_avx512(w: *const F16Bits, copy: *mut F16Bits, bounds: Bounds) -> Block {
        avx512::block_u16(w.cast(), copy.cast(), bounds, F16_INF)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn keys8(w: *const F16Bits) -> __m256i {
        avx2::keys8_f16(w.cast())
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn keys16(w: *const F16Bits) -> __m512i {
        avx512::keys16_f16(w.cast())
    }
}
