//! Software prefetch: one cache line ([`line`]), used by the sample walk, whose positions the
//! hardware prefetcher cannot follow, and a fixed distance ahead of the fused pass ([`ahead`]).
//!
//! The hardware's stream prefetchers stop at every 4 KiB page, and torch's allocator does not
//! ask for huge pages, so a loop streaming a tensor otherwise began each page with a stall on
//! memory. Paired with the read floor, a fresh selection ran a few percent faster with it. Not
//! in the plain streaming loops (apply, rewind): cut into blocks to prefetch, mask application
//! ran slower.

/// How far ahead of the element being processed its stream is prefetched, in elements (a few
/// pages of f32).
pub(crate) const AHEAD: usize = 1024;

/// Ask for the cache line at `p` without waiting for it. A hint that reads nothing and never
/// faults, so `p` may lie past the memory the caller owns: it is only computed
/// (`wrapping_add`), never dereferenced. Nothing where the target has no prefetch instruction.
#[inline(always)]
pub(crate) fn line<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE (baseline on x86-64) has the instruction; a prefetch accesses no memory.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetch the cache lines of the `count` elements at `at + AHEAD` (see [`line`]).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only the x86 block scanners use it
#[inline(always)]
pub(crate) fn ahead<T>(at: *const T, count: usize) {
    const LINE: usize = 64;
    let start = at.wrapping_add(AHEAD) as *const u8;
    let bytes = count * std::mem::size_of::<T>();
    let mut offset = 0;
    while offset < bytes {
        line(start.wrapping_add(offset));
        offset += LINE;
    }
}
