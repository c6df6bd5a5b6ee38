"""Pausing Python's cyclic garbage collector for the length of one kernel call."""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def gc_paused(call: Callable[P, R]) -> Callable[P, R]:
    """``call`` with the cyclic collector paused while it runs, and restored after, errors too.

    A call over many tensors makes a few small container objects per tensor and no reference
    cycles, yet each collection those allocations trigger walks every tracked object of the
    process: with tens of thousands of tensors the collections, not the work, made a call
    grow faster than the tensor count. A collector the caller disabled stays disabled; threads
    calling at once can only re-enable it early, which costs time, never memory.
    """

    @functools.wraps(call)
    def paused(*args: P.args, **kwargs: P.kwargs) -> R:
        if not gc.isenabled():
            return call(*args, **kwargs)
        gc.disable()
        try:
            return call(*args, **kwargs)
        finally:
            gc.enable()

    return paused
