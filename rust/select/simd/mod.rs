//! The fused pass's inner block for f32, bf16 and f16 weights in the u32 key space, 32 weights
//! at a time: their compares become three 32-bit masks, and the provisional mask bytes
//! (survivors folded in) are written once from those bits. [`avx512`] where the CPU has AVX-512
//! (F, BW, VL), [`avx2`] otherwise; one loop ([`scan_raw`]) over either.
//!
//! The portable loop in [`super::scan`] builds the same bitmasks with a shift and an OR per
//! lane, which LLVM cannot turn into `movemask`: it stayed compute-bound at several times the
//! read floor. bf16 and f16 are compared in their own 16-bit space (16 or 32 lanes per vector,
//! no widening): their magnitude bits increase with their u32 keys, so the bracket's bounds are
//! mapped into 16-bit thresholds once per chunk ([`Lanes::below`]) instead of widening every
//! weight.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod lanes;
#[cfg(all(test, target_arch = "x86_64"))]
mod tests;
mod widest;
mod window_filter;

pub(crate) use lanes::{F16Bits, Lanes};
pub(crate) use widest::widest;
#[cfg(target_arch = "x86_64")] // the AVX-512 filter's tail, and the tests' reference
use window_filter::window_filter_portable;
pub(crate) use window_filter::{window_filter, WindowBounds};

use std::sync::OnceLock;

use super::lost::{Lost, LostSpan};
use super::scan::{push_up_to_two, Counts, Sink};
use super::Bracket;
use crate::magnitude::Key;
use crate::prefetch;

/// Bracket bounds as "key <= bound" thresholds for signed lane compares: `k < lo` is
/// `k <= lo - 1`. Keys never exceed `top` (sign bit clear), so larger bounds clamp to it.
fn minus_one(bound: u64, shift: u32, top: i64) -> i64 {
    let rounded = bound.div_ceil(1 << shift) as i64; // k << shift < bound  <=>  k < ceil(bound / 2^shift)
    (rounded - 1).min(top)
}

/// The vector instruction sets the block scanner has a version for, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Avx2,
    Avx512,
}

/// The environment variable that caps the scanner's instruction set: `avx512`, `avx2` or
/// `portable`. For CPUs that slow their clock under AVX-512, and for comparing the scanners.
pub const SIMD_ENV: &str = "LOTTERY_TICKET_SIMD";

/// The cap [`SIMD_ENV`] asks for (`Ok(None)`: the portable loop), or why its value is not one.
fn cap_from_env() -> Result<Option<Level>, String> {
    match std::env::var(SIMD_ENV).as_deref() {
        Err(_) | Ok("") | Ok("avx512") => Ok(Some(Level::Avx512)),
        Ok("avx2") => Ok(Some(Level::Avx2)),
        Ok("portable") => Ok(None),
        Ok(other) => Err(format!(
            "{SIMD_ENV}: expected avx512, avx2 or portable, got {other:?}"
        )),
    }
}

fn detect() -> Option<Level> {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512::available() {
            return Some(Level::Avx512);
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("popcnt") {
            return Some(Level::Avx2);
        }
    }
    None
}

/// The block scanner the passes run: the best this CPU has, capped by [`SIMD_ENV`] (read once;
/// an unreadable value leaves no cap, and [`scanner`] reports it).
pub(crate) fn level() -> Option<Level> {
    static LEVEL: OnceLock<Option<Level>> = OnceLock::new();
    *LEVEL.get_or_init(|| detect().min(cap_from_env().unwrap_or(Some(Level::Avx512))))
}

/// The name of the scanner the passes run (`avx512`, `avx2` or `portable`), or the error of an
/// unreadable [`SIMD_ENV`].
pub fn scanner() -> Result<&'static str, String> {
    cap_from_env()?;
    Ok(match level() {
        Some(Level::Avx512) => "avx512",
        Some(Level::Avx2) => "avx2",
        None => "portable",
    })
}

/// Whether this CPU runs a block scanner.
pub(crate) fn available() -> bool {
    level().is_some()
}

/// A bracket's bounds in a lane type's magnitude bits, as "bits <= bound" thresholds
/// ([`Lanes::below`]).
#[derive(Clone, Copy)]
pub(crate) struct Bounds {
    lo: i64,
    mid: i64,
    hi: i64,
}

impl Bounds {
    fn of<L: Lanes, K: Key>(bracket: Bracket<K>) -> Bounds {
        let at = |bound: K| L::below(bound.to_u64());
        Bounds {
            lo: at(bracket.lo),
            mid: at(bracket.mid),
            hi: at(bracket.hi),
        }
    }
}

/// Bit `i` of each: whether weight `i` of a block's 32 lies below the bracket, below its
/// `mid` (provisionally pruned), below its top, or is NaN.
pub(crate) struct Block {
    below: u32,
    below_mid: u32,
    under_hi: u32,
    nan: u32,
}

