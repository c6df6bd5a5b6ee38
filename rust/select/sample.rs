//! Bracketing the threshold from a strided sample of the alive magnitudes.

use rayon::prelude::*;

use super::{resolve, Amount, Bracket};
use crate::error::Result;
use crate::magnitude::{Key, KeyVisitor, Weights};

/// Positions sampled to bracket the threshold at 100 M weights: ~2^18 puts the bracket within
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

/// Bracket the k-th smallest alive key from a strided sample. Small inputs are sampled whole,
/// which makes the bracket exact (only ties at the threshold become candidates).
pub(crate) fn estimate_bracket<K: Key>(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    amount: Amount,
    max_probes: usize,
    parallel: bool,
) -> Result<Bracket<K>> {
    let everything = Bracket::new(K::ZERO, K::MAX);
    match amount {
        Amount::Fraction(0.0) | Amount::Count(0) => return Ok(Bracket::new(K::ZERO, K::ZERO)),
        Amount::Fraction(f) if f >= 1.0 => return Ok(Bracket::new(K::MAX, K::MAX)),
        _ => {}
    }
    let total: usize = weights.iter().map(|w| w.len()).sum();
    let probes = sample_size(total, max_probes);
    let mut sample = sample_keys::<K>(weights, alive, probes, parallel);
    let m = sample.len();
    if m == 0 {
        return Ok(everything);
    }
    if probes == total {
        // Whole input sampled: `sample` holds every alive key, so the bracket is exact. An
        // invalid amount is reported after the full pass, so NaN errors win at every size.
        let Ok(k) = resolve(amount, m as u64) else {
            return Ok(everything);
        };
        if k == 0 {
            return Ok(Bracket::new(K::ZERO, K::ZERO));
        }
        let (_, &mut t, _) = sample.select_nth_unstable(k as usize - 1);
        return Ok(Bracket::new(t, K::from_u64(t.to_u64() + 1)));
    }
    let q = match amount {
        Amount::Fraction(f) => f,
        Amount::Count(k) => (k as f64 / (total as f64 * m as f64 / probes as f64)).min(1.0),
    };
    let spread = BRACKET_SIGMAS * (m as f64 * q * (1.0 - q)).sqrt() + 2.0;
    Ok(bracket_around(&mut sample, q * m as f64, spread))
}

/// The sample keys at ranks `centre - spread` and `centre + spread` as a bracket (`hi` one past
/// its key; an end beyond the sample is open), and the key at rank `centre` as its `mid`.
pub(crate) fn bracket_around<K: Key>(sample: &mut [K], centre: f64, spread: f64) -> Bracket<K> {
    let m = sample.len();
    let lo_rank = (centre - spread).floor();
    let hi_rank = (centre + spread).ceil();
    // `mid` lies above `lo` and `hi` at or above `mid`, each a rank of the sorted sample.
    let first_above = if lo_rank <= 0.0 {
        0
    } else {
        lo_rank as usize + 1
    };
    let mid_rank = (centre.max(0.0) as usize).clamp(first_above, m - 1);
    let top_rank = if hi_rank >= m as f64 {
        mid_rank
    } else {
        (hi_rank as usize).max(mid_rank)
    };
    let [lo, mid, top] = ranked(sample, [first_above.saturating_sub(1), mid_rank, top_rank]);
    Bracket {
        lo: if lo_rank <= 0.0 { K::ZERO } else { lo },
        mid,
        hi: if hi_rank >= m as f64 {
            K::MAX
        } else {
            K::from_u64(top.to_u64() + 1)
        },
    }
}

