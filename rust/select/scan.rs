//! Scanning one run of weights: provisional mask, counts and in-bracket candidates, one read of
//! each weight (the fused pass over every chunk is [`super::pass`]).
//!
//! The inner loop ([`Scan`]) is shared with the streaming threshold ([`crate::threshold`]),
//! which discards the mask ([`Discard`]) and keeps only candidate keys ([`Sink`]).

use super::{simd, Bracket};
use crate::chunk::{self, Alive, AliveVisitor};
use crate::magnitude::{Key, Weights};

/// Elements per block of the fused pass: one bit each in the block's candidate bitmask.
pub(crate) const BLOCK: usize = 32;

/// Counts, candidates and (with `out`) the provisional mask of one run of weights: the AVX2
/// block scanner for f32, bf16 and f16 in the u32 key space (`fast`), the portable loop
/// otherwise.
pub(crate) fn scan_weights<K: Key, S: Sink<K>>(
    weights: Weights<'_>,
    alive: Option<&[u8]>,
    out: Option<&mut [u8]>,
    bracket: Bracket<K>,
    sink: Option<&mut S>,
    fast: bool,
) -> Counts {
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: `fast` says the CPU has AVX2 and POPCNT, and the keys are u32.
        match weights {
            Weights::F32(w) => return unsafe { simd::scan(w, alive, out, bracket, sink) },
            Weights::Bf16(w) => return unsafe { simd::scan(w, alive, out, bracket, sink) },
            Weights::F16(w) => {
                let w = simd::F16Bits::cast(w);
                return unsafe { simd::scan(w, alive, out, bracket, sink) };
            }
            Weights::F64(_) => {}
        }
    }
    let _ = fast;
    match out {
        Some(out) => chunk::visit::<K, _>(weights, alive, Scan { bracket, out, sink }),
        None => chunk::visit::<K, _>(
            weights,
            alive,
            Scan {
                bracket,
                out: Discard::default(),
                sink,
            },
        ),
    }
}

/// Where the in-bracket candidates of a scan go.
// Only the AVX2 scanner writes pairs; elsewhere the pair methods go unused.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) trait Sink<K> {
    fn push(&mut self, key: K, index: u32);

    /// Room for [`BLOCK`] more candidates, written as (u32 key, u32 index) pairs by the AVX2
    /// scanner, or `None` for a sink that takes pushes only.
    #[inline(always)]
    fn pair_room(&mut self) -> Option<*mut u32> {
        None
    }

    /// Adopt `n` pairs written at the last [`Sink::pair_room`].
    ///
    /// # Safety
    /// `n` pairs must have been written there, and `n <= BLOCK`.
    #[inline(always)]
    unsafe fn pairs_written(&mut self, _n: usize) {}

    /// Push the first `n` (at most two) of `pairs`. A sink may write both and keep `n`, so a
    /// scanner need not branch on how many of a block's weights are candidates.
    #[inline(always)]
    fn push_first(&mut self, pairs: [(K, u32); 2], n: usize) {
        for (key, index) in pairs.into_iter().take(n) {
            self.push(key, index);
        }
    }
}

impl<K> Sink<K> for Vec<(K, u32)> {
    #[inline(always)]
    fn push(&mut self, key: K, index: u32) {
        Vec::push(self, (key, index));
    }

    #[inline(always)]
    fn pair_room(&mut self) -> Option<*mut u32> {
        // Only u32 keys laid out as (key, index) take the scanner's pairs.
        if std::mem::size_of::<(K, u32)>() != 8 || std::mem::offset_of!((K, u32), 0) != 0 {
            return None;
        }
        self.reserve(BLOCK);
        Some(self.spare_capacity_mut().as_mut_ptr() as *mut u32)
    }

    #[inline(always)]
    unsafe fn pairs_written(&mut self, n: usize) {
        // SAFETY: the caller wrote `n` initialised pairs into the reserved spare capacity.
        unsafe { self.set_len(self.len() + n) };
    }

    #[inline(always)]
    fn push_first(&mut self, pairs: [(K, u32); 2], n: usize) {
        debug_assert!(n <= 2);
        self.reserve(2);
        let room = self.spare_capacity_mut();
        let [first, second] = pairs;
        room[0].write(first);
        room[1].write(second);
        // SAFETY: the first `n <= 2` spare slots were just initialised.
        unsafe { self.set_len(self.len() + n) };
    }
}

/// Push a block's in-bracket weights (bit `i` of `found`: the weight whose pair is `pair(i)`)
/// if there are at most two, and say whether it did. Whether a block holds any, and how many,
/// is random near the threshold (a quarter of the blocks hold one at a 1% share), and a branch
/// on it mispredicted often enough to cost more than the writes: both pairs are made, a missing
/// one from the block's first weight, and only the count decides what the sink keeps.
#[inline(always)]
pub(crate) fn push_up_to_two<K, S: Sink<K>>(
    sink: &mut S,
    found: u32,
    pair: impl Fn(usize) -> (K, u32),
) -> bool {
    let rest = found & found.wrapping_sub(1);
    if rest & rest.wrapping_sub(1) != 0 {
        return false;
    }
    let [i, j] = [found, rest].map(|b| (b.trailing_zeros() & 31) as usize);
    sink.push_first([pair(i), pair(j)], found.count_ones() as usize);
    true
}

