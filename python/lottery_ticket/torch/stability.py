"""Instability analysis (Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis").

A network is *stable* to SGD noise when two copies trained from the same weights with different
data orders end in one linear basin: the error along the straight line between them rises by
less than ~2% above the endpoints. IMP finds matching subnetworks only from rewind points where
the sparse network is stable, so scanning the rewind iteration k with `instability` tells where
W0 rewinding fails and ``early:k`` starts to work, before committing to a full IMP run::

    from lottery_ticket.torch import instability

    def train_rest(model, seed):  # from the rewind point to the end, data order from seed
        ...

    def evaluate(model) -> float:  # test error in [0, 1]
        ...

    result = instability(model, train_rest, evaluate, masks=pruner.masks)  # model at W_k
    print(result.barrier)

``model`` is never modified: both copies are deep copies, and the path is walked on a third.
"""

from __future__ import annotations

import copy
import functools
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import torch
from torch import nn

from ._hooks import StepWatcher

__all__ = ["Instability", "instability", "interpolate_state", "recompute_batchnorm"]

# Frankle et al. 2020 call a network stable when its error barrier stays below 2%.
STABLE_BARRIER = 0.02


@dataclass(frozen=True)
class Instability:
    """The error along the linear path between two copies trained with different data orders.

    Attributes:
        alphas: the interpolation weights, evenly spaced from 0 (first copy) to 1 (second copy).
        errors: ``evaluate``'s error at each alpha.
        seeds: the two seeds the copies were trained with.
    """

    alphas: tuple[float, ...]
    errors: tuple[float, ...]
    seeds: tuple[int, int]

    @property
    def barrier(self) -> float:
        """Frankle et al.'s error barrier: the highest error on the path minus the mean of the
        endpoints' errors (0 when the path is no worse than its ends)."""
        return max(self.errors) - (self.errors[0] + self.errors[-1]) / 2.0

    @property
    def stable(self) -> bool:
        """True when the barrier is below 2% (Frankle et al.'s threshold)."""
        return self.barrier < STABLE_BARRIER

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, the barrier included."""
        return {
            "alphas": list(self.alphas),
            "errors": list(self.errors),
            "seeds": list(self.seeds),
            "barrier": self.barrier,
        }


def _check_masks(model: nn.Module, masks: Any) -> dict[str, torch.Tensor]:
    """``masks`` (a mapping, or anything with ``.masks``: a ticket, a pruner) as bool tensors
    placed like the parameters they belong to."""
    if masks is None:
        return {}
    if not isinstance(masks, Mapping) and hasattr(masks, "masks"):
        masks = masks.masks
    if not isinstance(masks, Mapping):
        raise TypeError(
            f"masks: expected {{parameter name: bool mask}}, a Ticket or a pruner, got {type(masks).__name__}"
        )
    params = dict(model.named_parameters())
    result = {}
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"masks: the model has no parameter named {name!r}")
        tensor = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        if tensor.dtype != torch.bool:
            raise TypeError(f"masks[{name!r}]: expected a bool mask, got {tensor.dtype}")
        if tuple(tensor.shape) != tuple(params[name].shape):
            raise ValueError(
                f"masks[{name!r}]: shape {tuple(tensor.shape)} differs from the parameter's {tuple(params[name].shape)}"
            )
        result[name] = tensor.to(params[name].device)
    return result


def _check_seeds(seeds: object) -> tuple[int, int]:
    if not isinstance(seeds, Sequence) or isinstance(seeds, str) or len(seeds) != 2:
        raise ValueError(f"seeds: expected two seeds, got {seeds!r}")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise TypeError(f"seeds: expected ints, got {type(s).__name__}")
    if seeds[0] == seeds[1]:
        raise ValueError(f"seeds: the two copies need different seeds, got {seeds[0]} twice")
    return int(seeds[0]), int(seeds[1])


def _apply(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].masked_fill_(~mask, 0.0)


def _error(evaluate: Callable[[nn.Module], float], model: nn.Module, alpha: float) -> float:
    with torch.no_grad():
        value = evaluate(model)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"evaluate: expected an error in [0, 1], got {value!r} at alpha {alpha:g}")
    return float(value)


def interpolate_state(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], alpha: float) -> dict[str, Any]:
    """``(1 - alpha) * a + alpha * b`` for every floating tensor (parameters and buffers such as
    BatchNorm statistics); integer buffers (``num_batches_tracked``) are taken from ``a``."""
    if set(a) != set(b):
        raise ValueError(f"b: the two states differ in their names: {sorted(set(a) ^ set(b))[:4]}")
    out: dict[str, Any] = {}
    for name, x in a.items():
        y = b[name]
        out[name] = torch.lerp(x, y.to(x.dtype), alpha) if x.is_floating_point() else x.clone()
    return out


def recompute_batchnorm(model: nn.Module, data: Iterable[Any]) -> None:
    """Replace the running statistics of every BatchNorm layer of ``model`` by their average over
    ``data`` (inputs, or ``(inputs, targets)`` batches): an interpolated network's statistics are
    not those of its interpolated activations."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    was_training = model.training
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches
        model.train()
        with torch.no_grad():
            for batch in data:
                model(batch[0] if isinstance(batch, (tuple, list)) else batch)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)


