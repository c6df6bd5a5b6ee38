"""A run's state on disk: `RunState` stored as a ticket file, for ``run(checkpoint_dir=)`` and the
trainer callbacks.

A file holds the ticket as of now (masks, rewind snapshot, history, metrics: ``Ticket.load``
reads it) and a JSON resume record with the rest of the `RunState` (round, step, capture step,
schedule states, seed, the early-bird check's distances and steps) plus what the writer adds
(``extra``). A trainer callback's file keeps the round's early-bird candidate masks where an
IMP checkpoint keeps the live model state (``state/early_bird/<i>/<name>``). ``run(checkpoint_dir=)`` also stores
the live model state and the RNG states (`write_checkpoint`), since nobody else saves them; under
a trainer, the trainer does.

Files written before the record held the whole `RunState` still load: IMP checkpoints then kept
only round, step, capture step and the next round; missing fields take the values a run without
an optimizer or scheduler has.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..adapters import ModelAdapter
from ..config import LotteryTicketConfig
from ..ticket import Ticket, read_file, write_file
from .run import Run, RunState

# Where a trainer callback's state file keeps the early-bird candidates (in its `state` group).
_CANDIDATE = "early_bird"
_RECORD = ("round", "step", "capture_step", "steps_round0", "schedule_start", "schedule_at_capture", "schedule_pending")


def state_record(state: RunState) -> dict[str, Any]:
    """The JSON part of ``state`` (the ticket file holds the arrays, history and metrics)."""
    record = {k: v for k, v in state.to_dict().items() if k in _RECORD}
    record.update(seed=state.seed, snapshot_taken=state.snapshot is not None)
    if state.early_bird is not None:
        record["early_bird"] = {**state.early_bird, "candidates": len(state.early_bird["candidates"])}
    return record


def candidate_arrays(state: RunState) -> dict[str, Any]:
    """The early-bird candidate masks of ``state`` by file name (`candidates_from_arrays` reads them)."""
    found = state.early_bird["candidates"] if state.early_bird is not None else []
    return {f"{_CANDIDATE}/{i}/{name}": mask for i, masks in enumerate(found) for name, mask in masks.items()}


def candidates_from_arrays(count: object, names: list[str], arrays: Mapping[str, Any] | None, arg: str) -> list[Any]:
    """The ``count`` candidate masks `candidate_arrays` stored; ValueError naming ``arg`` if any is missing."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"{arg}: the early-bird record counts {count!r} candidates")
    stored = arrays or {}
    keys = [[f"{_CANDIDATE}/{i}/{name}" for name in names] for i in range(count)]
    missing = [k for row in keys for k in row if k not in stored]
    if missing:
        raise ValueError(f"{arg}: early-bird candidate {missing[0]!r} is missing")
    return [{name: stored[k] for name, k in zip(names, row)} for row in keys]


def state_from_file(
    ticket: Ticket, record: Mapping[str, Any], arg: str, arrays: Mapping[str, Any] | None = None
) -> RunState:
    """The `RunState` a ticket file and its resume record hold (checked, naming ``arg``); ``arrays``:
    the file's other arrays, where a trainer callback's file keeps the early-bird candidates."""
    values: dict[str, Any] = {"schedule_start": [None, None], "schedule_at_capture": [None, None]}
    values.update(schedule_pending=False, steps_round0=ticket.iterations_per_round)
    values.update({k: record[k] for k in _RECORD if k in record})
    values.update(
        config=ticket.config.to_dict(),
        importance=ticket.importance,
        seed=record.get("seed"),
        masks=ticket.masks,
        snapshot=ticket.snapshot if record.get("snapshot_taken", True) else None,
        history=ticket.sparsity_history,
        metrics=ticket.metrics,
    )
    bird = record.get("early_bird")
    if isinstance(bird, Mapping):
        candidates = candidates_from_arrays(bird.get("candidates"), list(ticket.masks), arrays, arg)
        values["early_bird"] = {**bird, "candidates": candidates}
    elif bird is not None:
        raise ValueError(f"{arg}: the early-bird record is not an object")
    return RunState.from_dict(values, arg)


@dataclass(frozen=True)
class StateFile:
    """What `read_state_file` found: the run state, the ticket as saved and the writer's extras."""

    state: RunState
    ticket: Ticket
    extra: dict[str, Any]


def write_state_file(path: str | os.PathLike[str], ticket: Ticket, state: RunState, extra: Mapping[str, Any]) -> None:
    """Save ``state`` as a ticket file (``ticket``: the run's, `LotteryTicketPruner.ticket`);
    ``extra`` (JSON values) comes back from `read_state_file`."""
    candidates = candidate_arrays(state)
    write_file(path, ticket, state=candidates or None, resume={**state_record(state), "extra": dict(extra)})


