//! Bracketing a streamed selection's threshold from whole runs of contiguous weights.
//!
//! The in-memory selection samples single weights at a fixed stride
//! ([`engine::estimate_bracket`]). Over a memory-mapped checkpoint that is not in the page
//! cache, a stride of a few KiB touches every page, so the sample alone would read the whole
//! file from disk once more before the threshold pass. Runs of [`RUN`] contiguous weights touch
//! a few pages each instead, at the price of correlation inside a run (a row of larger
//! weights): the bracket's width comes from the spread between runs (a cluster sample's
//! variance, as for the in-memory sample's groups of neighbours), never narrower than for
//! independent probes, so correlated layouts widen it rather than make it miss.

use rayon::prelude::*;

use crate::error::Result;
use crate::magnitude::{Key, Weights};
use crate::select::engine::{self, Walk, BRACKET_SIGMAS};
use crate::select::{Amount, Bracket};

/// Weights per sampled run: 2 to 8 KiB, a page or two of any dtype.
pub(crate) const RUN: usize = 1024;
/// Fewest runs worth sampling as runs; smaller inputs take the strided sample.
const MIN_RUNS: usize = 64;

/// The bracket of the `amount`-th smallest alive key, from runs of contiguous weights.
pub(crate) fn estimate_bracket<K: Key>(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    amount: Amount,
    max_probes: usize,
) -> Result<Bracket<K>> {
    let total: usize = weights.iter().map(|w| w.len()).sum();
    let runs = engine::sample_size(total, max_probes) / RUN;
    let trivial = matches!(amount, Amount::Fraction(0.0) | Amount::Count(0))
        || matches!(amount, Amount::Fraction(f) if f >= 1.0);
    // Runs far apart (a sample of 1% of the weights or less, whatever the size) never overlap.
    if runs < MIN_RUNS || trivial || total < 4 * runs * RUN {
        return engine::estimate_bracket(weights, alive, amount, max_probes, true);
    }
    let per_run = sample_runs::<K>(weights, alive, total, runs);
    let keys: Vec<K> = per_run.concat();
    let m = keys.len();
    if m == 0 {
        return Ok(Bracket::new(K::ZERO, K::MAX));
    }
    let q = match amount {
        Amount::Fraction(f) => f,
        Amount::Count(k) => {
            let probes = (runs * RUN) as f64;
            (k as f64 / (total as f64 * m as f64 / probes)).min(1.0)
        }
    };
    let mut sorted = keys;
    let centre = ((q * m as f64) as usize).min(m - 1);
    let (_, &mut estimate, _) = sorted.select_nth_unstable(centre);
    let spread = BRACKET_SIGMAS * standard_error(&per_run, estimate, q, m) * m as f64 + 2.0;
    Ok(engine::bracket_around(&mut sorted, q * m as f64, spread))
}

/// Standard error of the sampled fraction below `estimate`, whole runs drawn
/// ([`engine::clustered_standard_error`]).
fn standard_error<K: Key>(per_run: &[Vec<K>], estimate: K, q: f64, m: usize) -> f64 {
    let groups = per_run
        .iter()
        .map(|r| (r.iter().filter(|&&k| k < estimate).count(), r.len()));
    engine::clustered_standard_error(groups, m, q)
}

/// Alive keys of `runs` runs of [`RUN`] contiguous weights spread over the concatenated input
/// (a run may span two tensors), one vector per run.
fn sample_runs<K: Key>(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    total: usize,
    runs: usize,
) -> Vec<Vec<K>> {
    let mut ends = Vec::with_capacity(weights.len());
    let mut end = 0usize;
    for w in weights {
        end += w.len();
        ends.push(end);
    }
    (0..runs)
        .into_par_iter()
        .map(|r| Walk::contiguous(run_start(r, total, runs), RUN).keys_in(weights, alive, &ends))
        .collect()
}

/// Where run `r` of `runs` starts: one run per stride of the input, at a pseudo-random offset
/// within its stride, so that a periodic layout (rows as long as the stride) cannot place every
/// run on the same columns. Runs never overlap and end inside the input.
pub(crate) fn run_start(r: usize, total: usize, runs: usize) -> usize {
    let stride = (total - RUN) / runs; // runs * RUN <= total - 1: a stride holds a run
    let mut z = (r as u64).wrapping_add(0x9e37_79b9_7f4a_7c15); // splitmix64
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    r * stride + (z % (stride - RUN + 1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::BitsMut;
    use crate::select::{select_masks, Path, Scope};
    use crate::threshold::{select_threshold, write_pruned};

    /// Rows of 4096 weights, each row's scale drawn from 1..=64: runs inside one row are far
    /// more alike than independent probes.
    fn row_scaled(rows: usize) -> Vec<u32> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut w = Vec::with_capacity(rows * 4096);
        for _ in 0..rows {
            let scale = 1.0 + (next() % 64) as f32;
            for _ in 0..4096 {
                let u = (next() >> 40) as f32 / (1u64 << 24) as f32;
                let sign = if next() & 1 == 0 { 1.0 } else { -1.0 };
                w.push((sign * scale * (u - 0.5)).to_bits());
            }
        }
        w
    }

    #[test]
    fn runs_touch_few_pages_and_never_overlap() {
        let total = 1usize << 30; // 1 G bf16 weights: 2 GiB, 2^19 pages of 4 KiB
        let runs = engine::sample_size(total, super::super::MAX_PROBES) / RUN;
        let mut last_end = 0;
        let mut pages = std::collections::BTreeSet::new();
        for r in 0..runs {
            let first = run_start(r, total, runs);
            assert!(first >= last_end && first + RUN <= total);
            last_end = first + RUN;
            pages.extend((first * 2 / 4096)..=((first + RUN - 1) * 2 / 4096));
        }
        assert!(
            pages.len() <= 2 * runs && pages.len() * 100 < (total * 2 / 4096),
            "{}",
            pages.len()
        );
    }

    #[test]
    fn correlated_runs_widen_the_bracket_and_the_threshold_stays_exact() {
        let w = row_scaled(4096); // 16 M weights: sampled as runs
        let weights = [Weights::F32(&w)];
        let total = w.len();
        assert!(engine::sample_size(total, super::super::MAX_PROBES) / RUN >= MIN_RUNS);
        let per_run = sample_runs::<u32>(&weights, None, total, 128);
        let m = per_run.iter().map(Vec::len).sum();
        let mut keys: Vec<u32> = per_run.concat();
        let estimate = *keys.select_nth_unstable(m / 2).1;
        let independent = (0.25 / m as f64).sqrt();
        assert!(standard_error(&per_run, estimate, 0.5, m) > 4.0 * independent);
        for amount in [
            Amount::Fraction(0.5),
            Amount::Fraction(0.9),
            Amount::Count(12_345),
        ] {
            let th = select_threshold(&weights, None, amount).unwrap();
            assert!(
                matches!(th.path, Path::Exact | Path::FixUp),
                "{:?}",
                th.path
            );
            let mut masks = vec![0u8; total];
            select_masks(&weights, None, &mut [&mut masks[..]], amount, Scope::Global).unwrap();
            let mut out = vec![0u32; total];
            let used = write_pruned(
                weights[0],
                None,
                BitsMut::U32(&mut out),
                th.key,
                32,
                th.ties,
            );
            assert_eq!(used.unwrap(), th.ties);
            let written: Vec<u8> = out.iter().zip(&w).map(|(&o, &x)| (o == x) as u8).collect();
            assert!(written == masks, "{amount:?}");
        }
    }
}
