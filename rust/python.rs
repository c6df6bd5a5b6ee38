//! The only file that knows about Python: thin `*_py` wrappers that borrow NumPy buffers, release
//! the GIL around the kernels and map [`Error`] to Python exceptions in one place.
//!
//! The facade (`lottery_ticket.kernels`) hands over every float tensor as an unsigned-int view of
//! its bits (zero-copy; bf16 has no NumPy dtype) plus a dtype name, and masks as uint8 views of
//! bool arrays, so the kernels never read a `bool` that might hold a byte other than 0 or 1.
//!
//! Every kernel runs through [`run_kernel`]: after `fork()` in a pool of the child's own, and
//! behind `catch_unwind`, so no panic reaches Python as a `BaseException`.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::OnceLock;

use numpy::{
    PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyReadwriteArrayDyn,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::error::{Error, Kind};
use crate::magnitude::Weights;
use crate::mask::{self, Bits, BitsMut};
use crate::rewind;
use crate::select::{self, Amount, Scope};
use crate::threshold;

/// Below this many elements the kernels finish in microseconds, less than releasing and
/// re-acquiring the GIL costs; above it other Python threads should run meanwhile.
const DETACH_MIN_ELEMENTS: usize = 1 << 15;

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

/// Refuse weights whose memory overlaps (tied weights: one storage under two names), which would
/// be ranked twice and could get two different masks. Here rather than in the facade: comparing
/// pointers costs nanoseconds, NumPy's address lookups microseconds per tensor.
fn check_disjoint(weights: &[Weights<'_>], names: &[String]) -> PyResult<()> {
    fn span<T>(x: &[T]) -> (usize, usize) {
        (x.as_ptr() as usize, std::mem::size_of_val(x))
    }
    let mut spans: Vec<(usize, usize, usize)> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let (start, bytes) = match w {
                Weights::F16(x) | Weights::Bf16(x) => span(x),
                Weights::F32(x) => span(x),
                Weights::F64(x) => span(x),
            };
            (start, i, start + bytes)
        })
        .filter(|&(start, _, end)| end > start)
        .collect();
    spans.sort_unstable(); // by address, then argument order: the later of two is named
    let mut reach: Option<(usize, usize)> = None; // (furthest end so far, its tensor)
    for (start, i, end) in spans {
        if let Some((far, owner)) = reach {
            if start < far {
                return Err(PyValueError::new_err(format!(
                    "{}: shares memory with {}; pass each tensor once (tied weights are one tensor)",
                    label("weights", i, names),
                    label("weights", owner, names)
                )));
            }
        }
        if reach.is_none_or(|(far, _)| end > far) {
            reach = Some((end, i));
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

/// The process that imported the module; any other pid means we are in a forked child.
static IMPORT_PID: OnceLock<u32> = OnceLock::new();

/// The pool of a forked child (leaked: a pool's threads live as long as the process).
struct ChildPool {
    pid: u32,
    pool: rayon::ThreadPool,
}

static CHILD_POOL: AtomicPtr<ChildPool> = AtomicPtr::new(ptr::null_mut());

/// rayon's global pool does not survive `fork()`: its threads exist only in the parent, so a
/// forked child (a DataLoader worker) would wait forever on its first parallel call. A child
/// runs the kernels in a pool of its own instead, built on first use (tokenizers guards its
/// pool against fork too). Lock-free, so a fork taken while another thread is here cannot leave
/// the child waiting on a lock.
fn in_pool<T: Send>(work: impl FnOnce() -> T + Send) -> PyResult<T> {
    let pid = std::process::id();
    if IMPORT_PID.get().is_none_or(|&p| p == pid) {
        return Ok(work());
    }
    let current = CHILD_POOL.load(Ordering::Acquire);
    // SAFETY: pools are leaked, so a non-null pointer always refers to a live ChildPool.
    if let Some(child) = unsafe { current.as_ref() } {
        if child.pid == pid {
            return Ok(child.pool.install(work));
        }
    }
    let pool = rayon::ThreadPoolBuilder::new().build().map_err(|e| {
        PyRuntimeError::new_err(format!("cannot start kernel threads after fork: {e}"))
    })?;
    let fresh: &'static ChildPool = Box::leak(Box::new(ChildPool { pid, pool }));
    // A lost race leaves the winner's pool for later calls; this call uses its own.
    let _ = CHILD_POOL.compare_exchange(
        current,
        ptr::from_ref(fresh).cast_mut(),
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    Ok(fresh.pool.install(work))
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown panic")
}

/// Run a kernel: without the GIL when it is big enough to matter, in the right pool, and with
/// any panic (a bug: inconsistent input is an [`Error`]) turned into a `RuntimeError`.
fn run_kernel<T: Send>(
    py: Python<'_>,
    elements: usize,
    work: impl FnOnce() -> T + Send,
) -> PyResult<T> {
    let guarded = move || panic::catch_unwind(AssertUnwindSafe(|| in_pool(work)));
    let outcome = if elements >= DETACH_MIN_ELEMENTS {
        py.detach(guarded)
    } else {
        guarded()
    };
    outcome.unwrap_or_else(|payload| {
        Err(PyRuntimeError::new_err(format!(
            "internal error in the lottery-ticket kernels ({}); please report it",
            panic_message(payload.as_ref())
        )))
    })
}

/// Borrow each array of `objs` as one of the unsigned bit widths (`$borrow`: try_readonly or
/// try_readwrite), naming the argument when it is busy or of another dtype.
macro_rules! borrow_bits {
    ($objs:expr, $arg:expr, $names:expr, $borrow:ident, $kind:ident) => {
        $objs
            .iter()
            .enumerate()
            .map(|(i, obj)| {
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
            })
            .collect::<PyResult<Vec<_>>>()
    };
}

fn borrow_bytes<'py>(
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

    fn weights(&self, arg: &str, dtype: &str, index: usize) -> PyResult<Weights<'_>> {
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
    fn bits_mut(&mut self, arg: &str, index: usize) -> PyResult<BitsMut<'_>> {
        let bad = |_| not_contiguous(arg, index);
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

impl From<AmountArg> for Amount {
    fn from(a: AmountArg) -> Amount {
        match a {
            AmountArg::Count(k) => Amount::Count(k),
            AmountArg::Fraction(f) => Amount::Fraction(f),
        }
    }
}

/// Dtype-tagged views of the weights, one dtype name per weight.
fn weight_views<'a>(weights: &'a [BitsArray<'_>], dtypes: &[String]) -> PyResult<Vec<Weights<'a>>> {
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

/// Write into `out` the masks that survive pruning `amount` of the alive weights.
/// Returns `(alive_before, pruned)`.
#[pyfunction(name = "select_masks")]
#[pyo3(signature = (weights, dtypes, masks, out, amount, scope, names))]
#[allow(clippy::too_many_arguments)]
fn select_masks_py(
    py: Python<'_>,
    weights: Vec<Bound<'_, PyAny>>,
    dtypes: Vec<String>,
    masks: Option<Vec<Bound<'_, PyAny>>>,
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
    let mut outs: Vec<&mut [u8]> = out
        .iter_mut()
        .enumerate()
        .map(|(i, a)| a.as_slice_mut().map_err(|_| not_contiguous("out", i)))
        .collect::<PyResult<_>>()?;
    let elements = views.iter().map(|w| w.len()).sum();
    let result = run_kernel(py, elements, || {
        select::select_masks(&views, alive.as_deref(), &mut outs, amount, scope)
    })?;
    result
        .map(|s| (s.alive, s.pruned))
        .map_err(|e| to_py(e, &names))
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

/// Mutable weight views, mask views and the element count shared by the in-place kernels.
type InPlace<'a> = (Vec<BitsMut<'a>>, Vec<&'a [u8]>, usize);

fn in_place_views<'a>(
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

/// `w[i] = 0` where `mask[i] == 0`, in place.
#[pyfunction(name = "apply_masks")]
#[pyo3(signature = (weights, masks, names))]
fn apply_masks_py(
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

/// `w[i] = snapshot[i]` where `mask[i]` is nonzero, else 0, in place.
#[pyfunction(name = "rewind")]
#[pyo3(signature = (weights, snapshots, masks, names))]
fn rewind_py(
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
fn alive_counts_py(py: Python<'_>, masks: Vec<Bound<'_, PyAny>>) -> PyResult<Vec<u64>> {
    let masks = borrow_bytes(&masks, "masks", &[])?;
    let masks = byte_slices(&masks, "masks")?;
    let elements = masks.iter().map(|m| m.len()).sum();
    run_kernel(py, elements, || mask::alive_counts(&masks))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let _ = IMPORT_PID.set(std::process::id());
    m.add_function(wrap_pyfunction!(select_masks_py, m)?)?;
    m.add_function(wrap_pyfunction!(apply_masks_py, m)?)?;
    m.add_function(wrap_pyfunction!(rewind_py, m)?)?;
    m.add_function(wrap_pyfunction!(alive_counts_py, m)?)?;
    m.add_function(wrap_pyfunction!(select_threshold_py, m)?)?;
    m.add_function(wrap_pyfunction!(write_pruned_py, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
