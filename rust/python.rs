//! The only file that knows about Python: thin `*_py` wrappers that borrow NumPy buffers, release
//! the GIL around the kernels and map [`Error`] to Python exceptions in one place.
//!
//! The facade (`lottery_ticket.kernels`) hands over every float tensor as an unsigned-int view of
//! its bits (zero-copy; bf16 has no NumPy dtype) plus a dtype name, and masks as uint8 views of
//! bool arrays, so the kernels never read a `bool` that might hold a byte other than 0 or 1.

use numpy::{
    PyArrayDescrMethods, PyReadonlyArrayDyn, PyReadwriteArrayDyn, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::error::Error;
use crate::magnitude::Weights;
use crate::mask::{self, Bits, BitsMut};
use crate::rewind;
use crate::select::{self, Amount, Scope};

/// Below this many elements the kernels finish in microseconds, less than releasing and
/// re-acquiring the GIL costs; above it other Python threads should run meanwhile.
const DETACH_MIN_ELEMENTS: usize = 1 << 15;

fn to_py(err: Error, names: &[String]) -> PyErr {
    let message = err.message(names);
    if err.is_type_error() {
        PyTypeError::new_err(message)
    } else {
        PyValueError::new_err(message)
    }
}

fn not_contiguous(arg: &str, index: usize) -> PyErr {
    PyValueError::new_err(format!("{arg}[{index}]: array must be C-contiguous"))
}

fn run_detached<T: Send>(py: Python<'_>, elements: usize, work: impl FnOnce() -> T + Send) -> T {
    if elements >= DETACH_MIN_ELEMENTS {
        py.detach(work)
    } else {
        work()
    }
}

enum BitsArray<'py> {
    U16(PyReadonlyArrayDyn<'py, u16>),
    U32(PyReadonlyArrayDyn<'py, u32>),
    U64(PyReadonlyArrayDyn<'py, u64>),
}

enum BitsArrayMut<'py> {
    U16(PyReadwriteArrayDyn<'py, u16>),
    U32(PyReadwriteArrayDyn<'py, u32>),
    U64(PyReadwriteArrayDyn<'py, u64>),
}

/// Element width of a bits array. Extraction dispatches on it: a derived enum extraction tries
/// each variant in turn and builds a Python exception for every miss, a fixed cost per tensor
/// larger than the kernel's work on small models.
fn element_width(obj: Borrowed<'_, '_, PyAny>) -> PyResult<usize> {
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

fn unsupported_width(width: usize) -> PyErr {
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
    fn bits(&self, arg: &str, index: usize) -> PyResult<Bits<'_>> {
        let bad = |_| not_contiguous(arg, index);
        Ok(match self {
            BitsArray::U16(a) => Bits::U16(a.as_slice().map_err(bad)?),
            BitsArray::U32(a) => Bits::U32(a.as_slice().map_err(bad)?),
            BitsArray::U64(a) => Bits::U64(a.as_slice().map_err(bad)?),
        })
    }

    fn weights(&self, dtype: &str, index: usize) -> PyResult<Weights<'_>> {
        Ok(match (self.bits("weights", index)?, dtype) {
            (Bits::U16(x), "float16") => Weights::F16(x),
            (Bits::U16(x), "bfloat16") => Weights::Bf16(x),
            (Bits::U32(x), "float32") => Weights::F32(x),
            (Bits::U64(x), "float64") => Weights::F64(x),
            _ => {
                return Err(PyTypeError::new_err(format!(
                    "weights[{index}]: bits of the wrong width for dtype {dtype:?}"
                )))
            }
        })
    }
}

impl BitsArrayMut<'_> {
    fn bits_mut(&mut self, index: usize) -> PyResult<BitsMut<'_>> {
        let bad = |_| not_contiguous("weights", index);
        Ok(match self {
            BitsArrayMut::U16(a) => BitsMut::U16(a.as_slice_mut().map_err(bad)?),
            BitsArrayMut::U32(a) => BitsMut::U32(a.as_slice_mut().map_err(bad)?),
            BitsArrayMut::U64(a) => BitsMut::U64(a.as_slice_mut().map_err(bad)?),
        })
    }
}

fn byte_slices<'a>(arrays: &'a [PyReadonlyArrayDyn<'_, u8>], arg: &str) -> PyResult<Vec<&'a [u8]>> {
    arrays
        .iter()
        .enumerate()
        .map(|(i, a)| a.as_slice().map_err(|_| not_contiguous(arg, i)))
        .collect()
}

#[derive(FromPyObject)]
enum AmountArg {
    Count(u64),
    Fraction(f64),
}

/// Write into `out` the masks that survive pruning `amount` of the alive weights.
/// Returns `(alive_before, pruned)`.
#[pyfunction(name = "select_masks")]
#[pyo3(signature = (weights, dtypes, masks, out, amount, scope, names))]
#[allow(clippy::too_many_arguments)]
fn select_masks_py(
    py: Python<'_>,
    weights: Vec<BitsArray<'_>>,
    dtypes: Vec<String>,
    masks: Option<Vec<PyReadonlyArrayDyn<'_, u8>>>,
    mut out: Vec<PyReadwriteArrayDyn<'_, u8>>,
    amount: AmountArg,
    scope: &str,
    names: Vec<String>,
) -> PyResult<(u64, u64)> {
    let scope = match scope {
        "global" => Scope::Global,
        "layer" => Scope::Layer,
        other => {
            return Err(PyValueError::new_err(format!(
                "scope: expected 'global' or 'layer', got {other:?}"
            )))
        }
    };
    let amount = match amount {
        AmountArg::Count(k) => Amount::Count(k),
        AmountArg::Fraction(f) => Amount::Fraction(f),
    };
    let views: Vec<Weights<'_>> = weights
        .iter()
        .zip(&dtypes)
        .enumerate()
        .map(|(i, (w, d))| w.weights(d, i))
        .collect::<PyResult<_>>()?;
    let alive = masks
        .as_deref()
        .map(|m| byte_slices(m, "masks"))
        .transpose()?;
    let mut outs: Vec<&mut [u8]> = out
        .iter_mut()
        .enumerate()
        .map(|(i, a)| a.as_slice_mut().map_err(|_| not_contiguous("out", i)))
        .collect::<PyResult<_>>()?;
    let elements = views.iter().map(|w| w.len()).sum();
    let result = run_detached(py, elements, || {
        select::select_masks(&views, alive.as_deref(), &mut outs, amount, scope)
    });
    result
        .map(|s| (s.alive, s.pruned))
        .map_err(|e| to_py(e, &names))
}

/// Mutable weight views, mask views and the element count shared by the in-place kernels.
type InPlace<'a> = (Vec<BitsMut<'a>>, Vec<&'a [u8]>, usize);

fn in_place_views<'a>(
    weights: &'a mut [BitsArrayMut<'_>],
    masks: &'a [PyReadonlyArrayDyn<'_, u8>],
) -> PyResult<InPlace<'a>> {
    let views: Vec<BitsMut<'a>> = weights
        .iter_mut()
        .enumerate()
        .map(|(i, w)| w.bits_mut(i))
        .collect::<PyResult<_>>()?;
    let masks = byte_slices(masks, "masks")?;
    let elements = views.iter().map(|w| w.len()).sum();
    Ok((views, masks, elements))
}

