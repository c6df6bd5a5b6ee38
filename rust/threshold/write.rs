//! Applying a [`Threshold`](super::Threshold) to one tensor: `dst = src` where kept, zero bits
//! (+0.0) where pruned, in one parallel pass over the tensor.

use rayon::prelude::*;

use crate::chunk::{Alive, AllAlive};
use crate::error::{Error, Result};
use crate::magnitude::{Key, Weights};
use crate::mask::{BitsMut, STREAM_CHUNK};

/// Write `src` pruned by the threshold (`key` in a `key_bits`-bit key space) into `dst`, pruning
/// at most `ties` alive weights whose key equals `key`, earliest (row-major) first. Weights dead
/// in `alive` are pruned too. Returns the ties used: calling this on every tensor of the
/// selection in its order, each with the ties the earlier calls left, reproduces the selection.
///
/// Arguments are checked before anything is written. A NaN among the alive weights is an error
/// (naming tensor 0) after which `dst` holds partial output.
pub fn write_pruned(
    src: Weights<'_>,
    alive: Option<&[u8]>,
    dst: BitsMut<'_>,
    key: u64,
    key_bits: u32,
    ties: u64,
) -> Result<u64> {
    write_pruned_counted(src, alive, dst, key, key_bits, ties).map(|w| w.ties)
}

/// What one [`write_pruned_counted`] call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Ties pruned (what [`write_pruned`] returns).
    pub ties: u64,
    /// Weights copied through (alive and not pruned): the caller needs no second pass over
    /// `dst` to count what was pruned.
    pub kept: u64,
}

/// [`write_pruned`], also returning how many weights it kept.
pub fn write_pruned_counted(
    src: Weights<'_>,
    alive: Option<&[u8]>,
    dst: BitsMut<'_>,
    key: u64,
    key_bits: u32,
    ties: u64,
) -> Result<Written> {
    if dst.len() != src.len() {
        return Err(Error::Length {
            arg: "dst",
            index: 0,
            expected: src.len(),
            got: dst.len(),
        });
    }
    if let Some(a) = alive.filter(|a| a.len() != src.len()) {
        return Err(Error::Length {
            arg: "mask",
            index: 0,
            expected: src.len(),
            got: a.len(),
        });
    }
    let wide = match key_bits {
        32 if matches!(src, Weights::F64(_)) => {
            return Err(Error::Argument {
                arg: "key_width_bits",
                message: "float64 weights are ranked with 64-bit keys, got 32".into(),
            })
        }
        32 if key > u32::MAX as u64 => {
            return Err(Error::Argument {
                arg: "key",
                message: format!("{key} does not fit in a 32-bit key"),
            })
        }
        32 => false,
        64 => true,
        other => {
            return Err(Error::Argument {
                arg: "key_width_bits",
                message: format!("expected 32 or 64, got {other}"),
            })
        }
    };
    if wide {
        dispatch::<u64>(src, alive, dst, key, ties)
    } else {
        dispatch::<u32>(src, alive, dst, u32::from_u64(key), ties)
    }
}

fn dispatch<K: Key>(
    src: Weights<'_>,
    alive: Option<&[u8]>,
    dst: BitsMut<'_>,
    key: K,
    ties: u64,
) -> Result<Written> {
    match (src, dst) {
        (Weights::F16(s), BitsMut::U16(d)) => with_alive(s, K::of_f16, alive, d, key, ties),
        (Weights::Bf16(s), BitsMut::U16(d)) => with_alive(s, K::of_bf16, alive, d, key, ties),
        (Weights::F32(s), BitsMut::U32(d)) => with_alive(s, K::of_f32, alive, d, key, ties),
        (Weights::F64(s), BitsMut::U64(d)) => with_alive(s, K::of_f64, alive, d, key, ties),
        _ => Err(Error::Width {
            arg: "dst",
            index: 0,
        }),
    }
}

fn with_alive<K: Key, T: Copy + Default + Send + Sync>(
    src: &[T],
    key: impl Fn(T) -> K + Copy + Send + Sync,
    alive: Option<&[u8]>,
    dst: &mut [T],
    threshold: K,
    ties: u64,
) -> Result<Written> {
    match alive {
        Some(a) => write(src, key, a, dst, threshold, ties),
        None => write(src, key, AllAlive, dst, threshold, ties),
    }
}

/// Chunks per wave while tie budget remains: small enough that restoring the ties past the budget
/// re-reads only cache-warm data, large enough that waiting between waves costs nothing.
const WAVE: usize = 64;

/// While tie budget remains, the tensor is written in waves of [`WAVE`] chunks, ties pruned
/// speculatively: a wave that finds more ties than the budget left restores the excess (only
/// in its own chunks), and everything after is written in one pass with ties kept.
fn write<K: Key, T: Copy + Default + Send + Sync, A: Alive + Send + Sync>(
    src: &[T],
    key: impl Fn(T) -> K + Copy + Send + Sync,
    alive: A,
    dst: &mut [T],
    threshold: K,
    ties: u64,
) -> Result<Written> {
    let (mut left, mut kept) = (ties, 0u64);
    let mut start = 0;
    while start < src.len() {
        let end = match left {
            0 => src.len(),
            _ => (start + WAVE * STREAM_CHUNK).min(src.len()),
        };
        let (s, d) = (&src[start..end], &mut dst[start..end]);
        let a = alive.window(start, end - start);
        let per_chunk = write_wave(s, key, a, d, threshold, left > 0)?;
        let found: u64 = per_chunk.iter().map(|&(ties, _)| ties).sum();
        kept += per_chunk.iter().map(|&(_, k)| k).sum::<u64>();
        if left > 0 && found > left {
            let ties_found: Vec<u64> = per_chunk.iter().map(|&(ties, _)| ties).collect();
            restore_ties(s, key, a, d, threshold, &ties_found, left);
            kept += found - left; // restored ties are kept
        }
        left -= found.min(left);
        start = end;
    }
    Ok(Written {
        ties: ties - left,
        kept,
    })
}

