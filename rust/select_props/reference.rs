//! The reference the kernels are checked against: widen every alive weight to an exact `f64`
//! magnitude, stable-sort the (magnitude, global position) pairs, prune the first `k`.

use proptest::prelude::*;

use crate::chunk;
use crate::error::Error;
use crate::magnitude::{Key, Weights};
use crate::radix;
use crate::select::{select_masks, Amount, Scope, Selection};

/// Exact |w| of one element (f16, bf16 and f32 widen to f64 without rounding).
pub(crate) fn magnitude(w: &Weights<'_>, i: usize) -> f64 {
    match w {
        Weights::F16(x) => half::f16::from_bits(x[i]).to_f64().abs(),
        Weights::Bf16(x) => half::bf16::from_bits(x[i]).to_f64().abs(),
        Weights::F32(x) => (f32::from_bits(x[i]) as f64).abs(),
        Weights::F64(x) => f64::from_bits(x[i]).abs(),
    }
}

pub(crate) fn is_alive(alive: Option<&[&[u8]]>, t: usize, i: usize) -> bool {
    alive.is_none_or(|a| a[t][i] != 0)
}

/// Global selection by sorting: returns the masks (1 = kept) and the totals.
pub(crate) fn reference_global(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    amount: Amount,
    first_tensor: usize,
) -> Result<(Vec<Vec<u8>>, Selection), Error> {
    let mut order = Vec::new(); // (magnitude, tensor, index), pushed in global position order
    for (t, w) in weights.iter().enumerate() {
        for i in 0..w.len() {
            if is_alive(alive, t, i) {
                let m = magnitude(w, i);
                if m.is_nan() {
                    return Err(Error::Nan {
                        index: first_tensor + t,
                    });
                }
                order.push((m, t, i));
            }
        }
    }
    let n = order.len() as u64;
    let k = match amount {
        Amount::Fraction(f) if (0.0..=1.0).contains(&f) => (f * n as f64).round_ties_even() as u64,
        Amount::Count(k) if k <= n => k,
        _ => {
            return Err(Error::Amount {
                message: String::new(),
                tensor: None,
            })
        }
    };
    // `sort_by` is stable: equal magnitudes keep their global (tensor, index) order.
    order.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    let mut masks: Vec<Vec<u8>> = weights
        .iter()
        .enumerate()
        .map(|(t, w)| (0..w.len()).map(|i| is_alive(alive, t, i) as u8).collect())
        .collect();
    for &(_, t, i) in &order[..k as usize] {
        masks[t][i] = 0;
    }
    Ok((
        masks,
        Selection {
            alive: n,
            pruned: k,
            ..Selection::default()
        },
    ))
}

pub(crate) fn reference(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    amount: Amount,
    scope: Scope,
) -> Result<(Vec<Vec<u8>>, Selection), Error> {
    match scope {
        Scope::Global => reference_global(weights, alive, amount, 0),
        Scope::Layer => {
            let mut masks = Vec::new();
            let mut total = Selection::default();
            for t in 0..weights.len() {
                let a = alive.map(|a| &a[t..t + 1]);
                let (m, s) = reference_global(&weights[t..t + 1], a, amount, t)?;
                masks.extend(m);
                total.alive += s.alive;
                total.pruned += s.pruned;
            }
            Ok((masks, total))
        }
    }
}

/// Run the kernel into garbage-filled buffers (so every byte must be written).
pub(crate) fn kernel(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    amount: Amount,
    scope: Scope,
) -> Result<(Vec<Vec<u8>>, Selection), Error> {
    let mut out: Vec<Vec<u8>> = weights.iter().map(|w| vec![0xA5; w.len()]).collect();
    let mut views: Vec<&mut [u8]> = out.iter_mut().map(|o| o.as_mut_slice()).collect();
    let s = select_masks(weights, alive, &mut views, amount, scope)?;
    Ok((out, s))
}

/// The kernel agrees with the reference: same masks and totals, or the same error.
pub(crate) fn check(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    amount: Amount,
    scope: Scope,
) -> Result<Option<Vec<Vec<u8>>>, TestCaseError> {
    let got = kernel(weights, alive, amount, scope);
    let want = reference(weights, alive, amount, scope);
    match (got, want) {
        (Ok((gm, gs)), Ok((wm, ws))) => {
            prop_assert_eq!(
                (gs.alive, gs.pruned),
                (ws.alive, ws.pruned),
                "totals differ ({:?}, {:?})",
                amount,
                scope
            );
            for (t, (g, w)) in gm.iter().zip(&wm).enumerate() {
                if g != w {
                    let first = g.iter().zip(w).position(|(a, b)| a != b).unwrap();
                    return Err(TestCaseError::fail(format!(
                        "tensor {t} (len {}) differs first at {first}: got {} want {} \
                         ({amount:?}, {scope:?})",
                        g.len(),
                        g[first],
                        w[first]
                    )));
                }
            }
            Ok(Some(gm))
        }
        (Err(Error::Amount { .. }), Err(Error::Amount { .. })) => Ok(None),
        (Err(g), Err(w)) => {
            prop_assert_eq!(g, w);
            Ok(None)
        }
        (g, w) => Err(TestCaseError::fail(format!(
            "kernel {:?} vs reference {:?} ({amount:?}, {scope:?})",
            g.map(|x| x.1),
            w.map(|x| x.1)
        ))),
    }
}

pub(crate) fn check_kth<K: Key>(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    u: f64,
) -> Result<(), TestCaseError> {
    let mut keys: Vec<K> = Vec::new();
    for (t, w) in weights.iter().enumerate() {
        for i in 0..w.len() {
            if is_alive(alive, t, i) {
                keys.push(key_of::<K>(w, i));
            }
        }
    }
    if keys.is_empty() {
        return Ok(());
    }
    let k = ((u * keys.len() as f64).ceil() as u64).clamp(1, keys.len() as u64);
    keys.sort();
    let want = keys[k as usize - 1];
    let want_ties = k - keys.iter().filter(|&&x| x < want).count() as u64;
    let mut out: Vec<Vec<u8>> = weights.iter().map(|w| vec![0; w.len()]).collect();
    let mut views: Vec<&mut [u8]> = out.iter_mut().map(|o| o.as_mut_slice()).collect();
    let chunks = chunk::split(weights, alive, &mut views);
    prop_assert_eq!(radix::kth_key::<K>(&chunks, k), Ok((want, want_ties)));
    Ok(())
}

pub(crate) fn key_of<K: Key>(w: &Weights<'_>, i: usize) -> K {
    match w {
        Weights::F16(x) => K::of_f16(x[i]),
        Weights::Bf16(x) => K::of_bf16(x[i]),
        Weights::F32(x) => K::of_f32(x[i]),
        Weights::F64(x) => K::of_f64(x[i]),
    }
}

pub(crate) fn check_unit(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    amount: Amount,
    scope: Scope,
) {
    if let Err(e) = check(weights, alive, amount, scope) {
        panic!("{e}");
    }
}
