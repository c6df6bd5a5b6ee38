"""Early-bird rounds (You et al. 2020, "Drawing Early-Bird Tickets"): end a round once the mask
the next pruning would give stops changing.

`EarlyBird` (the option, plain data in ``config``) is re-exported here; `EarlyBirdWatch` is the
state of one round: the last ``window + 1`` candidate masks and whether they have settled.
"""

from __future__ import annotations

import numbers
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from .. import kernels
from .._validation import integer, real
from ..config import EarlyBird

__all__ = ["EarlyBird", "EarlyBirdWatch", "check_watch_state"]


class EarlyBirdWatch:
    """Candidate masks of one round, every ``every_steps`` optimizer steps; `settled` once the
    newest is within ``tolerance`` (normalised Hamming distance) of each of the ``window`` before it.

    A step is checked once, however often it is reported (a trainer callback reports its step
    count before and after each optimizer step, and again for steps mixed precision skipped).

    Args:
        option: the `EarlyBird` setting.
        total: the number of prunable weights (the distance's denominator).
        process_group: counts differing weights over all ranks when the model is sharded.
    """

    def __init__(self, option: EarlyBird, total: int, process_group: Any = None) -> None:
        self.option, self.total, self.process_group = option, total, process_group
        self.masks: deque[dict[str, Any]] = deque(maxlen=option.window + 1)
        self.distances: list[float] = []  # the newest's largest distance, at each check
        self.stopped_at: int | None = None
        self.checked: int | None = None  # the last step a candidate was taken at

    def reset(self) -> None:
        """A new round: forget the candidates."""
        self.masks.clear()
        self.distances.clear()
        self.stopped_at = self.checked = None

    def distance(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
        """Fraction of the prunable weights on which masks ``a`` and ``b`` differ."""
        differ = kernels.alive_counts({n: a[n] ^ b[n] for n in a}, process_group=self.process_group)
        return sum(differ.values()) / self.total if self.total else 0.0

    def on_step(self, step: int, candidate: Callable[[], Mapping[str, Any]]) -> bool:
        """After optimizer step ``step``: every ``every_steps`` steps take ``candidate()`` (the
        mask the next pruning would give); True once the masks have settled (and from then on)."""
        if self.stopped_at is not None:
            return True
        if step < 1 or step % self.option.every_steps or step == self.checked:
            return False
        self.checked = step
        self.masks.append(dict(candidate()))
        if len(self.masks) <= self.option.window:
            return False
        newest = self.masks[-1]
        worst = max(self.distance(newest, old) for old in list(self.masks)[:-1])
        self.distances.append(worst)
        if worst < self.option.tolerance:
            self.stopped_at = step
            return True
        return False

    def columns(self, steps: int) -> dict[str, float]:
        """A round's ``ticket.metrics`` columns: the step its mask settled at (or ``steps``, the
        steps it trained) and whether it settled."""
        stop = self.stopped_at
        return {
            "early_bird_step": float(steps if stop is None else stop),
            "early_bird_stopped": float(stop is not None),
        }

    def state(self) -> dict[str, Any]:
        """The round so far as plain values (candidates as the model's mask arrays)."""
        return {
            "candidates": [dict(m) for m in self.masks],
            "distances": list(self.distances),
            "stopped_at": self.stopped_at,
            "checked": self.checked,
        }

    def restore(self, state: Mapping[str, Any] | None, candidates: list[dict[str, Any]]) -> None:
        """Continue from `state` (checked by `check_watch_state`) with ``candidates`` (its
        candidates placed like the model's masks); None (a state written before the watch was
        saved) starts the round's window afresh."""
        self.reset()
        if state is None:
            return
        self.masks.extend(candidates)
        self.distances = list(state["distances"])
        self.stopped_at, self.checked = state["stopped_at"], state["checked"]


def check_watch_state(value: object, arg: str) -> dict[str, Any] | None:
    """`EarlyBirdWatch.state` read back (e.g. from a checkpoint): the same shape, or ValueError naming ``arg``."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != {"candidates", "distances", "stopped_at", "checked"}:
        raise ValueError(f"{arg}: expected the early-bird state (candidates, distances, stopped_at, checked)")
    candidates, distances = value["candidates"], value["distances"]
    if not isinstance(candidates, list) or not all(isinstance(c, Mapping) for c in candidates):
        raise ValueError(f"{arg}['candidates']: expected a list of masks by name")
    if not isinstance(distances, list) or not all(isinstance(d, numbers.Real) for d in distances):
        raise ValueError(f"{arg}['distances']: expected a list of numbers")
    steps = {
        k: None if value[k] is None else integer(value[k], f"{arg}[{k!r}]", at_least=1, type_error=ValueError)
        for k in ("stopped_at", "checked")
    }
    return {
        "candidates": [{str(n): m for n, m in c.items()} for c in candidates],
        "distances": [real(d, f"{arg}['distances']", low=0.0, high=1.0) for d in distances],
        **steps,
    }
