//! The weight types the block scanner reads, and how each reaches its key and its
//! instruction-set versions of a block.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512, Block, Bounds};

/// Raw weight bits this scanner reads: f32 (u32 lanes) or bf16 (u16 lanes).
pub(crate) trait Lanes: Copy {
    /// Bits of the key shift: the u32 key is `(bits & ABS) << SHIFT`.
    const SHIFT: u32;
    fn key(self) -> u32;
    /// [`Isa::block`] with AVX2.
    ///
    /// # Safety
    /// AVX2 must be available and `w` must point to 32 readable elements.
    #[cfg(target_arch = "x86_64")]
    unsafe fn block_avx2(w: *const Self, bounds: Bounds) -> Block;
    /// [`Isa::block`] with AVX-512.
    ///
    /// # Safety
    /// AVX-512 F and BW must be available and `w` must point to 32 readable elements.
    #[cfg(target_arch = "x86_64")]
    unsafe fn block_avx512(w: *const Self, bounds: Bounds) -> Block;
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
    const SHIFT: u32 = 0;

    #[inline(always)]
    fn key(self) -> u32 {
        self & 0x7fff_ffff
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn block_avx2(w: *const u32, bounds: Bounds) -> Block {
        avx2::block_u32(w, bounds)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn block_avx512(w: *const u32, bounds: Bounds) -> Block {
        avx512::block_u32(w, bounds)
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

impl Lanes for u16 {
    const SHIFT: u32 = 16;

    #[inline(always)]
    fn key(self) -> u32 {
        ((self & 0x7fff) as u32) << 16
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn block_avx2(w: *const u16, bounds: Bounds) -> Block {
        avx2::block_u16(w, bounds)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn block_avx512(w: *const u16, bounds: Bounds) -> Block {
        avx512::block_u16(w, bounds)
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
