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


class ExtensionCalls:
    """The extension's calls seen by a spy: each as its name and its list-of-arrays arguments
    (the arrays kept alive, so that their buffer objects' ids stay unique)."""

    ENTRY_POINTS = (
        "alive_counts",
        "apply_masks",
        "rewind",
        "select_masks",
        "select_masks_in_place",
        "select_threshold",
        "write_pruned",
    )

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[list[np.ndarray]]]] = []

    def record(self, name: str, args: tuple[Any, ...]) -> None:
        self.seen.append((name, [list(a) for a in args if isinstance(a, list) and a and isinstance(a[0], np.ndarray)]))

    def assert_own_buffers(self, name: str) -> None:
        """Every array list passed to ``name`` holds arrays of pairwise distinct buffer objects.

        rust-numpy files each borrow under the array's first non-array ``base`` and checks it
        against every other borrow of that buffer: N views of one buffer in one call cost N^2.
        """
        matching = [lists for called, lists in self.seen if called == name]
        assert matching, f"{name} was not called"
        for lists in matching:
            for i, arrays in enumerate(lists):
                owners = {buffer_owner(a) for a in arrays}
                assert len(owners) == len(arrays), f"{name}: argument {i}: {len(arrays)} arrays, {len(owners)} buffers"


def buffer_owner(a: np.ndarray) -> int:
    """The key rust-numpy files a borrow of ``a`` under (its ``base_address``)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return id(a.base) if a.base is not None else id(a)


@pytest.fixture
def extension_calls(monkeypatch: pytest.MonkeyPatch) -> ExtensionCalls:
    """Spy on every entry point of the extension for the test's duration."""
    from lottery_ticket import _core

    calls = ExtensionCalls()
    for name in ExtensionCalls.ENTRY_POINTS:
        real = getattr(_core, name)

        def spy(*args: Any, _real: Any = real, _name: str = name) -> Any:
            calls.record(_name, args)
            return _real(*args)

        monkeypatch.setattr(_core, name, spy)
    return calls
