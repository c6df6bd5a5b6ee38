"""Optimizer step hooks that keep pruned weights at zero and count training iterations.

`StepWatcher` reacts to ``optimizer.step()`` of any optimizer that owns one of the pruned
parameters: globally (``torch.optim.optimizer.register_optimizer_step_post_hook``, so
optimizers created inside the user's training function are covered) or for one optimizer
(``attach``). An attached optimizer is skipped by the global hook, so one step counts once.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

from torch.optim.optimizer import Optimizer, register_optimizer_step_post_hook

import torch

from ._optim import unwrap_optimizer


class Handle:
    """A removable hook registration (``remove()`` is idempotent)."""

    def __init__(self, *removers: Callable[[], None]) -> None:
        self._removers = list(removers)

    def remove(self) -> None:
        while self._removers:
            self._removers.pop()()


class StepWatcher:
    """Calls ``callback()`` after each step of an optimizer that updates the pruned parameters."""

    def __init__(self, params: Sequence[torch.Tensor], callback: Callable[[], None]) -> None:
        self._ids = {id(p) for p in params}
        self._callback = callback
        self._attached: weakref.WeakSet[Optimizer] = weakref.WeakSet()
        # Optimizers seen stepping the model, so a rewind can reset their state (momentum, Adam).
        self.seen: weakref.WeakSet[Optimizer] = weakref.WeakSet()

    def owns(self, optimizer: Optimizer) -> bool:
        return any(id(p) in self._ids for group in optimizer.param_groups for p in group["params"])

    def _global_hook(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        if optimizer not in self._attached and self.owns(optimizer):
            self.seen.add(optimizer)
            self._callback()

    def _attached_hook(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        self.seen.add(optimizer)
        self._callback()

    def install_global(self) -> Handle:
        """Watch every optimizer (until the returned handle is removed)."""
        return Handle(register_optimizer_step_post_hook(self._global_hook).remove)

    def attach(self, optimizer: Any) -> Handle:
        """Watch one optimizer (or the one a trainer's wrapper forwards to); it must own at least
        one pruned parameter."""
        optimizer = unwrap_optimizer(optimizer)
        if not self.owns(optimizer):
            raise ValueError("optimizer: it updates none of the pruned parameters of this model")
        self._attached.add(optimizer)
        handle = optimizer.register_step_post_hook(self._attached_hook)
        return Handle(lambda: self._attached.discard(optimizer), handle.remove)

    def reset_optimizers(self) -> None:
        """Forget the state (momentum buffers, Adam moments, step counts) of the seen optimizers."""
        for optimizer in list(self.seen):
            optimizer.state.clear()
