//! Property tests of [`crate::select::select_masks`] and [`crate::radix::kth_key`] against the
//! sort-based [`reference`], on data from [`generators`]; [`branches`] pins the paths random data
//! rarely reaches; [`at_scale`] runs every entry point on model-sized inputs (`make fuzz`). The
//! threshold's properties (`crate::threshold::props`) use the same generators and reference.

mod at_scale;
pub(crate) mod branches;
pub(crate) mod generators;
pub(crate) mod reference;

use proptest::prelude::*;

use crate::error::Error;
use crate::magnitude::Weights;
use crate::select::{select_masks_in_place, Amount, Scope, CLUSTERED_FROM};
use generators::*;
use reference::{check, check_kth, kernel};

// ---------------------------------------------------------------------------------------------
// Properties on small and medium inputs.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn fraction_matches_reference(c in case(4, 600), f in fraction(), layer in any::<bool>()) {
        let scope = if layer { Scope::Layer } else { Scope::Global };
        run_case(&c, scope, |_| Amount::Fraction(f))?;
    }

    #[test]
    fn count_matches_reference(c in case(4, 600), u in fraction(), layer in any::<bool>()) {
        let scope = if layer { Scope::Layer } else { Scope::Global };
        run_case(&c, scope, |alive| count_of(u, alive))?;
    }

    #[test]
    fn count_above_alive_is_an_amount_error(c in case(3, 50), extra in 1u64..5) {
        let (tensors, alive, _) = c.build();
        let storage: Vec<Storage> = tensors.iter().map(Tensor::narrowed).collect();
        let weights = weights_of(&tensors, &storage);
        let refs: Option<Vec<&[u8]>> = alive.as_ref().map(|a| a.iter().map(|m| &m[..]).collect());
        let n: u64 = (0..tensors.len()).map(|t| alive_count(&tensors, alive.as_deref(), t)).sum();
        let got = kernel(&weights, refs.as_deref(), Amount::Count(n + extra), Scope::Global);
        prop_assert!(matches!(got, Err(Error::Amount { .. })), "{:?}", got.map(|x| x.1));
        // Layer scope: the count must fit in every tensor.
        let fewest = (0..tensors.len()).map(|t| alive_count(&tensors, alive.as_deref(), t)).min().unwrap();
        let got = kernel(&weights, refs.as_deref(), Amount::Count(fewest + extra), Scope::Layer);
        prop_assert!(matches!(got, Err(Error::Amount { .. })), "{:?}", got.map(|x| x.1));
    }

    /// NaN among alive weights names the first tensor holding one; NaN at pruned positions is
    /// ignored (the result equals the reference, which never looks at dead weights).
    #[test]
    fn nan_alive_errors_and_nan_dead_is_ignored(
        c in case(4, 300),
        f in fraction(),
        layer in any::<bool>(),
        nan_at in prop::collection::vec(any::<prop::sample::Index>(), 1..4),
    ) {
        let scope = if layer { Scope::Layer } else { Scope::Global };
        let (mut tensors, alive, _) = c.build();
        let mut alive = alive.unwrap_or_else(|| tensors.iter().map(|t| vec![1; t.bits.len()]).collect());
        let total: usize = tensors.iter().map(|t| t.bits.len()).sum();
        prop_assume!(total > 0);
        let mut nan_tensors = Vec::new();
        for (n, ix) in nan_at.iter().enumerate() {
            let mut pos = ix.index(total);
            let t = tensors.iter().position(|t| {
                let here = pos < t.bits.len();
                if !here { pos -= t.bits.len(); }
                here
            }).unwrap();
            let d = tensors[t].dtype;
            tensors[t].bits[pos] = d.nan() | if n % 2 == 1 { d.sign() } else { 0 };
            // The first NaN is placed at a pruned position, the others alive.
            alive[t][pos] = (n > 0) as u8;
            if n > 0 { nan_tensors.push(t); }
        }
        let storage: Vec<Storage> = tensors.iter().map(Tensor::narrowed).collect();
        let weights = weights_of(&tensors, &storage);
        let refs: Vec<&[u8]> = alive.iter().map(|m| &m[..]).collect();
        let got = kernel(&weights, Some(&refs), Amount::Fraction(f), scope);
        match nan_tensors.iter().min() {
            Some(&first) => prop_assert_eq!(got.map(|x| x.1), Err(Error::Nan { index: first })),
            None => { check(&weights, Some(&refs), Amount::Fraction(f), scope)?; }
        }
    }

    /// Several rounds, each round's masks fed back as the survivors of the next.
    #[test]
    fn iterative_rounds_match_reference(
        c in case(3, 400),
        fs in prop::collection::vec(fraction(), 1..6),
        layer in any::<bool>(),
    ) {
        let scope = if layer { Scope::Layer } else { Scope::Global };
        let (tensors, alive, _) = c.build();
        let storage: Vec<Storage> = tensors.iter().map(Tensor::narrowed).collect();
        let weights = weights_of(&tensors, &storage);
        let mut current = alive;
        for f in fs {
            let refs: Option<Vec<&[u8]>> =
                current.as_ref().map(|a| a.iter().map(|m| &m[..]).collect());
            let masks = check(&weights, refs.as_deref(), Amount::Fraction(f), scope)?;
            current = masks;
            prop_assert!(current.is_some());
        }
    }

    #[test]
    fn kth_key_matches_sorted_keys(c in case(3, 3000), u in 0.0..=1.0f64) {
        let (tensors, alive, _) = c.build();
        // NaN-free by construction; dead positions are skipped by kth_key too.
        let storage: Vec<Storage> = tensors.iter().map(Tensor::narrowed).collect();
        let weights = weights_of(&tensors, &storage);
        let refs: Option<Vec<&[u8]>> = alive.as_ref().map(|a| a.iter().map(|m| &m[..]).collect());
        if weights.iter().all(|w| !matches!(w, Weights::F64(_))) {
            check_kth::<u32>(&weights, refs.as_deref(), u)?;
        }
        check_kth::<u64>(&weights, refs.as_deref(), u)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Large inputs: above 2^18 elements the bracket is estimated from a sample.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn large_inputs_match_reference(
        specs in prop::collection::vec(
            (prop::sample::select(DTYPES.to_vec()), prop::sample::select(KINDS.to_vec()),
             1000..120_000usize),
            1..4),
        extra in 270_000..300_000usize,
        seed in any::<u64>(),
        alive_p in prop_oneof![Just(None), Just(Some(0.7))],
        u in fraction(),
        count in any::<bool>(),
        layer in any::<bool>(),
    ) {
        // One tensor is always large enough to exceed the sample size on its own (layer scope).
        let mut specs = specs;
        specs.push((DTYPES[(seed % 4) as usize], KINDS[(seed / 4 % 4) as usize], extra));
        let c = Case { specs, seed, alive_p };
        let scope = if layer { Scope::Layer } else { Scope::Global };
        if count {
            run_case(&c, scope, |alive| count_of(u, alive))?;
        } else {
            run_case(&c, scope, |_| Amount::Fraction(u))?;
        }
        // The radix select over many chunks, on the same data.
        let (tensors, alive, _) = c.build();
        let storage: Vec<Storage> = tensors.iter().map(Tensor::narrowed).collect();
        let weights = weights_of(&tensors, &storage);
        let refs: Option<Vec<&[u8]>> = alive.as_ref().map(|a| a.iter().map(|m| &m[..]).collect());
        check_kth::<u64>(&weights, refs.as_deref(), u)?;
    }
}

