//! Exact magnitude selection: which alive weights to prune so that exactly `k` of the smallest
//! |w| go, ties broken by (tensor order, row-major flat index) — earlier is pruned first.
//!
//! One fused pass does almost all the work. A strided sample of the alive magnitudes brackets the
//! threshold ([`sample`], read by [`walk`]: sixteen neighbours at each position on large
//! inputs, for a sixteenth of the cache misses); the pass ([`scan`]) then reads every weight
//! once, writes the provisional mask (pruned below the bracket, kept at or above it), counts
//! survivors and collects the few in-bracket candidates with their positions. The exact k-th key
//! among the candidates fixes up the mask ([`fixup`]), searched among those near it: the
//! sample's keys inside the bracket place a window around it ([`window`]). When the bracket
//! misses (heavy ties, adversarial data) or the candidates overflow their budget, the exact
//! radix select of [`crate::radix`] takes over ([`fallback`]). Extra memory: the sample and the
//! candidates, both bounded — never a sorted or concatenated copy of the weights.
//!
//! The streaming threshold runs the same steps without a mask through [`engine`], the only part
//! of this module it sees.

pub(crate) mod engine;
mod fallback;
mod fixup;
mod follow;
mod in_place;
mod kth;
mod lost;
mod pass;
mod ranks;
mod sample;
mod scan;
mod simd;
mod walk;
mod window;

use rayon::prelude::*;

use crate::chunk;
use crate::error::{check_lengths, Error, Result};
use crate::magnitude::{granularity, Key, Weights};

// The property tests check which positions the strided sample reads, and at which sizes.
#[cfg(test)]
pub(crate) use {
    sample::SAMPLES,
    walk::{sample_keys, CLUSTER, CLUSTERED_FROM},
};

/// Below this many elements a call runs on the caller's thread: handing work to rayon's pool
/// from outside it means waking a worker and blocking until it is done, which costs more than
/// streaming this much memory (far more when the machine's cores are busy), and a selection
/// makes several hand-offs. The streaming kernels (masks, rewinding) use the same bound.
pub const PARALLEL_MIN: usize = 1 << 19;

pub use follow::Follower;
pub use in_place::select_masks_in_place;
pub(crate) use simd::{level, widest, Level};
pub use simd::{scanner, SIMD_ENV};

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

/// The branch one ranking took after the fused pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Nothing in the bracket to prune: the provisional mask is exact once the candidates
    /// below the bracket's `mid` are kept again.
    Exact,
    /// The k-th key lay among the in-bracket candidates: only they were rewritten.
    FixUp,
    /// The k-th key lay outside the sampled bracket: exact radix fallback.
    BracketMiss,
    /// More in-bracket candidates than [`CANDIDATE_BYTES`] holds: exact radix fallback.
    CandidateOverflow,
}

impl Path {
    /// The branch a selection of `k` takes once the fused pass has counted `scan`.
    fn after_scan(scan: &pass::ScanTotals, k: u64) -> Path {
        if scan.overflow {
            Path::CandidateOverflow
        } else if k < scan.below || k > scan.below + scan.candidates {
            Path::BracketMiss
        } else if k == scan.below {
            Path::Exact
        } else {
            Path::FixUp
        }
    }
}

/// How many rankings took each [`Path`] (one for global scope, one per tensor for layer scope),
/// so tests can assert the branch they claim to cover.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Paths {
    pub exact: u32,
    pub fix_up: u32,
    pub bracket_miss: u32,
    pub candidate_overflow: u32,
}

impl Paths {
    pub fn of(path: Path) -> Paths {
        let mut p = Paths::default();
        match path {
            Path::Exact => p.exact = 1,
            Path::FixUp => p.fix_up = 1,
            Path::BracketMiss => p.bracket_miss = 1,
            Path::CandidateOverflow => p.candidate_overflow = 1,
        }
        p
    }

    fn add(&mut self, other: Paths) {
        self.exact += other.exact;
        self.fix_up += other.fix_up;
        self.bracket_miss += other.bracket_miss;
        self.candidate_overflow += other.candidate_overflow;
    }
}

/// Totals of one selection: alive before it, pruned by it, and the branches taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub alive: u64,
    pub pruned: u64,
    pub paths: Paths,
}

