"""IMP checkpoints: the run as of a finished round, the live model state and the RNG states, for resuming."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..adapters import ModelAdapter
from ..config import LotteryTicketConfig
from ..ticket import Ticket, read_file, write_file


def write_checkpoint(path: Path, ticket: Ticket, adapter: ModelAdapter, resume: Mapping[str, Any]) -> None:
    """Save an IMP checkpoint: ``ticket``, the adapter's live state, RNG states and ``resume``.

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
    adapter.load_state(state, skip=())
    kind, pos, has_gauss, gauss = resume["numpy_rng"]
    np.random.set_state((kind, np.asarray(rng["numpy"], dtype=np.uint32), pos, has_gauss, gauss))
    adapter.set_rng_state(rng)
    return ticket, resume
