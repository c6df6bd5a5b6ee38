//! Properties of [`crate::threshold`]: the threshold, applied tensor by tensor with
//! [`write_pruned`] in order, writes exactly the weights `select_masks` keeps, bit for bit, on
//! the generators and sort-based reference of [`crate::select_props`].

use proptest::prelude::*;

use crate::error::Error;
use crate::magnitude::{Key, Weights};
use crate::mask::BitsMut;
use crate::select::{Amount, Path, Scope};
use crate::select_props::branches::sampled_positions;
use crate::select_props::generators::*;
use crate::select_props::reference::kernel;
use crate::threshold::{select_threshold, write_pruned, write_pruned_counted, Threshold};

/// Bits of one tensor as u64, whatever its width.
fn widened(w: &Weights<'_>) -> Vec<u64> {
    match w {
        Weights::F16(x) | Weights::Bf16(x) => x.iter().map(|&b| b as u64).collect(),
        Weights::F32(x) => x.iter().map(|&b| b as u64).collect(),
        Weights::F64(x) => x.to_vec(),
    }
}

/// Outputs widened to u64, ties left over, weights kept per tensor.
type Streamed = (Vec<Vec<u64>>, u64, Vec<u64>);

/// Stream every tensor through `write_pruned` (into garbage-filled buffers) with the ties the
/// earlier tensors left; returns the outputs widened to u64, the ties left at the end and the
/// weights each call reported kept.
fn stream(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    th: &Threshold,
) -> Result<Streamed, Error> {
    let mut left = th.ties;
    let mut outs = Vec::new();
    let mut kept = Vec::new();
    let mut write =
        |w: Weights<'_>, a: Option<&[u8]>, d: BitsMut<'_>, left: &mut u64| -> Result<(), Error> {
            let written = write_pruned_counted(w, a, d, th.key, th.key_bits, *left)?;
            *left -= written.ties;
            kept.push(written.kept);
            Ok(())
        };
    for (t, w) in weights.iter().enumerate() {
        let a = alive.map(|a| a[t]);
        let out = match w {
            Weights::F16(_) | Weights::Bf16(_) => {
                let mut d = vec![0xA5A5u16; w.len()];
                write(*w, a, BitsMut::U16(&mut d), &mut left)?;
                d.iter().map(|&b| b as u64).collect()
            }
            Weights::F32(_) => {
                let mut d = vec![0xA5A5_A5A5u32; w.len()];
                write(*w, a, BitsMut::U32(&mut d), &mut left)?;
                d.iter().map(|&b| b as u64).collect()
            }
            Weights::F64(_) => {
                let mut d = vec![!0u64; w.len()];
                write(*w, a, BitsMut::U64(&mut d), &mut left)?;
                d
            }
        };
        outs.push(out);
    }
    Ok((outs, left, kept))
}

/// The threshold agrees with `select_masks` on totals and errors, and streaming it writes the
/// weights with `select_masks`' masks applied.
fn check_stream(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    amount: Amount,
) -> Result<Option<Threshold>, TestCaseError> {
    let want = kernel(weights, alive, amount, Scope::Global);
    let got = select_threshold(weights, alive, amount);
    let (th, masks) = match (got, want) {
        (Ok(th), Ok((masks, s))) => {
            prop_assert_eq!((th.alive, th.pruned), (s.alive, s.pruned), "{:?}", amount);
            (th, masks)
        }
        (Err(Error::Amount { .. }), Err(Error::Amount { .. })) => return Ok(None),
        (Err(g), Err(w)) => {
            prop_assert_eq!(g, w);
            return Ok(None);
        }
        (g, w) => {
            return Err(TestCaseError::fail(format!(
                "threshold {g:?} vs select_masks {:?}",
                w.map(|x| x.1)
            )))
        }
    };
    let (outs, left, kept) =
        stream(weights, alive, &th).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(left, 0, "ties left over: {:?}", th);
    let want_kept: Vec<u64> = masks
        .iter()
        .map(|m| m.iter().filter(|&&b| b != 0).count() as u64)
        .collect();
    prop_assert_eq!(kept, want_kept, "kept counts ({:?}, {:?})", amount, th);
    for (t, (w, out)) in weights.iter().zip(&outs).enumerate() {
        let src = widened(w);
        for (i, (&o, &m)) in out.iter().zip(&masks[t]).enumerate() {
            let want = if m != 0 { src[i] } else { 0 };
            prop_assert_eq!(o, want, "tensor {} index {} ({:?}, {:?})", t, i, amount, th);
        }
    }
    Ok(Some(th))
}

