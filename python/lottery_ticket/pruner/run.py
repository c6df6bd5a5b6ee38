"""The state of one IMP run, built in one place: fresh (`Run.start`), from a ticket or from a checkpoint.

The pruner holds at most one `Run`; everything that changes while it prunes and rewinds lives
here, next to the configuration it was started with, so a run never mixes two configurations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import kernels
from ..adapters import ModelAdapter, StepWatcher
from ..config import LotteryTicketConfig, RewindStrategy
from ..ticket import Ticket

# (scheduler.state_dict() or None, [lr of each optimizer param group] or None)
ScheduleState = tuple[Any, Any]


def check_schedule_args(optimizer: Any, scheduler: Any) -> None:
    """Refuse what is neither None nor an optimizer (``param_groups``, ``state``) / an LR scheduler
    (``state_dict``, ``load_state_dict``), before anything is modified."""
    if optimizer is not None and not (hasattr(optimizer, "param_groups") and hasattr(optimizer, "state")):
        raise TypeError(
            f"optimizer: expected a torch.optim.Optimizer (param_groups, state), got {type(optimizer).__name__}"
        )
    if scheduler is not None and not (hasattr(scheduler, "state_dict") and hasattr(scheduler, "load_state_dict")):
        raise TypeError(
            f"scheduler: expected a learning-rate scheduler (state_dict, load_state_dict), got {type(scheduler).__name__}"
        )


def schedule_state(optimizer: Any, scheduler: Any) -> ScheduleState:
    """What a rewind restores of the learning-rate schedule."""
    lrs = [g["lr"] for g in optimizer.param_groups] if optimizer is not None else None
    return (scheduler.state_dict() if scheduler is not None else None), lrs


def restore_schedule(saved: ScheduleState, optimizer: Any, scheduler: Any) -> None:
    sched_state, lrs = saved
    if scheduler is not None:
        if sched_state is None:
            raise ValueError("scheduler: pass it to start() too, so its state can be rewound")
        scheduler.load_state_dict(sched_state)
    if optimizer is not None and lrs is not None:
        for group, lr in zip(optimizer.param_groups, lrs):
            group["lr"] = lr


def capture_step(strategy: RewindStrategy, steps: int | None) -> int | None:
    """The optimizer step whose weights the rewind snapshot holds (None: trained weights are kept).

    ``late(f)`` needs T (``steps``) up front: its snapshot is taken during round 0, before T is known.
    """
    if strategy.kind == "early":
        return strategy.iteration
    if strategy.kind == "late":
        if steps is None:
            raise ValueError("iterations_per_round: late(fraction) needs T, the optimizer steps per round")
        return round(float(strategy.fraction or 0.0) * steps)
    return None


def count_weights(prunable: dict[str, Any]) -> int:
    return sum(int(np.prod(tuple(w.shape), dtype=np.int64)) for w in prunable.values())


@dataclass
class Run:
    """One run of the pruner over one model.

    ``capture_step`` is the optimizer step whose weights the rewind snapshot holds (None: the
    strategy keeps trained weights); ``snapshot`` stays None in round 0 until that step.
    """

    config: LotteryTicketConfig
    adapter: ModelAdapter
    masks: dict[str, Any]
    total: int
    alive: int
    capture_step: int | None
    snapshot: dict[str, Any] | None
    watcher: StepWatcher | None
    round: int = 0
    step: int = 0
    steps_round0: int | None = None
    history: list[float] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    optimizer: Any = None
    scheduler: Any = None
    # The schedule as it was at the start, and as it was when step k+1 ran (what W_k resumes with).
    schedule_start: ScheduleState = (None, None)
    schedule_at_capture: ScheduleState = (None, None)
    schedule_pending: bool = False
    applier: kernels.MaskApplier | None = None
    snapshot_device: str | None = None  # where rewind snapshots are kept (None: beside the weights)

    @classmethod
    def start(
        cls,
        config: LotteryTicketConfig,
        adapter: ModelAdapter,
        capture_step: int | None,
        optimizer: Any,
        scheduler: Any,
        on_step: Any,
        snapshot_device: str | None = None,
    ) -> Run:
        """A fresh run: all weights alive, W0 snapshotted now unless the snapshot comes later."""
        total = count_weights(adapter.prunable)
        schedule = schedule_state(optimizer, scheduler)
        return cls(
            config=config,
            adapter=adapter,
            masks=adapter.full_masks(),
            total=total,
            alive=total,
            capture_step=capture_step,
            snapshot=(adapter.state() if snapshot_device is None else adapter.state(device=snapshot_device))
            if capture_step in (None, 0)
            else None,
            watcher=adapter.step_watcher(on_step),
            optimizer=optimizer,
            scheduler=scheduler,
            schedule_start=schedule,
            schedule_at_capture=schedule,
            snapshot_device=snapshot_device,
        )

    @classmethod
    def from_ticket(cls, adapter: ModelAdapter, ticket: Ticket, on_step: Any) -> Run:
        """The run a ticket finished: its configuration, masks, snapshot, history, all rounds done."""
        return cls(
            config=ticket.config,
            adapter=adapter,
            masks=adapter.masks_from_numpy(ticket.masks),
            total=ticket.total_parameters,
            alive=ticket.remaining_parameters,
            capture_step=ticket.rewind_iteration,
            snapshot=dict(ticket.snapshot),
            watcher=adapter.step_watcher(on_step),
            round=ticket.config.pruning_rounds,
            steps_round0=ticket.iterations_per_round,
            history=list(ticket.sparsity_history),
        )

    def resume(self, ticket: Ticket, resume: dict[str, Any]) -> int:
        """Continue from a checkpoint's ticket and resume record; returns the next round to train."""
        self.masks = self.adapter.masks_from_numpy(ticket.masks)
        self.round, self.step, self.capture_step = resume["round"], resume["step"], resume["capture_step"]
        self.alive = ticket.remaining_parameters
        self.snapshot, self.steps_round0 = ticket.snapshot, ticket.iterations_per_round
        self.history, self.metrics = list(ticket.sparsity_history), list(ticket.metrics)
        return int(resume["next_round"])

    def resume_record(self, next_round: int) -> dict[str, Any]:
        """What `resume` needs besides the ticket."""
        return {"next_round": next_round, "round": self.round, "step": self.step, "capture_step": self.capture_step}

    def take_snapshot(self) -> dict[str, Any]:
        """The whole model state now, kept on ``snapshot_device``."""
        if self.snapshot_device is None:
            return self.adapter.state()
        return self.adapter.state(device=self.snapshot_device)

    def reapply_masks(self) -> None:
        """Zero the pruned weights; validates once per set of masks, not once per optimizer step."""
        applier = self.applier
        # A storage swapped under a parameter (`p.data = ...`) needs fresh views, not an error.
        if (
            applier is None
            or applier.masks is not self.masks
            or applier.weights is not self.adapter.prunable
            or not applier.is_current()
        ):
            self.applier = applier = kernels.MaskApplier(self.adapter.prunable, self.masks)
        applier()

    def save_schedule_if_pending(self) -> None:
        if self.schedule_pending:
            self.schedule_at_capture, self.schedule_pending = schedule_state(self.optimizer, self.scheduler), False
