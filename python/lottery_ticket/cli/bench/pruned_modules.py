"""The rows that prune modules (torch.prune and our drop-in): a round's modules are built
untimed by ``setup``, one per tensor, whose ``weight`` parameter shares the workload's storage.
A later round's modules were pruned once already (by the drop-in, untimed): the call then
combines masks and rebuilds the pruned state as torch's ``PruningContainer`` path does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from ... import kernels
from .checks import check_masks
from .later import LaterRound, check_later_round
from .workloads import Workload

if TYPE_CHECKING:
    import torch
    from torch import nn


class WeightsAndAmount(Protocol):
    weights: list[torch.Tensor]
    amount: float


@dataclass
class Modules:
    """One module per tensor whose ``weight`` parameter shares the workload's storage."""

    holders: list[nn.Module]
    amount: float


def modules(inputs: WeightsAndAmount, requires_grad: bool = False) -> Modules:
    from torch import nn

    holders = []
    for w in inputs.weights:
        holder = nn.Module()
        holder.weight = nn.Parameter(w, requires_grad=requires_grad)
        holders.append(holder)
    return Modules(holders, inputs.amount)


def training_modules(inputs: WeightsAndAmount) -> Modules:
    """`modules` whose parameters require grad, as a training script's are: with grad enabled
    (the bench's default), autograd records each pruned weight as ``mask * orig``."""
    return modules(inputs, requires_grad=True)


def pruned_once(inputs: WeightsAndAmount) -> Modules:
    """`modules` after one round of the drop-in: the next call is a later round."""
    fresh = modules(inputs)
    ours_drop_in(fresh)
    return fresh


def torch_prune(modules: Modules) -> list[nn.Module]:
    from torch.nn.utils import prune

    prune.global_unstructured(
        [(h, "weight") for h in modules.holders], pruning_method=prune.L1Unstructured, amount=modules.amount
    )
    return modules.holders


def ours_drop_in(modules: Modules) -> list[nn.Module]:
    from torch.nn.utils import prune

    from ...torch import global_unstructured

    global_unstructured([(h, "weight") for h in modules.holders], prune.L1Unstructured, amount=modules.amount)
    return modules.holders


def check_modules(workload: Workload, state: Any, holders: list[nn.Module]) -> None:
    from torch.nn.utils import prune

    assert all(prune.is_pruned(h) for h in holders), "every module carries a pruning hook"
    check_masks(workload, [h.weight_mask != 0 for h in holders])


def check_recorded_modules(workload: Workload, state: Any, holders: list[nn.Module]) -> None:
    """`check_modules`, and each pruned weight is recorded by autograd (it has a ``grad_fn``)."""
    check_modules(workload, state, holders)
    assert all(h.weight.grad_fn is not None for h in holders), "autograd records the pruned weight"


def check_pruned_again(workload: Workload, state: Any, holders: list[nn.Module]) -> None:
    """A second round over the first one's survivors, and the pruned weight is ``mask * orig``."""
    from torch.nn.utils import prune

    import torch

    weights, amount = workload.weights, workload.spec.amount
    first = LaterRound(weights, amount, kernels.global_magnitude_masks(weights, amount))
    assert all(isinstance(hook, prune.PruningContainer) for h in holders for hook in h._forward_pre_hooks.values())
    check_later_round(workload, first, [_tensor(h, "weight_mask") != 0 for h in holders])
    for h, w in zip(holders, weights):
        assert torch.equal(_tensor(h, "weight"), _tensor(h, "weight_mask") * w), "the pruned weight is mask * orig"


def module_masks_bytes(holders: list[nn.Module]) -> int:
    return sum(int(_tensor(h, "weight_mask").nbytes) for h in holders)


def _tensor(module: nn.Module, name: str) -> torch.Tensor:
    return cast("torch.Tensor", getattr(module, name))
