"""Whole-model state: the check shared by the NumPy and torch adapters, and IMP checkpoints."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .config import LotteryTicketConfig
from .ticket import Ticket, read_file, write_file


def check_state(
    snapshot: Mapping[str, Any],
    live: Mapping[str, Any],
    arg: str,
    *,
    is_array: Callable[[object], bool],
    kind: str,
    owner: str = "the model's",
) -> None:
    """Raise unless ``snapshot`` has exactly the names, shapes and dtypes of ``live``.

    Nothing is modified, so callers check a whole state before loading any of it.

    Args:
        snapshot: name -> array to check (e.g. a ticket's snapshot or a checkpoint's state).
        live: name -> the model's array (anything with ``shape`` and ``dtype``).
        arg: how the caller names ``snapshot`` in error messages.
        is_array: whether an entry is an array of the model's framework.
        kind: that array kind in words, e.g. ``"a NumPy array"``.
        owner: the model's state in words, e.g. ``"the model's state_dict"``.

    Raises:
        ValueError: names or a shape differ. TypeError: an entry is not an array of the
        model's kind, or a dtype differs.

    Example:
        >>> import numpy as np
        >>> live = {"w": np.zeros(2, np.float32)}
        >>> check_state({"w": np.ones(2, np.float32)}, live, "snapshot", is_array=lambda a: isinstance(a, np.ndarray), kind="a NumPy array")
    """
    if set(snapshot) != set(live):
        extra = sorted(set(snapshot) ^ set(live))
        raise ValueError(f"{arg}: names differ from {owner} (first: {extra[0]!r})")
    for name, array in live.items():
        other = snapshot[name]
        if not is_array(other):
            raise TypeError(f"{arg}[{name!r}]: expected {kind}, got {type(other).__name__}")
        if tuple(other.shape) != tuple(array.shape):
            raise ValueError(f"{arg}[{name!r}]: shape {tuple(other.shape)} differs from the model's {tuple(array.shape)}")
        if other.dtype != array.dtype:
            raise TypeError(f"{arg}[{name!r}]: dtype {other.dtype} differs from the model's {array.dtype}")


def write_checkpoint(path: Path, ticket: Ticket, adapter: Any, resume: Mapping[str, Any]) -> None:
    """Save an IMP checkpoint: ``ticket``, the adapter's live state, RNG states and ``resume``.

    The NumPy global RNG state and the adapter's (torch) RNG state are saved too, so a resumed
    run continues exactly like an uninterrupted one.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    rng = {"numpy": np.asarray(keys, dtype=np.uint32), **adapter.rng_state()}
    info = {**resume, "numpy_rng": [kind, int(pos), int(has_gauss), float(gauss)]}
    write_file(path, ticket, state=adapter.state(), rng=rng, resume=info)


def read_checkpoint(path: Path, config: LotteryTicketConfig, adapter: Any) -> tuple[Ticket, dict[str, Any]]:
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
