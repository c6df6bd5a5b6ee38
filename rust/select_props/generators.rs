//! Test data: tensor contents drawn from a seeded generator (proptest chooses shapes, dtypes,
//! kinds and seeds, and shrinks those), so large tensors stay cheap to generate.

use proptest::prelude::*;

use super::reference::check;
use crate::magnitude::Weights;
use crate::select::{Amount, Scope};

/// splitmix64: a tiny deterministic generator for tensor contents.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Dtype {
    F16,
    Bf16,
    F32,
    F64,
}

pub(crate) const DTYPES: [Dtype; 4] = [Dtype::F16, Dtype::Bf16, Dtype::F32, Dtype::F64];

/// How a tensor's values are drawn.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    /// Uniform in (-1, 1), rounded to the dtype (ties appear naturally in f16/bf16).
    Uniform,
    /// Arbitrary bit patterns (NaN patterns turned into ±inf): every exponent, subnormals.
    AnyBits,
    /// A handful of values shared by every dtype, random signs: heavy ties, across dtypes too.
    Tied,
    /// ±0, subnormals, the smallest normal, 1, the largest finite value, ±inf.
    Edge,
}

pub(crate) const KINDS: [Kind; 4] = [Kind::Uniform, Kind::AnyBits, Kind::Tied, Kind::Edge];

/// Values exactly representable in f16, bf16, f32 and f64 (2^-20 is an f16 subnormal).
pub(crate) const SHARED: [f64; 6] = [0.0, 0.5, 1.0, 1.5, 9.5367431640625e-7, f64::INFINITY];

/// One tensor's raw bits, widened to u64 (narrowed by [`Tensor::weights`]).
#[derive(Clone, Debug)]
pub(crate) struct Tensor {
    pub(crate) dtype: Dtype,
    pub(crate) bits: Vec<u64>,
}

impl Dtype {
    pub(crate) fn sign(self) -> u64 {
        match self {
            Dtype::F16 | Dtype::Bf16 => 0x8000,
            Dtype::F32 => 0x8000_0000,
            Dtype::F64 => 0x8000_0000_0000_0000,
        }
    }

    pub(crate) fn bits_of(self, v: f64) -> u64 {
        match self {
            Dtype::F16 => half::f16::from_f64(v).to_bits() as u64,
            Dtype::Bf16 => half::bf16::from_f64(v).to_bits() as u64,
            Dtype::F32 => (v as f32).to_bits() as u64,
            Dtype::F64 => v.to_bits(),
        }
    }

    /// +inf's bits: every pattern above it (sign cleared) is a NaN.
    pub(crate) fn inf(self) -> u64 {
        self.bits_of(f64::INFINITY)
    }

    pub(crate) fn nan(self) -> u64 {
        self.inf() | 1
    }

    /// Positive edge values: 0, smallest / largest subnormal, smallest normal, 1, max, inf.
    pub(crate) fn edges(self) -> [u64; 7] {
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
    pub(crate) fn generate(dtype: Dtype, kind: Kind, len: usize, rng: &mut Rng) -> Tensor {
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

    pub(crate) fn narrowed(&self) -> Storage {
        match self.dtype {
            Dtype::F16 | Dtype::Bf16 => Storage::U16(self.bits.iter().map(|&b| b as u16).collect()),
            Dtype::F32 => Storage::U32(self.bits.iter().map(|&b| b as u32).collect()),
            Dtype::F64 => Storage::U64(self.bits.clone()),
        }
    }
}

/// Owned bits of the right width, borrowed as [`Weights`].
pub(crate) enum Storage {
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
}

pub(crate) fn weights_of<'a>(tensors: &[Tensor], storage: &'a [Storage]) -> Vec<Weights<'a>> {
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
pub(crate) fn alive_masks(tensors: &[Tensor], p: f64, rng: &mut Rng) -> Vec<Vec<u8>> {
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
pub(crate) struct Case {
    pub(crate) specs: Vec<(Dtype, Kind, usize)>,
    pub(crate) seed: u64,
    /// `None`: no survivor masks at all.
    pub(crate) alive_p: Option<f64>,
}

impl Case {
    pub(crate) fn build(&self) -> (Vec<Tensor>, Option<Vec<Vec<u8>>>, Rng) {
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

pub(crate) fn case(max_tensors: usize, max_len: usize) -> impl Strategy<Value = Case> {
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
pub(crate) fn fraction() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(1.0),
        Just(0.5),
        Just(0.25),
        0.0..=1.0f64,
        (0.0..=1.0f64).prop_map(|f| f * f * f), // small fractions
    ]
}

pub(crate) fn alive_count(tensors: &[Tensor], alive: Option<&[Vec<u8>]>, t: usize) -> u64 {
    match alive {
        None => tensors[t].bits.len() as u64,
        Some(a) => a[t].iter().filter(|&&b| b != 0).count() as u64,
    }
}

/// Run one case with `amount_of(alive)` choosing the amount from the alive count.
pub(crate) fn run_case(
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

pub(crate) fn count_of(u: f64, alive: u64) -> Amount {
    Amount::Count(((u * alive as f64).floor() as u64).min(alive))
}
