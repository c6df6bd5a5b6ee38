"""Whole-model state checks shared by the NumPy and torch adapters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


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
