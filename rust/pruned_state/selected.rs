//! torch.prune's state written by the selection itself ([`select_with_state`]): the drop-in's
//! first round reads each weight once for its mask, float mask and masked weight, where the
//! selection and then [`super::mask_products`] read every weight and mask byte twice.

use std::marker::PhantomData;

use super::{check_outputs, fill_any, streamed, Run};
use crate::error::Result;
use crate::magnitude::Weights;
use crate::mask::BitsMut;
use crate::select::{self, Amount, Follower, Scope, Selection};

/// [`crate::select::select_masks`] that also writes torch.prune's state of its masks: each
/// tensor's float mask (and, unless `products` is None, `mask * w`), as [`mask_products`] makes
/// them from the final `out`, but chunk by chunk inside the selection's pass, while the chunk's
/// weights are still in cache. `out` None: the bool masks are not kept (one byte a weight less
/// to write). Outputs are checked first; on an error they are unspecified.
pub fn select_with_state(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    out: Option<&mut [&mut [u8]]>,
    masks: &mut [BitsMut<'_>],
    products: Option<&mut [BitsMut<'_>]>,
    amount: Amount,
    scope: Scope,
) -> Result<Selection> {
    check_outputs(weights, masks, products.as_deref())?;
    let writer = StateWriter {
        weights: weights.to_vec(),
        stream: streamed(weights, products.is_some()),
        masks: masks.iter_mut().map(RawBits::of).collect(),
        products: products.map(|p| p.iter_mut().map(RawBits::of).collect()),
        _outputs: PhantomData,
    };
    select::select_masks_following(weights, alive, out, amount, scope, &writer)
}

/// An output tensor's bits, shared by the threads of a selection, each writing its own chunks.
#[derive(Clone, Copy)]
enum RawBits {
    U16(*mut u16),
    U32(*mut u32),
    U64(*mut u64),
}

impl RawBits {
    fn of(bits: &mut BitsMut<'_>) -> RawBits {
        match bits {
            BitsMut::U16(b) => RawBits::U16(b.as_mut_ptr()),
            BitsMut::U32(b) => RawBits::U32(b.as_mut_ptr()),
            BitsMut::U64(b) => RawBits::U64(b.as_mut_ptr()),
        }
    }

    /// Elements `start..start + len` as a slice.
    ///
    /// # Safety
    /// The range lies within the tensor, and nothing else reads or writes it meanwhile.
    unsafe fn range<'r>(self, start: usize, len: usize) -> BitsMut<'r> {
        use std::slice::from_raw_parts_mut as part;
        match self {
            RawBits::U16(p) => BitsMut::U16(part(p.add(start), len)),
            RawBits::U32(p) => BitsMut::U32(part(p.add(start), len)),
            RawBits::U64(p) => BitsMut::U64(part(p.add(start), len)),
        }
    }
}

/// The [`Follower`] of [`select_with_state`]: fills a chunk's state from its mask bytes.
struct StateWriter<'a> {
    weights: Vec<Weights<'a>>,
    masks: Vec<RawBits>,
    products: Option<Vec<RawBits>>,
    stream: bool,
    /// The outputs stay borrowed, exclusively, for as long as the writer lives.
    _outputs: PhantomData<&'a mut ()>,
}

// SAFETY: the pointers come from outputs borrowed exclusively for the writer's lifetime, and a
// selection tells each element to one thread at a time (see `Follower`), so threads write
// disjoint ranges.
unsafe impl Sync for StateWriter<'_> {}

impl StateWriter<'_> {
    fn fill(&self, tensor: usize, start: usize, keep: &[u8], stream: bool) {
        let w = self.weights[tensor].slice(start, start + keep.len());
        // SAFETY: the selection tells ranges of the tensor, each to one thread at a time.
        let (mut mask, mut product) = unsafe {
            (
                self.masks[tensor].range(start, keep.len()),
                self.products
                    .as_ref()
                    .map(|p| p[tensor].range(start, keep.len())),
            )
        };
        let run = Run {
            parallel: false,
            stream,
        };
        fill_any(w, None, &mut mask, product.as_mut(), keep, run);
    }
}

