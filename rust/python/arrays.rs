//! NumPy arrays borrowed as the kernels' views: bit arrays by element width, masks as bytes.

use numpy::{
    PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyReadwriteArrayDyn,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::{busy, label, not_contiguous};
use crate::magnitude::Weights;
use crate::mask::{Bits, BitsMut};
use crate::select::Amount;

/// Borrow each array of `objs` as one of the unsigned bit widths (`$borrow`: try_readonly or
/// try_readwrite), naming the argument when it is busy or of another dtype.
macro_rules! borrow_bits {
    ($objs:expr, $arg:expr, $names:expr, $borrow:ident, $kind:ident) => {
        $objs
            .iter()
            .enumerate()
            .map(|(i, obj)| borrow_bit!(obj, i, $arg, $names, $borrow, $kind))
            .collect::<PyResult<Vec<_>>>()
    };
}

/// [`borrow_bits`] of one array, `$i` its index in the argument.
macro_rules! borrow_bit {
    ($obj:expr, $i:expr, $arg:expr, $names:expr, $borrow:ident, $kind:ident) => {{
        let (obj, i) = ($obj, $i);
        let borrowed = if let Ok(a) = obj.cast::<PyArrayDyn<u16>>() {
            a.$borrow().map($kind::U16)
        } else if let Ok(a) = obj.cast::<PyArrayDyn<u32>>() {
            a.$borrow().map($kind::U32)
        } else if let Ok(a) = obj.cast::<PyArrayDyn<u64>>() {
            a.$borrow().map($kind::U64)
        } else {
            return Err(PyTypeError::new_err(format!(
                "{}: expected a uint16, uint32 or uint64 bit view",
                label($arg, i, $names)
            )));
        };
        borrowed.map_err(|_| busy($arg, i, $names))
    }};
}

pub(super) fn borrow_bytes<'py>(
    objs: &[Bound<'py, PyAny>],
    arg: &str,
    names: &[String],
) -> PyResult<Vec<PyReadonlyArrayDyn<'py, u8>>> {
    objs.iter()
        .enumerate()
        .map(|(i, obj)| {
            let array = obj.cast::<PyArrayDyn<u8>>().map_err(|_| {
                PyTypeError::new_err(format!("{}: expected a uint8 view", label(arg, i, names)))
            })?;
            array.try_readonly().map_err(|_| busy(arg, i, names))
        })
        .collect()
}

pub(super) enum BitsArray<'py> {
    U16(PyReadonlyArrayDyn<'py, u16>),
    U32(PyReadonlyArrayDyn<'py, u32>),
    U64(PyReadonlyArrayDyn<'py, u64>),
}

pub(super) enum BitsArrayMut<'py> {
    U16(PyReadwriteArrayDyn<'py, u16>),
    U32(PyReadwriteArrayDyn<'py, u32>),
    U64(PyReadwriteArrayDyn<'py, u64>),
}

/// Element width of a bits array. Extraction dispatches on it: a derived enum extraction tries
/// each variant in turn and builds a Python exception for every miss, a fixed cost per tensor
/// larger than the kernel's work on small models.
pub(super) fn element_width(obj: Borrowed<'_, '_, PyAny>) -> PyResult<usize> {
    let array = obj.cast::<PyUntypedArray>().map_err(|_| {
        PyTypeError::new_err(format!(
            "expected a NumPy array of uint16, uint32 or uint64 bits, got {}",
            obj.get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string())
        ))
    })?;
    Ok(array.dtype().itemsize())
}

pub(super) fn unsupported_width(width: usize) -> PyErr {
    PyTypeError::new_err(format!(
        "expected uint16, uint32 or uint64 bits, got {width}-byte elements"
    ))
}

impl<'a, 'py> FromPyObject<'a, 'py> for BitsArray<'py> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(match element_width(obj)? {
            2 => BitsArray::U16(obj.extract()?),
            4 => BitsArray::U32(obj.extract()?),
            8 => BitsArray::U64(obj.extract()?),
            width => return Err(unsupported_width(width)),
        })
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for BitsArrayMut<'py> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(match element_width(obj)? {
            2 => BitsArrayMut::U16(obj.extract()?),
            4 => BitsArrayMut::U32(obj.extract()?),
            8 => BitsArrayMut::U64(obj.extract()?),
            width => return Err(unsupported_width(width)),
        })
    }
}

