//! Exact magnitude selection: which alive weights to prune so that exactly `k` of the smallest
//! |w| go, ties broken by (tensor order, row-major flat index) — earlier is pruned first.
//!
//! One fused pass does almost all the work. A strided sample of the alive magnitudes brackets the
//! threshold; the pass then reads every weight once, writes the provisional mask (pruned below
//! the bracket, kept at or above it), counts survivors and collects the few in-bracket candidates
//! with their positions. The exact k-th key among the candidates fixes up the mask. When the
//! bracket misses (heavy ties, adversarial data) the exact radix select of [`crate::radix`]
//! takes over. Extra memory: the sample and the candidates, both bounded — never a sorted or
//! concatenated copy of the weights.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;

use crate::chunk::{self, Alive, AliveVisitor, Chunk};
use crate::error::{check_lengths, Error, Result};
use crate::magnitude::{Key, KeyVisitor, Weights};
use crate::radix;

/// How much to prune, relative to the weights that are still alive.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amount {
    /// Fraction in [0, 1] of the alive weights; `round(fraction * alive)`, ties to even
    /// (Python's `round`, as `torch.nn.utils.prune` uses).
    Fraction(f64),
    /// Exact number of alive weights to prune.
    Count(u64),
}

/// Rank all tensors together, or each tensor on its own by the same rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Global,
    Layer,
}

/// Totals of one selection: alive before it and pruned by it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub alive: u64,
    pub pruned: u64,
}

/// Positions sampled to bracket the threshold at 100 M weights: ~2^18 puts the bracket within
/// ~0.1% of the alive weights around the target rank for a few ms. Inputs of at most this many
/// weights are sampled whole (an exact bracket).
const SAMPLES: usize = 1 << 18;
/// Fewest probes of a sampled (larger than [`SAMPLES`]) input.
const MIN_SAMPLES: usize = 1 << 15;
/// Half-width of the bracket in standard deviations of the sampled quantile: a miss (and the
/// slower exact fallback) then happens with probability below 1e-6.
const BRACKET_SIGMAS: f64 = 5.0;
/// Candidates kept in memory before giving up on the bracket (8-16 bytes each).
const CANDIDATE_BYTES: usize = 32 << 20;
/// Elements per block of the fused pass: one bit each in the block's candidate bitmask.
const BLOCK: usize = 32;

/// Write into `out[t]` the mask that survives pruning `amount` of the alive weights.
///
/// `alive[t]` (nonzero = alive) defaults to all alive; already-pruned weights stay pruned.
pub fn select_masks(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    out: &mut [&mut [u8]],
    amount: Amount,
    scope: Scope,
) -> Result<Selection> {
    validate(weights, alive, out, amount)?;
    let wide = weights.iter().any(|w| matches!(w, Weights::F64(_)));
    match scope {
        Scope::Global if wide => select_global::<u64>(weights, alive, out, amount, 0),
        Scope::Global => select_global::<u32>(weights, alive, out, amount, 0),
        Scope::Layer => {
            let mut total = Selection::default();
            for (t, out_t) in out.iter_mut().enumerate() {
                let w = &weights[t..t + 1];
                let a = alive.map(|a| &a[t..t + 1]);
                let o = std::slice::from_mut(out_t);
                let s = if wide {
                    select_global::<u64>(w, a, o, amount, t)
                } else {
                    select_global::<u32>(w, a, o, amount, t)
                };
                let s = s.map_err(|e| match e {
                    Error::Amount { message, .. } => Error::Amount {
                        message,
                        tensor: Some(t),
                    },
                    other => other,
                })?;
                total.alive += s.alive;
                total.pruned += s.pruned;
            }
            Ok(total)
        }
    }
}

/// Write one byte per page of the (typically fresh) output masks before the fused pass, so the
/// first-touch page faults and the kernel's zeroing of each page happen up front, beside the
/// sampling. Left to the fused pass, they stalled it ~2x at 110 M weights.
fn prefault(out: &mut [&mut [u8]]) {
    const PAGE: usize = 4096;
    out.par_iter_mut()
        .for_each(|o| o.par_chunks_mut(PAGE).for_each(|page| page[0] = 0));
}

fn validate(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    out: &[&mut [u8]],
    amount: Amount,
) -> Result<()> {
    if weights.is_empty() {
        return Err(Error::Empty { arg: "weights" });
    }
    if let Amount::Fraction(f) = amount {
        if !(0.0..=1.0).contains(&f) {
            return Err(Error::Amount {
                message: format!("a fraction must lie in [0, 1], got {f}"),
                tensor: None,
            });
        }
    }
    let sizes: Vec<usize> = weights.iter().map(|w| w.len()).collect();
    check_lengths("out", &sizes, out.iter().map(|o| o.len()))?;
    if let Some(a) = alive {
        check_lengths("masks", &sizes, a.iter().map(|m| m.len()))?;
    }
    Ok(())
}

