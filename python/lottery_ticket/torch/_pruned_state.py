"""The module state ``torch.nn.utils.prune`` leaves on a pruned parameter (``name_orig``, the
float ``name_mask`` buffer, the masked ``name`` and the forward pre-hook), built directly from
the drop-in's bool masks: the float mask and masked weight of host float parameters come from
the kernels' one pass (`kernels.mask_products`, or the selection itself on a first pruning),
where torch's ops convert, combine and multiply, each a pass over fresh pages."""

from __future__ import annotations

from typing import cast

from torch.nn.utils import prune

import torch
from torch import nn

from ..kernels import mask_products
from ._buffers import empty_like

Pair = tuple[nn.Module, str]

State = tuple[torch.Tensor, torch.Tensor]  # a float mask, and the values of `mask * orig`

# Plain tensors only: a subclass (DTensor, a quantised or user type) keeps torch's own ops.
_PLAIN = (torch.Tensor, nn.Parameter)


def _kernel_ready(t: torch.Tensor, dtype: torch.dtype | None = None) -> bool:
    return (
        type(t) in _PLAIN
        and t.device.type == "cpu"
        and t.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
        and (dtype is None or t.dtype == dtype)
        and t.is_contiguous()
    )


def one_pass_ready(pairs: list[Pair]) -> bool:
    """Whether `kernels.global_magnitude_state` can make every first-pruned parameter's state
    in the selection's pass: each a plain contiguous float tensor on the host."""
    origs = [module._parameters.get(name) for module, name in pairs]
    return all(orig is not None and _kernel_ready(orig) for orig in origs)


def states(pairs: list[Pair], keeps: list[torch.Tensor]) -> dict[int, State]:
    """The float mask and masked weight of each host float parameter, from one pass of
    the kernels (`kernels.mask_products`) where torch's ops would convert the mask, combine it
    with the previous one and multiply, each a pass over fresh pages. A parameter pruned before
    has its mask combined as torch's ``PruningContainer`` does when the previous mask and the
    pruned tensor share the parameter's dtype."""
    entries: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}
    for i, ((module, name), keep) in enumerate(zip(pairs, keeps)):
        orig = module._parameters.get(name)  # None once pruned: `name` became `name + "_orig"`
        previous = None
        if orig is None:
            orig = module._parameters.get(name + "_orig")
            previous = getattr(module, name + "_mask", None)
            pruned = getattr(module, name, None)
            if not (
                orig is not None
                and isinstance(previous, torch.Tensor)
                and isinstance(pruned, torch.Tensor)
                and _kernel_ready(previous, orig.dtype)
                and pruned.dtype == orig.dtype
                and previous.shape == orig.shape
            ):
                continue
            previous = previous.detach()
        if _kernel_ready(orig):
            entries[i] = (orig.detach(), keep, previous)
    if not entries:
        return {}
    made = list(entries.values())
    masks, products = mask_products([w for w, _, _ in made], [k for _, k, _ in made], previous=[p for _, _, p in made])
    return {i: (masks[j], products[j]) for j, i in enumerate(entries)}


def install(
    module: nn.Module,
    name: str,
    keep: torch.Tensor | None,
    made: State | None = None,
    survivors: torch.Tensor | None = None,
) -> None:
    """The module state ``prune.custom_from_mask(module, name, keep)`` leaves, built directly
    (``made``: the mask and product from `states` or the selection). ``keep`` None: ``made``
    is the whole state, and the hook holds its float mask (torch's holds a float view of its
    concatenated masks with the same values; neither is read after the pruning).
    ``survivors``: this round's bool survivors (``name_mask == 1``), which a hook holding the
    mask buffer this round replaces takes instead: its own round's decisions, 1 byte a weight
    kept alive inside torch's container rather than that float buffer.

    torch's path multiplies a first mask by a tensor of ones it allocates for the purpose (and
    keeps the mask as a float view of one concatenated vector); at BERT scale those passes cost
    more than the selection itself. Every attribute, buffer, hook and value is as torch makes it.
    """
    product = None
    if keep is None:
        assert made is not None, "a pruning with neither a bool mask nor a made state"
        keep = made[0]
    method = prune.CustomFromMask(keep)
    method._tensor_name = name
    previous = [
        (key, hook)
        for key, hook in module._forward_pre_hooks.items()
        if isinstance(hook, prune.BasePruningMethod) and hook._tensor_name == name
    ]
    hook_to_register: prune.BasePruningMethod = method
    if not previous:
        orig = module._parameters[name]
        assert orig is not None  # _pairs refused anything but a parameter
        module.register_parameter(name + "_orig", orig)
        del module._parameters[name]
        if made is not None:
            mask, product = made
        else:
            mask = empty_like(orig).copy_(keep)  # torch: ones_like(orig) * keep
    else:
        # torch: the old hook moves into a PruningContainer (or the container gains the new
        # method) and the new mask is the old one times ours, in the pruned tensor's dtype.
        ((key, hook),) = previous
        del module._forward_pre_hooks[key]
        if (
            survivors is not None
            and isinstance(hook, prune.CustomFromMask)
            and hook.mask is getattr(module, name + "_mask", None)
        ):
            hook.mask = survivors
        if isinstance(hook, prune.PruningContainer):
            hook.add_pruning_method(method)
            container = hook
        else:
            container = prune.PruningContainer(hook)
            container.add_pruning_method(method)
        orig = getattr(module, name + "_orig")
        if made is not None:
            mask, product = made
        else:
            default: torch.Tensor = getattr(module, name + "_mask").detach()
            pruned: torch.Tensor = getattr(module, name)
            # torch ranks only the entries at 1; any other value is multiplied in once more.
            again = torch.where(default == 1, keep.to(dtype=default.dtype), default)
            mask = (default * again).to(dtype=pruned.dtype)
        hook_to_register = container
    module.register_buffer(name + "_mask", mask)
    setattr(module, name, _masked(orig, mask) if product is None else _recorded(orig, mask, product))
    module.register_forward_pre_hook(hook_to_register)


def _masked(orig: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mask * orig`` as torch's hook computes it; outside autograd into a buffer of ours (on
    the host with huge pages: at BERT scale faulting in torch's fresh pages costs more than the
    product)."""
    if orig.requires_grad and torch.is_grad_enabled():
        return mask.to(dtype=orig.dtype) * orig
    return torch.mul(mask.to(dtype=orig.dtype), orig, out=empty_like(orig))


def _recorded(orig: torch.Tensor, mask: torch.Tensor, product: torch.Tensor) -> torch.Tensor:
    """``product`` (the values of ``mask * orig``), recorded by autograd as that multiply where
    torch's hook would record it (a parameter that requires grad, with grad enabled)."""
    if orig.requires_grad and torch.is_grad_enabled():
        return cast(torch.Tensor, _MaskedWeight.apply(orig, mask, product))
    return product


class _MaskedWeight(torch.autograd.Function):
    """``mask * orig`` whose values the kernels computed: the gradient reaching ``orig`` is
    ``grad * mask``, as torch's ``MulBackward0`` computes it. Making the values under autograd
    instead meant torch's multiply into fresh pages, the slowest step of a training script's
    first pruning; the forward pre-hook then records torch's own multiply at every forward."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, orig: torch.Tensor, mask: torch.Tensor, product: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(mask)
        return product

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (mask,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad * mask, None, None
