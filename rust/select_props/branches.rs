//! Deterministic cases for the branches random data rarely reaches; each asserts the branch.

use super::generators::Rng;
use super::reference::{check_unit, kernel};
use crate::error::Error;
use crate::magnitude::Weights;
use crate::select::engine::sample_size;
use crate::select::{sample_keys, select_masks, Amount, Path, Paths, Scope, CLUSTER, SAMPLES};

/// Run the kernel, check it against the reference and assert the branch it took.
fn assert_path(weights: &[Weights<'_>], amount: Amount, path: Path) -> Vec<Vec<u8>> {
    let (masks, s) = kernel(weights, None, amount, Scope::Global).unwrap();
    assert_eq!(s.paths, Paths::of(path), "{amount:?}");
    check_unit(weights, None, amount, Scope::Global);
    masks
}

/// Which positions of a `total`-element input the sampler reads: it is run on a tensor whose
/// magnitudes encode their own index.
pub(crate) fn sampled_positions(total: usize) -> Vec<bool> {
    let index: Vec<u64> = (0..total).map(|i| (i as f64).to_bits()).collect();
    let probes = sample_size(total, SAMPLES);
    let sample = sample_keys::<u64>(&[Weights::F64(&index)], None, probes, true);
    assert_eq!(sample.keys.len(), sample.read);
    assert!(sample.read > probes - 2 * CLUSTER && sample.read <= probes);
    let mut hit = vec![false; total];
    for k in sample.keys {
        hit[f64::from_bits(k) as usize] = true;
    }
    hit
}

/// 400k equal magnitudes (mixed signs): the sampled bracket holds every weight as a candidate,
/// so the fix-up must hand ties out across chunks in global order.
#[test]
fn all_equal_above_sample_size() {
    let w: Vec<u32> = (0..400_000u32)
        .map(|i| 0.75f32.to_bits() | ((i & 1) << 31))
        .collect();
    let weights = [Weights::F32(&w)];
    for (amount, path) in [
        (Amount::Fraction(0.3), Path::FixUp),
        (Amount::Fraction(1.0), Path::Exact),
        (Amount::Count(1), Path::FixUp),
        (Amount::Count(399_999), Path::FixUp),
        (Amount::Count(200_000), Path::FixUp),
    ] {
        let masks = assert_path(&weights, amount, path);
        // Ties: the earliest positions go first.
        let k = masks[0].iter().filter(|&&m| m == 0).count();
        assert!(masks[0][..k].iter().all(|&m| m == 0) && masks[0][k..].iter().all(|&m| m == 1));
    }
}

/// Small magnitudes exactly at the positions the sampler skips, large ones where it reads: the
/// bracket, estimated from large values only, sits far above the true threshold, so the fused
/// pass finds more weights below it than it should prune and the exact radix fallback runs.
#[test]
fn bracket_miss_falls_back_to_radix() {
    let n = 2usize << 18;
    let sampled = sampled_positions(n);
    let mut rng = Rng(7);
    let w: Vec<u32> = sampled
        .iter()
        .map(|&hit| {
            let v = if hit {
                1.0 + rng.unit() as f32
            } else {
                rng.unit() as f32 * 1e-3
            };
            v.to_bits()
        })
        .collect();
    let weights = [Weights::F32(&w)];
    for amount in [
        Amount::Fraction(0.5),
        Amount::Fraction(0.25),
        Amount::Fraction(0.6),
    ] {
        assert_path(&weights, amount, Path::BracketMiss);
    }
    // A tiny count brackets from zero: every small weight is a candidate, and they fit.
    assert_path(&weights, Amount::Count(1), Path::FixUp);
    // Split across two tensors and dtypes (u64 keys; the same total, so the same positions are
    // sampled), with ties at the threshold.
    let (a, b) = w.split_at(n / 2 + 3);
    let b64: Vec<u64> = b
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            if i % 8 == 0 {
                1.0f64.to_bits()
            } else {
                (f32::from_bits(x) as f64).to_bits()
            }
        })
        .collect();
    let weights = [Weights::F32(a), Weights::F64(&b64)];
    assert_path(&weights, Amount::Fraction(0.55), Path::BracketMiss);
    assert_path(&weights, Amount::Count(300_001), Path::BracketMiss);
}