/// Number of weights to prune, given the exact alive count.
fn resolve(amount: Amount, alive: u64) -> Result<u64> {
    match amount {
        Amount::Fraction(f) => Ok((f * alive as f64).round_ties_even() as u64),
        Amount::Count(k) if k <= alive => Ok(k),
        Amount::Count(k) => Err(Error::Amount {
            message: format!("cannot prune {k} weights: only {alive} are alive"),
            tensor: None,
        }),
    }
}

/// Keys below `lo` are pruned, keys at or above `hi` kept, the rest are candidates.
#[derive(Clone, Copy, Debug)]
struct Bracket<K> {
    lo: K,
    hi: K,
}

fn select_global<K: Key>(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    out: &mut [&mut [u8]],
    amount: Amount,
    first_tensor: usize,
) -> Result<Selection> {
    // Sampling waits on cache misses, prefaulting on the kernel zeroing pages: overlap them.
    let (bracket, ()) = rayon::join(
        || estimate_bracket::<K>(weights, alive, amount),
        || prefault(out),
    );
    let bracket = bracket?;
    let total: usize = weights.iter().map(|w| w.len()).sum();
    let mut chunks = chunk::split(weights, alive, out);
    let cap = CANDIDATE_BYTES / std::mem::size_of::<(K, u32)>();
    let scan = fused_pass(&mut chunks, bracket, cap.min(total));

    if let Some(t) = scan.nan_tensor {
        return Err(Error::Nan {
            index: first_tensor + t,
        });
    }
    let k = resolve(amount, scan.alive)?;
    if !scan.overflow && scan.below <= k && k <= scan.below + scan.candidates {
        fix_up(&mut chunks, &scan, bracket, k - scan.below);
    } else {
        exact_rewrite::<K>(&mut chunks, k, scan.alive);
    }
    Ok(Selection {
        alive: scan.alive,
        pruned: k,
    })
}

/// Bracket the k-th smallest alive key from a strided sample. Small inputs are sampled whole,
/// which makes the bracket exact (only ties at the threshold become candidates).
fn estimate_bracket<K: Key>(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    amount: Amount,
) -> Result<Bracket<K>> {
    let everything = Bracket {
        lo: K::ZERO,
        hi: K::MAX,
    };
    match amount {
        Amount::Fraction(0.0) | Amount::Count(0) => {
            return Ok(Bracket {
                lo: K::ZERO,
                hi: K::ZERO,
            })
        }
        Amount::Fraction(f) if f >= 1.0 => {
            return Ok(Bracket {
                lo: K::MAX,
                hi: K::MAX,
            })
        }
        _ => {}
    }
    let total: usize = weights.iter().map(|w| w.len()).sum();
    let probes = sample_size(total);
    let mut sample = sample_keys::<K>(weights, alive, probes);
    let m = sample.len();
    if m == 0 {
        return Ok(everything);
    }
    if probes == total {
        // Whole input sampled: `sample` holds every alive key, so the bracket is exact. An
        // invalid amount is reported after the full pass, so NaN errors win at every size.
        let Ok(k) = resolve(amount, m as u64) else {
            return Ok(everything);
        };
        if k == 0 {
            return Ok(Bracket {
                lo: K::ZERO,
                hi: K::ZERO,
            });
        }
        let (_, &mut t, _) = sample.select_nth_unstable(k as usize - 1);
        return Ok(Bracket {
            lo: t,
            hi: K::from_u64(t.to_u64() + 1),
        });
    }
    let q = match amount {
        Amount::Fraction(f) => f,
        Amount::Count(k) => (k as f64 / (total as f64 * m as f64 / probes as f64)).min(1.0),
    };
    let centre = q * m as f64;
    let spread = BRACKET_SIGMAS * (m as f64 * q * (1.0 - q)).sqrt() + 2.0;
    let lo_rank = (centre - spread).floor();
    let hi_rank = (centre + spread).ceil();
    let lo = if lo_rank <= 0.0 {
        K::ZERO
    } else {
        *sample.select_nth_unstable(lo_rank as usize).1
    };
    let hi = if hi_rank >= m as f64 {
        K::MAX
    } else {
        K::from_u64(sample.select_nth_unstable(hi_rank as usize).1.to_u64() + 1)
    };
    Ok(Bracket { lo, hi })
}

