//! The exact fallback when the bracket misses or the candidates overflow: radix select of the
//! k-th key ([`crate::radix`]), then every mask rewritten.

use rayon::prelude::*;

use super::kth::share_ties;
use super::Follower;
use crate::chunk::{self, Alive, AliveVisitor, Chunk};
use crate::error::{Error, Result};
use crate::magnitude::Key;
use crate::radix;

/// Fallback: find the exact k-th key by radix select and rewrite every mask, telling `follow`
/// each chunk's (a chunk with no mask of its own writes one to a scratch for it).
///
/// The weights are read several times here; if they change in between (a racing writer), the
/// rewritten masks would prune some other count than `k`: that is reported, never returned.
pub(crate) fn exact_rewrite<K: Key>(
    chunks: &mut [Chunk<'_>],
    k: u64,
    alive: u64,
    follow: Option<&dyn Follower>,
) -> Result<()> {
    let (threshold, ties) = match k {
        0 => (K::ZERO, 0),
        k if k == alive => (K::MAX, 0),
        k => radix::kth_key::<K>(chunks, k)?,
    };
    let tie_counts: Vec<u64> = chunks
        .par_iter()
        .map(|c| chunk::visit::<K, _>(c.weights, c.alive, CountEqual(threshold)))
        .collect();
    let budgets = share_ties(&tie_counts, ties);
    let kept: u64 = chunks
        .par_iter_mut()
        .zip(budgets)
        .map(|(c, ties)| {
            let write = |out: &mut [u8]| {
                let write = WriteExact {
                    threshold,
                    ties,
                    out: &mut *out,
                };
                let kept = chunk::visit::<K, _>(c.weights, c.alive, write);
                if let Some(follow) = follow {
                    follow.chunk(c.tensor, c.start, out);
                }
                kept
            };
            if c.out.len() == c.weights.len() {
                write(c.out)
            } else {
                chunk::with_scratch(c.weights.len(), write)
            }
        })
        .sum();
    if kept != alive - k {
        return Err(Error::WeightsChanged);
    }
    Ok(())
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
    /// How many weights the chunk keeps.
    type Output = u64;
    fn visit<T: Copy, F: Fn(T) -> K + Copy, A: Alive>(
        mut self,
        bits: &[T],
        key: F,
        alive: A,
    ) -> u64 {
        let mut kept = 0;
        for (i, (&b, o)) in bits.iter().zip(self.out.iter_mut()).enumerate() {
            let k = key(b);
            let mut keep = alive.get(i) && k >= self.threshold;
            if keep && k == self.threshold && self.ties > 0 {
                self.ties -= 1;
                keep = false;
            }
            *o = keep as u8;
            kept += keep as u64;
        }
        kept
    }
}
