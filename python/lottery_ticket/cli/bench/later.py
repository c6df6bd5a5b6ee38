"""A later IMP round timed: the same step again over the first round's survivors, returning
fresh masks or written over the survivors (``out=masks``). Rows of `methods.METHODS`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ... import kernels
from .checks import check_masks
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