/// Probes for `total` weights: all of them up to [`SAMPLES`]; above, SAMPLES at 100 M scaled
/// as total^(2/3), which balances the sampling cost (one miss per probe) against the candidate
/// cost (∝ total / √probes), so small models do not pay a large model's fixed cost. The count
/// is nudged until it does not divide `total`: a fractional stride drifts in phase, so a
/// periodic weight layout (rows, channels) cannot pin every probe to the same column.
fn sample_size(total: usize) -> usize {
    if total <= SAMPLES {
        return total;
    }
    let scaled = SAMPLES as f64 * (total as f64 / 1e8).powf(2.0 / 3.0);
    let mut probes = (scaled as usize).clamp(MIN_SAMPLES, SAMPLES);
    while total % probes == 0 {
        probes -= 1;
    }
    probes
}

/// Keys of the alive weights at `probes` evenly spaced positions of the concatenated input.
/// The near-constant stride lets the hardware prefetcher overlap the cache misses. Each thread
/// walks a contiguous run of probes, stepping position and tensor incrementally (a division
/// and a binary search per probe cost as much as the miss itself).
fn sample_keys<K: Key>(weights: &[Weights<'_>], alive: Option<&[&[u8]]>, probes: usize) -> Vec<K> {
    const RUN: usize = 1 << 13;
    if probes == 0 {
        return Vec::new(); // only empty tensors
    }
    let mut ends = Vec::with_capacity(weights.len());
    let mut total = 0usize;
    for w in weights {
        total += w.len();
        ends.push(total);
    }
    let (stride, step) = (total / probes, total % probes); // pos advances by total / probes
    let runs: Vec<Vec<K>> = (0..probes.div_ceil(RUN))
        .into_par_iter()
        .map(|run| {
            let first = run * RUN;
            // u64 is exact here: probes < 2^19 and no in-memory model reaches 2^45 weights.
            let numerator = first as u64 * total as u64 + total as u64 / 2;
            let (mut pos, mut rem) = (
                (numerator / probes as u64) as usize,
                (numerator % probes as u64) as usize,
            );
            let mut t = ends.partition_point(|&end| end <= pos);
            let mut keys = Vec::with_capacity(RUN);
            for _ in first..(first + RUN).min(probes) {
                while pos >= ends[t] {
                    t += 1;
                }
                let i = pos - (ends[t] - weights[t].len());
                if alive.is_none_or(|a| a[t][i] != 0) {
                    keys.push(key_at::<K>(weights[t], i));
                }
                pos += stride;
                rem += step;
                if rem >= probes {
                    pos += 1;
                    rem -= probes;
                }
            }
            keys
        })
        .collect();
    runs.concat()
}

fn key_at<K: Key>(w: Weights<'_>, i: usize) -> K {
    struct At(usize);
    impl<K> KeyVisitor<K> for At {
        type Output = K;
        fn visit<T: Copy + Send + Sync, F: Fn(T) -> K>(self, bits: &[T], key: F) -> K {
            key(bits[self.0])
        }
    }
    w.visit_keys(At(i))
}

#[derive(Default)]
struct ScanTotals {
    alive: u64,
    below: u64,
    candidates: u64,
    overflow: bool,
    nan_tensor: Option<usize>,
}

/// The fused pass: provisional masks, counts and in-bracket candidates, one read of each weight.
/// Returns per-chunk candidates through `cands` (parallel to `chunks`).
fn fused_pass<K: Key>(chunks: &mut [Chunk<'_>], bracket: Bracket<K>, cap: usize) -> FusedScan<K> {
    let collected = AtomicU64::new(0);
    let overflow = AtomicBool::new(false);
    let per_chunk: Vec<ChunkScan<K>> = chunks
        .par_iter_mut()
        .map(|c| {
            let collect = !overflow.load(Ordering::Relaxed);
            let mut scan = chunk::visit::<K, _>(
                c.weights,
                c.alive,
                Scan {
                    bracket,
                    out: c.out,
                    collect,
                },
            );
            if collect {
                let n = scan.candidates.len() as u64;
                if collected.fetch_add(n, Ordering::Relaxed) + n > cap as u64 {
                    overflow.store(true, Ordering::Relaxed);
                }
            }
            if overflow.load(Ordering::Relaxed) {
                scan.candidates = Vec::new(); // the exact fallback will run: free them early
            }
            scan.tensor = c.tensor;
            scan
        })
        .collect();
    let mut totals = ScanTotals {
        overflow: overflow.into_inner(),
        ..ScanTotals::default()
    };
    for s in &per_chunk {
        totals.alive += s.alive;
        totals.below += s.below;
        totals.candidates += s.candidates.len() as u64;
        if s.nan && totals.nan_tensor.is_none() {
            totals.nan_tensor = Some(s.tensor);
        }
    }
    FusedScan { totals, per_chunk }
}

struct FusedScan<K> {
    totals: ScanTotals,
    per_chunk: Vec<ChunkScan<K>>,
}

impl<K> std::ops::Deref for FusedScan<K> {
    type Target = ScanTotals;
    fn deref(&self) -> &ScanTotals {
        &self.totals
    }
}

struct ChunkScan<K> {
    tensor: usize,
    alive: u64,
    below: u64,
    nan: bool,
    /// (key, index within the chunk), in index order.
    candidates: Vec<(K, u32)>,
}

struct Scan<'o, K> {
    bracket: Bracket<K>,
    out: &'o mut [u8],
    collect: bool,
}

impl<K: Key> AliveVisitor<K> for Scan<'_, K> {
    type Output = ChunkScan<K>;

    #[inline(always)]
    fn visit<T: Copy, F: Fn(T) -> K + Copy, A: Alive>(
        self,
        bits: &[T],
        key: F,
        alive: A,
    ) -> ChunkScan<K> {
        // Wheels target baseline x86-64 (SSE2); AVX2, where the CPU has it, doubles the lanes of
        // the compare-and-pack loop, measured ~1.3x faster on this pass.
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { self.scan_avx2(bits, key, alive) };
        }
        self.scan(bits, key, alive)
    }
}

