"""Global magnitude pruning without masks: the exact threshold of a selection, then applied
tensor by tensor. This is how a checkpoint larger than memory is pruned: the weights are read
through memory maps, and no mask for the whole model is ever held.

The contract (the same selection as ``kernels.global_magnitude_masks(..., scope="global")``):

* :func:`select_threshold` ranks every weight once and returns a :class:`Threshold`. An alive
  weight is pruned iff its magnitude key is below ``key``, or equals ``key`` and it is among the
  first ``ties_pruned`` alive weights with that key in (tensor order, row-major index). Amount,
  ties, ``+0.0 == -0.0``, infinities last and NaN (among alive weights: ``ValueError`` naming
  the tensor) follow ``global_magnitude_masks``; counts are exact beyond 2^31 elements. It reads
  the weights once in full (plus a small strided sample; adversarial inputs or heavy f32/f64
  ties can make the exact fallback read them a few more times) and allocates only the sample and
  the in-bracket candidates.
* :func:`write_pruned` writes one tensor: ``dst = src`` where kept, zero bits (``+0.0``) where
  pruned or dead in ``mask``. It returns the ties it pruned; pass each tensor, in the order given
  to :func:`select_threshold`, the ties the earlier ones left (:class:`ThresholdWriter` does the
  bookkeeping). Every tensor of the selection must be written, in that order, for the ties to
  land where ``global_magnitude_masks`` puts them.

Tensors are NumPy arrays or torch CPU tensors of f16/f32/f64 (bf16 as torch tensors), or
:class:`RawTensor` (raw bits + dtype name), which is how a memory-mapped safetensors tensor
arrives: bf16 has no NumPy dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .. import _core, _validation
from . import arrays as _arrays


class RawTensor(NamedTuple):
    """A float tensor as its raw bits: ``bits`` is a C-contiguous uint16 (float16, bfloat16),
    uint32 (float32) or uint64 (float64) array, e.g. a ``np.memmap`` of a safetensors file."""

    bits: np.ndarray
    dtype: str


@dataclass(frozen=True)
class Threshold:
    """Which alive weights a global selection prunes (see the module docstring)."""

    key: int  # magnitude key in a key space of `key_width_bits` bits
    key_width_bits: int  # 64 when any tensor of the selection is float64, else 32
    ties_pruned: int  # alive weights with key == `key` that are pruned, earliest first
    pruned: int  # weights the selection prunes, ties included
    alive: int  # alive weights before the selection


def _bits(value: object, label: str, *, writable: bool) -> _arrays.Bits:
    """A float array, or a RawTensor checked without copying (a memmap must stay a memmap)."""
    if not isinstance(value, RawTensor):
        return _arrays.float_bits(value, label, writable=writable)
    bits, dtype = value
    if dtype not in _arrays.BITS_DTYPES:
        raise _validation.unsupported_dtype(label, repr(dtype))
    want = np.dtype(_arrays.BITS_DTYPES[dtype])
    if not isinstance(bits, np.ndarray) or bits.dtype != want:
        got = bits.dtype if isinstance(bits, np.ndarray) else type(bits).__name__
        raise TypeError(f"{label}: {dtype} bits must be a NumPy {want} array, got {got}")
    if writable:
        _arrays.require_in_place(bits, label)
    elif not bits.flags.c_contiguous:
        raise ValueError(f"{label}: array must be C-contiguous")
    return _arrays.Bits(label, bits, dtype, tuple(bits.shape))


def _read_views(values: list[Any], labels: Sequence[str]) -> list[_arrays.Bits]:
    return [_bits(v, label, writable=False) for v, label in zip(values, labels)]


def select_threshold(weights: Any, amount: int | float, masks: Any = None) -> Threshold:
    """The threshold that prunes ``amount`` of the alive weights by smallest magnitude, globally.

    Args:
        weights: list or dict of tensors (NumPy, torch CPU or :class:`RawTensor`; dtypes mixed),
            in the order whose (tensor, row-major index) order breaks ties.
        amount: float fraction in [0, 1] of the alive weights (rounded half to even), or int count.
        masks: current survivors (bool, same shapes and container as ``weights``); default all.

    Returns:
        The :class:`Threshold`; nothing is written. Raises like ``global_magnitude_masks``.

    Example:
        >>> import numpy as np
        >>> w = [np.array([0.5, -0.1, 2.0], dtype=np.float32), np.array([[0.5, -4.0]])]
        >>> t = select_threshold(w, 2)
        >>> (t.pruned, t.ties_pruned, t.key_width_bits)
        (2, 1, 64)
    """
    names, values = _arrays.items(weights, "weights")
    amount = _validation.amount(amount)
    views, current = _arrays.ranking_views(names, values, masks, _read_views)
    key, width, ties, pruned, alive = _core.select_threshold(
        [b.bits for b in views], [b.dtype for b in views], current, amount, _validation.quoted(names)
    )
    return Threshold(key, width, ties, pruned, alive)


def write_pruned(
    src: Any,
    dst: Any,
    threshold: Threshold,
    ties_remaining: int,
    *,
    mask: Any = None,
    name: str | None = None,
) -> int:
    """Write ``src`` with the weights ``threshold`` prunes set to zero bits into ``dst``.

    Args:
        src: one tensor of the selection (as given to :func:`select_threshold`).
        dst: writable C-contiguous tensor of the same dtype and shape, not overlapping ``src``
            (e.g. a writable ``np.memmap`` of the output file as a :class:`RawTensor`).
        threshold: from :func:`select_threshold` over all tensors.
        ties_remaining: ``threshold.ties_pruned`` minus the ties used by the earlier tensors.
        mask: this tensor's survivors if the selection had masks (dead weights become zero).
        name: the tensor's name, for error messages.

    Returns:
        The ties pruned in this tensor (at most ``ties_remaining``).

    Raises ``TypeError``/``ValueError`` naming the argument before anything is written, except a
    NaN among the alive weights (``select_threshold`` reports it first), found mid-write.

    Example:
        >>> import numpy as np
        >>> w = [np.array([0.5, -0.1, 2.0], dtype=np.float32), np.array([[0.5, -4.0]])]
        >>> t = select_threshold(w, 2)
        >>> out = [np.empty_like(x) for x in w]
        >>> left = t.ties_pruned
        >>> for x, o in zip(w, out):
        ...     left -= write_pruned(x, o, t, left)
        >>> [o.tolist() for o in out]
        [[0.0, 0.0, 2.0], [[0.5, -4.0]]]
    """
    return write_pruned_counted(src, dst, threshold, ties_remaining, mask=mask, name=name)[0]


def write_pruned_counted(
    src: Any,
    dst: Any,
    threshold: Threshold,
    ties_remaining: int,
    *,
    mask: Any = None,
    name: str | None = None,
) -> tuple[int, int]:
    """:func:`write_pruned`, returning ``(ties pruned, weights kept)``: the kept count comes from
    the same pass, so a caller counting what it pruned never re-reads ``dst``."""
    if not isinstance(threshold, Threshold):
        raise TypeError(f"threshold: expected a Threshold, got {type(threshold).__name__}")
    ties_remaining = _validation.integer(ties_remaining, "ties_remaining", at_least=0, at_most=threshold.ties_pruned)
    source = _bits(src, _entry("src", name), writable=False)
    target = _bits(dst, _entry("dst", name), writable=True)
    _validation.same_dtype(target.label, target.dtype, source.dtype, of="the source's")
    _validation.same_shape(target.label, target.shape, source.shape, of="the source's")
    read = [(source.label, source.bits)]
    alive = None
    if mask is not None:
        alive = _arrays.mask_bytes(mask, _entry("mask", name), source.shape)
        read.append(("mask", alive))
    _arrays.check_no_overlap([(target.label, target.bits)], read)
    return _core.write_pruned(
        source.bits.reshape(-1),
        source.dtype,
        target.bits.reshape(-1),
        threshold.key,
        threshold.key_width_bits,
        ties_remaining,
        None if alive is None else alive.reshape(-1),
        None if name is None else repr(name),
    )


def _entry(arg: str, name: str | None) -> str:
    return arg if name is None else _validation.Label(arg, repr(name))


class ThresholdWriter:
    """Applies one :class:`Threshold` to the selection's tensors, one call per tensor in order,
    carrying the tie budget from each tensor to the next.

    Example:
        >>> import numpy as np
        >>> w = {"a": np.array([1.0, 1.0]), "b": np.array([1.0, 3.0])}
        >>> writer = ThresholdWriter(select_threshold(w, 2))
        >>> out = {k: np.empty_like(v) for k, v in w.items()}
        >>> for k in w:
        ...     writer.write(w[k], out[k], name=k)
        >>> writer.ties_remaining, out["a"].tolist(), out["b"].tolist()
        (0, [0.0, 0.0], [1.0, 3.0])
    """

    def __init__(self, threshold: Threshold) -> None:
        self.threshold = threshold
        self.ties_remaining = threshold.ties_pruned

    def write(self, src: Any, dst: Any, *, mask: Any = None, name: str | None = None) -> None:
        """:func:`write_pruned` with the ties the earlier calls left."""
        self.ties_remaining -= write_pruned(src, dst, self.threshold, self.ties_remaining, mask=mask, name=name)
