"""Array-agnostic entry points: lists or dicts of NumPy arrays / torch CPU tensors -> `_core`.

Semantics (exact, reproducible, identical across runs and thread counts):

* **What is pruned.** ``amount`` of the *currently alive* weights (``masks`` says which; all
  are alive without it). A float is a fraction in [0, 1], turned into a count as
  ``round(amount * alive)`` with ties to even (``torch.nn.utils.prune``'s rule); an int is an
  exact count in [0, alive]. The pruned weights are those with the smallest ``|w|``; already
  pruned weights stay pruned.
* **Ties.** Among equal magnitudes the weight earlier in (tensor order, row-major flat index) is
  pruned first. For a dict, tensor order is the dict's order.
* **Magnitudes** are compared exactly, across dtypes too: ``+0.0 == -0.0``, subnormals are
  ordered, ``±inf`` is largest (pruned only after every finite weight). NaN among alive weights
  raises ``ValueError`` naming the tensor, before anything is written.
* **Scope.** ``"global"`` ranks all tensors together; ``"layer"`` applies the same rule to each
  tensor on its own (the same fraction, or the same count, of each tensor's alive weights).
* Bad input raises ``TypeError``/``ValueError`` naming the argument and modifies nothing.
* **Concurrency.** The kernels release the GIL: the arrays of a call must not be written by
  another thread while it runs (a racing writer gets ``RuntimeError`` "weights changed during
  the call", never a wrong mask count), and two in-place calls on the same array at once are
  refused rather than interleaved. After ``os.fork`` the child runs the kernels on a fresh pool.
* **Byte order.** Any byte order is read correctly (foreign-order arrays are converted first);
  in-place operations need native order (``TypeError`` otherwise).
* **Tied weights.** One storage is one tensor: passing memory twice is a ``ValueError``.
* **torch.** In-place writes bump the autograd version counter, as torch's own in-place ops do,
  and inference tensors are refused outside inference mode.
* **Memory.** Result buffers of 1 MiB and more are kept once every array over them is dropped
  and reused by a later call of the same size (`release_buffers`, `set_buffer_cache_limit`,
  ``LOTTERY_TICKET_BUFFER_CACHE_MIB``; an eighth of the physical memory by default): faulting
  a fresh buffer in costs the kernel a zeroing pass over it.
* **Devices and ranks.** NumPy arrays and CPU tensors run the Rust kernels; tensors on any other
  device (CUDA), DTensors and ``process_group=`` run the framework's own ops on that device
  (`backends.DeviceKernels`), with bit-identical masks. ``backend="torch"`` forces those ops.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Literal

import numpy as np

from .. import _core, _validation, backends
from . import arrays as _arrays
from . import view_cache as _plan
from .buffer_cache import BufferCacheStats, buffer_cache_stats, release_buffers, set_buffer_cache_limit
from .gc_pause import gc_paused
from .pruned_state import PrunedState, global_magnitude_state, mask_products, ranked_again

__all__ = [
    "BufferCacheStats",
    "MaskApplier",
    "PrunedState",
    "alive_counts",
    "apply_masks",
    "buffer_cache_stats",
    "global_magnitude_masks",
    "global_magnitude_state",
    "mask_products",
    "ranked_again",
    "release_buffers",
    "rewind",
    "set_buffer_cache_limit",
]

Scope = Literal["global", "layer"]


@gc_paused
def global_magnitude_masks(
    weights: Any,
    amount: int | float,
    masks: Any = None,
    scope: Scope = "global",
    *,
    backend: str = "auto",
    process_group: Any = None,
    out: Any = None,
) -> Any:
    """Masks that prune ``amount`` of the alive weights by smallest magnitude.

    Args:
        weights: list or dict of float arrays (NumPy or torch CPU; f16, bf16, f32, f64, mixed).
        amount: float fraction in [0, 1] of the alive weights, or int count.
        masks: current survivors (bool, same shapes), same container as ``weights``; default all.
        scope: ``"global"`` (one ranking over all tensors) or ``"layer"`` (each tensor alone).
        backend: ``"auto"`` (Rust for host arrays, torch ops for device tensors), ``"rust"`` or
            ``"torch"`` (torch ops, also on CPU tensors).
        process_group: a ``torch.distributed`` group (or True: the default group): each rank
            passes its local tensors and gets its part of the one selection over all ranks'
            tensors in (rank, tensor, flat index) order; amounts are global. DTensors need none.
        out: ``masks`` itself (``out=masks``): the new masks are written over the survivor
            masks, so a later IMP round allocates and faults in no new mask memory. On error
            they are left as they were.

    Returns:
        New bool masks (True = kept), in the same container and array kind as ``weights``:
        C-contiguous, disjoint views into one freshly allocated buffer; with ``out``, ``out``.

    Examples:
        >>> import numpy as np
        >>> w = [np.array([0.5, -0.1, 2.0], dtype=np.float32), np.array([[0.3, -4.0]])]
        >>> [m.tolist() for m in global_magnitude_masks(w, 2)]
        [[True, False, True], [[False, True]]]
    """
    values: list[Any] = []
    try:  # a rank that fails here must still tell the others, which wait in the first collective
        names, values = _arrays.items(weights, "weights")
        amount = _validation.amount(amount)
        _validation.scope(scope)
        labels = _validation.labels("weights", names, len(values))
        mask_labels = _validation.labels("masks", names, len(values))
        mask_values = _arrays.matching_items(masks, "masks", names, len(values)) if masks is not None else []
        device = backends.device_kernels([(labels, values), (mask_labels, mask_values)], backend, process_group)
        if out is not None:
            _check_out_is_masks(out, mask_values if masks is not None else None, names, len(values))
    except (TypeError, ValueError) as err:
        backends.share_failure(err, process_group, values)
        raise
    if device is not None:
        mask_arg = mask_values if masks is not None else None
        if out is not None:
            device.select_masks(values, labels, amount, mask_arg, scope, process_group, out=mask_values)
            return out
        selected = device.select_masks(values, labels, amount, mask_arg, scope, process_group)
        return _arrays.shaped_like(names, selected)
    if out is not None:
        in_place = _plan.read_views(values, labels)
        written_masks = _plan.written_views(
            mask_values,
            mask_labels,
            [b.shape for b in in_place],
            lambda: _arrays.written_masks(mask_values, mask_labels, in_place),
        )
        written = _arrays.write_notifiers(mask_values)
        _core.select_masks_in_place(
            [b.bits for b in in_place],
            [b.dtype for b in in_place],
            written_masks,
            amount,
            scope,
            _validation.quoted(names),
        )
        for notify in written:
            notify()
        return out
    views, current = _arrays.ranking_views(names, values, masks, _plan.read_views)
    buffer, fresh = _arrays.new_masks(values, [b.shape for b in views])
    _core.select_masks(
        [b.bits for b in views], [b.dtype for b in views], current, buffer, amount, scope, _validation.quoted(names)
    )
    return _arrays.shaped_like(names, fresh)


def _check_out_is_masks(out: Any, masks: list[Any] | None, names: list[Hashable] | None, count: int) -> None:
    """``out=`` is the survivor masks themselves, entry for entry (the masks are written in place)."""
    if masks is None:
        raise ValueError("out: masks are written in place over the survivors: pass masks=... and out=masks")
    for i, (o, m) in enumerate(zip(_arrays.matching_items(out, "out", names, count), masks)):
        if o is not m:
            label = _validation.labels("out", names, count)[i]
            raise ValueError(f"{label}: must be the survivor mask itself (out=masks); masks are written in place")


def _in_place_views(weights: Any, masks: Any) -> tuple[list[Hashable] | None, list[_arrays.Bits], list[np.ndarray]]:
    names, values = _arrays.items(weights, "weights")
    labels = _validation.labels("weights", names, len(values))
    views = [_arrays.float_bits(v, label, writable=True) for v, label in zip(values, labels)]
    mask_values = _arrays.matching_items(masks, "masks", names, len(values))
    mask_labels = _validation.labels("masks", names, len(values))
    # Read only; both callers check them against the written weights for overlap.
    mask_views = [
        _arrays.own_buffer(_arrays.mask_bytes(m, label, v.shape))
        for m, label, v in zip(mask_values, mask_labels, views)
    ]
    return names, views, mask_views


@gc_paused
def apply_masks(weights: Any, masks: Any) -> None:
    """Zero, in place, every weight whose mask entry is False (idempotent).

    ``weights`` must be writable and C-contiguous; torch tensors (``requires_grad`` parameters
    included) are modified in place, zero-copy.
    """
    MaskApplier(weights, masks)()


class MaskApplier:
    """`apply_masks(weights, masks)` validated once, for re-applying the same masks after every
    optimizer step: a call then costs one storage check per tensor plus the kernel, instead of
    the full validation, which dominates on small models.

    Examples:
        >>> import numpy as np
        >>> w = [np.array([1.0, -2.0, 3.0])]
        >>> reapply = MaskApplier(w, [np.array([True, False, True])])
        >>> w[0][1] = 5.0  # e.g. an optimizer step moved a pruned weight
        >>> reapply(); w[0].tolist()
        [1.0, 0.0, 3.0]
    """

    @gc_paused
    def __init__(self, weights: Any, masks: Any) -> None:
        self.weights, self.masks = weights, masks
        self._device = _device_applier(weights, masks)
        if self._device is not None:
            return
        names, views, mask_views = _in_place_views(weights, masks)
        _arrays.check_no_overlap(
            [(b.label, b.bits) for b in views],
            list(zip(_validation.labels("masks", names, len(views)), mask_views)),
        )
        self._values = _arrays.items(weights, "weights")[1]
        self._address_readers = _arrays.address_readers(self._values)
        self._addresses = [read() for read in self._address_readers]
        self._bits = [b.bits for b in views]
        self._mask_views = mask_views
        self._names = _validation.quoted(names)
        self._labels = [b.label for b in views]
        self._written = _arrays.write_notifiers(self._values)

    def is_current(self) -> bool:
        """Whether every weight still has the storage it had when this applier was built."""
        if self._device is not None:
            return bool(self._device.is_current())
        return all(read() == a for read, a in zip(self._address_readers, self._addresses))

    def __call__(self) -> None:
        if self._device is not None:
            self._device()
            return
        # A tensor whose storage was swapped (`p.data = ...`) would leave the cached views
        # pointing at the old memory: refuse rather than mask the wrong buffer.
        for read, address, label in zip(self._address_readers, self._addresses, self._labels):
            if read() != address:
                raise _validation.storage_replaced(label)
        _core.apply_masks(self._bits, self._mask_views, self._names)
        for notify in self._written:
            notify()


def _device_applier(weights: Any, masks: Any) -> Any:
    names, values = _arrays.items(weights, "weights")
    mask_values = _arrays.matching_items(masks, "masks", names, len(values))
    labels = _validation.labels("weights", names, len(values))
    device = backends.device_kernels([(labels, values), (_validation.labels("masks", names, len(values)), mask_values)])
    if device is None:
        return None
    return device.mask_applier(values, mask_values, labels)


@gc_paused
def rewind(weights: Any, snapshots: Any, masks: Any) -> None:
    """In place: survivors take their snapshot value, pruned weights become exactly zero.

    ``snapshots`` has the weights' container, shapes and dtypes (e.g. the weights at init); for
    device weights it may be on another device (copied in, e.g. from pinned host memory).
    """
    names, values = _arrays.items(weights, "weights")
    snap_values = _arrays.matching_items(snapshots, "snapshots", names, len(values))
    mask_values = _arrays.matching_items(masks, "masks", names, len(values))
    labels = [_validation.labels(arg, names, len(values)) for arg in ("weights", "snapshots", "masks")]
    # Snapshots may live elsewhere (e.g. pinned host memory for a model on the GPU): not checked.
    device = backends.device_kernels([(labels[0], values), (labels[2], mask_values)])
    if device is not None:
        device.rewind(values, snap_values, mask_values, labels[0])
        return
    names, views, mask_views = _in_place_views(weights, masks)
    snap_values = _arrays.matching_items(snapshots, "snapshots", names, len(views))
    snap_labels = _validation.labels("snapshots", names, len(views))
    snaps = [_arrays.float_bits(s, label, writable=False) for s, label in zip(snap_values, snap_labels)]
    for w, s in zip(views, snaps):
        _validation.same_dtype(s.label, s.dtype, w.dtype)
        _validation.same_shape(s.label, s.shape, w.shape)
    mask_labels = _validation.labels("masks", names, len(views))
    _arrays.check_no_overlap(
        [(b.label, b.bits) for b in views],
        [(s.label, s.bits) for s in snaps] + list(zip(mask_labels, mask_views)),
    )
    written = _arrays.write_notifiers(_arrays.items(weights, "weights")[1])
    _core.rewind([b.bits for b in views], [s.bits for s in snaps], mask_views, _validation.quoted(names))
    for notify in written:
        notify()


@gc_paused
def alive_counts(masks: Any, *, process_group: Any = None) -> Any:
    """Number of True entries of each mask (a list, or a dict for a dict input).

    With ``process_group`` (or DTensor masks) each count is summed over the ranks.
    """
    values: list[Any] = []
    try:
        names, values = _arrays.items(masks, "masks")
        labels = _validation.labels("masks", names, len(values))
        device = backends.device_kernels([(labels, values)], "auto", process_group)
    except (TypeError, ValueError) as err:
        backends.share_failure(err, process_group, values)
        raise
    if device is not None:
        return _arrays.shaped_like(names, device.alive_counts(values, labels, process_group))
    views = []
    for m, label in zip(values, labels):
        shape = tuple(m.shape) if hasattr(m, "shape") else ()
        views.append(_arrays.own_buffer(_arrays.mask_bytes(m, label, shape)))
    return _arrays.shaped_like(names, _core.alive_counts(views))
