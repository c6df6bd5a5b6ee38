//! The sampled bracket: its candidates fit the room a chunk starts with, its standard error follows
//! how alike neighbours are, and alike neighbours do not make it miss.

use super::*;
use crate::select::pass::candidate_room;
use crate::select::walk::{sample_keys, CLUSTERED_FROM};

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
            let room = candidate_room(total, share);
            assert!(
                inside <= room,
                "{total} at {amount}: {inside} candidates, room for {room}"
            );
        }
    }
    assert!(candidate_share(1 << 30) < candidate_share(1 << 20));
}

/// f32 bits of magnitudes `scale(i) * u`, u uniform in (0, 1), drawn once for each aligned
/// group of `group` neighbours.
fn grouped(n: usize, group: usize, scale: impl Fn(usize) -> f32, seed: u64) -> Vec<u32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut u = 0.0;
    (0..n)
        .map(|i| {
            if i % group == 0 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                u = ((state >> 40) as f32 + 0.5) / (1u64 << 24) as f32;
            }
            (scale(i) * u).to_bits()
        })
        .collect()
}

/// The standard error against that of as many independent probes, at the sample's `q`
/// quantile.
fn error_ratio(w: &[u32], q: f64) -> f64 {
    let weights = [Weights::F32(w)];
    let sample = sample_keys::<u32>(&weights, None, sample_size(w.len(), MAX_SAMPLES), false);
    let m = sample.keys.len();
    standard_error(&sample, q) / (q * (1.0 - q) / m as f64).sqrt()
}

/// Independent neighbours count as independent probes; four equal neighbours as one probe
/// (twice the error); a step in scale between two layers, which the evenly spaced positions
/// sample in proportion, adds no spread (the plain spread between positions would add half
/// again here).
#[test]
fn the_standard_error_follows_how_alike_neighbours_are() {
    let n = CLUSTERED_FROM;
    let flat = |_: usize| 1.0f32;
    let step = |i: usize| if i < n / 2 { 1.0f32 } else { 100.0 };
    type Scale<'a> = &'a dyn Fn(usize) -> f32;
    let cases: [(usize, Scale<'_>, (f64, f64)); 3] = [
        (1, &flat, (1.0, 1.1)),
        (4, &flat, (1.8, 2.2)),
        (1, &step, (1.0, 1.1)),
    ];
    for (group, scale, (lo, hi)) in cases {
        for q in [0.3, 0.5] {
            let ratio = error_ratio(&grouped(n, group, scale, 3), q);
            assert!((lo..hi).contains(&ratio), "group {group} q {q}: {ratio}");
        }
    }
}

/// The groups' counts below the estimate, read CLUSTER lanes at a time with the last groups
/// from a padded copy, are each group's own count: short groups (dead neighbours), a short
/// last group, and keys equal to the estimate.
#[test]
fn standard_error_counts_each_group_alone() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    for groups in [2usize, 3, 40, 1000] {
        let sizes: Vec<u8> = (0..groups)
            .map(|_| next(CLUSTER as u64 + 1) as u8)
            .collect();
        let m: usize = sizes.iter().map(|&s| s as usize).sum();
        if m == 0 {
            continue;
        }
        let keys: Vec<u32> = (0..m).map(|_| next(50) as u32).collect();
        for q in [0.0, 0.2, 0.5, 1.0] {
            let sample = Sample {
                keys: keys.clone(),
                sizes: sizes.clone(),
                read: m,
            };
            let estimate = pilot_quantile(&keys, q);
            let mut at = 0;
            let reference = sizes.iter().map(|&size| {
                let group = &keys[at..at + size as usize];
                at += size as usize;
                (
                    group.iter().filter(|&&k| k < estimate).count(),
                    size as usize,
                )
            });
            let expected = clustered_standard_error(reference, m, q);
            let got = standard_error(&sample, q);
            assert!(
                got == expected || (got.is_nan() && expected.is_nan()),
                "groups {groups} q {q}: {got} against {expected}"
            );
        }
    }
}

/// Equal neighbours widen the bracket enough that it still holds the exact k-th key.
#[test]
fn alike_neighbours_do_not_make_the_bracket_miss() {
    let n = CLUSTERED_FROM;
    for seed in 0..4 {
        let w = grouped(n, 4, |_| 1.0, seed);
        let mut sorted = w.clone();
        sorted.sort_unstable();
        for amount in [0.05, 0.5, 0.9] {
            let weights = [Weights::F32(&w)];
            let b = estimate_bracket::<u32>(
                &weights,
                None,
                Amount::Fraction(amount),
                MAX_SAMPLES,
                seed % 2 == 0,
            )
            .unwrap();
            let k = resolve(Amount::Fraction(amount), n as u64).unwrap() as usize;
            let kth = sorted[k - 1];
            assert!(b.lo <= kth && kth < b.hi, "seed {seed} amount {amount}");
        }
    }
}