/// Candidates kept in memory before giving up on the bracket (8-16 bytes each), up to 512 M
/// weights; larger inputs get [`CANDIDATE_BYTES_PER_WEIGHT`] each. The sample grows with the
/// input (see [`sample::sample_size`]) so the expected candidates grow only as its square
/// root; the budget grows a little faster, so it does not overflow on ordinary data. bf16 sets
/// the per-weight figure: its coarse keys put up to two whole tie groups of ~0.25% of the
/// weights each in the bracket.
pub(crate) const CANDIDATE_BYTES: usize = 32 << 20;
/// Candidate budget per weight above 512 M weights (masks cost 1 byte per weight).
const CANDIDATE_BYTES_PER_WEIGHT: f64 = 1.0 / 16.0;

/// The candidate budget, in bytes, for `total` weights.
pub(crate) fn candidate_bytes(total: usize) -> usize {
    CANDIDATE_BYTES.max((total as f64 * CANDIDATE_BYTES_PER_WEIGHT) as usize)
}

/// Keys below `lo` are pruned, keys at or above `hi` kept, the rest are candidates. The fused
/// pass provisionally prunes the candidates below `mid` (the sample's estimate of the
/// threshold), so the fix-up rewrites only those between `mid` and the exact threshold: a few
/// percent of the candidates instead of all of them, each a random write into the masks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bracket<K> {
    pub lo: K,
    pub mid: K,
    pub hi: K,
}

impl<K: Key> Bracket<K> {
    /// A bracket whose candidates are all provisionally kept.
    pub(crate) fn new(lo: K, hi: K) -> Self {
        Bracket { lo, mid: lo, hi }
    }
}

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
    select(weights, alive, Some(out), amount, scope, None)
}

/// [`select_masks`], telling `follow` each piece of mask as it is settled: once per chunk after
/// the fused pass (its weights still in cache), then each element the fix-up changes (or every
/// chunk again after the exact fallback). With `out` None the masks are not kept: each chunk's
/// goes to a scratch that stays in cache, and `follow`'s outputs are the only result.
pub fn select_masks_following(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    out: Option<&mut [&mut [u8]]>,
    amount: Amount,
    scope: Scope,
    follow: &dyn Follower,
) -> Result<Selection> {
    select(weights, alive, out, amount, scope, Some(follow))
}

fn select(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    mut out: Option<&mut [&mut [u8]]>,
    amount: Amount,
    scope: Scope,
    follow: Option<&dyn Follower>,
) -> Result<Selection> {
    validate(weights, alive, out.as_deref(), amount)?;
    let wide = wide_keys(weights);
    match scope {
        Scope::Global if wide => select_global::<u64>(weights, alive, out, amount, 0, follow),
        Scope::Global => select_global::<u32>(weights, alive, out, amount, 0, follow),
        Scope::Layer => each_tensor(weights.len(), |t| {
            let w = &weights[t..t + 1];
            let a = alive.map(|a| &a[t..t + 1]);
            let o = out.as_deref_mut().map(|o| std::slice::from_mut(&mut o[t]));
            let shifted = follow.map(|inner| follow::Shifted { inner, tensor: t });
            let follow = shifted.as_ref().map(|f| f as &dyn Follower);
            if wide {
                select_global::<u64>(w, a, o, amount, t, follow)
            } else {
                select_global::<u32>(w, a, o, amount, t, follow)
            }
        }),
    }
}

/// Layer scope: each of the `tensors` selected alone by `one(t)`, its amount error located at
/// `t`, the totals summed.
pub(crate) fn each_tensor(
    tensors: usize,
    mut one: impl FnMut(usize) -> Result<Selection>,
) -> Result<Selection> {
    let mut total = Selection::default();
    for t in 0..tensors {
        let s = one(t).map_err(|e| match e {
            Error::Amount { message, .. } => Error::Amount {
                message,
                tensor: Some(t),
            },
            other => other,
        })?;
        total.alive += s.alive;
        total.pruned += s.pruned;
        total.paths.add(s.paths);
    }
    Ok(total)
}