/// The keys at three ascending ranks of the sorted `sample`, by selects of which the later run
/// on the smaller side of the first: the ranks lie close together, so selecting first the
/// outer one nearer an end leaves a small part for the others (about 1.2 sample lengths of
/// work instead of 2.6 at a 20% amount).
fn ranked<K: Key>(sample: &mut [K], [a, b, c]: [usize; 3]) -> [K; 3] {
    debug_assert!(a <= b && b <= c && c < sample.len());
    let (at_a, between, at_c) = if c < sample.len() - a {
        let (below, &mut at_c, _) = sample.select_nth_unstable(c);
        if a == c {
            (at_c, &mut [][..], at_c)
        } else {
            let (_, &mut at_a, between) = below.select_nth_unstable(a);
            (at_a, between, at_c)
        }
    } else {
        let (_, &mut at_a, above) = sample.select_nth_unstable(a);
        if a == c {
            (at_a, &mut [][..], at_a)
        } else {
            let (between, &mut at_c, _) = above.select_nth_unstable(c - a - 1);
            (at_a, between, at_c)
        }
    };
    // `between` holds ranks a + 1 .. c.
    let at_b = if b == a {
        at_a
    } else if b == c {
        at_c
    } else {
        *between.select_nth_unstable(b - a - 1).1
    };
    [at_a, at_b, at_c]
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

/// Keys of the alive weights at `probes` evenly spaced positions of the concatenated input.
/// The near-constant stride lets the hardware prefetcher overlap the cache misses. Each thread
/// walks a contiguous run of probes, stepping position and tensor incrementally (a division
/// and a binary search per probe cost as much as the miss itself).
pub(crate) fn sample_keys<K: Key>(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    probes: usize,
    parallel: bool,
) -> Vec<K> {
    const RUN: usize = 1 << 13;
    if probes == 0 {
        return Vec::new(); // only empty tensors
    }
    let mut ends = Vec::with_capacity(weights.len());
    let mut total = 0usize;
    for w in weights {
        total += w.len();
        ends.push(total);
    }
    let (stride, step) = (total / probes, total % probes); // pos advances by total / probes
    let run_keys = |run: usize| {
        let first = run * RUN;
        // u64 is exact here: probes <= 2^23 and no in-memory model reaches 2^40 weights.
        let numerator = first as u64 * total as u64 + total as u64 / 2;
        let walk = Walk {
            pos: (numerator / probes as u64) as usize,
            rem: (numerator % probes as u64) as usize,
            left: RUN.min(probes - first),
            stride,
            step,
            probes,
            keys: Vec::with_capacity(RUN),
        };
        walk.keys_in(weights, alive, &ends)
    };
    let runs: Vec<Vec<K>> = if parallel {
        (0..probes.div_ceil(RUN))
            .into_par_iter()
            .map(run_keys)
            .collect()
    } else {
        (0..probes.div_ceil(RUN)).map(run_keys).collect()
    };
    runs.concat()
}

/// A walk through evenly spaced positions of the concatenated input (`stride + step / probes`
/// apart): the next position, the fractional stride's remainder, the positions still to visit
/// and the keys of the alive weights visited so far.
pub(crate) struct Walk<K> {
    pos: usize,
    rem: usize,
    left: usize,
    stride: usize,
    step: usize,
    probes: usize,
    keys: Vec<K>,
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
            keys: Vec::with_capacity(len),
        }
    }

    /// The keys of the alive weights the walk visits; `ends[t]` is where tensor `t` ends in the
    /// concatenated input. One dtype dispatch per tensor the walk crosses, not one per position.
    pub(crate) fn keys_in(
        mut self,
        weights: &[Weights<'_>],
        alive: Option<&[&[u8]]>,
        ends: &[usize],
    ) -> Vec<K> {
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
        self.keys
    }
}

/// Probes the walk asks the memory for ahead of the one it reads. The probes are evenly spaced
/// but their spacing varies by one element, so the hardware prefetcher does not follow them: in
/// IMP the call comes after training has evicted the weights, and a cold walk then waits on each
/// probe in turn (at LeNet size it cost more than the fused pass).
const PREFETCH_PROBES: usize = 4;