/// `w[i] = 0` where `mask[i] == 0`, in place.
#[pyfunction(name = "apply_masks")]
#[pyo3(signature = (weights, masks, names))]
fn apply_masks_py(
    py: Python<'_>,
    mut weights: Vec<BitsArrayMut<'_>>,
    masks: Vec<PyReadonlyArrayDyn<'_, u8>>,
    names: Vec<String>,
) -> PyResult<()> {
    let (mut views, masks, elements) = in_place_views(&mut weights, &masks)?;
    run_detached(py, elements, || mask::apply_masks(&mut views, &masks))
        .map_err(|e| to_py(e, &names))
}

/// `w[i] = snapshot[i]` where `mask[i]` is nonzero, else 0, in place.
#[pyfunction(name = "rewind")]
#[pyo3(signature = (weights, snapshots, masks, names))]
fn rewind_py(
    py: Python<'_>,
    mut weights: Vec<BitsArrayMut<'_>>,
    snapshots: Vec<BitsArray<'_>>,
    masks: Vec<PyReadonlyArrayDyn<'_, u8>>,
    names: Vec<String>,
) -> PyResult<()> {
    let (mut views, masks, elements) = in_place_views(&mut weights, &masks)?;
    let snaps: Vec<Bits<'_>> = snapshots
        .iter()
        .enumerate()
        .map(|(i, s)| s.bits("snapshots", i))
        .collect::<PyResult<_>>()?;
    run_detached(py, elements, || rewind::rewind(&mut views, &snaps, &masks))
        .map_err(|e| to_py(e, &names))
}

/// Number of alive (nonzero) entries in each mask.
#[pyfunction(name = "alive_counts")]
fn alive_counts_py(py: Python<'_>, masks: Vec<PyReadonlyArrayDyn<'_, u8>>) -> PyResult<Vec<u64>> {
    let masks = byte_slices(&masks, "masks")?;
    let elements = masks.iter().map(|m| m.len()).sum();
    Ok(run_detached(py, elements, || mask::alive_counts(&masks)))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(select_masks_py, m)?)?;
    m.add_function(wrap_pyfunction!(apply_masks_py, m)?)?;
    m.add_function(wrap_pyfunction!(rewind_py, m)?)?;
    m.add_function(wrap_pyfunction!(alive_counts_py, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
