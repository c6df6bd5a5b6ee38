//! Each block scanner against the portable loop of [`crate::select::scan`], and the candidate
//! packers against the set-bit loop they replace.

use super::*;
use crate::magnitude::Weights;
use crate::select::scan::scan_weights;

/// The levels this CPU runs: AVX2 always where any runs, AVX-512 where present, so both are
/// checked on a machine that would pick AVX-512.
fn levels() -> Vec<Level> {
    match level() {
        None => vec![],
        Some(Level::Avx2) => vec![Level::Avx2],
        Some(Level::Avx512) => vec![Level::Avx2, Level::Avx512],
    }
}

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// f32 bits of mixed scales and signs, with zeros, infinities, NaNs and subnormals among them.
fn f32_bits(n: usize, state: &mut u64) -> Vec<u32> {
    (0..n)
        .map(|_| match next(state) % 64 {
            0 => 0x8000_0000,                              // -0.0
            1 => 0x7f80_0000 | (next(state) as u32 >> 31), // inf or NaN
            2 => next(state) as u32 & 0x807f_ffff,         // subnormal
            _ => {
                let x = (next(state) >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                ((x * 2f64.powi((next(state) % 8) as i32 - 4)) as f32).to_bits()
            }
        })
        .collect()
}

fn bf16_bits(n: usize, state: &mut u64) -> Vec<u16> {
    f32_bits(n, state)
        .iter()
        .map(|b| (b >> 16) as u16)
        .collect()
}

/// f16 bits of the same kinds: any pattern (every exponent, NaNs with their payloads, both
/// signs), with infinity and the smallest NaN (the boundary of the NaN test) more often.
fn f16_bits(n: usize, state: &mut u64) -> Vec<u16> {
    (0..n)
        .map(|_| match next(state) % 16 {
            0 => 0x7c00 | (next(state) as u16 & 0x8001), // ±inf or ±smallest NaN
            _ => next(state) as u16,
        })
        .collect()
}

/// A bracket from three of the keys (so bounds fall on weights), or an extreme one; `mid`
/// anywhere from `lo` to `hi`.
fn bracket(keys: &[u32], state: &mut u64) -> Bracket<u32> {
    let pick = |s: &mut u64| keys[next(s) as usize % keys.len()];
    let mut three = [pick(state), pick(state), pick(state)];
    three.sort();
    let [a, m, b] = three;
    match next(state) % 8 {
        0 => Bracket {
            lo: 0,
            mid: m,
            hi: u32::MAX,
        },
        1 => Bracket::new(a, a),
        2 => Bracket::new(u32::MAX, u32::MAX),
        3 => Bracket {
            lo: a + 1,
            mid: m + 2,
            hi: b + 3,
        }, // off the weights' own keys
        4 => Bracket::new(a, b),
        _ => Bracket {
            lo: a,
            mid: m,
            hi: b,
        },
    }
}

/// A sink that takes pushes only (the scanner's set-bit loop).
struct Pushes(Vec<(u32, u32)>);

impl Sink<u32> for Pushes {
    fn push(&mut self, key: u32, index: u32) {
        self.0.push((key, index));
    }
}

struct Scanned {
    alive: u64,
    below: u64,
    nan: bool,
    mask: Vec<u8>,
    candidates: Vec<(u32, u32)>,
}

fn portable(weights: Weights<'_>, alive: Option<&[u8]>, b: Bracket<u32>) -> Scanned {
    let mut mask = vec![7u8; weights.len()];
    let mut candidates = Vec::new();
    let c = scan_weights(
        weights,
        alive,
        Some(&mut mask[..]),
        b,
        Some(&mut candidates),
        false,
    );
    Scanned {
        alive: c.alive,
        below: c.below,
        nan: c.nan,
        mask,
        candidates,
    }
}

/// Every way the pass runs at `level` (fresh mask, no mask, pushes only, in place) against
/// the portable loop.
fn agrees<L: Lanes>(
    level: Level,
    bits: &[L],
    weights: Weights<'_>,
    alive: Option<&[u8]>,
    b: Bracket<u32>,
) {
    let want = portable(weights, alive, b);
    let alive_at = alive.map(|a| a.as_ptr());
    let same = |c: Counts, what: &str| {
        assert_eq!(
            (c.alive, c.below, c.nan),
            (want.alive, want.below, want.nan),
            "{level:?} {what} counts"
        );
    };
    // SAFETY: `levels` lists only what this CPU runs; every buffer holds `bits.len()` bytes.
    unsafe {
        let mut mask = vec![7u8; bits.len()];
        let mut pairs = Vec::new();
        let c = scan_at(
            level,
            bits,
            alive_at,
            Some(mask.as_mut_ptr()),
            b,
            Some(&mut pairs),
            None,
        )
        .0;
        same(c, "fresh");
        assert_eq!(mask, want.mask, "{level:?} mask");
        assert_eq!(pairs, want.candidates, "{level:?} candidates");

        let mut pushes = Pushes(Vec::new());
        same(
            scan_at(level, bits, alive_at, None, b, Some(&mut pushes), None).0,
            "no mask",
        );
        assert_eq!(pushes.0, want.candidates, "{level:?} pushed candidates");

        let mut masks = alive.map_or_else(|| vec![1u8; bits.len()], |a| a.to_vec());
        let before = masks.clone();
        // After another chunk's words, as in a parallel job.
        let mut lost = Lost::for_chunks([40, bits.len()].into_iter());
        let earlier = lost.push_words([5u32, 0].into_iter());
        let mut pairs = Vec::new();
        let at = masks.as_mut_ptr();
        let (c, span) = scan_at(
            level,
            bits,
            Some(at as *const u8),
            Some(at),
            b,
            Some(&mut pairs),
            Some(&mut lost),
        );
        let want_in_place = portable(weights, Some(&before), b);
        assert_eq!(
            (c.alive, c.below),
            (want_in_place.alive, want_in_place.below),
            "{level:?} in place"
        );
        assert_eq!(masks, want_in_place.mask, "{level:?} in-place mask");
        assert_eq!(
            pairs, want_in_place.candidates,
            "{level:?} in-place candidates"
        );
        let want_lost: Vec<u32> = before
            .chunks(32)
            .zip(masks.chunks(32))
            .map(|(a, m)| {
                (0..a.len()).fold(0, |w, i| w | (((a[i] != 0) & (m[i] == 0)) as u32) << i)
            })
            .collect();
        // None kept where no bit is set.
        let want_lost: &[u32] = if want_lost.iter().any(|&w| w != 0) {
            &want_lost
        } else {
            &[]
        };
        assert_eq!(lost.words(span), want_lost, "{level:?} lost bits");
        assert_eq!(
            lost.words(earlier),
            &[5, 0],
            "{level:?} the earlier chunk's"
        );
    }
}

#[test]
fn block_scanners_match_the_portable_loop() {
    let mut state = 0x2545_f491_4f6c_dd1d;
    for round in 0..300 {
        let n = [0, 1, 31, 32, 33, 64, 95, 1000, 4099][round % 9] + (next(&mut state) % 3) as usize;
        let alive: Vec<u8> = (0..n)
            .map(|_| {
                if next(&mut state).is_multiple_of(4) {
                    0
                } else {
                    1 + (next(&mut state) % 255) as u8
                }
            })
            .collect();
        let alive = round.is_multiple_of(2).then_some(&alive[..]);
        let f = f32_bits(n, &mut state);
        let h = bf16_bits(n, &mut state);
        let g = f16_bits(n, &mut state);
        for level in levels() {
            let keys: Vec<u32> = f.iter().map(|&b| u32::of_f32(b)).chain([0]).collect();
            agrees(
                level,
                &f,
                Weights::F32(&f),
                alive,
                bracket(&keys, &mut state),
            );
            let keys: Vec<u32> = h.iter().map(|&b| u32::of_bf16(b)).chain([0]).collect();
            agrees(
                level,
                &h,
                Weights::Bf16(&h),
                alive,
                bracket(&keys, &mut state),
            );
            let keys: Vec<u32> = g.iter().map(|&b| u32::of_f16(b)).chain([0]).collect();
            agrees(
                level,
                F16Bits::cast(&g),
                Weights::F16(&g),
                alive,
                bracket(&keys, &mut state),
            );
        }
    }
}

/// `pack_pairs`, and `collect` into either kind of sink, against the set-bit loop they replace,
/// for both lane widths and every density (no bits, one, two, three, all, random masks).
fn packs_like_the_loop<I: Isa, L: Lanes>(w: &[L]) {
    let mut masks = vec![
        0u32,
        u32::MAX,
        1,
        1 << 31,
        0b11,
        0x8000_0001,
        0x0002_0400,
        0x8000_0003,
        0x00ff_ff00,
        0xffff,
        0xffff_0000,
    ];
    let mut state = 0x9e37_79b9u64;
    for _ in 0..200 {
        masks.push(next(&mut state) as u32);
    }
    for bits in masks {
        let start = 4096;
        let mut got = vec![0u32; 64];
        // SAFETY: the caller checked the instruction set; `w` holds 32 elements and `got`
        // room for 32 pairs.
        let n = unsafe { I::pack_pairs(w.as_ptr(), start, bits, got.as_mut_ptr()) };
        let want: Vec<u32> = (0..32)
            .filter(|i| bits >> i & 1 == 1)
            .flat_map(|i| [w[i as usize].key(), start + i])
            .collect();
        assert_eq!(n, bits.count_ones() as usize);
        assert_eq!(&got[..2 * n], &want[..], "bits {bits:#x}");

        // An earlier candidate stays first; the block's follow in order, indices from 0.
        let want: Vec<(u32, u32)> = [(9, 9)]
            .into_iter()
            .chain(
                (0..32u32)
                    .filter(|i| bits >> i & 1 == 1)
                    .map(|i| (w[i as usize].key(), i)),
            )
            .collect();
        let (mut pairs, mut pushes) = (vec![(9, 9)], Pushes(vec![(9, 9)]));
        let block: &[L; 32] = w.try_into().expect("32 weights");
        // SAFETY: as above.
        unsafe {
            collect::<I, L, u32, _>(block, 0, bits, &mut pairs);
            collect::<I, L, u32, _>(block, 0, bits, &mut pushes);
        }
        assert_eq!(pairs, want, "collected pairs, bits {bits:#x}");
        assert_eq!(pushes.0, want, "collected pushes, bits {bits:#x}");
    }
}

fn packs_at<L: Lanes>(w: &[L]) {
    for level in levels() {
        match level {
            Level::Avx2 => packs_like_the_loop::<avx2::Avx2, L>(w),
            Level::Avx512 => packs_like_the_loop::<avx512::Avx512, L>(w),
        }
    }
}

#[test]
fn pack_pairs_keeps_the_candidates_in_order_f32() {
    let w: Vec<u32> = (0..32).map(|i| (i as f32 - 15.5).to_bits()).collect();
    packs_at(&w);
}

#[test]
fn pack_pairs_keeps_the_candidates_in_order_bf16() {
    let w: Vec<u16> = (0..32u16).map(|i| (i * 0x0411) ^ (i << 15)).collect();
    packs_at(&w);
}

#[test]
fn pack_pairs_keeps_the_candidates_in_order_f16() {
    // Subnormals, normals, infinity and NaNs, both signs: every branch of the key table.
    let w: Vec<u16> = (0..32u16).map(|i| (i * 0x0403) ^ (i << 15)).collect();
    packs_at(F16Bits::cast(&w));
}

/// The AVX-512 window filter against the pair-at-a-time loop: counts below the window, keys
/// outside the bracket, and the pairs in the window in order, at every length around the
/// 8-pair step and from a 4-byte aligned start (pairs of u32 are only that aligned).
#[test]
fn window_filter_matches_the_portable_loop() {
    let mut state = 0x1234_5678_9ABC_DEF1u64;
    let bounds = WindowBounds {
        lo: 1_000,
        hi: 2_000,
        start: 1_400,
        end: 1_460,
    };
    for len in (0..40).chain([1_000, 4_099]) {
        for stray in [false, true] {
            // Keys mostly in the bracket and often in the window; a stray one outside it.
            let mut words = vec![0u32; 2 * len + 1];
            for i in 0..len {
                let r = next(&mut state);
                let key = if r.is_multiple_of(3) {
                    1_390 + (r >> 8) % 80
                } else {
                    1_000 + (r >> 8) % 1_000
                };
                words[1 + 2 * i] = key as u32;
                words[2 + 2 * i] = i as u32;
            }
            if stray && len > 0 {
                words[1 + 2 * (len / 2)] = if len.is_multiple_of(2) { 999 } else { 2_000 };
            }
            let pairs = words[1..].as_ptr().cast::<u64>(); // 4-byte aligned
            let mut want = vec![0u64; len + 8];
            let mut got = vec![0u64; len + 8];
            // SAFETY: `len` pairs readable at `pairs` (unaligned reads), room for `len + 8`.
            let expected = unsafe { window_filter_portable(pairs, len, bounds, want.as_mut_ptr()) };
            let Some(filtered) = (unsafe { window_filter(pairs, len, bounds, got.as_mut_ptr()) })
            else {
                return; // no AVX-512 here
            };
            assert_eq!(filtered, expected, "{len} pairs, stray {stray}");
            assert_eq!(expected.1, stray && len > 0);
            assert_eq!(got[..filtered.2], want[..expected.2], "{len} pairs");
            assert!(want[..expected.2]
                .iter()
                .all(|&p| (1_400..1_460).contains(&(p & 0xFFFF_FFFF))));
        }
    }
}
