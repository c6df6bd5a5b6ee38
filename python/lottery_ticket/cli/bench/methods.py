"""What the benchmarks time: ours and each peer, with the check that proves its answer right.

One :class:`Method` per table row. ``prepare`` (untimed, once) builds inputs from a workload,
``setup`` (untimed, before every round) gives a round fresh inputs where the call consumes them
(modules to prune), ``run`` is the timed call, and ``check`` asserts the first result: masks
prune exactly ``k`` weights, none above the k-th smallest magnitude, none below it kept; in-place
results equal torch's ``where`` reference. Shared by ``benches/`` and ``lottery-ticket bench``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ... import kernels
from .checks import check_masks, check_sums
from .later import (
    check_later_round,
    check_weights_read_masks_rewritten,
    in_place_round,
    later_round,
    ours_in_place,
    ours_masked,
    refill,
    weights_read_masks_rewritten,
)
from .pruned_modules import (
    check_modules,
    check_pruned_again,
    check_recorded_modules,
    module_masks_bytes,
    modules,
    ours_drop_in,
    pruned_once,
    torch_prune,
    training_modules,
)
from .workloads import Workload, WorkloadSpec

if TYPE_CHECKING:
    import torch

Task = Literal["read", "mask", "apply", "rewind"]


def _same(state: Any) -> Any:
    return state


def _no_bytes(result: Any) -> int:
    return 0


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    task: Task
    prepare: Callable[[Workload], Any]
    run: Callable[[Any], Any]
    check: Callable[[Workload, Any, Any], None]
    result_bytes: Callable[[Any], int] = _no_bytes  # what the call returns (masks), not "extra"
    setup: Callable[[Any], Any] = _same
    # Rough peak bytes per weight beyond the workload (inputs built by `prepare` included):
    # a method is skipped, not run, when this would not fit in the available memory.
    bytes_per_weight: float = 0.0


# ---- checks ---------------------------------------------------------------------------------


def _check_threshold(workload: Workload, result: tuple[float, list[Any]]) -> None:
    """A threshold peer: the exact k-th magnitude, and masks that keep what lies above it."""
    import torch

    thr, masks = result
    assert float(thr) == workload.threshold, f"threshold {thr} != k-th magnitude {workload.threshold}"
    for w, mask in zip(workload.weights, masks):
        assert torch.equal(torch.as_tensor(mask), w.abs() > workload.threshold), "mask != |w| > threshold"


def _masks_bytes(masks: list[Any]) -> int:
    return sum(int(m.nbytes) for m in masks)


# ---- read floor -----------------------------------------------------------------------------


@dataclass
class Inputs:
    """The weights and the fraction one step prunes."""

    weights: list[torch.Tensor]
    amount: float


def _weights(workload: Workload) -> Inputs:
    return Inputs(workload.weights, workload.spec.amount)


def _sum_each(inputs: Inputs) -> list[torch.Tensor]:
    return [w.sum() for w in inputs.weights]


# ---- mask step: peers -------------------------------------------------------------------------


def _numpy_partition(inputs: Inputs) -> tuple[float, list[Any]]:
    import numpy as np

    import torch

    # NumPy has no bf16, and compares f16 in software: a NumPy user converts to f32 first, so
    # that is part of the time.
    arrays = [(w if w.dtype == torch.float32 else w.float()).numpy() for w in inputs.weights]
    flat = np.concatenate([a.ravel() for a in arrays])
    np.abs(flat, out=flat)  # in place, and partition in place: the strongest plain-NumPy peer
    k = round(inputs.amount * flat.size)
    flat.partition(k - 1)
    thr = flat[k - 1]
    return float(thr), [np.abs(a) > thr for a in arrays]


def _torch_kthvalue(inputs: Inputs) -> tuple[float, list[torch.Tensor]]:
    import torch

    flat = torch.cat([w.reshape(-1) for w in inputs.weights]).abs_()
    thr = flat.kthvalue(round(inputs.amount * flat.numel())).values
    return float(thr), [w.abs() > thr for w in inputs.weights]


# ---- mask step: ours --------------------------------------------------------------------------


def _ours(inputs: Inputs) -> Any:
    return kernels.global_magnitude_masks(inputs.weights, inputs.amount)


def _ours_cold(inputs: Inputs) -> Any:
    # The buffer cache off: each call's masks are fresh pages the kernel zeroes (a first call's cost).
    limit = kernels.buffer_cache_stats().limit
    kernels.set_buffer_cache_limit(0)
    try:
        return kernels.global_magnitude_masks(inputs.weights, inputs.amount)
    finally:
        kernels.set_buffer_cache_limit(limit)


def _ours_torch_ops(inputs: Inputs) -> Any:
    # The torch-op backend (what CUDA tensors run), here on the host tensors.
    return kernels.global_magnitude_masks(inputs.weights, inputs.amount, backend="torch")


# ---- apply / rewind: ours against torch's in-place equivalent ---------------------------------


@dataclass
class InPlace:
    """A copy of the weights to modify, the workload's weights as snapshots, and our masks."""

    weights: list[torch.Tensor]
    snapshots: list[torch.Tensor]
    masks: list[torch.Tensor]


