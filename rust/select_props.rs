//! Property tests of [`crate::select::select_masks`] and [`crate::radix::kth_key`] against a
//! tiny, obviously-correct reference: widen every alive weight to an exact `f64` magnitude,
//! stable-sort the (magnitude, global position) pairs, prune the first `k`.
//!
//! Contents are drawn from a seeded generator (proptest chooses shapes, dtypes, kinds and seeds,
//! and shrinks those), so large tensors stay cheap to generate.

use proptest::prelude::*;

use crate::chunk;
use crate::error::Error;
use crate::magnitude::{Key, Weights};
use crate::radix;
use crate::select::{select_masks, Amount, Scope, Selection};

// ---------------------------------------------------------------------------------------------
// The reference.

/// Exact |w| of one element (f16, bf16 and f32 widen to f64 without rounding).
fn magnitude(w: &Weights<'_>, i: usize) -> f64 {
    match w {
        Weights::F16(x) => half::f16::from_bits(x[i]).to_f64().abs(),
        Weights::Bf16(x) => half::bf16::from_bits(x[i]).to_f64().abs(),
        Weights::F32(x) => (f32::from_bits(x[i]) as f64).abs(),
        Weights::F64(x) => f64::from_bits(x[i]).abs(),
    }
}

fn is_alive(alive: Option<&[&[u8]]>, t: usize, i: usize) -> bool {
    alive.is_none_or(|a| a[t][i] != 0)
}

/// Global selection by sorting: returns the masks (1 = kept) and the totals.
fn reference_global(
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
        },
    ))
}

