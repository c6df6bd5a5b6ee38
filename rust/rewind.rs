//! Rewinding: survivors take their snapshot value, pruned weights become zero, in place.

use crate::error::{check_lengths, Error, Result};
use crate::mask::{self, check_masks, stream_chunks, Bits, BitsMut};
use crate::select::{widest, PARALLEL_MIN};

/// `w[i] = mask[i] ? snapshot[i] : 0` for every tensor. Validates all inputs first.
pub fn rewind(weights: &mut [BitsMut<'_>], snapshots: &[Bits<'_>], masks: &[&[u8]]) -> Result<()> {
    check_masks(weights, masks)?;
    check_lengths(
        "snapshots",
        &mask::sizes(weights),
        snapshots.iter().map(|s| s.len()),
    )?;
    for (index, (w, s)) in weights.iter().zip(snapshots).enumerate() {
        let same_width = matches!(
            (w, s),
            (BitsMut::U16(_), Bits::U16(_))
                | (BitsMut::U32(_), Bits::U32(_))
                | (BitsMut::U64(_), Bits::U64(_))
        );
        if !same_width {
            return Err(Error::Width {
                arg: "snapshots",
                index,
            });
        }
    }
    let parallel = mask::sizes(weights).iter().sum::<usize>() >= PARALLEL_MIN;
    for ((w, s), m) in weights.iter_mut().zip(snapshots).zip(masks) {
        match (w, s) {
            (BitsMut::U16(w), Bits::U16(s)) => copy_survivors(w, s, m, parallel),
            (BitsMut::U32(w), Bits::U32(s)) => copy_survivors(w, s, m, parallel),
            (BitsMut::U64(w), Bits::U64(s)) => copy_survivors(w, s, m, parallel),
            _ => unreachable!("widths were checked above"),
        }
    }
    Ok(())
}

fn copy_survivors<T: Copy + Default + Send + Sync>(w: &mut [T], s: &[T], m: &[u8], parallel: bool) {
    stream_chunks(w, m, parallel, |w, m, start| {
        widest(|| {
            for ((x, &y), &keep) in w.iter_mut().zip(&s[start..start + m.len()]).zip(m) {
                *x = if keep != 0 { y } else { T::default() };
            }
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survivors_take_snapshot_values_and_pruned_become_zero() {
        let mut w = vec![9u64, 9, 9];
        let s = [1u64, 2, 3];
        rewind(&mut [BitsMut::U64(&mut w)], &[Bits::U64(&s)], &[&[1, 0, 1]]).unwrap();
        assert_eq!(w, [1, 0, 3]);
    }

    /// Vector bodies and tails of every element width against the scalar rule.
    #[test]
    fn rewind_matches_the_scalar_rule_at_every_length_and_width() {
        for n in 0..300usize {
            let m: Vec<u8> = (0..n).map(|i| ((i * 5 + n) % 7 % 2) as u8).collect();
            let s16: Vec<u16> = (0..n).map(|i| i as u16 + 1).collect();
            let s32: Vec<u32> = (0..n).map(|i| i as u32 + 1).collect();
            let s64: Vec<u64> = (0..n).map(|i| i as u64 + 1).collect();
            let (mut a, mut b, mut c) = (vec![9u16; n], vec![9u32; n], vec![9u64; n]);
            let mut ws = [
                BitsMut::U16(&mut a),
                BitsMut::U32(&mut b),
                BitsMut::U64(&mut c),
            ];
            let snaps = [Bits::U16(&s16), Bits::U32(&s32), Bits::U64(&s64)];
            rewind(&mut ws, &snaps, &[&m, &m, &m]).unwrap();
            for i in 0..n {
                let v = if m[i] != 0 { i as u64 + 1 } else { 0 };
                assert_eq!((a[i] as u64, b[i] as u64, c[i]), (v, v, v), "n={n} i={i}");
            }
        }
    }

    #[test]
    fn width_mismatch_is_an_error_and_writes_nothing() {
        let mut w = vec![9u32; 2];
        let s = [1u16, 2];
        let err = rewind(&mut [BitsMut::U32(&mut w)], &[Bits::U16(&s)], &[&[1, 1]]).unwrap_err();
        assert_eq!(
            err,
            Error::Width {
                arg: "snapshots",
                index: 0
            }
        );
        assert_eq!(w, [9, 9]);
    }
}
