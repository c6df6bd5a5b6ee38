"""Bad input: the right exception, a message naming the argument, and no input array modified."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

import torch
from lottery_ticket import alive_counts, apply_masks, global_magnitude_masks, rewind


def w() -> list[np.ndarray]:
    """Two weights, 5 elements in all."""
    return [np.array([1.0, -2.0, 3.0], np.float32), np.array([[0.5, -4.0]], np.float16)]


def m() -> list[np.ndarray]:
    return [np.array([True, False, True]), np.array([[True, True]])]


def named(values: list[Any]) -> dict[str, Any]:
    return dict(zip(["fc.weight", "fc.bias"], values))


def read_only(x: np.ndarray) -> np.ndarray:
    x.flags.writeable = False
    return x


def with_nan() -> list[np.ndarray]:
    weights = w()
    weights[1][0, 1] = np.nan
    return weights


def aliased_pair() -> list[np.ndarray]:
    a = np.array([1.0, 2.0], np.float32)
    return [a, a]


def weight_and_its_mask() -> tuple[list[np.ndarray], list[np.ndarray]]:
    weights = w()
    as_bool = weights[0].view(np.uint8)[:3].view(np.bool_)  # bool bytes inside the weight
    return weights, [as_bool, m()[1]]


def in_place(weights: list[np.ndarray], masks: list[np.ndarray]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A later round written over ``masks`` (``out=masks``)."""
    return call(weights, 1, masks=masks, out=masks)


def overlapping_masks() -> list[np.ndarray]:
    both = np.ones(4, np.bool_)
    return [both[:3], both[1:3].reshape(1, 2)]


def same_weight_as_snapshot() -> tuple[list[Any], ...]:
    weights = w()
    return weights, [weights[0], weights[1].copy()], m()


