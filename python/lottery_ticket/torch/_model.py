"""A torch ``nn.Module`` as the pruner sees it: prunable parameters, whole-state snapshots, hooks.

The planner (`lottery_ticket.pruner`) is framework-neutral; this adapter supplies the torch
parts: which parameters are pruned by default, ``state_dict`` snapshot and restore, RNG state
for checkpoints, masks as ``torch.bool`` tensors and the optimizer step hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

import torch
from torch import nn

from ..adapters import check_state
from ..config import NameFilter, check_name_filter, select_names
from ._distributed import is_dtensor
from ._hooks import StepWatcher
from ._optim import unwrap_optimizer

# Layers whose `weight` is pruned by default, as in open_lth: Linear and every Conv/ConvTranspose.
PRUNED_BY_DEFAULT: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)
# Their matrices never are, also when a Linear head shares one (a tied language-model head).
EMBEDDINGS: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)
# nn.MultiheadAttention keeps its input projections as parameters of its own, not in Linears.
_ATTENTION_MATRICES = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def _is_conv1d(layer: nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2's attention and MLP): a Linear with a transposed
    ``(in, out)`` weight outside torch's class tree, recognised by shape so that this package
    never imports transformers."""
    weight = layer._parameters.get("weight")
    nf = getattr(layer, "nf", None)
    return (
        type(layer).__name__ == "Conv1D"
        and isinstance(nf, int)
        and isinstance(weight, torch.Tensor)
        and weight.dim() == 2
        and weight.shape[1] == nf
    )


def _stacked_experts(layer: nn.Module) -> tuple[str, ...]:
    """The ``(experts, out, in)`` matrices of a mixture-of-experts block that keeps its experts in
    3-D parameters rather than Linears (transformers' ``MixtralExperts`` and kin); not biases."""
    experts = getattr(layer, "num_experts", None)
    if not type(layer).__name__.endswith("Experts") or not isinstance(experts, int):
        return ()
    return tuple(
        name for name, p in layer._parameters.items() if p is not None and p.dim() == 3 and p.shape[0] == experts
    )


def _matrix_attrs(layer: nn.Module) -> tuple[str, ...]:
    if isinstance(layer, PRUNED_BY_DEFAULT) or _is_conv1d(layer):
        return ("weight",)
    if isinstance(layer, nn.MultiheadAttention):
        return _ATTENTION_MATRICES
    return _stacked_experts(layer)


def _matrix(layer: nn.Module, attr: str) -> tuple[str, torch.Tensor] | None:
    """``layer``'s parameter behind ``attr`` and its name under ``layer``: the attribute itself,
    or under a parametrization (LoRA as a parametrization, weight norm) the original it is
    computed from (the largest one where there are several, e.g. weight norm's direction)."""
    parametrizations = layer._modules.get("parametrizations")
    if isinstance(parametrizations, nn.ModuleDict) and attr in parametrizations:
        originals = list(parametrizations[attr].named_parameters(recurse=False))
        if not originals:
            return None
        name, original = max(originals, key=lambda item: item[1].numel())
        return f"parametrizations.{attr}.{name}", original
    param = layer._parameters.get(attr)
    return None if param is None else (attr, param)


def _memory(t: torch.Tensor) -> object:
    """What identifies a tensor's memory: tied heads may hold the embedding's storage under
    another Parameter object (``nn.Parameter(emb.weight.data)``)."""
    try:
        address = t.data_ptr()
    except (RuntimeError, NotImplementedError, TypeError):  # wrapper tensors (DTensor) have none
        address = 0
    return (t.device, address, tuple(t.shape), t.stride()) if address else id(t)


def default_weight_names(module: nn.Module) -> set[str]:
    """Names of the matrices pruned by default, in floating point: the weights of every Linear and
    Conv layer, transformers' ``Conv1D``, ``nn.MultiheadAttention``'s input projections and the
    stacked expert matrices of mixture-of-experts blocks.

    Never an embedding (also not through a head tied to it), a bias or a norm. A wrapper with
    a ``base_layer`` (peft's LoRA, IA3...) contributes its base layer's matrix and not its adapter
    factors: a zero-initialised LoRA ``B`` would be pruned whole by a global magnitude ranking.
    """
    skipped: set[int] = set()
    embedded: set[object] = set()
    found: list[tuple[str, torch.Tensor]] = []
    for path, layer in module.named_modules():
        if id(layer) in skipped:
            continue
        parametrizations = layer._modules.get("parametrizations")
        if isinstance(parametrizations, nn.ModuleDict):  # handled through the layer that owns them
            skipped.update(id(m) for m in parametrizations.modules())
        if isinstance(layer._modules.get("base_layer"), nn.Module):
            for child_name, child in layer.named_children():
                if child_name != "base_layer":
                    skipped.update(id(m) for m in child.modules())
        if isinstance(layer, EMBEDDINGS):
            embedding = _matrix(layer, "weight")
            if embedding is not None:
                embedded.add(_memory(embedding[1]))
            continue
        for attr in _matrix_attrs(layer):
            matrix = _matrix(layer, attr)
            if matrix is not None and matrix[1].is_floating_point():
                found.append((f"{path}.{matrix[0]}" if path else matrix[0], matrix[1]))
    return {name for name, param in found if _memory(param) not in embedded}


