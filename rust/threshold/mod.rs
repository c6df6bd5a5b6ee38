//! The exact global threshold of a magnitude selection, found without writing any mask, and the
//! one-pass writer that applies it tensor by tensor ([`write_pruned`]): pruning a checkpoint
//! larger than memory, read through memory maps.
//!
//! A [`Threshold`] says which alive weights go: those whose magnitude key is below `key`, and
//! the first `ties` alive weights whose key equals it, in (tensor order, row-major index). That
//! is exactly the set [`crate::select::select_masks`] prunes for the same inputs. The search
//! runs the selection's engine ([`crate::select::engine`]: sampling, the scan without a mask,
//! the k-th candidate) and the radix fallback; it allocates the sample and the candidates,
//! never a mask.

mod advice;
mod bracket;
#[cfg(test)]
mod props;
mod write;

pub use write::{write_pruned, write_pruned_counted, Written};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;

use crate::chunk::{self, Chunk};
use crate::error::{Error, Result};
use crate::magnitude::{granularity, Key, Weights};
use crate::radix;
use crate::select::engine::{
    check_alive, kth_candidate, resolve, scan_keys, validate_amount, CandidateKeys, Sink,
    CANDIDATE_BYTES,
};
use crate::select::{wide_keys, Amount, Bracket, Path};

/// Which alive weights a selection prunes, as a rule each tensor can apply on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threshold {
    /// Magnitude key in the selection's key space: below it, a weight is pruned.
    pub key: u64,
    /// Width of the key space: 32, or 64 when any tensor is f64 ([`wide_keys`]).
    pub key_bits: u32,
    /// How many alive weights with key == `key` are pruned, earliest first.
    pub ties: u64,
    pub pruned: u64,
    pub alive: u64,
    /// The branch the search took (see [`Path`]; `FixUp`: found among the candidates).
    pub path: Path,
}

/// Most probes of the sample: more than the in-memory selection takes, so that the bracket of a
/// checkpoint of billions of weights stays narrow enough for its candidates to fit in
/// [`CANDIDATE_BYTES`], and the weights are read once (sampling aside).
const MAX_PROBES: usize = 1 << 21;
/// Bins of the per-key candidate histogram used when the bracket spans few distinct keys
/// (16-bit dtypes: bf16 ties are too many to list one by one). 2^15 holds every finite bf16
/// magnitude, so a bf16 bracket always qualifies.
const KEY_BINS: usize = 1 << 15;

/// The threshold that prunes `amount` of the alive weights, with `select_masks`' rules (counts,
/// ties, ±0 equal, inf last, NaN among alive weights an error naming the tensor).
pub fn select_threshold(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    amount: Amount,
) -> Result<Threshold> {
    validate_amount(weights, amount)?;
    check_alive(weights, alive)?;
    if wide_keys(weights) {
        threshold_in::<u64>(weights, alive, amount)
    } else {
        threshold_in::<u32>(weights, alive, amount)
    }
}

fn threshold_in<K: Key>(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    amount: Amount,
) -> Result<Threshold> {
    let sampling = advice::RandomAccess::over(weights);
    let bracket = bracket::estimate_bracket::<K>(weights, alive, amount, MAX_PROBES)?;
    drop(sampling);
    // An open-ended bracket ("up to every key") ends after +inf: keys above are NaN, an error
    // anyway, and the narrower span can still be counted per key.
    let end = K::from_u64(K::INF.to_u64() + 1);
    let bracket = Bracket::new(bracket.lo, bracket.hi.min(end).max(bracket.lo));
    let chunks = chunk::split_read(weights, alive);
    let shift = granularity::<K>(weights);
    let (lo, hi) = (bracket.lo.to_u64(), bracket.hi.to_u64());
    let by_key = hi <= lo || (hi - 1 - lo) >> shift < KEY_BINS as u64;
    let pass = if by_key {
        scan(&chunks, bracket, || Candidates::ByKey {
            base: lo,
            shift,
            counts: vec![0; KEY_BINS],
        })
    } else {
        scan(&chunks, bracket, || Candidates::Keys(Vec::new()))
    };
    if let Some(t) = pass.nan_tensor {
        return Err(Error::Nan { index: t });
    }
    let k = resolve(amount, pass.alive)?;
    let path = if pass.overflow {
        Path::CandidateOverflow
    } else if k < pass.below || k > pass.below + pass.candidates {
        Path::BracketMiss
    } else if k == pass.below {
        Path::Exact
    } else {
        Path::FixUp
    };
    let (key, ties) = match path {
        Path::Exact => (bracket.lo, 0),
        Path::FixUp => kth_in_bracket(&pass.groups, bracket, k - pass.below, shift)?,
        Path::BracketMiss | Path::CandidateOverflow => match k {
            0 => (K::ZERO, 0),
            k if k == pass.alive => (K::MAX, 0),
            k => radix::kth_key::<K>(&chunks, k)?,
        },
    };
    Ok(Threshold {
        key: key.to_u64(),
        key_bits: if K::BITS > 32 { 64 } else { 32 },
        ties,
        pruned: k,
        alive: pass.alive,
        path,
    })
}

