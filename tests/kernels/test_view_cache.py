"""Reused views (`_plan`): the same answer as a fresh validation, never stale, never keeping memory alive."""

from __future__ import annotations

import numpy as np
import pytest

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


def _kept(cache: _plan.ViewCache) -> list | None:  # type: ignore[type-arg]
    return None if cache._last is None else cache._last[2]


def test_views_are_reused_for_the_same_arrays() -> None:
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((30, 20)).astype(np.float32), rng.standard_normal(50).astype(np.float32)]
    global_magnitude_masks(weights, 100)
    assert _kept(_plan._READ) is None  # a one-off call keeps no views
    global_magnitude_masks(weights, 100)
    first = _kept(_plan._READ)
    assert first is not None
    global_magnitude_masks(weights, 100)
    assert _kept(_plan._READ) is first  # nothing re-validated
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


def test_kept_views_keep_no_memory_alive() -> None:
    import gc
    import weakref

    weights = [torch.randn(300, 200), torch.randn(1000)]
    masks = [m.clone() for m in global_magnitude_masks(weights, 0.5)]
    for _ in range(3):
        global_magnitude_masks(weights, 0.2, masks=masks, out=masks)
    assert _kept(_plan._READ) is not None and _kept(_plan._WRITTEN) is not None
    alive = [weakref.ref(t) for t in weights + masks]
    del weights, masks
    gc.collect()
    assert all(ref() is None for ref in alive)


def test_in_place_masks_are_checked_again_when_they_change() -> None:
    rng = np.random.default_rng(1)
    weights = [rng.standard_normal(400).astype(np.float32), rng.standard_normal((20, 10)).astype(np.float32)]
    masks = [np.ones(400, dtype=bool), np.ones((20, 10), dtype=bool)]
    for _ in range(3):
        global_magnitude_masks(weights, 0.1, masks=masks, out=masks)
    assert _kept(_plan._WRITTEN) is not None
    expected = [m.copy() for m in masks]
    masks[1].flags.writeable = False  # frozen after the views were kept: refused, nothing written
    with pytest.raises(ValueError, match=r"out\[1\]"):
        global_magnitude_masks(weights, 0.1, masks=masks, out=masks)
    assert all(np.array_equal(m, e) for m, e in zip(masks, expected))
    masks[1] = np.ones((10, 20), dtype=bool)  # a new mask of another shape than its weight
    with pytest.raises(ValueError, match=r"masks\[1\]"):
        global_magnitude_masks(weights, 0.1, masks=masks, out=masks)


def test_written_views_follow_the_weights_shapes() -> None:
    # The same masks, but weights of other shapes: the kept mask views were checked against the
    # old ones, so they are not reused, and the mismatch is reported.
    masks = [np.ones(12, dtype=bool)]
    for _ in range(3):
        global_magnitude_masks([np.arange(12, dtype=np.float32)], 1, masks=masks, out=masks)
    with pytest.raises(ValueError, match=r"masks\[0\]"):
        global_magnitude_masks([np.arange(12, dtype=np.float32).reshape(3, 4)], 1, masks=masks, out=masks)


def test_tensors_of_one_type_are_compared_as_a_batch_like_one_by_one() -> None:
    # A model's parameters share one type: their backend reads the layouts in one comprehension,
    # which must say what the per-array signatures say, and still see every change.
    torch.manual_seed(2)
    params = [torch.nn.Parameter(torch.randn(30, 20)), torch.nn.Parameter(torch.randn(64))]
    batched = _plan._signatures(params)
    assert batched == [_plan._signature(p) for p in params]
    global_magnitude_masks(params, 0.25)
    global_magnitude_masks(params, 0.25)
    assert _kept(_plan._READ) is not None  # the batch path keeps views like the other
    params[0].data = torch.randn(30, 20) * 7  # new storage: not read through the old views
    got = global_magnitude_masks(params, 0.25)
    expected = _reference([p.detach().numpy() for p in params], round(0.25 * 664))
    assert all(np.array_equal(g.numpy(), r) for g, r in zip(got, expected))
    plain = [torch.randn(8, 8), torch.randn(10)]
    for _ in range(2):
        global_magnitude_masks(plain, 0.5)
    before = _plan._signatures(plain)
    plain[0].resize_(4, 8)  # the same address, a smaller shape: a new signature, new views
    after = _plan._signatures(plain)
    assert before is not None and after is not None
    assert after[0][1] == before[0][1] and after != before
    got = global_magnitude_masks(plain, 0.5)
    assert tuple(got[0].shape) == (4, 8)
    expected = _reference([plain[0].numpy(), plain[1].numpy()], round(0.5 * 42))
    assert all(np.array_equal(g.numpy(), r) for g, r in zip(got, expected))
