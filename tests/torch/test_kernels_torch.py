"""The kernels on torch CPU tensors: zero-copy, in place, every float dtype bf16 included."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import torch
from lottery_ticket import alive_counts, apply_masks, global_magnitude_masks, rewind
from lottery_ticket.kernels import Scope
from torch import nn

Reference = Callable[..., list[np.ndarray]]  # the `reference` fixture of conftest.py
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def tied(shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """Values from a handful, exact in every dtype: ties within and across tensors."""
    pool = torch.tensor([0.0, -0.0, 0.5, -0.5, 1.0, -2.0, float("inf")], dtype=torch.float64)
    return pool[torch.randint(len(pool), shape, generator=gen)].to(dtype)


def random(shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)


def assert_masks(got: list[torch.Tensor], want: list[np.ndarray]) -> None:
    for g, w in zip(got, want):
        assert isinstance(g, torch.Tensor) and g.dtype == torch.bool and g.device.type == "cpu"
        assert tuple(g.shape) == w.shape
        np.testing.assert_array_equal(g.numpy(), w)


@pytest.mark.parametrize("make", [tied, random])
@pytest.mark.parametrize("dtype", DTYPES)
def test_masks_are_bool_tensors_matching_reference(
    reference: Reference, dtype: torch.dtype, make: Callable[..., torch.Tensor]
) -> None:
    gen = torch.Generator().manual_seed(DTYPES.index(dtype))
    weights = [make((5, 7), dtype, gen), make((3, 2, 2), dtype, gen), make((11,), dtype, gen)]
    for amount in [0.0, 0.3, 0.5, 1.0, 0, 9, 11, 58]:  # 58 = every weight
        scopes: list[Scope] = ["global", "layer"]
        for scope in scopes:
            if scope == "layer" and isinstance(amount, int) and amount > 11:
                continue
            got = global_magnitude_masks(weights, amount, scope=scope)
            assert_masks(got, reference(weights, amount, scope=scope))


def test_mixed_dtypes_including_bf16(reference: Reference) -> None:
    gen = torch.Generator().manual_seed(1)
    weights = [tied((6, 6), d, gen) for d in DTYPES] + [random((40,), d, gen) for d in DTYPES]
    masks = None
    want = None
    for amount in [0.2, 0.5, 5]:
        masks = global_magnitude_masks(weights, amount, masks=masks)
        want = reference(weights, amount, want)
        assert_masks(masks, want)


def test_bf16_ties_across_dtypes_break_by_tensor_order() -> None:
    weights = [torch.tensor([1.0, 0.5], dtype=torch.bfloat16), torch.tensor([0.5, 1.0], dtype=torch.float64)]
    got = global_magnitude_masks(weights, 3)
    assert [g.tolist() for g in got] == [[False, False], [False, True]]


def test_fresh_masks_are_disjoint_views_that_go_back_as_masks_and_out(reference: Reference) -> None:
    gen = torch.Generator().manual_seed(4)
    shapes = [(4, 5), (0, 3), (7,), (0,), (2, 3, 2)]
    weights = [random(s, torch.float32, gen) for s in shapes]
    first = global_magnitude_masks(weights, 0.4)
    want = reference(weights, 0.4)
    assert_masks(first, want)
    spans = sorted((m.data_ptr(), m.data_ptr() + m.numel()) for m in first)
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:])), "masks overlap"
    assert all(m.is_contiguous() for m in first)
    assert_masks(global_magnitude_masks(weights, 0.5, masks=first), reference(weights, 0.5, want))
    same = global_magnitude_masks(weights, 0.5, masks=first, out=first)
    assert same is first
    assert_masks(first, reference(weights, 0.5, want))


def test_large_bf16_above_sample_size(reference: Reference) -> None:
    gen = torch.Generator().manual_seed(2)
    weights = [random((600, 500), torch.bfloat16, gen), tied((1000,), torch.float16, gen)]
    for amount in [0.37, 100_000]:
        assert_masks(global_magnitude_masks(weights, amount), reference(weights, amount))


@pytest.mark.parametrize("dtype", DTYPES)
def test_apply_masks_modifies_the_tensor_itself(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(3)
    w = random((8, 9), dtype, gen)
    original = w.clone()
    ptr = w.data_ptr()
    mask = global_magnitude_masks([w], 0.5)[0]
    apply_masks([w], [mask])
    assert w.data_ptr() == ptr
    assert torch.equal(w[mask], original[mask])
    assert (w[~mask] == 0).all() and not torch.signbit(w[~mask]).any()
    apply_masks([w], [mask])
    assert torch.equal(w[mask], original[mask]) and (w[~mask] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_rewind_modifies_the_tensor_itself(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(4)
    init = random((10, 3), dtype, gen)
    w = (init.double() * 3 + 1).to(dtype)
    ptr = w.data_ptr()
    mask = global_magnitude_masks([w], 0.4)[0]
    rewind([w], [init], [mask])
    assert w.data_ptr() == ptr
    # Bit-exact: compare raw bits (bf16 has no NumPy dtype, so view as int16).
    bits = w.view(torch.int16 if w.element_size() == 2 else {4: torch.int32, 8: torch.int64}[w.element_size()])
    init_bits = init.view(bits.dtype)
    assert torch.equal(bits[mask], init_bits[mask]) and (bits[~mask] == 0).all()


def test_parameters_with_requires_grad() -> None:
    torch.manual_seed(5)
    p = nn.Parameter(torch.randn(6, 4))
    assert p.requires_grad
    before = p.detach().clone()
    masks = global_magnitude_masks([p], 0.5)
    assert masks[0].dtype == torch.bool and not masks[0].requires_grad
    apply_masks([p], masks)
    assert p.requires_grad and isinstance(p, nn.Parameter)
    assert torch.equal(p.detach()[masks[0]], before[masks[0]]) and (p.detach()[~masks[0]] == 0).all()
    # Autograd still works on the pruned parameter.
    (p * 2).sum().backward()  # type: ignore[no-untyped-call]
    assert p.grad is not None and torch.equal(p.grad, torch.full_like(p, 2.0))


def _model() -> nn.Sequential:
    torch.manual_seed(6)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def test_state_dict_and_named_parameters(reference: Reference) -> None:
    net = _model()
    state = net.state_dict()
    masks = global_magnitude_masks(state, 0.6)
    assert isinstance(masks, dict) and list(masks) == list(state)
    assert_masks(list(masks.values()), reference(list(state.values()), 0.6))

    params = dict(net.named_parameters())
    assert list(params) == list(state)
    same = global_magnitude_masks(params, 0.6)
    assert all(torch.equal(same[k], masks[k]) for k in masks)
    assert alive_counts(masks) == {k: int(m.sum()) for k, m in masks.items()}

    init = {k: v.clone() for k, v in state.items()}
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    apply_masks(params, masks)  # through the parameters: the module itself is pruned
    for name, p in net.named_parameters():
        assert (p.detach()[~masks[name]] == 0).all()
    rewind(net.state_dict(), init, masks)  # through the state_dict: shares storage with the module
    for name, p in net.named_parameters():
        assert torch.equal(p.detach()[masks[name]], init[name][masks[name]])
        assert (p.detach()[~masks[name]] == 0).all()


def test_meta_tensor_raises_value_error_and_modifies_nothing() -> None:
    cpu = torch.tensor([1.0, -2.0, 3.0])
    meta = torch.empty(3, device="meta")
    mask = torch.tensor([False, True, True])
    with pytest.raises(ValueError, match=r"weights\[1\].*meta"):
        global_magnitude_masks([cpu, meta], 0.5)
    with pytest.raises(ValueError, match=r"weights\[1\].*meta"):
        apply_masks([cpu, meta], [mask, mask])
    with pytest.raises(ValueError, match=r"weights\['b'\].*meta"):
        rewind({"a": cpu, "b": meta}, {"a": cpu.clone(), "b": meta}, {"a": mask, "b": mask})
    with pytest.raises(ValueError, match=r"masks\[1\].*meta"):
        apply_masks([cpu, cpu.clone()], [mask, torch.empty(3, dtype=torch.bool, device="meta")])
    assert cpu.tolist() == [1.0, -2.0, 3.0]


def test_numpy_masks_for_torch_weights(reference: Reference) -> None:
    gen = torch.Generator().manual_seed(7)
    w = [tied((4, 4), torch.float32, gen)]
    survivors = [np.random.default_rng(0).random((4, 4)) < 0.5]
    got = global_magnitude_masks(w, 0.5, masks=survivors)
    assert isinstance(got[0], torch.Tensor)
    assert_masks(got, reference(w, 0.5, survivors))


def test_transposed_tensor_selects_on_the_logical_tensor(reference: Reference) -> None:
    gen = torch.Generator().manual_seed(8)
    base = tied((5, 8), torch.bfloat16, gen)
    view = base.T
    assert not view.is_contiguous()
    got = global_magnitude_masks([view], 0.5)
    assert tuple(got[0].shape) == (8, 5)
    assert_masks(got, reference([view.contiguous()], 0.5))


def test_mask_applier_reapplies_masks_after_in_place_updates() -> None:
    from lottery_ticket import MaskApplier

    layer = torch.nn.Linear(4, 3)
    masks = {"weight": torch.rand(3, 4) > 0.5, "bias": torch.ones(3, dtype=torch.bool)}
    params = dict(layer.named_parameters())
    reapply = MaskApplier(params, masks)
    with torch.no_grad():
        layer.weight.add_(1.0)  # an optimizer step moves pruned weights
    expected = layer.weight.detach().clone() * masks["weight"]
    reapply()
    assert torch.equal(layer.weight.detach(), expected)
    assert int((layer.weight.detach()[~masks["weight"]] != 0).sum()) == 0


def test_mask_applier_refuses_a_swapped_storage_and_leaves_it_alone() -> None:
    from lottery_ticket import MaskApplier

    layer = torch.nn.Linear(4, 3)
    reapply = MaskApplier({"weight": layer.weight}, {"weight": torch.zeros(3, 4, dtype=torch.bool)})
    layer.weight.data = torch.ones(3, 4)
    with pytest.raises(RuntimeError, match=r"weights\['weight'\]: storage was replaced"):
        reapply()
    assert torch.equal(layer.weight.detach(), torch.ones(3, 4))


def test_mask_applier_validates_like_apply_masks() -> None:
    from lottery_ticket import MaskApplier

    with pytest.raises(ValueError, match="masks"):
        MaskApplier([torch.zeros(3)], [torch.ones(4, dtype=torch.bool)])
