//! `mask_products` against the scalar rules: torch's float masks and products, bit for bit.

use super::*;

#[test]
fn masks_are_one_or_zero_and_products_are_float_products() {
    let w: Vec<f32> = vec![1.5, -2.0, -3.0, f32::INFINITY, f32::NEG_INFINITY, 0.25];
    let keep = [1u8, 0, 2, 0, 1, 0];
    let bits: Vec<u32> = w.iter().map(|x| x.to_bits()).collect();
    let (mut m, mut p) = (vec![7u32; 6], vec![7u32; 6]);
    mask_products(
        &[Weights::F32(&bits)],
        &[&keep],
        &[None],
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
        let (mut m32, mut p32, mut m64, mut p64) = (vec![0; n], vec![0; n], vec![0; n], vec![0; n]);
        mask_products(
            &[Weights::F32(&w32), Weights::F64(&w64)],
            &[&keep, &keep],
            &[None, None],
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
fn a_previous_mask_is_combined_as_torch_combines_repeated_prunings() {
    // Every combination of a previous mask value (including non-binary ones, the sign of
    // zero and infinities) with kept and pruned, over lengths that cross a vector's width:
    // a ranked entry (previous 1) takes keep, any other value is squared, as torch does.
    let values = [1.0f32, 0.0, -0.0, 0.5, f32::INFINITY, -1.0, f32::NAN];
    for n in [1usize, 7, 33, 200] {
        let keep: Vec<u8> = (0..n).map(|i| (i % 3 != 1) as u8).collect();
        let prev: Vec<u32> = (0..n).map(|i| values[i % values.len()].to_bits()).collect();
        let w: Vec<u32> = (0..n).map(|i| (i as f32 - 9.5).to_bits()).collect();
        for with_products in [false, true] {
            let (mut m, mut p) = (vec![7u32; n], vec![7u32; n]);
            let mut products = [BitsMut::U32(&mut p)];
            mask_products(
                &[Weights::F32(&w)],
                &[&keep],
                &[Some(Bits::U32(&prev))],
                &mut [BitsMut::U32(&mut m)],
                with_products.then_some(&mut products[..]),
            )
            .unwrap();
            for i in 0..n {
                let q = f32::from_bits(prev[i]);
                let f = if keep[i] != 0 { 1.0f32 } else { 0.0 };
                let mask = if q == 1.0 { f } else { q * q };
                let same = |got: u32, want: f32| {
                    got == want.to_bits() || (f32::from_bits(got).is_nan() && want.is_nan())
                };
                assert!(same(m[i], mask), "n={n} i={i}");
                let want = mask * f32::from_bits(w[i]);
                assert!(!with_products || same(p[i], want), "n={n} i={i}");
            }
        }
    }
}

#[test]
fn a_previous_mask_of_the_wrong_size_or_width_is_refused_first() {
    let w = [1.0f64.to_bits(), 2.0f64.to_bits()];
    let short = [1.0f64.to_bits()];
    let narrow = [1.0f32.to_bits(), 1.0f32.to_bits()];
    let mut m = vec![7u64; 2];
    let mut call = |previous: &[Option<Bits<'_>>]| {
        mask_products(
            &[Weights::F64(&w)],
            &[&[1, 0]],
            previous,
            &mut [BitsMut::U64(&mut m)],
            None,
        )
        .unwrap_err()
    };
    assert_eq!(
        call(&[Some(Bits::U64(&short))]),
        Error::Length {
            arg: "previous",
            index: 0,
            expected: 2,
            got: 1
        }
    );
    assert_eq!(
        call(&[Some(Bits::U32(&narrow))]),
        Error::Width {
            arg: "previous",
            index: 0
        }
    );
    assert!(matches!(
        call(&[]),
        Error::Argument {
            arg: "previous",
            ..
        }
    ));
    assert_eq!(m, vec![7; 2]);
}

#[test]
fn without_products_only_the_masks_are_written() {
    let w: Vec<u64> = [1.0f64, -2.0, 3.0].iter().map(|x| x.to_bits()).collect();
    let mut m = vec![7u64; 3];
    mask_products(
        &[Weights::F64(&w)],
        &[&[0, 1, 0]],
        &[None],
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
            &[Weights::F32(&w)],
            &[&[1]],
            &[None],
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
            &[Weights::F32(&w)],
            &[&[1, 0]],
            &[None],
            &mut [BitsMut::U64(&mut m64)],
            Some(&mut [BitsMut::U32(&mut p)])
        )),
        Error::Width {
            arg: "masks",
            index: 0
        }
    );
    let mut p16 = vec![7u16; 2];
    assert_eq!(
        err(mask_products(
            &[Weights::Bf16(&w16)],
            &[&[1, 0]],
            &[None],
            &mut [BitsMut::U32(&mut m)],
            Some(&mut [BitsMut::U16(&mut p16)])
        )),
        Error::Width {
            arg: "masks",
            index: 0
        }
    );
    assert_eq!(
        (m, p, m64, p16),
        (vec![7; 2], vec![7; 2], vec![7; 2], vec![7; 2])
    );
}

/// A 16-bit format's reference multiply (widened to f32, rounded once) and its name.
type Mul16 = fn(u16, u16) -> u16;
const HALVES: [(&str, Mul16); 2] = [
    ("bf16", |a, b| {
        (half::bf16::from_bits(a) * half::bf16::from_bits(b)).to_bits()
    }),
    ("f16", |a, b| {
        (half::f16::from_bits(a) * half::f16::from_bits(b)).to_bits()
    }),
];

fn weights16<'a>(name: &str, bits: &'a [u16]) -> Weights<'a> {
    if name == "bf16" {
        Weights::Bf16(bits)
    } else {
        Weights::F16(bits)
    }
}

