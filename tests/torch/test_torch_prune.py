"""lottery_ticket.torch.global_unstructured against torch.nn.utils.prune.global_unstructured itself."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from prune_hooks import hook_kinds
from torch.nn.utils import prune

import lottery_ticket.torch as ltt
import torch
from torch import nn

Pairs = list[tuple[nn.Module, str]]


def distinct_model(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """Conv2d + Linear mix whose parameters have pairwise distinct magnitudes (no tie ambiguity)."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3),
        nn.ReLU(),
        nn.Conv2d(4, 3, 2),
        nn.Flatten(),
        nn.Linear(3 * 3 * 3, 7),
        nn.ReLU(),
        nn.Linear(7, 2),
    ).to(dtype)
    params = list(net.parameters())
    total = sum(p.numel() for p in params)
    magnitudes = (torch.randperm(total, dtype=torch.float64) + 1) / total
    signs = torch.where(torch.rand(total) < 0.5, -1.0, 1.0).to(torch.float64)
    values = (magnitudes * signs).to(dtype)
    assert values.abs().unique().numel() == total
    with torch.no_grad():
        offset = 0
        for p in params:
            p.copy_(values[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
    return net


def targets(net: nn.Module, with_bias: bool = True) -> Pairs:
    pairs: Pairs = []
    for module in net:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            pairs.append((module, "weight"))
            if with_bias:
                pairs.append((module, "bias"))
    return pairs


def assert_same_state(theirs: nn.Module, ours: nn.Module) -> None:
    their_state, our_state = theirs.state_dict(), ours.state_dict()
    assert list(their_state) == list(our_state)
    for key, value in their_state.items():
        assert our_state[key].dtype == value.dtype, key
        assert torch.equal(our_state[key], value), key
    assert [n for n, _ in theirs.named_parameters()] == [n for n, _ in ours.named_parameters()]
    assert [n for n, _ in theirs.named_buffers()] == [n for n, _ in ours.named_buffers()]
    for their_module, our_module in zip(theirs.modules(), ours.modules()):
        assert hook_kinds(our_module) == hook_kinds(their_module)
        for name in ("weight", "bias"):
            if hasattr(their_module, name + "_mask"):
                assert torch.equal(getattr(our_module, name), getattr(their_module, name))
    assert prune.is_pruned(ours) == prune.is_pruned(theirs)
    x = torch.linspace(-1, 1, 2 * 6 * 6, dtype=next(theirs.parameters()).dtype).view(1, 2, 6, 6)
    assert torch.equal(ours(x), theirs(x))


def both(net: nn.Module, prune_both: Callable[[Callable[..., None], nn.Module], None]) -> tuple[nn.Module, nn.Module]:
    theirs, ours = copy.deepcopy(net), copy.deepcopy(net)
    prune_both(prune.global_unstructured, theirs)
    prune_both(ltt.global_unstructured, ours)
    return theirs, ours


@pytest.mark.parametrize("amount", [0.0, 0.2, 0.5, 0.73, 1.0, 0, 1, 37, 110])
@pytest.mark.parametrize("rounds", [1, 2, 3])
def test_matches_torch_over_repeated_rounds(amount: float | int, rounds: int) -> None:
    net = distinct_model(seed=rounds)
    total = sum(p.numel() for p in net.parameters())
    if isinstance(amount, int) and amount * rounds > total:
        pytest.fail("test amounts must fit the model")

    def prune_rounds(fn: Callable[..., None], model: nn.Module) -> None:
        for _ in range(rounds):
            fn(targets(model), pruning_method=prune.L1Unstructured, amount=amount)

    theirs, ours = both(net, prune_rounds)
    assert_same_state(theirs, ours)
    for module, name in targets(theirs):
        prune.remove(module, name)
    for module, name in targets(ours):
        prune.remove(module, name)
    assert_same_state(theirs, ours)
    assert not prune.is_pruned(ours)


def test_weights_only_and_positional_method() -> None:
    def prune_weights(fn: Callable[..., None], model: nn.Module) -> None:
        fn(targets(model, with_bias=False), prune.L1Unstructured, amount=0.4)
        fn(targets(model, with_bias=False), prune.L1Unstructured, amount=11)

    assert_same_state(*both(distinct_model(seed=5), prune_weights))


def half_step_away(values: torch.Tensor, total: int) -> torch.Tensor:
    return values.sign() * (values.abs() + 0.5 / total)


def test_importance_scores_ranked_among_survivors() -> None:
    net = distinct_model(seed=7)
    scores_source = distinct_model(seed=8)
    pairs = targets(net)
    # Scores for some parameters only (torch ranks the parameter itself for the rest).
    total = sum(p.numel() for p in net.parameters())
    # Weight magnitudes are k / total: offset the scores by half a step so no score ties a weight.
    score_of = {
        i: half_step_away(getattr(module, name).detach().flip(0), total)
        for i, (module, name) in enumerate(targets(scores_source))
        if i % 2 == 0
    }

    def prune_scored(fn: Callable[..., None], model: nn.Module) -> None:
        model_pairs = targets(model)
        scores = {model_pairs[i]: s for i, s in score_of.items()}
        fn(model_pairs, prune.L1Unstructured, importance_scores=scores, amount=0.3)
        fn(model_pairs, prune.L1Unstructured, importance_scores=scores, amount=0.3)
        fn(model_pairs, prune.L1Unstructured, amount=9)

    assert 0 < len(score_of) < len(pairs)
    assert_same_state(*both(net, prune_scored))


def test_on_top_of_torch_layerwise_pruning() -> None:
    def mixed(fn: Callable[..., None], model: nn.Module) -> None:
        prune.l1_unstructured(model[0], "weight", amount=0.5)
        torch.manual_seed(11)  # the same random mask in both copies
        prune.random_unstructured(model[4], "weight", amount=3)
        fn(targets(model), prune.L1Unstructured, amount=0.25)

    theirs, ours = both(distinct_model(seed=3), mixed)
    assert_same_state(theirs, ours)
    assert hook_kinds(ours[0])[0][0] == "container"


def test_generator_parameters_and_float64() -> None:
    def from_generator(fn: Callable[..., None], model: nn.Module) -> None:
        # torch iterates `parameters` twice, so it needs a list; ours also takes a generator.
        pairs = targets(model)
        fn(pairs if fn is prune.global_unstructured else iter(pairs), prune.L1Unstructured, amount=0.6)

    assert_same_state(*both(distinct_model(seed=9, dtype=torch.float64), from_generator))


def test_bfloat16_module() -> None:
    net = nn.Linear(6, 5).to(torch.bfloat16)
    with torch.no_grad():
        # 30 distinct bf16 magnitudes
        values = torch.arange(1, 31, dtype=torch.float32) / 8 * torch.tensor([1.0, -1.0]).repeat(15)
        net.weight.copy_(values.view(5, 6)[torch.randperm(5)].to(torch.bfloat16))

    def prune_weight(fn: Callable[..., None], model: nn.Module) -> None:
        fn([(model, "weight")], prune.L1Unstructured, amount=0.5)
        fn([(model, "weight")], prune.L1Unstructured, amount=4)

    theirs, ours = both(net, prune_weight)
    assert ours.weight_mask.dtype == torch.bfloat16
    assert torch.equal(ours.weight_mask, theirs.weight_mask)
    assert torch.equal(ours.weight_orig, theirs.weight_orig)


def unchanged(net: nn.Module, before: nn.Module) -> None:
    assert not prune.is_pruned(net)
    assert list(net.state_dict()) == list(before.state_dict())
    for key, value in before.state_dict().items():
        assert torch.equal(net.state_dict()[key], value)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"pruning_method": prune.LnStructured, "amount": 0.2, "n": 1, "dim": 0},
            TypeError,
            "pruning_method",
        ),  # torch's
        ({"amount": 0.2, "n": 1}, TypeError, "n: not an argument of L1Unstructured"),
        ({}, TypeError, "amount: required"),
        ({"amount": 1.5}, ValueError, "amount"),
        ({"amount": -1}, ValueError, "amount"),
        ({"amount": "half"}, TypeError, "amount"),
        ({"amount": True}, TypeError, "amount"),
        ({"amount": 10_000}, ValueError, "amount"),
        ({"amount": 0.2, "importance_scores": [1, 2]}, TypeError, "importance_scores"),
    ],
)
def test_bad_arguments_modify_nothing(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    net = distinct_model()
    before = copy.deepcopy(net)
    with pytest.raises(error, match=match):
        ltt.global_unstructured(targets(net), **kwargs)
    unchanged(net, before)


def test_bad_parameters_modify_nothing() -> None:
    net = distinct_model()
    before = copy.deepcopy(net)
    with pytest.raises(TypeError, match="parameters"):
        ltt.global_unstructured(42, amount=0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"parameters\[1\]"):
        ltt.global_unstructured([(net[0], "weight"), (net[0], "nope")], amount=0.1)
    with pytest.raises(TypeError, match=r"parameters\[0\]"):
        ltt.global_unstructured([("net", "weight")], amount=0.1)  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"parameters\[2\].*twice"):
        ltt.global_unstructured([(net[0], "weight"), (net[4], "weight"), (net[0], "weight")], amount=0.1)
    with pytest.raises(ValueError, match="parameters"):
        ltt.global_unstructured([], amount=0.1)
    buffer_holder = nn.Module()
    buffer_holder.register_buffer("weight", torch.ones(3))
    with pytest.raises(TypeError, match="not an nn.Parameter"):
        ltt.global_unstructured([(net[0], "weight"), (buffer_holder, "weight")], amount=1)
    unchanged(net, before)