fn reference(
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
fn kernel(
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
fn check(
    weights: &[Weights<'_>],
    alive: Option<&[&[u8]]>,
    amount: Amount,
    scope: Scope,
) -> Result<Option<Vec<Vec<u8>>>, TestCaseError> {
    let got = kernel(weights, alive, amount, scope);
    let want = reference(weights, alive, amount, scope);
    match (got, want) {
        (Ok((gm, gs)), Ok((wm, ws))) => {
            prop_assert_eq!(gs, ws, "totals differ ({:?}, {:?})", amount, scope);
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

// ---------------------------------------------------------------------------------------------
// Data.

/// splitmix64: a tiny deterministic generator for tensor contents.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dtype {
    F16,
    Bf16,
    F32,
    F64,
}

const DTYPES: [Dtype; 4] = [Dtype::F16, Dtype::Bf16, Dtype::F32, Dtype::F64];

/// How a tensor's values are drawn.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Uniform in (-1, 1), rounded to the dtype (ties appear naturally in f16/bf16).
    Uniform,
    /// Arbitrary bit patterns (NaN patterns turned into ±inf): every exponent, subnormals.
    AnyBits,
    /// A handful of values shared by every dtype, random signs: heavy ties, across dtypes too.
    Tied,
    /// ±0, subnormals, the smallest normal, 1, the largest finite value, ±inf.
    Edge,
}

const KINDS: [Kind; 4] = [Kind::Uniform, Kind::AnyBits, Kind::Tied, Kind::Edge];

/// Values exactly representable in f16, bf16, f32 and f64 (2^-20 is an f16 subnormal).
const SHARED: [f64; 6] = [0.0, 0.5, 1.0, 1.5, 9.5367431640625e-7, f64::INFINITY];

/// One tensor's raw bits, widened to u64 (narrowed by [`Tensor::weights`]).
#[derive(Clone, Debug)]
struct Tensor {
    dtype: Dtype,
    bits: Vec<u64>,
}

impl Dtype {
    fn sign(self) -> u64 {
        match self {
            Dtype::F16 | Dtype::Bf16 => 0x8000,
            Dtype::F32 => 0x8000_0000,
            Dtype::F64 => 0x8000_0000_0000_0000,
        }
    }

    fn bits_of(self, v: f64) -> u64 {
        match self {
            Dtype::F16 => half::f16::from_f64(v).to_bits() as u64,
            Dtype::Bf16 => half::bf16::from_f64(v).to_bits() as u64,
            Dtype::F32 => (v as f32).to_bits() as u64,
            Dtype::F64 => v.to_bits(),
        }
    }

    /// +inf's bits: every pattern above it (sign cleared) is a NaN.
    fn inf(self) -> u64 {
        self.bits_of(f64::INFINITY)
    }

    fn nan(self) -> u64 {
        self.inf() | 1
    }

    /// Positive edge values: 0, smallest / largest subnormal, smallest normal, 1, max, inf.
    fn edges(self) -> [u64; 7] {
        let inf = self.inf();
        let min_normal = match self {
            Dtype::F16 => 0x0400,
            Dtype::Bf16 => 0x0080,
            Dtype::F32 => 0x0080_0000,
            Dtype::F64 => 0x0010_0000_0000_0000,
        };
        [
            0,
            1,
            min_normal - 1,
            min_normal,
            self.bits_of(1.0),
            inf - 1,
            inf,
        ]
    }
}

impl Tensor {
    fn generate(dtype: Dtype, kind: Kind, len: usize, rng: &mut Rng) -> Tensor {
        let sign = dtype.sign();
        let edges = dtype.edges();
        let bits = (0..len)
            .map(|_| {
                let s = if rng.next() & 1 == 1 { sign } else { 0 };
                let magnitude = match kind {
                    Kind::Uniform => dtype.bits_of(rng.unit()),
                    Kind::AnyBits => {
                        let m = rng.next() & (sign - 1);
                        if m > dtype.inf() {
                            dtype.inf()
                        } else {
                            m
                        }
                    }
                    Kind::Tied => dtype.bits_of(SHARED[rng.below(SHARED.len())]),
                    Kind::Edge => edges[rng.below(edges.len())],
                };
                magnitude | s
            })
            .collect();
        Tensor { dtype, bits }
    }

    fn narrowed(&self) -> Storage {
        match self.dtype {
            Dtype::F16 | Dtype::Bf16 => Storage::U16(self.bits.iter().map(|&b| b as u16).collect()),
            Dtype::F32 => Storage::U32(self.bits.iter().map(|&b| b as u32).collect()),
            Dtype::F64 => Storage::U64(self.bits.clone()),
        }
    }
}

/// Owned bits of the right width, borrowed as [`Weights`].
enum Storage {
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
}

fn weights_of<'a>(tensors: &[Tensor], storage: &'a [Storage]) -> Vec<Weights<'a>> {
    tensors
        .iter()
        .zip(storage)
        .map(|(t, s)| match (t.dtype, s) {
            (Dtype::F16, Storage::U16(x)) => Weights::F16(x),
            (Dtype::Bf16, Storage::U16(x)) => Weights::Bf16(x),
            (Dtype::F32, Storage::U32(x)) => Weights::F32(x),
            (Dtype::F64, Storage::U64(x)) => Weights::F64(x),
            _ => unreachable!(),
        })
        .collect()
}

/// Survivor bytes with the given alive probability; any nonzero byte means alive.
fn alive_masks(tensors: &[Tensor], p: f64, rng: &mut Rng) -> Vec<Vec<u8>> {
    tensors
        .iter()
        .map(|t| {
            (0..t.bits.len())
                .map(|_| {
                    if rng.unit() < p {
                        [1u8, 1, 2, 255][rng.below(4)]
                    } else {
                        0
                    }
                })
                .collect()
        })
        .collect()
}

/// A test case's structure: per tensor (dtype, kind, length), the seed, the alive probability.
#[derive(Clone, Debug)]
struct Case {
    specs: Vec<(Dtype, Kind, usize)>,
    seed: u64,
    /// `None`: no survivor masks at all.
    alive_p: Option<f64>,
}

impl Case {
    fn build(&self) -> (Vec<Tensor>, Option<Vec<Vec<u8>>>, Rng) {
        let mut rng = Rng(self.seed);
        let tensors: Vec<Tensor> = self
            .specs
            .iter()
            .map(|&(d, k, n)| Tensor::generate(d, k, n, &mut rng))
            .collect();
        let alive = self.alive_p.map(|p| alive_masks(&tensors, p, &mut rng));
        (tensors, alive, rng)
    }
}

fn case(max_tensors: usize, max_len: usize) -> impl Strategy<Value = Case> {
    let spec = (
        prop::sample::select(DTYPES.to_vec()),
        prop::sample::select(KINDS.to_vec()),
        prop_oneof![0..4usize, 0..=max_len],
    );
    (
        prop::collection::vec(spec, 1..=max_tensors),
        any::<u64>(),
        prop_oneof![
            Just(None),
            Just(Some(1.0)),
            Just(Some(0.0)),
            (0.05..0.95f64).prop_map(Some)
        ],
    )
        .prop_map(|(specs, seed, alive_p)| Case {
            specs,
            seed,
            alive_p,
        })
}

/// A fraction that is often exactly 0, 1 or a round-half-even boundary.
fn fraction() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(1.0),
        Just(0.5),
        Just(0.25),
        0.0..=1.0f64,
        (0.0..=1.0f64).prop_map(|f| f * f * f), // small fractions
    ]
}

