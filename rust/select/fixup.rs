//! The fix-up after a fused pass whose bracket held the k-th key: only candidates change.

use rayon::prelude::*;

use super::scan::{ChunkScan, FusedScan};
use super::Bracket;
use crate::chunk::{self, Chunk};
use crate::error::{Error, Result};
use crate::magnitude::Key;
use crate::radix;

/// Prune the `r` smallest candidates in (key, position) order and keep the rest; the fused pass
/// provisionally pruned those below the bracket's `mid`, so only candidates between `mid` and
/// the exact threshold are written.
///
/// A candidate's key is re-read after its bracket test; one outside the bracket means a racing
/// writer changed the weight in between ([`Error::WeightsChanged`], before any mask is touched).
pub(crate) fn fix_up<K: Key>(
    chunks: &mut [Chunk<'_>],
    scan: &FusedScan<K>,
    bracket: Bracket<K>,
    r: u64,
    parallel: bool,
) -> Result<()> {
    let outside = |s: &ChunkScan<K>| {
        s.candidates
            .iter()
            .any(|c| c.0 < bracket.lo || c.0 >= bracket.hi)
    };
    let changed = if parallel {
        scan.per_chunk.par_iter().any(outside)
    } else {
        scan.per_chunk.iter().any(outside)
    };
    if changed {
        return Err(Error::WeightsChanged);
    }
    // r = 0 keeps every candidate: no key lies below ZERO, and no tie may go.
    let (threshold, strictly_below) = match r {
        0 => (K::ZERO, 0),
        _ => kth_candidate(&scan.per_chunk, bracket, r, parallel),
    };
    let ties_of =
        |s: &ChunkScan<K>| s.candidates.iter().filter(|c| c.0 == threshold).count() as u64;
    let tie_counts: Vec<u64> = if parallel {
        scan.per_chunk.par_iter().map(ties_of).collect()
    } else {
        scan.per_chunk.iter().map(ties_of).collect()
    };
    let budgets = share_ties(&tie_counts, r - strictly_below);
    let mut work: Vec<_> = chunks
        .iter_mut()
        .zip(&scan.per_chunk)
        .zip(budgets)
        .collect();
    let mid = bracket.mid;
    chunk::map(&mut work, parallel, |((c, s), ties)| {
        for &(k, i) in &s.candidates {
            let tie = (k == threshold) & (*ties > 0);
            let keep = !((k < threshold) | tie);
            *ties -= tie as u64;
            // Rarely taken: `mid` estimates the threshold. Writing every candidate instead
            // touched a random cache line of the masks per candidate.
            if keep != (k >= mid) {
                c.out[i as usize] = keep as u8;
            }
        }
    });
    Ok(())
}

/// The `r`-th smallest candidate key (1-based) and how many candidates are strictly smaller.
/// A parallel 2^16-bin histogram of the keys' offsets in the bracket finds the right bin; only
/// that bin's keys are then selected exactly (a serial select over all candidates would not
/// use the other cores).
pub(crate) fn kth_candidate<K: Key, C: CandidateKeys<K>>(
    scans: &[C],
    bracket: Bracket<K>,
    r: u64,
    parallel: bool,
) -> (K, u64) {
    let candidates: usize = scans.iter().map(|s| s.count()).sum();
    // About 16 candidates a bin: a histogram much larger than the candidates (2^16 bins were
    // zeroed for every call) costs more than the select it saves.
    let bins = (candidates / 16).next_power_of_two().clamp(1 << 8, 1 << 16);
    let base = bracket.lo.to_u64();
    let span = bracket.hi.to_u64().saturating_sub(base).max(1);
    let shift = (u64::BITS - span.leading_zeros()).saturating_sub(bins.trailing_zeros());
    let bin = move |k: K| ((k.to_u64() - base) >> shift) as usize;
    let add = |mut h: Vec<u32>, s: &C| {
        s.keys().for_each(|k| h[bin(k)] += 1);
        h
    };
    let counts = if parallel {
        scans.par_iter().fold(|| vec![0u32; bins], add).reduce(
            || vec![0u32; bins],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        )
    } else {
        scans.iter().fold(vec![0u32; bins], add)
    };
    let (target, before) = radix::bin_of_rank(&counts, r);
    let in_target = |s: &C| -> Vec<K> { s.keys().filter(|&k| bin(k) == target).collect() };
    let mut in_bin: Vec<K> = if parallel {
        scans.par_iter().flat_map_iter(in_target).collect()
    } else {
        scans.iter().flat_map(in_target).collect()
    };
    let (smaller, &mut threshold, _) = in_bin.select_nth_unstable((r - before) as usize - 1);
    let below_in_bin = smaller.iter().filter(|&&k| k < threshold).count() as u64;
    (threshold, before + below_in_bin)
}

/// A group of candidates whose keys can be listed (positions, if any, are not needed here).
pub(crate) trait CandidateKeys<K>: Sync {
    fn keys(&self) -> impl Iterator<Item = K> + '_;
    /// How many keys `keys` lists (sizes the histogram).
    fn count(&self) -> usize {
        self.keys().count()
    }
}

impl<K: Key> CandidateKeys<K> for ChunkScan<K> {
    fn keys(&self) -> impl Iterator<Item = K> + '_ {
        self.candidates.iter().map(|c| c.0)
    }
    fn count(&self) -> usize {
        self.candidates.len()
    }
}

impl<K: Key> CandidateKeys<K> for Vec<K> {
    fn keys(&self) -> impl Iterator<Item = K> + '_ {
        self.iter().copied()
    }
    fn count(&self) -> usize {
        self.len()
    }
}

/// Split `ties` tie-breaking prunes over chunks in global order: earlier chunks first.
pub(crate) fn share_ties(tie_counts: &[u64], mut ties: u64) -> Vec<u64> {
    tie_counts
        .iter()
        .map(|&here| {
            let take = here.min(ties);
            ties -= take;
            take
        })
        .collect()
}
