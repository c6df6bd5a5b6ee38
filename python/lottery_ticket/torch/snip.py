"""SNIP (Lee et al. 2019, "Single-shot network pruning based on connection sensitivity").

The connection sensitivity of weight ``w`` is ``|w * dL/dw|``, with the gradient summed over one
or more minibatches at initialisation; SNIP keeps the most sensitive weights in one global
selection, before any training::

    from lottery_ticket import LotteryTicketPruner
    from lottery_ticket.torch import Snip

    def loss_fn(model, batch):
        x, y = batch
        return torch.nn.functional.cross_entropy(model(x), y)

    pruner = LotteryTicketPruner(0.9, 1, importance=Snip(loss_fn, [(x, y)]))
    ticket = pruner.find_ticket(model)   # masks from the scores at init; the model is untouched

`snip_scores` returns the scores themselves. Gradients come from ``torch.autograd.grad``, so the
parameters' ``.grad`` fields are never touched, and buffers that the forward pass updates
(BatchNorm running statistics) are restored afterwards: the model is left exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ._model import default_weight_names

LossFn = Callable[[nn.Module, Any], torch.Tensor]


def _check_loss(loss: object, index: int) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0 or not loss.is_floating_point():
        got = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise TypeError(f"loss_fn: must return a scalar float tensor, got {got} for batches[{index}]")
    if not loss.requires_grad:
        raise ValueError(f"loss_fn: the loss of batches[{index}] does not depend on the model's weights")
    return loss


def snip_scores(
    model: nn.Module, loss_fn: LossFn, batches: Iterable[Any], names: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """SNIP's connection sensitivities ``|w * sum_b dL(b)/dw|`` of the prunable weights.

    Args:
        model: the network, usually at initialisation (it is not modified, ``.grad`` included).
        loss_fn: ``loss_fn(model, batch) -> scalar loss tensor``.
        batches: one or more minibatches, each passed to ``loss_fn`` as is.
        names: parameters to score; default the pruner's: weights of Linear and Conv layers.

    Returns:
        ``{name: scores}``, new float tensors shaped like the weights, in model order.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2))
        >>> x, y = torch.ones(4, 3), torch.tensor([0, 1, 0, 1])
        >>> s = snip_scores(net, lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]), [(x, y)])
        >>> list(s), tuple(s["0.weight"].shape)
        (['0.weight'], (2, 3))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn: expected a callable (model, batch) -> loss, got {type(loss_fn).__name__}")
    if isinstance(batches, (str, bytes)) or not isinstance(batches, Iterable):
        raise TypeError(f"batches: expected an iterable of minibatches, got {type(batches).__name__}")
    params = dict(model.named_parameters())
    chosen = [n for n in params if n in default_weight_names(model)] if names is None else list(names)
    missing = [n for n in chosen if n not in params]
    if missing:
        raise ValueError(f"names: {missing[0]!r} is not a parameter of the model")
    if not chosen:
        raise ValueError("names: no parameters to score")
    weights = [params[n] for n in chosen]
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    frozen = [w for w in weights if not w.requires_grad]
    sums = [torch.zeros_like(w, memory_format=torch.contiguous_format) for w in weights]
    count = 0
    try:
        for w in frozen:
            w.requires_grad_(True)
        with torch.enable_grad():
            for index, batch in enumerate(batches):
                loss = _check_loss(loss_fn(model, batch), index)
                grads = torch.autograd.grad(loss, weights, allow_unused=True)
                for total, grad in zip(sums, grads):
                    if grad is not None:
                        total.add_(grad)
                count += 1
    finally:
        for w in frozen:
            w.requires_grad_(False)
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(buffers[name])
    if count == 0:
        raise ValueError("batches: expected at least one minibatch, got none")
    with torch.no_grad():
        return {n: (w.detach() * total).abs() for n, w, total in zip(chosen, weights, sums)}


class Snip:
    """``importance=Snip(loss_fn, batches)``: the pruner ranks SNIP's sensitivities.

    The scores are computed when the pruner prunes, from the model's weights at that moment:
    with `LotteryTicketPruner.find_ticket` on an untrained model that is SNIP itself (one
    selection to the target with ``pruning_rounds=1``, no training). ``batches`` is kept (as a
    list) and reused at every call.
    """

    name = "snip"

    def __init__(self, loss_fn: LossFn, batches: Iterable[Any]) -> None:
        if not callable(loss_fn):
            raise TypeError(f"loss_fn: expected a callable (model, batch) -> loss, got {type(loss_fn).__name__}")
        if isinstance(batches, (str, bytes)) or not isinstance(batches, Iterable):
            raise TypeError(f"batches: expected an iterable of minibatches, got {type(batches).__name__}")
        self.loss_fn = loss_fn
        self.batches = list(batches)
        if not self.batches:
            raise ValueError("batches: expected at least one minibatch, got none")

    def model_scores(self, model: Any, weights: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """SNIP scores of ``weights`` (the pruner's prunable tensors of ``model``)."""
        return snip_scores(model, self.loss_fn, self.batches, names=list(weights))