fn is_nan16(name: &str, b: u16) -> bool {
    let inf = if name == "bf16" { 0x7f80 } else { 0x7c00 };
    b & 0x7fff > inf
}

/// Bit for bit, or both NaN (torch's own NaN bits differ between its scalar and vector paths).
fn same16(name: &str, got: u16, want: u16) -> bool {
    got == want || (is_nan16(name, got) && is_nan16(name, want))
}

#[test]
fn half_floats_take_the_float_products_bit_for_bit() {
    // Every 16-bit pattern (zeros, subnormals, infinities, NaNs, both signs), kept and pruned.
    let w: Vec<u16> = (0..=u16::MAX).collect();
    let keep: Vec<u8> = (0..w.len()).map(|i| (i % 3 == 0) as u8).collect();
    for (name, mul) in HALVES {
        let one = if name == "bf16" { 0x3f80 } else { 0x3c00 };
        let (mut m, mut p) = (vec![7u16; w.len()], vec![7u16; w.len()]);
        mask_products(
            &[weights16(name, &w)],
            &[&keep],
            &[None],
            &mut [BitsMut::U16(&mut m)],
            Some(&mut [BitsMut::U16(&mut p)]),
        )
        .unwrap();
        for i in 0..w.len() {
            let f = if keep[i] != 0 { one } else { 0 };
            assert_eq!(m[i], f, "{name} mask {i}");
            assert!(
                same16(name, p[i], mul(f, w[i])),
                "{name} product of {:#06x}",
                w[i]
            );
        }
        assert_eq!(p[0x8005], 0x8000, "{name}: a pruned negative weight is -0");
    }
}