/// More in-bracket candidates than the kernel keeps in memory (32 MiB of (u64 key, u32) pairs
/// = 2^21 for f64): the candidate list overflows and the radix fallback rewrites every mask.
#[test]
fn candidate_overflow_falls_back_to_radix() {
    let n = (1usize << 21) + (1 << 17);
    let w: Vec<u64> = (0..n)
        .map(|i| if i % 1000 == 999 { 2.0f64 } else { -0.125 }.to_bits())
        .collect();
    let weights = [Weights::F64(&w)];
    for k in [1u64, 1_000_000, n as u64 - 5_000] {
        let (masks, s) = kernel(&weights, None, Amount::Count(k), Scope::Global).unwrap();
        assert_eq!((s.alive, s.pruned), (n as u64, k));
        assert_eq!(s.paths, Paths::of(Path::CandidateOverflow), "k = {k}");
        // Expected directly: the first k of the -0.125 entries go (the 2.0s are larger).
        let mut left = k;
        for (i, &m) in masks[0].iter().enumerate() {
            let small = i % 1000 != 999;
            let pruned = small && left > 0;
            if pruned {
                left -= 1;
            }
            assert_eq!(m, !pruned as u8, "position {i}, k = {k}");
        }
    }
}

/// NaN above the sample size: found by the fused pass whatever the bracket (which the sample,
/// blind to most positions, cannot know about); a NaN at a pruned position is never read.
#[test]
fn nan_above_sample_size() {
    let n = 300_000;
    let mut rng = Rng(3);
    let mut w: Vec<u16> = (0..n)
        .map(|_| half::bf16::from_f64(rng.unit() - 0.5).to_bits())
        .collect();
    let mut alive = vec![1u8; n];
    w[123_457] = 0x7fc1; // a bf16 NaN, alive in the second tensor below
    w[200_001] = 0xffc0;
    alive[200_001] = 0;
    let (a, b) = w.split_at(100_000);
    let weights = [Weights::Bf16(a), Weights::Bf16(b)];
    let (ma, mb) = alive.split_at(100_000);
    for amount in [
        Amount::Fraction(0.0),
        Amount::Fraction(0.4),
        Amount::Count(7),
    ] {
        for scope in [Scope::Global, Scope::Layer] {
            let got = kernel(&weights, Some(&[ma, mb]), amount, scope);
            assert_eq!(got.map(|x| x.1), Err(Error::Nan { index: 1 }));
        }
    }
    w[123_457] = 0;
    let (a, b) = w.split_at(100_000);
    let weights = [Weights::Bf16(a), Weights::Bf16(b)];
    for amount in [
        Amount::Fraction(0.4),
        Amount::Count(299_000),
        Amount::Fraction(1.0),
    ] {
        check_unit(&weights, Some(&[ma, mb]), amount, Scope::Global);
    }
}

