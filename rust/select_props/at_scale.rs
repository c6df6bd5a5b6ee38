//! Every entry point at model scale (millions of weights, many tensors): selection against the
//! sort-based reference, then apply, rewind and alive counts on its masks against one-line
//! element-wise references. Slow (the reference sorts everything), so `#[ignore]`d: `make fuzz`
//! runs them with `PROPTEST_CASES` cases.

use proptest::prelude::*;

use super::generators::*;
use super::reference::check;
use crate::mask::{self, Bits, BitsMut};
use crate::rewind;
use crate::select::{Amount, Scope};

fn mutable(storage: &mut Storage) -> BitsMut<'_> {
    match storage {
        Storage::U16(v) => BitsMut::U16(v),
        Storage::U32(v) => BitsMut::U32(v),
        Storage::U64(v) => BitsMut::U64(v),
    }
}

fn readonly(storage: &Storage) -> Bits<'_> {
    match storage {
        Storage::U16(v) => Bits::U16(v),
        Storage::U32(v) => Bits::U32(v),
        Storage::U64(v) => Bits::U64(v),
    }
}

fn as_u64(storage: &Storage) -> Vec<u64> {
    match storage {
        Storage::U16(v) => v.iter().map(|&b| b as u64).collect(),
        Storage::U32(v) => v.iter().map(|&b| b as u64).collect(),
        Storage::U64(v) => v.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    #[ignore = "model scale: run by `make fuzz`"]
    fn every_entry_point_at_scale(
        specs in prop::collection::vec(
            (prop::sample::select(DTYPES.to_vec()), prop::sample::select(KINDS.to_vec()), 0..3_000_000usize),
            1..12),
        seed in any::<u64>(),
        alive_p in prop_oneof![Just(None), Just(Some(0.8)), Just(Some(0.05))],
        u in fraction(),
        layer in any::<bool>(),
    ) {
        let c = Case { specs, seed, alive_p };
        let scope = if layer { Scope::Layer } else { Scope::Global };
        let (tensors, alive, _) = c.build();
        let mut storage: Vec<Storage> = tensors.iter().map(Tensor::narrowed).collect();
        let weights = weights_of(&tensors, &storage);
        let refs: Option<Vec<&[u8]>> = alive.as_ref().map(|a| a.iter().map(|m| &m[..]).collect());
        let Some(masks) = check(&weights, refs.as_deref(), Amount::Fraction(u), scope)? else {
            return Ok(());
        };
        drop(weights);
        let mask_refs: Vec<&[u8]> = masks.iter().map(|m| &m[..]).collect();
        let counts = mask::alive_counts(&mask_refs);
        for (m, &n) in masks.iter().zip(&counts) {
            prop_assert_eq!(n, m.iter().filter(|&&b| b != 0).count() as u64);
        }

        // rewind from a snapshot (the original bits), after scrambling the weights.
        let snapshot: Vec<Storage> = tensors.iter().map(Tensor::narrowed).collect();
        let want: Vec<Vec<u64>> = snapshot.iter().zip(&masks)
            .map(|(s, m)| as_u64(s).iter().zip(m).map(|(&b, &k)| if k != 0 { b } else { 0 }).collect())
            .collect();
        for s in storage.iter_mut() {
            match s {
                Storage::U16(v) => v.iter_mut().for_each(|b| *b = b.rotate_left(3)),
                Storage::U32(v) => v.iter_mut().for_each(|b| *b = b.rotate_left(3)),
                Storage::U64(v) => v.iter_mut().for_each(|b| *b = b.rotate_left(3)),
            }
        }
        {
            let mut views: Vec<BitsMut<'_>> = storage.iter_mut().map(mutable).collect();
            let snaps: Vec<Bits<'_>> = snapshot.iter().map(readonly).collect();
            rewind::rewind(&mut views, &snaps, &mask_refs).unwrap();
        }
        prop_assert!(storage.iter().map(as_u64).eq(want.iter().cloned()), "rewind differs");

        // apply_masks is idempotent on rewound weights and zeroes exactly the pruned positions.
        {
            let mut views: Vec<BitsMut<'_>> = storage.iter_mut().map(mutable).collect();
            mask::apply_masks(&mut views, &mask_refs).unwrap();
        }
        prop_assert!(storage.iter().map(as_u64).eq(want.into_iter()), "apply_masks changed kept weights");
    }
}
