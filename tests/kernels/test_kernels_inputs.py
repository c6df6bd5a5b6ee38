"""Inputs the kernels once got wrong (issue #14 rows 2, 5, 6, 10, 11): foreign byte orders,
0-d arrays, unaligned buffers, the same storage twice, the caller's dict keys."""

from __future__ import annotations

import numpy as np
import pytest

from lottery_ticket import alive_counts, apply_masks, global_magnitude_masks, rewind

ORDERS = ["<", ">", "="]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("kind", ["f2", "f4", "f8"])
def test_every_byte_order_selects_like_native(order: str, kind: str, reference: object) -> None:
    native = np.array([1, -2, 0.5, 3, -0.25, 2], dtype=kind)
    w = native.astype(order + kind)
    masks = global_magnitude_masks([w, native[:2].astype(">" + kind)], 3)
    assert [m.tolist() for m in masks] == [r.tolist() for r in reference([native, native[:2]], 3)]  # type: ignore[operator]
    assert w.tobytes() == native.astype(order + kind).tobytes()  # input untouched


def test_the_issue_reproducer_for_big_endian() -> None:
    w = np.array([1, -2, 0.5, 3], dtype=">f4")
    assert global_magnitude_masks([w], 2)[0].tolist() == [False, True, False, True]


def test_rewind_reads_a_foreign_order_snapshot_and_in_place_needs_native_order() -> None:
    w = np.array([9.0, 9.0, 9.0], np.float32)
    snapshot = np.array([1.5, -2.0, 3.0], ">f4")
    rewind([w], [snapshot], [np.array([True, False, True])])
    assert w.tolist() == [1.5, 0.0, 3.0]
    foreign = np.array([1.0, 2.0], ">f4")
    before = foreign.tobytes()
    with pytest.raises(TypeError, match=r"weights\[0\]: dtype '>f4' is not in the machine's byte order"):
        apply_masks([foreign], [np.array([True, False])])
    assert foreign.tobytes() == before


def test_zero_d_arrays_keep_their_shape() -> None:
    scalar = np.array(2.5, np.float32)
    masks = global_magnitude_masks([scalar, np.ones(2, np.float32)], 1)
    assert masks[0].shape == () and masks[0].item() is True
    assert global_magnitude_masks([scalar], 1)[0].shape == ()
    w = np.array(7.0)
    rewind([w], [np.array(3.0)], [np.array(True)])
    assert w.shape == () and w.item() == 3.0
    apply_masks([w], [np.array(False)])
    assert w.item() == 0.0
    assert alive_counts([np.array(True), np.zeros((), bool)]) == [1, 0]


def unaligned(values: list[float]) -> np.ndarray:
    buffer = np.zeros(len(values) * 4 + 1, np.uint8)
    out = buffer[1:].view(np.float32)
    out[:] = values
    assert not out.flags.aligned
    return out


def test_unaligned_arrays_are_read_and_refused_in_place_by_name() -> None:
    w = unaligned([3.0, -1.0, 2.0])
    assert global_magnitude_masks({"fc": w}, 1)["fc"].tolist() == [True, False, True]
    with pytest.raises(ValueError, match=r"weights\['fc'\]: array is not aligned"):
        apply_masks({"fc": w}, {"fc": np.ones(3, bool)})


def test_the_same_storage_twice_is_refused() -> None:
    a = np.array([1.0, 2.0, 3.0], np.float32)
    with pytest.raises(ValueError, match=r"weights\['dec'\]: shares memory with weights\['emb'\]"):
        global_magnitude_masks({"emb": a, "dec": a}, 1)
    with pytest.raises(ValueError, match=r"weights\[1\]: shares memory with weights\[0\]"):
        global_magnitude_masks([a, a[1:]], 1)


@pytest.mark.parametrize("keys", [[0, 1], [("fc", 1), ("fc", 2)], ["a", 1], [1.5, None]])
def test_the_callers_dict_keys_come_back(keys: list[object]) -> None:
    weights = {k: np.array([float(i + 1), -10.0], np.float32) for i, k in enumerate(keys)}
    masks = global_magnitude_masks(weights, 1)
    assert list(masks) == keys
    assert list(alive_counts(masks)) == keys
    apply_masks(weights, masks)
    rewind(weights, {k: v.copy() for k, v in weights.items()}, masks)
    with (
        pytest.raises(ValueError, match=r"weights\[0\]: contains NaN") if keys == [0, 1] else pytest.raises(ValueError)
    ):
        global_magnitude_masks({keys[0]: np.array([np.nan], np.float32)}, 0.5)


def test_several_empty_tensors_in_one_call() -> None:
    # Empty masks used to be zero-length views at a neighbour's address: the binding's borrow
    # check refused them as one buffer written twice.
    weights = [np.zeros(0, np.float32), np.array([3.0, -1.0, 2.0], np.float32), np.zeros((0, 4), np.float64)]
    masks = global_magnitude_masks(weights, 1)
    assert [m.shape for m in masks] == [(0,), (3,), (0, 4)]
    assert masks[1].tolist() == [True, False, True]
    apply_masks(weights, masks)
    rewind(weights, [w.copy() for w in weights], masks)
    assert alive_counts(masks) == [0, 2, 0]