/// Ask for the cache line at `p` without waiting for it (a hint: it never faults, so `p` may
/// lie past the tensor's end).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that reads nothing architecturally, valid for any address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

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
        let end = start + bits.len();
        let ahead = PREFETCH_PROBES * walk.stride;
        while walk.left > 0 && walk.pos < end {
            let i = walk.pos - start;
            prefetch(bits.as_ptr().wrapping_add(i + ahead));
            if alive.is_none_or(|a| a[i] != 0) {
                walk.keys.push(key(bits[i]));
            }
            walk.pos += walk.stride;
            walk.rem += walk.step;
            if walk.rem >= walk.probes {
                walk.pos += 1;
                walk.rem -= walk.probes;
            }
            walk.left -= 1;
        }
        walk
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::scan::candidate_room;
    use super::*;

    /// What `bracket_around` promises, read off a sorted copy of the sample.
    fn sorted_bracket(sample: &[u32], centre: f64, spread: f64) -> (u32, u32, u32) {
        let mut sorted = sample.to_vec();
        sorted.sort_unstable();
        let m = sorted.len();
        let lo_rank = (centre - spread).floor();
        let hi_rank = (centre + spread).ceil();
        let lo = if lo_rank <= 0.0 {
            0
        } else {
            sorted[lo_rank as usize]
        };
        let first_above = if lo_rank <= 0.0 {
            0
        } else {
            lo_rank as usize + 1
        };
        let mid_rank = (centre.max(0.0) as usize).clamp(first_above, m - 1);
        let hi = if hi_rank >= m as f64 {
            u32::MAX
        } else {
            sorted[(hi_rank as usize).max(mid_rank)] + 1
        };
        (lo, sorted[mid_rank], hi)
    }

    /// The room a chunk's candidates start with ([`candidate_room`]) covers what the sampled
    /// bracket collects: f32 weights spread over many scales, at a 50% amount (the widest
    /// bracket) and a 20% one.
    #[test]
    fn candidate_share_covers_the_bracket() {
        assert_eq!(
            candidate_share(MIN_SAMPLES),
            0.0,
            "sampled whole: exact bracket"
        );
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for total in [MIN_SAMPLES + 1, 1 << 18, 3 << 20] {
            let bits: Vec<u32> = (0..total)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let x = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                    (x * 2f32.powi((state % 16) as i32 - 8)).to_bits()
                })
                .collect();
            let share = candidate_share(total);
            assert!(share > 0.0 && share < 0.2, "{total}: {share}");
            for amount in [0.5, 0.2] {
                let weights = [Weights::F32(&bits)];
                let b = estimate_bracket::<u32>(
                    &weights,
                    None,
                    Amount::Fraction(amount),
                    MAX_SAMPLES,
                    false,
                )
                .unwrap();
                let inside = bits
                    .iter()
                    .filter(|&&w| (b.lo..b.hi).contains(&(w & 0x7fff_ffff)))
                    .count();
                let room = candidate_room::<u32>(total, share, true).capacity();
                assert!(
                    inside <= room,
                    "{total} at {amount}: {inside} candidates, room for {room}"
                );
            }
        }
        assert!(candidate_share(1 << 30) < candidate_share(1 << 20));
    }

    proptest! {
        #[test]
        fn bracket_is_read_at_the_sorted_ranks(
            sample in prop::collection::vec(0u32..64, 1..400),
            q in 0.0f64..=1.0,
            sigmas in 0.0f64..40.0,
        ) {
            let m = sample.len() as f64;
            let spread = sigmas + 2.0;
            prop_assume!(q * m - spread < m - 1.0); // the callers' spread keeps lo inside
            let mut work = sample.clone();
            let b = bracket_around(&mut work, q * m, spread);
            prop_assert_eq!((b.lo, b.mid, b.hi), sorted_bracket(&sample, q * m, spread));
            let (mut a, mut w) = (sample.clone(), work);
            a.sort_unstable();
            w.sort_unstable();
            prop_assert_eq!(a, w, "the sample is only permuted");
        }
    }
}