def _in_place(workload: Workload) -> InPlace:
    # Negated copies: rewinding must visibly restore the snapshot values.
    masks = kernels.global_magnitude_masks(workload.weights, workload.spec.amount)
    return InPlace([w.neg() for w in workload.weights], workload.weights, masks)


@dataclass
class Reapply:
    """A MaskApplier built once over `InPlace` weights, as the pruner's step hook builds it."""

    state: InPlace
    applier: kernels.MaskApplier


def _reapply(workload: Workload) -> Reapply:
    state = _in_place(workload)
    return Reapply(state, kernels.MaskApplier(state.weights, state.masks))


def _check_masked(workload: Workload, state: InPlace, result: None) -> None:
    import torch

    for w, snap, m in zip(state.weights, state.snapshots, state.masks):
        assert torch.equal(w, torch.where(m, -snap, 0)), "apply: w * mask"


def _check_rewound(workload: Workload, state: InPlace, result: None) -> None:
    import torch

    for w, snap, m in zip(state.weights, state.snapshots, state.masks):
        assert torch.equal(w, torch.where(m, snap, 0)), "rewind: where(mask, snapshot, 0)"


def _ours_apply(state: InPlace) -> None:
    kernels.apply_masks(state.weights, state.masks)


def _torch_mul(state: InPlace) -> None:
    for w, m in zip(state.weights, state.masks):
        w.mul_(m)


def _ours_applier(reapply: Reapply) -> None:
    reapply.applier()


def _ours_rewind(state: InPlace) -> None:
    kernels.rewind(state.weights, state.snapshots, state.masks)


def _torch_where(state: InPlace) -> None:
    import torch

    for w, snap, m in zip(state.weights, state.snapshots, state.masks):
        torch.where(m, snap, torch.zeros((), dtype=w.dtype), out=w)


def _new_masks(key: str, label: str, run: Callable[[Inputs], Any], bytes_per_weight: int) -> Method:
    """A row of ours that returns new masks for the workload's weights, checked exactly."""
    return Method(
        key,
        label,
        "mask",
        _weights,
        run,
        lambda wl, st, r: check_masks(wl, r),
        _masks_bytes,
        bytes_per_weight=bytes_per_weight,
    )


