"""What one torch-op selection (`_select`) sees: its pieces (a tensor, or this rank's shard of
one) and how its processes agree (`Ranks`; `OneProcess` where there is one)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class Piece:
    """One local tensor as the selection sees it (a whole tensor, or this rank's shard of one)."""

    weight: torch.Tensor  # flat, any supported float dtype
    alive: torch.Tensor | None  # flat bool (None: all alive)
    label: str  # how errors name it, e.g. "weights['fc.weight']"
    counted: bool = True  # False: a replica whose twin on another rank is counted instead
    offset: int = 0  # flat offset of a shard in its whole tensor (orders ties across shards)
    # A shard that is not one contiguous run of its whole tensor's flat order (Shard(d), d > 0):
    # (local shape, global offset, global shape), to place its ties in whole-tensor order.
    block: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None


class Ranks(Protocol):
    """How the selection agrees across processes (one process: every call is trivial)."""

    distributed: bool

    def all_reduce(self, t: torch.Tensor, *, op: str = "sum") -> None: ...

    def tie_budgets(
        self,
        ties: torch.Tensor,
        local_ties: torch.Tensor | None,
        count_ties: Callable[[], torch.Tensor],
        tied_at: Callable[[int], torch.Tensor],
    ) -> list[torch.Tensor] | torch.Tensor:
        """Ties each piece prunes: a list (one start budget per piece) or one running budget.
        ``tied_at(i)``: local flat positions of piece i's alive keys at the threshold, ascending."""
        ...

    def foreign_nan(self) -> str: ...


class OneProcess:
    distributed = False

    def all_reduce(self, t: torch.Tensor, *, op: str = "sum") -> None:
        pass

    def tie_budgets(
        self,
        ties: torch.Tensor,
        local_ties: torch.Tensor | None,
        count_ties: Callable[[], torch.Tensor],
        tied_at: Callable[[int], torch.Tensor],
    ) -> torch.Tensor:
        return ties

    def foreign_nan(self) -> str:  # pragma: no cover - one process always finds its own NaN
        return "weights: contain NaN among alive weights"


def budget_list(budgets: list[torch.Tensor] | torch.Tensor, tied: list[torch.Tensor]) -> list[int]:
    """Ties each piece prunes, from `Ranks.tie_budgets`' answer: a per-piece list, or one
    running budget spent in piece order."""
    if not isinstance(budgets, torch.Tensor):
        return [int(b) for b in budgets]
    left, out = int(budgets), []
    for t in tied:
        out.append(min(left, t.numel()))
        left -= out[-1]
    return out