def instability(
    model: nn.Module,
    train: Callable[[nn.Module, int], Any],
    evaluate: Callable[[nn.Module], float],
    *,
    seeds: Sequence[int] = (0, 1),
    points: int = 11,
    masks: Any = None,
    batchnorm_data: Iterable[Any] | None = None,
) -> Instability:
    """Train two copies of ``model`` with different data orders and measure the error barrier
    on the straight line between them.

    Args:
        model: the network at the point to analyse (W0, or the rewind point W_k); not modified.
        train: ``train(copy, seed)`` trains ``copy`` in place; the seed should fix its data order.
            Called once per seed.
        evaluate: ``evaluate(network) -> error in [0, 1]`` (e.g. 1 - test accuracy).
        seeds: the two seeds, different.
        points: how many evenly spaced alphas from 0 to 1 are evaluated (>= 2).
        masks: ``{parameter name: bool mask}``, a `Ticket` or a pruner (its ``masks``): the
            masked weights are zero in both copies, after every optimizer step while they
            train, and at every point of the path.
        batchnorm_data: when given, BatchNorm running statistics are recomputed from these
            batches at every point (see `recompute_batchnorm`); otherwise they are interpolated.

    Returns:
        An `Instability` with ``alphas``, ``errors`` and ``barrier``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    for arg, fn in (("train", train), ("evaluate", evaluate)):
        if not callable(fn):
            raise TypeError(f"{arg}: expected a callable, got {type(fn).__name__}")
    pair = _check_seeds(seeds)
    if isinstance(points, bool) or not isinstance(points, numbers.Integral) or points < 2:
        raise ValueError(f"points: expected an int >= 2, got {points!r}")
    checked = _check_masks(model, masks)
    trained = []
    for seed in pair:
        net = copy.deepcopy(model)
        _apply(net, checked)
        params = dict(net.named_parameters())
        watcher = StepWatcher([params[n] for n in checked], functools.partial(_apply, net, checked))
        handle = watcher.install_global() if checked else None
        try:
            train(net, seed)
        finally:
            if handle is not None:
                handle.remove()
        _apply(net, checked)
        trained.append({k: v.detach().clone() for k, v in net.state_dict().items()})
    walker = copy.deepcopy(model)
    alphas = tuple(float(a) for a in np.linspace(0.0, 1.0, int(points)))
    errors = []
    for alpha in alphas:
        walker.load_state_dict(interpolate_state(trained[0], trained[1], alpha))
        _apply(walker, checked)
        if batchnorm_data is not None:
            recompute_batchnorm(walker, batchnorm_data)
        errors.append(_error(evaluate, walker, alpha))
    return Instability(alphas=alphas, errors=tuple(errors), seeds=pair)