def read_state_file(path: str | os.PathLike[str]) -> StateFile:
    """Read a `write_state_file` file; ``ValueError`` naming ``path`` unless it holds a run state."""
    ticket, arrays, _, record = read_file(path)
    if record is None or "extra" not in record or not isinstance(record["extra"], dict):
        raise ValueError(f"{path}: a ticket without a run state (not written by a trainer callback)")
    return StateFile(state_from_file(ticket, record, str(path), arrays), ticket, dict(record["extra"]))


def write_checkpoint(path: Path, ticket: Ticket, adapter: ModelAdapter, resume: Mapping[str, Any]) -> None:
    """Save an IMP checkpoint: ``ticket``, the adapter's live state, RNG states and ``resume``
    (`state_record` plus ``next_round``).

    The NumPy global RNG state and the adapter's (torch) RNG state are saved too, so a resumed
    run continues exactly like an uninterrupted one.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    rng = {"numpy": np.asarray(keys, dtype=np.uint32), **adapter.rng_state()}
    info = {**resume, "numpy_rng": [kind, int(pos), int(has_gauss), float(gauss)]}
    write_file(path, ticket, state=adapter.state(), rng=rng, resume=info)


def _is_count(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def resume_problem(resume: Mapping[str, Any], rng: Mapping[str, np.ndarray], rounds: int) -> str | None:
    """What is wrong with a checkpoint's resume record and RNG state (None: nothing), checked
    before the model is touched (the file's checksum covers them; this catches foreign writers)."""
    if not (_is_count(resume.get("next_round")) and resume["next_round"] <= rounds + 1):
        return f"next_round {resume.get('next_round')!r} is not a round of this run"
    if not all(_is_count(resume.get(k)) for k in ("round", "step")):
        return "round or step is not a count"
    if not (resume.get("capture_step") is None or _is_count(resume["capture_step"])):
        return "capture_step is not a count"
    numpy_rng = resume.get("numpy_rng")
    if not (isinstance(numpy_rng, list) and len(numpy_rng) == 4 and numpy_rng[0] == "MT19937"):
        return "numpy_rng is not a MT19937 state"
    keys = rng.get("numpy")
    if keys is None or keys.shape != (624,) or keys.dtype != np.uint32:
        return "the NumPy RNG keys are missing or malformed"
    return None


def read_checkpoint(path: Path, config: LotteryTicketConfig, adapter: ModelAdapter) -> tuple[Ticket, dict[str, Any]]:
    """Load a `write_checkpoint` file into the adapter's model and restore the RNG states.

    Everything is checked (configuration, pruned names, state and snapshot names, shapes and
    dtypes) before the model is touched.

    Returns:
        ``(ticket, resume)``: the ticket as of the checkpoint and the ``resume`` mapping saved.
    """
    ticket, resume, state, rng = _checked_checkpoint(path, config, adapter)
    _load_checkpoint(adapter, resume, state, rng)
    return ticket, resume


def resume_run(path: Path, run: Run) -> int:
    """Continue ``run`` from the IMP checkpoint at ``path``: the model, the RNG states and the run
    state, all checked first (what defines the run included); returns the next round to train."""
    ticket, resume, live, rng = _checked_checkpoint(path, run.config, run.adapter)
    arg = f"checkpoint_dir: {path}"
    state = state_from_file(ticket, resume, arg)
    run.check_state(state, arg)
    _load_checkpoint(run.adapter, resume, live, rng)
    run.restore(state, arg)
    return int(resume["next_round"])


def _checked_checkpoint(
    path: Path, config: LotteryTicketConfig, adapter: ModelAdapter
) -> tuple[Ticket, dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    ticket, state, rng, resume = read_file(path)
    if ticket.config != config or resume is None or state is None or rng is None:
        raise ValueError(f"checkpoint_dir: {path} was written by a different configuration ({ticket.config})")
    problem = resume_problem(resume, rng, config.pruning_rounds)
    if problem:
        raise ValueError(f"checkpoint_dir: {path} is corrupted: {problem}")
    if list(ticket.masks) != list(adapter.prunable):
        raise ValueError(f"checkpoint_dir: {path} prunes other tensors than this model")
    adapter.check_state(state, "checkpoint state")
    adapter.check_state(ticket.snapshot, "checkpoint snapshot")
    return ticket, resume, state, rng


def _load_checkpoint(
    adapter: ModelAdapter, resume: Mapping[str, Any], state: Mapping[str, Any], rng: Mapping[str, np.ndarray]
) -> None:
    adapter.load_state(state, skip=())
    kind, pos, has_gauss, gauss = resume["numpy_rng"]
    np.random.set_state((kind, np.asarray(rng["numpy"], dtype=np.uint32), pos, has_gauss, gauss))
    adapter.set_rng_state(rng)
