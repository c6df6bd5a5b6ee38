//! Reading the sample: the keys of the alive weights at evenly spaced positions of the
//! concatenated input, a few neighbours at each.

use rayon::prelude::*;

use crate::magnitude::{Key, KeyVisitor, Weights};
use crate::prefetch;

/// Neighbouring weights read at each sampled position. The walk costs a cache miss per
/// position (a line of weights and a line of survivor flags), so reading sixteen weights of the
/// same line (all of an f32 line, half of a bf16 one) takes a sixteenth of the misses for the
/// same number of keys. Neighbours can be alike (a row of larger weights): the bracket's width
/// then comes from the spread between positions ([`super::sample`]), never narrower than for
/// independent probes; measured on rows of unequal scale, the wider bracket cost the fix-up less
/// than the walk saved over groups of four or eight.
pub(crate) const CLUSTER: usize = 16;

/// Inputs from this many weights are sampled [`CLUSTER`] neighbours at a time. A smaller model
/// stays in the caches while it trains, so its walk costs instructions rather than misses, and
/// single probes then bracket as tightly for less work.
pub(crate) const CLUSTERED_FROM: usize = 1 << 22;

/// Weights read per parallel job of the walk.
const RUN: usize = 1 << 13;

/// What a walk read.
pub(crate) struct Sample<K> {
    /// Keys of the alive weights, position by position.
    pub keys: Vec<K>,
    /// How many of `keys` each position gave (at most [`CLUSTER`]), in order; empty when each
    /// position reads one weight.
    pub sizes: Vec<u8>,
    /// Weights read, alive or not.
    pub read: usize,
}

/// The keys of the alive weights among about `probes` weights of the concatenated input:
/// every weight when `probes` covers the input, else one at each of `probes` evenly spaced
/// positions, or from [`CLUSTERED_FROM`] weights [`CLUSTER`] neighbours at each of
/// `probes / CLUSTER` positions. The near-constant stride lets the hardware
/// prefetcher overlap the cache misses. Each thread walks a contiguous run of positions,
/// stepping position and tensor incrementally (a division and a binary search per position
/// cost as much as the miss itself).
pub(crate) fn sample_keys<K: Key>(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    probes: usize,
    parallel: bool,
) -> Sample<K> {
    let mut ends = Vec::with_capacity(weights.len());
    let mut total = 0usize;
    for w in weights {
        total += w.len();
        ends.push(total);
    }
    let (width, positions) = if probes >= total {
        (1, total)
    } else if total < CLUSTERED_FROM {
        (1, probes)
    } else {
        (CLUSTER, cluster_count(total, probes))
    };
    if positions == 0 {
        // only empty tensors
        return Sample {
            keys: Vec::new(),
            sizes: Vec::new(),
            read: 0,
        };
    }
    let (stride, step) = (total / positions, total % positions); // pos advances by total / positions
    let per_run = RUN / width;
    let run_walk = |run: usize| {
        let first = run * per_run;
        // u64 is exact here: positions <= 2^23 and no in-memory model reaches 2^40 weights.
        let numerator = first as u64 * total as u64 + total as u64 / 2;
        let left = per_run.min(positions - first);
        let walk = Walk {
            pos: (numerator / positions as u64) as usize,
            rem: (numerator % positions as u64) as usize,
            left,
            stride,
            step,
            probes: positions,
            width,
            keys: Vec::with_capacity(left * width),
            sizes: Vec::with_capacity(if width > 1 { left } else { 0 }),
            read: 0,
        };
        walk.walk(weights, alive, &ends)
    };
    let runs: Vec<Walk<K>> = if parallel {
        (0..positions.div_ceil(per_run))
            .into_par_iter()
            .map(run_walk)
            .collect()
    } else {
        (0..positions.div_ceil(per_run)).map(run_walk).collect()
    };
    let read = runs.iter().map(|w| w.read).sum();
    let (keys, sizes) = if runs.len() == 1 {
        let run = runs.into_iter().next().expect("one run");
        (run.keys, run.sizes)
    } else {
        let keys = runs
            .iter()
            .map(|w| w.keys.as_slice())
            .collect::<Vec<_>>()
            .concat();
        let sizes = runs
            .iter()
            .map(|w| w.sizes.as_slice())
            .collect::<Vec<_>>()
            .concat();
        (keys, sizes)
    };
    Sample { keys, sizes, read }
}

/// Positions for `probes` keys read [`CLUSTER`] at a time, nudged until they do not divide
/// `total`: a fractional stride drifts in phase, so a periodic weight layout (rows, channels)
/// cannot pin every position to the same column. Positions lie at least 2 * [`CLUSTER`] apart
/// (`probes` is at most half the input above [`super::sample`]'s whole-input size), so their
/// neighbours never overlap.
fn cluster_count(total: usize, probes: usize) -> usize {
    let mut positions = (probes / CLUSTER).max(1);
    while positions > 1 && total.is_multiple_of(positions) {
        positions -= 1;
    }
    positions
}

