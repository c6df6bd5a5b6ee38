//! torch's pruned state for bf16 and f16 weights, from their bits.
//!
//! A float multiply per element would convert each operand to f32 and back, and f16 has no
//! conversion instruction in baseline x86-64: in software that costs more than the pass. But a
//! mask that is 0 or 1 (every mask `prune` makes, unless a custom one was installed) needs no
//! multiply: the product is the weight, or zero with the weight's sign (NaN for an infinite
//! one), which selects on the bits give and LLVM vectorises. A piece whose previous mask holds
//! any other value takes the exact route: the multiply of the widened values, rounded once, as
//! torch computes it.

use super::{in_pieces, Slices};
use crate::select::widest;

/// A 16-bit float format, by its bits.
pub(crate) trait Half {
    const ONE: u16;
    /// Magnitude bits of infinity; a NaN lies above.
    const INF: u16;
    /// The bit that makes a NaN quiet.
    const QUIET: u16;
    /// `a * b` in this format, rounded once (the exact route).
    fn mul(a: u16, b: u16) -> u16;
}

pub(crate) struct Bf16;
pub(crate) struct F16;

impl Half for Bf16 {
    const ONE: u16 = 0x3f80;
    const INF: u16 = 0x7f80;
    const QUIET: u16 = 0x0040;
    fn mul(a: u16, b: u16) -> u16 {
        (half::bf16::from_bits(a) * half::bf16::from_bits(b)).to_bits()
    }
}

impl Half for F16 {
    const ONE: u16 = 0x3c00;
    const INF: u16 = 0x7c00;
    const QUIET: u16 = 0x0200;
    fn mul(a: u16, b: u16) -> u16 {
        (half::f16::from_bits(a) * half::f16::from_bits(b)).to_bits()
    }
}

#[inline(always)]
fn factor<H: Half>(keep: u8) -> u16 {
    if keep != 0 {
        H::ONE
    } else {
        0
    }
}

/// `+0 * w`: zero with `w`'s sign, or a quiet NaN for an infinite or NaN `w`.
#[inline(always)]
fn zero_times<H: Half>(w: u16) -> u16 {
    if w & 0x7fff >= H::INF {
        w | H::INF | H::QUIET
    } else {
        w & 0x8000
    }
}

/// `m * w` for a mask value of 0 or 1.
#[inline(always)]
fn binary_product<H: Half>(m: u16, w: u16) -> u16 {
    if m == H::ONE {
        w
    } else {
        zero_times::<H>(w)
    }
}

/// Whether every previous mask value is 1 or ±0, so the combined mask is 0 or 1 and the
/// products need no multiply (see [`super::combined`]: ±0 squares to +0).
fn binary<H: Half>(previous: &[u16]) -> bool {
    previous
        .iter()
        .fold(true, |all, &q| all & ((q == H::ONE) | (q & 0x7fff == 0)))
}

/// [`super::mask_products`] for one bf16 or f16 tensor's [`super::slices`].
pub(super) fn fill<H: Half>(
    (w, previous, mask, product): Slices<'_, u16>,
    keep: &[u8],
    parallel: bool,
) {
    let piece = |at: usize, mask: &mut [u16], product: Option<&mut [u16]>| {
        let end = at + mask.len();
        let (w, keep) = (&w[at..end], &keep[at..end]);
        let previous = previous.map(|q| &q[at..end]);
        widest(|| fill_piece::<H>(w, keep, previous, mask, product))
    };
    in_pieces(mask, product, parallel, piece);
}

/// One piece: each case its own plain loop, which LLVM vectorises.
#[inline(always)]
fn fill_piece<H: Half>(
    w: &[u16],
    keep: &[u8],
    previous: Option<&[u16]>,
    mask: &mut [u16],
    product: Option<&mut [u16]>,
) {
    match (previous, product) {
        (None, None) => {
            for (&k, m) in keep.iter().zip(mask) {
                *m = factor::<H>(k);
            }
        }
        (None, Some(product)) => {
            for (((&x, &k), m), p) in w.iter().zip(keep).zip(mask).zip(product) {
                *m = factor::<H>(k);
                *p = binary_product::<H>(*m, x);
            }
        }
        (Some(previous), product) if binary::<H>(previous) => {
            // Arithmetic, not a branch: LLVM left the branchy form of this loop scalar.
            let combined =
                |q: u16, k: u8| H::ONE & (((q == H::ONE) & (k != 0)) as u16).wrapping_neg();
            match product {
                None => {
                    for ((&k, &q), m) in keep.iter().zip(previous).zip(mask) {
                        *m = combined(q, k);
                    }
                }
                Some(product) => {
                    let inputs = w.iter().zip(keep).zip(previous);
                    for (((&x, &k), &q), (m, p)) in inputs.zip(mask.iter_mut().zip(product)) {
                        *m = combined(q, k);
                        *p = binary_product::<H>(*m, x);
                    }
                }
            }
        }
        (Some(previous), mut product) => {
            // A custom mask value somewhere in this piece: torch's multiplies, exactly.
            for (i, ((&k, &q), m)) in keep.iter().zip(previous).zip(mask).enumerate() {
                *m = if q == H::ONE {
                    factor::<H>(k)
                } else {
                    H::mul(q, q)
                };
                if let Some(p) = product.as_deref_mut() {
                    p[i] = H::mul(*m, w[i]);
                }
            }
        }
    }
}
