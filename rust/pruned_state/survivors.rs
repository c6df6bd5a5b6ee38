//! The survivors torch.prune ranks again: the entries of a float mask exactly 1.

use rayon::prelude::*;

use super::half_floats::{Bf16, Half, F16};
use crate::error::{Error, Result};
use crate::magnitude::Weights;
use crate::mask::STREAM_CHUNK;
use crate::select::{widest, PARALLEL_MIN};

/// `out[t][i] = 1` where entry `i` of the float mask `masks[t]` is exactly 1.0 (compared as
/// bits: 1.0 has one pattern in each float type), else 0; every byte 1 where `masks[t]` is
/// None (a tensor never masked). torch's `PruningContainer` ranks only those entries again: a
/// pruned 0 stays pruned and a custom value (0.5) is multiplied in, not ranked.
pub fn ones_of(masks: &[Option<Weights<'_>>], out: &mut [&mut [u8]]) -> Result<()> {
    if masks.len() != out.len() {
        return Err(Error::Argument {
            arg: "masks",
            message: format!("{} entries for {} outputs", masks.len(), out.len()),
        });
    }
    for (index, (m, o)) in masks.iter().zip(out.iter()).enumerate() {
        if let Some(m) = m {
            if m.len() != o.len() {
                return Err(Error::Length {
                    arg: "masks",
                    index,
                    expected: o.len(),
                    got: m.len(),
                });
            }
        }
    }
    let total: usize = out.iter().map(|o| o.len()).sum();
    // Pieces of every tensor in one list: a model's many small masks still spread over the
    // threads.
    let mut pieces: Vec<(Option<Weights<'_>>, &mut [u8])> = Vec::new();
    for (m, o) in masks.iter().zip(out.iter_mut()) {
        for (c, piece) in o.chunks_mut(STREAM_CHUNK).enumerate() {
            let start = c * STREAM_CHUNK;
            pieces.push((m.map(|m| m.slice(start, start + piece.len())), piece));
        }
    }
    let run = |(mask, out): &mut (Option<Weights<'_>>, &mut [u8])| match mask {
        None => out.fill(1),
        Some(mask) => widest(
            #[inline(always)]
            || match *mask {
                Weights::F16(b) => equal(b, F16::ONE, out),
                Weights::Bf16(b) => equal(b, Bf16::ONE, out),
                Weights::F32(b) => equal(b, 1f32.to_bits(), out),
                Weights::F64(b) => equal(b, 1f64.to_bits(), out),
            },
        ),
    };
    if total >= PARALLEL_MIN {
        pieces.par_iter_mut().for_each(run);
    } else {
        pieces.iter_mut().for_each(run);
    }
    Ok(())
}

#[inline(always)]
fn equal<T: Copy + PartialEq>(bits: &[T], one: T, out: &mut [u8]) {
    for (o, &b) in out.iter_mut().zip(bits) {
        *o = (b == one) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_exactly_one_are_the_survivors_in_every_float_type() {
        let n = PARALLEL_MIN + 70_001; // parallel, with a partial last piece
        let values = [
            1.0,
            0.0,
            -0.0,
            0.5,
            -1.0,
            f64::INFINITY,
            f64::NAN,
            1.0 + 1e-3,
        ];
        let pick = |i: usize| values[(i * 7 + i / 3) % values.len()];
        let f64s: Vec<u64> = (0..n).map(|i| pick(i).to_bits()).collect();
        let f32s: Vec<u32> = (0..n).map(|i| (pick(i) as f32).to_bits()).collect();
        let bf16s: Vec<u16> = (0..99)
            .map(|i| half::bf16::from_f64(pick(i)).to_bits())
            .collect();
        let f16s: Vec<u16> = (0..5)
            .map(|i| half::f16::from_f64(pick(i)).to_bits())
            .collect();
        let masks = [
            Some(Weights::F64(&f64s)),
            Some(Weights::F32(&f32s)),
            None,
            Some(Weights::Bf16(&bf16s)),
            Some(Weights::F16(&f16s)),
        ];
        let mut out: Vec<Vec<u8>> = [n, n, 1000, 99, 5].iter().map(|&k| vec![7; k]).collect();
        let mut views: Vec<&mut [u8]> = out.iter_mut().map(|o| o.as_mut_slice()).collect();
        ones_of(&masks, &mut views).unwrap();
        for (t, o) in out.iter().enumerate() {
            for (i, &b) in o.iter().enumerate() {
                // bf16 rounds 1 + 1e-3 to 1.0 exactly; every other type keeps it apart.
                let one = pick(i) == 1.0 || (t == 3 && pick(i) == 1.0 + 1e-3);
                let want = if t == 2 { 1 } else { one as u8 };
                assert_eq!(b, want, "tensor {t} entry {i}");
            }
        }
    }

    #[test]
    fn mismatched_lengths_are_refused_before_anything_is_written() {
        let f32s = vec![1f32.to_bits(); 10];
        let (mut a, mut b) = (vec![7u8; 10], vec![7u8; 11]);
        let err = ones_of(
            &[Some(Weights::F32(&f32s)), Some(Weights::F32(&f32s))],
            &mut [a.as_mut_slice(), b.as_mut_slice()],
        )
        .unwrap_err();
        assert!(matches!(err, Error::Length { index: 1, .. }), "{err:?}");
        assert!(a.iter().chain(&b).all(|&x| x == 7));
        let err = ones_of(&[None], &mut [a.as_mut_slice(), b.as_mut_slice()]).unwrap_err();
        assert!(
            matches!(err, Error::Argument { arg: "masks", .. }),
            "{err:?}"
        );
    }
}