/// One instruction set's operations on a block of 32 weights.
#[cfg(target_arch = "x86_64")]
pub(crate) trait Isa {
    /// The [`Block`] of the 32 weights at `w`, which are also copied to `copy`: the values
    /// compared, so a candidate's key is the one its bracket test saw even if another thread
    /// writes the weights meanwhile (the fix-up infers the provisional mask from those keys).
    ///
    /// # Safety
    /// The CPU must have the instruction set, `w` must point to 32 readable elements and `copy`
    /// to 32 writable ones.
    unsafe fn block<L: Lanes>(w: *const L, copy: *mut L, bounds: Bounds) -> Block;
    /// Survivor bits of 32 mask bytes (nonzero = alive).
    ///
    /// # Safety
    /// The CPU must have the instruction set and `m` must point to 32 readable bytes.
    unsafe fn alive_bits(m: *const u8) -> u32;
    /// Write byte `i` of `o` = bit `i` of `keep` (0 or 1), 32 bytes.
    ///
    /// # Safety
    /// The CPU must have the instruction set and `o` must point to 32 writable bytes.
    unsafe fn store_bits(o: *mut u8, keep: u32);
    /// Write the (key, start + i) pairs of the 32 weights at `w` whose bit `i` is set in
    /// `bits` to `dst`, in order, and return how many. Branch-free: near the threshold the
    /// candidates fall at random, and a loop over set bits mispredicted about once a block.
    ///
    /// # Safety
    /// The CPU must have the instruction set, `w` must point to 32 readable elements and `dst`
    /// to room for 32 pairs (64 u32).
    unsafe fn pack_pairs<L: Lanes>(w: *const L, start: u32, bits: u32, dst: *mut u32) -> usize;
}

/// The fused pass over one chunk of f32, bf16 or f16 weights in the u32 key space: what
/// [`super::scan`]'s portable loop computes, block by block with the best [`Level`], the tail
/// portably. `out: None` skips the provisional mask (the streaming threshold wants counts only).
///
/// # Safety
/// A block scanner must be available ([`available`]).
#[cfg(target_arch = "x86_64")]
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
    let level = level().expect("a block scanner");
    scan_at(level, bits, alive, out, bracket, sink, None).0
}

/// [`scan`] over masks that hold the survivors and receive the provisional mask: each block's
/// survivors are read before its mask bytes are written, so no copy of them is needed. Writes
/// one word per 32 weights to `lost`: the bits of those alive before and provisionally pruned
/// (below the bracket's `mid`), after the chunks `lost` holds.
///
/// # Safety
/// A block scanner must be available ([`available`]).
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn scan_in_place<L: Lanes, K: Key, S: Sink<K>>(
    bits: &[L],
    masks: &mut [u8],
    bracket: Bracket<K>,
    sink: Option<&mut S>,
    lost: &mut Lost,
) -> (Counts, LostSpan) {
    assert!(masks.len() >= bits.len(), "mask shorter than its weights");
    let at = masks.as_mut_ptr();
    let level = level().expect("a block scanner");
    scan_at(
        level,
        bits,
        Some(at as *const u8),
        Some(at),
        bracket,
        sink,
        Some(lost),
    )
}

