"""The drop-in's float mask and masked weight against torch.nn.utils.prune's, bit for bit in every
float dtype, first round and later ones, with and without autograd."""

from __future__ import annotations

import copy

import pytest
from prune_hooks import hook_kinds
from torch.nn.utils import prune

import lottery_ticket.torch as ltt
import torch
from torch import nn

FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def same_bits(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    """Bit for bit (-0.0 is not 0.0), NaN where NaN: torch's NaN from 0 * inf is the hardware's in
    float32/float64 (compared exactly there) and differs between its scalar and vector bf16/f16
    paths, where ours comes from the bits."""
    ours, theirs = ours.detach(), theirs.detach()
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[ours.element_size()]
    if ours.dtype in (torch.float32, torch.float64):
        return torch.equal(ours.view(bits), theirs.view(bits))
    nan = theirs.isnan()
    return torch.equal(ours.isnan(), nan) and torch.equal(ours.view(bits)[~nan], theirs.view(bits)[~nan])


def distinct_16_bit(net: nn.Sequential, seed: int) -> nn.Sequential:
    """A bf16 or f16 net's weights made distinct in magnitude across the net (consecutive bit
    patterns, shuffled, random signs): torch's topk orders ties arbitrarily, and the init's
    values collide in 16 bits. Other dtypes are left as they are."""
    dtype = next(net.parameters()).dtype
    if dtype not in (torch.float16, torch.bfloat16):
        return net
    g = torch.Generator().manual_seed(seed)
    weights = [m.weight for m in net]
    total = sum(w.numel() for w in weights)
    start = 0x3000 if dtype == torch.float16 else 0x3D00
    magnitudes = (torch.randperm(total, generator=g) + start).to(torch.int16)
    signs = torch.where(torch.rand(total, generator=g) < 0.5, 0, -0x8000).to(torch.int16)
    values = (magnitudes | signs).view(dtype)
    with torch.no_grad():
        at = 0
        for w in weights:
            w.copy_(values[at : at + w.numel()].view(w.shape))
            at += w.numel()
    return net


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_first_mask_and_product_are_torchs_bit_for_bit(dtype: torch.dtype, grad: bool) -> None:
    # The one-pass host state (`kernels.mask_products`): pruned negatives are -0.0 and a pruned
    # infinity is NaN in torch's `mask * orig`; scores rank the weights so infinities can be pruned.
    torch.manual_seed(3)
    theirs = distinct_16_bit(nn.Sequential(nn.Linear(40, 30), nn.Linear(30, 5)).to(dtype), 3)
    with torch.no_grad():
        theirs[0].weight[0, :3] = torch.tensor([float("inf"), -float("inf"), -1e-30], dtype=dtype)
    ours = copy.deepcopy(theirs)
    scores = {(m, "weight"): m.weight.detach().abs().nan_to_num(posinf=0.0) for m in ours}
    their_scores = {(t, "weight"): scores[(o, "weight")] for t, o in zip(theirs, ours)}
    with torch.set_grad_enabled(grad):
        prune.global_unstructured(
            [(m, "weight") for m in theirs], prune.L1Unstructured, importance_scores=their_scores, amount=0.5
        )
        ltt.global_unstructured(
            [(m, "weight") for m in ours], prune.L1Unstructured, importance_scores=scores, amount=0.5
        )
    for t, o in zip(theirs, ours):
        assert o.weight_mask.dtype == dtype and torch.equal(o.weight_mask, t.weight_mask)
        # NaN != NaN: compare the bits (torch's product of 0 and inf is the default NaN).
        assert same_bits(o.weight, t.weight)
        assert (o.weight.grad_fn is None) == (t.weight.grad_fn is None) == (not grad)
        # Each module owns its buffers (a view of one shared buffer would save all of it).
        assert o.weight_mask.untyped_storage().nbytes() == o.weight_mask.numel() * o.weight_mask.element_size()
        assert o.weight.untyped_storage().nbytes() == o.weight.numel() * o.weight.element_size()
    assert bool(torch.isnan(ours[0].weight[0, :2]).all()) and str(ours[0].weight[0, 2].item()) == "-0.0"


def test_channels_last_parameter_keeps_its_memory_format() -> None:
    # torch's own global_unstructured cannot flatten it (a view error); its hook's product would
    # keep the parameter's strides, and so does ours (torch ops, not the one-pass kernel).
    conv = nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    orig = conv.weight.detach().clone()
    ltt.global_unstructured([(conv, "weight")], prune.L1Unstructured, amount=0.3)
    expected = conv.weight_mask * conv.weight_orig
    assert torch.equal(conv.weight, expected) and conv.weight.stride() == expected.stride() == orig.stride()
    assert conv.weight_mask.stride() == orig.stride() and int((conv.weight_mask == 0).sum()) == round(
        0.3 * orig.numel()
    )


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_later_round_masks_and_products_are_torchs_bit_for_bit(dtype: torch.dtype, grad: bool) -> None:
    # A later round combines the previous mask in the one-pass kernel (`previous * keep`). The
    # previous masks here are not all binary (a custom 0.5 and -1.0), one parameter is pruned
    # for the first time in the same call, and one has a mask of another dtype (torch's ops).

    def pruned_before() -> nn.Sequential:
        torch.manual_seed(4)
        net = distinct_16_bit(nn.Sequential(nn.Linear(30, 20), nn.Linear(20, 6), nn.Linear(6, 3)).to(dtype), 4)
        custom = torch.ones(20, 30, dtype=dtype)
        custom[0, :5] = torch.tensor([0.5, -1.0, 0.0, 1.0, 0.5], dtype=dtype)
        prune.custom_from_mask(net[0], "weight", custom)
        prune.random_unstructured(net[1], "weight", amount=0.3)
        other = torch.bfloat16 if dtype == torch.float16 else torch.float16
        net[1].weight_mask = net[1].weight_mask.to(other)  # not the parameter's dtype
        return net

    theirs, ours = pruned_before(), pruned_before()
    pairs = lambda net: [(m, "weight") for m in net]  # noqa: E731
    with torch.set_grad_enabled(grad):
        for amount in (0.3, 0.25):
            prune.global_unstructured(pairs(theirs), prune.L1Unstructured, amount=amount)
            ltt.global_unstructured(pairs(ours), prune.L1Unstructured, amount=amount)
    for t, o in zip(theirs, ours):
        assert o.weight_mask.dtype == t.weight_mask.dtype
        assert torch.equal(o.weight_mask, t.weight_mask)
        assert same_bits(o.weight, t.weight)
        assert (o.weight.grad_fn is None) == (t.weight.grad_fn is None) == (not grad)
        assert hook_kinds(o) == hook_kinds(t)
    # torch squares a mask value it does not rank, at each round: 0.5 -> 0.25 -> 0.0625.
    assert float(ours[0].weight_mask[0, 0]) == 0.0625


@pytest.mark.parametrize("dtype", FLOATS)
def test_survivors_of_a_float_mask_are_its_entries_equal_to_one(dtype: torch.dtype) -> None:
    # torch ranks only the entries whose previous mask is exactly 1: ours compares the bits on
    # the host (1.0 has one pattern), in one parallel pass over every mask (`ranked_again`), a
    # strided mask too; a parameter never pruned is all survivors.
    from lottery_ticket.kernels import ranked_again

    values = torch.tensor([1.0, 0.0, -0.0, 0.5, -1.0, float("inf"), float("nan"), 1.0 + 2**-7], dtype=dtype)
    big = values[torch.arange(600_000) % values.numel()].reshape(600, 1000)  # a parallel pass
    mask = big[:8, :8].clone()
    params = [torch.empty(8, 8, dtype=dtype), torch.empty(3, dtype=dtype), torch.empty(1000, 600, dtype=dtype)]
    out = ranked_again([mask.t(), None, big.t()], params)
    assert all(o.dtype == torch.bool and o.shape == p.shape for o, p in zip(out, params))
    assert torch.equal(out[0], mask.t() == 1) and int(out[0].sum()) == 8
    assert bool(out[1].all()) and torch.equal(out[2], big.t() == 1)
    with pytest.raises(ValueError, match=r"masks\[0\]: shape \(8, 8\)"):
        ranked_again([mask], [params[1]])
    with pytest.raises(TypeError, match=r"masks\[0\]"):
        ranked_again([mask.to(torch.int32)], [params[0]])


def test_a_later_round_over_masks_off_the_kernels_path_is_torchs() -> None:
    # A mask of an integer dtype (a custom one) takes torch's `eq`: the survivors are still its
    # entries equal to 1, and the round is torch's.
    torch.manual_seed(8)
    nets = [nn.Sequential(nn.Linear(30, 20)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    custom = (torch.rand(20, 30) < 0.7).to(torch.int32)
    for net in nets:
        prune.custom_from_mask(net[0], "weight", custom)
    prune.global_unstructured([(nets[0][0], "weight")], prune.L1Unstructured, amount=0.3)
    ltt.global_unstructured([(nets[1][0], "weight")], prune.L1Unstructured, amount=0.3)
    assert torch.equal(nets[1][0].weight_mask, nets[0][0].weight_mask)
    assert torch.equal(nets[1][0].weight, nets[0][0].weight)


def _count_one_pass_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the first-round path's calls of `kernels.global_magnitude_state`."""
    import lottery_ticket.torch._prune as drop_in

    calls: list[int] = []
    real = drop_in.global_magnitude_state

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(drop_in, "global_magnitude_state", counted)
    return calls


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("amount", [0.5, 1.0])
def test_a_first_pruning_of_the_weights_takes_one_pass_and_is_torchs(
    dtype: torch.dtype, grad: bool, amount: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No importance scores: the selection writes each mask and product in its own pass
    # (`kernels.global_magnitude_state`); pruning everything reaches the infinities (NaN products).
    calls = _count_one_pass_calls(monkeypatch)
    torch.manual_seed(5)
    theirs = distinct_16_bit(nn.Sequential(nn.Linear(100, 120), nn.Linear(120, 7)).to(dtype), 5)
    with torch.no_grad():
        theirs[0].weight[0, :4] = torch.tensor([float("inf"), -float("inf"), -0.0, -1e-30], dtype=dtype)
    ours = copy.deepcopy(theirs)
    with torch.set_grad_enabled(grad):
        prune.global_unstructured([(m, "weight") for m in theirs], prune.L1Unstructured, amount=amount)
        ltt.global_unstructured([(m, "weight") for m in ours], prune.L1Unstructured, amount=amount)
    assert calls == [1]
    for t, o in zip(theirs, ours):
        assert o.weight_mask.dtype == dtype and torch.equal(o.weight_mask, t.weight_mask)
        assert same_bits(o.weight, t.weight)
        assert (o.weight.grad_fn is None) == (t.weight.grad_fn is None) == (not grad)
        assert hook_kinds(o) == hook_kinds(t)
        # The hook holds a float mask with torch's values, the buffer itself: no bool masks
        # are made, or kept alive by the hooks, beside the state.
        (o_hook,), (t_hook,) = o._forward_pre_hooks.values(), t._forward_pre_hooks.values()
        assert o_hook.mask is o.weight_mask
        assert o_hook.mask.dtype == t_hook.mask.dtype and torch.equal(o_hook.mask, t_hook.mask)
    if amount == 1.0:
        assert bool(torch.isnan(ours[0].weight[0, :2]).all())


def test_products_autograd_records_have_torchs_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    # Parameters that require grad (one that does not beside them) under grad: the kernels make
    # every product, and autograd records each as torch records `mask * orig`: the same
    # gradient reaches `weight_orig` through the pruned weight, before and after a forward.
    calls = _count_one_pass_calls(monkeypatch)
    torch.manual_seed(6)
    theirs = nn.Sequential(nn.Linear(50, 40), nn.Linear(40, 9))
    theirs[1].weight.requires_grad_(False)
    ours = copy.deepcopy(theirs)
    prune.global_unstructured([(m, "weight") for m in theirs], prune.L1Unstructured, amount=0.4)
    ltt.global_unstructured([(m, "weight") for m in ours], prune.L1Unstructured, amount=0.4)
    assert calls == [1]
    assert ours[0].weight.grad_fn is not None and ours[1].weight.grad_fn is None
    upstream = torch.randn(40, 50)
    for net in (theirs, ours):
        (net[0].weight * upstream).sum().backward()
    assert torch.equal(ours[0].weight_orig.grad, theirs[0].weight_orig.grad)
    assert torch.equal(ours[0].weight_orig.grad, upstream * ours[0].weight_mask)
    x = torch.randn(3, 50)
    for net in (theirs, ours):
        net[0].weight_orig.grad = None
        net(x).square().sum().backward()
    assert torch.equal(ours[0].weight_orig.grad, theirs[0].weight_orig.grad)
    for t, o in zip(theirs, ours):
        assert torch.equal(o.weight_mask, t.weight_mask) and same_bits(o.weight, t.weight)


def test_the_two_step_path_keeps_what_one_pass_cannot_make(monkeypatch: pytest.MonkeyPatch) -> None:
    # Importance scores, a later round and a parameter that is not contiguous each take the
    # selection then `mask_products` (or torch's ops); the results stay torch's.
    calls = _count_one_pass_calls(monkeypatch)
    torch.manual_seed(7)
    theirs = nn.Sequential(nn.Linear(50, 40), nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last))
    ours = copy.deepcopy(theirs)
    prune.global_unstructured([(theirs[0], "weight")], prune.L1Unstructured, amount=0.4)
    ltt.global_unstructured([(ours[0], "weight")], prune.L1Unstructured, amount=0.4)
    assert calls == [1]
    prune.global_unstructured([(theirs[0], "weight")], prune.L1Unstructured, amount=0.3)
    ltt.global_unstructured([(ours[0], "weight")], prune.L1Unstructured, amount=0.3)  # a later round
    ltt.global_unstructured([(ours[1], "weight")], prune.L1Unstructured, amount=0.3)  # channels last
    assert calls == [1]
    assert torch.equal(ours[0].weight_mask, theirs[0].weight_mask) and same_bits(ours[0].weight, theirs[0].weight)
    assert torch.equal(ours[1].weight, ours[1].weight_mask * ours[1].weight_orig)
    fresh = nn.Linear(20, 10)
    theirs_fresh = copy.deepcopy(fresh)
    score = torch.rand(10, 20)
    for module, prune_fn in ((fresh, ltt.global_unstructured), (theirs_fresh, prune.global_unstructured)):
        prune_fn([(module, "weight")], prune.L1Unstructured, importance_scores={(module, "weight"): score}, amount=0.5)
    assert calls == [1] and torch.equal(fresh.weight_mask, theirs_fresh.weight_mask)


def test_a_later_round_hands_the_first_rounds_hook_its_decisions_as_bools() -> None:
    # A first one-pass pruning's hook holds the float mask buffer; when a later round replaces
    # that buffer, the hook (now inside torch's container) takes that round's decisions as bools,
    # so no float mask of an earlier round stays alive. The results stay torch's.
    torch.manual_seed(8)
    theirs = nn.Sequential(nn.Linear(60, 50), nn.Linear(50, 10))
    ours = copy.deepcopy(theirs)
    for amount in (0.4, 0.3, 0.2):
        prune.global_unstructured([(m, "weight") for m in theirs], prune.L1Unstructured, amount=amount)
        before = [getattr(m, "weight_mask", None) for m in ours]
        ltt.global_unstructured([(m, "weight") for m in ours], prune.L1Unstructured, amount=amount)
        if amount == 0.4:
            first = [m.weight_mask.clone() for m in ours]
        else:
            assert all(o.weight_mask is not b for o, b in zip(ours, before))  # fresh buffers, as torch's
    for t, o, mask in zip(theirs, ours, first):
        assert torch.equal(o.weight_mask, t.weight_mask) and same_bits(o.weight, t.weight)
        assert hook_kinds(o) == hook_kinds(t)
        (container,) = o._forward_pre_hooks.values()
        methods = list(container)
        assert all(m.mask.dtype == torch.bool for m in methods)
        assert torch.equal(methods[0].mask, mask == 1)