// Inputs whose sample reads neighbours at a time (from `CLUSTERED_FROM` weights), fresh and in
// place over the survivors.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(3))]

    #[test]
    fn clustered_samples_match_reference(
        dtype in prop::sample::select(DTYPES.to_vec()),
        kind in prop::sample::select(KINDS.to_vec()),
        seed in any::<u64>(),
        alive_p in prop_oneof![Just(None), Just(Some(0.7))],
        u in fraction(),
    ) {
        let specs = vec![(dtype, kind, CLUSTERED_FROM + 12_345), (DTYPES[seed as usize % 4], kind, 5_000)];
        let c = Case { specs, seed, alive_p };
        let (tensors, alive, _) = c.build();
        let storage: Vec<Storage> = tensors.iter().map(Tensor::narrowed).collect();
        let weights = weights_of(&tensors, &storage);
        let refs: Option<Vec<&[u8]>> = alive.as_ref().map(|a| a.iter().map(|m| &m[..]).collect());
        let Some(expected) = check(&weights, refs.as_deref(), Amount::Fraction(u), Scope::Global)? else {
            return Ok(());
        };
        let mut masks: Vec<Vec<u8>> = match &alive {
            Some(a) => a.clone(),
            None => weights.iter().map(|w| vec![1; w.len()]).collect(),
        };
        let mut views: Vec<&mut [u8]> = masks.iter_mut().map(|m| &mut m[..]).collect();
        select_masks_in_place(&weights, &mut views, Amount::Fraction(u), Scope::Global).unwrap();
        prop_assert!(masks == expected, "in place differs from the reference");
    }
}
