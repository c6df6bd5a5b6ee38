"""The state of one IMP run, built in one place: fresh (`Run.start`), from a ticket or from a checkpoint.

The pruner holds at most one `Run`; everything that changes while it prunes and rewinds lives
here, next to the configuration it was started with, so a run never mixes two configurations.
"""

from __future__ import annotations

import copy
import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import kernels
from ..adapters import ModelAdapter, StepWatcher, adapter_for
from ..config import LotteryTicketConfig, RewindStrategy
from ..ticket import Ticket
from .early_bird import EarlyBirdWatch, check_watch_state

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


def _masks_by_tensor(model: Any, prunable: Mapping[str, Any], masks: Mapping[str, Any]) -> dict[str, Any]:
    """``masks`` keyed like ``prunable`` (a tied alias resolves to its tensor's name), shapes checked."""
    out: dict[str, Any] = {}
    for name, mask in masks.items():
        key = name if name in prunable else next(iter(adapter_for(model, names=[name]).prunable))
        if tuple(mask.shape) != tuple(prunable[key].shape):
            raise ValueError(f"ticket.masks[{name!r}]: shape {tuple(mask.shape)} differs from the model's")
        if key in out and not np.array_equal(out[key], mask):
            raise ValueError(f"ticket.masks[{name!r}]: a tied name of {key!r} with a different mask")
        out[key] = mask
    return {n: out[n] for n in prunable}


def count_weights(prunable: dict[str, Any]) -> int:
    return sum(int(np.prod(tuple(w.shape), dtype=np.int64)) for w in prunable.values())


