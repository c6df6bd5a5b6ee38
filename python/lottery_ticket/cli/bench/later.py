"""A later IMP round timed: the same step again over the first round's survivors, returning
fresh masks or written over the survivors (``out=masks``). Rows of `methods.METHODS`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ... import kernels
from .checks import check_masks, check_sums
from .workloads import Workload

if TYPE_CHECKING:
    import torch


@dataclass
class LaterRound:
    weights: list[torch.Tensor]
    amount: float
    survivors: list[torch.Tensor]  # the first round's masks


def later_round(workload: Workload) -> LaterRound:
    weights, amount = workload.weights, workload.spec.amount
    return LaterRound(weights, amount, kernels.global_magnitude_masks(weights, amount))


def ours_masked(state: LaterRound) -> Any:
    return kernels.global_magnitude_masks(state.weights, state.amount, masks=state.survivors)


@dataclass
class InPlaceRound:
    """A later round written over the survivors: ``masks`` is refilled from ``survivors`` before
    each round (untimed, into the same buffers, so no fresh pages either way)."""

    round: LaterRound
    masks: list[torch.Tensor]


def in_place_round(workload: Workload) -> InPlaceRound:
    state = later_round(workload)
    return InPlaceRound(state, [m.clone() for m in state.survivors])


def refill(state: InPlaceRound) -> InPlaceRound:
    # NumPy's copy, not torch's: after a parallel torch op its OpenMP threads spin for a while
    # and would take a core from the timed call that follows.
    for m, s in zip(state.masks, state.round.survivors):
        np.copyto(m.numpy(), s.numpy())
    return state


def ours_in_place(state: InPlaceRound) -> Any:
    masks = state.masks
    return kernels.global_magnitude_masks(state.round.weights, state.round.amount, masks, out=masks)


def weights_read_masks_rewritten(state: InPlaceRound) -> list[torch.Tensor]:
    """The bytes floor of a selection with masks, in two plain torch passes: each weight read (a
    sum) and each mask read and written back (its bytes ``&= 1``, which leaves it as it was). A
    round in place moves these bytes; so does a fresh selection into a reused buffer, whose
    stores read each mask line before writing it. Timed beside the read floor, it says how much
    of a target this host's memory takes before any selecting is done."""
    import torch

    sums = [w.sum() for w in state.round.weights]
    for m in state.masks:
        # As bytes: torch's bool `&` with a scalar takes a slow path, several times this pass.
        m.view(torch.uint8).bitwise_and_(1)
    return sums


def check_weights_read_masks_rewritten(workload: Workload, state: InPlaceRound, sums: list[torch.Tensor]) -> None:
    """Every weight was read (its sum is right) and every mask left as it was."""
    import torch

    check_sums(workload, sums)
    for m, s in zip(state.masks, state.round.survivors):
        assert torch.equal(m, s), "a mask changed"


def check_later_round(workload: Workload, state: LaterRound, masks: list[Any]) -> None:
    """Survivors stay a superset; exactly round(amount * alive) more pruned, by magnitude."""
    import numpy as np

    import torch

    check_masks(workload, state.survivors)
    alive = [w.float().abs()[m] for w, m in zip(workload.weights, state.survivors)]
    flat = torch.cat(alive).numpy()
    k = round(workload.spec.amount * flat.size)
    thr = np.partition(flat, k - 1)[k - 1]
    newly = 0
    for w, before, after in zip(workload.weights, state.survivors, masks):
        after = torch.as_tensor(after)
        assert not bool((after & ~before).any()), "a pruned weight came back"
        magnitude = w.float().abs()
        assert not bool((after & (magnitude < thr)).any()), "a survivor below the threshold was kept"
        assert bool((after | ~before | (magnitude <= thr)).all()), "a survivor above it was pruned"
        newly += int(before.sum()) - int(after.sum())
    assert newly == k, f"pruned {newly} survivors, expected exactly {k}"
