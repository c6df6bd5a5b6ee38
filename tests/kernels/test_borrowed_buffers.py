"""The arrays one extension call reads come each with its own buffer object.

rust-numpy checks each borrow against every other borrow of the same buffer object, so N views
of one buffer in one call cost N^2 (a mixture-of-experts model or a flat parameter vector holds
tens of thousands of tensors). These tests assert that cause directly and deterministically
(see ``extension_calls`` in conftest.py); the cost is measured in benches/test_many_tensors.py.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pytest

import torch
from lottery_ticket import alive_counts, apply_masks, global_magnitude_masks, rewind
from lottery_ticket.kernels.threshold import select_threshold


class ExtensionCalls(Protocol):  # the `extension_calls` fixture of conftest.py
    def assert_own_buffers(self, name: str) -> None: ...


def rows(count: int = 64, width: int = 16) -> list[np.ndarray]:
    """Weights that are views of one matrix, as a flat parameter vector's slices are."""
    return list(np.random.default_rng(0).standard_normal((count, width)).astype(np.float32))


def test_weights_that_are_views_of_one_buffer_are_read_each_through_its_own(extension_calls: ExtensionCalls) -> None:
    masks = global_magnitude_masks(rows(), 0.5)
    assert sum(int(m.sum()) for m in masks) == 64 * 16 // 2
    extension_calls.assert_own_buffers("select_masks")


def test_fresh_masks_passed_back_are_each_their_own_buffer(extension_calls: ExtensionCalls) -> None:
    weights = rows()
    masks = global_magnitude_masks(weights, 0.5)
    again = global_magnitude_masks(weights, 0.5, masks=masks)
    assert sum(int(m.sum()) for m in again) == 64 * 16 // 4
    global_magnitude_masks(weights, 0.5, masks=again, out=again)  # written in place
    assert sum(int(m.sum()) for m in again) == round(64 * 16 / 8)
    select_threshold(weights, 0.5, masks=again)
    assert alive_counts(again) == [int(m.sum()) for m in again]
    for name in ("select_masks", "select_masks_in_place", "select_threshold", "alive_counts"):
        extension_calls.assert_own_buffers(name)


def test_masks_that_in_place_calls_read_are_each_their_own_buffer(extension_calls: ExtensionCalls) -> None:
    weights = [r.copy() for r in rows()]  # written in place: separate arrays
    snapshots = rows()
    masks = list(np.random.default_rng(1).random((64, 16)) < 0.5)  # views of one matrix
    apply_masks(weights, masks)
    rewind(weights, snapshots, masks)
    assert all(np.array_equal(w, np.where(m, s, 0)) for w, s, m in zip(weights, snapshots, masks))
    extension_calls.assert_own_buffers("apply_masks")
    extension_calls.assert_own_buffers("rewind")


def test_a_written_weight_overlapping_a_read_snapshot_is_still_refused() -> None:
    # The borrow checks of a shared buffer are what catch such an overlap: the arrays a call reads
    # get buffers of their own only where the caller checks overlaps itself.
    weights = np.random.default_rng(0).standard_normal(32).astype(np.float32)
    before = weights.copy()
    with pytest.raises(ValueError, match=r"snapshots\[0\]: shares memory with weights\[0\]"):
        rewind([weights[:16]], [weights[8:24]], [np.ones(16, dtype=bool)])
    assert np.array_equal(weights, before)


def test_torch_tensors_of_one_storage_are_each_their_own_buffer(extension_calls: ExtensionCalls) -> None:
    weights = list(torch.randn(64, 16, generator=torch.Generator().manual_seed(0)).unbind())
    masks = global_magnitude_masks(weights, 0.5)
    global_magnitude_masks(weights, 0.5, masks=masks)
    extension_calls.assert_own_buffers("select_masks")