impl<K: Key> Scan<'_, K> {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt")]
    unsafe fn scan_avx2<T: Copy, F: Fn(T) -> K + Copy, A: Alive>(
        self,
        bits: &[T],
        key: F,
        alive: A,
    ) -> ChunkScan<K> {
        self.scan(bits, key, alive)
    }

    #[inline(always)]
    fn scan<T: Copy, F: Fn(T) -> K + Copy, A: Alive>(
        self,
        bits: &[T],
        key: F,
        alive: A,
    ) -> ChunkScan<K> {
        let Bracket { lo, hi } = self.bracket;
        let out = &mut self.out[..bits.len()];
        let mut res = ChunkScan {
            tensor: 0,
            alive: 0,
            below: 0,
            nan: false,
            candidates: Vec::new(),
        };
        // u32 counters cannot overflow: a chunk holds at most CHUNK (2^16) elements.
        let (mut n_alive, mut n_below) = (0u32, 0u32);
        let mut nan = false;
        let mut start = 0;
        for (wb, ob) in bits.chunks(BLOCK).zip(out.chunks_mut(BLOCK)) {
            // One bit per in-bracket element: the vector loop stays branch-free and the rare
            // candidates are then visited by their set bits alone.
            // Keys first, as if every weight were alive (the same vector loop for both cases),
            // then the survivors folded in with byte and bit operations: mixing byte-wide mask
            // lanes into the 32-bit key lanes made LLVM emit a loop twice as slow.
            let (mut below_bits, mut bracket_bits, mut nan_bits) = (0u32, 0u32, 0u32);
            for (i, (&b, o)) in wb.iter().zip(ob.iter_mut()).enumerate() {
                let k = key(b);
                let below = k < lo;
                *o = !below as u8;
                below_bits |= (below as u32) << i;
                bracket_bits |= ((!below & (k < hi)) as u32) << i;
                nan_bits |= (k.is_nan() as u32) << i;
            }
            let alive_bits = alive.window(start, wb.len()).clear_dead(ob);
            n_alive += alive_bits.count_ones();
            n_below += (below_bits & alive_bits).count_ones();
            nan |= nan_bits & alive_bits != 0;
            let mut in_bracket = bracket_bits & alive_bits;
            if in_bracket != 0 && self.collect {
                while in_bracket != 0 {
                    let i = in_bracket.trailing_zeros() as usize;
                    res.candidates.push((key(wb[i]), (start + i) as u32));
                    in_bracket &= in_bracket - 1;
                }
            }
            start += wb.len();
        }
        res.alive = n_alive as u64;
        res.below = n_below as u64;
        res.nan = nan;
        res
    }
}

