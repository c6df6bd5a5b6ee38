//! Stores that bypass the caches, for outputs far larger than them (torch.prune's state of a
//! large model: a float mask and a masked weight, twice the weights' bytes).
//!
//! An ordinary store first reads its cache line from memory (to own it), so each output byte
//! costs two memory transfers; a non-temporal store writes whole lines without reading them.
//! Worth it only where the output would not stay in the caches anyway, and only on x86-64,
//! whose baseline (SSE2) has the instruction. Measured on an Intel Xeon host, the drop-in's
//! f32 state at 110 M weights took about two thirds of the time; an AMD EPYC host had measured
//! an earlier streaming variant a few percent slower (docs/performance.md).

/// Outputs of at least this many bytes in one call are streamed past the caches: far beyond
/// the last-level cache of the machines we measure on, so nothing a caller reads next is lost.
pub(crate) const STREAM_FROM_BYTES: usize = 64 << 20;

/// Elements a streamed block holds: whole lines of every width (four of f32). LLVM vectorises
/// a block this long at the full vector width; at one line of f32 it took narrower vectors and
/// the call ran a sixth slower.
const BLOCK: usize = 64;

/// Whether outputs of `bytes` in one call are written with non-temporal stores.
pub(crate) fn wanted(bytes: usize) -> bool {
    cfg!(target_arch = "x86_64") && bytes >= STREAM_FROM_BYTES
}

/// `body(range, out_a, out_b)` writes elements `range` of the outputs `a` and `b` (given as
/// slices of that range); over all of them at once, or, with `stream`, a [`BLOCK`] at a time
/// into registers that are then streamed to memory. Inlined into the caller's vectorised
/// loops, so the inputs' reads and the streamed writes overlap: computing a larger scratch in
/// cache and streaming it afterwards measured no faster than ordinary stores.
#[inline(always)]
pub(crate) fn by_lines<T: Copy>(
    stream: bool,
    a: &mut [T],
    mut b: Option<&mut [T]>,
    body: impl Fn(std::ops::Range<usize>, &mut [T], Option<&mut [T]>),
) {
    let n = a.len();
    let size = std::mem::size_of::<T>();
    let misalignment = |p: *const T| (p as usize) % LINE;
    // Both outputs must reach a line boundary at the same element.
    let head = (LINE - misalignment(a.as_ptr())) % LINE / size;
    let aligned = misalignment(a.as_ptr()) % size == 0
        && b.as_deref()
            .is_none_or(|b| misalignment(b.as_ptr()) == misalignment(a.as_ptr()));
    if !stream || !aligned || n < head + BLOCK {
        return body(0..n, a, b);
    }
    let wide = wide_stores();
    body(
        0..head,
        &mut a[..head],
        b.as_deref_mut().map(|b| &mut b[..head]),
    );
    let blocks_end = head + (n - head) / BLOCK * BLOCK;
    let zero = a[0];
    for start in (head..blocks_end).step_by(BLOCK) {
        let (mut block_a, mut block_b) = ([zero; BLOCK], [zero; BLOCK]);
        body(
            start..start + BLOCK,
            &mut block_a,
            b.is_some().then_some(&mut block_b[..]),
        );
        store(wide, &mut a[start..start + BLOCK], &block_a);
        if let Some(b) = b.as_deref_mut() {
            store(wide, &mut b[start..start + BLOCK], &block_b);
        }
    }
    body(
        blocks_end..n,
        &mut a[blocks_end..],
        b.map(|b| &mut b[blocks_end..]),
    );
    fence();
}

const LINE: usize = 64;

/// Whether the block can leave its registers in 64-byte streaming stores (AVX-512, looked up
/// once per call); otherwise SSE2's 16-byte ones, which fill the same lines.
#[inline(always)]
fn wide_stores() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::select::level() == Some(crate::select::Level::Avx512)
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `dst = src` with non-temporal stores: `dst` starts on a line boundary ([`by_lines`] arranges
/// it) and a block is whole lines.
#[inline(always)]
fn store<T: Copy>(wide: bool, dst: &mut [T], src: &[T; BLOCK]) {
    debug_assert_eq!(dst.len(), BLOCK);
    #[cfg(target_arch = "x86_64")]
    {
        let bytes = std::mem::size_of_val(src);
        let (s, d) = (src.as_ptr() as *const u8, dst.as_mut_ptr() as *mut u8);
        // SAFETY: both hold `bytes` bytes (whole lines), `d` is line-aligned, `wide` only where
        // the CPU has AVX-512, and SSE2 is baseline.
        unsafe {
            if wide {
                stream_64(d, s, bytes)
            } else {
                stream_16(d, s, bytes)
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = wide;
        dst.copy_from_slice(src);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn stream_64(d: *mut u8, s: *const u8, bytes: usize) {
    use std::arch::x86_64::{__m512i, _mm512_loadu_si512, _mm512_stream_si512};
    for at in (0..bytes).step_by(64) {
        _mm512_stream_si512(
            d.add(at) as *mut __m512i,
            _mm512_loadu_si512(s.add(at) as *const __m512i),
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn stream_16(d: *mut u8, s: *const u8, bytes: usize) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
    for at in (0..bytes).step_by(16) {
        _mm_stream_si128(
            d.add(at) as *mut __m128i,
            _mm_loadu_si128(s.add(at) as *const __m128i),
        );
    }
}

/// Order this thread's non-temporal stores before its later stores (x86's streaming stores
/// are weakly ordered: without it, a thread that sees the work done could read stale bytes).
#[inline]
pub(crate) fn fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE (baseline on x86-64) has the instruction.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_element_at_every_alignment_and_length() {
        let want: Vec<u32> = (0..300).map(|i| i * 2_654_435_761u32).collect();
        for start in 0..8 {
            for len in [0, 1, 3, 4, 5, 17, 64, 257, 300 - start] {
                for stream in [false, true] {
                    let (mut a, mut b) = (vec![0u32; 300], vec![0u32; 300]);
                    by_lines(
                        stream,
                        &mut a[start..start + len],
                        Some(&mut b[start..start + len]),
                        |r, a, b| {
                            a.copy_from_slice(&want[r.clone()]);
                            b.expect("b")
                                .iter_mut()
                                .zip(r)
                                .for_each(|(x, i)| *x = !want[i]);
                        },
                    );
                    assert_eq!(&a[start..start + len], &want[..len]);
                    assert!(b[start..start + len]
                        .iter()
                        .zip(&want)
                        .all(|(x, w)| *x == !w));
                    let outside =
                        |v: &[u32]| v[..start].iter().chain(&v[start + len..]).all(|&x| x == 0);
                    assert!(outside(&a) && outside(&b));
                }
            }
        }
    }

    #[test]
    fn streams_only_large_outputs() {
        assert!(!wanted(STREAM_FROM_BYTES - 1));
        assert_eq!(wanted(STREAM_FROM_BYTES), cfg!(target_arch = "x86_64"));
    }
}
