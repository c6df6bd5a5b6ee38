//! Bracketing the threshold from a strided sample of the alive magnitudes.

use super::ranks::bracket_and_inside;
use super::walk::{sample_keys, Sample, CLUSTER};
use super::{resolve, Amount, Bracket};
use crate::error::Result;
use crate::magnitude::{Key, Weights};

/// Keys sampled to bracket the threshold at 100 M weights: ~2^18 puts the bracket within
/// ~0.1% of the alive weights around the target rank.
pub(crate) const SAMPLES: usize = 1 << 18;
/// Inputs of at most this many weights are sampled whole (an exact bracket). Sampling a
/// LeNet-sized model whole cost more than its fused pass.
const MIN_SAMPLES: usize = 1 << 14;
/// Fewest probes of a larger input. Below ~0.5 M weights the total^(2/3) law asks for fewer;
/// the old floor of 16 K probes made a LeNet-sized selection spend about a third of its time
/// sampling and selecting probes.
const MIN_PROBES: usize = 1 << 13;
/// Most probes of a selection (32 MiB of u32 keys, reached at ~3 G weights).
pub(crate) const MAX_SAMPLES: usize = 1 << 23;
/// Half-width of the bracket in standard deviations of the sampled quantile: a miss (and the
/// slower exact fallback) then happens with probability below 1e-6.
pub(crate) const BRACKET_SIGMAS: f64 = 5.0;

/// A sampled bracket, and the sample's keys inside it (in no order): a sample of the fused
/// pass's candidates, which narrows the fix-up's search ([`super::window`]). Empty where the
/// bracket is exact or open at an end.
pub(crate) struct Sampled<K> {
    pub bracket: Bracket<K>,
    pub inside: Vec<K>,
}

/// Bracket the k-th smallest alive key from a strided sample. Small inputs are sampled whole,
/// which makes the bracket exact (only ties at the threshold become candidates).
pub(crate) fn estimate_bracket<K: Key>(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    amount: Amount,
    max_probes: usize,
    parallel: bool,
) -> Result<Bracket<K>> {
    sample_bracket(weights, alive, amount, max_probes, parallel).map(|s| s.bracket)
}

/// [`estimate_bracket`], with the sample's keys inside the bracket.
pub(crate) fn sample_bracket<K: Key>(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    amount: Amount,
    max_probes: usize,
    parallel: bool,
) -> Result<Sampled<K>> {
    let only = |bracket| {
        Ok(Sampled {
            bracket,
            inside: Vec::new(),
        })
    };
    let everything = Bracket::new(K::ZERO, K::MAX);
    match amount {
        Amount::Fraction(0.0) | Amount::Count(0) => return only(Bracket::new(K::ZERO, K::ZERO)),
        Amount::Fraction(f) if f >= 1.0 => return only(Bracket::new(K::MAX, K::MAX)),
        _ => {}
    }
    let total: usize = weights.iter().map(|w| w.len()).sum();
    let probes = sample_size(total, max_probes);
    let sample = sample_keys::<K>(weights, alive, probes, parallel);
    let m = sample.keys.len();
    if m == 0 {
        return only(everything);
    }
    if probes == total {
        // Whole input sampled: every alive key, so the bracket is exact. An invalid amount is
        // reported after the full pass, so NaN errors win at every size.
        let mut keys = sample.keys;
        let Ok(k) = resolve(amount, m as u64) else {
            return only(everything);
        };
        if k == 0 {
            return only(Bracket::new(K::ZERO, K::ZERO));
        }
        let (_, &mut t, _) = keys.select_nth_unstable(k as usize - 1);
        return only(Bracket::new(t, K::from_u64(t.to_u64() + 1)));
    }
    let q = match amount {
        Amount::Fraction(f) => f,
        Amount::Count(k) => (k as f64 / (total as f64 * m as f64 / sample.read as f64)).min(1.0),
    };
    let spread = BRACKET_SIGMAS * standard_error(&sample, q) * m as f64 + 2.0;
    let mut keys = sample.keys;
    let (bracket, inside) = bracket_and_inside(&mut keys, q * m as f64, spread);
    // The keys inside, moved to the front of the sample's own buffer, which then shrinks to
    // them: the rest of the sample is not held through the fused pass.
    keys.truncate(inside.end);
    keys.drain(..inside.start);
    keys.shrink_to_fit();
    Ok(Sampled {
        bracket,
        inside: keys,
    })
}

/// Every [`PILOT_STEP`]-th sampled key: enough to place the quantile at which the spread
/// between positions is measured (the spread hardly changes with it), at a fraction of a select
/// over the whole sample, which is left in walk order for the spread.
const PILOT_STEP: usize = 8;

/// The `q` quantile of every [`PILOT_STEP`]-th key of `keys` (not empty).
fn pilot_quantile<K: Key>(keys: &[K], q: f64) -> K {
    let mut pilot: Vec<K> = keys.iter().step_by(PILOT_STEP).copied().collect();
    let rank = ((q * pilot.len() as f64) as usize).min(pilot.len() - 1);
    *pilot.select_nth_unstable(rank).1
}

