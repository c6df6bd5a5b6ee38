//! The k-th smallest key among a selection's candidates, and the ties that go with it.

use rayon::prelude::*;

use super::Bracket;
use crate::chunk;
use crate::error::{Error, Result};
use crate::magnitude::Key;
use crate::radix;

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
/// not use the other cores); only that bin's keys are then selected exactly. Keys are multiples
/// of 2^`granularity` ([`crate::magnitude::granularity`]), so no bin is narrower than that: when
/// the bracket spans fewer distinct keys than there are bins (bf16, f16), each bin holds one key
/// and the histogram alone answers. A key outside the bracket (a racing writer changed a weight
/// after its bracket test) is [`Error::WeightsChanged`]; the histogram pass finds it.
pub(crate) fn kth_candidate<K: Key, C: CandidateKeys<K>>(
    scans: &[C],
    bracket: Bracket<K>,
    r: u64,
    granularity: u32,
    parallel: bool,
) -> Result<Kth<K>> {
    locate_kth(scans, bracket, r, granularity, parallel).map(|(kth, _)| kth)
}

/// [`kth_candidate`], and how many of each group's keys tie with the k-th, where its bin's keys
/// were gathered (None where the histogram alone answered): what the fix-up's tie-breaking needs,
/// without another pass over every candidate.
pub(crate) fn locate_kth<K: Key, C: CandidateKeys<K>>(
    scans: &[C],
    bracket: Bracket<K>,
    r: u64,
    granularity: u32,
    parallel: bool,
) -> Result<(Kth<K>, Option<Vec<u64>>)> {
    let candidates: usize = scans.iter().map(|s| s.count()).sum();
    let base = bracket.lo.to_u64();
    let span = bracket.hi.to_u64().saturating_sub(base).max(1);
    let coarse = span >> granularity;
    // About 256 candidates a bin: the histogram then stays within the L1 cache up to a million
    // candidates, and selecting among the target bin's few hundred keys costs less than the
    // cache misses of a histogram with a bin for every 16 candidates. No more bins than
    // distinct keys, since each job's histogram is zeroed and summed.
    let bins = (candidates / 256)
        .next_power_of_two()
        .clamp(1 << 8, 1 << 16)
        .min((coarse.min(1 << 16) as usize + 1).next_power_of_two());
    let finer = (u64::BITS - coarse.leading_zeros()).saturating_sub(bins.trailing_zeros());
    let shift = granularity + finer;
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
    let sum = |(mut a, x): (Vec<u32>, bool), (b, y): (Vec<u32>, bool)| {
        a.iter_mut().zip(&b).for_each(|(p, q)| *p += q);
        (a, x | y)
    };
    let empty = || (vec![0u32; bins], false);
    let (counts, outside) = if parallel {
        // A few histograms per thread: one per rayon job was zeroed and summed for every chunk.
        scans
            .par_chunks(chunk::per_job(scans.len()))
            .map(|group| group.iter().fold(empty(), add))
            .reduce(empty, sum)
    } else {
        scans.iter().fold(empty(), add)
    };
    if outside {
        return Err(Error::WeightsChanged);
    }
    let (target, before) = radix::bin_of_rank(&counts, r);
    if finer == 0 {
        // The bin's one possible key: the multiple of 2^granularity it holds.
        let start = base + ((target as u64) << shift);
        let kth = Kth {
            key: K::from_u64(start.next_multiple_of(1 << granularity)),
            strictly_below: before,
            ties: counts[target] as u64,
        };
        return Ok((kth, None));
    }
    // Each group's keys in the target bin, in group order (a few hundred keys in all). Counting
    // them is a branch-free pass; a filter over every candidate mispredicted on each hit. Only
    // the groups that hold some are read again.
    let in_target = |group: &[C]| -> Vec<Vec<K>> {
        group
            .iter()
            .map(|s| {
                let hits: usize = s.keys().map(|k| (bin(k) == target) as usize).sum();
                if hits == 0 {
                    return Vec::new();
                }
                let mut keys = Vec::with_capacity(hits);
                keys.extend(s.keys().filter(|&k| bin(k) == target));
                keys
            })
            .collect()
    };
    let by_group: Vec<Vec<K>> = if parallel {
        scans
            .par_chunks(chunk::per_job(scans.len()))
            .flat_map_iter(in_target)
            .collect()
    } else {
        in_target(scans)
    };
    let mut in_bin: Vec<K> = by_group.concat();
    let (smaller, &mut key, larger) = in_bin.select_nth_unstable((r - before) as usize - 1);
    let below_in_bin = smaller.iter().filter(|&&k| k < key).count() as u64;
    // Every key equal to `key` lies in its bin: the ties are counted there.
    let ties = 1 + smaller
        .iter()
        .chain(larger.iter())
        .filter(|&&k| k == key)
        .count() as u64;
    let kth = Kth {
        key,
        strictly_below: before + below_in_bin,
        ties,
    };
    let tie_counts = by_group
        .iter()
        .map(|g| g.iter().filter(|&&k| k == key).count() as u64)
        .collect();
    Ok((kth, Some(tie_counts)))
}

