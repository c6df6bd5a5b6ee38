//! torch's pruned-module state in one pass: a float mask and the masked weight.
//!
//! `torch.nn.utils.prune` keeps, per pruned parameter, the mask in the parameter's dtype and
//! the product `mask * orig`. From a bool mask, torch ops make them in a conversion pass and a
//! multiply pass over fresh pages (at BERT scale more time than the selection); here both come
//! from one read of the weights. The product is a float multiply, so a pruned entry is what
//! torch's product gives (-0.0 for a negative weight, NaN for an infinite one).

use std::ops::Mul;

use rayon::prelude::*;

use crate::error::{check_lengths, Error, Result};
use crate::mask::{Bits, BitsMut, STREAM_CHUNK};
use crate::select::{widest, PARALLEL_MIN};

/// A float type as its raw bits.
trait Float: Copy + Send + Sync + Mul<Output = Self> {
    type Bits: Copy + Send + Sync;
    const ONE: Self;
    const ZERO: Self;
    fn from_bits(bits: Self::Bits) -> Self;
    fn to_bits(self) -> Self::Bits;
}

impl Float for f32 {
    type Bits = u32;
    const ONE: f32 = 1.0;
    const ZERO: f32 = 0.0;
    #[inline(always)]
    fn from_bits(bits: u32) -> f32 {
        f32::from_bits(bits)
    }
    #[inline(always)]
    fn to_bits(self) -> u32 {
        f32::to_bits(self)
    }
}

impl Float for f64 {
    type Bits = u64;
    const ONE: f64 = 1.0;
    const ZERO: f64 = 0.0;
    #[inline(always)]
    fn from_bits(bits: u64) -> f64 {
        f64::from_bits(bits)
    }
    #[inline(always)]
    fn to_bits(self) -> u64 {
        f64::to_bits(self)
    }
}