fn alive_count(tensors: &[Tensor], alive: Option<&[Vec<u8>]>, t: usize) -> u64 {
    match alive {
        None => tensors[t].bits.len() as u64,
        Some(a) => a[t].iter().filter(|&&b| b != 0).count() as u64,
    }
}

/// Run one case with `amount_of(alive)` choosing the amount from the alive count.
fn run_case(
    case: &Case,
    scope: Scope,
    amount_of: impl Fn(u64) -> Amount,
) -> Result<(), TestCaseError> {
    let (tensors, alive, _) = case.build();
    let storage: Vec<Storage> = tensors.iter().map(Tensor::narrowed).collect();
    let weights = weights_of(&tensors, &storage);
    let alive_refs: Option<Vec<&[u8]>> = alive.as_ref().map(|a| a.iter().map(|m| &m[..]).collect());
    let alive_n = match scope {
        Scope::Global => (0..tensors.len())
            .map(|t| alive_count(&tensors, alive.as_deref(), t))
            .sum(),
        Scope::Layer => (0..tensors.len())
            .map(|t| alive_count(&tensors, alive.as_deref(), t))
            .min()
            .unwrap(),
    };
    check(&weights, alive_refs.as_deref(), amount_of(alive_n), scope)?;
    Ok(())
}

fn count_of(u: f64, alive: u64) -> Amount {
    Amount::Count(((u * alive as f64).floor() as u64).min(alive))
}

