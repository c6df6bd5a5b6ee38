"""Validated bit views of a model's arrays, reused while the arrays stay the same.

IMP ranks the same tensors round after round, and validating and viewing each tensor costs
about as much as the selection itself on a LeNet-sized model (and a few percent of a later
round in place on a BERT-sized one, whose 200 tensors' views are most of its Python time). Each
cache keeps the last call's views for reuse when arrays with the same memory come back: the
same type, first-element address, dtype, shape and strides (a swapped storage, ``p.data = ...``,
changes the address). A view is defined by exactly these, so a match is the view validation
would make again, whichever object carries it.

The kept views own nothing (NumPy arrays over the raw addresses): the cache never keeps a
model's memory alive, whatever its size, and is only read while the caller passes arrays with
those addresses, which keep that memory alive for the call. Views are kept from the second
call with the same arrays on, so a one-off call pays nothing for them, and only zero-copy ones:
a strided input is copied by validation, and a copy would go stale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from .._validation import Labels
from ..backends import ArrayBackend, Bits, array_backend
from . import arrays as _arrays

Signature = tuple[Any, ...]
View = TypeVar("View")


def _signature(x: object) -> Signature | None:
    """What must not change for a cached view of ``x`` to stay valid; None: never cache."""
    if isinstance(x, np.ndarray):
        # Writability too: a caller may freeze an array that a call wrote in place before.
        return (type(x), _address(x), x.dtype, x.shape, x.strides, x.flags.writeable)
    kind = type(x)
    backend = _backend_of_type.get(kind)
    if backend is None:
        backend = array_backend(x)
        if backend is None:
            return None
        _backend_of_type[kind] = backend
    stride = getattr(x, "stride", None)
    shape = getattr(x, "shape", ())
    dtype = getattr(x, "dtype", None)
    return (kind, backend.storage_address(x), dtype, shape, stride() if callable(stride) else None)


# A backend owns arrays by their type: looking it up once per type, not per array, is most of
# what checking a cached view costs.
_backend_of_type: dict[type, ArrayBackend] = {}


def _signatures(values: Sequence[Any]) -> list[Signature] | None:
    kind = type(values[0]) if values else None
    layouts = getattr(_backend_of_type.get(kind), "layouts", None)  # type: ignore[arg-type]
    if layouts is not None and all(type(v) is kind for v in values):
        # Arrays of one known type (a model's parameters): their backend reads them all at once.
        try:
            return list(layouts(values))
        except (RuntimeError, TypeError, ValueError, AttributeError):
            return None
    signatures = []
    for v in values:
        try:
            s = _signature(v)
        except (RuntimeError, TypeError, ValueError, AttributeError):
            # An array without plain memory (a sparse or meta tensor): validation names it.
            return None
        if s is None:
            return None
        signatures.append(s)
    return signatures


def _same_labels(cached: Sequence[str], labels: Sequence[str]) -> bool:
    """Whether the views were made under these labels (lazy ones compare by what makes them)."""
    if isinstance(cached, Labels) and isinstance(labels, Labels):
        return cached.arg == labels.arg and cached.size == labels.size and cached.names == labels.names
    return list(cached) == list(labels)


class _RawMemory:
    """Memory NumPy may view through ``__array_interface__``, owning nothing. (A ctypes array
    would do too, but ctypes keeps a type for every length it is asked for, for good.)"""

    def __init__(self, array: np.ndarray, *, writable: bool) -> None:
        self.__array_interface__ = {
            "data": (_address(array), not writable),
            "shape": array.shape,
            "typestr": array.dtype.str,
            "version": 3,
        }


def unowned(array: np.ndarray, *, writable: bool) -> np.ndarray:
    """``array``'s memory (C-contiguous) as an array that keeps nothing alive (an empty one is
    returned as it is: it holds no memory worth freeing)."""
    if array.nbytes == 0:
        return array
    return np.asarray(_RawMemory(array, writable=writable))


def _address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])


def _unowned_if_zero_copy(array: np.ndarray, address: int, *, writable: bool) -> np.ndarray | None:
    """`unowned`, or None where validation copied the array (its view is elsewhere)."""
    if array.size and _address(array) != address:
        return None
    return unowned(array, writable=writable)


class ViewCache(Generic[View]):
    """The last call's views of one argument (see the module docstring)."""

    def __init__(self, detach: Callable[[View, int], View | None]) -> None:
        # detach(view, address of the array it came from): the view as one that owns nothing,
        # or None for a copy, which is never kept.
        self._detach = detach
        # (labels, key, detached views or None until the same arrays come again), one tuple
        # assigned at once, so that a concurrent call reads a consistent entry.
        self._last: tuple[Sequence[str], list[Any], list[View] | None] | None = None

    def get(
        self, values: Sequence[Any], labels: Sequence[str], make: Callable[[], list[View]], also: Any = None
    ) -> list[View]:
        """``make()``, or the views it made for the same arrays last time; ``also``: anything
        else the views were checked against (compared too)."""
        signatures = _signatures(values)
        if signatures is None:
            self._last = None
            return make()
        last, key = self._last, [also, *signatures]
        again = last is not None and last[1] == key and _same_labels(last[0], labels)
        if again and last is not None and last[2] is not None:
            return last[2]
        views = make()
        kept = labels if isinstance(labels, Labels) else list(labels)
        self._last = (kept, key, self._detached(views, signatures) if again else None)
        return views

    def _detached(self, views: list[View], signatures: list[Signature]) -> list[View] | None:
        detached = []
        for view, signature in zip(views, signatures):
            d = self._detach(view, signature[1])
            if d is None:
                return None
            detached.append(d)
        return detached


def _detach_bits(b: Bits, address: int) -> Bits | None:
    bits = _unowned_if_zero_copy(b.bits, address, writable=False)
    return None if bits is None else Bits(b.label, bits, b.dtype, b.shape)


def _detach_written(array: np.ndarray, address: int) -> np.ndarray | None:
    return _unowned_if_zero_copy(array, address, writable=True)


_READ = ViewCache[Bits](_detach_bits)
_WRITTEN = ViewCache[np.ndarray](_detach_written)


def read_views(values: Sequence[Any], labels: Sequence[str]) -> list[Bits]:
    """``[arrays.float_bits(v, label, writable=False) ...]``, from the cache when still valid."""
    return _READ.get(
        values,
        labels,
        lambda: [
            _arrays.float_bits_of(b, v, label, writable=False)
            for v, label, b in zip(values, labels, _arrays.backends_of(values))
        ],
    )


def written_views(
    values: Sequence[Any],
    labels: Sequence[str],
    shapes: Sequence[tuple[int, ...]],
    make: Callable[[], list[np.ndarray]],
) -> list[np.ndarray]:
    """The uint8 views of masks a call writes in place (``make()``: checked against the
    weights' ``shapes``), from the cache when still valid."""
    return _WRITTEN.get(values, labels, make, also=tuple(shapes))
