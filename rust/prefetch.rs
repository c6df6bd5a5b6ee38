//! Software prefetch a fixed distance ahead of the selection's fused pass.
//!
//! The hardware's stream prefetchers stop at every 4 KiB page, and torch's allocator does not
//! ask for huge pages, so a loop streaming a tensor otherwise began each page with a stall on
//! memory. Paired with the read floor, a fresh selection ran a few percent faster with it. Not
//! in the plain streaming loops (apply, rewind): cut into blocks to prefetch, mask application
//! ran slower.

/// How far ahead of the element being processed its stream is prefetched, in elements (a few
/// pages of f32).
pub(crate) const AHEAD: usize = 1024;

/// Prefetch the cache lines of the `count` elements at `at + AHEAD`. Past the end of the
/// stream it reaches into memory the loop does not own: a prefetch reads nothing and never
/// faults, so the address is only computed (`wrapping_add`), never dereferenced.
#[inline(always)]
pub(crate) fn ahead<T>(at: *const T, count: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    const LINE: usize = 64;
    let start = at.wrapping_add(AHEAD) as *const i8;
    let bytes = count * std::mem::size_of::<T>();
    let mut offset = 0;
    while offset < bytes {
        // SAFETY: SSE (baseline on x86-64) has the instruction; a prefetch accesses no memory.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
        offset += LINE;
    }
}