/// For every tensor: `masks[i] = keep[i] != 0 ? 1.0 : 0.0` and, unless `products` is None
/// (the caller multiplies under autograd), `products[i] = masks[i] * w[i]`, in the weights'
/// float type (float32 or float64 bits). Validates all inputs first.
pub fn mask_products(
    weights: &[Bits<'_>],
    keep: &[&[u8]],
    masks: &mut [BitsMut<'_>],
    mut products: Option<&mut [BitsMut<'_>]>,
) -> Result<()> {
    if weights.is_empty() {
        return Err(Error::Empty { arg: "weights" });
    }
    let sizes: Vec<usize> = weights.iter().map(|w| w.len()).collect();
    check_lengths("keep", &sizes, keep.iter().map(|k| k.len()))?;
    check_lengths("masks", &sizes, masks.iter().map(|m| m.len()))?;
    if let Some(products) = products.as_deref() {
        check_lengths("products", &sizes, products.iter().map(|p| p.len()))?;
    }
    for (index, w) in weights.iter().enumerate() {
        if let Bits::U16(_) = w {
            return Err(Error::Argument {
                arg: "weights",
                message: format!("tensor {index} is 16-bit; float32 or float64 only"),
            });
        }
        let product = products.as_deref().map(|p| &p[index]);
        for (arg, out) in [("masks", Some(&masks[index])), ("products", product)] {
            let same = match out {
                None => true,
                Some(out) => matches!(
                    (w, out),
                    (Bits::U32(_), BitsMut::U32(_)) | (Bits::U64(_), BitsMut::U64(_))
                ),
            };
            if !same {
                return Err(Error::Width { arg, index });
            }
        }
    }
    let parallel = sizes.iter().sum::<usize>() >= PARALLEL_MIN;
    for (index, ((w, k), m)) in weights.iter().zip(keep).zip(masks.iter_mut()).enumerate() {
        let p = products.as_deref_mut().map(|p| &mut p[index]);
        match (w, m, p) {
            (Bits::U32(w), BitsMut::U32(m), None) => fill::<f32>(w, k, m, None, parallel),
            (Bits::U64(w), BitsMut::U64(m), None) => fill::<f64>(w, k, m, None, parallel),
            (Bits::U32(w), BitsMut::U32(m), Some(BitsMut::U32(p))) => {
                fill::<f32>(w, k, m, Some(p), parallel)
            }
            (Bits::U64(w), BitsMut::U64(m), Some(BitsMut::U64(p))) => {
                fill::<f64>(w, k, m, Some(p), parallel)
            }
            _ => unreachable!("widths were checked above"),
        }
    }
    Ok(())
}

fn factor<F: Float>(keep: u8) -> F {
    if keep != 0 {
        F::ONE
    } else {
        F::ZERO
    }
}

fn fill<F: Float>(
    w: &[F::Bits],
    keep: &[u8],
    mask: &mut [F::Bits],
    product: Option<&mut [F::Bits]>,
    parallel: bool,
) {
    let masks_only = |keep: &[u8], mask: &mut [F::Bits]| {
        widest(|| {
            for (&k, m) in keep.iter().zip(mask.iter_mut()) {
                *m = factor::<F>(k).to_bits();
            }
        })
    };
    let both = |w: &[F::Bits], keep: &[u8], mask: &mut [F::Bits], product: &mut [F::Bits]| {
        widest(|| {
            for (((&x, &k), m), p) in w
                .iter()
                .zip(keep)
                .zip(mask.iter_mut())
                .zip(product.iter_mut())
            {
                let f = factor::<F>(k);
                *m = f.to_bits();
                *p = (f * F::from_bits(x)).to_bits();
            }
        })
    };
    match (product, parallel) {
        (None, false) => masks_only(keep, mask),
        (None, true) => keep
            .par_chunks(STREAM_CHUNK)
            .zip(mask.par_chunks_mut(STREAM_CHUNK))
            .for_each(|(k, m)| masks_only(k, m)),
        (Some(product), false) => both(w, keep, mask, product),
        (Some(product), true) => w
            .par_chunks(STREAM_CHUNK)
            .zip(keep.par_chunks(STREAM_CHUNK))
            .zip(mask.par_chunks_mut(STREAM_CHUNK))
            .zip(product.par_chunks_mut(STREAM_CHUNK))
            .for_each(|(((w, k), m), p)| both(w, k, m, p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_are_one_or_zero_and_products_are_float_products() {
        let w: Vec<f32> = vec![1.5, -2.0, -3.0, f32::INFINITY, f32::NEG_INFINITY, 0.25];
        let keep = [1u8, 0, 2, 0, 1, 0];
        let bits: Vec<u32> = w.iter().map(|x| x.to_bits()).collect();
        let (mut m, mut p) = (vec![7u32; 6], vec![7u32; 6]);
        mask_products(
            &[Bits::U32(&bits)],
            &[&keep],
            &mut [BitsMut::U32(&mut m)],
            Some(&mut [BitsMut::U32(&mut p)]),
        )
        .unwrap();
        let masks: Vec<f32> = m.iter().map(|&b| f32::from_bits(b)).collect();
        assert_eq!(masks, [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
        for i in 0..6 {
            let expect = masks[i] * w[i];
            let got = f32::from_bits(p[i]);
            // Bit for bit where defined (the sign of a pruned negative's zero); NaN for 0 * inf.
            assert!(
                got.to_bits() == expect.to_bits() || (got.is_nan() && expect.is_nan()),
                "{i}"
            );
        }
        assert_eq!(p[1], (-0.0f32).to_bits());
        assert!(f32::from_bits(p[3]).is_nan());
    }

    #[test]
    fn every_length_and_both_widths_match_the_scalar_rule() {
        for n in 0..200usize {
            let keep: Vec<u8> = (0..n).map(|i| ((i * 3 + n) % 4 % 2) as u8).collect();
            let w32: Vec<u32> = (0..n).map(|i| (i as f32 - 50.0).to_bits()).collect();
            let w64: Vec<u64> = (0..n).map(|i| (50.0 - i as f64).to_bits()).collect();
            let (mut m32, mut p32, mut m64, mut p64) =
                (vec![0; n], vec![0; n], vec![0; n], vec![0; n]);
            mask_products(
                &[Bits::U32(&w32), Bits::U64(&w64)],
                &[&keep, &keep],
                &mut [BitsMut::U32(&mut m32), BitsMut::U64(&mut m64)],
                Some(&mut [BitsMut::U32(&mut p32), BitsMut::U64(&mut p64)]),
            )
            .unwrap();
            for i in 0..n {
                let f = if keep[i] != 0 { 1.0 } else { 0.0 };
                assert_eq!(m32[i], (f as f32).to_bits(), "n={n} i={i}");
                assert_eq!(m64[i], f64::to_bits(f), "n={n} i={i}");
                assert_eq!(
                    p32[i],
                    (f as f32 * f32::from_bits(w32[i])).to_bits(),
                    "n={n} i={i}"
                );
                assert_eq!(
                    p64[i],
                    (f * f64::from_bits(w64[i])).to_bits(),
                    "n={n} i={i}"
                );
            }
        }
    }

    #[test]
    fn without_products_only_the_masks_are_written() {
        let w: Vec<u64> = [1.0f64, -2.0, 3.0].iter().map(|x| x.to_bits()).collect();
        let mut m = vec![7u64; 3];
        mask_products(
            &[Bits::U64(&w)],
            &[&[0, 1, 0]],
            &mut [BitsMut::U64(&mut m)],
            None,
        )
        .unwrap();
        assert_eq!(m, [0.0f64, 1.0, 0.0].map(f64::to_bits));
    }

    #[test]
    fn bad_inputs_are_refused_before_anything_is_written() {
        let w = [1u32, 2];
        let w16 = [1u16, 2];
        let (mut m, mut p) = (vec![7u32; 2], vec![7u32; 2]);
        let mut m64 = vec![7u64; 2];
        let err = |r: Result<()>| r.unwrap_err();
        assert_eq!(
            err(mask_products(
                &[Bits::U32(&w)],
                &[&[1]],
                &mut [BitsMut::U32(&mut m)],
                Some(&mut [BitsMut::U32(&mut p)])
            )),
            Error::Length {
                arg: "keep",
                index: 0,
                expected: 2,
                got: 1
            }
        );
        assert_eq!(
            err(mask_products(
                &[Bits::U32(&w)],
                &[&[1, 0]],
                &mut [BitsMut::U64(&mut m64)],
                Some(&mut [BitsMut::U32(&mut p)])
            )),
            Error::Width {
                arg: "masks",
                index: 0
            }
        );
        let mut m16 = vec![7u16; 2];
        let mut p16 = vec![7u16; 2];
        assert!(matches!(
            err(mask_products(
                &[Bits::U16(&w16)],
                &[&[1, 0]],
                &mut [BitsMut::U16(&mut m16)],
                Some(&mut [BitsMut::U16(&mut p16)])
            )),
            Error::Argument { arg: "weights", .. }
        ));
        assert_eq!((m, p, m64), (vec![7; 2], vec![7; 2], vec![7; 2]));
    }
}
