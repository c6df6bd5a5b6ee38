//! In-place mask application and survivor counting.
//!
//! Weights are handled as raw bits: zero bits are +0.0 in every IEEE format, so one kernel per
//! element width serves f16, bf16, f32 and f64 alike.

use rayon::prelude::*;

use crate::error::{check_lengths, Error, Result};
use crate::select::{widest, PARALLEL_MIN};

/// Elements per parallel task for the streaming kernels (one read, one write per element).
pub const STREAM_CHUNK: usize = 1 << 16;

/// Run `f` over `STREAM_CHUNK`-sized pieces of `w` (and the matching pieces of `m`), in
/// parallel only when `parallel`.
pub fn stream_chunks<T: Send, F>(w: &mut [T], m: &[u8], parallel: bool, f: F)
where
    F: Fn(&mut [T], &[u8], usize) + Send + Sync,
{
    if parallel {
        w.par_chunks_mut(STREAM_CHUNK)
            .zip(m.par_chunks(STREAM_CHUNK))
            .enumerate()
            .for_each(|(c, (w, m))| f(w, m, c * STREAM_CHUNK));
    } else {
        f(w, m, 0);
    }
}

/// A weight tensor as mutable raw bits of its element width.
#[derive(Debug)]
pub enum BitsMut<'a> {
    U16(&'a mut [u16]),
    U32(&'a mut [u32]),
    U64(&'a mut [u64]),
}

/// A read-only tensor as raw bits of its element width.
#[derive(Clone, Copy, Debug)]
pub enum Bits<'a> {
    U16(&'a [u16]),
    U32(&'a [u32]),
    U64(&'a [u64]),
}

impl BitsMut<'_> {
    pub fn len(&self) -> usize {
        match self {
            BitsMut::U16(x) => x.len(),
            BitsMut::U32(x) => x.len(),
            BitsMut::U64(x) => x.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Bits<'_> {
    pub fn len(&self) -> usize {
        match self {
            Bits::U16(x) => x.len(),
            Bits::U32(x) => x.len(),
            Bits::U64(x) => x.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Element counts of the tensors, for [`check_lengths`].
pub fn sizes(weights: &[BitsMut<'_>]) -> Vec<usize> {
    weights.iter().map(|w| w.len()).collect()
}

/// Check list and element counts of `masks` against `weights` before anything is written.
pub fn check_masks(weights: &[BitsMut<'_>], masks: &[&[u8]]) -> Result<()> {
    if weights.is_empty() {
        return Err(Error::Empty { arg: "weights" });
    }
    check_lengths("masks", &sizes(weights), masks.iter().map(|m| m.len()))
}

/// `w[i] = 0` where `mask[i] == 0`, for every tensor. Validates all inputs first.
pub fn apply_masks(weights: &mut [BitsMut<'_>], masks: &[&[u8]]) -> Result<()> {
    check_masks(weights, masks)?;
    let parallel = sizes(weights).iter().sum::<usize>() >= PARALLEL_MIN;
    for (w, m) in weights.iter_mut().zip(masks) {
        match w {
            BitsMut::U16(w) => apply(w, m, parallel),
            BitsMut::U32(w) => apply(w, m, parallel),
            BitsMut::U64(w) => apply(w, m, parallel),
        }
    }
    Ok(())
}

fn apply<T: Copy + Default + Send + Sync>(w: &mut [T], m: &[u8], parallel: bool) {
    stream_chunks(w, m, parallel, |w, m, _| {
        // An unconditional store of a select vectorises; a conditional store does not.
        widest(|| {
            for (x, &keep) in w.iter_mut().zip(m) {
                *x = if keep != 0 { *x } else { T::default() };
            }
        })
    });
}

/// Number of nonzero (alive) entries of each mask.
pub fn alive_counts(masks: &[&[u8]]) -> Vec<u64> {
    let parallel = masks.iter().map(|m| m.len()).sum::<usize>() >= PARALLEL_MIN;
    masks.iter().map(|m| count_alive(m, parallel)).collect()
}

/// Nonzero bytes of one mask. Masks are 0/1 in practice but any nonzero byte counts as alive.
pub fn count_alive(mask: &[u8], parallel: bool) -> u64 {
    // u32 lanes: a chunk never overflows them, and they keep the loop vectorised.
    let count = |c: &[u8]| c.iter().map(|&b| (b != 0) as u32).sum::<u32>() as u64;
    if parallel {
        mask.par_chunks(STREAM_CHUNK).map(count).sum()
    } else {
        mask.chunks(STREAM_CHUNK).map(count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_zeroes_exactly_the_masked_entries() {
        let mut w: Vec<u32> = (1..=5).map(|x: u32| (x as f32).to_bits()).collect();
        let m = [1u8, 0, 1, 0, 2];
        apply_masks(&mut [BitsMut::U32(&mut w)], &[&m]).unwrap();
        let got: Vec<f32> = w.iter().map(|&b| f32::from_bits(b)).collect();
        assert_eq!(got, [1.0, 0.0, 3.0, 0.0, 5.0]);
        // Idempotent.
        let before = w.clone();
        apply_masks(&mut [BitsMut::U32(&mut w)], &[&m]).unwrap();
        assert_eq!(w, before);
    }

    /// Every length from empty through a few vector widths plus tails, each element width,
    /// against the scalar rule (the loop runs vectorised for the CPU's widest instructions).
    #[test]
    fn apply_matches_the_scalar_rule_at_every_length_and_width() {
        for n in 0..300usize {
            let m: Vec<u8> = (0..n).map(|i| ((i * 7 + n) % 5 % 3) as u8).collect();
            let expect = |i: usize, v: u64| if m[i] != 0 { v } else { 0 };
            let mut a: Vec<u16> = (0..n).map(|i| i as u16 + 1).collect();
            let mut b: Vec<u32> = (0..n).map(|i| i as u32 + 1).collect();
            let mut c: Vec<u64> = (0..n).map(|i| i as u64 + 1).collect();
            let mut ws = [
                BitsMut::U16(&mut a),
                BitsMut::U32(&mut b),
                BitsMut::U64(&mut c),
            ];
            apply_masks(&mut ws, &[&m, &m, &m]).unwrap();
            for i in 0..n {
                let v = i as u64 + 1;
                assert_eq!(
                    (a[i] as u64, b[i] as u64, c[i]),
                    (expect(i, v), expect(i, v), expect(i, v)),
                    "n={n} i={i}"
                );
            }
        }
    }

    #[test]
    fn apply_rejects_mismatches_before_writing() {
        let mut a = vec![7u16; 3];
        let mut b = vec![7u64; 2];
        let err = apply_masks(
            &mut [BitsMut::U16(&mut a), BitsMut::U64(&mut b)],
            &[&[0, 0, 0], &[0]],
        )
        .unwrap_err();
        assert_eq!(
            err,
            Error::Length {
                arg: "masks",
                index: 1,
                expected: 2,
                got: 1
            }
        );
        assert_eq!(a, [7, 7, 7]);
    }

    #[test]
    fn counts_nonzero_bytes() {
        let m: Vec<u8> = (0..200_001).map(|i| (i % 3 == 0) as u8).collect();
        assert_eq!(alive_counts(&[&m, &[]]), vec![66_667, 0]);
    }
}