/// Whether the selection ranks in the u64 key space: f64 keys do not fit in u32, and every
/// tensor of one ranking must share a key space for magnitudes to compare exactly.
pub fn wide_keys(weights: &[Weights<'_>]) -> bool {
    weights.iter().any(|w| matches!(w, Weights::F64(_)))
}

/// Write one byte per page of the (typically fresh) output masks before the fused pass, so the
/// first-touch page faults and the kernel's zeroing of each page happen up front, beside the
/// sampling, instead of stalling the fused pass.
fn prefault(out: &mut [&mut [u8]]) {
    const PAGE: usize = 4096;
    out.par_iter_mut()
        .for_each(|o| o.par_chunks_mut(PAGE).for_each(|page| page[0] = 0));
}

fn validate(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    out: Option<&[&mut [u8]]>,
    amount: Amount,
) -> Result<()> {
    validate_amount(weights, amount)?;
    if let Some(out) = out {
        let sizes: Vec<usize> = weights.iter().map(|w| w.len()).collect();
        check_lengths("out", &sizes, out.iter().map(|o| o.len()))?;
    }
    check_alive(weights, alive)
}

/// At least one tensor, and a fraction in [0, 1].
pub(crate) fn validate_amount(weights: &[Weights<'_>], amount: Amount) -> Result<()> {
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
    Ok(())
}

pub(crate) fn check_alive(weights: &[Weights<'_>], alive: Option<&[&[u8]]>) -> Result<()> {
    if let Some(a) = alive {
        let sizes: Vec<usize> = weights.iter().map(|w| w.len()).collect();
        check_lengths("masks", &sizes, a.iter().map(|m| m.len()))?;
    }
    Ok(())
}

/// Number of weights to prune, given the exact alive count.
pub(crate) fn resolve(amount: Amount, alive: u64) -> Result<u64> {
    match amount {
        Amount::Fraction(f) => Ok((f * alive as f64).round_ties_even() as u64),
        Amount::Count(k) if k <= alive => Ok(k),
        Amount::Count(k) => Err(Error::Amount {
            message: format!("cannot prune {k} weights: only {alive} are alive"),
            tensor: None,
        }),
    }
}

fn select_global<K: Key>(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    out: Option<&mut [&mut [u8]]>,
    amount: Amount,
    first_tensor: usize,
    follow: Option<&dyn Follower>,
) -> Result<Selection> {
    debug_assert!(
        out.is_some() || follow.is_some(),
        "a selection with no output"
    );
    let total: usize = weights.iter().map(|w| w.len()).sum();
    let parallel = total >= PARALLEL_MIN;
    let sample = |parallel| {
        sample::sample_bracket::<K>(weights, alive, amount, sample::MAX_SAMPLES, parallel)
    };
    let (sampled, out) = match out {
        Some(out) if parallel => {
            // Sampling waits on cache misses, prefaulting on the kernel zeroing pages: overlap them.
            let (sampled, ()) = rayon::join(|| sample(true), || prefault(out));
            (sampled?, Some(out))
        }
        out => (sample(parallel)?, out),
    };
    let (bracket, mut inside) = (sampled.bracket, sampled.inside);
    let mut chunks = match out {
        Some(out) => chunk::split(weights, alive, out),
        None => chunk::split_read(weights, alive),
    };
    let cap = candidate_bytes(total) / std::mem::size_of::<(K, u32)>();
    let share = sample::candidate_share(total);
    let scan = pass::fused_pass(
        &mut chunks,
        bracket,
        cap.min(total),
        share,
        parallel,
        follow,
    );

    if let Some(t) = scan.nan_tensor {
        return Err(Error::Nan {
            index: first_tensor + t,
        });
    }
    let k = resolve(amount, scan.alive)?;
    let path = Path::after_scan(&scan, k);
    match path {
        Path::Exact | Path::FixUp => {
            if path == Path::FixUp || bracket.mid > bracket.lo {
                let granularity = granularity::<K>(weights);
                fixup::fix_up(
                    &mut chunks,
                    &scan,
                    bracket,
                    &mut inside,
                    k - scan.below,
                    granularity,
                    parallel,
                    follow,
                )?
            }
        }
        Path::BracketMiss | Path::CandidateOverflow => {
            fallback::exact_rewrite::<K>(&mut chunks, k, scan.alive, follow)?;
        }
    }
    Ok(Selection {
        alive: scan.alive,
        pruned: k,
        paths: Paths::of(path),
    })
}