// ---------------------------------------------------------------------------------------------
// Properties on small and medium inputs.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn fraction_matches_reference(c in case(4, 600), f in fraction(), layer in any::<bool>()) {
        let scope = if layer { Scope::Layer } else { Scope::Global };
        run_case(&c, scope, |_| Amount::Fraction(f))?;
    }

    #[test]
    fn count_matches_reference(c in case(4, 600), u in fraction(), layer in any::<bool>()) {
        let scope = if layer { Scope::Layer } else { Scope::Global };
        run_case(&c, scope, |alive| count_of(u, alive))?;
    }

    #[test]
    fn count_above_alive_is_an_amount_error(c in case(3, 50), extra in 1u64..5) {
        let (tensors, alive, _) = c.build();
        let storage: Vec<Storage> = tensors.iter().map(Tensor::narrowed).collect();
        let weights = weights_of(&tensors, &storage);
        let refs: Option<Vec<&[u8]>> = alive.as_ref().map(|a| a.iter().map(|m| &m[..]).collect());
        let n: u64 = (0..tensors.len()).map(|t| alive_count(&tensors, alive.as_deref(), t)).sum();
        let got = kernel(&weights, refs.as_deref(), Amount::Count(n + extra), Scope::Global);
        prop_assert!(matches!(got, Err(Error::Amount { .. })), "{:?}", got.map(|x| x.1));
        // Layer scope: the count must fit in every tensor.
        let fewest = (0..tensors.len()).map(|t| alive_count(&tensors, alive.as_deref(), t)).min().unwrap();
        let got = kernel(&weights, refs.as_deref(), Amount::Count(fewest + extra), Scope::Layer);
        prop_assert!(matches!(got, Err(Error::Amount { .. })), "{:?}", got.map(|x| x.1));
    }

    /// NaN among alive weights names the first tensor holding one; NaN at pruned positions is
    /// ignored (the result equals the reference, which never looks at dead weights).
    #[test]
    fn nan_alive_errors_and_nan_dead_is_ignored(
        c in case(4, 300),
        f in fraction(),
        layer in any::<bool>(),
        nan_at in prop::collection::vec(any::<prop::sample::Index>(), 1..4),
    ) {
        let scope = if layer { Scope::Layer } else { Scope::Global };
        let (mut tensors, alive, _) = c.build();
        let mut alive = alive.unwrap_or_else(|| tensors.iter().map(|t| vec![1; t.bits.len()]).collect());
        let total: usize = tensors.iter().map(|t| t.bits.len()).sum();
        prop_assume!(total > 0);
        let mut nan_tensors = Vec::new();
        for (n, ix) in nan_at.iter().enumerate() {
            let mut pos = ix.index(total);
            let t = tensors.iter().position(|t| {
                let here = pos < t.bits.len();
                if !here { pos -= t.bits.len(); }
                here
            }).unwrap();
            let d = tensors[t].dtype;
            tensors[t].bits[pos] = d.nan() | if n % 2 == 1 { d.sign() } else { 0 };
            // The first NaN is placed at a pruned position, the others alive.
            alive[t][pos] = (n > 0) as u8;
            if n > 0 { nan_tensors.push(t); }
        }
        let storage: Vec<Storage> = tensors.iter().map(Tensor::narrowed).collect();
        let weights = weights_of(&tensors, &storage);
        let refs: Vec<&[u8]> = alive.iter().map(|m| &m[..]).collect();
        let got = kernel(&weights, Some(&refs), Amount::Fraction(f), scope);
        match nan_tensors.iter().min() {
            Some(&first) => prop_assert_eq!(got.map(|x| x.1), Err(Error::Nan { index: first })),
            None => { check(&weights, Some(&refs), Amount::Fraction(f), scope)?; }
        }
    }

    /// Several rounds, each round's masks fed back as the survivors of the next.
    #[test]
    fn iterative_rounds_match_reference(
        c in case(3, 400),
        fs in prop::collection::vec(fraction(), 1..6),
        layer in any::<bool>(),
    ) {
        let scope = if layer { Scope::Layer } else { Scope::Global };
        let (tensors, alive, _) = c.build();
        let storage: Vec<Storage> = tensors.iter().map(Tensor::narrowed).collect();
        let weights = weights_of(&tensors, &storage);
        let mut current = alive;
        for f in fs {
            let refs: Option<Vec<&[u8]>> =
                current.as_ref().map(|a| a.iter().map(|m| &m[..]).collect());
            let masks = check(&weights, refs.as_deref(), Amount::Fraction(f), scope)?;
            current = masks;
            prop_assert!(current.is_some());
        }
    }

    #[test]
    fn kth_key_matches_sorted_keys(c in case(3, 3000), u in 0.0..=1.0f64) {
        let (tensors, alive, _) = c.build();
        // NaN-free by construction; dead positions are skipped by kth_key too.
        let storage: Vec<Storage> = tensors.iter().map(Tensor::narrowed).collect();
        let weights = weights_of(&tensors, &storage);
        let refs: Option<Vec<&[u8]>> = alive.as_ref().map(|a| a.iter().map(|m| &m[..]).collect());
        if weights.iter().all(|w| !matches!(w, Weights::F64(_))) {
            check_kth::<u32>(&weights, refs.as_deref(), u)?;
        }
        check_kth::<u64>(&weights, refs.as_deref(), u)?;
    }
}

