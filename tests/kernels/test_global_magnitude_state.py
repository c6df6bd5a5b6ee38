"""kernels.global_magnitude_state: the selection's masks and torch.prune's state in one pass,
equal bit for bit to `global_magnitude_masks` followed by `mask_products`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import torch
from lottery_ticket import _core
from lottery_ticket.kernels import PrunedState, global_magnitude_masks, global_magnitude_state, mask_products


def _bits(x: Any) -> bytes:
    t = torch.as_tensor(x)
    return t.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]).numpy().tobytes()


def _weights(dtype: torch.dtype, sizes: list[int], seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(n, generator=g).to(dtype) for n in sizes]
    weights[0][:3] = torch.tensor([float("-inf"), -0.0, -1e-30])  # pruned: NaN, -0.0, -0.0 products
    return weights


def _two_calls(weights: Any, amount: Any, masks: Any = None, scope: str = "global", products: bool = True) -> tuple:
    keep = global_magnitude_masks(weights, amount, masks=masks, scope=scope)
    float_masks, made = mask_products(weights, keep, products=products)
    return keep, float_masks, made


def _assert_same(one: PrunedState, two: tuple, keys: Any) -> None:
    """`one`'s state is the two calls' (its bool masks too, unless it kept none)."""
    keep, float_masks, made = two
    for key in keys:
        if one.keep is not None:
            assert torch.equal(torch.as_tensor(one.keep[key]), torch.as_tensor(keep[key]))
        assert _bits(one.masks[key]) == _bits(float_masks[key])
        if made is None:
            assert one.products is None
        else:
            assert _bits(one.products[key]) == _bits(made[key])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("sizes", [[3000, 17, 800], [400_000, 1, 200_000]], ids=["serial", "parallel"])
def test_equals_the_selection_then_mask_products(dtype: torch.dtype, sizes: list[int]) -> None:
    weights = _weights(dtype, sizes, seed=len(sizes) + sizes[0])
    for amount in (0.2, 0.9, 1, 0.0, 1.0):
        two = _two_calls(weights, amount)
        for keep in (True, False):
            one = global_magnitude_state(weights, amount, keep=keep)
            assert (one.keep is None) == (not keep)
            _assert_same(one, two, range(len(weights)))
            assert all(m.dtype == dtype and m.shape == w.shape for m, w in zip(one.masks, weights))


def test_survivors_layer_scope_dicts_and_no_products() -> None:
    rng = np.random.default_rng(3)
    weights = {"a": rng.standard_normal((300, 70)).astype(np.float32), "b": rng.standard_normal(999).astype(np.float32)}
    survivors = {k: rng.random(w.shape) < 0.7 for k, w in weights.items()}
    for scope in ("global", "layer"):
        for products in (True, False):
            bare = global_magnitude_state(weights, 0.4, masks=survivors, scope=scope, products=products, keep=False)
            one = global_magnitude_state(weights, 0.4, masks=survivors, scope=scope, products=products)
            two = _two_calls(weights, 0.4, survivors, scope, products)
            _assert_same(one, two, weights)
            _assert_same(bare, two, weights)
            assert bare.keep is None
            assert isinstance(one.masks["a"], np.ndarray) and one.masks["a"].dtype == np.float32
            # Already-pruned weights stay pruned, with a zero float mask.
            assert not one.keep["a"][~survivors["a"]].any() and (one.masks["a"][~survivors["a"]] == 0).all()


def test_heavy_ties_still_match() -> None:
    """Few distinct magnitudes over many weights (ties handed out in order across chunks): the
    state is of the final masks. The Rust tests assert each branch, the exact fallback too."""
    weights = [torch.tensor([0.5, -0.5, 1.0, -1.0]).repeat(150_000), torch.full((70_000,), -0.25)]
    for amount in (0.3, 0.5, 300_001):
        two = _two_calls(weights, amount)
        for keep in (True, False):
            _assert_same(global_magnitude_state(weights, amount, keep=keep), two, range(2))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"amount": 1.5}, ValueError, "amount"),
        ({"amount": True}, TypeError, "amount"),
        ({"scope": "row"}, ValueError, "scope"),
        ({"masks": [np.ones(3, dtype=bool)]}, ValueError, "masks"),
    ],
)
@pytest.mark.parametrize("keep", [True, False])
def test_bad_arguments_are_named_and_nothing_is_modified(kwargs: dict, error: type, match: str, keep: bool) -> None:
    w = [np.arange(12, dtype=np.float32).reshape(3, 4)]
    before = w[0].copy()
    args = {"weights": w, "amount": 0.5, "keep": keep} | kwargs
    with pytest.raises(error, match=match):
        global_magnitude_state(**args)
    np.testing.assert_array_equal(w[0], before)


def test_nan_and_integer_weights_are_refused_by_name() -> None:
    w = np.ones(10, dtype=np.float32)
    w[4] = np.nan
    for keep in (True, False):
        with pytest.raises(ValueError, match=r"weights\[1\].*NaN"):
            global_magnitude_state([np.ones(5, dtype=np.float32), w], 0.5, keep=keep)
    with pytest.raises(TypeError, match=r"weights\[0\]"):
        global_magnitude_state([np.ones(5, dtype=np.int32)], 0.5)


def test_the_binding_refuses_a_selection_with_no_output() -> None:
    """Without bool masks (``out`` None) the state is the only result: a call with neither would
    rank for nothing, and is refused before any work."""
    w = np.ones(8, dtype=np.float32)
    with pytest.raises(ValueError, match="out: required unless state"):
        _core.select_masks([w.view(np.uint32)], ["f32"], None, None, 0.5, "global", ["weights[0]"])
