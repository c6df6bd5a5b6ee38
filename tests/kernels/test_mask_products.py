"""kernels.mask_products: torch.nn.utils.prune's float mask and masked weight in one pass."""

from __future__ import annotations

import numpy as np
import pytest

from lottery_ticket.kernels import mask_products


def _same_bits(got: np.ndarray, want: np.ndarray) -> bool:
    """Bit for bit (so -0.0 is not 0.0), NaN where NaN: which NaN a multiply returns is the
    hardware's (x86 gives 0 * inf a negative one), and 16-bit products come from bits."""
    nan = np.isnan(want)
    return (
        got.dtype == want.dtype and bool((np.isnan(got) == nan).all()) and got[~nan].tobytes() == want[~nan].tobytes()
    )


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_numpy_masks_and_products_are_float_products(dtype: type) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((70, 33)).astype(dtype)
    w[0, :2] = [np.inf, -5.0]
    keep = rng.random(w.shape) < 0.6
    keep[0, :2] = False
    masks, products = mask_products({"a": w}, {"a": keep})
    assert masks["a"].dtype == dtype and products["a"].dtype == dtype
    np.testing.assert_array_equal(masks["a"], keep.astype(dtype))
    with np.errstate(invalid="ignore"):
        expected = keep.astype(dtype) * w
    # Bits, not values: the pruned -5.0 gives -0.0 and the pruned infinity NaN, as torch's product.
    assert _same_bits(products["a"], expected)
    assert np.signbit(products["a"][0, 1]) and np.isnan(products["a"][0, 0])
    assert mask_products([w], [keep], products=False)[1] is None


def test_torch_tensors_come_back_as_tensors() -> None:
    torch = pytest.importorskip("torch")
    w = [torch.randn(5, 4), torch.randn(3, dtype=torch.float64)]
    keep = [w[0] > 0, w[1] > 0]
    masks, products = mask_products(w, keep)
    for m, p, x, k in zip(masks, products, w, keep):
        assert isinstance(m, torch.Tensor) and m.dtype == x.dtype and m.shape == x.shape
        assert torch.equal(m, k.to(x.dtype)) and torch.equal(p, m * x)


@pytest.mark.parametrize("name", ["bfloat16", "float16"])
@pytest.mark.parametrize("custom", [False, True])
def test_half_precision_tensors_match_torchs_products(name: str, custom: bool) -> None:
    """bf16 and f16 (bf16 exists only as torch tensors): the mask and ``mask * w`` torch computes,
    bit for bit where not NaN, with binary previous masks (the vectorised route) and custom ones."""
    torch = pytest.importorskip("torch")
    dtype = getattr(torch, name)
    g = torch.Generator().manual_seed(2)
    w = [torch.randn(70_001, generator=g).to(dtype), torch.randn(9, 33, generator=g).to(dtype)]
    w[0][:4] = torch.tensor([float("inf"), -5.0, -0.0, 2.0**-20])  # infinite, negative, -0, tiny
    keep = [torch.rand(x.shape, generator=g) < 0.6 for x in w]
    keep[0][:4] = False
    values = [1.0, 0.0, -0.0] + ([0.5, -1.0, float("inf")] if custom else [])
    picks = torch.randint(len(values), w[0].shape, generator=g)
    previous = torch.tensor(values, dtype=dtype)[picks]
    masks, products = mask_products(w, keep, previous=[previous, None])
    want = previous * torch.where(previous == 1, keep[0].to(dtype), previous)
    for got, expected in ((masks[0], want), (products[0], want * w[0]), (masks[1], keep[1].to(dtype))):
        assert got.dtype == dtype and got.shape == expected.shape
        assert torch.equal(got.isnan(), expected.isnan())
        same = got.isnan() | (got.view(torch.int16) == expected.view(torch.int16))  # -0 apart from +0
        assert bool(same.all())
    assert torch.equal(products[1], keep[1].to(dtype) * w[1])


@pytest.mark.parametrize(
    ("weights", "keep", "error", "match"),
    [
        ([np.ones(3, np.float32)], [np.ones(4, bool)], ValueError, r"keep\[0\]"),
        ([np.ones(3, np.float32)], [np.ones(3, np.float32)], TypeError, r"keep\[0\]"),
        ([np.ones(3, np.float32)], [], ValueError, "keep"),
        (
            {"a": np.ones(3, np.float32)},
            {"b": np.ones(3, bool)},
            ValueError,
            "keep: expected a dict with the same keys",
        ),
        ([np.ones(3, np.int32)], [np.ones(3, bool)], TypeError, r"weights\[0\]"),
    ],
)
def test_bad_inputs_name_the_argument(weights: object, keep: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        mask_products(weights, keep)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_a_previous_mask_is_multiplied_in_per_entry(dtype: type) -> None:
    # torch's combination of a repeated pruning's masks: a ranked entry (previous 1) takes keep,
    # any other previous value is multiplied in again; a None entry is a first pruning.
    rng = np.random.default_rng(1)
    w = [rng.standard_normal((9, 40)).astype(dtype), rng.standard_normal(50).astype(dtype)]
    keep = [rng.random(x.shape) < 0.5 for x in w]
    previous = rng.choice(np.array([0.0, 1.0, 1.0, 0.5, -0.0, -1.0, np.inf], dtype=dtype), size=w[0].shape)
    masks, products = mask_products(w, keep, previous=[previous, None])
    with np.errstate(invalid="ignore"):
        first = previous * np.where(previous == 1, keep[0].astype(dtype), previous)
        assert _same_bits(masks[0], first)
        assert _same_bits(products[0], first * w[0])
    np.testing.assert_array_equal(masks[1], keep[1].astype(dtype))
    assert _same_bits(products[1], keep[1].astype(dtype) * w[1])
    only_masks, none = mask_products({"a": w[1]}, {"a": keep[1]}, previous={"a": masks[1]}, products=False)
    assert none is None and only_masks["a"].tobytes() == masks[1].tobytes()


@pytest.mark.parametrize(
    ("previous", "error", "match"),
    [
        ([np.ones(4, np.float32)], ValueError, r"previous\[0\]: dtype float32 and shape \(4,\)"),
        ([np.ones(3, np.float64)], ValueError, r"previous\[0\]: dtype float64"),
        ([np.ones(3, bool)], TypeError, r"previous\[0\]"),
        ([], ValueError, "previous: expected at least one array"),
        ([None, None], ValueError, "previous: expected 1 entries"),
        ({"a": np.ones(3, np.float32)}, TypeError, "previous: expected a list like weights"),
    ],
)
def test_bad_previous_masks_name_the_argument(previous: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        mask_products([np.ones(3, np.float32)], [np.ones(3, bool)], previous=previous)
