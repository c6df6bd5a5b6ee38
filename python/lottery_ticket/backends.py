"""The seam between the framework-neutral library and each framework's arrays.

Generic code (kernels, tickets, the pruner) sees NumPy arrays directly and every other array kind
through an `ArrayBackend` registered here. A framework adapter (``lottery_ticket.torch``)
registers its backend when imported; it is imported on first use through the
``lottery_ticket.frameworks`` entry-point group, found from the array's class, so that
``import lottery_ticket`` imports no framework and generic modules never name one.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

import numpy as np

ENTRY_POINT_GROUP = "lottery_ticket.frameworks"
SUPPORTED = "float16, bfloat16, float32 or float64"


@dataclass(frozen=True)
class Bits:
    """One float tensor prepared for the Rust kernels."""

    label: str  # how error messages name it, e.g. "weights['fc1.weight']"
    bits: np.ndarray  # unsigned-int view of the float bits (zero-copy unless noted)
    dtype: str  # "float16" | "bfloat16" | "float32" | "float64"
    shape: tuple[int, ...]


class ArrayBackend(Protocol):
    """What the library needs of a framework's arrays (host memory, zero-copy where possible).

    Optionally a backend defines ``write_notifier(xs) -> Callable[[], None]``: built once for a
    list of its arrays, called after every kernel call that wrote them in place (torch bumps the
    autograd version counters there); and ``layouts(xs) -> list[tuple]``: for a list of its arrays
    of one type, each array's ``(type, storage_address, dtype, shape, strides)``, which the view
    caches compare on every call (one comprehension instead of a lookup per array).
    """

    name: str  # the framework, as stored in ticket files: "torch"

    def owns(self, x: object) -> bool:
        """Whether ``x`` is an array of this framework."""
        ...

    def float_bits(self, x: Any, label: str, *, writable: bool) -> Bits:
        """A float array as a bit view for the kernels; in place needs writable C-contiguous memory."""
        ...

    def mask_array(self, x: Any, label: str) -> np.ndarray:
        """A bool mask as a NumPy bool array sharing its memory."""
        ...

    def from_numpy(self, array: np.ndarray) -> Any:
        """An array of this framework sharing ``array``'s memory."""
        ...

    def from_bits(self, array: np.ndarray, dtype: str) -> Any:
        """An array of this framework and float ``dtype`` sharing the memory of ``array``, which
        holds its bits (unsigned integers of the same width; bf16 as uint16)."""
        ...

    def storage_address(self, x: Any) -> int:
        """Address of the first element (storage can be swapped under a parameter)."""
        ...

    def to_saved(self, x: Any, label: str) -> tuple[np.ndarray, str]:
        """A host copy for saving and its dtype name (bf16 as its uint16 bits)."""
        ...

    def from_saved(self, array: np.ndarray, dtype: str) -> Any:
        """Inverse of `to_saved`: an array of this framework owning a copy of ``array``."""
        ...


_BACKENDS: dict[str, ArrayBackend] = {}


def register_array_backend(backend: ArrayBackend) -> None:
    """Make ``backend`` known (framework adapters call this when imported)."""
    _BACKENDS[backend.name] = backend


def array_backend(x: object) -> ArrayBackend | None:
    """The backend owning ``x``, or None for NumPy arrays and unknown objects."""
    if isinstance(x, np.ndarray):
        return None
    for backend in _BACKENDS.values():
        if backend.owns(x):
            return backend
    if load_framework_of(type(x)):
        return array_backend(x)
    return None


def backend_named(name: str) -> ArrayBackend:
    """The backend of framework ``name`` (importing its adapter if needed)."""
    if name not in _BACKENDS and not load_framework(name):
        raise ValueError(f"framework {name!r} is not available (is its package installed?)")
    return _BACKENDS[name]


@cache
def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def framework_of(cls: type) -> str | None:
    """The registered framework that defines ``cls`` or one of its bases (e.g. a user's nn.Module)."""
    known = _entry_points()
    for klass in cls.__mro__:
        top = klass.__module__.partition(".")[0]
        if top in known:
            return top
    return None


def load_framework(name: str) -> bool:
    """Import the adapter of framework ``name`` (which registers itself); False if there is none."""
    entry = _entry_points().get(name)
    if entry is None:
        return False
    entry.load()
    return True


def load_framework_of(cls: type) -> bool:
    """Import the adapter of the framework defining ``cls``, once; True if that registered something new."""
    name = framework_of(cls)
    if name is None or name in _BACKENDS:
        return False
    return load_framework(name) and name in _BACKENDS


# -- kernels computed by a framework's own ops (device tensors, distributed selection) -----------


