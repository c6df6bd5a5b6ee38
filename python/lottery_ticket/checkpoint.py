"""IMP checkpoints: the run as of a finished round, the live model state and the RNG states, for resuming."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .adapters import ModelAdapter
from .config import LotteryTicketConfig
from .ticket import Ticket, read_file, write_file


def write_checkpoint(path: Path, ticket: Ticket, adapter: ModelAdapter, resume: Mapping[str, Any]) -> None:
    """Save an IMP checkpoint: ``ticket``, the adapter's live state, RNG states and ``resume``.

    The NumPy global RNG state and the adapter's (torch) RNG state are saved too, so a resumed
    run continues exactly like an uninterrupted one.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    rng = {"numpy": np.asarray(keys, dtype=np.uint32), **adapter.rng_state()}
    info = {**resume, "numpy_rng": [kind, int(pos), int(has_gauss), float(gauss)]}
    write_file(path, ticket, state=adapter.state(), rng=rng, resume=info)


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
    if list(ticket.masks) != list(adapter.prunable):
        raise ValueError(f"checkpoint_dir: {path} prunes other tensors than this model")
    adapter.check_state(state, "checkpoint state")
    adapter.check_state(ticket.snapshot, "checkpoint snapshot")
    adapter.load_state(state, skip=())
    kind, pos, has_gauss, gauss = resume["numpy_rng"]
    np.random.set_state((kind, np.asarray(rng["numpy"], dtype=np.uint32), pos, has_gauss, gauss))
    adapter.set_rng_state(rng)
    return ticket, resume