/// Where the provisional mask of a scan goes, one block of at most [`BLOCK`] bytes at a time.
pub(crate) trait Out {
    fn block(&mut self, start: usize, len: usize) -> &mut [u8];
}

impl Out for &mut [u8] {
    #[inline(always)]
    fn block(&mut self, start: usize, len: usize) -> &mut [u8] {
        &mut self[start..start + len]
    }
}

/// No mask wanted (a threshold only): each block is written to scratch and dropped.
#[derive(Default)]
pub(crate) struct Discard([u8; BLOCK]);

impl Out for Discard {
    #[inline(always)]
    fn block(&mut self, _start: usize, len: usize) -> &mut [u8] {
        &mut self.0[..len]
    }
}

/// Alive weights, those below the bracket, and whether a NaN is among the alive.
pub(crate) struct Counts {
    pub alive: u64,
    pub below: u64,
    pub nan: bool,
}

/// One chunk of the fused pass; `sink: None` counts without collecting (after an overflow).
pub(crate) struct Scan<'s, K, O, S> {
    pub bracket: Bracket<K>,
    pub out: O,
    pub sink: Option<&'s mut S>,
}

impl<K: Key, O: Out, S: Sink<K>> AliveVisitor<K> for Scan<'_, K, O, S> {
    type Output = Counts;

    #[inline(always)]
    fn visit<T: Copy, F: Fn(T) -> K + Copy, A: Alive>(
        self,
        bits: &[T],
        key: F,
        alive: A,
    ) -> Counts {
        // Wheels target baseline x86-64 (SSE2); AVX2, where the CPU has it, doubles the lanes of
        // the compare-and-pack loop.
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { self.scan_avx2(bits, key, alive) };
        }
        self.scan(bits, key, alive)
    }
}

impl<K: Key, O: Out, S: Sink<K>> Scan<'_, K, O, S> {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt")]
    unsafe fn scan_avx2<T: Copy, F: Fn(T) -> K + Copy, A: Alive>(
        self,
        bits: &[T],
        key: F,
        alive: A,
    ) -> Counts {
        self.scan(bits, key, alive)
    }

    #[inline(always)]
    fn scan<T: Copy, F: Fn(T) -> K + Copy, A: Alive>(
        mut self,
        bits: &[T],
        key: F,
        alive: A,
    ) -> Counts {
        let Bracket { lo, mid, hi } = self.bracket;
        // u32 counters cannot overflow: a chunk holds at most CHUNK (2^16) elements.
        let (mut n_alive, mut n_below) = (0u32, 0u32);
        let mut nan = false;
        let mut start = 0;
        // Each block's keys as compared: candidates are pushed from here, not keyed from `bits`
        // again, so a racing writer cannot give one a key its bracket test did not see.
        let mut keys = [K::ZERO; BLOCK];
        for wb in bits.chunks(BLOCK) {
            let ob = self.out.block(start, wb.len());
            // One bit per in-bracket element: the vector loop stays branch-free and the rare
            // candidates are then visited by their set bits alone.
            // Keys first, as if every weight were alive (the same vector loop for both cases),
            // then the survivors folded in with byte and bit operations: mixing byte-wide mask
            // lanes into the 32-bit key lanes made LLVM emit a much slower loop.
            let (mut below_bits, mut bracket_bits, mut nan_bits) = (0u32, 0u32, 0u32);
            for (i, ((&b, o), slot)) in wb.iter().zip(ob.iter_mut()).zip(&mut keys).enumerate() {
                let k = key(b);
                *slot = k;
                let below = k < lo;
                *o = (k >= mid) as u8;
                below_bits |= (below as u32) << i;
                bracket_bits |= ((!below & (k < hi)) as u32) << i;
                nan_bits |= (k.is_nan() as u32) << i;
            }
            let alive_bits = alive.window(start, wb.len()).clear_dead(ob);
            n_alive += alive_bits.count_ones();
            n_below += (below_bits & alive_bits).count_ones();
            nan |= nan_bits & alive_bits != 0;
            let mut in_bracket = bracket_bits & alive_bits;
            if let Some(sink) = self.sink.as_deref_mut() {
                if push_up_to_two(sink, in_bracket, |i| {
                    (keys[i & (BLOCK - 1)], (start + i) as u32)
                }) {
                    in_bracket = 0;
                }
                while in_bracket != 0 {
                    let i = in_bracket.trailing_zeros() as usize;
                    sink.push(keys[i], (start + i) as u32);
                    in_bracket &= in_bracket - 1;
                }
            }
            start += wb.len();
        }
        Counts {
            alive: n_alive as u64,
            below: n_below as u64,
            nan,
        }
    }
}
