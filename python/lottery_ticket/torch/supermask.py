"""Supermask training (Zhou et al. 2019, "Deconstructing Lottery Tickets: Zeros, Signs, and the
Supermask"): keep the weights frozen at initialisation and learn only which ones to keep.

Each converted Linear/Conv layer gets a learned score ``s`` per weight. In training mode the
mask is sampled, ``m ~ Bernoulli(sigmoid(s))``, and the gradient flows to ``s`` through a
straight-through estimator (``dm / d sigmoid(s) := 1``); in evaluation mode the mask is the
deterministic ``sigmoid(s) > 0.5``. The layer computes ``layer(x)`` with its weight replaced by
``m * W`` (bias, stride, padding etc. unchanged)::

    from lottery_ticket.torch import supermask

    supermask.to_supermask(model)                      # in place; weights and biases frozen
    opt = torch.optim.Adam(supermask.scores(model), lr=0.1)
    ...train as usual...
    ticket = supermask.to_ticket(model)                # the learned mask (eval rule) + frozen W0
    supermask.from_supermask(model)                    # the original layers back, untouched

``LotteryTicketPruner.apply_ticket(model, ticket)`` then loads the masked network into the
restored model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import torch
from torch import nn

from ..config import LotteryTicketConfig, NameFilter, RewindStrategy, select_names
from ..ticket import Ticket
from ._model import PRUNED_BY_DEFAULT, default_weight_names


class SupermaskLayer(nn.Module):
    """A Linear/Conv ``layer`` whose frozen weight is multiplied by a learned (sampled) mask."""

    def __init__(self, layer: nn.Module, scores: torch.Tensor) -> None:
        super().__init__()
        self.layer = layer
        self.scores = nn.Parameter(scores)
        # Restored by from_supermask: the layer's own trainability is not ours to change for good.
        self.requires_grad_before = {n: p.requires_grad for n, p in layer.named_parameters()}
        for p in layer.parameters():
            p.requires_grad_(False)

    def mask(self) -> torch.Tensor:
        """The mask used by the next forward pass (sampled in training, thresholded in eval)."""
        probs = torch.sigmoid(self.scores)
        if not self.training:
            return (probs > 0.5).to(probs.dtype)
        sample = torch.bernoulli(probs.detach())
        return sample + (probs - probs.detach())  # value: exactly the sample; gradient: straight through

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = _weight(self.layer) * self.mask()
        out: torch.Tensor = torch.func.functional_call(self.layer, {"weight": weight}, (x,))
        return out


def _weight(layer: nn.Module) -> torch.Tensor:
    weight = layer.weight
    assert isinstance(weight, torch.Tensor)  # Linear and Conv layers always have one
    return weight


def _set_child(model: nn.Module, path: str, child: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, child)


def to_supermask(
    model: nn.Module, include: NameFilter = None, exclude: NameFilter = None, *, seed: int = 0, init_std: float = 0.1
) -> nn.Module:
    """Replace, in place, the chosen Linear/Conv layers of ``model`` by `SupermaskLayer`\\ s.

    Args:
        model: the network at initialisation (its weights become the frozen weights).
        include: which weights get a mask, as for the pruner (glob patterns on names such as
            ``"fc1.weight"``, or a predicate); default every Linear/Conv weight.
        exclude: weights then left out of those, in the same forms.
        seed: seeds the initial scores, ``N(0, init_std)`` (near 0: keep probabilities near 1/2).
        init_std: standard deviation of the initial scores (>= 0).

    Returns:
        ``model`` itself (converted); a model with nothing to convert raises ``ValueError``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(init_std, bool) or not isinstance(init_std, (int, float)) or not init_std >= 0:
        raise ValueError(f"init_std: expected a real number >= 0, got {init_std!r}")
    if any(isinstance(m, SupermaskLayer) for m in model.modules()):
        raise ValueError("model: already has supermask layers; call from_supermask first")
    # Only the layers a SupermaskLayer can stand in for (not Conv1D, attention or expert matrices).
    defaults = {
        n
        for n in default_weight_names(model)
        if n.rpartition(".")[2] == "weight" and isinstance(model.get_submodule(n.rpartition(".")[0]), PRUNED_BY_DEFAULT)
    }
    names = select_names(list(model.named_parameters()), lambda n, _: n in defaults, include, exclude)
    paths = []
    for name in names:
        path, _, leaf = name.rpartition(".")
        if leaf != "weight" or not isinstance(model.get_submodule(path), PRUNED_BY_DEFAULT):
            raise ValueError(f"include: {name!r} is not the weight of a Linear or Conv layer")
        paths.append(path)
    if "" in paths:
        raise ValueError("model: a bare Linear/Conv layer cannot be converted in place; wrap it in nn.Sequential")
    generator = torch.Generator().manual_seed(seed)
    for path in paths:
        layer = model.get_submodule(path)
        weight = _weight(layer)
        scores = torch.randn(weight.shape, generator=generator, dtype=torch.float32) * float(init_std)
        _set_child(model, path, SupermaskLayer(layer, scores.to(device=weight.device, dtype=weight.dtype)))
    return model