def _count(value: object, arg: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise ValueError(f"{arg}: expected an int >= 0, got {value!r}")
    return int(value)


def _schedule(value: object, arg: str) -> ScheduleState:
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise ValueError(f"{arg}: expected [scheduler state, learning rates], got {value!r}")
    return value[0], value[1]


@dataclass(frozen=True)
class RunState:
    """A run as plain values: what defines it (configuration, importance, seed), where it is
    (round, step), and what it carries (masks, rewind snapshot, schedule states, history, metrics,
    and with `EarlyBird` the round's candidate masks: ``early_bird``, `EarlyBirdWatch.state`).

    The one serialisation of a run: `Run.to_state` makes it, `Run.restore` continues from it;
    `to_dict` is the form kept in a trainer's checkpoint (tensors of the model's framework and
    Python scalars, so a Lightning checkpoint loads with ``weights_only=True``) and
    ``pruner.resume`` stores it as a ticket file. ``importance`` and ``seed`` are None for states
    written before they were recorded, ``early_bird`` for states written before it was.
    """

    config: LotteryTicketConfig
    importance: str | None
    seed: int | None
    masks: dict[str, Any]
    snapshot: dict[str, Any] | None
    history: list[float]
    metrics: list[dict[str, Any]]
    round: int
    step: int
    capture_step: int | None
    steps_round0: int | None
    schedule_start: ScheduleState = (None, None)
    schedule_at_capture: ScheduleState = (None, None)
    schedule_pending: bool = False
    early_bird: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["config"] = self.config.to_dict()
        out["schedule_start"], out["schedule_at_capture"] = list(self.schedule_start), list(self.schedule_at_capture)
        return out

    @classmethod
    def from_dict(cls, state: object, arg: str) -> RunState:
        """Inverse of `to_dict` (also reads the dicts written before importance and seed were);
        raises naming ``arg`` for anything malformed."""
        if not isinstance(state, Mapping):
            raise TypeError(f"{arg}: expected a mapping from RunState.to_dict(), got {type(state).__name__}")
        optional = {"importance", "seed", "early_bird"}
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in state and f.name not in optional]
        if missing:
            raise ValueError(f"{arg}: not a run state (no {missing[0]!r})")
        importance = state.get("importance")
        if importance is not None and not isinstance(importance, str):
            raise ValueError(f"{arg}['importance']: expected a str, got {importance!r}")
        masks, snapshot = state["masks"], state["snapshot"]
        if not isinstance(masks, Mapping) or not (snapshot is None or isinstance(snapshot, Mapping)):
            raise ValueError(f"{arg}: masks and snapshot must be mappings of arrays")
        history, metrics = state["history"], state["metrics"]
        if not isinstance(history, list) or not all(isinstance(s, numbers.Real) for s in history):
            raise ValueError(f"{arg}['history']: expected a list of numbers")
        if not isinstance(metrics, list) or not all(isinstance(m, Mapping) for m in metrics):
            raise ValueError(f"{arg}['metrics']: expected a list of rows")
        round_index, step = _count(state["round"], f"{arg}['round']"), _count(state["step"], f"{arg}['step']")
        assert round_index is not None and step is not None
        return cls(
            config=LotteryTicketConfig.from_dict(dict(state["config"])),
            importance=importance,
            seed=_count(state.get("seed"), f"{arg}['seed']", optional=True),
            masks={str(n): m for n, m in masks.items()},
            snapshot=dict(snapshot) if snapshot is not None else None,
            history=[float(s) for s in history],
            metrics=[dict(m) for m in metrics],
            round=round_index,
            step=step,
            capture_step=_count(state["capture_step"], f"{arg}['capture_step']", optional=True),
            steps_round0=_count(state["steps_round0"], f"{arg}['steps_round0']", optional=True),
            schedule_start=_schedule(state["schedule_start"], f"{arg}['schedule_start']"),
            schedule_at_capture=_schedule(state["schedule_at_capture"], f"{arg}['schedule_at_capture']"),
            schedule_pending=bool(state["schedule_pending"]),
            early_bird=check_watch_state(state.get("early_bird"), f"{arg}['early_bird']"),
        )


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
    importance: str = "magnitude"  # what pruning ranks, and the seed of random scores
    seed: int = 0
    bird: EarlyBirdWatch | None = None  # the round's early-bird check (config.early_bird)

    @classmethod
    def start(
        cls,
        config: LotteryTicketConfig,
        adapter: ModelAdapter,
        *,
        capture_step: int | None,
        optimizer: Any,
        scheduler: Any,
        on_step: Any,
        snapshot_device: str | None = None,
        importance: str = "magnitude",
        seed: int = 0,
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
            importance=importance,
            seed=seed,
        )

    @classmethod
    def from_ticket(cls, model: Any, ticket: Ticket, *, on_step: Any) -> Run:
        """The run ``ticket`` finished, on ``model``: its snapshot loaded (unless masks-only), its
        masks applied, its configuration and history, all rounds done. Checked first."""
        adapter = adapter_for(model, names=list(ticket.masks))
        if ticket.snapshot:
            adapter.check_state(ticket.snapshot, "ticket.snapshot")
        host_masks = _masks_by_tensor(model, adapter.prunable, ticket.masks)
        masks = adapter.masks_from_numpy(host_masks)
        if ticket.snapshot:
            adapter.load_state(ticket.snapshot, skip=adapter.prunable)
            kernels.rewind(adapter.prunable, {n: ticket.snapshot[n] for n in adapter.prunable}, masks)
        else:
            kernels.apply_masks(adapter.prunable, masks)
        return cls(
            config=ticket.config,
            adapter=adapter,
            masks=masks,
            total=ticket.total_parameters,
            alive=ticket.remaining_parameters,
            capture_step=ticket.rewind_iteration,
            snapshot=dict(ticket.snapshot) if ticket.snapshot else None,
            watcher=adapter.step_watcher(on_step),
            round=ticket.config.pruning_rounds,
            steps_round0=ticket.iterations_per_round,
            history=list(ticket.sparsity_history),
            importance=ticket.importance,
        )

    def to_state(self) -> RunState:
        """The run as plain values (`RunState`): what a checkpoint needs to resume it."""
        return RunState(
            config=self.config,
            importance=self.importance,
            seed=self.seed,
            masks={n: copy.deepcopy(m) for n, m in self.masks.items()},  # later rounds write over self.masks
            snapshot=dict(self.snapshot) if self.snapshot is not None else None,
            history=list(self.history),
            metrics=[dict(m) for m in self.metrics],
            round=self.round,
            step=self.step,
            capture_step=self.capture_step,
            steps_round0=self.steps_round0,
            schedule_start=self.schedule_start,
            schedule_at_capture=self.schedule_at_capture,
            schedule_pending=self.schedule_pending,
            early_bird=self.bird.state() if self.bird is not None else None,
        )

    def check_state(self, state: RunState, arg: str) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
        """Raise unless ``state`` continues this run: what defines the run (configuration,
        importance, seed, pruned tensors) is the same and the masks, early-bird candidates and
        snapshot fit the model. Returns the masks and the candidates as NumPy arrays; nothing is
        modified."""
        if state.config != self.config:
            raise ValueError(
                f"{arg}: written by a different configuration ({state.config}, this run has {self.config})"
            )
        for what, saved, ours in (("importance", state.importance, self.importance), ("seed", state.seed, self.seed)):
            if saved is not None and saved != ours:  # None: a state written before it was recorded
                raise ValueError(f"{arg}: written by a run with {what}={saved!r}, this run has {what}={ours!r}")
        masks = self._host_masks(state.masks, arg)
        candidates = state.early_bird["candidates"] if state.early_bird is not None else []
        host_candidates = [self._host_masks(c, f"{arg}: early-bird candidate") for c in candidates]
        if state.snapshot is not None:
            self.adapter.check_state(state.snapshot, f"{arg}: snapshot")
        if state.round > self.config.pruning_rounds:
            raise ValueError(f"{arg}: round {state.round} exceeds pruning_rounds={self.config.pruning_rounds}")
        return masks, host_candidates

    def _host_masks(self, masks: Mapping[str, Any], arg: str) -> dict[str, np.ndarray]:
        """``masks`` as NumPy arrays, checked: one bool mask of its weight's shape per pruned tensor."""
        adapter = self.adapter
        if list(masks) != list(adapter.prunable):
            raise ValueError(f"{arg}: prunes other tensors than this model ({list(masks)[:3]}...)")
        host = {n: m if isinstance(m, np.ndarray) else adapter.masks_to_numpy({n: m})[n] for n, m in masks.items()}
        for name, mask in host.items():
            if mask.dtype != np.bool_ or tuple(mask.shape) != tuple(adapter.prunable[name].shape):
                raise ValueError(f"{arg}: mask {name!r} is not a bool array of the weight's shape")
        return host

    def restore(self, state: RunState, arg: str) -> None:
        """Continue from ``state`` (`to_state` of an earlier run on this model); checked first."""
        masks, candidates = self.check_state(state, arg)
        self.masks = self.adapter.masks_from_numpy(masks)
        self.alive = sum(int(np.count_nonzero(m)) for m in masks.values())
        self.snapshot = dict(state.snapshot) if state.snapshot is not None else None
        self.history, self.metrics = list(state.history), [dict(m) for m in state.metrics]
        self.round, self.step, self.capture_step = state.round, state.step, state.capture_step
        self.steps_round0 = state.steps_round0
        self.schedule_start, self.schedule_at_capture = state.schedule_start, state.schedule_at_capture
        self.schedule_pending = state.schedule_pending
        if self.bird is not None:
            self.bird.restore(state.early_bird, [self.adapter.masks_from_numpy(c) for c in candidates])

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

    def rewind(self, optimizer: Any, scheduler: Any) -> None:
        """Restore the snapshot (or keep the trained weights), zero the pruned weights, clear
        optimizer state and rewind the schedule, as the strategy says; the step count restarts."""
        adapter, strategy = self.adapter, self.config.rewind_strategy
        adapter.check_live("since start()")
        if strategy.rewinds_weights:
            snapshot = self.snapshot
            if snapshot is None:
                raise RuntimeError(f"no snapshot yet: {strategy} is captured at iteration {self.capture_step}")
            adapter.load_state(snapshot, skip=adapter.prunable)
            kernels.rewind(adapter.prunable, {n: snapshot[n] for n in adapter.prunable}, self.masks)
        else:
            kernels.apply_masks(adapter.prunable, self.masks)
            self.snapshot = self.take_snapshot()
        for opt in (optimizer, self.optimizer):
            if opt is not None:
                opt.state.clear()
        if self.watcher is not None:
            self.watcher.reset_optimizers()
        if strategy.kind != "none":
            saved = self.schedule_at_capture if strategy.kind in ("early", "late") else self.schedule_start
            restore_schedule(saved, optimizer or self.optimizer, scheduler or self.scheduler)
        self.step = 0
        if self.bird is not None:
            self.bird.reset()
