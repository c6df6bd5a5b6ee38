//! Narrowing the fix-up to the candidates near the k-th before searching them.
//!
//! After the fused pass the k-th key's rank among the candidates is known exactly, and the
//! sample's keys inside the bracket are a sample of those candidates: their quantile at that
//! rank places the k-th key within a few percent of the candidates. One pass over the
//! candidates then counts those below that window and keeps those in it, and the k-th is
//! searched, and the masks rewritten, from the window's candidates alone: otherwise a histogram
//! pass, a gathering pass and the rewrite each read every candidate. The window always holds
//! the bracket's `mid`, so every candidate the rewrite changes (those between `mid` and the
//! k-th) lies in it. Where the k-th lies outside the window after all, the caller searches every
//! candidate as before: only time is lost.

use rayon::prelude::*;

use super::kth::CandidateKeys;
use super::sample::BRACKET_SIGMAS;
use super::{simd, Bracket};
use crate::chunk;
use crate::error::{Error, Result};
use crate::magnitude::Key;

/// Fewest candidates worth narrowing: below, one search over all of them costs little.
const NARROWED_FROM: u64 = 1 << 15;
/// Fewest sampled keys inside the bracket to place a window with.
const MIN_INSIDE: usize = 64;

/// One chunk's candidates inside the window, in index order.
pub(crate) struct InWindow<K>(pub Vec<(K, u32)>);

impl<K: Key> CandidateKeys<K> for InWindow<K> {
    fn keys(&self) -> impl Iterator<Item = K> + '_ {
        self.0.iter().map(|c| c.0)
    }
    fn count(&self) -> usize {
        self.0.len()
    }
}

/// The candidates of a window `[bracket.lo, bracket.hi)` (its `mid` the fused pass's), per
/// chunk, and the k-th's rank among them.
pub(crate) struct Narrowed<K> {
    pub bracket: Bracket<K>,
    pub per_chunk: Vec<InWindow<K>>,
    pub r: u64,
}

/// The window around the `r`-th smallest candidate (1-based) and its candidates, or None where
/// narrowing does not pay or the k-th lies outside the window. `inside`: the sample's keys in
/// `bracket` (reordered here). A candidate outside `bracket` means a racing writer changed a
/// weight after its bracket test ([`Error::WeightsChanged`]).
pub(crate) fn narrow<K: Key>(
    lists: &[&[(K, u32)]],
    candidates: u64,
    bracket: Bracket<K>,
    inside: &mut [K],
    r: u64,
    parallel: bool,
) -> Result<Option<Narrowed<K>>> {
    if candidates < NARROWED_FROM || inside.len() < MIN_INSIDE || r == 0 {
        return Ok(None);
    }
    let Some(window) = window(inside, bracket, r, candidates) else {
        return Ok(None);
    };
    let [lo, hi] = [bracket.lo, bracket.hi].map(|k| k.to_u64());
    let [start, end] = [window.lo, window.hi].map(|k| k.to_u64());
    let width = end - start;
    let bounds = simd::WindowBounds { lo, hi, start, end };
    // One branch-free pass per chunk: each candidate is written to the next free slot of a
    // scratch kept in the L1 cache, which only advances for one in the window (a few percent
    // of them, a branch on which would mispredict on most); the slots taken are then copied.
    // With AVX-512, eight candidates a step ([`window_filter`]).
    let of_chunk = |list: &[(K, u32)], scratch: &mut Vec<(K, u32)>| {
        if let Some(filtered) = window_filter(list, bounds, scratch) {
            return filtered;
        }
        let (mut below, mut outside) = (0u64, false);
        scratch.clear();
        scratch.resize(list.len() + 1, (K::ZERO, 0));
        let mut n = 0;
        for &(k, i) in list {
            let key = k.to_u64();
            below += (key < start) as u64;
            outside |= key.wrapping_sub(lo) >= hi - lo;
            scratch[n] = (k, i);
            n += (key.wrapping_sub(start) < width) as usize;
        }
        (below, outside, InWindow(scratch[..n].to_vec()))
    };
    let of_group = |group: &[&[(K, u32)]]| {
        let mut scratch = Vec::new();
        group
            .iter()
            .map(|list| of_chunk(list, &mut scratch))
            .collect::<Vec<_>>()
    };
    let per_chunk: Vec<(u64, bool, InWindow<K>)> = if parallel {
        let groups = lists.par_chunks(chunk::per_job(lists.len()));
        groups.flat_map_iter(of_group).collect()
    } else {
        of_group(lists)
    };
    if per_chunk.iter().any(|c| c.1) {
        return Err(Error::WeightsChanged);
    }
    let below: u64 = per_chunk.iter().map(|c| c.0).sum();
    let within: u64 = per_chunk.iter().map(|c| c.2 .0.len() as u64).sum();
    if r <= below || r > below + within {
        return Ok(None);
    }
    Ok(Some(Narrowed {
        bracket: window,
        per_chunk: per_chunk.into_iter().map(|c| c.2).collect(),
        r: r - below,
    }))
}