def call(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def transposed(shape: tuple[int, int], dtype: Any = np.float32) -> np.ndarray:
    """A non-contiguous array of shape `shape` (the transpose of a C array)."""
    return np.ones(shape[::-1], dtype).T


def t_bool(*shape: int) -> torch.Tensor:
    return torch.ones(shape, dtype=torch.bool)


S, A, R = global_magnitude_masks, apply_masks, rewind
Build = Callable[[], tuple[tuple[Any, ...], dict[str, Any]]]

# (id, function, builder of its arguments, exception, what the message must name)
CASES: list[tuple[str, Callable[..., Any], Build, type[Exception], str]] = [
    # amount
    ("fraction-above-1", S, lambda: call(w(), 1.5), ValueError, "amount"),
    ("fraction-below-0", S, lambda: call(w(), -0.1), ValueError, "amount"),
    ("fraction-nan", S, lambda: call(w(), float("nan")), ValueError, "amount"),
    ("fraction-inf", S, lambda: call(w(), float("inf")), ValueError, "amount"),
    ("count-negative", S, lambda: call(w(), -1), ValueError, "amount"),
    ("count-above-alive", S, lambda: call(w(), 6), ValueError, "amount"),
    ("count-above-alive-masked", S, lambda: call(w(), 5, masks=m()), ValueError, "amount"),
    ("count-above-layer", S, lambda: call(w(), 3, scope="layer"), ValueError, "amount"),
    ("count-huge", S, lambda: call(w(), 2**70), ValueError, "amount"),
    ("amount-bool", S, lambda: call(w(), True), TypeError, "amount"),
    ("amount-numpy-bool", S, lambda: call(w(), np.bool_(False)), TypeError, "amount"),
    ("amount-str", S, lambda: call(w(), "0.5"), TypeError, "amount"),
    ("amount-none", S, lambda: call(w(), None), TypeError, "amount"),
    ("scope", S, lambda: call(w(), 0.5, scope="local"), ValueError, "scope"),
    # weight dtypes and containers
    ("weights-bool", S, lambda: call([w()[0], np.ones(2, bool)], 0.5), TypeError, "weights[1]"),
    ("weights-int", S, lambda: call([np.arange(3, dtype=np.int32)], 0.5), TypeError, "weights[0]"),
    ("weights-complex", S, lambda: call([w()[0], np.ones(2, np.complex64)], 0.5), TypeError, "weights[1]"),
    ("weights-int-dict", S, lambda: call(named([np.arange(3)]), 0.5), TypeError, "weights['fc.weight']"),
    ("weights-torch-int", S, lambda: call([torch.arange(4)], 0.5), TypeError, "weights[0]"),
    ("weights-list-of-lists", S, lambda: call([[1.0, 2.0]], 0.5), TypeError, "weights[0]"),
    ("weights-single-array", S, lambda: call(w()[0], 0.5), TypeError, "weights"),
    ("weights-single-tensor", S, lambda: call(torch.ones(3), 0.5), TypeError, "weights"),
    ("weights-none", S, lambda: call(None, 0.5), TypeError, "weights"),
    ("weights-empty-list", S, lambda: call([], 0.5), ValueError, "weights"),
    ("weights-empty-dict", S, lambda: call({}, 0.5), ValueError, "weights"),
    # NaN among alive weights: the message names the tensor
    ("nan-alive", S, lambda: call(with_nan(), 0.5), ValueError, "weights[1]"),
    ("nan-alive-layer", S, lambda: call(with_nan(), 0.5, scope="layer"), ValueError, "weights[1]"),
    ("nan-alive-dict", S, lambda: call(named(with_nan()), 0.5), ValueError, "weights['fc.bias']"),
    # masks for selection
    ("masks-shape", S, lambda: call(w(), 0.5, masks=[m()[0], np.ones(2, bool)]), ValueError, "masks[1]"),
    ("masks-uint8", S, lambda: call(w(), 0.5, masks=[np.ones(3, np.uint8), m()[1]]), TypeError, "masks[0]"),
    ("masks-length", S, lambda: call(w(), 0.5, masks=m()[:1]), ValueError, "masks"),
    ("masks-dict-keys", S, lambda: call(named(w()), 0.5, masks={"fc.weight": m()[0]}), ValueError, "masks"),
    ("masks-dict-for-list", S, lambda: call(w(), 0.5, masks=named(m())), TypeError, "masks"),
    ("masks-single-array", S, lambda: call([w()[0]], 0.5, masks=m()[0]), TypeError, "masks"),
    # apply_masks
    ("apply-read-only", A, lambda: call([read_only(w()[0]), w()[1]], m()), ValueError, "weights[0]"),
    ("apply-non-contiguous", A, lambda: call([transposed((3, 2))], [np.ones((3, 2), bool)]), ValueError, "weights[0]"),
    ("apply-torch-non-contiguous", A, lambda: call([torch.ones(2, 3).T], [t_bool(3, 2)]), ValueError, "weights[0]"),
    ("apply-same-array-twice", A, lambda: call(aliased_pair(), [np.ones(2, bool)] * 2), ValueError, "weights[1]"),
    ("apply-mask-inside-weight", A, lambda: call(*weight_and_its_mask()), ValueError, "masks[0]"),
    ("apply-mask-shape", A, lambda: call(w(), [np.ones(4, bool), m()[1]]), ValueError, "masks[0]"),
    ("apply-mask-dtype", A, lambda: call(w(), [m()[0], np.ones((1, 2))]), TypeError, "masks[1]"),
    ("apply-masks-length", A, lambda: call(w(), m()[:1]), ValueError, "masks"),
    ("apply-masks-dict-keys", A, lambda: call(named(w()), {"fc.weight": m()[0]}), ValueError, "masks"),
    ("apply-weights-bool", A, lambda: call([np.ones(3, bool)], m()[:1]), TypeError, "weights[0]"),
    ("apply-empty", A, lambda: call([], []), ValueError, "weights"),
    ("apply-single-array", A, lambda: call(w()[0], m()[0]), TypeError, "weights"),
    # rewind
    ("rewind-snapshot-shape", R, lambda: call(w(), [w()[0], np.ones(2, np.float16)], m()), ValueError, "snapshots[1]"),
    ("rewind-snapshot-dtype", R, lambda: call(w(), [w()[0].astype(float), w()[1]], m()), TypeError, "snapshots[0]"),
    ("rewind-snapshot-int", R, lambda: call(w(), [np.arange(3), w()[1]], m()), TypeError, "snapshots[0]"),
    (
        "rewind-snapshot-bf16",
        R,
        lambda: call([torch.ones(3)], [torch.ones(3, dtype=torch.bfloat16)], [t_bool(3)]),
        TypeError,
        "snapshots[0]",
    ),
    ("rewind-snapshot-aliases-weight", R, lambda: call(*same_weight_as_snapshot()), ValueError, "snapshots[0]"),
    ("rewind-snapshots-length", R, lambda: call(w(), w()[:1], m()), ValueError, "snapshots"),
    ("rewind-snapshots-keys", R, lambda: call(named(w()), {"fc.weight": w()[0]}, named(m())), ValueError, "snapshots"),
    ("rewind-read-only", R, lambda: call([read_only(w()[0]), w()[1]], w(), m()), ValueError, "weights[0]"),
    (
        "rewind-non-contiguous",
        R,
        lambda: call([transposed((3, 2))], [np.ones((3, 2), np.float32)], [np.ones((3, 2), bool)]),
        ValueError,
        "weights[0]",
    ),
    (
        "rewind-same-array-twice",
        R,
        lambda: call(aliased_pair(), [np.ones(2, np.float32)] * 2, [np.ones(2, bool)] * 2),
        ValueError,
        "weights[1]",
    ),
    ("rewind-mask-dtype", R, lambda: call(w(), w(), [np.ones(3, np.int8), m()[1]]), TypeError, "masks[0]"),
    # issue #14: byte order, alignment, shared storage, 0-d shapes
    ("apply-big-endian", A, lambda: call([np.ones(3, ">f4")], m()[:1]), TypeError, "weights[0]"),
    (
        "rewind-big-endian",
        R,
        lambda: call(named([np.ones(3, ">f4")]), named(w()[:1]), named(m()[:1])),
        TypeError,
        "weights['fc.weight']",
    ),
    (
        "apply-unaligned",
        A,
        lambda: call([np.zeros(13, np.uint8)[1:].view(np.float32)], m()[:1]),
        ValueError,
        "weights[0]",
    ),
    ("select-shared-storage", S, lambda: call(dict(a=(x := w()[0]), b=x), 1), ValueError, "weights['b']"),
    ("select-mask-0d-for-1d", S, lambda: call([w()[0]], 1, masks=[np.array(True)]), ValueError, "masks[0]"),
    (
        "rewind-0d-snapshot-for-1d",
        R,
        lambda: call([np.ones(1)], [np.array(1.0)], [np.array([True])]),
        ValueError,
        "snapshots[0]",
    ),
    # a later round written in place (out=masks): the masks are checked as out
    ("in-place-mask-inside-a-weight", S, lambda: in_place(*weight_and_its_mask()), ValueError, "weights[0]: shares"),
    ("in-place-masks-overlap", S, lambda: in_place(w(), overlapping_masks()), ValueError, "out[1]: shares memory"),
    ("in-place-read-only-mask", S, lambda: in_place(w(), [read_only(m()[0]), m()[1]]), ValueError, "out[0]"),
    ("in-place-strided-mask", S, lambda: in_place(w(), [m()[0], np.ones((2, 2), bool)[:, :1].T]), ValueError, "out[1]"),
    ("in-place-mask-dtype", S, lambda: in_place(w(), [np.ones(3, np.uint8), m()[1]]), TypeError, "masks[0]"),
    ("in-place-mask-shape", S, lambda: in_place(w(), [m()[0], np.ones(2, bool)]), ValueError, "masks[1]"),
    # alive_counts
    ("counts-dtype", alive_counts, lambda: call([np.ones(3)]), TypeError, "masks[0]"),
    ("counts-empty", alive_counts, lambda: call([]), ValueError, "masks"),
    ("counts-single-array", alive_counts, lambda: call(np.ones(3, bool)), TypeError, "masks"),
]


def arrays_in(obj: Any) -> list[Any]:
    """Every NumPy array and torch tensor inside nested lists, tuples and dicts."""
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return [obj]
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [a for x in obj for a in arrays_in(x)]
    return []


def raw_bytes(x: Any) -> bytes:
    if isinstance(x, torch.Tensor):
        return bytes(x.contiguous().view(torch.uint8).numpy()) if x.numel() else b""
    return bytes(np.ascontiguousarray(x).view(np.uint8))


@pytest.mark.parametrize(("func", "build", "error", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(func: Callable[..., Any], build: Build, error: type[Exception], names: str) -> None:
    args, kwargs = build()
    inputs = arrays_in([args, kwargs])
    before = [raw_bytes(x) for x in inputs]
    with pytest.raises(error) as info:
        func(*args, **kwargs)
    assert names in str(info.value), f"message {str(info.value)!r} does not name {names!r}"
    assert [raw_bytes(x) for x in inputs] == before, "an input was modified"


def test_huge_count_is_reported_as_a_count() -> None:
    with pytest.raises(ValueError, match="amount: a count") as info:
        global_magnitude_masks(w(), 2**70)
    assert "fraction" not in str(info.value)


def test_case_ids_are_unique() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))