fn check_kth<K: Key>(
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
    prop_assert_eq!(radix::kth_key::<K>(&chunks, k), (want, want_ties));
    Ok(())
}

fn key_of<K: Key>(w: &Weights<'_>, i: usize) -> K {
    match w {
        Weights::F16(x) => K::of_f16(x[i]),
        Weights::Bf16(x) => K::of_bf16(x[i]),
        Weights::F32(x) => K::of_f32(x[i]),
        Weights::F64(x) => K::of_f64(x[i]),
    }
}

// ---------------------------------------------------------------------------------------------
// Large inputs: above 2^18 elements the bracket is estimated from a sample.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn large_inputs_match_reference(
        specs in prop::collection::vec(
            (prop::sample::select(DTYPES.to_vec()), prop::sample::select(KINDS.to_vec()),
             1000..120_000usize),
            1..4),
        extra in 270_000..300_000usize,
        seed in any::<u64>(),
        alive_p in prop_oneof![Just(None), Just(Some(0.7))],
        u in fraction(),
        count in any::<bool>(),
        layer in any::<bool>(),
    ) {
        // One tensor is always large enough to exceed the sample size on its own (layer scope).
        let mut specs = specs;
        specs.push((DTYPES[(seed % 4) as usize], KINDS[(seed / 4 % 4) as usize], extra));
        let c = Case { specs, seed, alive_p };
        let scope = if layer { Scope::Layer } else { Scope::Global };
        if count {
            run_case(&c, scope, |alive| count_of(u, alive))?;
        } else {
            run_case(&c, scope, |_| Amount::Fraction(u))?;
        }
        // The radix select over many chunks, on the same data.
        let (tensors, alive, _) = c.build();
        let storage: Vec<Storage> = tensors.iter().map(Tensor::narrowed).collect();
        let weights = weights_of(&tensors, &storage);
        let refs: Option<Vec<&[u8]>> = alive.as_ref().map(|a| a.iter().map(|m| &m[..]).collect());
        check_kth::<u64>(&weights, refs.as_deref(), u)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic cases for the paths random data rarely reaches.

fn check_unit(weights: &[Weights<'_>], alive: Option<&[&[u8]]>, amount: Amount, scope: Scope) {
    if let Err(e) = check(weights, alive, amount, scope) {
        panic!("{e}");
    }
}

/// 400k equal magnitudes (mixed signs): the sampled bracket holds every weight as a candidate,
/// so the fix-up must hand ties out across chunks in global order.
#[test]
fn all_equal_above_sample_size() {
    let w: Vec<u32> = (0..400_000u32)
        .map(|i| 0.75f32.to_bits() | ((i & 1) << 31))
        .collect();
    let weights = [Weights::F32(&w)];
    for amount in [
        Amount::Fraction(0.3),
        Amount::Fraction(1.0),
        Amount::Count(1),
        Amount::Count(399_999),
        Amount::Count(200_000),
    ] {
        let (masks, s) = kernel(&weights, None, amount, Scope::Global).unwrap();
        // Ties: the earliest positions go first.
        let k = s.pruned as usize;
        assert!(masks[0][..k].iter().all(|&m| m == 0) && masks[0][k..].iter().all(|&m| m == 1));
        check_unit(&weights, None, amount, Scope::Global);
    }
}

/// Small magnitudes only at positions the strided sample skips (total = 2 * 2^18 samples every
/// odd position): the bracket, estimated from large values only, misses the threshold and the
/// exact radix fallback must take over.
#[test]
fn bracket_miss_falls_back_to_radix() {
    let n = 2usize << 18;
    let mut rng = Rng(7);
    let w: Vec<u32> = (0..n)
        .map(|i| {
            let v = if i % 2 == 0 {
                rng.unit() as f32 * 1e-3
            } else {
                1.0 + rng.unit() as f32
            };
            v.to_bits()
        })
        .collect();
    let weights = [Weights::F32(&w)];
    for amount in [
        Amount::Fraction(0.5),
        Amount::Fraction(0.25),
        Amount::Fraction(0.6),
        Amount::Count(1),
    ] {
        check_unit(&weights, None, amount, Scope::Global);
    }
    // Split across two tensors and dtypes (u64 keys), with ties at the threshold.
    let (a, b) = w.split_at(n / 2 + 3);
    let b64: Vec<u64> = b
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            if i % 8 == 0 {
                1.0f64.to_bits()
            } else {
                (f32::from_bits(x) as f64).to_bits()
            }
        })
        .collect();
    let weights = [Weights::F32(a), Weights::F64(&b64)];
    check_unit(&weights, None, Amount::Fraction(0.55), Scope::Global);
    check_unit(&weights, None, Amount::Count(300_001), Scope::Global);
}

