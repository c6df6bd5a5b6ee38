"""Drop-in for ``torch.nn.utils.prune.global_unstructured`` (L1 magnitude), computed by the kernels.

torch concatenates every importance score into one vector, takes ``abs``, and runs ``topk`` over
it (seconds and gigabytes at BERT scale). Here the same mask comes from one exact global
selection over the tensors in place (Rust on the host, torch ops on CUDA); the module state
``prune.custom_from_mask`` would leave is then installed directly (without its extra passes), so
``weight_orig``,
``weight_mask``, the forward pre-hook (a ``PruningContainer`` on repeats), ``prune.remove`` and
``prune.is_pruned`` behave exactly as after torch's call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from torch.nn.utils import prune

import torch
from torch import nn

from ..kernels import global_magnitude_masks, global_magnitude_state, ranked_again
from ._pruned_state import Pair, install, one_pass_ready, states

# torch's own function, captured before any `patch_prune` can replace it: the methods this
# drop-in does not accelerate are handed to it, also while the patch is on.
_TORCH_GLOBAL_UNSTRUCTURED = prune.global_unstructured


def _pairs(parameters: object) -> list[Pair]:
    if not isinstance(parameters, Iterable) or isinstance(parameters, (str, bytes)):
        raise TypeError(f"parameters: expected an iterable of (module, name) tuples, got {type(parameters).__name__}")
    pairs: list[Pair] = []
    seen: set[tuple[int, str]] = set()
    for i, pair in enumerate(parameters):
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"parameters[{i}]: expected a (module, name) tuple, got {pair!r}")
        module, name = pair
        if not isinstance(module, nn.Module) or not isinstance(name, str):
            raise TypeError(
                f"parameters[{i}]: expected (nn.Module, str), got ({type(module).__name__}, {type(name).__name__})"
            )
        if not isinstance(getattr(module, name, None), torch.Tensor):
            raise TypeError(f"parameters[{i}]: {type(module).__name__} has no tensor named {name!r}")
        # custom_from_mask re-registers a first-time target as `name + "_orig"`, which torch
        # only allows for an nn.Parameter: refuse here, before any module has been touched.
        if not _is_pruned(module, name) and name not in module._parameters:
            raise TypeError(f"parameters[{i}]: {type(module).__name__}.{name} is not an nn.Parameter")
        if (id(module), name) in seen:
            raise ValueError(f"parameters[{i}]: ({type(module).__name__}, {name!r}) is listed twice")
        seen.add((id(module), name))
        pairs.append((module, name))
    if not pairs:
        raise ValueError("parameters: expected at least one (module, name) tuple, got none")
    return pairs


def _is_pruned(module: nn.Module, name: str) -> bool:
    return any(
        isinstance(hook, prune.BasePruningMethod) and hook._tensor_name == name
        for hook in module._forward_pre_hooks.values()
    )


def _importances(pairs: list[Pair], importance_scores: object) -> dict[str, torch.Tensor]:
    if importance_scores is None:
        importance_scores = {}
    if not isinstance(importance_scores, dict):
        raise TypeError(
            "importance_scores: expected a dict mapping (module, name) to a tensor, "
            f"got {type(importance_scores).__name__}"
        )
    scores: dict[str, torch.Tensor] = {}
    for i, (module, name) in enumerate(pairs):
        # Like torch: an already pruned tensor is ranked through its masked value `module.name`.
        param: torch.Tensor = getattr(module, name)
        score = importance_scores.get((module, name), param)
        if not isinstance(score, torch.Tensor):
            raise TypeError(f"importance_scores[parameters[{i}]]: expected a tensor, got {type(score).__name__}")
        if score.numel() != param.numel():
            raise ValueError(
                f"importance_scores[parameters[{i}]]: {score.numel()} elements, but the parameter has {param.numel()}"
            )
        scores[f"parameters[{i}]"] = score.reshape(param.shape)
    return scores


def _current_masks(pairs: list[Pair]) -> dict[str, torch.Tensor] | None:
    """Survivors so far (torch's ``default_mask``): ``name_mask == 1``, or all where unpruned.
    On the host one parallel pass of the kernels (`kernels.ranked_again`) writes them into views
    of one buffer with huge pages: a tensor of its own each would fault in every page of it."""
    found = [getattr(module, name + "_mask", None) for module, name in pairs]
    if all(mask is None for mask in found):
        return None
    params = [getattr(module, name) for module, name in pairs]
    if all(p.device.type == "cpu" for p in params) and all(m is None or _host_float(m) for m in found):
        fresh = ranked_again([None if m is None else m.detach() for m in found], params)
    else:
        fresh = [torch.empty(p.shape, dtype=torch.bool, device=p.device) for p in params]
        for mask, out in zip(found, fresh):
            if mask is None:
                out.fill_(True)
            else:
                torch.eq(mask.detach().reshape(out.shape), 1, out=out)
    return {f"parameters[{i}]": out for i, out in enumerate(fresh)}


def _holds_its_mask(module: nn.Module, name: str) -> bool:
    """Whether the pruning hook of ``module.name`` holds the module's mask buffer itself (a
    first pruning made in the selection's pass: `_pruned_state.install` with no bool mask)."""
    mask = getattr(module, name + "_mask", None)
    return mask is not None and any(
        isinstance(hook, prune.CustomFromMask) and hook._tensor_name == name and hook.mask is mask
        for hook in module._forward_pre_hooks.values()
    )


def _host_float(mask: object) -> bool:
    return (
        isinstance(mask, torch.Tensor)
        and mask.device.type == "cpu"
        and mask.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    )


def global_unstructured(
    parameters: Iterable[Pair],
    pruning_method: Any = prune.L1Unstructured,
    importance_scores: dict[Pair, torch.Tensor] | None = None,
    *,
    amount: int | float | None = None,
    **kwargs: Any,
) -> None:
    """``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured``, without the big sort.

    Same arguments, amount rules and resulting module state as torch's function: each
    ``(module, name)`` gets ``name_orig``, a ``name_mask`` buffer (in the parameter's dtype) and
    torch's forward pre-hook (a ``PruningContainer`` when it was pruned before), so
    ``prune.remove`` and ``prune.is_pruned`` work unchanged. Masks equal torch's whenever the
    ranked magnitudes are distinct; among equal magnitudes the earlier weight (parameter order,
    then row-major index) is pruned first, where torch's ``topk`` order is unspecified.

    Any other ``pruning_method`` (``RandomUnstructured``, a subclass, your own
    ``BasePruningMethod``) is handed to torch's function with the same arguments, after the
    ``parameters`` checks below, so the result is torch's.

    Differences for ``L1Unstructured``, all raised before any module is modified: all tensors
    must be on one device (CUDA runs the torch-op kernels there), a bool ``amount`` and NaN among the ranked scores are rejected,
    and a ``(module, name)`` listed twice is a ``ValueError``. The hook's ``mask`` attribute holds
    a bool tensor where torch keeps a float view of its concatenated mask.

    Args:
        parameters: iterable of ``(module, name)`` tuples to prune together.
        pruning_method: ``torch.nn.utils.prune.L1Unstructured`` (the default) or any other
            unstructured ``BasePruningMethod`` (run by torch's function).
        importance_scores: optional dict ``(module, name) -> tensor`` (same number of elements as
            the parameter) ranked instead of the parameter itself.
        amount: float fraction in [0, 1] of the currently unpruned entries (rounded half to
            even, as torch does) or an int count of entries to prune.
        kwargs: further arguments of another ``pruning_method``, passed on as torch does.

    Returns:
        None; the modules are pruned in place.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torch.nn.utils import prune
        >>> import lottery_ticket.torch as ltt
        >>> net = nn.Sequential(nn.Linear(10, 4), nn.Linear(4, 1))
        >>> ltt.global_unstructured(
        ...     [(net[0], "weight"), (net[1], "weight")], prune.L1Unstructured, amount=10
        ... )
        >>> int((net[0].weight_mask == 0).sum() + (net[1].weight_mask == 0).sum())
        10
        >>> prune.is_pruned(net)
        True
    """
    pairs = _pairs(parameters)
    if pruning_method is not prune.L1Unstructured:
        if amount is not None:
            kwargs["amount"] = amount
        _TORCH_GLOBAL_UNSTRUCTURED(pairs, pruning_method, importance_scores=importance_scores, **kwargs)
        return
    if kwargs:
        raise TypeError(f"{next(iter(kwargs))}: not an argument of L1Unstructured (it takes amount)")
    if amount is None:
        raise TypeError("amount: required by L1Unstructured (a float fraction or an int count)")
    scores = _importances(pairs, importance_scores)
    # Validates amount, dtypes, devices and NaN, and computes every mask before any module changes.
    current = _current_masks(pairs)  # fresh tensors of ours: the new masks are written over them
    keys = [f"parameters[{i}]" for i in range(len(pairs))]
    survivors: list[torch.Tensor | None] = [None] * len(pairs)
    if current is None and not importance_scores and one_pass_ready(pairs):
        # A first pruning of the parameters themselves: the state in the selection's pass, and
        # no bool masks (the float mask is the hook's, as torch's hook holds a float one).
        _, float_masks, products = global_magnitude_state(scores, amount, keep=False)
        made = {i: (float_masks[key], products[key]) for i, key in enumerate(keys)}
        keeps: list[torch.Tensor | None] = [None] * len(pairs)
    else:
        # A hook of a first one-pass pruning holds its float mask buffer: the survivors stay as
        # they are to take its place (`install`), and the new masks go to fresh buffers.
        keep_survivors = current is not None and any(_holds_its_mask(module, name) for module, name in pairs)
        masks = global_magnitude_masks(scores, amount, masks=current, out=None if keep_survivors else current)
        bools = [masks[key] for key in keys]
        made = states(pairs, bools)
        keeps = list(bools)
        if keep_survivors and current is not None:
            survivors = [current[key] for key in keys]
    for i, (module, name) in enumerate(pairs):
        install(module, name, keeps[i], made.get(i), survivors[i])


_patch_lock = threading.Lock()
_patch_depth = 0
_patched_over: Any = None  # what `prune.global_unstructured` was before the first active patch


class PrunePatch:
    """``torch.nn.utils.prune.global_unstructured`` is `global_unstructured` until `undo` (or
    the end of the ``with`` block). Patches nest: torch's function returns when the last one is
    undone, in any order; `undo` is idempotent."""

    def __init__(self) -> None:
        self._active = True

    def undo(self) -> None:
        """Put torch's function back unless another patch is still active."""
        global _patch_depth
        with _patch_lock:
            if not self._active:
                return
            self._active = False
            _patch_depth -= 1
            # Someone who replaced it after us (a mock, another library) keeps their function.
            if _patch_depth == 0 and prune.global_unstructured is global_unstructured:
                prune.global_unstructured = _patched_over

    def __enter__(self) -> PrunePatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.undo()


def patch_prune() -> PrunePatch:
    """Make ``torch.nn.utils.prune.global_unstructured`` this module's `global_unstructured`,
    so code that calls torch's function (Lightning's ``ModelPruning``) runs the kernels.

    Code that looks the function up at call time sees the patch (``prune.global_unstructured``,
    as Lightning does); a name bound earlier by ``from torch.nn.utils.prune import
    global_unstructured`` does not.

    Returns:
        A `PrunePatch`: a context manager, or call its ``undo()``.

    Example:
        >>> from torch.nn.utils import prune
        >>> import lottery_ticket.torch as ltt
        >>> with ltt.patch_prune():
        ...     prune.global_unstructured is ltt.global_unstructured
        True
        >>> prune.global_unstructured is ltt.global_unstructured
        False
    """
    global _patch_depth, _patched_over
    with _patch_lock:
        if _patch_depth == 0:
            _patched_over = prune.global_unstructured
            prune.global_unstructured = global_unstructured
        _patch_depth += 1
    return PrunePatch()
