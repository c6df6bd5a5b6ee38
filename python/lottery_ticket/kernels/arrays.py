"""User arrays as zero-copy bit views for `_core`: the NumPy side and the validation every backend shares.

The kernels see every float tensor as an unsigned-int view of its bits plus a dtype name, and
every mask as a uint8 view of a bool array. Other frameworks' arrays are converted by their
`ArrayBackend` (see `backends`), found from the array itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from .._validation import labels, mask_dtype, relabel, same_shape, unsupported_dtype
from ..backends import SUPPORTED, ArrayBackend, Bits, array_backend
from .buffer_cache import host_buffer

# dtype name -> unsigned dtype of the same width, for the bit views handed to the kernels.
BITS_DTYPES: dict[str, type[np.unsignedinteger[Any]]] = {
    "float16": np.uint16,
    "bfloat16": np.uint16,
    "float32": np.uint32,
    "float64": np.uint64,
}
# The NumPy dtypes the kernels read in place, by name: ``dtype.name`` is computed in Python on
# every access, a cost per tensor per call.
_NATIVE_NAMES = {np.dtype(name): name for name in ("float16", "float32", "float64")}
__all__ = ["BITS_DTYPES", "SUPPORTED", "Bits"]


def items(obj: object, arg: str) -> tuple[list[Hashable] | None, list[Any]]:
    """Split a list/tuple or a dict (e.g. a `state_dict`) into (keys or None, values).

    Keys stay the caller's objects (results come back under them); messages show their ``repr``.
    """
    if isinstance(obj, Mapping):
        names: list[Hashable] | None = list(obj.keys())
        values = list(obj.values())
    elif isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
        names, values = None, list(obj)
    elif isinstance(obj, np.ndarray) or array_backend(obj) is not None:
        raise TypeError(f"{arg}: expected a list or dict of arrays, got a single array; wrap it in [...]")
    else:
        raise TypeError(f"{arg}: expected a list or dict of arrays, got {type(obj).__name__}")
    if not values:
        raise ValueError(f"{arg}: expected at least one array, got none")
    return names, values


def matching_items(obj: object, arg: str, names: list[Hashable] | None, count: int) -> list[Any]:
    """Values of `obj` in the order of the weights: same keys for a dict, same length for a list."""
    other_names, values = items(obj, arg)
    if names is not None:
        if other_names is None or set(other_names) != set(names):
            raise ValueError(f"{arg}: expected a dict with the same keys as weights")
        lookup = dict(zip(other_names, values))
        return [lookup[n] for n in names]
    if other_names is not None:
        raise TypeError(f"{arg}: expected a list like weights, got a dict")
    if len(values) != count:
        raise ValueError(f"{arg}: expected {count} entries (one per weight), got {len(values)}")
    return values


def ranking_views(
    names: list[Hashable] | None,
    values: list[Any],
    masks: Any,
    read: Callable[[list[Any], Sequence[str]], list[Bits]],
) -> tuple[list[Bits], list[np.ndarray] | None]:
    """Bit views of the weights to rank (``read`` makes them from the values and their labels)
    and uint8 views of their survivor masks (or None), which the call reads."""
    views = read(values, labels("weights", names, len(values)))
    if masks is None:
        return views, None
    mask_values = matching_items(masks, "masks", names, len(values))
    mask_labels = labels("masks", names, len(values))
    current = [mask_bytes(m, label, v.shape) for m, label, v in zip(mask_values, mask_labels, views)]
    return views, [own_buffer(m) for m in current]


def written_masks(mask_values: Sequence[object], mask_labels: Sequence[str], views: Sequence[Bits]) -> list[np.ndarray]:
    """uint8 views of survivor masks that the call writes in place (checked as `mask_bytes`
    checks them, and writable, C-contiguous and aligned as ``out``). One pass, one backend
    lookup per array kind: on a model of many tensors the per-tensor set-up of a later round
    cost more than the kernel. The extension checks that no mask overlaps another mask or a
    weight."""
    arrays = []
    # Labels are made as the loop goes (indexing them costs more than the checks) and `out`'s only
    # for a failure: on a model of many tensors this loop is most of a later round's set-up.
    for label, m, view, backend in zip(mask_labels, mask_values, views, backends_of(mask_values)):
        if backend is not None:
            arr = backend.mask_array(m, label)
        elif isinstance(m, np.ndarray):
            arr = m
        else:
            raise TypeError(f"{label}: expected a bool NumPy array or torch tensor, got {type(m).__name__}")
        mask_dtype(label, arr.dtype, is_bool=arr.dtype == np.bool_)
        same_shape(label, arr.shape, view.shape)
        flags = arr.flags
        if not (flags.writeable and flags.c_contiguous and flags.aligned):
            require_in_place(arr, relabel(label, "out"))
        arrays.append(arr.view(np.uint8))
    return arrays


def float_bits(x: object, label: str, *, writable: bool) -> Bits:
    """A float array as a bit view; in-place use requires a writable C-contiguous array."""
    return float_bits_of(array_backend(x), x, label, writable=writable)


def float_bits_of(backend: ArrayBackend | None, x: object, label: str, *, writable: bool) -> Bits:
    """`float_bits` with the array's backend (None: NumPy) looked up already (`backends_of`)."""
    if backend is not None:
        return backend.float_bits(x, label, writable=writable)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{label}: expected a NumPy array or torch tensor, got {type(x).__name__}")
    name = _NATIVE_NAMES.get(x.dtype) or x.dtype.name
    if name not in BITS_DTYPES or name == "bfloat16":
        raise unsupported_dtype(label, x.dtype)
    if not x.dtype.isnative:
        # The kernels read the bits in the machine's byte order: a foreign order would rank garbage.
        if writable:
            raise TypeError(
                f"{label}: dtype {x.dtype.str!r} is not in the machine's byte order; in-place operations "
                "need native order: convert with x.astype(x.dtype.newbyteorder('='))"
            )
        x = x.astype(x.dtype.newbyteorder("="))
    if writable:
        require_in_place(x, label)
    else:
        x = own_buffer(contiguous(x))  # a copy only for strided or unaligned inputs, which are read once
    return Bits(label, x.view(BITS_DTYPES[name]), name, tuple(x.shape))


