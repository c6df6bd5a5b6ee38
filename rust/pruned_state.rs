//! torch's pruned-module state in one pass: a float mask and the masked weight.
//!
//! `torch.nn.utils.prune` keeps, per pruned parameter, the mask in the parameter's dtype and
//! the product `mask * orig`. From a bool mask, torch ops make them in a conversion pass and a
//! multiply pass over fresh pages (at BERT scale more time than the selection); here both come
//! from one read of the weights. The product is a float multiply, so a pruned entry is what
//! torch's product gives (-0.0 for a negative weight, NaN for an infinite one); bf16 and f16
//! weights get the same values from their bits ([`half_floats`]). f32 and f64 outputs far
//! larger than the caches are written past them ([`crate::nontemporal`]).

use std::ops::Mul;

use rayon::prelude::*;

use crate::error::{check_lengths, Error, Result};
use crate::magnitude::Weights;
use crate::mask::{Bits, BitsMut, STREAM_CHUNK};
use crate::nontemporal;
use crate::select::{widest, PARALLEL_MIN};

mod half_floats;
mod selected;
mod survivors;

pub use selected::select_with_state;
pub use survivors::ones_of;

/// An element width of raw bits: its slices out of the width-tagged views.
trait Width: Copy + PartialEq + Send + Sync + Sized {
    /// The tensor's bits if they are this width.
    fn of(bits: Bits<'_>) -> Option<&[Self]>;
    /// [`Width::of`] for an output.
    fn of_mut<'a>(bits: &'a mut BitsMut<'_>) -> Option<&'a mut [Self]>;
}

macro_rules! impl_width {
    ($bits:ty, $variant:ident) => {
        impl Width for $bits {
            fn of(bits: Bits<'_>) -> Option<&[$bits]> {
                match bits {
                    Bits::$variant(b) => Some(b),
                    _ => None,
                }
            }
            fn of_mut<'a>(bits: &'a mut BitsMut<'_>) -> Option<&'a mut [$bits]> {
                match bits {
                    BitsMut::$variant(b) => Some(b),
                    _ => None,
                }
            }
        }
    };
}

impl_width!(u16, U16);
impl_width!(u32, U32);
impl_width!(u64, U64);

/// One tensor's arguments (weights, previous mask, mask, product) as slices of width `T`.
type Slices<'a, T> = (&'a [T], Option<&'a [T]>, &'a mut [T], Option<&'a mut [T]>);

/// [`Slices`] of arguments that [`mask_products`] checked to be `T`'s width.
fn slices<'a, T: Width>(
    w: Bits<'a>,
    previous: Option<Bits<'a>>,
    mask: &'a mut BitsMut<'_>,
    product: Option<&'a mut BitsMut<'_>>,
) -> Slices<'a, T> {
    const CHECKED: &str = "widths were checked above";
    (
        T::of(w).expect(CHECKED),
        previous.map(|q| T::of(q).expect(CHECKED)),
        T::of_mut(mask).expect(CHECKED),
        product.map(|p| T::of_mut(p).expect(CHECKED)),
    )
}

/// A float type as its raw bits.
trait Float: Copy + Send + Sync + PartialEq + Mul<Output = Self> {
    type Bits: Width;
    const ONE: Self;
    const ZERO: Self;
    fn from_bits(bits: Self::Bits) -> Self;
    fn to_bits(self) -> Self::Bits;
}

/// [`Float`] for a float type and its bits' type.
macro_rules! impl_float {
    ($float:ty, $bits:ty) => {
        impl Float for $float {
            type Bits = $bits;
            const ONE: $float = 1.0;
            const ZERO: $float = 0.0;
            #[inline(always)]
            fn from_bits(bits: $bits) -> $float {
                <$float>::from_bits(bits)
            }
            #[inline(always)]
            fn to_bits(self) -> $bits {
                <$float>::to_bits(self)
            }
        }
    };
}

impl_float!(f32, u32);
impl_float!(f64, u64);