/// More in-bracket candidates than the kernel keeps in memory (32 MiB of (u64 key, u32) pairs
/// = 2^21 for f64): the candidate list overflows and the radix fallback rewrites every mask.
#[test]
fn candidate_overflow_falls_back_to_radix() {
    let n = (1usize << 21) + (1 << 17);
    let w: Vec<u64> = (0..n)
        .map(|i| if i % 1000 == 999 { 2.0f64 } else { -0.125 }.to_bits())
        .collect();
    let weights = [Weights::F64(&w)];
    for k in [1u64, 1_000_000, n as u64 - 5_000] {
        let (masks, s) = kernel(&weights, None, Amount::Count(k), Scope::Global).unwrap();
        assert_eq!(
            s,
            Selection {
                alive: n as u64,
                pruned: k
            }
        );
        // Expected directly: the first k of the -0.125 entries go (the 2.0s are larger).
        let mut left = k;
        for (i, &m) in masks[0].iter().enumerate() {
            let small = i % 1000 != 999;
            let pruned = small && left > 0;
            if pruned {
                left -= 1;
            }
            assert_eq!(m, !pruned as u8, "position {i}, k = {k}");
        }
    }
}

/// NaN above the sample size: found by the fused pass whatever the bracket (which the sample,
/// blind to most positions, cannot know about); a NaN at a pruned position is never read.
#[test]
fn nan_above_sample_size() {
    let n = 300_000;
    let mut rng = Rng(3);
    let mut w: Vec<u16> = (0..n)
        .map(|_| half::bf16::from_f64(rng.unit() - 0.5).to_bits())
        .collect();
    let mut alive = vec![1u8; n];
    w[123_457] = 0x7fc1; // a bf16 NaN, alive in the second tensor below
    w[200_001] = 0xffc0;
    alive[200_001] = 0;
    let (a, b) = w.split_at(100_000);
    let weights = [Weights::Bf16(a), Weights::Bf16(b)];
    let (ma, mb) = alive.split_at(100_000);
    for amount in [
        Amount::Fraction(0.0),
        Amount::Fraction(0.4),
        Amount::Count(7),
    ] {
        for scope in [Scope::Global, Scope::Layer] {
            let got = kernel(&weights, Some(&[ma, mb]), amount, scope);
            assert_eq!(got.map(|x| x.1), Err(Error::Nan { index: 1 }));
        }
    }
    w[123_457] = 0;
    let (a, b) = w.split_at(100_000);
    let weights = [Weights::Bf16(a), Weights::Bf16(b)];
    for amount in [
        Amount::Fraction(0.4),
        Amount::Count(299_000),
        Amount::Fraction(1.0),
    ] {
        check_unit(&weights, Some(&[ma, mb]), amount, Scope::Global);
    }
}

