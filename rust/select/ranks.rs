//! A bracket read off a sample at ranks, by selects rather than a sort.

use super::Bracket;
use crate::magnitude::Key;

/// The sample keys at ranks `centre - spread` and `centre + spread` as a bracket (`hi` one past
/// its key; an end beyond the sample is open), and the key at rank `centre` as its `mid`.
pub(crate) fn bracket_around<K: Key>(sample: &mut [K], centre: f64, spread: f64) -> Bracket<K> {
    bracket_and_inside(sample, centre, spread).0
}

/// [`bracket_around`], and where its selects left the sample's keys inside the bracket (the
/// ranks from `lo`'s to the top one, in no order); empty where an end of the bracket is open.
pub(crate) fn bracket_and_inside<K: Key>(
    sample: &mut [K],
    centre: f64,
    spread: f64,
) -> (Bracket<K>, std::ops::Range<usize>) {
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
    let lowest = first_above.saturating_sub(1);
    let [lo, mid, top] = ranked(sample, [lowest, mid_rank, top_rank]);
    let (open_below, open_above) = (lo_rank <= 0.0, hi_rank >= m as f64);
    let bracket = Bracket {
        lo: if open_below { K::ZERO } else { lo },
        mid,
        hi: if open_above {
            K::MAX
        } else {
            K::from_u64(top.to_u64() + 1)
        },
    };
    let inside = if open_below || open_above {
        0..0
    } else {
        lowest..top_rank + 1
    };
    (bracket, inside)
}

/// The keys at three ascending ranks of the sorted `sample` (each left at its rank, the keys
/// ranked between them between), by selects of which the later run on the smaller side of the
/// first: the ranks lie close together, so selecting first the outer one nearer an end leaves a
/// small part for the others (about 1.2 sample lengths of work instead of 2.6 at a 20% amount).
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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
            let (b, inside) = bracket_and_inside(&mut work, q * m, spread);
            prop_assert_eq!((b.lo, b.mid, b.hi), sorted_bracket(&sample, q * m, spread));
            let open_below = (q * m - spread).floor() <= 0.0;
            let open_above = (q * m + spread).ceil() >= m;
            if open_below || open_above {
                prop_assert!(inside.is_empty());
            } else {
                // The keys left inside are those of the sorted ranks from lo's to the top one.
                let mut sorted = sample.clone();
                sorted.sort_unstable();
                let mut got = work[inside.clone()].to_vec();
                got.sort_unstable();
                prop_assert_eq!(got.first().copied(), Some(b.lo));
                prop_assert_eq!(got.last().map(|&k| k + 1), Some(b.hi));
                prop_assert_eq!(&got[..], &sorted[inside.clone()]);
            }
            let (mut a, mut w) = (sample.clone(), work);
            a.sort_unstable();
            w.sort_unstable();
            prop_assert_eq!(a, w, "the sample is only permuted");
        }
    }
}