/// Standard error of the sampled fraction of keys below the `q` quantile, the walk's positions
/// taken as groups of neighbours ([`clustered_standard_error`]).
fn standard_error<K: Key>(sample: &Sample<K>, q: f64) -> f64 {
    let m = sample.keys.len();
    if sample.sizes.len() < 2 {
        return (q * (1.0 - q) / m as f64).sqrt(); // one probe a position
    }
    let estimate = pilot_quantile(&sample.keys, q);
    let keys = sample.keys.as_slice();
    // The last groups' lanes may run past the keys: those read a copy padded with the estimate
    // (not below it), so every group reads a whole array of CLUSTER keys.
    let tail_start = keys.len().saturating_sub(CLUSTER);
    let mut tail = keys[tail_start..].to_vec();
    tail.resize(tail.len() + CLUSTER, estimate);
    let mut at = 0;
    // Each group's count over all CLUSTER lanes, those past its size masked off: a loop of the
    // group's own length (alive neighbours vary in place) mispredicted on most groups, and a
    // fixed-length one over an array compiles to a few vector compares.
    let groups = sample.sizes.iter().map(|&size| {
        let size = size as usize;
        let lanes: &[K; CLUSTER] = if at + CLUSTER <= keys.len() {
            keys[at..at + CLUSTER].try_into().expect("CLUSTER keys")
        } else {
            tail[at - tail_start..at - tail_start + CLUSTER]
                .try_into()
                .expect("CLUSTER keys")
        };
        let below = below_in_lanes(lanes, estimate, size);
        at += size;
        (below, size)
    });
    clustered_standard_error(groups, m, q)
}

/// How many of the first `size` of `lanes` lie below `estimate`.
#[inline(always)]
fn below_in_lanes<K: Key>(lanes: &[K; CLUSTER], estimate: K, size: usize) -> usize {
    let mut below = 0u32;
    for (lane, &key) in lanes.iter().enumerate() {
        below += ((key < estimate) & (lane < size)) as u32;
    }
    below as usize
}

/// Standard error of a sampled fraction `q` of `m` keys drawn in groups of neighbours (a walk's
/// positions, a stream's runs), whose keys can be alike (a row of larger weights): `groups`
/// gives, in input order, each group's keys below the estimate and its size. Each group's count
/// less its share is differenced with the next group's, so that the slow changes from layer
/// to layer, which evenly spread groups sample in proportion, do not count as spread. At least
/// that of `m` independent probes.
pub(crate) fn clustered_standard_error(
    groups: impl Iterator<Item = (usize, usize)>,
    m: usize,
    q: f64,
) -> f64 {
    let independent = (q * (1.0 - q) / m as f64).sqrt();
    // With b and s a group's count below and size, and f = sum(b) / m, the residual b - f s of
    // consecutive groups differs by db - f ds: its squares summed from three sums, exact in
    // integers.
    let (mut n, mut below, mut db2, mut dbds, mut ds2) = (0u64, 0i64, 0i64, 0i64, 0i64);
    let (mut previous_b, mut previous_s) = (0i64, 0i64);
    for (b, s) in groups {
        let (b, s) = (b as i64, s as i64);
        if n > 0 {
            let (db, ds) = (b - previous_b, s - previous_s);
            db2 += db * db;
            dbds += db * ds;
            ds2 += ds * ds;
        }
        n += 1;
        below += b;
        (previous_b, previous_s) = (b, s);
    }
    if n < 2 || m == 0 {
        return independent;
    }
    let f = below as f64 / m as f64;
    let squares = (db2 as f64 - 2.0 * f * dbds as f64 + f * f * ds2 as f64).max(0.0);
    let per_group = squares / (2.0 * (n - 1) as f64);
    let clustered = (per_group * n as f64).sqrt() / m as f64;
    clustered.max(independent)
}

/// The most candidates, as a share of `total` weights, that [`estimate_bracket`]'s bracket is
/// expected to hold: its ±[`BRACKET_SIGMAS`] standard deviations at the widest (a 50% amount;
/// fewer alive weights only narrow it). Coarse keys (bf16) can add a tie group. 0 where the
/// input is sampled whole: the bracket is exact, only ties at the threshold are candidates.
pub(crate) fn candidate_share(total: usize) -> f64 {
    let probes = sample_size(total, MAX_SAMPLES);
    if probes >= total {
        return 0.0;
    }
    let m = probes as f64;
    (2.0 * (BRACKET_SIGMAS * 0.5 * m.sqrt() + 2.0) / m).min(1.0)
}

/// Probes for `total` weights: all of them up to [`MIN_SAMPLES`]; above, at least
/// [`MIN_PROBES`] and otherwise SAMPLES at 100 M scaled as total^(2/3) below 100 M, which
/// balances the sampling cost (one miss per probe) against the candidate cost (∝ total /
/// √probes), so small models do not pay a large model's fixed cost; in proportion to the total
/// above 100 M, so the candidates (∝ √total there) stay within their budget at any size instead
/// of overflowing into the exact fallback (a cliff in time per weight). The count is nudged
/// until it does not divide `total`: a fractional stride drifts in phase, so a periodic weight
/// layout (rows, channels) cannot pin every probe to the same column. At most `max_probes`.
pub(crate) fn sample_size(total: usize, max_probes: usize) -> usize {
    if total <= MIN_SAMPLES {
        return total;
    }
    let ratio = total as f64 / 1e8;
    let scaled = SAMPLES as f64
        * if ratio < 1.0 {
            ratio.powf(2.0 / 3.0)
        } else {
            ratio
        };
    let mut probes = (scaled as usize)
        .clamp(MIN_PROBES, max_probes.max(MIN_PROBES))
        .min(total - 1);
    while total.is_multiple_of(probes) {
        probes -= 1;
    }
    probes
}

#[cfg(test)]
mod tests;