/// [`scan_raw`] with the instruction set of `level`.
///
/// # Safety
/// As [`scan_raw`], and the CPU must run `level`.
#[cfg(target_arch = "x86_64")]
unsafe fn scan_at<L: Lanes, K: Key, S: Sink<K>>(
    level: Level,
    bits: &[L],
    alive: Option<*const u8>,
    out: Option<*mut u8>,
    bracket: Bracket<K>,
    sink: Option<&mut S>,
    lost: Option<&mut Lost>,
) -> (Counts, LostSpan) {
    match level {
        Level::Avx2 => scan_avx2(bits, alive, out, bracket, sink, lost),
        Level::Avx512 => scan_avx512(bits, alive, out, bracket, sink, lost),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
unsafe fn scan_avx2<L: Lanes, K: Key, S: Sink<K>>(
    bits: &[L],
    alive: Option<*const u8>,
    out: Option<*mut u8>,
    bracket: Bracket<K>,
    sink: Option<&mut S>,
    lost: Option<&mut Lost>,
) -> (Counts, LostSpan) {
    scan_raw::<avx2::Avx2, L, K, S>(bits, alive, out, bracket, sink, lost)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt,avx512f,avx512bw,avx512vl")]
unsafe fn scan_avx512<L: Lanes, K: Key, S: Sink<K>>(
    bits: &[L],
    alive: Option<*const u8>,
    out: Option<*mut u8>,
    bracket: Bracket<K>,
    sink: Option<&mut S>,
    lost: Option<&mut Lost>,
) -> (Counts, LostSpan) {
    scan_raw::<avx512::Avx512, L, K, S>(bits, alive, out, bracket, sink, lost)
}

/// Push the in-bracket weights of the block at `start` (bit `i` of `found`: weight `start + i`,
/// read from `block`, the copy its bracket test compared) to `sink`: up to two without a branch
/// on how many ([`push_up_to_two`]), more (rare but at a wide bracket) through the packer.
///
/// # Safety
/// The CPU must have `I`'s instruction set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn collect<I: Isa, L: Lanes, K: Key, S: Sink<K>>(
    block: &[L; 32],
    start: usize,
    mut found: u32,
    sink: &mut S,
) {
    // `& 31`: lets the compiler drop the bounds check (the lanes are below 32).
    let pair = |i: usize| (K::from_u64(block[i & 31].key() as u64), (start + i) as u32);
    if push_up_to_two(sink, found, pair) {
        return;
    }
    if let Some(dst) = sink.pair_room() {
        let n = I::pack_pairs(block.as_ptr(), start as u32, found, dst);
        sink.pairs_written(n);
        return;
    }
    while found != 0 {
        let i = found.trailing_zeros() as usize;
        sink.push(K::from_u64(block[i].key() as u64), (start + i) as u32);
        found &= found - 1;
    }
}

/// The block loop, inlined into a caller compiled for `I`'s instruction set.
///
/// # Safety
/// The CPU must have `I`'s instruction set; `alive` and `out` must each point to `bits.len()`
/// bytes (they may be the same bytes: a block is read before it is written).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn scan_raw<I: Isa, L: Lanes, K: Key, S: Sink<K>>(
    bits: &[L],
    alive: Option<*const u8>,
    out: Option<*mut u8>,
    bracket: Bracket<K>,
    mut sink: Option<&mut S>,
    mut lost: Option<&mut Lost>,
) -> (Counts, LostSpan) {
    debug_assert_eq!(K::BITS, 31, "u32 keys only");
    let bounds = Bounds::of::<L, K>(bracket);
    let (mut n_alive, mut n_below, mut nan) = (0u32, 0u32, 0u32);
    let full = bits.len() / 32 * 32;
    let lost_start = lost
        .as_deref_mut()
        .map(|l| l.begin(bits.len().div_ceil(32)));
    let mut any_lost = 0u32;
    // Each block's weights as compared: candidates are read from here, not from `bits` again.
    let mut copy = [L::default(); 32];
    let mut start = 0;
    while start < full {
        prefetch::ahead(bits.as_ptr().wrapping_add(start), 32);
        let block = I::block(bits.as_ptr().add(start), copy.as_mut_ptr(), bounds);
        let alive_bits = alive.map_or(u32::MAX, |a| I::alive_bits(a.add(start)));
        if let Some(o) = out {
            I::store_bits(o.add(start), !block.below_mid & alive_bits);
        }
        if let Some(lost) = lost.as_deref_mut() {
            let word = block.below_mid & alive_bits;
            lost.push(word);
            any_lost |= word;
        }
        n_alive += alive_bits.count_ones();
        n_below += (block.below & alive_bits).count_ones();
        nan |= block.nan & alive_bits;
        if let Some(sink) = sink.as_deref_mut() {
            let in_bracket = !block.below & block.under_hi & alive_bits;
            collect::<I, L, K, S>(&copy, start, in_bracket, sink);
        }
        start += 32;
    }
    let [lo_key, mid_key, hi_key] = [bracket.lo, bracket.mid, bracket.hi].map(|b| b.to_u64());
    let mut tail_lost = 0u32;
    for (i, w) in bits.iter().enumerate().skip(full) {
        let k = w.key() as u64;
        let is_alive = alive.is_none_or(|a| *a.add(i) != 0);
        let below = k < lo_key;
        if let Some(o) = out {
            *o.add(i) = (is_alive && k >= mid_key) as u8;
        }
        if is_alive {
            n_alive += 1;
            n_below += below as u32;
            tail_lost |= ((k < mid_key) as u32) << (i - full);
            nan |= (k > 0x7f80_0000) as u32;
            if let (Some(sink), false, true) = (sink.as_deref_mut(), below, k < hi_key) {
                sink.push(K::from_u64(k), i as u32);
            }
        }
    }
    let mut span = LostSpan::default();
    if let (Some(lost), Some(start)) = (lost, lost_start) {
        if full < bits.len() {
            lost.push(tail_lost);
            any_lost |= tail_lost;
        }
        span = lost.end(start, any_lost);
    }
    let counts = Counts {
        alive: n_alive as u64,
        below: n_below as u64,
        nan: nan != 0,
    };
    (counts, span)
}
