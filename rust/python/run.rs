//! The kernels' runner: the GIL released above a size threshold, a pool that survives `fork()`,
//! and no panic ever reaching Python.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::OnceLock;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// Below this many elements the kernels finish in microseconds, less than releasing and
/// re-acquiring the GIL costs; above it other Python threads should run meanwhile.
const DETACH_MIN_ELEMENTS: usize = 1 << 15;

/// The process that imported the module; any other pid means we are in a forked child.
pub(super) static IMPORT_PID: OnceLock<u32> = OnceLock::new();

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
pub(super) fn run_kernel<T: Send>(
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
