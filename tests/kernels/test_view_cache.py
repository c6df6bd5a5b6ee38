"""Reused views of a small model (`_plan`): the same answer as a fresh validation, and never stale."""

from __future__ import annotations

import numpy as np

import torch
from lottery_ticket import global_magnitude_masks
from lottery_ticket.kernels import view_cache as _plan


def _reference(weights: list[np.ndarray], k: int) -> list[np.ndarray]:
    flat = np.concatenate([np.abs(w.astype(np.float64)).ravel() for w in weights])
    order = np.argsort(flat, kind="stable")
    keep = np.ones(flat.size, dtype=bool)
    keep[order[:k]] = False
    out, start = [], 0
    for w in weights:
        out.append(keep[start : start + w.size].reshape(w.shape))
        start += w.size
    return out


def test_views_are_reused_for_the_same_arrays() -> None:
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((30, 20)).astype(np.float32), rng.standard_normal(50).astype(np.float32)]
    global_magnitude_masks(weights, 100)
    first = _plan._last
    assert first is not None
    global_magnitude_masks(weights, 100)
    assert _plan._last is first  # nothing re-validated
    weights[0][...] = rng.standard_normal((30, 20))  # in-place updates are seen through the views
    got = global_magnitude_masks(weights, 100)
    assert all(np.array_equal(g, r) for g, r in zip(got, _reference(weights, 100)))


def test_a_swapped_storage_is_never_read_through_old_views() -> None:
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(40, 10))
    q = torch.randn(25)
    global_magnitude_masks([p, q], 0.3)
    p.data = torch.randn(40, 10) * 100  # the optimizer-style swap: new storage under the same object
    got = global_magnitude_masks([p, q], 0.3)
    expected = _reference([p.detach().numpy(), q.numpy()], round(0.3 * 425))
    assert all(np.array_equal(g.numpy(), r) for g, r in zip(got, expected))
    p.data = p.data.t()  # same storage, new shape and strides: a strided tensor, copied, not cached
    got = global_magnitude_masks([p, q], 0.3)
    assert tuple(got[0].shape) == (10, 40)
    expected = _reference([p.detach().contiguous().numpy(), q.numpy()], round(0.3 * 425))
    assert all(np.array_equal(g.numpy(), r) for g, r in zip(got, expected))


def test_large_inputs_are_not_kept() -> None:
    big = [np.ones(_plan.MAX_ELEMENTS + 1, dtype=np.float32)]
    global_magnitude_masks(big, 1)
    assert _plan._last is None