/// A walk through evenly spaced positions of the concatenated input (`stride + step / probes`
/// apart): the next position, the fractional stride's remainder, the positions still to visit,
/// the neighbours read at each, and what it read so far.
pub(crate) struct Walk<K> {
    pos: usize,
    rem: usize,
    left: usize,
    stride: usize,
    step: usize,
    probes: usize,
    width: usize,
    keys: Vec<K>,
    sizes: Vec<u8>,
    read: usize,
}

impl<K: Key> Walk<K> {
    /// `len` consecutive positions from `first` (a run of the streaming threshold's sample).
    pub(crate) fn contiguous(first: usize, len: usize) -> Walk<K> {
        Walk {
            pos: first,
            rem: 0,
            left: len,
            stride: 1,
            step: 0,
            probes: 1,
            width: 1,
            keys: Vec::with_capacity(len),
            sizes: Vec::new(),
            read: 0,
        }
    }

    /// The keys of the alive weights the walk visits; `ends[t]` is where tensor `t` ends in the
    /// concatenated input.
    pub(crate) fn keys_in(
        self,
        weights: &[Weights<'_>],
        alive: Option<&[&[u8]]>,
        ends: &[usize],
    ) -> Vec<K> {
        self.walk(weights, alive, ends).keys
    }

    /// Visit every position, one dtype dispatch per tensor the walk crosses, not one per
    /// position.
    fn walk(mut self, weights: &[Weights<'_>], alive: Option<&[&[u8]]>, ends: &[usize]) -> Self {
        let mut t = ends.partition_point(|&end| end <= self.pos);
        while self.left > 0 {
            while self.pos >= ends[t] {
                t += 1;
            }
            self = weights[t].visit_keys(InTensor {
                walk: self,
                start: ends[t] - weights[t].len(),
                alive: alive.map(|a| a[t]),
            });
        }
        self
    }
}

/// Positions a walk of single probes asks the memory for ahead of the one it reads (a clustered
/// walk asks for a whole run's first, [`Walk::request_lines`]). The positions are evenly
/// spaced but their spacing varies by one element, so the hardware prefetcher does not follow
/// them: in IMP the call comes after training has evicted the weights, and a cold walk then
/// waits on each position in turn (at LeNet size it cost more than the fused pass).
const PREFETCH_PROBES: usize = 4;

/// Visit a walk's positions while they lie in one tensor, whose first element is at `start` of
/// the concatenated input.
struct InTensor<'a, K> {
    walk: Walk<K>,
    start: usize,
    alive: Option<&'a [u8]>,
}

impl<K: Key> KeyVisitor<K> for InTensor<'_, K> {
    type Output = Walk<K>;

    #[inline(always)]
    fn visit<T: Copy + Send + Sync, F: Fn(T) -> K>(self, bits: &[T], key: F) -> Walk<K> {
        let InTensor {
            mut walk,
            start,
            alive,
        } = self;
        // One loop for each width, so that neither carries the other's work.
        if walk.width == 1 {
            walk.single(bits, start, alive, key);
        } else {
            walk.clustered(bits, start, alive, key);
        }
        walk
    }
}

impl<K: Key> Walk<K> {
    /// One weight at each position while the positions lie in `bits` (from `start`).
    #[inline(always)]
    fn single<T: Copy, F: Fn(T) -> K>(
        &mut self,
        bits: &[T],
        start: usize,
        alive: Option<&[u8]>,
        key: F,
    ) {
        let end = start + bits.len();
        let ahead = PREFETCH_PROBES * self.stride;
        while self.left > 0 && self.pos < end {
            let i = self.pos - start;
            prefetch::line(bits.as_ptr().wrapping_add(i + ahead));
            if alive.is_none_or(|a| a[i] != 0) {
                self.keys.push(key(bits[i]));
            }
            self.read += 1;
            self.advance();
        }
    }

    /// [`CLUSTER`] neighbours at each position while the positions lie in `bits`.
    #[inline(always)]
    fn clustered<T: Copy, F: Fn(T) -> K>(
        &mut self,
        bits: &[T],
        start: usize,
        alive: Option<&[u8]>,
        key: F,
    ) {
        let end = start + bits.len();
        self.request_lines(bits, start, alive);
        while self.left > 0 && self.pos < end {
            let i = self.pos - start;
            // Aligned down, so that the neighbours share a cache line.
            let first = i & !(CLUSTER - 1);
            let last = (first + CLUSTER).min(bits.len());
            // No branch on a survivor flag: one mispredicted while its line is still in memory
            // throws away the positions issued after it.
            let mut read = [K::ZERO; CLUSTER];
            let mut kept = 0;
            for j in first..last {
                read[kept] = key(bits[j]);
                kept += alive.map_or(1, |a| (a[j] != 0) as usize);
            }
            // A whole group and a truncate: a slice of variable length is a memcpy call.
            let len = self.keys.len();
            self.keys.extend_from_slice(&read);
            self.keys.truncate(len + kept);
            self.sizes.push(kept as u8);
            self.read += last - first;
            self.advance();
        }
    }

