//! The only module that knows about Python: thin `*_py` wrappers that borrow NumPy buffers
//! (`arrays`), release the GIL around the kernels (`run`) and map [`Error`] to Python exceptions
//! in one place.
//!
//! The facade (`lottery_ticket.kernels`) hands over every float tensor as an unsigned-int view of
//! its bits (zero-copy; bf16 has no NumPy dtype) plus a dtype name, and masks as uint8 views of
//! bool arrays, so the kernels never read a `bool` that might hold a byte other than 0 or 1.
//!
//! Every kernel runs through [`run_kernel`]: after `fork()` in a pool of the child's own, and
//! behind `catch_unwind`, so no panic reaches Python as a `BaseException`.

#[macro_use]
mod arrays;
mod masks;
mod run;

use numpy::{
    PyArrayDyn, PyArrayMethods, PyReadonlyArray1, PyReadonlyArrayDyn, PyReadwriteArray1,
    PyReadwriteArrayDyn, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::error::{Error, Kind};
use crate::fault;
use crate::magnitude::Weights;
use crate::pruned_state;
use crate::select::{self, Amount, Scope};
use crate::threshold;
use arrays::{borrow_bytes, byte_slices, weight_views, AmountArg, BitsArray, BitsArrayMut};
use run::{run_kernel, IMPORT_PID};

fn to_py(err: Error, names: &[String]) -> PyErr {
    let message = err.message(names);
    match err.kind() {
        Kind::Type => PyTypeError::new_err(message),
        Kind::Value => PyValueError::new_err(message),
        Kind::Runtime => PyRuntimeError::new_err(message),
    }
}

/// `arg[name]` (names arrive quoted, like the facade's own messages) or `arg[index]`.
fn label(arg: &str, index: usize, names: &[String]) -> String {
    match names.get(index) {
        Some(name) => format!("{arg}[{name}]"),
        None => format!("{arg}[{index}]"),
    }
}

fn span<T>(x: &[T]) -> (usize, usize) {
    let start = x.as_ptr() as usize;
    (start, start + std::mem::size_of_val(x))
}

fn weight_span(w: &Weights<'_>) -> (usize, usize) {
    match w {
        Weights::F16(x) | Weights::Bf16(x) => span(x),
        Weights::F32(x) => span(x),
        Weights::F64(x) => span(x),
    }
}

/// Refuse weights whose memory overlaps (tied weights: one storage under two names), which would
/// be ranked twice and could get two different masks. Here rather than in the facade: comparing
/// pointers costs nanoseconds, NumPy's address lookups microseconds per tensor.
fn check_disjoint(weights: &[Weights<'_>], names: &[String]) -> PyResult<()> {
    let spans: Vec<_> = weights
        .iter()
        .map(|w| (weight_span(w), "weights", false))
        .collect();
    check_spans(&spans, names)
}

/// Refuse any two of `spans` ((start, end), argument, written) that overlap. Each argument's
/// entries are numbered in order; an overlap with a written span is named as an in-place one.
fn check_spans(spans: &[((usize, usize), &str, bool)], names: &[String]) -> PyResult<()> {
    let mut index = std::collections::HashMap::<&str, usize>::new();
    let mut order: Vec<(usize, usize, usize, usize)> = Vec::with_capacity(spans.len());
    for (position, &((start, end), arg, _)) in spans.iter().enumerate() {
        let i = index.entry(arg).or_insert(0);
        if end > start {
            order.push((start, position, end, *i));
        }
        *i += 1;
    }
    order.sort_unstable(); // by address, then argument order: the later of two is named
    let name = |position: usize, i: usize| label(spans[position].1, i, names);
    let mut reach: Option<(usize, usize, usize)> = None; // (furthest end so far, its position, index)
    for (start, position, end, i) in order {
        if let Some((far, owner, owner_i)) = reach {
            if start < far {
                let in_place = spans[position].2 || spans[owner].2;
                return Err(PyValueError::new_err(format!(
                    "{}: shares memory with {}; pass each tensor once (tied weights are one tensor){}",
                    name(position, i),
                    name(owner, owner_i),
                    if in_place {
                        " and distinct buffers to in-place operations"
                    } else {
                        ""
                    }
                )));
            }
        }
        if reach.is_none_or(|(far, _, _)| end > far) {
            reach = Some((end, position, i));
        }
    }
    Ok(())
}

/// rust-numpy tracks borrows across threads: a second call on an array that an in-place call
/// (GIL released) is writing is refused here rather than racing it.
fn busy(arg: &str, index: usize, names: &[String]) -> PyErr {
    PyRuntimeError::new_err(format!(
        "{}: in use by another call that writes it (in another thread); an array cannot be used by \
         two calls at once while one of them writes it",
        label(arg, index, names)
    ))
}

fn not_contiguous(arg: &str, index: usize) -> PyErr {
    PyValueError::new_err(format!("{arg}[{index}]: array must be C-contiguous"))
}

/// Write into `out` the masks that survive pruning `amount` of the alive weights: one byte
/// buffer holding every mask, in weight order. One buffer is one borrow: rust-numpy checks each
/// new borrow against every live borrow of the same base array, so a view per mask into one
/// buffer made the set-up quadratic in the number of tensors.
/// Returns `(alive_before, pruned)`.
///
/// `state`: `(float_masks, products or None)`, fresh arrays of the weights' bit widths that
/// also receive torch.prune's state of the masks, written inside the selection's pass
/// (`crate::pruned_state::select_with_state`); with a state, `out` may be None (no bool masks).
#[pyfunction(name = "select_masks")]
#[pyo3(signature = (weights, dtypes, masks, out, amount, scope, names, state=None))]
#[allow(clippy::too_many_arguments)]
fn select_masks_py(
    py: Python<'_>,
    weights: Vec<Bound<'_, PyAny>>,
    dtypes: Vec<String>,
    masks: Option<Vec<Bound<'_, PyAny>>>,
    out: Option<PyReadwriteArray1<'_, u8>>,
    amount: AmountArg,
    scope: &str,
    names: Vec<String>,
    state: Option<StateArg<'_>>,
) -> PyResult<(u64, u64)> {
    if out.is_none() && state.is_none() {
        return Err(PyValueError::new_err(
            "out: required unless state is given (the masks would go nowhere)",
        ));
    }
    let scope = match scope {
        "global" => Scope::Global,
        "layer" => Scope::Layer,
        other => {
            return Err(PyValueError::new_err(format!(
                "scope: expected 'global' or 'layer', got {other:?}"
            )))
        }
    };
    let amount = Amount::from(amount);
    let weights = borrow_bits!(weights, "weights", &names, try_readonly, BitsArray)?;
    let masks = masks
        .map(|m| borrow_bytes(&m, "masks", &names))
        .transpose()?;
    let views = weight_views(&weights, &dtypes)?;
    check_disjoint(&views, &names)?;
    let alive = masks
        .as_deref()
        .map(|m| byte_slices(m, "masks"))
        .transpose()?;
    let elements: usize = views.iter().map(|w| w.len()).sum();
    let mut out = out;
    let mut outs = out
        .as_mut()
        .map(|o| split_out(o, &views, elements))
        .transpose()?;
    let result = match (state, outs.as_deref_mut()) {
        (None, Some(outs)) => run_kernel(py, elements, || {
            select::select_masks(&views, alive.as_deref(), outs, amount, scope)
        })?,
        (None, None) => unreachable!("refused above"),
        (Some((masks, products)), outs) => {
            let mut masks = borrow_bits!(masks, "masks", &names, try_readwrite, BitsArrayMut)?;
            let mut products = products
                .map(|p| borrow_bits!(p, "products", &names, try_readwrite, BitsArrayMut))
                .transpose()?;
            let mut mask_views = masks::bits_mut(&mut masks, "masks")?;
            let mut product_views = products
                .as_mut()
                .map(|p| masks::bits_mut(p, "products"))
                .transpose()?;
            run_kernel(py, elements, || {
                pruned_state::select_with_state(
                    &views,
                    alive.as_deref(),
                    outs,
                    &mut mask_views,
                    product_views.as_deref_mut(),
                    amount,
                    scope,
                )
            })?
        }
    };
    result
        .map(|s| (s.alive, s.pruned))
        .map_err(|e| to_py(e, &names))
}

/// `out`, one buffer of every mask in weight order, as each weight's slice of it.
fn split_out<'o>(
    out: &'o mut PyReadwriteArray1<'_, u8>,
    views: &[Weights<'_>],
    elements: usize,
) -> PyResult<Vec<&'o mut [u8]>> {
    let mut rest = out
        .as_slice_mut()
        .map_err(|_| PyValueError::new_err("out: array must be C-contiguous"))?;
    if rest.len() != elements {
        return Err(PyValueError::new_err(format!(
            "out: expected {elements} bytes (one per weight), got {}",
            rest.len()
        )));
    }
    let mut outs: Vec<&mut [u8]> = Vec::with_capacity(views.len());
    for w in views {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(w.len());
        outs.push(head);
        rest = tail;
    }
    Ok(outs)
}

/// `select_masks`' `state`: the float masks, and the products unless autograd makes them.
type StateArg<'py> = (Vec<Bound<'py, PyAny>>, Option<Vec<Bound<'py, PyAny>>>);

/// `select_masks` writing over the survivor masks themselves (a later IMP round): no fresh
/// mask pages. On error the masks are left as they were. Returns `(alive_before, pruned)`.
#[pyfunction(name = "select_masks_in_place")]
#[pyo3(signature = (weights, dtypes, masks, amount, scope, names))]
fn select_masks_in_place_py(
    py: Python<'_>,
    weights: Vec<Bound<'_, PyAny>>,
    dtypes: Vec<String>,
    masks: Vec<Bound<'_, PyArrayDyn<u8>>>,
    amount: AmountArg,
    scope: &str,
    names: Vec<String>,
) -> PyResult<(u64, u64)> {
    let scope = parse_scope(scope)?;
    let amount = Amount::from(amount);
    let weights = borrow_bits!(weights, "weights", &names, try_readonly, BitsArray)?;
    let views = weight_views(&weights, &dtypes)?;
    // The masks are written: none may overlap another mask or a weight. Checked before they
    // are borrowed, which would refuse two views of one NumPy base without naming either.
    // Listed first, so a weight equal to its mask is the one named.
    let mut spans = Vec::with_capacity(masks.len() + views.len());
    for (i, m) in masks.iter().enumerate() {
        if !m.is_c_contiguous() {
            return Err(not_contiguous("out", i));
        }
        let start = m.data() as usize;
        spans.push(((start, start + PyUntypedArrayMethods::len(m)), "out", true));
    }
    spans.extend(views.iter().map(|w| (weight_span(w), "weights", false)));
    check_spans(&spans, &names)?;
    let mut masks: Vec<PyReadwriteArrayDyn<'_, u8>> = masks
        .iter()
        .enumerate()
        .map(|(i, m)| m.try_readwrite().map_err(|_| busy("out", i, &names)))
        .collect::<PyResult<_>>()?;
    let mut outs: Vec<&mut [u8]> = masks
        .iter_mut()
        .enumerate()
        .map(|(i, a)| a.as_slice_mut().map_err(|_| not_contiguous("out", i)))
        .collect::<PyResult<_>>()?;
    let elements = views.iter().map(|w| w.len()).sum();
    let result = run_kernel(py, elements, || {
        select::select_masks_in_place(&views, &mut outs, amount, scope)
    })?;
    result
        .map(|s| (s.alive, s.pruned))
        .map_err(|e| to_py(e, &names))
}

fn parse_scope(scope: &str) -> PyResult<Scope> {
    match scope {
        "global" => Ok(Scope::Global),
        "layer" => Ok(Scope::Layer),
        other => Err(PyValueError::new_err(format!(
            "scope: expected 'global' or 'layer', got {other:?}"
        ))),
    }
}

/// The exact global threshold pruning `amount` of the alive weights (see `crate::threshold`).
/// Returns `(key, key_width_bits, ties_pruned, pruned, alive)`.
#[pyfunction(name = "select_threshold")]
#[pyo3(signature = (weights, dtypes, masks, amount, names))]
fn select_threshold_py(
    py: Python<'_>,
    weights: Vec<BitsArray<'_>>,
    dtypes: Vec<String>,
    masks: Option<Vec<PyReadonlyArrayDyn<'_, u8>>>,
    amount: AmountArg,
    names: Vec<String>,
) -> PyResult<(u64, u32, u64, u64, u64)> {
    let views = weight_views(&weights, &dtypes)?;
    let alive = masks
        .as_deref()
        .map(|m| byte_slices(m, "masks"))
        .transpose()?;
    let elements = views.iter().map(|w| w.len()).sum();
    let result = run_kernel(py, elements, || {
        threshold::select_threshold(&views, alive.as_deref(), amount.into())
    })?;
    result
        .map(|t| (t.key, t.key_bits, t.ties, t.pruned, t.alive))
        .map_err(|e| to_py(e, &names))
}

/// Write `src` pruned by a threshold into `dst` (zero bits where pruned), pruning at most
/// `ties_remaining` ties, row-major first. Returns the ties used and the weights kept.
#[pyfunction(name = "write_pruned")]
#[pyo3(signature = (src, dtype, dst, key, key_width_bits, ties_remaining, mask=None, name=None))]
#[allow(clippy::too_many_arguments)]
fn write_pruned_py(
    py: Python<'_>,
    src: BitsArray<'_>,
    dtype: &str,
    mut dst: BitsArrayMut<'_>,
    key: u64,
    key_width_bits: u32,
    ties_remaining: u64,
    mask: Option<PyReadonlyArrayDyn<'_, u8>>,
    name: Option<String>,
) -> PyResult<(u64, u64)> {
    let src = src.weights("src", dtype, 0)?;
    let dst = dst.bits_mut("dst", 0)?;
    let mask = mask
        .as_ref()
        .map(|m| m.as_slice().map_err(|_| not_contiguous("mask", 0)))
        .transpose()?;
    let elements = src.len();
    let result = run_kernel(py, elements, || {
        threshold::write_pruned_counted(src, mask, dst, key, key_width_bits, ties_remaining)
    })?;
    let names: Vec<String> = name.into_iter().collect();
    result
        .map(|w| (w.ties, w.kept))
        .map_err(|e| to_py(e, &names))
}

/// Watch a read-only file map (all of it, as uint8) until `unwatch_mapping`: a read past the end
/// of its file, cut short meanwhile, gives zeros and sets the flag `mapping_faulted` returns,
/// instead of killing the process with SIGBUS (`crate::fault`). The map must stay open until
/// then. Returns the watch's token.
#[pyfunction(name = "watch_mapping")]
fn watch_mapping_py(map: PyReadonlyArray1<'_, u8>) -> PyResult<u64> {
    let bytes = map.as_slice().map_err(|_| not_contiguous("map", 0))?;
    // SAFETY: the contract above, passed on to the caller: one read-only file map, kept open.
    Ok(unsafe { fault::watch(bytes.as_ptr(), bytes.len()) }?)
}

fn unknown_token(token: u64) -> PyErr {
    PyValueError::new_err(format!("token: {token} names no watched mapping"))
}

/// Whether a read of the watched map faulted (and read zeros).
#[pyfunction(name = "mapping_faulted")]
fn mapping_faulted_py(token: u64) -> PyResult<bool> {
    fault::faulted(token).ok_or_else(|| unknown_token(token))
}

/// End the watch (before the map is closed); returns `mapping_faulted`.
#[pyfunction(name = "unwatch_mapping")]
fn unwatch_mapping_py(token: u64) -> PyResult<bool> {
    fault::unwatch(token).ok_or_else(|| unknown_token(token))
}

/// The vector instruction set of the selection's block scanner: `avx512`, `avx2` or
/// `portable` (the best the CPU has, capped by `LOTTERY_TICKET_SIMD`).
#[pyfunction(name = "scanner")]
fn scanner_py() -> PyResult<&'static str> {
    select::scanner().map_err(PyValueError::new_err)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let _ = IMPORT_PID.set(std::process::id());
    // A misspelt cap would otherwise be ignored silently: refuse it at import.
    scanner_py()?;
    m.add_function(wrap_pyfunction!(scanner_py, m)?)?;
    m.add_function(wrap_pyfunction!(select_masks_py, m)?)?;
    m.add_function(wrap_pyfunction!(select_masks_in_place_py, m)?)?;
    m.add_function(wrap_pyfunction!(masks::apply_masks_py, m)?)?;
    m.add_function(wrap_pyfunction!(masks::rewind_py, m)?)?;
    m.add_function(wrap_pyfunction!(masks::mask_products_py, m)?)?;
    m.add_function(wrap_pyfunction!(masks::ones_of_py, m)?)?;
    m.add_function(wrap_pyfunction!(masks::alive_counts_py, m)?)?;
    m.add_function(wrap_pyfunction!(select_threshold_py, m)?)?;
    m.add_function(wrap_pyfunction!(write_pruned_py, m)?)?;
    m.add_function(wrap_pyfunction!(watch_mapping_py, m)?)?;
    m.add_function(wrap_pyfunction!(mapping_faulted_py, m)?)?;
    m.add_function(wrap_pyfunction!(unwatch_mapping_py, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
