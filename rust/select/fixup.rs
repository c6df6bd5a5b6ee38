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
    // r = 0 keeps every candidate: no key lies below ZERO, and no tie may go.
    let kth = match r {
        0 => {
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
            Kth {
                key: K::ZERO,
                strictly_below: 0,
                ties: 0,
            }
        }
        _ => kth_candidate(&scan.per_chunk, bracket, r, parallel)?,
    };
    let threshold = kth.key;
    let ties = r - kth.strictly_below;
    let mid = bracket.mid;
    if ties == 0 || ties == kth.ties {
        // No tie or every tie goes: a candidate is kept iff its key reaches `cut`.
        let cut = if ties == 0 {
            threshold.to_u64()
        } else {
            threshold.to_u64() + 1
        };
        let mut work: Vec<_> = chunks.iter_mut().zip(&scan.per_chunk).collect();
        chunk::map(&mut work, parallel, |(c, s)| {
            for &(k, i) in &s.candidates {
                let keep = k.to_u64() >= cut;
                // Rarely taken: `mid` estimates the threshold. Writing every candidate instead
                // touched a random cache line of the masks per candidate.
                if keep != (k >= mid) {
                    c.out[i as usize] = keep as u8;
                }
            }
        });
        return Ok(());
    }
    // Some ties at the threshold stay: the earliest go, so each chunk learns its share.
    let ties_of =
        |s: &ChunkScan<K>| s.candidates.iter().filter(|c| c.0 == threshold).count() as u64;
    let tie_counts: Vec<u64> = if parallel {
        scan.per_chunk.par_iter().map(ties_of).collect()
    } else {
        scan.per_chunk.iter().map(ties_of).collect()
    };
    let budgets = share_ties(&tie_counts, ties);
    let mut work: Vec<_> = chunks
        .iter_mut()
        .zip(&scan.per_chunk)
        .zip(budgets)
        .collect();
    chunk::map(&mut work, parallel, |((c, s), ties)| {
        for &(k, i) in &s.candidates {
            let tie = (k == threshold) & (*ties > 0);
            let keep = !((k < threshold) | tie);
            *ties -= tie as u64;
            if keep != (k >= mid) {
                c.out[i as usize] = keep as u8;
            }
        }
    });
    Ok(())
}

/// The `r`-th smallest candidate key and where it stands among the candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Kth<K> {
    pub key: K,
    /// Candidates with a smaller key.
    pub strictly_below: u64,
    /// Candidates with this key.
    pub ties: u64,
}

/// The `r`-th smallest candidate key (1-based). A 2^8-2^16-bin histogram of the keys' offsets
/// in the bracket finds the right bin (in parallel: a serial select over all candidates would
/// not use the other cores); only that bin's keys are then selected exactly. A key outside the
/// bracket (a racing writer changed a weight after its bracket test) is
/// [`Error::WeightsChanged`]; the histogram pass finds it.
pub(crate) fn kth_candidate<K: Key, C: CandidateKeys<K>>(
    scans: &[C],
    bracket: Bracket<K>,
    r: u64,
    parallel: bool,
) -> Result<Kth<K>> {
    let candidates: usize = scans.iter().map(|s| s.count()).sum();
    // About 16 candidates a bin: a histogram much larger than the candidates (2^16 bins were
    // zeroed for every call) costs more than the select it saves.
    let bins = (candidates / 16).next_power_of_two().clamp(1 << 8, 1 << 16);
    let base = bracket.lo.to_u64();
    let span = bracket.hi.to_u64().saturating_sub(base).max(1);
    let shift = (u64::BITS - span.leading_zeros()).saturating_sub(bins.trailing_zeros());
    let bin = move |k: K| ((k.to_u64() - base) >> shift) as usize;
    let add = |(mut h, mut outside): (Vec<u32>, bool), s: &C| {
        for k in s.keys() {
            let offset = k.to_u64().wrapping_sub(base);
            if offset < span {
                h[(offset >> shift) as usize] += 1;
            } else {
                outside = true;
            }
        }
        (h, outside)
    };
    let (counts, outside) = if parallel {
        scans
            .par_iter()
            .fold(|| (vec![0u32; bins], false), add)
            .reduce(
                || (vec![0u32; bins], false),
                |(mut a, x), (b, y)| {
                    a.iter_mut().zip(&b).for_each(|(p, q)| *p += q);
                    (a, x | y)
                },
            )
    } else {
        scans.iter().fold((vec![0u32; bins], false), add)
    };
    if outside {
        return Err(Error::WeightsChanged);
    }
    let (target, before) = radix::bin_of_rank(&counts, r);
    let in_target = |s: &C| -> Vec<K> { s.keys().filter(|&k| bin(k) == target).collect() };
    let mut in_bin: Vec<K> = if parallel {
        scans.par_iter().flat_map_iter(in_target).collect()
    } else {
        scans.iter().flat_map(in_target).collect()
    };
    let (smaller, &mut key, larger) = in_bin.select_nth_unstable((r - before) as usize - 1);
    let below_in_bin = smaller.iter().filter(|&&k| k < key).count() as u64;
    // Every key equal to `key` lies in its bin: the ties are counted there.
    let ties = 1 + smaller
        .iter()
        .chain(larger.iter())
        .filter(|&&k| k == key)
        .count() as u64;
    Ok(Kth {
        key,
        strictly_below: before + below_in_bin,
        ties,
    })
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
