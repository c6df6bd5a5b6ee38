"""The torch optimizer inside the wrappers trainers hand out.

Trainers rarely expose the ``torch.optim.Optimizer`` itself: accelerate (and so the Hugging Face
``Trainer``) hands out an ``AcceleratedOptimizer``, Lightning a ``LightningOptimizer``, DeepSpeed
its ``DeepSpeedOptimizer`` subclasses. Each forwards ``step()`` to the optimizer it wraps, so
hooks and state resets belong on that inner optimizer: accelerate's wrapper subclasses
``Optimizer`` without running its ``__init__`` (no hook tables: ``register_step_post_hook``
fails with ``AttributeError``), and Lightning's copies the inner ``__dict__`` under another
identity (the inner optimizer's hooks then see a different object than the one attached).

The wrappers are recognised by shape, not imported: the library never imports a trainer.
"""

from __future__ import annotations

from typing import Any

from torch.optim.optimizer import Optimizer

# Wrapper chains are one or two deep (LightningOptimizer -> AcceleratedOptimizer -> Optimizer in
# Fabric); a longer chain means an attribute cycle, not a wrapper.
_MAX_DEPTH = 8


def _is_initialised_optimizer(value: object) -> bool:
    # Optimizer.__init__ creates the per-instance hook tables; wrappers that skip it lack them.
    return isinstance(value, Optimizer) and "_optimizer_step_post_hooks" in vars(value)


def _inner(value: object) -> object | None:
    """The optimizer a wrapper forwards to: ``_optimizer`` (Lightning) or ``optimizer`` (accelerate,
    DeepSpeed); None for a plain optimizer."""
    inner: object = getattr(value, "_optimizer", None)
    if inner is not None and inner is not value and hasattr(inner, "param_groups"):
        return inner
    if _is_initialised_optimizer(value):
        # A real optimizer may own an `optimizer` attribute (Lookahead-style); it is hooked itself.
        return None
    inner = getattr(value, "optimizer", None)
    return inner if inner is not None and inner is not value else None


def unwrap_optimizer(optimizer: Any, arg: str = "optimizer") -> Optimizer:
    """The ``torch.optim.Optimizer`` that ``optimizer`` is or wraps (accelerate, Lightning, DeepSpeed).

    Raises:
        TypeError: neither an optimizer nor a wrapper of one (the message names ``arg``).

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
        >>> unwrap_optimizer(opt) is opt
        True
    """
    current: object = optimizer
    for _ in range(_MAX_DEPTH):
        inner = _inner(current)
        if inner is None:
            break
        current = inner
    if not _is_initialised_optimizer(current):
        raise TypeError(
            f"{arg}: expected a torch.optim.Optimizer or a wrapper of one (accelerate's "
            f"AcceleratedOptimizer, Lightning's LightningOptimizer, DeepSpeed's), got {type(optimizer).__name__}"
        )
    assert isinstance(current, Optimizer)
    return current