/// [`simd::window_filter`] over a chunk's candidates where the keys are u32 and the CPU has
/// AVX-512; None elsewhere.
fn window_filter<K: Key>(
    list: &[(K, u32)],
    bounds: simd::WindowBounds,
    scratch: &mut Vec<(K, u32)>,
) -> Option<(u64, bool, InWindow<K>)> {
    let u32_pairs = K::BITS == 31
        && std::mem::size_of::<(K, u32)>() == 8
        && std::mem::offset_of!((K, u32), 0) == 0;
    if !u32_pairs {
        return None;
    }
    scratch.clear();
    scratch.reserve(list.len() + 8);
    let dst = scratch.spare_capacity_mut().as_mut_ptr().cast::<u64>();
    // SAFETY: the pairs are (u32, u32) laid out key first (checked above), `list.len()` of
    // them readable, and the scratch has room for 8 more than that.
    let (below, outside, n) =
        unsafe { simd::window_filter(list.as_ptr().cast::<u64>(), list.len(), bounds, dst)? };
    // SAFETY: the filter wrote `n` whole pairs at the start of the spare capacity.
    unsafe { scratch.set_len(n) };
    Some((below, outside, InWindow(scratch.to_vec())))
}

/// The keys around the `r`-th of `candidates` in `bracket`, from the sample's keys inside it:
/// their quantile at that rank, ± [`BRACKET_SIGMAS`] standard deviations of a sampled fraction,
/// widened to hold `mid`. None where that is the whole bracket.
fn window<K: Key>(
    inside: &mut [K],
    bracket: Bracket<K>,
    r: u64,
    candidates: u64,
) -> Option<Bracket<K>> {
    inside.sort_unstable();
    let n = inside.len() as f64;
    let p = ((r as f64 - 0.5) / candidates as f64).clamp(0.0, 1.0);
    let spread = BRACKET_SIGMAS * (n * p * (1.0 - p)).sqrt() + 2.0;
    let (lo_rank, hi_rank) = ((p * n - spread).floor(), (p * n + spread).ceil());
    let lo = if lo_rank < 0.0 {
        bracket.lo
    } else {
        inside[lo_rank as usize]
    };
    let hi = if hi_rank >= n {
        bracket.hi.to_u64()
    } else {
        inside[hi_rank as usize].to_u64() + 1
    };
    let (lo, hi) = (
        lo.min(bracket.mid),
        K::from_u64(hi.max(bracket.mid.to_u64() + 1)),
    );
    if lo <= bracket.lo && hi >= bracket.hi {
        return None;
    }
    Some(Bracket {
        lo,
        mid: bracket.mid,
        hi,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select_props::generators::Rng;

    /// A fused pass's candidates, per chunk.
    type Lists = Vec<Vec<(u32, u32)>>;

    /// `chunks` lists of candidates with keys in `[lo, hi)`, a few of them equal.
    fn scan_of(rng: &mut Rng, chunks: usize, each: usize, lo: u32, hi: u32) -> Lists {
        (0..chunks)
            .map(|_| {
                (0..each)
                    .map(|i| (lo + (rng.below((hi - lo) as usize) as u32 & !3), i as u32))
                    .collect()
            })
            .collect()
    }

    /// [`narrow`] over `lists`.
    fn narrow_lists(
        lists: &Lists,
        bracket: Bracket<u32>,
        inside: &mut [u32],
        r: u64,
        parallel: bool,
    ) -> Result<Option<Narrowed<u32>>> {
        let views: Vec<&[(u32, u32)]> = lists.iter().map(|l| l.as_slice()).collect();
        let candidates = lists.iter().map(|l| l.len() as u64).sum();
        narrow(&views, candidates, bracket, inside, r, parallel)
    }

    const LO: u32 = 1 << 20;
    const HI: u32 = 1 << 22;

    /// 60 K candidates in `[LO, HI)` over 40 chunks, and their keys sorted.
    fn many(seed: u64) -> (Lists, Vec<u32>) {
        let scan = scan_of(&mut Rng(seed), 40, 1500, LO, HI);
        let keys = sorted_keys(&scan);
        (scan, keys)
    }

    fn sorted_keys(scan: &Lists) -> Vec<u32> {
        let mut keys: Vec<u32> = scan.iter().flat_map(|l| l.iter().map(|c| c.0)).collect();
        keys.sort_unstable();
        keys
    }

    /// Every `step`-th candidate's key: a sample of them, as the walk's keys inside the bracket.
    fn sample_of(scan: &Lists, step: usize) -> Vec<u32> {
        let all: Vec<u32> = scan.iter().flat_map(|l| l.iter().map(|c| c.0)).collect();
        all.into_iter().step_by(step).collect()
    }

    #[test]
    fn the_window_holds_the_kth_its_ties_and_mid() {
        let (scan, keys) = many(3);
        let (lo, hi) = (LO, HI);
        for (parallel, r, mid_at) in [
            (false, 1, 0.001),
            (true, 30_000, 0.52),
            (true, 59_999, 0.99),
        ] {
            let mid = keys[(mid_at * keys.len() as f64) as usize];
            let bracket = Bracket { lo, mid, hi };
            let mut inside = sample_of(&scan, 97);
            let near = narrow_lists(&scan, bracket, &mut inside, r, parallel)
                .unwrap()
                .expect("narrowed");
            let kth = keys[r as usize - 1];
            let window = near.bracket;
            assert!(
                window.lo <= kth && kth < window.hi,
                "r {r}: the k-th in the window"
            );
            assert!(
                window.lo <= mid && mid < window.hi,
                "r {r}: mid in the window"
            );
            assert!(lo <= window.lo && window.hi <= hi && window.mid == mid);
            let held: Vec<u32> = near.per_chunk.iter().flat_map(|w| w.keys()).collect();
            assert!(
                held.len() < keys.len() / 3,
                "r {r}: {} of {} kept",
                held.len(),
                keys.len()
            );
            let expected: Vec<u32> = keys
                .iter()
                .copied()
                .filter(|k| (window.lo..window.hi).contains(k))
                .collect();
            let mut sorted = held.clone();
            sorted.sort_unstable();
            assert_eq!(
                sorted, expected,
                "r {r}: every candidate in the window, once"
            );
            let below = keys.iter().filter(|&&k| k < window.lo).count() as u64;
            assert_eq!(near.r, r - below, "r {r}: rank within the window");
            // Each chunk's window candidates keep their index order (ties go earliest first).
            for w in &near.per_chunk {
                assert!(w.0.windows(2).all(|p| p[0].1 < p[1].1));
            }
        }
    }

    #[test]
    fn a_misplaced_window_or_too_few_candidates_give_way() {
        let (scan, keys) = many(5);
        let (lo, hi) = (LO, HI);
        let bracket = Bracket {
            lo,
            mid: keys[100],
            hi,
        };
        // A sample that puts the 50_000th candidate near the bottom of the bracket.
        let mut skewed: Vec<u32> = keys[..2_000].iter().step_by(10).copied().collect();
        assert!(narrow_lists(&scan, bracket, &mut skewed, 50_000, true)
            .unwrap()
            .is_none());
        let small = scan_of(&mut Rng(6), 2, 1000, lo, hi);
        let mut inside = sample_of(&small, 10);
        assert!(narrow_lists(&small, bracket, &mut inside, 500, false)
            .unwrap()
            .is_none());
        let mut few = sample_of(&scan, 2000);
        assert!(narrow_lists(&scan, bracket, &mut few, 500, false)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_candidate_outside_the_bracket_is_a_racing_writer() {
        let (mut scan, keys) = many(7);
        let (lo, hi) = (LO, HI);
        let mut inside = sample_of(&scan, 97);
        let bracket = Bracket {
            lo,
            mid: keys[30_000],
            hi,
        };
        scan[17][3].0 = hi;
        let got = narrow_lists(&scan, bracket, &mut inside, 30_000, true);
        assert!(matches!(got, Err(Error::WeightsChanged)));
    }
}