def test_bad_importance_scores_and_nan_modify_nothing() -> None:
    net = distinct_model()
    before = copy.deepcopy(net)
    pairs = targets(net)
    with pytest.raises(ValueError, match="importance_scores"):
        ltt.global_unstructured(pairs, importance_scores={pairs[0]: torch.ones(3)}, amount=0.1)
    with pytest.raises(TypeError, match="importance_scores"):
        ltt.global_unstructured(pairs, importance_scores={pairs[0]: 1.0}, amount=0.1)
    scores = torch.ones_like(net[0].weight)
    scores[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="parameters"):
        ltt.global_unstructured(pairs, importance_scores={pairs[0]: scores}, amount=0.1)
    unchanged(net, before)


def test_ties_prune_earlier_entries_first() -> None:
    net = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.5, -0.5, 0.5, 2.0]]))
    ltt.global_unstructured([(net, "weight")], amount=2)
    assert net.weight_mask.tolist() == [[0.0, 0.0, 1.0, 1.0]]


@pytest.mark.parametrize("requires_grad", [True, False])
def test_pruned_attribute_matches_torch_with_and_without_autograd(requires_grad: bool) -> None:
    theirs, ours = distinct_model(5), distinct_model(5)
    for net in (theirs, ours):
        for p in net.parameters():
            p.requires_grad_(requires_grad)
    prune.global_unstructured(targets(theirs), prune.L1Unstructured, amount=0.4)
    ltt.global_unstructured(targets(ours), prune.L1Unstructured, amount=0.4)
    assert_same_state(theirs, ours)
    for their_module, our_module in zip(theirs, ours):
        if hasattr(their_module, "weight_mask"):
            # The attribute set at pruning time (before any forward) carries autograd as torch's does.
            assert (our_module.weight.grad_fn is None) == (their_module.weight.grad_fn is None)
            assert our_module.weight.requires_grad == requires_grad
            assert our_module.weight_mask.is_contiguous() and our_module.weight.is_contiguous()
    if requires_grad:
        x = torch.linspace(-1, 1, 2 * 6 * 6).view(1, 2, 6, 6)
        ours(x).sum().backward()
        grad = ours[0].weight_orig.grad
        assert grad is not None and bool((grad[ours[0].weight_mask == 0] == 0).all()) and bool(grad.any())