/// The `r`-th smallest candidate key (1-based) and how many candidates with that key are among
/// the `r` smallest.
fn kth_in_bracket<K: Key>(
    groups: &[Candidates<K>],
    bracket: Bracket<K>,
    r: u64,
    granularity: u32,
) -> Result<(K, u64)> {
    match groups.first() {
        Some(Candidates::ByKey { base, shift, .. }) => {
            let mut counts = vec![0u64; KEY_BINS];
            for g in groups {
                if let Candidates::ByKey { counts: c, .. } = g {
                    counts.iter_mut().zip(c).for_each(|(x, y)| *x += y);
                }
            }
            let (bin, before) = radix::bin_of_rank(&counts, r);
            Ok((K::from_u64(base + ((bin as u64) << shift)), r - before))
        }
        _ => {
            let kth = kth_candidate(groups, bracket, r, granularity, true)?;
            Ok((kth.key, r - kth.strictly_below))
        }
    }
}

/// In-bracket candidates of one group of chunks: a count per distinct key, or the keys.
enum Candidates<K> {
    ByKey {
        base: u64,
        shift: u32,
        counts: Vec<u64>,
    },
    Keys(Vec<K>),
}

impl<K: Key> Sink<K> for Candidates<K> {
    #[inline]
    fn push(&mut self, key: K, _index: u32) {
        match self {
            Candidates::ByKey {
                base,
                shift,
                counts,
            } => counts[((key.to_u64() - *base) >> *shift) as usize] += 1,
            Candidates::Keys(keys) => keys.push(key),
        }
    }
}

impl<K: Key> CandidateKeys<K> for Candidates<K> {
    fn keys(&self) -> impl Iterator<Item = K> + '_ {
        match self {
            Candidates::Keys(keys) => keys.as_slice(),
            Candidates::ByKey { .. } => &[],
        }
        .iter()
        .copied()
    }
}

impl<K> Candidates<K> {
    fn len(&self) -> u64 {
        match self {
            Candidates::ByKey { counts, .. } => counts.iter().sum(),
            Candidates::Keys(keys) => keys.len() as u64,
        }
    }
}

struct Pass<K> {
    alive: u64,
    below: u64,
    candidates: u64,
    overflow: bool,
    nan_tensor: Option<usize>,
    groups: Vec<Candidates<K>>,
}

/// The fused scan without a mask: counts and candidates, each weight read once. Chunks are
/// scanned in a few contiguous groups per thread, one candidate store per group, which bounds
/// the memory of the per-key counts whatever the number of chunks.
fn scan<K: Key>(
    chunks: &[Chunk<'_>],
    bracket: Bracket<K>,
    new_group: impl Fn() -> Candidates<K> + Sync,
) -> Pass<K> {
    let cap = (CANDIDATE_BYTES / std::mem::size_of::<K>()) as u64;
    let collected = AtomicU64::new(0);
    let overflow = AtomicBool::new(false);
    let groups: Vec<(u64, u64, Option<usize>, Candidates<K>)> = chunks
        .par_chunks(chunk::per_job(chunks.len()))
        .map(|group| {
            let (mut alive, mut below, mut nan_tensor) = (0, 0, None);
            let mut candidates = new_group();
            for c in group {
                let collect = !overflow.load(Ordering::Relaxed);
                let before = candidates.len_if_listed();
                let counts = scan_keys(
                    c.weights,
                    c.alive,
                    bracket,
                    collect.then_some(&mut candidates),
                );
                alive += counts.alive;
                below += counts.below;
                if counts.nan && nan_tensor.is_none() {
                    nan_tensor = Some(c.tensor);
                }
                if let Some(before) = before.filter(|_| collect) {
                    let n = candidates.len_if_listed().unwrap_or(0) - before;
                    if collected.fetch_add(n, Ordering::Relaxed) + n > cap {
                        overflow.store(true, Ordering::Relaxed);
                    }
                }
                if overflow.load(Ordering::Relaxed) {
                    candidates = Candidates::Keys(Vec::new()); // the fallback will run
                }
            }
            (alive, below, nan_tensor, candidates)
        })
        .collect();
    let mut pass = Pass {
        alive: 0,
        below: 0,
        candidates: 0,
        overflow: overflow.into_inner(),
        nan_tensor: None,
        groups: Vec::with_capacity(groups.len()),
    };
    for (alive, below, nan_tensor, candidates) in groups {
        pass.alive += alive;
        pass.below += below;
        pass.candidates += candidates.len();
        // Groups are in chunk order, so the first NaN found names the earliest tensor.
        pass.nan_tensor = pass.nan_tensor.or(nan_tensor);
        pass.groups.push(candidates);
    }
    pass
}

impl<K> Candidates<K> {
    /// The number of listed keys (only lists can overflow: per-key counts are bounded).
    fn len_if_listed(&self) -> Option<u64> {
        match self {
            Candidates::Keys(keys) => Some(keys.len() as u64),
            Candidates::ByKey { .. } => None,
        }
    }
}