#[test]
fn tiny_inputs_and_signed_zeros() {
    let pz = 0.0f32.to_bits();
    let nz = (-0.0f32).to_bits();
    let cases: [&[u32]; 5] = [
        &[],
        &[nz],
        &[pz, nz],
        &[nz, pz, nz],
        &[f32::INFINITY.to_bits(), nz, 1],
    ];
    for w in cases {
        for amount in [
            Amount::Fraction(0.0),
            Amount::Fraction(0.5),
            Amount::Fraction(1.0),
            Amount::Count(0),
            Amount::Count(w.len() as u64),
        ] {
            for scope in [Scope::Global, Scope::Layer] {
                check_unit(&[Weights::F32(w)], None, amount, scope);
            }
        }
    }
    // ±0 tie: the earlier one goes first whatever its sign.
    let (m, _) = kernel(
        &[Weights::F32(&[nz, pz, nz])],
        None,
        Amount::Count(2),
        Scope::Global,
    )
    .unwrap();
    assert_eq!(m, vec![vec![0, 0, 1]]);
    // Empty tensors next to full ones, and infinity pruned only after every finite weight.
    let h: [u16; 3] = [0x7c00, 0xfc00, 0x7bff]; // +inf, -inf, f16::MAX
    let (m, s) = kernel(
        &[Weights::F16(&[]), Weights::F16(&h), Weights::Bf16(&[])],
        None,
        Amount::Count(2),
        Scope::Global,
    )
    .unwrap();
    assert_eq!(m, vec![vec![], vec![0, 1, 0], vec![]]);
    assert_eq!(
        s,
        Selection {
            alive: 3,
            pruned: 2
        }
    );
}

#[test]
fn fractions_outside_unit_interval_are_rejected() {
    let w = [1.0f32.to_bits(), 2.0f32.to_bits()];
    for f in [-0.1, 1.000001, f64::NAN, f64::INFINITY, -1e-300] {
        let got = kernel(
            &[Weights::F32(&w)],
            None,
            Amount::Fraction(f),
            Scope::Global,
        );
        assert!(
            matches!(got, Err(Error::Amount { .. })),
            "{f}: {:?}",
            got.map(|x| x.1)
        );
    }
    // Dead weights do not count: 1 alive, so Count(2) is too many.
    let got = kernel(
        &[Weights::F32(&w)],
        Some(&[&[0, 1]]),
        Amount::Count(2),
        Scope::Global,
    );
    assert!(matches!(got, Err(Error::Amount { .. })));
}

#[test]
fn length_mismatches_are_rejected_before_writing() {
    let a = [1.0f32.to_bits(); 3];
    let b = [1u16; 2];
    let weights = [Weights::F32(&a), Weights::Bf16(&b)];
    let amount = Amount::Fraction(0.5);
    let run = |out: &mut [&mut [u8]], alive: Option<&[&[u8]]>, scope| {
        select_masks(&weights, alive, out, amount, scope)
    };
    let (mut o1, mut o2, mut o3) = ([9u8; 3], [9u8; 2], [9u8; 3]);
    for scope in [Scope::Global, Scope::Layer] {
        assert_eq!(
            run(&mut [&mut o1[..]], None, scope),
            Err(Error::ListLength {
                arg: "out",
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            run(&mut [&mut o1[..], &mut o3[..]], None, scope),
            Err(Error::Length {
                arg: "out",
                index: 1,
                expected: 2,
                got: 3
            })
        );
        assert_eq!(
            run(&mut [&mut o1[..], &mut o2[..]], Some(&[&[1, 1, 1]]), scope),
            Err(Error::ListLength {
                arg: "masks",
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            run(
                &mut [&mut o1[..], &mut o2[..]],
                Some(&[&[1, 1], &[1, 1]]),
                scope
            ),
            Err(Error::Length {
                arg: "masks",
                index: 0,
                expected: 3,
                got: 2
            })
        );
        assert_eq!(
            select_masks(&[], None, &mut [], amount, scope),
            Err(Error::Empty { arg: "weights" })
        );
    }
    assert!(
        o1.iter().chain(&o2).chain(&o3).all(|&b| b == 9),
        "nothing written"
    );
}
