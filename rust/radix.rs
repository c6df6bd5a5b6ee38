//! Exact threshold by radix select over magnitude keys: 16-bit digit histograms, most
//! significant digit first: the fallback when the sampled bracket of [`crate::select`] or of the
//! streaming threshold ([`crate::threshold`]) misses (heavy ties, adversarial data). Histograms
//! of disjoint weight sets add up; the torch adapter's selection across ranks
//! (`python/lottery_ticket/torch/_distributed.py`) all-reduces the same 16-bit digit histograms
//! level by level, in torch, so its threshold is this one.

use rayon::prelude::*;

use crate::chunk::{self, Alive, AliveVisitor, Chunk};
use crate::error::{Error, Result};
use crate::magnitude::Key;

pub const DIGIT_BITS: u32 = 16;
const BINS: usize = 1 << DIGIT_BITS;

/// Where a radix walk stands: keys whose bits above `shift + DIGIT_BITS` equal `prefix` are
/// still in the running.
#[derive(Clone, Copy, Debug)]
pub struct Level {
    pub prefix: u64,
    pub shift: u32,
}

impl Level {
    /// The first level for a key space of `K`.
    pub fn first<K: Key>() -> Level {
        let digits = K::BITS.div_ceil(DIGIT_BITS);
        Level {
            prefix: 0,
            shift: (digits - 1) * DIGIT_BITS,
        }
    }

    #[inline(always)]
    fn matches(self, key: u64) -> bool {
        (key >> self.shift) >> DIGIT_BITS == self.prefix >> self.shift >> DIGIT_BITS
    }
}

struct Histogram<'h> {
    level: Level,
    bins: &'h mut [u64],
}

impl<K: Key> AliveVisitor<K> for Histogram<'_> {
    type Output = ();
    #[inline(always)]
    fn visit<T: Copy, F: Fn(T) -> K + Copy, A: Alive>(self, bits: &[T], key: F, alive: A) {
        for (i, &b) in bits.iter().enumerate() {
            let k = key(b).to_u64();
            if alive.get(i) && self.level.matches(k) {
                self.bins[((k >> self.level.shift) as usize) & (BINS - 1)] += 1;
            }
        }
    }
}

/// Counts of alive keys per digit at `level` (mergeable: histograms of shards add).
pub fn digit_histogram<K: Key>(chunks: &[Chunk<'_>], level: Level) -> Vec<u64> {
    chunks
        .par_iter()
        .fold(
            || vec![0u64; BINS],
            |mut bins, c| {
                chunk::visit::<K, _>(
                    c.weights,
                    c.alive,
                    Histogram {
                        level,
                        bins: &mut bins,
                    },
                );
                bins
            },
        )
        .reduce(
            || vec![0u64; BINS],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        )
}

/// Walk one level: find the digit holding rank `rank` (1-based among the keys still in the
/// running). Returns the next level and the rank within the digit.
pub fn descend(bins: &[u64], level: Level, rank: u64) -> (Level, u64) {
    let (digit, before) = bin_of_rank(bins, rank);
    (
        Level {
            prefix: level.prefix | ((digit as u64) << level.shift),
            shift: level.shift.saturating_sub(DIGIT_BITS),
        },
        rank - before,
    )
}

/// The bin of a histogram holding rank `rank` (1-based), and the count of all bins before it.
pub fn bin_of_rank<C: Copy + Into<u64>>(bins: &[C], rank: u64) -> (usize, u64) {
    let mut before = 0u64;
    for (bin, &n) in bins.iter().enumerate() {
        let n: u64 = n.into();
        if before + n >= rank {
            return (bin, before);
        }
        before += n;
    }
    unreachable!("rank {rank} exceeds the {before} keys counted")
}

/// The exact key of the `k`-th smallest alive magnitude (1 <= k <= alive) and how many alive
/// weights with exactly that key are among the `k` smallest (the ties to prune).
///
/// Each level re-reads the weights: if a level counts fewer keys than the rank sought, they
/// changed under us ([`Error::WeightsChanged`]).
pub fn kth_key<K: Key>(chunks: &[Chunk<'_>], k: u64) -> Result<(K, u64)> {
    let mut level = Level::first::<K>();
    let mut rank = k;
    loop {
        let last = level.shift == 0;
        let bins = digit_histogram::<K>(chunks, level);
        if bins.iter().sum::<u64>() < rank {
            return Err(Error::WeightsChanged);
        }
        let (next, r) = descend(&bins, level, rank);
        rank = r;
        if last {
            return Ok((K::from_u64(next.prefix), rank));
        }
        level = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::magnitude::Weights;

    #[test]
    fn a_rank_beyond_the_keys_counted_is_weights_changed_not_a_panic() {
        // What a racing writer produces: the alive count of an earlier pass exceeds what a
        // later pass over the same weights counts.
        let bits = [1.0f32.to_bits(), 2.0f32.to_bits(), 2.0f32.to_bits()];
        let weights = [Weights::F32(&bits)];
        let mut out = [0u8; 3];
        let mut outs = [&mut out[..]];
        let chunks = chunk::split(&weights, None, &mut outs);
        assert_eq!(kth_key::<u32>(&chunks, 4), Err(Error::WeightsChanged));
        assert_eq!(kth_key::<u32>(&chunks, 3), Ok((2.0f32.to_bits(), 2)));
    }
}