/// Prune the `r` smallest candidates in (key, position) order; they were provisionally kept.
fn fix_up<K: Key>(chunks: &mut [Chunk<'_>], scan: &FusedScan<K>, bracket: Bracket<K>, r: u64) {
    if r == 0 {
        return;
    }
    let (threshold, strictly_below) = kth_candidate(&scan.per_chunk, bracket, r);
    let tie_counts: Vec<u64> = scan
        .per_chunk
        .par_iter()
        .map(|s| s.candidates.iter().filter(|c| c.0 == threshold).count() as u64)
        .collect();
    chunks
        .par_iter_mut()
        .zip(&scan.per_chunk)
        .zip(share_ties(&tie_counts, r - strictly_below))
        .for_each(|((c, s), mut ties)| {
            for &(k, i) in &s.candidates {
                if k < threshold {
                    c.out[i as usize] = 0;
                } else if k == threshold && ties > 0 {
                    c.out[i as usize] = 0;
                    ties -= 1;
                }
            }
        });
}

/// The `r`-th smallest candidate key (1-based) and how many candidates are strictly smaller.
/// A parallel 2^16-bin histogram of the keys' offsets in the bracket finds the right bin; only
/// that bin's keys are then selected exactly (one serial select over all candidates took ~3 ms
/// at 100 M weights).
fn kth_candidate<K: Key>(scans: &[ChunkScan<K>], bracket: Bracket<K>, r: u64) -> (K, u64) {
    const BINS: usize = 1 << 16;
    let base = bracket.lo.to_u64();
    let span = bracket.hi.to_u64().saturating_sub(base).max(1);
    let shift = (u64::BITS - span.leading_zeros()).saturating_sub(BINS.trailing_zeros());
    let bin = move |k: K| ((k.to_u64() - base) >> shift) as usize;
    let counts = scans
        .par_iter()
        .fold(
            || vec![0u32; BINS],
            |mut h, s| {
                s.candidates.iter().for_each(|c| h[bin(c.0)] += 1);
                h
            },
        )
        .reduce(
            || vec![0u32; BINS],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    let (target, before) = radix::bin_of_rank(&counts, r);
    let mut in_bin: Vec<K> = scans
        .par_iter()
        .flat_map_iter(|s| {
            s.candidates
                .iter()
                .map(|c| c.0)
                .filter(|&k| bin(k) == target)
        })
        .collect();
    let (smaller, &mut threshold, _) = in_bin.select_nth_unstable((r - before) as usize - 1);
    let below_in_bin = smaller.iter().filter(|&&k| k < threshold).count() as u64;
    (threshold, before + below_in_bin)
}

/// Split `ties` tie-breaking prunes over chunks in global order: earlier chunks first.
fn share_ties(tie_counts: &[u64], mut ties: u64) -> Vec<u64> {
    tie_counts
        .iter()
        .map(|&here| {
            let take = here.min(ties);
            ties -= take;
            take
        })
        .collect()
}

/// Fallback: find the exact k-th key by radix select and rewrite every mask.
fn exact_rewrite<K: Key>(chunks: &mut [Chunk<'_>], k: u64, alive: u64) {
    let (threshold, ties) = match k {
        0 => (K::ZERO, 0),
        k if k == alive => (K::MAX, 0),
        k => radix::kth_key::<K>(chunks, k),
    };
    let tie_counts: Vec<u64> = chunks
        .par_iter()
        .map(|c| chunk::visit::<K, _>(c.weights, c.alive, CountEqual(threshold)))
        .collect();
    let budgets = share_ties(&tie_counts, ties);
    chunks.par_iter_mut().zip(budgets).for_each(|(c, ties)| {
        chunk::visit::<K, _>(
            c.weights,
            c.alive,
            WriteExact {
                threshold,
                ties,
                out: c.out,
            },
        )
    });
}

struct CountEqual<K>(K);

impl<K: Key> AliveVisitor<K> for CountEqual<K> {
    type Output = u64;
    fn visit<T: Copy, F: Fn(T) -> K + Copy, A: Alive>(self, bits: &[T], key: F, alive: A) -> u64 {
        bits.iter()
            .enumerate()
            .filter(|&(i, &b)| alive.get(i) && key(b) == self.0)
            .count() as u64
    }
}

struct WriteExact<'o, K> {
    threshold: K,
    ties: u64,
    out: &'o mut [u8],
}

impl<K: Key> AliveVisitor<K> for WriteExact<'_, K> {
    type Output = ();
    fn visit<T: Copy, F: Fn(T) -> K + Copy, A: Alive>(mut self, bits: &[T], key: F, alive: A) {
        for (i, (&b, o)) in bits.iter().zip(self.out.iter_mut()).enumerate() {
            let k = key(b);
            let mut keep = alive.get(i) && k >= self.threshold;
            if keep && k == self.threshold && self.ties > 0 {
                self.ties -= 1;
                keep = false;
            }
            *o = keep as u8;
        }
    }
}
