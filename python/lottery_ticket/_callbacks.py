"""What the Lightning and Hugging Face callbacks share: argument checks and `RoundDriver`, the IMP
schedule driven by a trainer's epoch or step counter (or a fixed ticket kept during fine-tuning).

Framework-free: the callbacks pass in the model, optimizers and scheduler their trainer built, the
trainer's step counter, the round it has reached, and a gather function for the cross-rank mask
check.

One step is one step of the trainer's counter (``global_step``): it counts optimizer steps that
mixed precision skips (a ``GradScaler`` finding inf gradients), which no optimizer hook sees, so
the pruner's step count is set from it before each step and before each prune.
"""

from __future__ import annotations

import dataclasses
import hashlib
import numbers
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from . import kernels
from ._validation import integer, optional_path
from .config import LotteryTicketConfig
from .pruner import LotteryTicketPruner, RunState
from .ticket import RESERVED_METRICS, Ticket, metrics_row

TICKET_NAME = "lottery-ticket.safetensors"


def as_pruner(pruner_or_config: object) -> tuple[LotteryTicketPruner, Ticket | None]:
    """A pruner as given, a new one for a `LotteryTicketConfig`, or one keeping a `Ticket` fixed
    (then also the ticket)."""
    if isinstance(pruner_or_config, LotteryTicketPruner):
        return pruner_or_config, None
    if isinstance(pruner_or_config, LotteryTicketConfig):
        return LotteryTicketPruner.with_config(pruner_or_config), None
    if isinstance(pruner_or_config, Ticket):
        return LotteryTicketPruner.with_config(pruner_or_config.config), pruner_or_config
    raise TypeError(
        "pruner_or_config: expected a LotteryTicketPruner, a LotteryTicketConfig or a Ticket, "
        f"got {type(pruner_or_config).__name__}"
    )


def positive_int(value: object, arg: str) -> int:
    return integer(value, arg, at_least=1)


def round_length(epochs_per_round: object, steps_per_round: object) -> tuple[str, int]:
    """``("epochs", E)`` or ``("steps", S)``: exactly one of the two must be given."""
    if (epochs_per_round is None) == (steps_per_round is None):
        raise ValueError("epochs_per_round, steps_per_round: pass exactly one of them (the length of an IMP round)")
    if epochs_per_round is not None:
        return "epochs", positive_int(epochs_per_round, "epochs_per_round")
    return "steps", positive_int(steps_per_round, "steps_per_round")


def check_path(value: object, arg: str) -> str | os.PathLike[str] | None:
    return optional_path(value, arg)


def mask_digest(masks: Mapping[str, Any]) -> int:
    """A signed 64-bit digest of the masks (names, shapes, bits): equal on ranks with equal masks."""
    h = hashlib.sha256()
    for name, mask in masks.items():
        arr = np.asarray(mask, dtype=np.bool_)
        h.update(f"{name}|{arr.shape}|".encode())
        h.update(np.packbits(arr.ravel()).tobytes())
    return int.from_bytes(h.digest()[:8], "little", signed=True)


def scalar_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """The real-valued scalars of ``values`` (tensors with one element included) as floats."""
    out: dict[str, float] = {}
    for key, value in values.items():
        if not isinstance(key, str) or key in RESERVED_METRICS or key.startswith("lottery_ticket/"):
            continue
        if hasattr(value, "numel") and value.numel() == 1:
            value = value.item()
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            out[key] = float(value)
    return out