def contiguous(x: np.ndarray) -> np.ndarray:
    """``x`` as an aligned C-contiguous array (copied only if needed); unlike
    ``np.ascontiguousarray`` a 0-d array stays 0-d."""
    if x.flags.c_contiguous and x.flags.aligned:
        return x
    return np.array(x, order="C", copy=True)


def own_buffer(x: np.ndarray) -> np.ndarray:
    """A zero-copy view of C-contiguous ``x`` that no other array shares its buffer object with.

    The extension checks each array it borrows against every other borrowed array of the same
    buffer object, so N views of one buffer (rows of a matrix, one flat parameter vector, masks
    of one allocation) cost N^2 checks. Only for arrays the call reads: the checks are what
    stops a written array from overlapping a read one.
    """
    if x.base is None:  # owns its memory: nothing else can share the buffer object
        return x
    return np.frombuffer(x.data, dtype=x.dtype).reshape(x.shape)


def storage_address(x: object) -> int:
    """Address of an array's first element (a tensor's storage can be swapped under it)."""
    backend = array_backend(x)
    if backend is not None:
        return backend.storage_address(x)
    if isinstance(x, np.ndarray):
        return int(x.__array_interface__["data"][0])
    raise TypeError(f"expected a NumPy array or torch tensor, got {type(x).__name__}")


def require_in_place(x: np.ndarray, label: str) -> None:
    if not x.flags.writeable:
        raise ValueError(f"{label}: array is read-only; in-place operations need a writable array")
    if not x.flags.c_contiguous:
        raise ValueError(f"{label}: array must be C-contiguous for in-place operations")
    if not x.flags.aligned:
        raise ValueError(
            f"{label}: array is not aligned to its dtype (e.g. a view at an odd offset into a byte "
            "buffer); in-place operations need an aligned array"
        )


def mask_bytes(x: object, label: str, shape: tuple[int, ...]) -> np.ndarray:
    """A bool mask of `shape` as a uint8 view (nonzero = alive)."""
    backend = array_backend(x)
    if backend is not None:
        arr = backend.mask_array(x, label)
    elif isinstance(x, np.ndarray):
        arr = x
    else:
        raise TypeError(f"{label}: expected a bool NumPy array or torch tensor, got {type(x).__name__}")
    mask_dtype(label, arr.dtype, is_bool=arr.dtype == np.bool_)
    same_shape(label, arr.shape, shape)
    return contiguous(arr).view(np.uint8)