fn run(case: &Case, amount_of: impl Fn(u64) -> Amount) -> Result<(), TestCaseError> {
    let (tensors, alive, _) = case.build();
    let storage: Vec<Storage> = tensors.iter().map(Tensor::narrowed).collect();
    let weights = weights_of(&tensors, &storage);
    let refs: Option<Vec<&[u8]>> = alive.as_ref().map(|a| a.iter().map(|m| &m[..]).collect());
    let n = (0..tensors.len())
        .map(|t| alive_count(&tensors, alive.as_deref(), t))
        .sum();
    check_stream(&weights, refs.as_deref(), amount_of(n))?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn streamed_threshold_matches_select_masks(c in case(4, 600), u in fraction(), count in any::<bool>()) {
        if count {
            run(&c, |alive| count_of(u, alive))?;
        } else {
            run(&c, |_| Amount::Fraction(u))?;
        }
    }

    /// Without f64 the search ranks in u32 keys; an (empty) f64 tensor moves it to u64 keys.
    /// Both thresholds select the same weights, and a 32-bit key cannot rank f64 weights.
    #[test]
    fn key_widths_agree(c in case(4, 400), u in fraction()) {
        let specs = c.specs.iter().map(|&(d, k, n)| (if d == DTYPES[3] { DTYPES[2] } else { d }, k, n));
        let c = Case { specs: specs.collect(), ..c };
        let (tensors, alive, _) = c.build();
        let storage: Vec<Storage> = tensors.iter().map(Tensor::narrowed).collect();
        let mut weights = weights_of(&tensors, &storage);
        let mut refs: Option<Vec<&[u8]>> = alive.as_ref().map(|a| a.iter().map(|m| &m[..]).collect());
        let narrow = check_stream(&weights, refs.as_deref(), Amount::Fraction(u))?.unwrap();
        prop_assert_eq!(narrow.key_bits, 32);
        weights.push(Weights::F64(&[]));
        if let Some(r) = refs.as_mut() { r.push(&[]); }
        let wide = check_stream(&weights, refs.as_deref(), Amount::Fraction(u))?.unwrap();
        prop_assert_eq!(wide.key_bits, 64);
        prop_assert_eq!((wide.pruned, wide.ties), (narrow.pruned, narrow.ties));
        if narrow.key <= <u32 as Key>::INF as u64 {
            prop_assert_eq!(wide.key, <u64 as Key>::of_f32(narrow.key as u32));
        }
        let w = [1.0f64.to_bits()];
        let got = write_pruned(Weights::F64(&w), None, BitsMut::U64(&mut [7]), narrow.key, 32, 0);
        let is_width_error = matches!(got, Err(Error::Argument { arg: "key_width_bits", .. }));
        prop_assert!(is_width_error);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Above the sample size (2^18) the bracket comes from a sample; tensors span many chunks.
    #[test]
    fn large_streamed_threshold_matches_select_masks(
        specs in prop::collection::vec(
            (prop::sample::select(DTYPES.to_vec()), prop::sample::select(KINDS.to_vec()),
             1000..120_000usize),
            1..4),
        extra in 270_000..300_000usize,
        seed in any::<u64>(),
        alive_p in prop_oneof![Just(None), Just(Some(0.7))],
        u in fraction(),
        count in any::<bool>(),
    ) {
        let mut specs = specs;
        specs.push((DTYPES[(seed % 4) as usize], KINDS[(seed / 4 % 4) as usize], extra));
        let c = Case { specs, seed, alive_p };
        if count {
            run(&c, |alive| count_of(u, alive))?;
        } else {
            run(&c, |_| Amount::Fraction(u))?;
        }
    }
}

fn assert_stream(weights: &[Weights<'_>], amount: Amount, path: Path) -> Threshold {
    match check_stream(weights, None, amount) {
        Ok(Some(th)) => {
            assert_eq!(th.path, path, "{amount:?}: {th:?}");
            th
        }
        other => panic!("{amount:?}: {other:?}"),
    }
}

/// More bf16 ties at the threshold than the candidate list holds (8 Mi keys): counted per
/// distinct key instead, so the single pass still finds the threshold.
#[test]
fn bf16_ties_are_counted_per_key() {
    let n = 9 << 20;
    let w: Vec<u16> = (0..n).map(|i| 0x3f40 | (((i & 1) as u16) << 15)).collect();
    let th = assert_stream(&[Weights::Bf16(&w)], Amount::Fraction(0.5), Path::FixUp);
    assert_eq!((th.ties, th.key), (n as u64 / 2, 0x3f40 << 16));
}

/// Over 4 Mi equal f64 candidates in a bracket from zero (a tiny count) spans too many keys to
/// count per key, and overflows the list (8 bytes a key): radix fallback. A count in the middle
/// brackets the tied key alone, which is counted per key.
#[test]
fn candidate_overflow_falls_back_to_radix() {
    let n = (4 << 20) + (1 << 18);
    let w: Vec<u64> = (0..n)
        .map(|i| if i % 1000 == 999 { 2.0f64 } else { -0.125 }.to_bits())
        .collect();
    assert_stream(
        &[Weights::F64(&w)],
        Amount::Count(1),
        Path::CandidateOverflow,
    );
    assert_stream(&[Weights::F64(&w)], Amount::Count(3_000_000), Path::FixUp);
}

/// Small weights exactly where the sampler does not read: the bracket misses.
#[test]
fn bracket_miss_falls_back_to_radix() {
    let n = 2usize << 18;
    let mut rng = Rng(11);
    let w: Vec<u32> = sampled_positions(n)
        .iter()
        .map(|&hit| {
            (if hit {
                1.0 + rng.unit()
            } else {
                rng.unit() * 1e-3
            } as f32)
                .to_bits()
        })
        .collect();
    let (a, b) = w.split_at(70_001);
    let weights = [Weights::F32(a), Weights::F32(b)];
    assert_stream(&weights, Amount::Fraction(0.5), Path::BracketMiss);
    assert_stream(&weights, Amount::Fraction(1.0), Path::Exact);
    assert_stream(&weights, Amount::Count(0), Path::Exact);
}

/// Ties across tensors and chunks: the tensor where the tie budget runs out keeps the rest.
#[test]
fn tie_budget_runs_out_inside_a_tensor() {
    let w: Vec<u32> = (0..300_000u32)
        .map(|i| 0.75f32.to_bits() | ((i % 3 == 0) as u32) << 31)
        .collect();
    let (a, b) = w.split_at(100_000);
    let weights = [Weights::F32(a), Weights::F32(b)];
    for k in [1, 99_999, 100_000, 150_001, 299_999] {
        let th = assert_stream(&weights, Amount::Count(k), Path::FixUp);
        assert_eq!((th.key, th.ties), (0.75f32.to_bits() as u64, k));
    }
}

/// A tie budget that runs out in the second wave of a tensor (waves of 4 Mi elements are
/// written one after the other while budget remains), with ties on both sides of it.
#[test]
fn tie_budget_runs_out_in_a_later_wave() {
    let w: Vec<u16> = (0..9_000_000u32)
        .map(|i| 0x3f40 | ((i % 5 == 0) as u16) << 15)
        .collect();
    for k in [5_000_000, 8_999_999] {
        let th = assert_stream(&[Weights::Bf16(&w)], Amount::Count(k), Path::FixUp);
        assert_eq!(th.ties, k);
    }
}

#[test]
fn nan_and_bad_arguments() {
    let a = [1.0f32.to_bits(), 2.0f32.to_bits()];
    let b = [f32::NAN.to_bits(), 3.0f32.to_bits()];
    let weights = [Weights::F32(&a), Weights::F32(&b)];
    let got = select_threshold(&weights, None, Amount::Fraction(0.5));
    assert_eq!(got, Err(Error::Nan { index: 1 }));
    // Dead NaN is never ranked, nor written.
    let th = check_stream(&weights, Some(&[&[1, 1], &[0, 1]]), Amount::Count(1)).unwrap();
    assert_eq!(th.map(|t| (t.alive, t.pruned)), Some((3, 1)));
    let mut d = [9u32; 2];
    let got = write_pruned(weights[1], None, BitsMut::U32(&mut d), 0, 32, 0);
    assert_eq!(got, Err(Error::Nan { index: 0 }));
    let mut d = [9u32; 3];
    let bad = [
        write_pruned(weights[0], None, BitsMut::U32(&mut d[..1]), 0, 32, 0),
        write_pruned(weights[0], Some(&[1]), BitsMut::U32(&mut d[..2]), 0, 32, 0),
        write_pruned(weights[0], None, BitsMut::U16(&mut [0, 0]), 0, 32, 0),
        write_pruned(weights[0], None, BitsMut::U32(&mut d[..2]), 1 << 32, 32, 0),
        write_pruned(weights[0], None, BitsMut::U32(&mut d[..2]), 0, 16, 0),
    ];
    let args: Vec<&str> = bad
        .iter()
        .map(|r| match r {
            Err(
                Error::Length { arg, .. } | Error::Width { arg, .. } | Error::Argument { arg, .. },
            ) => *arg,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(args, ["dst", "mask", "dst", "key", "key_width_bits"]);
    assert_eq!(d, [9; 3], "nothing written");
    assert_eq!(
        select_threshold(&[], None, Amount::Count(0)),
        Err(Error::Empty { arg: "weights" })
    );
}