impl BitsArray<'_> {
    pub(super) fn bits(&self, arg: &str, index: usize) -> PyResult<Bits<'_>> {
        let bad = |_| not_contiguous(arg, index);
        Ok(match self {
            BitsArray::U16(a) => Bits::U16(a.as_slice().map_err(bad)?),
            BitsArray::U32(a) => Bits::U32(a.as_slice().map_err(bad)?),
            BitsArray::U64(a) => Bits::U64(a.as_slice().map_err(bad)?),
        })
    }

    pub(super) fn weights(&self, arg: &str, dtype: &str, index: usize) -> PyResult<Weights<'_>> {
        Ok(match (self.bits(arg, index)?, dtype) {
            (Bits::U16(x), "float16") => Weights::F16(x),
            (Bits::U16(x), "bfloat16") => Weights::Bf16(x),
            (Bits::U32(x), "float32") => Weights::F32(x),
            (Bits::U64(x), "float64") => Weights::F64(x),
            _ => {
                return Err(PyTypeError::new_err(format!(
                    "{arg}[{index}]: bits of the wrong width for dtype {dtype:?}"
                )))
            }
        })
    }
}

impl BitsArrayMut<'_> {
    pub(super) fn bits_mut(&mut self, arg: &str, index: usize) -> PyResult<BitsMut<'_>> {
        let bad = |_| not_contiguous(arg, index);
        Ok(match self {
            BitsArrayMut::U16(a) => BitsMut::U16(a.as_slice_mut().map_err(bad)?),
            BitsArrayMut::U32(a) => BitsMut::U32(a.as_slice_mut().map_err(bad)?),
            BitsArrayMut::U64(a) => BitsMut::U64(a.as_slice_mut().map_err(bad)?),
        })
    }
}

pub(super) fn byte_slices<'a>(
    arrays: &'a [PyReadonlyArrayDyn<'_, u8>],
    arg: &str,
) -> PyResult<Vec<&'a [u8]>> {
    arrays
        .iter()
        .enumerate()
        .map(|(i, a)| a.as_slice().map_err(|_| not_contiguous(arg, i)))
        .collect()
}

#[derive(FromPyObject)]
pub(super) enum AmountArg {
    Count(u64),
    Fraction(f64),
}

impl From<AmountArg> for Amount {
    fn from(a: AmountArg) -> Amount {
        match a {
            AmountArg::Count(k) => Amount::Count(k),
            AmountArg::Fraction(f) => Amount::Fraction(f),
        }
    }
}

/// Dtype-tagged views of the weights, one dtype name per weight.
pub(super) fn weight_views<'a>(
    weights: &'a [BitsArray<'_>],
    dtypes: &[String],
) -> PyResult<Vec<Weights<'a>>> {
    if dtypes.len() != weights.len() {
        return Err(PyValueError::new_err(format!(
            "dtypes: expected {} entries (one per weight), got {}",
            weights.len(),
            dtypes.len()
        )));
    }
    weights
        .iter()
        .zip(dtypes)
        .enumerate()
        .map(|(i, (w, d))| w.weights("weights", d, i))
        .collect()
}

/// Mutable weight views, mask views and the element count shared by the in-place kernels.
pub(super) type InPlace<'a> = (Vec<BitsMut<'a>>, Vec<&'a [u8]>, usize);

pub(super) fn in_place_views<'a>(
    weights: &'a mut [BitsArrayMut<'_>],
    masks: &'a [PyReadonlyArrayDyn<'_, u8>],
) -> PyResult<InPlace<'a>> {
    let views: Vec<BitsMut<'a>> = weights
        .iter_mut()
        .enumerate()
        .map(|(i, w)| w.bits_mut("weights", i))
        .collect::<PyResult<_>>()?;
    let masks = byte_slices(masks, "masks")?;
    let elements = views.iter().map(|w| w.len()).sum();
    Ok((views, masks, elements))
}
