"""Shared reference for the kernel tests: global magnitude selection by a NumPy stable argsort."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

Reference = Callable[..., list[np.ndarray]]


def magnitudes(x: Any) -> np.ndarray:
    """Exact |x| as float64 (every supported dtype widens to f64 without rounding), C order."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().to(torch.float64).numpy()
    return np.abs(np.asarray(x, dtype=np.float64))


def reference_masks(
    weights: Sequence[Any],
    amount: int | float,
    masks: Sequence[Any] | None = None,
    scope: str = "global",
) -> list[np.ndarray]:
    """Bool masks (True = kept): prune the `k` smallest alive |w|, earlier first among ties.

    `k` is `amount` for an int, `round(amount * alive)` (ties to even) for a float.
    """
    if scope == "layer":
        return [reference_masks([w], amount, None if masks is None else [masks[i]])[0] for i, w in enumerate(weights)]
    mags = [magnitudes(w) for w in weights]
    # magnitudes() also turns a bool mask (NumPy or torch) into 0.0 / 1.0.
    alive_list = [np.ones(m.shape, bool) for m in mags] if masks is None else [magnitudes(a) != 0 for a in masks]
    flat = np.concatenate([m.ravel() for m in mags])
    alive = np.concatenate([a.ravel() for a in alive_list])
    positions = np.flatnonzero(alive)
    assert not np.isnan(flat[positions]).any(), "the reference does not rank NaN"
    k = amount if isinstance(amount, int) else round(amount * positions.size)
    assert 0 <= k <= positions.size
    keep = alive.copy()
    keep[positions[np.argsort(flat[positions], kind="stable")[:k]]] = False
    out, start = [], 0
    for m in mags:
        out.append(keep[start : start + m.size].reshape(m.shape))
        start += m.size
    return out


@pytest.fixture
def reference() -> Reference:
    """The reference selection (see `reference_masks`)."""
    return reference_masks


@pytest.fixture(autouse=True)
def _torch_global_modes_restored() -> Any:
    """Lightning's ``Trainer(deterministic=True)`` switches torch's deterministic algorithms on for
    the whole process (and with them the filling of every new tensor); later tests must not run
    under a mode an earlier fit left behind."""
    torch = sys.modules.get("torch")
    saved = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None and saved is not None:
        torch.use_deterministic_algorithms(saved[0])
        torch.set_num_threads(saved[1])