#[test]
fn tiny_inputs_and_signed_zeros() {
    let pz = 0.0f32.to_bits();
    let nz = (-0.0f32).to_bits();
    let cases: [&[u32]; 5] = [
        &[],
        &[nz],
        &[pz, nz],
        &[nz, pz, nz],
        &[f32::INFINITY.to_bits(), nz, 1],
    ];
    for w in cases {
        for amount in [
            Amount::Fraction(0.0),
            Amount::Fraction(0.5),
            Amount::Fraction(1.0),
            Amount::Count(0),
            Amount::Count(w.len() as u64),
        ] {
            for scope in [Scope::Global, Scope::Layer] {
                check_unit(&[Weights::F32(w)], None, amount, scope);
            }
        }
    }
    // ±0 tie: the earlier one goes first whatever its sign.
    let (m, _) = kernel(
        &[Weights::F32(&[nz, pz, nz])],
        None,
        Amount::Count(2),
        Scope::Global,
    )
    .unwrap();
    assert_eq!(m, vec![vec![0, 0, 1]]);
    // Empty tensors next to full ones, and infinity pruned only after every finite weight.
    let h: [u16; 3] = [0x7c00, 0xfc00, 0x7bff]; // +inf, -inf, f16::MAX
    let (m, s) = kernel(
        &[Weights::F16(&[]), Weights::F16(&h), Weights::Bf16(&[])],
        None,
        Amount::Count(2),
        Scope::Global,
    )
    .unwrap();
    assert_eq!(m, vec![vec![], vec![0, 1, 0], vec![]]);
    assert_eq!((s.alive, s.pruned), (3, 2));
    // Whole-input sampling brackets the exact threshold: only its ties need the fix-up.
    assert_eq!(s.paths, Paths::of(Path::FixUp));
    // Nothing to prune: the provisional mask is already the answer.
    let (m, s) = kernel(&[Weights::F16(&h)], None, Amount::Count(0), Scope::Layer).unwrap();
    assert_eq!((m, s.paths), (vec![vec![1, 1, 1]], Paths::of(Path::Exact)));
}

#[test]
fn fractions_outside_unit_interval_are_rejected() {
    let w = [1.0f32.to_bits(), 2.0f32.to_bits()];
    for f in [-0.1, 1.000001, f64::NAN, f64::INFINITY, -1e-300] {
        let got = kernel(
            &[Weights::F32(&w)],
            None,
            Amount::Fraction(f),
            Scope::Global,
        );
        assert!(
            matches!(got, Err(Error::Amount { .. })),
            "{f}: {:?}",
            got.map(|x| x.1)
        );
    }
    // Dead weights do not count: 1 alive, so Count(2) is too many.
    let got = kernel(
        &[Weights::F32(&w)],
        Some(&[&[0, 1]]),
        Amount::Count(2),
        Scope::Global,
    );
    assert!(matches!(got, Err(Error::Amount { .. })));
}

#[test]
fn length_mismatches_are_rejected_before_writing() {
    let a = [1.0f32.to_bits(); 3];
    let b = [1u16; 2];
    let weights = [Weights::F32(&a), Weights::Bf16(&b)];
    let amount = Amount::Fraction(0.5);
    let run = |out: &mut [&mut [u8]], alive: Option<&[&[u8]]>, scope| {
        select_masks(&weights, alive, out, amount, scope)
    };
    let (mut o1, mut o2, mut o3) = ([9u8; 3], [9u8; 2], [9u8; 3]);
    for scope in [Scope::Global, Scope::Layer] {
        assert_eq!(
            run(&mut [&mut o1[..]], None, scope),
            Err(Error::ListLength {
                arg: "out",
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            run(&mut [&mut o1[..], &mut o3[..]], None, scope),
            Err(Error::Length {
                arg: "out",
                index: 1,
                expected: 2,
                got: 3
            })
        );
        assert_eq!(
            run(&mut [&mut o1[..], &mut o2[..]], Some(&[&[1, 1, 1]]), scope),
            Err(Error::ListLength {
                arg: "masks",
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            run(
                &mut [&mut o1[..], &mut o2[..]],
                Some(&[&[1, 1], &[1, 1]]),
                scope
            ),
            Err(Error::Length {
                arg: "masks",
                index: 0,
                expected: 3,
                got: 2
            })
        );
        assert_eq!(
            select_masks(&[], None, &mut [], amount, scope),
            Err(Error::Empty { arg: "weights" })
        );
    }
    assert!(
        o1.iter().chain(&o2).chain(&o3).all(|&b| b == 9),
        "nothing written"
    );
}
