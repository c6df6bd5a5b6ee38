//! The fix-up's window filter over a chunk's (key, index) candidate pairs: AVX-512's compress
//! where the CPU has it, a portable loop for the tail and as the tests' reference.

#[cfg(target_arch = "x86_64")]
use super::{level, Level};

/// The fix-up's window ([`crate::select::window`]) in the u32 key space, as u64 bounds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WindowBounds {
    /// The bracket: a key outside `[lo, hi)` means the weights changed under the pass.
    pub lo: u64,
    pub hi: u64,
    /// The window, `[start, end)` inside the bracket.
    pub start: u64,
    pub end: u64,
}

/// Over `len` (u32 key, u32 index) pairs at `pairs`, each read as a little-endian u64 (4-byte
/// aligned: read unaligned): how many keys lie below the window, whether any lies outside the
/// bracket, and the pairs in the window copied to `dst` in order (their number returned).
/// None without AVX-512, whose compress copies them without a branch or a store per pair.
///
/// # Safety
/// `pairs` must point to `len` readable pairs and `dst` to room for `len + 8`.
pub(crate) unsafe fn window_filter(
    pairs: *const u64,
    len: usize,
    bounds: WindowBounds,
    dst: *mut u64,
) -> Option<(u64, bool, usize)> {
    #[cfg(target_arch = "x86_64")]
    if level() == Some(Level::Avx512) {
        return Some(super::avx512::window_filter(pairs, len, bounds, dst));
    }
    let _ = (pairs, len, bounds, dst);
    None
}

/// [`window_filter`] one pair at a time (the tail, and the tests' reference).
///
/// # Safety
/// `pairs` must point to `len` readable pairs and `dst` to room for `len`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) unsafe fn window_filter_portable(
    pairs: *const u64,
    len: usize,
    bounds: WindowBounds,
    dst: *mut u64,
) -> (u64, bool, usize) {
    let (mut below, mut outside, mut n) = (0u64, false, 0usize);
    for i in 0..len {
        let pair = pairs.add(i).read_unaligned();
        let key = pair & 0xFFFF_FFFF;
        below += (key < bounds.start) as u64;
        outside |= key.wrapping_sub(bounds.lo) >= bounds.hi - bounds.lo;
        if key.wrapping_sub(bounds.start) < bounds.end - bounds.start {
            dst.add(n).write_unaligned(pair);
            n += 1;
        }
    }
    (below, outside, n)
}
