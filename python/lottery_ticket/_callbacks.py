"""What the Lightning and Hugging Face callbacks share: argument checks and `RoundDriver`, the IMP
schedule driven by a trainer's epoch or step counter (or a fixed ticket kept during fine-tuning).

Framework-free: the callbacks pass in the model, optimizers and scheduler their trainer built, the
trainer's step counter, the round it has reached, and a gather function for the cross-rank mask
check.

One step is one step of the trainer's counter (``global_step``): it counts optimizer steps that
mixed precision skips (a ``GradScaler`` finding inf gradients), which no optimizer hook sees, so
the pruner's step count is set from it before each step and before each prune. The `EarlyBird`
check runs on that count: after each optimizer step (the pruner's hook) and, for a skipped
step, when the count is next set; a step is checked once.
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
    """Moves a pruner through its rounds as a trainer's counters advance.

    A round lasts ``per_round`` steps or epochs (``unit``), or less with `EarlyBird`: once the
    pruner's ``should_stop`` turns True the round is over (a round of epochs at the end of the
    epoch in which the mask settled), and the last round always trains in full. `advance`
    finishes a round that is over: records its metrics row, prunes, checks that every rank
    computed the same masks, and rewinds (model state, optimizer state, scheduler) as the
    strategy says. With a ``ticket`` there are no rounds: its masks are applied at the start
    (after its snapshot, when it has one) and kept through every optimizer step.
    """

    def __init__(
        self, pruner: LotteryTicketPruner, ticket: Ticket | None = None, *, unit: str = "steps", per_round: int = 1
    ) -> None:
        self.pruner, self.ticket = pruner, ticket
        self.unit, self.per_round = ("fixed" if ticket is not None else unit), per_round
        self.rows: list[dict[str, Any]] = []
        self.pending: dict[str, float] = {}
        self.started = False
        self.round_start = 0  # the trainer's step count when the current round began
        self.round_start_epoch = 0  # and its epoch (rounds of epochs)
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
        epoch: int = 0,
    ) -> None:
        """Track ``model`` (its state now is W0) and keep its pruned weights at zero after every step of
        the (unwrapped) optimizers that update them; ``state`` (from `state_dict`) resumes a run
        whose trainer is at ``global_step`` and ``epoch``; without it, round 0 begins there."""
        optimizers = [o for o in optimizers if o is not None]
        if not optimizers:
            raise ValueError("optimizer: the trainer has no optimizer to keep the pruned weights at zero")
        saved = self._checked(state, global_step)
        pruner, ticket = self.pruner, self.ticket
        if ticket is not None:
            # Resumed: the trainer restored the trained weights, which the ticket's snapshot would undo.
            pruner.apply_ticket(model, ticket if saved is None else dataclasses.replace(ticket, snapshot={}))
        else:
            pruner.start(model, optimizer=optimizers[0], scheduler=scheduler, iterations_per_round=iterations_per_round)
        self.rows, self.pending = [], {}  # a callback used for a second fit starts afresh
        self.round_start, self.round_start_epoch = global_step, epoch
        if saved is not None:
            assert state is not None
            pruner.restore(saved, arg="checkpoint callback state")
            self.rows = [dict(r) for r in state["rows"]]
            self.pending = {str(k): float(v) for k, v in dict(state["pending"]).items()}
            # States written before rounds could end early: round r began at step/epoch r * per_round.
            self.round_start = int(state.get("round_start", global_step - saved.step))
            self.round_start_epoch = int(state.get("round_start_epoch", saved.round * self.per_round))
        handles = []
        for opt in optimizers:
            try:
                handles.append(pruner.attach(opt))
            except ValueError:
                continue  # an optimizer of other parameters (a GAN's second one): not ours to mask
        if not handles:
            raise ValueError("optimizer: none of the trainer's optimizers updates the pruned parameters")
        self._handles, self._optimizers, self.started = handles, optimizers, True

    def _checked(self, state: Mapping[str, Any] | None, global_step: int) -> RunState | None:
        if state is None:
            return None
        if not isinstance(state, Mapping) or not {"pruner", "rows", "pending"} <= set(state):
            raise ValueError("checkpoint: the lottery-ticket callback state is incomplete")
        for key in ("round_start", "round_start_epoch"):
            if key in state:
                integer(state[key], f"checkpoint: the callback state's {key}", at_least=0, type_error=ValueError)
        if state.get("round_start", 0) > global_step:
            raise ValueError(f"checkpoint: its round began at step {state['round_start']}, after step {global_step}")
        saved = RunState.from_dict(state["pruner"], "checkpoint callback state")
        if self.ticket is not None:
            masks = self.ticket.masks
            if list(saved.masks) != list(masks) or not all(
                np.array_equal(np.asarray(saved.masks[n]), m) for n, m in masks.items()
            ):
                raise ValueError("checkpoint: it was written while fine-tuning another ticket (masks differ)")
        return saved

    def sync(self, global_step: int) -> None:
        """Set the pruner's step count from the trainer's (skipped optimizer steps included); with
        `EarlyBird` this also checks the mask at a step whose optimizer step was skipped."""
        if self.ticket is None:
            self.pruner.on_step(iteration=global_step - self.round_start)

    def observe(self, metrics: Mapping[str, Any]) -> None:
        """Remember the latest metrics of the current round (its row's extra columns)."""
        self.pending.update(scalar_metrics(metrics))

    def _row(self) -> dict[str, Any]:
        remaining = sum(kernels.alive_counts(self.pruner.masks).values())
        row = metrics_row(self.pruner.round, self.pruner.density, remaining, self.pending)
        return {**row, **self.pruner.early_bird_columns()}

    def _trained(self, global_step: int, epochs_done: int) -> int:
        """Steps or epochs the current round has trained."""
        return epochs_done - self.round_start_epoch if self.unit == "epochs" else global_step - self.round_start

    def round_over(self, global_step: int, epochs_done: int = 0) -> bool:
        """True when the current round, not the last, is done: trained in full or, with
        `EarlyBird`, its mask settled. ``epochs_done``: epochs finished (rounds of epochs)."""
        pruner = self.pruner
        if self.unit == "fixed" or pruner.round >= pruner.config.pruning_rounds:
            return False
        return pruner.should_stop or self._trained(global_step, epochs_done) >= self.per_round

    def fit_done(self, global_step: int, epochs_done: int = 0) -> bool:
        """True once the last round has trained in full: the trainer may stop."""
        pruner = self.pruner
        if self.unit == "fixed" or pruner.round < pruner.config.pruning_rounds:
            return False
        return self._trained(global_step, epochs_done) >= self.per_round

    def advance(
        self, gather: Callable[[int], list[int]], global_step: int, epochs_done: int = 0
    ) -> list[dict[str, Any]]:
        """Prune and rewind while the current round is over (`round_over`); returns the rows of the
        rounds it finished. The next round begins at ``global_step`` (and ``epochs_done``)."""
        pruner = self.pruner
        finished = []
        self.sync(global_step)
        while self.round_over(global_step, epochs_done):
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
            self.round_start, self.round_start_epoch = global_step, epochs_done
        self.rows.extend(finished)
        return finished

    def detach(self) -> None:
        """Stop masking after optimizer steps (the trainer is done with the model)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def finish(self, global_step: int) -> tuple[Ticket, dict[str, Any] | None]:
        """Detach the hooks; the ticket (with one metrics row per round trained) and the last row.

        A fixed ticket comes back with its own rows and one more for the fine-tuning."""
        self.detach()
        self.sync(global_step)
        last = None
        if len(self.rows) == self.pruner.round or self.ticket is not None:
            last = self._row()
            self.rows.append(last)
        rows = [*(self.ticket.metrics if self.ticket is not None else []), *self.rows]
        return dataclasses.replace(self.pruner.ticket(), metrics=[dict(r) for r in rows]), last

    def progress(self) -> dict[str, Any]:
        """Where the rounds stand besides the pruner's state: rows, pending metrics, round start."""
        return {
            "rows": [dict(r) for r in self.rows],
            "pending": dict(self.pending),
            "round_start": self.round_start,
            "round_start_epoch": self.round_start_epoch,
        }

    def state_dict(self) -> dict[str, Any]:
        if not self.started:
            return {}
        return {"pruner": self.pruner.run_state().to_dict(), **self.progress()}