    /// Ask the memory for the line at each of the walk's positions in `bits` (from `start`)
    /// before reading any. Each position lies on a page of its own, and a prefetch that misses
    /// the TLB holds up the instructions after it until its page walk ends: issued from a loop
    /// of a few instructions per position, many walks overlap, where among the reading loop's
    /// keys and copies only a few did.
    #[inline(always)]
    fn request_lines<T>(&self, bits: &[T], start: usize, alive: Option<&[u8]>) {
        let end = start + bits.len();
        let (mut pos, mut rem, mut left) = (self.pos, self.rem, self.left);
        while left > 0 && pos < end {
            let i = pos - start;
            prefetch::line(bits.as_ptr().wrapping_add(i));
            if let Some(a) = alive {
                prefetch::line(a.as_ptr().wrapping_add(i));
            }
            (pos, rem) = self.after(pos, rem);
            left -= 1;
        }
    }

    /// On to the next position.
    #[inline(always)]
    fn advance(&mut self) {
        (self.pos, self.rem) = self.after(self.pos, self.rem);
        self.left -= 1;
    }

    /// The position after `pos`, whose fractional stride's remainder is `rem`, and its own.
    #[inline(always)]
    fn after(&self, pos: usize, rem: usize) -> (usize, usize) {
        let (pos, rem) = (pos + self.stride, rem + self.step);
        if rem >= self.probes {
            (pos + 1, rem - self.probes)
        } else {
            (pos, rem)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each position reads its aligned group of [`CLUSTER`] neighbours inside one tensor,
    /// positions never overlap and spread evenly over every tensor; survivor flags filter the
    /// keys, and `sizes` and `read` account for each position.
    #[test]
    fn reads_aligned_neighbours_at_evenly_spaced_positions() {
        let lens = [70_001usize, 5, CLUSTERED_FROM, 3];
        let mut start = 0;
        let mut tensors: Vec<Vec<u64>> = Vec::new();
        for &len in &lens {
            // Each weight's magnitude is its global index.
            tensors.push((start..start + len).map(|i| (i as f64).to_bits()).collect());
            start += len;
        }
        let total = start;
        let flags: Vec<Vec<u8>> = tensors
            .iter()
            .map(|t| (0..t.len()).map(|i| (i % 3 != 1) as u8).collect())
            .collect();
        let weights: Vec<Weights<'_>> = tensors.iter().map(|t| Weights::F64(t)).collect();
        let alive: Vec<&[u8]> = flags.iter().map(|f| f.as_slice()).collect();
        let probes = 20_000;
        for parallel in [false, true] {
            let sample = sample_keys::<u64>(&weights, Some(&alive), probes, parallel);
            let positions = cluster_count(total, probes);
            assert_eq!(sample.sizes.len(), positions);
            let sizes: usize = sample.sizes.iter().map(|&s| s as usize).sum();
            assert_eq!(sizes, sample.keys.len());
            let mut offset = 0;
            let mut last_group: Option<(usize, usize)> = None;
            let mut expected_read = 0;
            for &size in &sample.sizes {
                let keys = &sample.keys[offset..offset + size as usize];
                offset += size as usize;
                let at: Vec<usize> = keys.iter().map(|&k| f64::from_bits(k) as usize).collect();
                for &i in &at {
                    let (t, l) = locate(&lens, i);
                    assert_eq!(flags[t][l], 1, "a dead weight was sampled");
                }
                if let Some(&i) = at.first() {
                    let (t, l) = locate(&lens, i);
                    let group = (t, l / CLUSTER);
                    assert!(at.iter().all(|&j| {
                        let (u, m) = locate(&lens, j);
                        (u, m / CLUSTER) == group
                    }));
                    assert!(
                        last_group.is_none_or(|g| g < group),
                        "positions overlap or go back"
                    );
                    last_group = Some(group);
                    expected_read += CLUSTER.min(lens[t] - l / CLUSTER * CLUSTER);
                }
            }
            assert!(sample.read >= expected_read && sample.read <= positions * CLUSTER);
            // Evenly spread: the large tensor gets its share of the keys.
            let in_third = sample
                .keys
                .iter()
                .filter(|&&k| locate(&lens, f64::from_bits(k) as usize).0 == 2)
                .count();
            let share = in_third as f64 / sample.keys.len() as f64;
            assert!(
                (share - CLUSTERED_FROM as f64 / total as f64).abs() < 0.01,
                "{share}"
            );
        }
    }

    /// (tensor, index within it) of global index `i`.
    fn locate(lens: &[usize], mut i: usize) -> (usize, usize) {
        for (t, &len) in lens.iter().enumerate() {
            if i < len {
                return (t, i);
            }
            i -= len;
        }
        panic!("index past the input");
    }
}