def new_masks(likes: Sequence[object], shapes: Sequence[tuple[int, ...]]) -> tuple[np.ndarray, list[Any]]:
    """Uninitialised bool masks of the given shapes and of the same array kind as each ``like``,
    and the one uint8 buffer they are views of, in order (what the kernels write).

    One NumPy buffer: NumPy asks the kernel for transparent huge pages on large arrays (torch's
    CPU allocator does not, and a BERT layer's mask is too small to get them alone), so
    first-touching the masks takes far fewer page faults, and it is one allocation instead of
    one per tensor. A previous call's buffer of the same size is reused once dropped
    (`buffer_cache`): no pages to fault in at all.
    """
    sizes = [math.prod(shape) for shape in shapes]
    buffer = host_buffer(sum(sizes))
    whole, flat = buffer.data, buffer.view(np.bool_)
    masks = []
    start = 0
    for shape, size, backend in zip(shapes, sizes, backends_of(likes)):
        end = start + size
        if not size:
            # An empty view would share its address with the next mask: give it its own, so
            # that no two masks look like one buffer to a later call's overlap checks.
            empty = np.empty(shape, dtype=np.bool_)
            masks.append(backend.from_numpy(empty) if backend is not None else empty)
        elif backend is not None:
            # A framework's mask is later read through its framework's own view (based on that
            # mask, not on this buffer), so a plain slice serves: the cheapest view to make.
            masks.append(backend.from_numpy(flat[start:end].reshape(shape)))
        else:
            # Each NumPy mask is a view of its own buffer object, or passing them back as
            # ``masks=`` would cost N^2 borrow checks (one base shared by all).
            masks.append(np.frombuffer(whole[start:end], dtype=np.bool_).reshape(shape))
        start = end
    return buffer, masks


def check_no_overlap(written: Sequence[tuple[str, np.ndarray]], read: Sequence[tuple[str, np.ndarray]]) -> None:
    """Reject a buffer written in place that overlaps any other buffer of the same call.

    (Selection, which writes only fresh masks, has the binding check its weights for overlap.)
    """
    spans: list[tuple[int, int, int, bool, str]] = []
    for is_written, group in ((True, written), (False, read)):
        for label, arr in group:
            start = arr.__array_interface__["data"][0]
            if arr.nbytes:
                spans.append((start, len(spans), start + arr.nbytes, is_written, label))
    spans.sort()  # by address, then argument order: the later of two equal buffers is named
    # Sweep: track the span reaching furthest so far; any overlap with a written span is an error.
    reach = -1
    reach_written, reach_label = False, ""
    for start, _, end, is_written, label in spans:
        if start < reach and (is_written or reach_written):
            raise ValueError(
                f"{label}: shares memory with {reach_label}; pass each tensor once (tied weights are one "
                "tensor) and distinct buffers to in-place operations"
            )
        if end > reach:
            reach, reach_written, reach_label = end, is_written, label


def backends_of(values: Sequence[object]) -> list[ArrayBackend | None]:
    """Each array's backend (None: NumPy), looked up once per array type: on a model of many
    tensors a lookup per tensor is a cost of every call."""
    found: dict[type, ArrayBackend | None] = {}
    result = []
    for x in values:
        kind = type(x)
        if kind not in found:
            found[kind] = array_backend(x)
        result.append(found[kind])
    return result


def write_notifiers(values: Sequence[object]) -> list[Callable[[], None]]:
    """What to call after the kernels wrote ``values`` in place, so each framework sees the
    write as its own in-place op would (torch: the autograd version counters): one call per
    framework, built once."""
    by_backend: dict[int, tuple[ArrayBackend, list[object]]] = {}
    for value, backend in zip(values, backends_of(values)):
        if backend is not None and hasattr(backend, "write_notifier"):
            by_backend.setdefault(id(backend), (backend, []))[1].append(value)
    return [backend.write_notifier(xs) for backend, xs in by_backend.values()]  # type: ignore[attr-defined]


def address_readers(values: Sequence[object]) -> list[Callable[[], int]]:
    """Per array, a call returning its storage address now (`storage_address` with the backend
    looked up once), for a check repeated on every call of a `MaskApplier`."""
    readers: list[Callable[[], int]] = []
    for x, backend in zip(values, backends_of(values)):
        readers.append(partial(backend.storage_address, x) if backend is not None else partial(storage_address, x))
    return readers


def float_wrappers(values: Sequence[object]) -> list[Callable[[np.ndarray, str], Any]]:
    """Per array, what turns a result's bits (a NumPy array of unsigned integers) and its float
    dtype name into an array of the input's framework, sharing memory."""
    return [backend.from_bits if backend is not None else _numpy_floats for backend in backends_of(values)]


def _numpy_floats(array: np.ndarray, dtype: str) -> np.ndarray:
    return array.view(dtype)


def shaped_like(names: list[Hashable] | None, values: list[Any]) -> Any:
    """Return `values` as a dict keyed like the input when the input was a dict, else a list."""
    return dict(zip(names, values)) if names is not None else values