impl Follower for StateWriter<'_> {
    fn chunk(&self, tensor: usize, start: usize, keep: &[u8]) {
        self.fill(tensor, start, keep, self.stream)
    }

    fn set(&self, tensor: usize, index: usize, keep: bool) {
        self.fill(tensor, index, &[keep as u8], false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::Bits;
    use crate::pruned_state::mask_products;
    use crate::select::{select_masks, Paths};

    fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed | 1;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// Raw bits of one tensor: `kind` 0 f32, 1 bf16, 2 f16, 3 f64; `ties` draws from 4 values.
    enum Tensor {
        U16(Vec<u16>, bool),
        U32(Vec<u32>),
        U64(Vec<u64>),
    }

    impl Tensor {
        fn new(kind: usize, n: usize, ties: bool, seed: u64) -> Tensor {
            let mut next = xorshift(seed);
            let mut value = move || {
                let r = next();
                let x = if ties {
                    [0.5, -0.5, 1.0, -0.0][(r % 4) as usize]
                } else {
                    ((r >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 8.0
                };
                // A few infinities, which stay (largest) and give NaN products when pruned.
                if !ties && r.is_multiple_of(9973) {
                    f64::NEG_INFINITY
                } else {
                    x
                }
            };
            match kind {
                0 => Tensor::U32((0..n).map(|_| (value() as f32).to_bits()).collect()),
                1 => Tensor::U16(
                    (0..n)
                        .map(|_| half::bf16::from_f64(value()).to_bits())
                        .collect(),
                    true,
                ),
                2 => Tensor::U16(
                    (0..n)
                        .map(|_| half::f16::from_f64(value()).to_bits())
                        .collect(),
                    false,
                ),
                _ => Tensor::U64((0..n).map(|_| value().to_bits()).collect()),
            }
        }

        fn weights(&self) -> Weights<'_> {
            match self {
                Tensor::U16(b, true) => Weights::Bf16(b),
                Tensor::U16(b, false) => Weights::F16(b),
                Tensor::U32(b) => Weights::F32(b),
                Tensor::U64(b) => Weights::F64(b),
            }
        }

        /// A zeroed output of this tensor's width and length.
        fn zeros(&self) -> Tensor {
            match self {
                Tensor::U16(b, bf) => Tensor::U16(vec![0; b.len()], *bf),
                Tensor::U32(b) => Tensor::U32(vec![0; b.len()]),
                Tensor::U64(b) => Tensor::U64(vec![0; b.len()]),
            }
        }

        fn bits_mut(&mut self) -> BitsMut<'_> {
            match self {
                Tensor::U16(b, _) => BitsMut::U16(b),
                Tensor::U32(b) => BitsMut::U32(b),
                Tensor::U64(b) => BitsMut::U64(b),
            }
        }

        fn raw(&self) -> Vec<u64> {
            match self {
                Tensor::U16(b, _) => b.iter().map(|&x| x as u64).collect(),
                Tensor::U32(b) => b.iter().map(|&x| x as u64).collect(),
                Tensor::U64(b) => b.clone(),
            }
        }
    }

    /// Masks, float masks and products (raw bits) of one call, and the paths it took.
    type Outcome = (Vec<Vec<u8>>, Vec<Vec<u64>>, Option<Vec<Vec<u64>>>, Paths);

    /// The selection then `mask_products`, the fused call, or the fused call keeping no masks
    /// (its `out` stays as it was made: all 9).
    #[derive(Clone, Copy, PartialEq)]
    enum How {
        TwoCalls,
        Fused,
        FusedNoMasks,
    }

    fn run(
        tensors: &[Tensor],
        alive: Option<&[&[u8]]>,
        amount: Amount,
        scope: Scope,
        products: bool,
        how: How,
    ) -> Outcome {
        let weights: Vec<Weights<'_>> = tensors.iter().map(Tensor::weights).collect();
        let mut out: Vec<Vec<u8>> = tensors.iter().map(|t| vec![9; t.raw().len()]).collect();
        let mut masks: Vec<Tensor> = tensors.iter().map(Tensor::zeros).collect();
        let mut made: Vec<Tensor> = tensors.iter().map(Tensor::zeros).collect();
        let mut outs: Vec<&mut [u8]> = out.iter_mut().map(|o| o.as_mut_slice()).collect();
        let mut mask_bits: Vec<BitsMut<'_>> = masks.iter_mut().map(Tensor::bits_mut).collect();
        let mut made_bits: Vec<BitsMut<'_>> = made.iter_mut().map(Tensor::bits_mut).collect();
        let product_bits = products.then_some(made_bits.as_mut_slice());
        let selection = if how != How::TwoCalls {
            select_with_state(
                &weights,
                alive,
                (how == How::Fused).then_some(outs.as_mut_slice()),
                &mut mask_bits,
                product_bits,
                amount,
                scope,
            )
            .unwrap()
        } else {
            let s = select_masks(&weights, alive, &mut outs, amount, scope).unwrap();
            let keep: Vec<&[u8]> = outs.iter().map(|o| &**o).collect();
            let previous: Vec<Option<Bits<'_>>> = vec![None; weights.len()];
            mask_products(&weights, &keep, &previous, &mut mask_bits, product_bits).unwrap();
            s
        };
        drop((mask_bits, made_bits));
        let raw = |ts: Vec<Tensor>| ts.iter().map(Tensor::raw).collect::<Vec<_>>();
        (
            out,
            raw(masks),
            products.then(|| raw(made)),
            selection.paths,
        )
    }

    /// The fused call writes exactly what the selection followed by `mask_products` writes, on
    /// every path (fix-up, exact, the radix fallback of heavy ties), serial and parallel, in
    /// both scopes, for every float type.
    #[test]
    fn the_fused_state_is_the_selection_then_mask_products() {
        let mut seen = Paths::default();
        for (sizes, ties) in [
            (vec![3000, 17, 40_000], false),
            (vec![300_000, 1, 260_000], false), // parallel: at least PARALLEL_MIN in all
            (vec![5000, 70_000], true),
        ] {
            for kinds in [[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 0, 1]] {
                let tensors: Vec<Tensor> = sizes
                    .iter()
                    .zip(kinds)
                    .enumerate()
                    .map(|(i, (&n, kind))| Tensor::new(kind, n, ties, 7 + i as u64))
                    .collect();
                let dead: Vec<Vec<u8>> = sizes
                    .iter()
                    .map(|&n| (0..n).map(|i| (i % 7 != 3) as u8).collect())
                    .collect();
                let dead: Vec<&[u8]> = dead.iter().map(|d| d.as_slice()).collect();
                for (alive, scope, products) in [
                    (None, Scope::Global, true),
                    (Some(dead.as_slice()), Scope::Global, true),
                    (None, Scope::Layer, false),
                    (Some(dead.as_slice()), Scope::Layer, true),
                ] {
                    for amount in [
                        Amount::Fraction(0.2),
                        Amount::Fraction(0.9),
                        Amount::Count(1),
                    ] {
                        let two = run(&tensors, alive, amount, scope, products, How::TwoCalls);
                        let one = run(&tensors, alive, amount, scope, products, How::Fused);
                        let bare = run(&tensors, alive, amount, scope, products, How::FusedNoMasks);
                        let case = format!("{sizes:?} {kinds:?} {scope:?} {amount:?}");
                        assert_eq!(one.0, two.0, "masks: {case}");
                        assert_eq!(one.1, two.1, "float masks: {case}");
                        assert_eq!(one.2, two.2, "products: {case}");
                        assert_eq!(one.3, two.3, "paths: {case}");
                        assert_eq!(
                            (&bare.1, &bare.2, bare.3),
                            (&two.1, &two.2, two.3),
                            "{case}"
                        );
                        assert!(
                            bare.0.iter().flatten().all(|&b| b == 9),
                            "masks written: {case}"
                        );
                        for (a, b) in [
                            (&mut seen.exact, one.3.exact),
                            (&mut seen.fix_up, one.3.fix_up),
                            (&mut seen.bracket_miss, one.3.bracket_miss),
                            (&mut seen.candidate_overflow, one.3.candidate_overflow),
                        ] {
                            *a += b;
                        }
                    }
                }
            }
        }
        assert!(seen.fix_up > 0 && seen.exact > 0, "{seen:?}");
    }

    /// Small magnitudes where the sampler does not read (see `select_props::branches`): the
    /// bracket misses, the radix fallback rewrites every mask, and the state is told again.
    #[test]
    fn after_the_exact_fallback_the_state_is_of_the_final_masks() {
        let n = 2usize << 18;
        let sampled = crate::select_props::branches::sampled_positions(n);
        let mut next = xorshift(5);
        let mut unit = move || (next() >> 11) as f64 / (1u64 << 53) as f64;
        let w: Vec<u32> = sampled
            .iter()
            .map(|&hit| {
                let v = if hit { 1.0 + unit() } else { -unit() * 1e-3 };
                (v as f32).to_bits()
            })
            .collect();
        let tensors = [Tensor::U32(w)];
        for fraction in [0.25, 0.6] {
            let amount = Amount::Fraction(fraction);
            let two = run(&tensors, None, amount, Scope::Global, true, How::TwoCalls);
            let one = run(&tensors, None, amount, Scope::Global, true, How::Fused);
            let bare = run(
                &tensors,
                None,
                amount,
                Scope::Global,
                true,
                How::FusedNoMasks,
            );
            assert_eq!(one.3, Paths::of(crate::select::Path::BracketMiss));
            assert_eq!(bare.3, one.3);
            assert_eq!((&bare.1, &bare.2), (&two.1, &two.2), "{fraction}");
            assert_eq!((one.0, one.1, one.2), (two.0, two.1, two.2), "{fraction}");
        }
    }

    #[test]
    fn outputs_of_the_wrong_width_or_length_are_refused_before_any_mask_is_written() {
        let w: Vec<u32> = (0..100).map(|i| (i as f32).to_bits()).collect();
        let weights = [Weights::F32(&w)];
        let mut out = vec![9u8; 100];
        let (mut narrow, mut short, mut good) = (vec![0u16; 100], vec![0u32; 99], vec![0u32; 100]);
        let cases: [(Vec<BitsMut<'_>>, &str); 2] = [
            (vec![BitsMut::U16(&mut narrow)], "masks"),
            (vec![BitsMut::U32(&mut short)], "masks"),
        ];
        for (mut masks, arg) in cases {
            let err = select_with_state(
                &weights,
                None,
                Some(&mut [out.as_mut_slice()]),
                &mut masks,
                None,
                Amount::Fraction(0.5),
                Scope::Global,
            )
            .unwrap_err();
            assert!(format!("{err:?}").contains(arg), "{err:?}");
        }
        let mut bad_products = [BitsMut::U16(&mut narrow)];
        let err = select_with_state(
            &weights,
            None,
            Some(&mut [out.as_mut_slice()]),
            &mut [BitsMut::U32(&mut good)],
            Some(&mut bad_products),
            Amount::Fraction(0.5),
            Scope::Global,
        )
        .unwrap_err();
        assert!(format!("{err:?}").contains("products"), "{err:?}");
        assert!(out.iter().all(|&b| b == 9), "no mask byte was written");
        assert!(good.iter().all(|&b| b == 0), "no float mask was written");
    }
}