class DeviceApplier(Protocol):
    """Masks validated once, re-applied in place by each call."""

    def __call__(self) -> None: ...

    def is_current(self) -> bool:
        """Whether every weight still has the storage it had when this applier was built."""
        ...


class DeviceKernels(Protocol):
    """The kernels computed with a framework's ops on the arrays' own device, across ranks too.

    Semantics are those of `lottery_ticket.kernels` (bit-identical masks); every method
    validates all its inputs before modifying anything.
    """

    name: str  # the value of ``backend=`` that forces these kernels: "torch"

    def claims(self, arrays: Sequence[tuple[Sequence[str], Sequence[object]]], process_group: object) -> bool:
        """Whether ``backend="auto"`` runs these kernels for ``(labels, values)`` groups: device or
        sharded arrays, or a process group. Raises ValueError for arrays on several devices."""
        ...

    def select_masks(
        self,
        weights: list[Any],
        labels: Sequence[str],
        amount: int | float,
        masks: list[Any] | None,
        scope: str,
        process_group: object,
        out: list[Any] | None = None,
    ) -> list[Any]:
        """`global_magnitude_masks` on these arrays; ``out``: the masks to write over (``masks``)."""
        ...

    def mask_applier(self, weights: list[Any], masks: list[Any], labels: Sequence[str]) -> DeviceApplier:
        """Validated now; each call zeroes the pruned weights in place."""
        ...

    def rewind(self, weights: list[Any], snapshots: list[Any], masks: list[Any], labels: Sequence[str]) -> None: ...

    def alive_counts(self, masks: list[Any], labels: Sequence[str], process_group: object) -> list[int]: ...


_DEVICE_KERNELS: dict[str, DeviceKernels] = {}


def register_device_kernels(kernels: DeviceKernels) -> None:
    """Make ``kernels`` selectable by ``backend=kernels.name`` (framework adapters call this)."""
    _DEVICE_KERNELS[kernels.name] = kernels


def share_failure(error: BaseException, process_group: object, arrays: Sequence[object]) -> None:
    """A call failed on this rank before reaching its kernels. If the call spans ranks
    (``process_group``, or sharded ``arrays``), the other ranks wait in its first collective: each
    framework's kernels that can (a ``share_failure`` method) make every rank raise the error."""
    if process_group is not None and process_group is not False:
        for name in _entry_points():
            if name not in _DEVICE_KERNELS:
                try:
                    load_framework(name)
                except ImportError:  # a framework that is not installed has no ranks waiting
                    continue
    for value in arrays[:1]:
        array_backend(value)  # imports the framework adapter, which registers its kernels
    for kernels in list(_DEVICE_KERNELS.values()):
        share = getattr(kernels, "share_failure", None)
        if share is not None:
            share(error, process_group, arrays)


def device_kernels(
    arrays: Sequence[tuple[Sequence[str], Sequence[object]]], backend: object = "auto", process_group: object = None
) -> DeviceKernels | None:
    """The framework kernels to run for ``arrays``, or None for the Rust kernels (host memory).

    ``backend``: ``"auto"`` (Rust for host arrays, framework ops for device or sharded arrays or
    a process group), ``"rust"`` or a framework's name (``"torch"``).
    """
    frameworks = sorted(set(_DEVICE_KERNELS) | set(_entry_points()))
    if not isinstance(backend, str) or backend not in ("auto", "rust", *frameworks):
        raise ValueError(
            f"backend: expected 'auto', 'rust' or a framework ({', '.join(map(repr, frameworks))}), got {backend!r}"
        )
    for _, values in arrays:
        for value in values[:1]:
            array_backend(value)  # imports the framework adapter, which registers its kernels
    if backend not in ("auto", "rust"):
        if backend not in _DEVICE_KERNELS:
            load_framework(backend)
        if backend not in _DEVICE_KERNELS:
            raise ValueError(f"backend: {backend!r} is not available (is its package installed?)")
        forced = _DEVICE_KERNELS[backend]
        forced.claims(arrays, process_group)  # the same device checks as "auto"
        return forced
    for kernels in _DEVICE_KERNELS.values():
        if kernels.claims(arrays, process_group if backend == "auto" else None):
            if backend == "rust":
                raise ValueError(
                    "backend: 'rust' runs on host memory, but these arrays are on a device or sharded; "
                    f"use backend='auto' or {kernels.name!r}"
                )
            return kernels
    if process_group is not None and process_group is not False:
        if backend == "rust":
            raise ValueError("process_group: the Rust kernels run in one process; use backend='auto' or 'torch'")
        raise TypeError("process_group: selection across ranks needs torch tensors (torch.distributed)")
    return None