def prunable_names(model: nn.Module, *, include: NameFilter = None, exclude: NameFilter = None) -> list[str]:
    """The parameters a pruner with these ``include``/``exclude`` would prune, in model order.

    A dry run of the selection: nothing is modified. A name tied to an earlier parameter is
    listed once, under the earlier name.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 10))
        >>> prunable_names(net)
        ['1.weight', '3.weight']
        >>> prunable_names(net, exclude="3.*")
        ['1.weight']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    adapter = TorchModuleAdapter(model, check_name_filter(include, "include"), check_name_filter(exclude, "exclude"))
    return list(adapter.prunable)


def _is_tensor(value: object) -> bool:
    return isinstance(value, torch.Tensor)


class TorchModuleAdapter:
    """The pruner's view of an ``nn.Module`` (a `ModelAdapter`): masks live beside their
    parameters (same device; DTensor masks placed like DTensor parameters)."""

    def __init__(
        self,
        module: nn.Module,
        include: NameFilter = None,
        exclude: NameFilter = None,
        names: Collection[str] | None = None,
    ) -> None:
        self.module = module
        # Tied weights (`dec.weight = emb.weight`) are one parameter under several names: every
        # name can be selected, and all resolve to the first one, so the storage gets one mask.
        params = dict(module.named_parameters(remove_duplicate=False))
        first: dict[int, str] = {}
        self.canonical = {name: first.setdefault(id(p), name) for name, p in params.items()}
        if names is None:
            defaults = default_weight_names(module)
            names = select_names(list(params.items()), lambda n, _: n in defaults, include, exclude)
        missing = [n for n in names if n not in params]
        if missing:
            raise ValueError(f"masks: {missing[0]!r} is not a parameter of the model")
        chosen = {self.canonical[n] for n in names}
        self.prunable: dict[str, Any] = {n: p for n, p in params.items() if n in chosen}  # model order

    def state(self, device: str | None = None) -> dict[str, Any]:
        """A copy of the whole ``state_dict`` (every parameter and buffer), on ``device`` if
        given ("cpu": pinned host memory when CUDA is there, so copies back are fast)."""
        if device is None:
            return {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        return {k: _copy_to(v.detach(), torch.device(device)) for k, v in self.module.state_dict().items()}

    def load_state(self, snapshot: Mapping[str, Any], skip: Collection[str]) -> None:
        """Copy ``snapshot`` into the live tensors in place, except the names in ``skip``."""
        live = self.module.state_dict(keep_vars=True)
        with torch.no_grad():
            for name, tensor in live.items():
                if self.canonical.get(name, name) not in skip:
                    tensor.copy_(snapshot[name])

    def check_live(self, when: str) -> None:
        """Raise ``RuntimeError`` naming a pruned parameter the model no longer holds."""
        current = dict(self.module.named_parameters(remove_duplicate=False))
        for name, param in self.prunable.items():
            if current.get(name) is not param:
                raise RuntimeError(
                    f"model: parameter {name!r} was replaced {when} (load_state_dict(assign=True), a new "
                    "layer, or assignment): its mask would no longer apply; update parameters in place "
                    "(load_state_dict without assign, tensor.copy_) or start a new run"
                )

    def check_state(self, snapshot: Mapping[str, Any], arg: str) -> None:
        """Raise unless ``snapshot`` has exactly the model's state names, shapes and dtypes."""
        check_state(
            snapshot,
            self.module.state_dict(),
            arg,
            is_array=_is_tensor,
            kind="a torch tensor",
            owner="the model's state_dict",
        )

    def full_masks(self) -> dict[str, Any]:
        return {n: torch.ones_like(p, dtype=torch.bool) for n, p in self.prunable.items()}

    def masks_from_numpy(self, masks: Mapping[str, np.ndarray]) -> dict[str, Any]:
        out = {}
        for n, m in masks.items():
            mask = torch.from_numpy(np.array(m, dtype=np.bool_))
            like = self.prunable.get(n)
            out[n] = mask if like is None else _placed_like(mask, like)
        return out

    @staticmethod
    def masks_to_numpy(masks: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return {n: _whole(m).cpu().numpy().copy() for n, m in masks.items()}

    def rng_state(self) -> dict[str, np.ndarray]:
        return {"torch": torch.get_rng_state().numpy().copy()}

    def set_rng_state(self, state: Mapping[str, np.ndarray]) -> None:
        torch.set_rng_state(torch.from_numpy(np.array(state["torch"], dtype=np.uint8)))

    def step_watcher(self, callback: Callable[[], None]) -> StepWatcher:
        return StepWatcher(list(self.prunable.values()), callback)

    @staticmethod
    def unwrap_optimizer(optimizer: Any, arg: str = "optimizer") -> Any:
        """The torch optimizer inside a trainer's wrapper (accelerate, Lightning, DeepSpeed); None stays None."""
        return None if optimizer is None else unwrap_optimizer(optimizer, arg)


def _whole(x: Any) -> Any:
    """The whole tensor of a DTensor (gathered), or ``x`` itself."""
    return x.full_tensor() if is_dtensor(x) else x


def _placed_like(mask: torch.Tensor, like: Any) -> Any:
    """A whole host mask moved beside ``like``: its device, or its shards for a DTensor."""
    if is_dtensor(like):
        from torch.distributed.tensor import distribute_tensor

        # src_data_rank=None: every rank holds the whole mask already; each keeps its shard.
        return distribute_tensor(mask.to(like.device), like.device_mesh, like.placements, src_data_rank=None)
    return mask.to(like.device)


def _copy_to(x: Any, device: torch.device) -> Any:
    if is_dtensor(x):
        return x.to(device)
    if device.type == "cpu" and torch.cuda.is_available():
        copy = torch.empty(x.shape, dtype=x.dtype, device=device, pin_memory=True)
        return copy.copy_(x)
    return x.to(device, copy=True)