/// Write one wave in parallel; returns the alive ties found and the weights kept per chunk (an
/// error for an alive NaN).
fn write_wave<K: Key, T: Copy + Default + Send + Sync, A: Alive + Send + Sync>(
    src: &[T],
    key: impl Fn(T) -> K + Copy + Send + Sync,
    alive: A,
    dst: &mut [T],
    threshold: K,
    prune_ties: bool,
) -> Result<Vec<(u64, u64)>> {
    let per_chunk: Vec<(u64, u64, bool)> = src
        .par_chunks(STREAM_CHUNK)
        .zip(dst.par_chunks_mut(STREAM_CHUNK))
        .enumerate()
        .map(|(c, (s, d))| {
            let a = alive.window(c * STREAM_CHUNK, s.len());
            write_chunk(s, key, a, d, threshold, prune_ties)
        })
        .collect();
    if per_chunk.iter().any(|&(_, _, nan)| nan) {
        return Err(Error::Nan { index: 0 });
    }
    Ok(per_chunk
        .into_iter()
        .map(|(found, kept, _)| (found, kept))
        .collect())
}

/// Put back the ties of a wave past the first `budget` (they were pruned speculatively).
fn restore_ties<K: Key, T: Copy + Send + Sync, A: Alive + Send + Sync>(
    src: &[T],
    key: impl Fn(T) -> K + Copy + Send + Sync,
    alive: A,
    dst: &mut [T],
    threshold: K,
    found: &[u64],
    budget: u64,
) {
    let mut left = budget;
    let keep_pruned: Vec<Option<u64>> = found
        .iter()
        .map(|&here| {
            let pruned_here = here.min(left);
            left -= pruned_here;
            (pruned_here < here).then_some(pruned_here)
        })
        .collect();
    src.par_chunks(STREAM_CHUNK)
        .zip(dst.par_chunks_mut(STREAM_CHUNK))
        .zip(keep_pruned)
        .enumerate()
        .for_each(|(c, ((s, d), keep))| {
            if let Some(mut skip) = keep {
                let a = alive.window(c * STREAM_CHUNK, s.len());
                for (i, (&s, d)) in s.iter().zip(d.iter_mut()).enumerate() {
                    if a.get(i) && key(s) == threshold {
                        if skip > 0 {
                            skip -= 1;
                        } else {
                            *d = s;
                        }
                    }
                }
            }
        });
}

/// One chunk: returns the alive ties seen, the weights kept and whether an alive weight is NaN.
#[inline(always)]
fn write_chunk<K: Key, T: Copy + Default, A: Alive>(
    src: &[T],
    key: impl Fn(T) -> K + Copy,
    alive: A,
    dst: &mut [T],
    threshold: K,
    prune_ties: bool,
) -> (u64, u64, bool) {
    // Wheels target baseline x86-64; AVX2, where the CPU has it, widens the select loop.
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { write_chunk_avx2(src, key, alive, dst, threshold, prune_ties) };
    }
    write_chunk_portable(src, key, alive, dst, threshold, prune_ties)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn write_chunk_avx2<K: Key, T: Copy + Default, A: Alive>(
    src: &[T],
    key: impl Fn(T) -> K + Copy,
    alive: A,
    dst: &mut [T],
    threshold: K,
    prune_ties: bool,
) -> (u64, u64, bool) {
    write_chunk_portable(src, key, alive, dst, threshold, prune_ties)
}

#[inline(always)]
fn write_chunk_portable<K: Key, T: Copy + Default, A: Alive>(
    src: &[T],
    key: impl Fn(T) -> K + Copy,
    alive: A,
    dst: &mut [T],
    threshold: K,
    prune_ties: bool,
) -> (u64, u64, bool) {
    // Kept iff alive and key >= cut: one compare per element whether ties go or stay. No key
    // reaches K::MAX, so saturating there keeps "every key" meaning every key.
    let cut = match prune_ties {
        true if threshold == K::MAX => K::MAX,
        true => K::from_u64(threshold.to_u64() + 1),
        false => threshold,
    };
    // u32 counters: a chunk holds at most STREAM_CHUNK elements.
    let (mut ties, mut kept, mut nans) = (0u32, 0u32, 0u32);
    for (i, (&s, d)) in src.iter().zip(dst.iter_mut()).enumerate() {
        let k = key(s);
        let live = alive.get(i);
        let keep = live & (k >= cut);
        *d = if keep { s } else { T::default() };
        kept += keep as u32;
        ties += (live & (k == threshold)) as u32;
        nans |= (live & k.is_nan()) as u32;
    }
    (ties as u64, kept as u64, nans != 0)
}