/// A group of candidates whose keys can be listed (positions, if any, are not needed here).
pub(crate) trait CandidateKeys<K>: Sync {
    fn keys(&self) -> impl Iterator<Item = K> + '_;
    /// How many keys `keys` lists (sizes the histogram).
    fn count(&self) -> usize {
        self.keys().count()
    }
}

impl<K: Key> CandidateKeys<K> for &[(K, u32)] {
    fn keys(&self) -> impl Iterator<Item = K> + '_ {
        self.iter().map(|c| c.0)
    }
    fn count(&self) -> usize {
        self.len()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select_props::generators::Rng;

    /// The k-th key, the keys below it and its ties, by sorting every key.
    fn by_sorting(groups: &[Vec<u32>], r: u64) -> Kth<u32> {
        let mut all: Vec<u32> = groups.concat();
        all.sort_unstable();
        let key = all[r as usize - 1];
        Kth {
            key,
            strictly_below: all.iter().filter(|&&k| k < key).count() as u64,
            ties: all.iter().filter(|&&k| k == key).count() as u64,
        }
    }

    #[test]
    fn kth_candidate_matches_a_sort_at_every_granularity() {
        let mut rng = Rng(14);
        // Distinct keys in the bracket: fewer than the bins (one key a bin: the histogram
        // answers) and more (the target bin's keys are selected).
        for granularity in [0u32, 13, 16] {
            for distinct in [1u64, 3, 40, 5_000, 70_000] {
                let base = 0x3b80_0000u64 >> granularity << granularity;
                if base + (distinct << granularity) > u32::MAX as u64 {
                    continue; // more distinct keys than this granularity has
                }
                let groups: Vec<Vec<u32>> = (0..7)
                    .map(|g| {
                        (0..300 * g)
                            .map(|_| (base + ((rng.next() % distinct) << granularity)) as u32)
                            .collect()
                    })
                    .collect();
                let n: u64 = groups.iter().map(|g| g.len() as u64).sum();
                // `lo` need not be a multiple of 2^granularity.
                for lo in [base, base - 5] {
                    let hi = (base + (distinct << granularity)) as u32;
                    let bracket = Bracket::new(lo as u32, hi);
                    for r in [1, 2, n / 3, n / 2, n - 1, n] {
                        let want = by_sorting(&groups, r);
                        for parallel in [false, true] {
                            let got = kth_candidate(&groups, bracket, r, granularity, parallel);
                            assert_eq!(got.unwrap(), want, "g {granularity} keys {distinct} r {r}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn each_groups_ties_are_counted_where_the_bin_is_gathered() {
        let mut rng = Rng(15);
        // Few distinct keys over many bins' width: the k-th's bin holds several keys and ties.
        let groups: Vec<Vec<u32>> = (0..9)
            .map(|g| {
                (0..200 * (g % 4))
                    .map(|_| 1_000 + (rng.next() % 3_000) as u32 * 7)
                    .collect()
            })
            .collect();
        let n: u64 = groups.iter().map(|g| g.len() as u64).sum();
        let bracket = Bracket::new(1_000, 1_000 + 3_000 * 7);
        for r in [1, n / 5, n / 2, n] {
            for parallel in [false, true] {
                let (kth, ties) = locate_kth(&groups, bracket, r, 0, parallel).unwrap();
                assert_eq!(kth, by_sorting(&groups, r));
                let want: Vec<u64> = groups
                    .iter()
                    .map(|g| g.iter().filter(|&&k| k == kth.key).count() as u64)
                    .collect();
                assert_eq!(ties, Some(want), "r {r}");
            }
        }
    }

    #[test]
    fn an_open_bracket_ranks_every_key() {
        let keys: Vec<u64> = vec![(1 << 62) - (1 << 45), 0, 7 << 45, 3 << 45, 7 << 45];
        let groups = vec![keys[..2].to_vec(), keys[2..].to_vec()];
        for granularity in [0, 45] {
            let open = Bracket::new(0, u64::MAX);
            let got = kth_candidate(&groups, open, 4, granularity, true).unwrap();
            assert_eq!((got.key, got.strictly_below, got.ties), (7 << 45, 2, 2));
        }
    }

    #[test]
    fn a_candidate_outside_the_bracket_is_a_changed_weight() {
        let groups = vec![vec![10u32, 11, 12], vec![13, 99]];
        for granularity in [0, 1] {
            let got = kth_candidate(&groups, Bracket::new(10, 20), 2, granularity, true);
            assert!(matches!(got, Err(Error::WeightsChanged)));
        }
    }
}
