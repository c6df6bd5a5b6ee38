"""`PrunerBuilder`: the design document's fluent construction of a `LotteryTicketPruner`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config import NameFilter, RewindStrategy

if TYPE_CHECKING:
    from . import LotteryTicketPruner


class PrunerBuilder:
    """``LotteryTicketPruner.builder().target_sparsity(0.95).pruning_rounds(15).build()``: every
    keyword of `LotteryTicketPruner` as a method; ``build`` validates like the constructor."""

    def __init__(self, make: Callable[..., LotteryTicketPruner]) -> None:
        self._make = make
        self._values: dict[str, Any] = {}

    def _set(self, key: str, value: Any) -> PrunerBuilder:
        self._values[key] = value
        return self

    def target_sparsity(self, value: float) -> PrunerBuilder:
        return self._set("target_sparsity", value)

    def pruning_rounds(self, value: int) -> PrunerBuilder:
        return self._set("pruning_rounds", value)

    def rewind_strategy(self, value: RewindStrategy | str) -> PrunerBuilder:
        return self._set("rewind_strategy", value)

    def global_pruning(self, value: bool) -> PrunerBuilder:
        return self._set("global_pruning", value)

    def iterations_per_round(self, value: int) -> PrunerBuilder:
        return self._set("iterations_per_round", value)

    def include(self, value: NameFilter) -> PrunerBuilder:
        return self._set("include", value)

    def exclude(self, value: NameFilter) -> PrunerBuilder:
        return self._set("exclude", value)

    def importance(self, value: Any) -> PrunerBuilder:
        """``"magnitude"``, ``"random"``, a scorer (e.g. ``lottery_ticket.torch.Snip``) or a callable."""
        return self._set("importance", value)

    def seed(self, value: int) -> PrunerBuilder:
        return self._set("seed", value)

    def process_group(self, value: Any) -> PrunerBuilder:
        return self._set("process_group", value)

    def snapshot_device(self, value: Any) -> PrunerBuilder:
        return self._set("snapshot_device", value)

    def layer_rates(self, value: Any) -> PrunerBuilder:
        """``{glob pattern: rate per round}``: matching tensors are pruned alone at their own rate."""
        return self._set("layer_rates", value)

    def early_bird(self, value: Any) -> PrunerBuilder:
        """An `EarlyBird`: rounds end once the next pruning's mask has settled."""
        return self._set("early_bird", value)

    def build(self) -> LotteryTicketPruner:
        """The pruner; ``target_sparsity`` and ``pruning_rounds`` must have been set."""
        missing = [k for k in ("target_sparsity", "pruning_rounds") if k not in self._values]
        if missing:
            raise ValueError(f"{missing[0]}: not set on the builder")
        return self._make(**self._values)
