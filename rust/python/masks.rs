//! Bindings of the in-place mask kernels: apply, rewind, survivor counts, and torch.prune's
//! float mask and masked weight (`crate::pruned_state`).

use numpy::{PyArrayDyn, PyArrayMethods, PyReadwriteArray1};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::arrays::{borrow_bytes, byte_slices, in_place_views, BitsArray, BitsArrayMut};
use super::run::run_kernel;
use super::{busy, label, to_py};
use crate::magnitude::Weights;
use crate::mask::{self, Bits, BitsMut};
use crate::pruned_state;
use crate::rewind;

/// `w[i] = 0` where `mask[i] == 0`, in place.
#[pyfunction(name = "apply_masks")]
#[pyo3(signature = (weights, masks, names))]
pub(super) fn apply_masks_py(
    py: Python<'_>,
    weights: Vec<Bound<'_, PyAny>>,
    masks: Vec<Bound<'_, PyAny>>,
    names: Vec<String>,
) -> PyResult<()> {
    let mut weights = borrow_bits!(weights, "weights", &names, try_readwrite, BitsArrayMut)?;
    let masks = borrow_bytes(&masks, "masks", &names)?;
    let (mut views, masks, elements) = in_place_views(&mut weights, &masks)?;
    run_kernel(py, elements, || mask::apply_masks(&mut views, &masks))?
        .map_err(|e| to_py(e, &names))
}

/// Per tensor, the float mask (1 kept, 0 pruned, combined with a `previous` mask as torch
/// combines a repeated pruning; a None entry is a first pruning) and, unless `products` is
/// None, `mask * w`, into fresh buffers.
#[pyfunction(name = "mask_products")]
#[pyo3(signature = (weights, dtypes, keep, previous, masks, products, names))]
#[allow(clippy::too_many_arguments)] // one per array list of the kernel, as its Python facade passes them
pub(super) fn mask_products_py(
    py: Python<'_>,
    weights: Vec<Bound<'_, PyAny>>,
    dtypes: Vec<String>,
    keep: Vec<Bound<'_, PyAny>>,
    previous: Vec<Option<Bound<'_, PyAny>>>,
    masks: Vec<Bound<'_, PyAny>>,
    products: Option<Vec<Bound<'_, PyAny>>>,
    names: Vec<String>,
) -> PyResult<()> {
    let weights = borrow_bits!(weights, "weights", &names, try_readonly, BitsArray)?;
    let keep = borrow_bytes(&keep, "keep", &names)?;
    let previous = borrow_optional(&previous, "previous", &names)?;
    let mut masks = borrow_bits!(masks, "masks", &names, try_readwrite, BitsArrayMut)?;
    let mut products = products
        .map(|p| borrow_bits!(p, "products", &names, try_readwrite, BitsArrayMut))
        .transpose()?;
    if dtypes.len() != weights.len() {
        return Err(PyTypeError::new_err(format!(
            "dtypes: {} entries for {} weights",
            dtypes.len(),
            weights.len()
        )));
    }
    let weights: Vec<Weights<'_>> = weights
        .iter()
        .zip(&dtypes)
        .enumerate()
        .map(|(i, (w, dtype))| w.weights("weights", dtype, i))
        .collect::<PyResult<_>>()?;
    let keep = byte_slices(&keep, "keep")?;
    let previous: Vec<Option<Bits<'_>>> = previous
        .iter()
        .enumerate()
        .map(|(i, p)| p.as_ref().map(|p| p.bits("previous", i)).transpose())
        .collect::<PyResult<_>>()?;
    let mut mask_views = bits_mut(&mut masks, "masks")?;
    let mut product_views = products
        .as_mut()
        .map(|p| bits_mut(p, "products"))
        .transpose()?;
    let elements = weights.iter().map(|w| w.len()).sum();
    run_kernel(py, elements, || {
        pruned_state::mask_products(
            &weights,
            &keep,
            &previous,
            &mut mask_views,
            product_views.as_deref_mut(),
        )
    })?
    .map_err(|e| to_py(e, &names))
}

