//! Magnitude keys: |w| as an unsigned integer whose integer order is the order of |w|.
//!
//! For non-negative IEEE floats the bit pattern is monotone in the value, so clearing the sign bit
//! gives an exact key: +0.0 and -0.0 collide, subnormals sort below normals, +Inf is the largest
//! finite-or-infinite key and every NaN sorts above it (which is how NaN is detected). f16 and bf16
//! widen exactly to f32, and f32 exactly to f64, so a mixed-dtype selection compares exact
//! magnitudes in the widest key space present: `u32` unless an f64 tensor is involved.

/// A weight tensor as raw IEEE bits (dtype-tagged): its keys come from integer operations on the
/// bits (f16 subnormals aside, which one exact multiply widens).
#[derive(Clone, Copy, Debug)]
pub enum Weights<'a> {
    F16(&'a [u16]),
    Bf16(&'a [u16]),
    F32(&'a [u32]),
    F64(&'a [u64]),
}

impl<'a> Weights<'a> {
    pub fn len(&self) -> usize {
        match self {
            Weights::F16(x) | Weights::Bf16(x) => x.len(),
            Weights::F32(x) => x.len(),
            Weights::F64(x) => x.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn slice(&self, start: usize, end: usize) -> Weights<'a> {
        match *self {
            Weights::F16(x) => Weights::F16(&x[start..end]),
            Weights::Bf16(x) => Weights::Bf16(&x[start..end]),
            Weights::F32(x) => Weights::F32(&x[start..end]),
            Weights::F64(x) => Weights::F64(&x[start..end]),
        }
    }

    /// Run `visitor` over the tensor's magnitude keys in `K`'s key space. Dispatching once per
    /// slice (not per element) keeps each dtype's inner loop monomorphic and vectorisable.
    #[inline]
    pub fn visit_keys<K: Key, V: KeyVisitor<K>>(&self, visitor: V) -> V::Output {
        match *self {
            Weights::F16(x) => visitor.visit(x, K::of_f16),
            Weights::Bf16(x) => visitor.visit(x, K::of_bf16),
            Weights::F32(x) => visitor.visit(x, K::of_f32),
            Weights::F64(x) => visitor.visit(x, K::of_f64),
        }
    }
}

/// Something that consumes a slice of raw bits together with the function that keys them.
pub trait KeyVisitor<K> {
    type Output;
    fn visit<T: Copy + Send + Sync, F: Fn(T) -> K + Copy + Send + Sync>(
        self,
        bits: &[T],
        key: F,
    ) -> Self::Output;
}

/// An ordered magnitude key space.
pub trait Key: Copy + Ord + Eq + Send + Sync + std::fmt::Debug + 'static {
    const ZERO: Self;
    /// Larger than every key, NaN included: an exclusive upper bound meaning "everything".
    const MAX: Self;
    /// The key of +Inf; keys above it are NaN.
    const INF: Self;
    /// Number of significant bits (the sign bit is always clear).
    const BITS: u32;
    fn of_f16(bits: u16) -> Self;
    fn of_bf16(bits: u16) -> Self;
    fn of_f32(bits: u32) -> Self;
    fn of_f64(bits: u64) -> Self;
    fn to_u64(self) -> u64;
    fn from_u64(v: u64) -> Self;
    #[inline]
    fn is_nan(self) -> bool {
        self > Self::INF
    }
}

const F32_ABS: u32 = 0x7fff_ffff;
const F64_ABS: u64 = 0x7fff_ffff_ffff_ffff;

impl Key for u32 {
    const ZERO: u32 = 0;
    const MAX: u32 = u32::MAX;
    const INF: u32 = 0x7f80_0000;
    const BITS: u32 = 31;
    #[inline(always)]
    fn of_f16(bits: u16) -> u32 {
        // Branch-free (selects, one int-to-float convert), so the portable loops vectorise: a
        // table lookup per weight did not, and renormalising subnormals bit by bit branches.
        let m = (bits & 0x7fff) as u32;
        // A subnormal is m * 2^-24: exact in f32, and a normal number there.
        let subnormal = (m as f32 * f32::from_bits(0x3380_0000)).to_bits();
        // Otherwise the fields widen in place and the exponent is rebiased (15 -> 127); infinity
        // and NaN go to the top exponent with their payload bits (no quiet bit forced, so the
        // keys increase with the bits, NaNs too).
        let rebias = if m >= 0x7c00 {
            0x7000_0000
        } else {
            0x3800_0000
        };
        if m < 0x400 {
            subnormal
        } else {
            (m << 13) + rebias
        }
    }
    #[inline(always)]
    fn of_bf16(bits: u16) -> u32 {
        ((bits & 0x7fff) as u32) << 16
    }
    #[inline(always)]
    fn of_f32(bits: u32) -> u32 {
        bits & F32_ABS
    }
    #[inline(always)]
    fn of_f64(_bits: u64) -> u32 {
        // `select::wide_keys` chooses u64 keys whenever an f64 tensor is present.
        unreachable!("f64 weights are always ranked in the u64 key space")
    }
    fn to_u64(self) -> u64 {
        self as u64
    }
    fn from_u64(v: u64) -> u32 {
        v as u32
    }
}

impl Key for u64 {
    const ZERO: u64 = 0;
    const MAX: u64 = u64::MAX;
    const INF: u64 = 0x7ff0_0000_0000_0000;
    const BITS: u32 = 63;
    #[inline(always)]
    fn of_f16(bits: u16) -> u64 {
        Self::of_f32(<u32 as Key>::of_f16(bits))
    }
    #[inline(always)]
    fn of_bf16(bits: u16) -> u64 {
        Self::of_f32(<u32 as Key>::of_bf16(bits))
    }
    #[inline(always)]
    fn of_f32(bits: u32) -> u64 {
        // Exact widening; NaN stays NaN (above +Inf) so detection still works.
        (f32::from_bits(bits & F32_ABS) as f64).to_bits()
    }
    #[inline(always)]
    fn of_f64(bits: u64) -> u64 {
        bits & F64_ABS
    }
    fn to_u64(self) -> u64 {
        self
    }
    fn from_u64(v: u64) -> u64 {
        v
    }
}

/// Low bits that are zero in the key of every weight of these dtypes (f16 and bf16 widen into
/// f32's key space, f32 into f64's): keys are multiples of 2^g, so a histogram over `key >> g`
/// gives each distinct key its own bin.
pub(crate) fn granularity<K: Key>(weights: &[Weights<'_>]) -> u32 {
    let wide = K::BITS > 32;
    let zeros = |w: &Weights<'_>| match (w, wide) {
        (Weights::F16(_), false) => 13,
        (Weights::Bf16(_), false) => 16,
        (Weights::F16(_), true) => 29 + 13,
        (Weights::Bf16(_), true) => 29 + 16,
        (Weights::F32(_), true) => 29,
        (Weights::F32(_), false) | (Weights::F64(_), _) => 0,
    };
    weights.iter().map(zeros).min().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k32(x: f32) -> u32 {
        <u32 as Key>::of_f32(x.to_bits())
    }

    #[test]
    fn f32_keys_order_magnitudes() {
        let xs = [
            0.0f32,
            -0.0,
            f32::from_bits(1),
            -f32::MIN_POSITIVE,
            1.0,
            -1.5,
            f32::MAX,
            f32::NEG_INFINITY,
        ];
        for a in xs {
            for b in xs {
                assert_eq!(
                    k32(a).cmp(&k32(b)),
                    a.abs().partial_cmp(&b.abs()).unwrap(),
                    "{a} vs {b}"
                );
            }
        }
        assert!(k32(f32::NAN).is_nan() && k32(-f32::NAN).is_nan());
        assert!(!k32(f32::INFINITY).is_nan());
    }

    #[test]
    fn half_keys_widen_exactly() {
        for b in 0u16..=u16::MAX {
            let h = half::f16::from_bits(b);
            if h.is_nan() {
                assert!(<u32 as Key>::of_f16(b).is_nan());
                continue;
            }
            assert_eq!(<u32 as Key>::of_f16(b), k32(h.to_f32()));
            assert_eq!(<u64 as Key>::of_f16(b), (h.to_f32().abs() as f64).to_bits());
            let bf = half::bf16::from_bits(b);
            if !bf.is_nan() {
                assert_eq!(<u32 as Key>::of_bf16(b), k32(bf.to_f32()));
            }
        }
    }

    #[test]
    fn f16_keys_increase_with_the_bits() {
        let keys: Vec<u32> = (0u16..0x8000).map(<u32 as Key>::of_f16).collect();
        assert!(keys.windows(2).all(|p| p[0] < p[1]));
        assert_eq!(<u32 as Key>::of_f16(0x7c00), <u32 as Key>::INF);
        assert_eq!(<u32 as Key>::of_f16(0xfc01), 0x7f80_2000); // a NaN keeps its payload
    }

    #[test]
    fn keys_are_multiples_of_their_granularity() {
        let tz = |k: u64| {
            if k == 0 {
                u64::BITS
            } else {
                k.trailing_zeros()
            }
        };
        let (f16, bf16) = (Weights::F16(&[]), Weights::Bf16(&[]));
        for b in 0u16..=u16::MAX {
            assert!(tz(<u32 as Key>::of_f16(b) as u64) >= granularity::<u32>(&[f16]));
            assert!(tz(<u32 as Key>::of_bf16(b) as u64) >= granularity::<u32>(&[bf16]));
            assert!(tz(<u64 as Key>::of_f16(b)) >= granularity::<u64>(&[f16]));
            assert!(tz(<u64 as Key>::of_bf16(b)) >= granularity::<u64>(&[bf16]));
        }
        let f32s = [1u32, 0x0040_0001, 0x3f80_0001, 0x7f80_0001, 0x7fff_ffff];
        for b in f32s {
            assert!(tz(<u64 as Key>::of_f32(b)) >= granularity::<u64>(&[Weights::F32(&[])]));
        }
        // The tightest: a key with exactly that many low zero bits exists for each dtype.
        assert_eq!(<u32 as Key>::of_f16(0x0401).trailing_zeros(), 13);
        assert_eq!(<u32 as Key>::of_bf16(0x0001).trailing_zeros(), 16);
        assert_eq!(<u64 as Key>::of_f32(0x3f80_0001).trailing_zeros(), 29);
        // A mix is as fine as its finest dtype.
        assert_eq!(granularity::<u32>(&[bf16, f16]), 13);
        assert_eq!(granularity::<u32>(&[bf16, Weights::F32(&[])]), 0);
    }

    #[test]
    fn f64_and_widened_f32_share_order() {
        let a = <u64 as Key>::of_f32(1.5f32.to_bits());
        let b = <u64 as Key>::of_f64((-1.5f64).to_bits());
        assert_eq!(a, b);
        assert!(<u64 as Key>::of_f32(f32::NAN.to_bits()).is_nan());
        assert!(<u64 as Key>::of_f64(f64::INFINITY.to_bits()) == <u64 as Key>::INF);
    }
}