class RoundDriver:
    """Moves a pruner through its rounds as a trainer's counter advances.

    ``advance_to(r)`` finishes the rounds before ``r``: records each round's metrics row, prunes,
    checks that every rank computed the same masks, and rewinds (model state, optimizer state,
    scheduler) as the strategy says. With a ``ticket`` there are no rounds: its masks are applied
    at the start (after its snapshot, when it has one) and kept through every optimizer step.
    """

    def __init__(self, pruner: LotteryTicketPruner, ticket: Ticket | None = None) -> None:
        self.pruner, self.ticket = pruner, ticket
        self.rows: list[dict[str, Any]] = []
        self.pending: dict[str, float] = {}
        self.started = False
        self.round_start = 0  # the trainer's step count when the current round began
        self._optimizers: list[Any] = []
        self._handles: list[Any] = []

    def start(
        self,
        model: Any,
        optimizers: Iterable[Any],
        *,
        scheduler: Any,
        iterations_per_round: int | None,
        state: Mapping[str, Any] | None,
        global_step: int,
    ) -> None:
        """Track ``model`` (its state now is W0) and keep its pruned weights at zero after every step of
        the (unwrapped) optimizers that update them; ``state`` (from `state_dict`) resumes a run
        whose trainer is at ``global_step``."""
        optimizers = [o for o in optimizers if o is not None]
        if not optimizers:
            raise ValueError("optimizer: the trainer has no optimizer to keep the pruned weights at zero")
        saved = self._checked(state)
        pruner, ticket = self.pruner, self.ticket
        if ticket is not None:
            # Resumed: the trainer restored the trained weights, which the ticket's snapshot would undo.
            pruner.apply_ticket(model, ticket if saved is None else dataclasses.replace(ticket, snapshot={}))
        else:
            pruner.start(model, optimizer=optimizers[0], scheduler=scheduler, iterations_per_round=iterations_per_round)
        self.rows, self.pending = [], {}  # a callback used for a second fit starts afresh
        if saved is not None:
            assert state is not None
            pruner.restore(saved, arg="checkpoint callback state")
            self.rows = [dict(r) for r in state["rows"]]
            self.pending = {str(k): float(v) for k, v in dict(state["pending"]).items()}
        self.round_start = global_step - (saved.step if saved is not None else 0)
        handles = []
        for opt in optimizers:
            try:
                handles.append(pruner.attach(opt))
            except ValueError:
                continue  # an optimizer of other parameters (a GAN's second one): not ours to mask
        if not handles:
            raise ValueError("optimizer: none of the trainer's optimizers updates the pruned parameters")
        self._handles, self._optimizers, self.started = handles, optimizers, True

    def _checked(self, state: Mapping[str, Any] | None) -> RunState | None:
        if state is None:
            return None
        if not isinstance(state, Mapping) or not {"pruner", "rows", "pending"} <= set(state):
            raise ValueError("checkpoint: the lottery-ticket callback state is incomplete")
        saved = RunState.from_dict(state["pruner"], "checkpoint callback state")
        if self.ticket is not None:
            masks = self.ticket.masks
            if list(saved.masks) != list(masks) or not all(
                np.array_equal(np.asarray(saved.masks[n]), m) for n, m in masks.items()
            ):
                raise ValueError("checkpoint: it was written while fine-tuning another ticket (masks differ)")
        return saved

    def sync(self, global_step: int) -> None:
        """Set the pruner's step count from the trainer's (skipped optimizer steps included)."""
        if self.ticket is None:
            self.pruner.on_step(iteration=global_step - self.round_start)

    def observe(self, metrics: Mapping[str, Any]) -> None:
        """Remember the latest metrics of the current round (its row's extra columns)."""
        self.pending.update(scalar_metrics(metrics))

    def _row(self) -> dict[str, Any]:
        remaining = sum(kernels.alive_counts(self.pruner.masks).values())
        return metrics_row(self.pruner.round, self.pruner.density, remaining, self.pending)

    def advance_to(
        self, target_round: int, gather: Callable[[int], list[int]], global_step: int
    ) -> list[dict[str, Any]]:
        """Prune and rewind until ``target_round`` rounds are done (capped at ``pruning_rounds``);
        returns the rows of the rounds it finished."""
        pruner = self.pruner
        finished = []
        self.sync(global_step)
        while pruner.round < min(target_round, pruner.config.pruning_rounds):
            finished.append(self._row())
            pruner.prune()
            digest = mask_digest(pruner.masks)
            digests = gather(digest)
            if any(d != digest for d in digests):
                raise RuntimeError(
                    f"distributed: ranks computed different masks in round {pruner.round} (digests {digests}); "
                    "their weights differ, so the model is not replicated"
                )
            pruner.rewind()
            for opt in self._optimizers:
                opt.state.clear()
            self.pending = {}
            self.round_start = global_step
        self.rows.extend(finished)
        return finished

    def detach(self) -> None:
        """Stop masking after optimizer steps (the trainer is done with the model)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def finish(self) -> tuple[Ticket, dict[str, Any] | None]:
        """Detach the hooks; the ticket (with one metrics row per round trained) and the last row.

        A fixed ticket comes back with its own rows and one more for the fine-tuning."""
        self.detach()
        last = None
        if len(self.rows) == self.pruner.round or self.ticket is not None:
            last = self._row()
            self.rows.append(last)
        rows = [*(self.ticket.metrics if self.ticket is not None else []), *self.rows]
        return dataclasses.replace(self.pruner.ticket(), metrics=[dict(r) for r in rows]), last

    def state_dict(self) -> dict[str, Any]:
        if not self.started:
            return {}
        return {
            "pruner": self.pruner.run_state().to_dict(),
            "rows": [dict(r) for r in self.rows],
            "pending": dict(self.pending),
        }