#[test]
fn half_floats_combine_a_previous_mask_as_torch_does() {
    // Binary previous masks (the vectorised route), and pieces with custom values (0.5, -1,
    // infinity, NaN: the exact route), with and without products, across piece sizes.
    for (name, mul) in HALVES {
        let one = if name == "bf16" { 0x3f80 } else { 0x3c00 };
        let half_value = if name == "bf16" { 0x3f00 } else { 0x3800 };
        let inf = if name == "bf16" { 0x7f80 } else { 0x7c00 };
        let binary = [one, 0, 0x8000];
        let custom = [one, 0, 0x8000, half_value, one | 0x8000, inf, inf | 1];
        for values in [&binary[..], &custom[..]] {
            for n in [1usize, 7, 33, 200, (1 << 16) + 5] {
                let keep: Vec<u8> = (0..n).map(|i| (i % 3 != 1) as u8).collect();
                let prev: Vec<u16> = (0..n).map(|i| values[i % values.len()]).collect();
                let w: Vec<u16> = (0..n).map(|i| (i as u16).wrapping_mul(0x9e37)).collect();
                for with_products in [false, true] {
                    let (mut m, mut p) = (vec![7u16; n], vec![7u16; n]);
                    let mut products = [BitsMut::U16(&mut p)];
                    mask_products(
                        &[weights16(name, &w)],
                        &[&keep],
                        &[Some(Bits::U16(&prev))],
                        &mut [BitsMut::U16(&mut m)],
                        with_products.then_some(&mut products[..]),
                    )
                    .unwrap();
                    for i in 0..n {
                        let q = prev[i];
                        let f = if keep[i] != 0 { one } else { 0 };
                        let mask = if q == one { f } else { mul(q, q) };
                        assert!(same16(name, m[i], mask), "{name} n={n} i={i} q={q:#x}");
                        let ok = !with_products || same16(name, p[i], mul(mask, w[i]));
                        assert!(ok, "{name} n={n} i={i} q={q:#x} w={:#x}", w[i]);
                    }
                }
            }
        }
    }
}

/// Every case written with non-temporal stores, bit for bit as with ordinary ones: lengths
/// across the streamed blocks, outputs starting anywhere in a line, and the two outputs at
/// different offsets from a line (then nothing is streamed).
#[test]
fn streamed_outputs_match_cached_ones_bit_for_bit() {
    fn check<F: Float>(value: impl Fn(usize) -> F, previous_value: impl Fn(usize) -> F) {
        let total = 300;
        let w: Vec<F::Bits> = (0..total).map(|i| value(i).to_bits()).collect();
        let q: Vec<F::Bits> = (0..total).map(|i| previous_value(i).to_bits()).collect();
        let keep: Vec<u8> = (0..total).map(|i| (i * 7 % 5 % 2) as u8).collect();
        let zero = F::ZERO.to_bits();
        for (start, product_start) in [(0, 0), (1, 1), (3, 3), (5, 5), (0, 1), (2, 7)] {
            for n in [0, 1, 15, 16, 17, 40, 64, 129, 250] {
                for (previous, products) in
                    [(false, false), (true, false), (false, true), (true, true)]
                {
                    let run = |stream| {
                        let (mut m, mut p) = (vec![zero; total + 64], vec![zero; total + 64]);
                        // Each output `start` elements past a line boundary.
                        let (sm, sp) = (at_line(&m) + start, at_line(&p) + product_start);
                        let product = products.then_some(&mut p[sp..sp + n]);
                        fill::<F>(
                            &w[..n],
                            &keep[..n],
                            previous.then_some(&q[..n]),
                            &mut m[sm..sm + n],
                            product,
                            Run {
                                parallel: false,
                                stream,
                            },
                        );
                        (m[sm..sm + n].to_vec(), p[sp..sp + n].to_vec())
                    };
                    let same = |a: &[F::Bits], b: &[F::Bits]| {
                        a.iter().zip(b).all(|(&x, &y)| {
                            let (x, y) = (F::from_bits(x), F::from_bits(y));
                            x.to_bits() == y.to_bits() || (x != x && y != y)
                        })
                    };
                    let (cached, streamed) = (run(false), run(true));
                    let case = format!("start {start}/{product_start} n {n} previous {previous} products {products}");
                    assert!(same(&cached.0, &streamed.0), "masks: {case}");
                    assert!(same(&cached.1, &streamed.1), "products: {case}");
                }
            }
        }
    }
    let special = |i: usize, x: f64| match i % 11 {
        3 => f64::INFINITY,
        5 => f64::NAN,
        7 => -0.0,
        _ => x,
    };
    let previous = |i: usize| [1.0, 0.0, 0.5, 1.0, -0.0, 1.0][i % 6];
    check::<f32>(
        |i| special(i, i as f64 - 150.5) as f32,
        |i| previous(i) as f32,
    );
    check::<f64>(|i| special(i, 150.25 - i as f64), previous);
}

/// Elements from the start of `v` to its first cache-line boundary.
fn at_line<T>(v: &[T]) -> usize {
    v.as_ptr().align_offset(64)
}
