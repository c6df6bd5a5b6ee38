"""The kernel entry points pause the cyclic garbage collector while they run: with tens of
thousands of tensors, the collections their per-tensor objects triggered walked the whole heap
and made a call grow faster than the tensor count."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import numpy as np
import pytest

from lottery_ticket import kernels

ROWS = np.random.default_rng(0).standard_normal((20_000, 4)).astype(np.float32)


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """Generations of the collections that start while the test runs."""
    started: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.callbacks.append(record)
    try:
        yield started
    finally:
        gc.callbacks.remove(record)


def test_a_call_over_many_tensors_triggers_no_collection(collections: list[int]) -> None:
    rows, snapshots = list(ROWS), list(ROWS.copy())
    # Older generations' counters start from zero: otherwise the youngest collection after a
    # call could promote into an older one because of what earlier tests allocated.
    gc.collect()
    collections.clear()  # only the calls below count
    masks = kernels.global_magnitude_masks(rows, 0.2)
    kernels.global_magnitude_masks(rows, 0.2, masks=masks, out=masks)
    kernels.apply_masks(rows, masks)
    kernels.rewind(rows, snapshots, masks)
    kernels.alive_counts(masks)
    kernels.MaskApplier(rows, masks)
    # None runs inside a call; the young objects a call made may start one youngest-generation
    # collection right after it (linear in that call's objects).
    assert len(collections) <= 6 and set(collections) <= {0}
    assert gc.isenabled()
    # The same allocations with the collector running trigger a collection every few hundred
    # objects: the check above would see them.
    collections.clear()
    held = [[i] for i in range(20_000)]
    assert len(collections) > 6 and held


def test_the_collector_is_restored_after_an_error() -> None:
    assert gc.isenabled()
    with pytest.raises(ValueError, match="amount"):
        kernels.global_magnitude_masks(list(ROWS[:3]), 1.5)
    assert gc.isenabled()


def test_a_collector_the_caller_disabled_stays_disabled() -> None:
    gc.disable()
    try:
        kernels.global_magnitude_masks(list(ROWS[:3]), 0.5)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_entry_points_keep_their_names_and_docs() -> None:
    assert kernels.global_magnitude_masks.__name__ == "global_magnitude_masks"
    assert "smallest magnitude" in (kernels.global_magnitude_masks.__doc__ or "")
