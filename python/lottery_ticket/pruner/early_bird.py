"""Early-bird rounds (You et al. 2020, "Drawing Early-Bird Tickets"): end a round once the mask
the next pruning would give stops changing.

`EarlyBird` (the option, plain data in ``config``) is re-exported here; `EarlyBirdWatch` is the
state of one round: the last ``window + 1`` candidate masks and whether they have settled.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from .. import kernels
from ..config import EarlyBird

__all__ = ["EarlyBird", "EarlyBirdWatch"]


class EarlyBirdWatch:
    """Candidate masks of one round, every ``every_steps`` optimizer steps; `settled` once the
    newest is within ``tolerance`` (normalised Hamming distance) of each of the ``window`` before it.

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

    def reset(self) -> None:
        """A new round: forget the candidates."""
        self.masks.clear()
        self.distances.clear()
        self.stopped_at = None

    def distance(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
        """Fraction of the prunable weights on which masks ``a`` and ``b`` differ."""
        differ = kernels.alive_counts({n: a[n] ^ b[n] for n in a}, process_group=self.process_group)
        return sum(differ.values()) / self.total if self.total else 0.0

    def on_step(self, step: int, candidate: Callable[[], Mapping[str, Any]]) -> bool:
        """After optimizer step ``step``: every ``every_steps`` steps take ``candidate()`` (the
        mask the next pruning would give); True once the masks have settled (and from then on)."""
        if self.stopped_at is not None:
            return True
        if step < 1 or step % self.option.every_steps:
            return False
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
