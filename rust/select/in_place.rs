//! Selection written into the survivor masks themselves (a later IMP round), so no fresh pages
//! are faulted in: the same sample, fused pass and fix-up as [`super::select_masks`].
//!
//! The fused pass reads each block's survivors before writing the provisional mask over them
//! (with AVX2; the portable path copies a chunk's survivors into a per-thread scratch first),
//! and keeps one bit per weight it provisionally prunes while alive (below the bracket's
//! `mid`). Survivors are then `provisional | those bits`, which restores the masks exactly on an
//! error (NaN, a count above the alive weights) and before the rare exact fallback, which ranks
//! from a copy of them.

use super::lost::{restore, Lost, LostBits, LostSpan};
use super::pass::{grouped_pass, FusedScan};
use super::scan::{scan_weights, Counts};
use super::PARALLEL_MIN;
use super::{
    candidate_bytes, each_tensor, fallback, fixup, resolve, sample, simd, validate_amount,
    wide_keys, Amount, Bracket, Path, Paths, Scope, Selection,
};
use crate::chunk::{self, Chunk};
use crate::error::{check_lengths, Error, Result};
use crate::magnitude::{granularity, Key, Weights};

/// `select_masks(weights, Some(masks), masks, ...)`: prune `amount` of the alive weights,
/// writing the surviving masks over `masks`. On error `masks` is left as it was.
pub fn select_masks_in_place(
    weights: &[Weights<'_>],
    masks: &mut [&mut [u8]],
    amount: Amount,
    scope: Scope,
) -> Result<Selection> {
    validate_amount(weights, amount)?;
    let sizes: Vec<usize> = weights.iter().map(|w| w.len()).collect();
    check_lengths("masks", &sizes, masks.iter().map(|m| m.len()))?;
    let wide = wide_keys(weights);
    match scope {
        Scope::Global if wide => global::<u64>(weights, masks, amount, 0),
        Scope::Global => global::<u32>(weights, masks, amount, 0),
        Scope::Layer => each_tensor(weights.len(), |t| {
            let w = &weights[t..t + 1];
            let m = std::slice::from_mut(&mut masks[t]);
            if wide {
                global::<u64>(w, m, amount, t)
            } else {
                global::<u32>(w, m, amount, t)
            }
        }),
    }
}

fn global<K: Key>(
    weights: &[Weights<'_>],
    masks: &mut [&mut [u8]],
    amount: Amount,
    first_tensor: usize,
) -> Result<Selection> {
    let total: usize = weights.iter().map(|w| w.len()).sum();
    let parallel = total >= PARALLEL_MIN;
    let sampled = {
        let alive: Vec<&[u8]> = masks.iter().map(|m| &**m).collect();
        sample::sample_bracket::<K>(weights, Some(&alive), amount, sample::MAX_SAMPLES, parallel)?
    };
    let (bracket, mut inside) = (sampled.bracket, sampled.inside);
    let mut chunks = chunk::split(weights, None, masks);
    let cap = candidate_bytes(total) / std::mem::size_of::<(K, u32)>();
    let share = sample::candidate_share(total);
    let (scan, lost) = fused_pass(&mut chunks, bracket, cap.min(total), share, parallel);
    let fail = |chunks: &mut [Chunk<'_>], e: Error| {
        restore(chunks, &lost, parallel);
        Err(e)
    };
    if let Some(t) = scan.nan_tensor {
        return fail(
            &mut chunks,
            Error::Nan {
                index: first_tensor + t,
            },
        );
    }
    let k = match resolve(amount, scan.alive) {
        Ok(k) => k,
        Err(e) => return fail(&mut chunks, e),
    };
    let path = Path::after_scan(&scan, k);
    match path {
        Path::Exact | Path::FixUp => {
            // fix_up checks the candidates before touching any mask.
            let needed = path == Path::FixUp || bracket.mid > bracket.lo;
            if needed {
                let granularity = granularity::<K>(weights);
                let r = k - scan.below;
                let fixed = fixup::fix_up(
                    &mut chunks,
                    &scan,
                    bracket,
                    &mut inside,
                    r,
                    granularity,
                    parallel,
                    None,
                );
                if let Err(e) = fixed {
                    return fail(&mut chunks, e);
                }
            }
        }
        Path::BracketMiss | Path::CandidateOverflow => {
            restore(&mut chunks, &lost, parallel);
            drop(chunks);
            let alive: Vec<Vec<u8>> = masks.iter().map(|m| m.to_vec()).collect();
            let views: Vec<&[u8]> = alive.iter().map(|a| a.as_slice()).collect();
            let mut chunks = chunk::split(weights, Some(&views), masks);
            let rewritten = fallback::exact_rewrite::<K>(&mut chunks, k, scan.alive, None);
            drop(chunks);
            if let Err(e) = rewritten {
                masks
                    .iter_mut()
                    .zip(&alive)
                    .for_each(|(m, a)| m.copy_from_slice(a));
                return Err(e);
            }
        }
    }
    Ok(Selection {
        alive: scan.alive,
        pruned: k,
        paths: Paths::of(path),
    })
}

/// The fused pass of [`super::pass::fused_pass`] over masks that hold the survivors.
fn fused_pass<K: Key>(
    chunks: &mut [Chunk<'_>],
    bracket: Bracket<K>,
    cap: usize,
    share: f64,
    parallel: bool,
) -> (FusedScan<K>, LostBits) {
    let fast = K::BITS == 31 && simd::available();
    let job_state = |job: &[Chunk<'_>]| Lost::for_chunks(job.iter().map(|c| c.out.len()));
    let (scan, spans, jobs) =
        grouped_pass(chunks, cap, share, parallel, job_state, |c, sink, lost| {
            scan_chunk(c, bracket, sink, lost, fast)
        });
    let spans = scan.per_chunk.iter().map(|s| s.job()).zip(spans).collect();
    (scan, LostBits { jobs, spans })
}

/// One chunk of the fused pass over its survivor masks: with AVX2 (f32, bf16, f16) the scanner
/// reads each block's survivors before writing its mask bytes and reports the lost bits itself;
/// otherwise the survivors are copied to a per-thread scratch first and compared after.
fn scan_chunk<K: Key>(
    c: &mut Chunk<'_>,
    bracket: Bracket<K>,
    mut sink: Option<&mut Vec<(K, u32)>>,
    lost: &mut Lost,
    fast: bool,
) -> (Counts, LostSpan) {
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: `fast` says the CPU has AVX2 and POPCNT, and the keys are u32.
        let scanned = unsafe {
            match c.weights {
                Weights::F32(w) => Some(simd::scan_in_place(
                    w,
                    c.out,
                    bracket,
                    sink.as_deref_mut(),
                    lost,
                )),
                Weights::Bf16(w) => Some(simd::scan_in_place(
                    w,
                    c.out,
                    bracket,
                    sink.as_deref_mut(),
                    lost,
                )),
                Weights::F16(w) => Some(simd::scan_in_place(
                    simd::F16Bits::cast(w),
                    c.out,
                    bracket,
                    sink.as_deref_mut(),
                    lost,
                )),
                Weights::F64(_) => None,
            }
        };
        if let Some(scanned) = scanned {
            return scanned;
        }
    }
    chunk::with_scratch(c.out.len(), |alive| {
        alive.copy_from_slice(c.out);
        let counts = scan_weights(
            c.weights,
            Some(&*alive),
            Some(&mut *c.out),
            bracket,
            sink,
            fast,
        );
        (counts, lost_bits(alive, c.out, lost))
    })
}

/// Bits of the weights alive before the pass (`alive`) and pruned by it (`out`, bytes 0 or 1).
/// Eight bytes at a time: a per-byte loop cost twice the fused pass itself.
fn lost_bits(alive: &[u8], out: &[u8], lost: &mut Lost) -> LostSpan {
    let words = alive.chunks(32).zip(out.chunks(32)).map(|(a, o)| {
        if a.len() == 32 {
            a.chunks_exact(8)
                .zip(o.chunks_exact(8))
                .enumerate()
                .fold(0u32, |word, (q, (a, o))| {
                    let a = u64::from_le_bytes(a.try_into().expect("8 bytes"));
                    let o = u64::from_le_bytes(o.try_into().expect("8 bytes"));
                    word | pack(nonzero_bytes(a) & !o & ONES) << (8 * q)
                })
        } else {
            a.iter()
                .zip(o)
                .enumerate()
                .fold(0u32, |word, (i, (&a, &o))| {
                    word | (((a != 0) & (o == 0)) as u32) << i
                })
        }
    });
    lost.push_words(words)
}

const ONES: u64 = 0x0101_0101_0101_0101;

/// 1 in each byte of `x` that is nonzero, else 0.
#[inline(always)]
fn nonzero_bytes(x: u64) -> u64 {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    ((((x & LOW7) + LOW7) | x) >> 7) & ONES
}

/// Bytes of 0 or 1 packed to bits: byte `i` to bit `i` (one multiply gathers them in the top byte).
#[inline(always)]
fn pack(x: u64) -> u32 {
    (x.wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::select_masks;

    fn keys(n: usize, seed: u64) -> Vec<u32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Few distinct magnitudes: heavy ties exercise the fallback too.
                ((x % 50) as f32 * if x & 64 == 0 { 1.0 } else { -0.5 }).to_bits()
            })
            .collect()
    }

    #[test]
    fn lost_bits_match_a_per_byte_reference() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for n in [0usize, 5, 32, 33, 64, 100] {
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            // Survivors with bytes other than 0 and 1 (any nonzero byte is alive).
            let alive: Vec<u8> = (0..n)
                .map(|_| [0u8, 1, 2, 255][(next() % 4) as usize])
                .collect();
            let out: Vec<u8> = alive
                .iter()
                .map(|&a| (a != 0 && next() % 2 == 0) as u8)
                .collect();
            let mut lost = Lost::default();
            let span = lost_bits(&alive, &out, &mut lost);
            let words = lost.words(span);
            for i in 0..n {
                let expected = alive[i] != 0 && out[i] == 0;
                let got = words.get(i / 32).is_some_and(|w| w >> (i % 32) & 1 == 1);
                assert_eq!(got, expected, "n {n}, element {i}");
            }
        }
    }

    #[test]
    fn equals_the_fresh_masks_and_restores_on_error() {
        // The largest spans two parallel jobs of chunks, each with its own lost bits.
        for (n, seed) in [(100usize, 1u64), (70_000, 2), (600_000, 3), (1_200_000, 4)] {
            let w = keys(n, seed);
            let weights = [Weights::F32(&w)];
            let survivors: Vec<u8> = (0..n).map(|i| (i % 7 != 0) as u8).collect();
            for amount in [
                Amount::Fraction(0.3),
                Amount::Count(10),
                Amount::Fraction(1.0),
            ] {
                let mut fresh = vec![0u8; n];
                let expected = select_masks(
                    &weights,
                    Some(&[&survivors]),
                    &mut [&mut fresh],
                    amount,
                    Scope::Global,
                )
                .unwrap();
                let mut mask = survivors.clone();
                let got = select_masks_in_place(&weights, &mut [&mut mask], amount, Scope::Layer)
                    .unwrap();
                assert_eq!(mask, fresh);
                assert_eq!((got.alive, got.pruned), (expected.alive, expected.pruned));
            }
            let mut mask = survivors.clone();
            let err = select_masks_in_place(
                &weights,
                &mut [&mut mask],
                Amount::Count(n as u64),
                Scope::Global,
            );
            assert!(matches!(err, Err(Error::Amount { .. })));
            assert_eq!(mask, survivors);
            let mut nan = w.clone();
            nan[n - 1] = f32::NAN.to_bits();
            let mut mask = survivors.clone();
            mask[n - 1] = 1;
            let before = mask.clone();
            let err = select_masks_in_place(
                &[Weights::F32(&nan)],
                &mut [&mut mask],
                Amount::Fraction(0.5),
                Scope::Global,
            );
            assert!(matches!(err, Err(Error::Nan { index: 0 })));
            assert_eq!(mask, before);
        }
    }
}