def _supermask_layers(model: nn.Module) -> dict[str, SupermaskLayer]:
    found = {path: m for path, m in model.named_modules() if isinstance(m, SupermaskLayer)}
    if not found:
        raise ValueError("model: has no supermask layers (call to_supermask first)")
    return found


def scores(model: nn.Module) -> list[nn.Parameter]:
    """The learned scores of every supermask layer: what the optimizer should train."""
    return [layer.scores for layer in _supermask_layers(model).values()]


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The evaluation masks ``sigmoid(score) > 0.5``, keyed by the original weight names."""
    with torch.no_grad():
        return {f"{path}.weight": torch.sigmoid(layer.scores) > 0.5 for path, layer in _supermask_layers(model).items()}


def _original_state(model: nn.Module, layers: dict[str, SupermaskLayer]) -> dict[str, torch.Tensor]:
    """The state_dict the model has once converted back (no scores, ``path.layer.x`` -> ``path.x``)."""
    state = {}
    for key, value in model.state_dict().items():
        path = next((p for p in layers if key.startswith(f"{p}.")), None)
        if path is not None:
            rest = key[len(path) + 1 :]
            if rest == "scores":
                continue
            key = f"{path}.{rest.removeprefix('layer.')}"
        state[key] = value.detach().clone()
    return state


def to_ticket(model: nn.Module) -> Ticket:
    """The learned supermask as a `Ticket`: the eval masks plus the frozen weights (under the
    original names), for `LotteryTicketPruner.apply_ticket` on the restored model."""
    layers = _supermask_layers(model)
    found = {n: m.cpu().numpy() for n, m in masks(model).items()}
    total = sum(m.size for m in found.values())
    sparsity = 1.0 - sum(int(np.count_nonzero(m)) for m in found.values()) / total
    if sparsity >= 1.0:
        raise ValueError("model: the supermask keeps no weight at all")
    config = LotteryTicketConfig(sparsity, 1, RewindStrategy.init(), True)
    return Ticket(found, _original_state(model, layers), config, [sparsity], [], 0, None, "supermask")


def from_supermask(model: nn.Module) -> nn.Module:
    """Undo `to_supermask` in place: the original layers (weights untouched) replace the
    supermask layers, with their ``requires_grad`` flags as before; returns ``model``."""
    for path, layer in _supermask_layers(model).items():
        for name, p in layer.layer.named_parameters():
            p.requires_grad_(layer.requires_grad_before.get(name, True))
        _set_child(model, path, layer.layer)
    return model


def describe(model: nn.Module) -> dict[str, Any]:
    """Per-layer density of the eval masks and the overall density (for logs and reports)."""
    found = masks(model)
    kept = {n: int(m.sum()) for n, m in found.items()}
    total = sum(m.numel() for m in found.values())
    return {"layer_density": {n: kept[n] / found[n].numel() for n in found}, "density": sum(kept.values()) / total}