/// Per tensor, `out = mask == 1.0` into one byte buffer (`sizes[t]` bytes each, in order), or
/// all 1 where a mask is None: the survivors torch.prune ranks again.
#[pyfunction(name = "ones_of")]
#[pyo3(signature = (masks, dtypes, out, sizes, names))]
pub(super) fn ones_of_py(
    py: Python<'_>,
    masks: Vec<Option<Bound<'_, PyAny>>>,
    dtypes: Vec<String>,
    mut out: PyReadwriteArray1<'_, u8>,
    sizes: Vec<usize>,
    names: Vec<String>,
) -> PyResult<()> {
    if dtypes.len() != masks.len() || sizes.len() != masks.len() {
        return Err(PyTypeError::new_err(format!(
            "masks: {} entries, but {} dtypes and {} sizes",
            masks.len(),
            dtypes.len(),
            sizes.len()
        )));
    }
    let masks = borrow_optional(&masks, "masks", &names)?;
    let views: Vec<Option<Weights<'_>>> = masks
        .iter()
        .zip(&dtypes)
        .enumerate()
        .map(|(i, (m, dtype))| m.as_ref().map(|m| m.weights("masks", dtype, i)).transpose())
        .collect::<PyResult<_>>()?;
    let mut rest = out
        .as_slice_mut()
        .map_err(|_| PyValueError::new_err("out: array must be C-contiguous"))?;
    let total: usize = sizes.iter().sum();
    if rest.len() != total {
        return Err(PyValueError::new_err(format!(
            "out: expected {total} bytes (one per entry), got {}",
            rest.len()
        )));
    }
    let mut outs: Vec<&mut [u8]> = Vec::with_capacity(sizes.len());
    for &size in &sizes {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(size);
        outs.push(head);
        rest = tail;
    }
    run_kernel(py, total, || pruned_state::ones_of(&views, &mut outs))?
        .map_err(|e| to_py(e, &names))
}

/// Read-only bit views of arrays where given (None entries stay None).
fn borrow_optional<'py>(
    arrays: &[Option<Bound<'py, PyAny>>],
    arg: &str,
    names: &[String],
) -> PyResult<Vec<Option<BitsArray<'py>>>> {
    arrays
        .iter()
        .enumerate()
        .map(|(i, a)| {
            a.as_ref()
                .map(|a| borrow_bit!(a, i, arg, names, try_readonly, BitsArray))
                .transpose()
        })
        .collect()
}

/// Each output array's bits, by its element width.
pub(super) fn bits_mut<'a>(
    arrays: &'a mut [BitsArrayMut<'_>],
    arg: &str,
) -> PyResult<Vec<BitsMut<'a>>> {
    arrays
        .iter_mut()
        .enumerate()
        .map(|(i, a)| a.bits_mut(arg, i))
        .collect()
}

/// `w[i] = snapshot[i]` where `mask[i]` is nonzero, else 0, in place.
#[pyfunction(name = "rewind")]
#[pyo3(signature = (weights, snapshots, masks, names))]
pub(super) fn rewind_py(
    py: Python<'_>,
    weights: Vec<Bound<'_, PyAny>>,
    snapshots: Vec<Bound<'_, PyAny>>,
    masks: Vec<Bound<'_, PyAny>>,
    names: Vec<String>,
) -> PyResult<()> {
    let mut weights = borrow_bits!(weights, "weights", &names, try_readwrite, BitsArrayMut)?;
    let snapshots = borrow_bits!(snapshots, "snapshots", &names, try_readonly, BitsArray)?;
    let masks = borrow_bytes(&masks, "masks", &names)?;
    let (mut views, masks, elements) = in_place_views(&mut weights, &masks)?;
    let snaps: Vec<Bits<'_>> = snapshots
        .iter()
        .enumerate()
        .map(|(i, s)| s.bits("snapshots", i))
        .collect::<PyResult<_>>()?;
    run_kernel(py, elements, || rewind::rewind(&mut views, &snaps, &masks))?
        .map_err(|e| to_py(e, &names))
}

/// Number of alive (nonzero) entries in each mask.
#[pyfunction(name = "alive_counts")]
pub(super) fn alive_counts_py(py: Python<'_>, masks: Vec<Bound<'_, PyAny>>) -> PyResult<Vec<u64>> {
    let masks = borrow_bytes(&masks, "masks", &[])?;
    let masks = byte_slices(&masks, "masks")?;
    let elements = masks.iter().map(|m| m.len()).sum();
    run_kernel(py, elements, || mask::alive_counts(&masks))
}