METHODS: tuple[Method, ...] = (
    Method(
        "floor",
        "read floor: torch sum of each tensor",
        "read",
        _weights,
        _sum_each,
        lambda wl, st, r: check_sums(wl, r),
    ),
    Method(
        "numpy",
        "numpy: concat + abs + partition",
        "mask",
        _weights,
        _numpy_partition,
        lambda wl, st, r: _check_threshold(wl, r),
        lambda r: _masks_bytes(r[1]),
        bytes_per_weight=10,
    ),
    Method(
        "kthvalue",
        "torch: cat + abs + kthvalue",
        "mask",
        _weights,
        _torch_kthvalue,
        lambda wl, st, r: _check_threshold(wl, r),
        lambda r: _masks_bytes(r[1]),
        bytes_per_weight=24,
    ),
    Method(
        "torch_prune",
        "torch.nn.utils.prune.global_unstructured",
        "mask",
        _weights,
        torch_prune,
        check_modules,
        module_masks_bytes,
        setup=modules,
        bytes_per_weight=60,
    ),
    _new_masks("ours", "ours: global_magnitude_masks", _ours, bytes_per_weight=2),
    _new_masks(
        "ours_cold", "ours: global_magnitude_masks, fresh pages (buffer cache off)", _ours_cold, bytes_per_weight=2
    ),
    Method(
        "ours_masked",
        "ours: global_magnitude_masks, a later round (existing masks)",
        "mask",
        later_round,
        ours_masked,
        check_later_round,
        _masks_bytes,
        bytes_per_weight=3,
    ),
    Method(
        "ours_in_place",
        "ours: a later round written over the survivors (out=masks)",
        "mask",
        in_place_round,
        ours_in_place,
        lambda wl, st, r: check_later_round(wl, st.round, r),
        setup=refill,
        bytes_per_weight=4,
    ),
    Method(
        "mask_bytes",
        "bytes floor with masks: torch sum of each tensor, then each mask's bytes &= 1",
        "read",
        in_place_round,
        weights_read_masks_rewritten,
        check_weights_read_masks_rewritten,
        bytes_per_weight=4,
    ),
    _new_masks(
        "ours_torch", "ours: torch-op backend on host tensors (backend='torch')", _ours_torch_ops, bytes_per_weight=8
    ),
    Method(
        "drop_in",
        "ours: lottery_ticket.torch.global_unstructured",
        "mask",
        _weights,
        ours_drop_in,
        check_modules,
        module_masks_bytes,
        setup=modules,
        bytes_per_weight=16,
    ),
    Method(
        "drop_in_grad",
        "ours: lottery_ticket.torch.global_unstructured, weights that require grad",
        "mask",
        _weights,
        ours_drop_in,
        check_recorded_modules,
        module_masks_bytes,
        setup=training_modules,
        bytes_per_weight=16,
    ),
    Method(
        "drop_in_again",
        "ours: lottery_ticket.torch.global_unstructured, a later round",
        "mask",
        _weights,
        ours_drop_in,
        check_pruned_again,
        module_masks_bytes,
        setup=pruned_once,
        bytes_per_weight=28,
    ),
    Method("ours_apply", "ours: apply_masks", "apply", _in_place, _ours_apply, _check_masked, bytes_per_weight=6),
    Method(
        "applier",
        "ours: MaskApplier call (built once)",
        "apply",
        _reapply,
        _ours_applier,
        lambda wl, st, r: _check_masked(wl, st.state, r),
        bytes_per_weight=6,
    ),
    Method("torch_mul", "torch: w.mul_(mask)", "apply", _in_place, _torch_mul, _check_masked, bytes_per_weight=6),
    Method("ours_rewind", "ours: rewind", "rewind", _in_place, _ours_rewind, _check_rewound, bytes_per_weight=6),
    Method(
        "torch_where",
        "torch: where(mask, snapshot, 0, out=w)",
        "rewind",
        _in_place,
        _torch_where,
        _check_rewound,
        bytes_per_weight=6,
    ),
)
BY_KEY = {m.key: m for m in METHODS}

# The 1-thread row: `ours` again, in a subprocess whose rayon pool has one thread.
ONE_THREAD = "ours_1thread"
ONE_THREAD_LABEL = "ours: global_magnitude_masks, 1 thread"
ROW_ORDER = [k for m in METHODS for k in ((m.key, ONE_THREAD) if m.key == "ours" else (m.key,))]
# The read floor's row.
FLOOR = "floor"
# Rows whose targets (or the notes beside them) are ratios to the read floor.
_PAIRED_WITH_FLOOR = frozenset({"ours", "ours_cold", "ours_in_place", "mask_bytes", "ours_torch"})
# Rows compared with a peer where the peer is cheap enough to time again every round: NumPy's
# partition at ResNet-50 and LeNet size, torch's mul_ loop beside the MaskApplier. torch.prune
# (seconds a call at BERT size) and NumPy at BERT size are not.
_PAIRED_WITH_PEER = {("ours", "conv"): "numpy", ("ours", "lenet"): "numpy", ("applier", "lenet"): "torch_mul"}


def paired_with(key: str, spec: WorkloadSpec) -> tuple[str, ...]:
    """The rows timed right before each round of row ``key`` on ``spec``, in order (`hygiene`),
    so that a change in the machine between rows cannot move the ratios its targets read. The
    peer runs first: its temporaries would otherwise evict a small model's weights from the
    cache just before our call, where the floor leaves them warm, as our previous round leaves
    them for the peer."""
    peer = _PAIRED_WITH_PEER.get((key, spec.mix))
    floor = (FLOOR,) if key in _PAIRED_WITH_FLOOR else ()
    return ((peer,) if peer is not None else ()) + floor


# The row each task's ratios are taken against.
BASELINE = {"read": "ours", "mask": "ours", "apply": "ours_apply", "rewind": "ours_rewind"}
