"""A started pruner's run state as plain values, for checkpoints written by someone else's trainer.

`LotteryTicketPruner.run` checkpoints itself (``checkpoint.py``). Under Lightning or the Hugging
Face ``Trainer`` the trainer owns checkpointing and restores the model, optimizer and scheduler
itself; what it cannot restore is the pruner's part: masks, the rewind snapshot, round and step
counters, the schedule states a rewind restores, history and metrics. `pruner_state` returns
them as tensors (the model's framework) and Python scalars, lists and dicts, so a Lightning
checkpoint holds them and loads with ``weights_only=True``; `write_state_file` stores the same
state as a loadable ticket file (safetensors) for the Hugging Face ``Trainer``.
"""

from __future__ import annotations

import copy
import numbers
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import kernels
from ..config import LotteryTicketConfig
from ..ticket import read_file, write_file

if TYPE_CHECKING:
    from . import LotteryTicketPruner

_SCALARS = (
    "round",
    "step",
    "capture_step",
    "steps_round0",
    "schedule_start",
    "schedule_at_capture",
    "schedule_pending",
)
_KEYS = ("config", "masks", "snapshot", "history", "metrics", *_SCALARS)


def pruner_state(pruner: LotteryTicketPruner) -> dict[str, Any]:
    """The run state of a started ``pruner``; `load_pruner_state` restores it."""
    run = pruner._started()
    return {
        "config": run.config.to_dict(),
        "masks": {n: copy.deepcopy(m) for n, m in run.masks.items()},  # later rounds write over run.masks
        "snapshot": dict(run.snapshot) if run.snapshot is not None else None,
        "history": list(run.history),
        "metrics": [dict(m) for m in run.metrics],
        "round": run.round,
        "step": run.step,
        "capture_step": run.capture_step,
        "steps_round0": run.steps_round0,
        "schedule_start": list(run.schedule_start),
        "schedule_at_capture": list(run.schedule_at_capture),
        "schedule_pending": run.schedule_pending,
    }


def _count(value: object, arg: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise ValueError(f"{arg}: expected an int >= 0, got {value!r}")
    return int(value)


def load_pruner_state(pruner: LotteryTicketPruner, state: Mapping[str, Any], arg: str = "state") -> None:
    """Restore `pruner_state` into ``pruner``, started on the same model; everything is checked first."""
    run = pruner._started()
    if not isinstance(state, Mapping):
        raise TypeError(f"{arg}: expected a mapping from pruner_state(), got {type(state).__name__}")
    missing = [k for k in _KEYS if k not in state]
    if missing:
        raise ValueError(f"{arg}: not a pruner state from pruner_state() (no {missing[0]!r})")
    config = LotteryTicketConfig.from_dict(dict(state["config"]))
    if config != run.config:
        raise ValueError(f"{arg}: written by a different configuration ({config}, this pruner has {run.config})")
    adapter = run.adapter
    masks = {str(n): np.asarray(m, dtype=np.bool_) for n, m in dict(state["masks"]).items()}
    if list(masks) != list(adapter.prunable):
        raise ValueError(f"{arg}['masks']: prunes other tensors than this model ({list(masks)[:3]}...)")
    for name, mask in masks.items():
        if tuple(mask.shape) != tuple(adapter.prunable[name].shape):
            raise ValueError(f"{arg}['masks'][{name!r}]: shape {tuple(mask.shape)} differs from the model's")
    snapshot = state["snapshot"]
    if snapshot is not None:
        adapter.check_state(snapshot, f"{arg}['snapshot']")
    round_index = _count(state["round"], f"{arg}['round']")
    assert round_index is not None
    if round_index > run.config.pruning_rounds:
        raise ValueError(f"{arg}['round']: {round_index} exceeds pruning_rounds={run.config.pruning_rounds}")
    step = _count(state["step"], f"{arg}['step']")
    assert step is not None
    capture = _count(state["capture_step"], f"{arg}['capture_step']", optional=True)
    steps_round0 = _count(state["steps_round0"], f"{arg}['steps_round0']", optional=True)
    # Checked: now restore.
    run.masks = adapter.masks_from_numpy(masks)
    run.alive = sum(kernels.alive_counts(run.masks).values())
    run.snapshot = dict(snapshot) if snapshot is not None else None
    run.history = [float(s) for s in state["history"]]
    run.metrics = [dict(m) for m in state["metrics"]]
    run.round, run.step, run.capture_step, run.steps_round0 = round_index, step, capture, steps_round0
    schedule_start, schedule_at_capture = state["schedule_start"], state["schedule_at_capture"]
    run.schedule_start = (schedule_start[0], schedule_start[1])
    run.schedule_at_capture = (schedule_at_capture[0], schedule_at_capture[1])
    run.schedule_pending = bool(state["schedule_pending"])


def write_state_file(path: str | os.PathLike[str], pruner: LotteryTicketPruner, extra: Mapping[str, Any]) -> None:
    """Save the run state as a ticket file (``Ticket.load`` reads it) plus resume information.

    ``extra`` (JSON values) is returned by `read_state_file` beside the state.
    """
    state = pruner_state(pruner)
    ticket = pruner.ticket()
    resume = {k: state[k] for k in _SCALARS}
    resume["snapshot_taken"] = state["snapshot"] is not None
    resume["extra"] = dict(extra)
    write_file(path, ticket, resume=resume)


def read_state_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state, extra)`` from a `write_state_file` file; ``state`` goes to `load_pruner_state`."""
    ticket, _, _, resume = read_file(path)
    if resume is None or "snapshot_taken" not in resume:
        raise ValueError(f"{path}: a ticket without resume information (not written by a trainer callback)")
    state = {k: resume[k] for k in _SCALARS}
    state.update(
        config=ticket.config.to_dict(),
        masks=ticket.masks,
        snapshot=ticket.snapshot if resume["snapshot_taken"] else None,
        history=ticket.sparsity_history,
        metrics=ticket.metrics,
    )
    return state, dict(resume["extra"])