/// For every tensor: `masks[i] = keep[i] != 0 ? 1.0 : 0.0`, or where a `previous` mask is
/// given torch's combination of the two ([`combined`]), and, unless `products` is None (the
/// caller multiplies under autograd), `products[i] = masks[i] * w[i]`: float multiplies in the
/// weights' float type (f16, bf16, f32 or f64; masks, products and previous masks are bits of
/// the same width). Validates all inputs first.
pub fn mask_products(
    weights: &[Weights<'_>],
    keep: &[&[u8]],
    previous: &[Option<Bits<'_>>],
    masks: &mut [BitsMut<'_>],
    mut products: Option<&mut [BitsMut<'_>]>,
) -> Result<()> {
    let sizes = check_outputs(weights, masks, products.as_deref())?;
    check_lengths("keep", &sizes, keep.iter().map(|k| k.len()))?;
    if previous.len() != weights.len() {
        return Err(Error::Argument {
            arg: "previous",
            message: format!("{} entries for {} tensors", previous.len(), weights.len()),
        });
    }
    for (index, (p, &size)) in previous.iter().zip(&sizes).enumerate() {
        match p {
            Some(p) if p.len() != size => {
                return Err(Error::Length {
                    arg: "previous",
                    index,
                    expected: size,
                    got: p.len(),
                })
            }
            _ => {}
        }
        let same_previous = match p {
            None => true,
            Some(q) => matches!(
                (bits_of(weights[index]), q),
                (Bits::U16(_), Bits::U16(_))
                    | (Bits::U32(_), Bits::U32(_))
                    | (Bits::U64(_), Bits::U64(_))
            ),
        };
        if !same_previous {
            return Err(Error::Width {
                arg: "previous",
                index,
            });
        }
    }
    let run = Run {
        parallel: sizes.iter().sum::<usize>() >= PARALLEL_MIN,
        stream: streamed(weights, products.is_some()),
    };
    for (index, ((w, k), m)) in weights.iter().zip(keep).zip(masks.iter_mut()).enumerate() {
        let p = products.as_deref_mut().map(|p| &mut p[index]);
        fill_any(*w, previous[index], m, p, k, run);
    }
    Ok(())
}

/// At least one tensor, and masks (and products) of each weight's length and width. Returns
/// the weights' lengths.
fn check_outputs(
    weights: &[Weights<'_>],
    masks: &[BitsMut<'_>],
    products: Option<&[BitsMut<'_>]>,
) -> Result<Vec<usize>> {
    if weights.is_empty() {
        return Err(Error::Empty { arg: "weights" });
    }
    let sizes: Vec<usize> = weights.iter().map(|w| w.len()).collect();
    check_lengths("masks", &sizes, masks.iter().map(|m| m.len()))?;
    if let Some(products) = products {
        check_lengths("products", &sizes, products.iter().map(|p| p.len()))?;
    }
    for (index, w) in weights.iter().map(|&w| bits_of(w)).enumerate() {
        let product = products.map(|p| &p[index]);
        for (arg, out) in [("masks", Some(&masks[index])), ("products", product)] {
            let same = match out {
                None => true,
                Some(out) => matches!(
                    (w, out),
                    (Bits::U16(_), BitsMut::U16(_))
                        | (Bits::U32(_), BitsMut::U32(_))
                        | (Bits::U64(_), BitsMut::U64(_))
                ),
            };
            if !same {
                return Err(Error::Width { arg, index });
            }
        }
    }
    Ok(sizes)
}

/// Whether a call's outputs are streamed past the caches: the f32 and f64 ones when they dwarf
/// them; 16-bit ones measured no faster streamed (their loops are not bound by the stores).
fn streamed(weights: &[Weights<'_>], products: bool) -> bool {
    let wide_bytes: usize = weights
        .iter()
        .map(|w| match w {
            Weights::F32(x) => std::mem::size_of_val(*x),
            Weights::F64(x) => std::mem::size_of_val(*x),
            Weights::Bf16(_) | Weights::F16(_) => 0,
        })
        .sum();
    nontemporal::wanted(wide_bytes * if products { 2 } else { 1 })
}

/// One tensor's mask (and product) from its `keep` bytes, by its float type.
fn fill_any(
    w: Weights<'_>,
    previous: Option<Bits<'_>>,
    mask: &mut BitsMut<'_>,
    product: Option<&mut BitsMut<'_>>,
    keep: &[u8],
    run: Run,
) {
    let bits = bits_of(w);
    match w {
        Weights::F32(_) => fill_tensor::<f32>(slices(bits, previous, mask, product), keep, run),
        Weights::F64(_) => fill_tensor::<f64>(slices(bits, previous, mask, product), keep, run),
        Weights::Bf16(_) => half_floats::fill::<half_floats::Bf16>(
            slices(bits, previous, mask, product),
            keep,
            run.parallel,
        ),
        Weights::F16(_) => half_floats::fill::<half_floats::F16>(
            slices(bits, previous, mask, product),
            keep,
            run.parallel,
        ),
    }
}

/// The weights' bits, tagged by width only (what the outputs are checked against).
fn bits_of(w: Weights<'_>) -> Bits<'_> {
    match w {
        Weights::F16(x) | Weights::Bf16(x) => Bits::U16(x),
        Weights::F32(x) => Bits::U32(x),
        Weights::F64(x) => Bits::U64(x),
    }
}

/// [`fill`] for one tensor's [`slices`].
fn fill_tensor<F: Float>((w, previous, mask, product): Slices<'_, F::Bits>, keep: &[u8], run: Run) {
    fill::<F>(w, keep, previous, mask, product, run)
}

fn factor<F: Float>(keep: u8) -> F {
    if keep != 0 {
        F::ONE
    } else {
        F::ZERO
    }
}

/// torch's mask after pruning again an entry whose mask was `previous`: an entry at 1 was
/// ranked and takes `keep`; any other value was not, and torch's `PruningContainer`
/// multiplies it in once more (0.5 becomes 0.25).
#[inline(always)]
fn combined<F: Float>(previous: F, keep: u8) -> F {
    let again = if previous == F::ONE {
        factor::<F>(keep)
    } else {
        previous
    };
    previous * again
}

fn fill<F: Float>(
    w: &[F::Bits],
    keep: &[u8],
    previous: Option<&[F::Bits]>,
    mask: &mut [F::Bits],
    product: Option<&mut [F::Bits]>,
    run: Run,
) {
    // One piece of the tensor, starting at element `at`; each case its own plain loop, which
    // LLVM vectorises (a per-element branch on the options would not), over the piece or, when
    // streaming, over each line's worth of it.
    let piece = |at: usize, mask: &mut [F::Bits], product: Option<&mut [F::Bits]>| {
        let end = at + mask.len();
        let (w, keep) = (&w[at..end], &keep[at..end]);
        let previous = previous.map(|p| &p[at..end]);
        widest(
            #[inline(always)]
            || match (previous, product) {
                (None, None) => nontemporal::by_lines(run.stream, mask, None, |r, mask, _| {
                    for (&k, m) in keep[r].iter().zip(mask) {
                        *m = factor::<F>(k).to_bits();
                    }
                }),
                (Some(previous), None) => {
                    nontemporal::by_lines(run.stream, mask, None, |r, mask, _| {
                        for ((&k, &q), m) in keep[r.clone()].iter().zip(&previous[r]).zip(mask) {
                            *m = combined::<F>(F::from_bits(q), k).to_bits();
                        }
                    })
                }
                (None, Some(product)) => {
                    nontemporal::by_lines(run.stream, mask, Some(product), |r, mask, product| {
                        let product = product.expect("products");
                        let inputs = w[r.clone()].iter().zip(&keep[r]);
                        for ((&x, &k), (m, p)) in inputs.zip(mask.iter_mut().zip(product)) {
                            let f = factor::<F>(k);
                            *m = f.to_bits();
                            *p = (f * F::from_bits(x)).to_bits();
                        }
                    })
                }
                (Some(previous), Some(product)) => {
                    nontemporal::by_lines(run.stream, mask, Some(product), |r, mask, product| {
                        let product = product.expect("products");
                        let inputs = w[r.clone()].iter().zip(&keep[r.clone()]).zip(&previous[r]);
                        for (((&x, &k), &q), (m, p)) in inputs.zip(mask.iter_mut().zip(product)) {
                            let f = combined::<F>(F::from_bits(q), k);
                            *m = f.to_bits();
                            *p = (f * F::from_bits(x)).to_bits();
                        }
                    })
                }
            },
        )
    };
    in_pieces(mask, product, run.parallel, piece);
}

/// How a call writes its outputs: on several threads, past the caches.
#[derive(Clone, Copy)]
struct Run {
    parallel: bool,
    /// Non-temporal stores ([`nontemporal`]): the call's outputs dwarf the caches.
    stream: bool,
}

/// `piece(at, mask, product)` over [`STREAM_CHUNK`]-sized pieces of the outputs (`at`: the
/// piece's first element), in parallel only when `parallel`.
fn in_pieces<T: Send>(
    mask: &mut [T],
    product: Option<&mut [T]>,
    parallel: bool,
    piece: impl Fn(usize, &mut [T], Option<&mut [T]>) + Send + Sync,
) {
    match (product, parallel) {
        (product, false) => piece(0, mask, product),
        (None, true) => mask
            .par_chunks_mut(STREAM_CHUNK)
            .enumerate()
            .for_each(|(c, m)| piece(c * STREAM_CHUNK, m, None)),
        (Some(product), true) => mask
            .par_chunks_mut(STREAM_CHUNK)
            .zip(product.par_chunks_mut(STREAM_CHUNK))
            .enumerate()
            .for_each(|(c, (m, p))| piece(c * STREAM_CHUNK, m, Some(p))),
    }
}

#[cfg(test)]
mod tests;
