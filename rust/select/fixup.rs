//! The fix-up after a fused pass whose bracket held the k-th key: only candidates change.

use rayon::prelude::*;

use super::kth::{locate_kth, share_ties, Kth};
use super::pass::FusedScan;
use super::window::{self, InWindow};
use super::{Bracket, Follower};
use crate::chunk::{self, Chunk};
use crate::error::{Error, Result};
use crate::magnitude::Key;

/// Prune the `r` smallest candidates in (key, position) order and keep the rest; the fused pass
/// provisionally pruned those below the bracket's `mid`, so only candidates between `mid` and
/// the exact threshold are written. `inside`, the sample's keys in the bracket, narrows the
/// search to the candidates near the threshold ([`window`]).
///
/// A candidate's key is re-read after its bracket test; one outside the bracket means a racing
/// writer changed the weight in between ([`Error::WeightsChanged`], before any mask is touched).
/// `follow` is told every mask byte that changes.
#[allow(clippy::too_many_arguments)] // the fused pass's results and the selection's settings
pub(crate) fn fix_up<K: Key>(
    chunks: &mut [Chunk<'_>],
    scan: &FusedScan<K>,
    bracket: Bracket<K>,
    inside: &mut [K],
    r: u64,
    granularity: u32,
    parallel: bool,
    follow: Option<&dyn Follower>,
) -> Result<()> {
    let lists = scan.candidates();
    if r == 0 {
        // Every candidate is kept: no key lies below ZERO, and no tie may go.
        let outside =
            |list: &&[(K, u32)]| list.iter().any(|c| c.0 < bracket.lo || c.0 >= bracket.hi);
        let changed = if parallel {
            lists.par_iter().any(outside)
        } else {
            lists.iter().any(outside)
        };
        if changed {
            return Err(Error::WeightsChanged);
        }
        let none = Kth {
            key: K::ZERO,
            strictly_below: 0,
            ties: 0,
        };
        rewrite_chunks(chunks, &lists, bracket.mid, none, None, 0, parallel, follow);
        return Ok(());
    }
    if let Some(near) = window::narrow(&lists, scan.candidates, bracket, inside, r, parallel)? {
        let (kth, ties) = locate_kth(&near.per_chunk, near.bracket, near.r, granularity, parallel)?;
        rewrite_chunks(
            chunks,
            &near.per_chunk,
            bracket.mid,
            kth,
            ties,
            near.r,
            parallel,
            follow,
        );
        return Ok(());
    }
    let (kth, ties) = locate_kth(&lists, bracket, r, granularity, parallel)?;
    rewrite_chunks(chunks, &lists, bracket.mid, kth, ties, r, parallel, follow);
    Ok(())
}

/// A chunk's candidates as (key, index within the chunk), in index order.
pub(crate) trait CandidatePairs<K>: Sync {
    fn pairs(&self) -> &[(K, u32)];
}

impl<K: Key> CandidatePairs<K> for &[(K, u32)] {
    fn pairs(&self) -> &[(K, u32)] {
        self
    }
}

impl<K: Key> CandidatePairs<K> for InWindow<K> {
    fn pairs(&self) -> &[(K, u32)] {
        &self.0
    }
}

/// Rewrite each chunk's candidates (`groups`, one per chunk) so that the `r` smallest of them
/// go, `kth` being the `r`-th: those between `mid` and it change. `tie_counts`: each group's
/// ties with `kth`, where [`locate_kth`] counted them. `follow` is told each byte changed.
#[allow(clippy::too_many_arguments)] // the k-th's parts, as `fix_up` found them
fn rewrite_chunks<K: Key, G: CandidatePairs<K>>(
    chunks: &mut [Chunk<'_>],
    groups: &[G],
    mid: K,
    kth: Kth<K>,
    tie_counts: Option<Vec<u64>>,
    r: u64,
    parallel: bool,
    follow: Option<&dyn Follower>,
) {
    let threshold = kth.key;
    let ties = r - kth.strictly_below;
    let mut work: Vec<_> = chunks.iter_mut().zip(groups).collect();
    let provisional = |k: K| k >= mid;
    let mid = mid.to_u64();
    if ties == 0 || ties == kth.ties {
        // No tie or every tie goes: a candidate is kept iff its key reaches `cut`.
        let cut = if ties == 0 {
            threshold.to_u64()
        } else {
            threshold.to_u64() + 1
        };
        let changed = mid.min(cut)..mid.max(cut);
        chunk::map(&mut work, parallel, |(c, g)| {
            let told = Told::new(follow, c);
            rewrite(c.out, told, g.pairs(), changed.clone(), provisional, |k| {
                k.to_u64() >= cut
            });
        });
        return;
    }
    // Some ties at the threshold stay: the earliest go, so each chunk learns its share (counted
    // while the k-th was located, or here where the histogram alone answered).
    let tie_counts = tie_counts.unwrap_or_else(|| {
        let ties_of = |g: &G| g.pairs().iter().filter(|c| c.0 == threshold).count() as u64;
        if parallel {
            groups.par_iter().map(ties_of).collect()
        } else {
            groups.iter().map(ties_of).collect()
        }
    });
    let budgets = share_ties(&tie_counts, ties);
    let mut work: Vec<_> = work.into_iter().zip(budgets).collect();
    // Every candidate between `mid` and the threshold changes; the threshold's ties may.
    let t = threshold.to_u64();
    let changed = mid.min(t)..mid.max(t + 1);
    chunk::map(&mut work, parallel, |((c, g), ties)| {
        let told = Told::new(follow, c);
        rewrite(c.out, told, g.pairs(), changed.clone(), provisional, |k| {
            let tie = (k == threshold) & (*ties > 0);
            *ties -= tie as u64;
            !((k < threshold) | tie)
        });
    });
}

/// Writes `keep(key)` over the fused pass's `provisional` mask byte of each candidate whose
/// key lies in `changed` (every other keeps its provisional byte), in candidate order. Few do
/// (`mid` estimates the threshold), and unpredictably: a branch per candidate mispredicted on
/// about every write, so each block of 64 is tested without a branch into a bit mask, and only
/// its set bits are visited. Writing every candidate instead touched a random cache line of the
/// masks per candidate.
fn rewrite<K: Key>(
    out: &mut [u8],
    told: Option<Told<'_>>,
    candidates: &[(K, u32)],
    changed: std::ops::Range<u64>,
    provisional: impl Fn(K) -> bool,
    mut keep: impl FnMut(K) -> bool,
) {
    for block in candidates.chunks(64) {
        let mut bits = 0u64;
        for (j, &(k, _)) in block.iter().enumerate() {
            let k = k.to_u64();
            bits |= ((k >= changed.start) as u64 & (k < changed.end) as u64) << j;
        }
        while bits != 0 {
            let (k, i) = block[bits.trailing_zeros() as usize];
            let kept = keep(k);
            if kept != provisional(k) {
                // A chunk whose mask is not kept has none (its follower is told).
                if let Some(byte) = out.get_mut(i as usize) {
                    *byte = kept as u8;
                }
                if let Some(t) = &told {
                    t.follow.set(t.tensor, t.start + i as usize, kept);
                }
            }
            bits &= bits - 1;
        }
    }
}

/// Where a chunk's changed bytes are told: its tensor and first element.
struct Told<'f> {
    follow: &'f dyn Follower,
    tensor: usize,
    start: usize,
}

impl<'f> Told<'f> {
    fn new(follow: Option<&'f dyn Follower>, c: &Chunk<'_>) -> Option<Told<'f>> {
        follow.map(|follow| Told {
            follow,
            tensor: c.tensor,
            start: c.start,
        })
    }
}
