"""The per-call cost grows with the number of tensors linearly: mixture-of-experts checkpoints
hold tens of thousands of them. A ratio of 10x the tensors against 10x the time, with a margin
a quadratic set-up (100x) cannot meet; the speed itself is measured in benches/."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import torch
from lottery_ticket import _core, global_magnitude_masks

SMALL, LARGE = 2_000, 20_000
WEIGHTS = 100  # per tensor: the set-up per tensor dominates, as with many small experts


def tensors(count: int, kind: str) -> list[Any]:
    values = np.random.default_rng(0).standard_normal((count, WEIGHTS)).astype(np.float32)
    arrays = [row.copy() for row in values]  # each its own allocation, as separate tensors are
    return [torch.from_numpy(a) for a in arrays] if kind == "torch" else arrays


def best_of(runs: int, call: Callable[..., object], *args: Any, **kwargs: Any) -> float:
    best = float("inf")
    gc.disable()
    try:
        for _ in range(runs):
            start = time.perf_counter()
            call(*args, **kwargs)
            best = min(best, time.perf_counter() - start)
    finally:
        gc.enable()
    return best


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_selection_cost_is_linear_in_the_number_of_tensors(kind: str) -> None:
    times = {}
    for count in (SMALL, LARGE):
        weights = tensors(count, kind)
        masks = global_magnitude_masks(weights, 0.5)
        assert sum(int(m.sum()) for m in masks) == count * WEIGHTS // 2
        times[count] = best_of(3, global_magnitude_masks, weights, 0.5)
    assert times[LARGE] < 30 * times[SMALL], times


def test_selection_with_torch_masks_is_linear_in_the_number_of_tensors() -> None:
    times = {}
    for count in (SMALL, LARGE):
        weights = tensors(count, "torch")
        alive = global_magnitude_masks(weights, 0.5)
        again = global_magnitude_masks(weights, 0.5, masks=alive)
        assert sum(int(m.sum()) for m in again) == count * WEIGHTS // 4
        times[count] = best_of(3, global_magnitude_masks, weights, 0.5, masks=alive)
    assert times[LARGE] < 30 * times[SMALL], times


def test_the_binding_borrows_the_masks_it_writes_once() -> None:
    """The extension alone, where a borrow check per mask view of one buffer showed undiluted
    (about 100x). Both sizes run above the size where the kernel starts releasing the GIL and
    going parallel, so the ratio compares like with like."""
    times = {}
    small, large, weights = 5_000, 50_000, 10
    for count in (small, large):
        values = np.random.default_rng(0).standard_normal((count, weights)).astype(np.float32)
        bits = [row.copy().view(np.uint32) for row in values]
        out = np.empty(count * weights, dtype=np.uint8)
        times[count] = best_of(3, _core.select_masks, bits, ["float32"] * count, None, out, 0.5, "global", [])
        assert int(out.sum()) == count * weights // 2
    assert times[large] < 25 * times[small], times
