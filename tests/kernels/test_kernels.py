"""Differential tests of the kernels (NumPy arrays) against the stable-argsort reference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from lottery_ticket import alive_counts, apply_masks, global_magnitude_masks, rewind
from lottery_ticket.kernels import Scope

DTYPES = [np.float16, np.float32, np.float64]
KINDS = ["random", "tied", "edge"]
SCOPES: list[Scope] = ["global", "layer"]
Reference = Callable[..., list[np.ndarray]]  # the `reference` fixture of conftest.py
SAMPLE_SIZE = 1 << 18  # above this many elements the kernel brackets the threshold by sampling


def edge_values(dtype: Any) -> np.ndarray:
    """±0, smallest subnormal, smallest normal, 1, largest finite, ±inf of `dtype`."""
    info = np.finfo(dtype)
    pos = np.array([0.0, info.smallest_subnormal, info.tiny, 1.0, info.max, np.inf], dtype=dtype)
    return np.concatenate([pos, -pos])


def make(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any, kind: str) -> np.ndarray:
    if kind == "random":
        return rng.standard_normal(shape).astype(dtype)
    if kind == "tied":  # a handful of values, exact in every dtype: ties within and across tensors
        return rng.choice(np.array([0.0, -0.0, 0.5, -0.5, 1.0, -2.0]), shape).astype(dtype)
    return rng.choice(edge_values(dtype), shape)


def random_shape(rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(int(d) for d in rng.integers(1, 6, size=rng.integers(1, 5)))


def model(rng: np.random.Generator, dtypes: list[Any], kind: str) -> list[np.ndarray]:
    return [make(rng, random_shape(rng), d, kind) for d in dtypes]


def amounts(alive: int) -> list[int | float]:
    return [0, 0.0, 1.0, 0.2, 0.5, 0.75, 1, alive // 3, alive]


def assert_same(got: list[Any], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert isinstance(g, np.ndarray) and g.dtype == np.bool_ and g.shape == w.shape
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_selection_matches_reference(reference: Reference, dtype: Any, kind: str, scope: Scope) -> None:
    rng = np.random.default_rng([DTYPES.index(dtype), KINDS.index(kind), scope == "layer"])
    for _ in range(3):
        weights = model(rng, [dtype] * int(rng.integers(1, 5)), kind)
        fewest = min(w.size for w in weights) if scope == "layer" else sum(w.size for w in weights)
        for amount in amounts(fewest):
            got = global_magnitude_masks(weights, amount, scope=scope)
            assert_same(got, reference(weights, amount, scope=scope))


@pytest.mark.parametrize("kind", KINDS)
def test_mixed_dtypes_in_one_call(reference: Reference, kind: str) -> None:
    rng = np.random.default_rng(1)
    weights = model(rng, [np.float16, np.float64, np.float32, np.float16], kind)
    for amount in amounts(sum(w.size for w in weights)):
        assert_same(global_magnitude_masks(weights, amount), reference(weights, amount))


def test_dict_input_returns_dict_with_same_keys(reference: Reference) -> None:
    rng = np.random.default_rng(2)
    weights = {"fc2.weight": make(rng, (4, 3), np.float32, "tied"), "fc1.bias": make(rng, (5,), np.float16, "tied")}
    got = global_magnitude_masks(weights, 0.5)
    assert isinstance(got, dict) and list(got) == list(weights)
    assert_same(list(got.values()), reference(list(weights.values()), 0.5))
    # Survivors as a dict too, in another key order: matched by key, tie order is the weights' order.
    masks = {"fc1.bias": got["fc1.bias"], "fc2.weight": got["fc2.weight"]}
    again = global_magnitude_masks(weights, 3, masks=masks)
    assert list(again) == list(weights)
    assert_same(list(again.values()), reference(list(weights.values()), 3, list(got.values())))


def test_tuple_input_returns_list(reference: Reference) -> None:
    weights = (np.array([3.0, -1.0], np.float32), np.array([[0.5]], np.float64))
    got = global_magnitude_masks(weights, 2)
    assert isinstance(got, list)
    assert_same(got, reference(list(weights), 2))


def test_shapes_one_to_four_dims(reference: Reference) -> None:
    rng = np.random.default_rng(3)
    shapes = [(7,), (3, 4), (2, 3, 4), (2, 1, 3, 2)]
    weights = [make(rng, s, np.float32, "random") for s in shapes]
    got = global_magnitude_masks(weights, 0.4)
    assert [g.shape for g in got] == shapes
    assert_same(got, reference(weights, 0.4))


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("kind", ["random", "tied"])
def test_iterative_rounds_feed_masks_back(reference: Reference, kind: str, scope: Scope) -> None:
    rng = np.random.default_rng(4)
    weights = model(rng, [np.float32, np.float16, np.float64], kind)
    masks = want = None
    for amount in [0.2, 0.2, 0.5, 1, 0.0, 0.2]:
        masks = global_magnitude_masks(weights, amount, masks=masks, scope=scope)
        want = reference(weights, amount, want, scope=scope)
        assert_same(masks, want)
    assert masks is not None
    assert alive_counts(masks) == [int(m.sum()) for m in masks]


def test_rounding_of_fractions_is_half_to_even(reference: Reference) -> None:
    weights = [np.arange(1, 11, dtype=np.float32)]  # 10 alive: 0.25 -> 2.5 -> 2, 0.35 -> 3.5 -> 4
    assert (~global_magnitude_masks(weights, 0.25)[0]).sum() == 2
    assert (~global_magnitude_masks(weights, 0.35)[0]).sum() == round(0.35 * 10)
    assert_same(global_magnitude_masks(weights, 0.35), reference(weights, 0.35))


def test_ties_prune_earlier_tensor_and_index_first() -> None:
    weights = [np.array([[1.0, -1.0], [1.0, 0.5]], np.float32), np.array([-1.0, 1.0], np.float16)]
    got = global_magnitude_masks(weights, 3)
    assert got[0].tolist() == [[False, False], [True, False]]
    assert got[1].tolist() == [True, True]


def test_signed_zero_subnormal_and_infinity_order() -> None:
    tiny = np.finfo(np.float32).smallest_subnormal
    w = [np.array([np.inf, -0.0, tiny, 0.0, -np.inf, -tiny, 1e38], np.float32)]
    pruned_order: list[int] = []
    for k in range(w[0].size + 1):
        mask = global_magnitude_masks(w, k)[0]
        assert (~mask).sum() == k
        pruned_order.extend(int(i) for i in np.flatnonzero(~mask) if i not in pruned_order)
    assert pruned_order == [1, 3, 2, 5, 6, 0, 4]


@pytest.mark.parametrize("kind", ["random", "tied"])
def test_above_sample_size(reference: Reference, kind: str) -> None:
    rng = np.random.default_rng(5)
    weights = [make(rng, (300, 700), np.float32, kind), make(rng, (120_000,), np.float16, kind)]
    assert sum(w.size for w in weights) > SAMPLE_SIZE
    masks = [rng.random(w.shape) < 0.8 for w in weights]
    alive = int(sum(m.sum() for m in masks))
    for amount, survivors in [(0.3, None), (12_345, None), (0.6, masks), (alive - 7, masks)]:
        got = global_magnitude_masks(weights, amount, masks=survivors)
        assert_same(got, reference(weights, amount, survivors))
    # Layer scope: the first tensor alone is below the sample size, the second above.
    big = [weights[1], make(rng, (SAMPLE_SIZE + 1000,), np.float32, kind)]
    assert_same(global_magnitude_masks(big, 0.45, scope="layer"), reference(big, 0.45, scope="layer"))


def test_transposed_weights_select_on_the_logical_array(reference: Reference) -> None:
    rng = np.random.default_rng(6)
    base = [make(rng, (6, 9), np.float32, "tied"), make(rng, (4, 3, 5), np.float64, "random")]
    views = [base[0].T, base[1].transpose(2, 0, 1)[:, ::2]]
    assert not any(v.flags.c_contiguous for v in views)
    logical = [np.ascontiguousarray(v) for v in views]
    before = [b.copy() for b in base]
    for amount in [0.5, 7]:
        got = global_magnitude_masks(views, amount)
        assert [g.shape for g in got] == [v.shape for v in views]
        assert_same(got, reference(logical, amount))
    for b, old in zip(base, before):
        np.testing.assert_array_equal(b, old)


@pytest.mark.parametrize("dtype", DTYPES)
def test_apply_masks_zeroes_pruned_and_keeps_the_rest_bit_identical(dtype: Any) -> None:
    rng = np.random.default_rng(7)
    weights = model(rng, [dtype, dtype], "edge")
    original = [w.copy() for w in weights]
    masks = [rng.random(w.shape) < 0.5 for w in weights]
    apply_masks(weights, masks)
    for w, old, m in zip(weights, original, masks):
        bits = w.view(f"u{w.itemsize}")
        assert (bits[~m] == 0).all()  # exactly +0.0: no -0.0 left behind
        np.testing.assert_array_equal(bits[m], old.view(f"u{w.itemsize}")[m])
    once = [w.copy() for w in weights]
    apply_masks(weights, masks)  # idempotent
    for w, o in zip(weights, once):
        assert w.tobytes() == o.tobytes()


def test_apply_masks_on_dicts_in_place() -> None:
    weights: dict[str, np.ndarray] = {
        "a": np.array([1.0, -2.0, 3.0], np.float32),
        "b": np.array([[-0.0, 5.0]], np.float16),
    }
    a, b = weights["a"], weights["b"]
    apply_masks(weights, {"b": np.array([[True, False]]), "a": np.array([False, True, True])})
    assert weights["a"] is a and weights["b"] is b
    assert a.tolist() == [0.0, -2.0, 3.0] and b.tolist() == [[-0.0, 0.0]]
    assert np.signbit(b[0, 0]) and not np.signbit(a[0])  # kept -0.0 stays -0.0, pruned is +0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_rewind_restores_survivors_from_the_snapshot(dtype: Any) -> None:
    rng = np.random.default_rng(8)
    init = model(rng, [dtype, dtype, dtype], "random")
    weights = [(w + rng.standard_normal(w.shape)).astype(dtype) for w in init]
    snapshots = [w.copy() for w in init]
    masks = global_magnitude_masks(weights, 0.6)
    rewind(weights, snapshots, masks)
    for w, s, m in zip(weights, init, masks):
        bits, snap = w.view(f"u{w.itemsize}"), s.view(f"u{w.itemsize}")
        np.testing.assert_array_equal(bits[m], snap[m])
        assert (bits[~m] == 0).all()
    for s, i in zip(snapshots, init):
        assert s.tobytes() == i.tobytes()  # the snapshots are only read


def test_rewind_on_dicts() -> None:
    weights = {"w": np.array([9.0, 9.0, 9.0], np.float64)}
    rewind(weights, {"w": np.array([1.0, -0.0, 3.0])}, {"w": np.array([True, True, False])})
    assert weights["w"].tolist() == [1.0, -0.0, 0.0] and np.signbit(weights["w"][1])


def test_alive_counts() -> None:
    masks = [np.array([True, False, True]), np.zeros((2, 3), bool), np.ones((2, 2, 2), bool)]
    assert alive_counts(masks) == [2, 0, 8]
    assert alive_counts({"x": masks[0], "y": masks[2]}) == {"x": 2, "y": 8}
    big = np.random.default_rng(9).random(SAMPLE_SIZE) < 0.3
    assert alive_counts([big]) == [int(big.sum())]


def test_selection_does_not_modify_its_inputs() -> None:
    rng = np.random.default_rng(10)
    weights = model(rng, [np.float32, np.float16], "edge")
    masks = [rng.random(w.shape) < 0.7 for w in weights]
    before = [x.tobytes() for x in weights + masks]
    global_magnitude_masks(weights, 0.5, masks=masks)
    assert [x.tobytes() for x in weights + masks] == before
