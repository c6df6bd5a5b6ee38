"""Pluggable importance scores: random control, callables, one-shot, the exact selection they share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import torch
from lottery_ticket import LotteryTicketPruner, Ticket, global_magnitude_masks
from lottery_ticket.importance import random_scores, resolve
from torch import nn


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 6), nn.ReLU(), nn.Linear(6, 3))


def numpy_model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"a": rng.standard_normal((30, 10)).astype(np.float32), "b": rng.standard_normal(50)}


def counts(masks: dict[str, Any]) -> dict[str, int]:
    return {n: int(m.sum()) for n, m in masks.items()}


def as_numpy(masks: dict[str, Any]) -> dict[str, np.ndarray]:
    return {n: np.asarray(m) for n, m in masks.items()}


@pytest.mark.parametrize("global_pruning", [True, False])
def test_random_keeps_exactly_the_magnitude_counts_in_its_scope(global_pruning: bool) -> None:
    magnitude = LotteryTicketPruner(0.8, 3, global_pruning=global_pruning)
    rand = LotteryTicketPruner(0.8, 3, global_pruning=global_pruning, importance="random", seed=4)
    magnitude.start(mlp())
    rand.start(mlp())
    for _ in range(3):
        magnitude.prune()
        rand.prune()
        mag_counts, rand_counts = counts(magnitude.masks), counts(rand.masks)
        if global_pruning:
            assert sum(rand_counts.values()) == sum(mag_counts.values())
        else:
            assert rand_counts == mag_counts
    assert rand.masks["0.weight"].dtype == torch.bool  # the model's mask kind, not NumPy's
    # Not magnitude in disguise: random keeps many of the weights magnitude prunes.
    assert any(not torch.equal(rand.masks[n], magnitude.masks[n]) for n in rand.masks)


def test_random_is_reproducible_by_seed_and_independent_of_the_weights() -> None:
    a = LotteryTicketPruner(0.7, 2, importance="random", seed=11).find_ticket(mlp(0))
    b = LotteryTicketPruner(0.7, 2, importance="random", seed=11).find_ticket(mlp(5))
    c = LotteryTicketPruner(0.7, 2, importance="random", seed=12).find_ticket(mlp(0))
    assert all(np.array_equal(a.masks[n], b.masks[n]) for n in a.masks)
    assert not all(np.array_equal(a.masks[n], c.masks[n]) for n in a.masks)
    # The same scores every round: the final mask does not depend on the number of rounds.
    one = LotteryTicketPruner(0.7, 1, importance="random", seed=11).find_ticket(mlp(0))
    assert all(np.array_equal(a.masks[n], one.masks[n]) for n in a.masks)
    assert a.importance == "random" and one.sparsity == pytest.approx(0.7, abs=1 / 400)


def test_random_is_the_exact_selection_of_seeded_uniform_scores() -> None:
    model = numpy_model()
    ticket = LotteryTicketPruner(0.6, 1, importance="random", seed=3).find_ticket(model)
    total = sum(w.size for w in model.values())
    expected = global_magnitude_masks(random_scores(model, 3), total - round(0.4 * total))
    assert all(np.array_equal(ticket.masks[n], expected[n]) for n in model)


def test_random_survivors_are_spread_uniformly() -> None:
    # Under global scope each layer keeps close to the overall density (a binomial share),
    # where magnitude pruning of layers with different scales would not.
    model = {"small": np.full((200, 50), 0.01, np.float32), "large": np.full((100, 100), 5.0, np.float32)}
    rand = LotteryTicketPruner(0.75, 1, importance="random", seed=0).find_ticket(model)
    densities = [float(m.mean()) for m in rand.masks.values()]
    assert all(abs(d - 0.25) < 0.02 for d in densities)
    magnitude = LotteryTicketPruner(0.75, 1).find_ticket(model)
    assert float(magnitude.masks["small"].mean()) == 0.0


def test_callable_scores_go_through_the_same_selection() -> None:
    model = numpy_model()
    calls: list[str] = []

    def by_negated_rank(name: str, weight: np.ndarray) -> np.ndarray:
        calls.append(name)
        return (np.arange(weight.size, dtype=np.float64)[::-1] + 1).reshape(weight.shape)

    ticket = LotteryTicketPruner(0.5, 1, importance=by_negated_rank).find_ticket(model)
    # Scores fall with the index inside each tensor: the last entries are pruned first.
    assert ticket.importance == "callable:by_negated_rank" and calls == ["a", "b"]
    expected = global_magnitude_masks({n: by_negated_rank(n, w) for n, w in model.items()}, 175)
    assert all(np.array_equal(ticket.masks[n], expected[n]) for n in model)
    kept_a = ticket.masks["a"].ravel()
    assert kept_a[:5].all() and not kept_a[-5:].any() and not ticket.masks["b"].any()


def test_callable_may_return_numpy_scores_for_a_torch_model() -> None:
    pruner = LotteryTicketPruner(0.5, 1, importance=lambda name, w: np.abs(w.detach().numpy()).astype(np.float64))
    pruner.start(mlp())
    pruner.prune()
    magnitude = LotteryTicketPruner(0.5, 1).find_ticket(mlp())
    assert all(isinstance(m, torch.Tensor) for m in pruner.masks.values())
    assert all(np.array_equal(pruner.masks[n].numpy(), magnitude.masks[n]) for n in pruner.masks)


@pytest.mark.parametrize(
    ("scores", "error", "match"),
    [
        (lambda w: np.zeros(3), ValueError, r"importance\('b'\): shape \(3,\) differs"),
        (lambda w: np.zeros(w.shape, np.int64), TypeError, r"importance\('b'\): dtype int64 is not supported"),
        (lambda w: np.full(w.shape, np.nan), ValueError, r"importance\('b'\): scores must be finite"),
        (lambda w: np.full(w.shape, np.inf), ValueError, r"importance\('b'\): scores must be finite"),
        (lambda w: [0.0] * w.size, TypeError, r"importance\('b'\): expected an array of scores, got list"),
        (
            lambda w: torch.zeros(w.shape),
            TypeError,
            r"importance\('b'\): expected a NumPy array or an array of the weight's kind",
        ),
    ],
)
def test_bad_callable_scores_name_the_tensor_and_change_nothing(
    scores: Any, error: type[Exception], match: str
) -> None:
    model = numpy_model()
    before = {n: w.copy() for n, w in model.items()}
    pruner = LotteryTicketPruner(0.5, 2, importance=lambda n, w: w if n == "a" else scores(w))
    pruner.start(model)
    masks = as_numpy(pruner.masks)
    with pytest.raises(error, match=match):
        pruner.prune()
    assert pruner.round == 0 and all(np.array_equal(pruner.masks[n], masks[n]) for n in masks)
    assert all(np.array_equal(model[n], before[n]) for n in model)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"importance": "saliency"}, ValueError, "importance: expected 'magnitude', 'random'"),
        ({"importance": "snip"}, ValueError, r"importance: 'snip' needs a loss.*lottery_ticket.torch.Snip"),
        ({"importance": 3}, TypeError, "importance: expected"),
        ({"importance": "random", "seed": -1}, ValueError, "seed: expected an int >= 0"),
        ({"importance": "random", "seed": 1.5}, ValueError, "seed: expected an int >= 0"),
        ({"seed": True}, ValueError, "seed"),
    ],
)
def test_bad_importance_options_are_refused_at_construction(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        LotteryTicketPruner(0.5, 1, **kwargs)


def test_resolve_reports_names_for_tickets() -> None:
    assert resolve("magnitude").name == "magnitude" and resolve("random", 2).seed == 2
    assert resolve(lambda n, w: w).name == "callable:<lambda>"


def test_one_shot_is_one_global_selection_of_the_trained_weights() -> None:
    # pruning_rounds=1: train, then one selection straight to the target, rewind, retrain.
    model = mlp(3)
    x, y = torch.randn(64, 12, generator=torch.Generator().manual_seed(0)), torch.arange(64) % 3
    trained: dict[str, torch.Tensor] = {}

    def train(net: nn.Module, round_index: int) -> None:
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        for _ in range(20):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        if round_index == 0:
            trained.update({n: p.detach().clone() for n, p in net.named_parameters() if n.endswith("weight")})

    ticket = LotteryTicketPruner(0.9, 1).run(model, train, progress=False)
    total = sum(w.numel() for w in trained.values())
    expected = global_magnitude_masks(trained, total - round(0.1 * total))
    assert ticket.sparsity_history == [pytest.approx(1 - round(0.1 * total) / total)]
    assert all(np.array_equal(ticket.masks[n], expected[n].numpy()) for n in trained)


def test_ticket_files_record_the_importance(tmp_path: Path) -> None:
    ticket = LotteryTicketPruner(0.5, 1, importance="random", seed=1).find_ticket(numpy_model())
    ticket.save(tmp_path / "t.safetensors")
    loaded = Ticket.load(tmp_path / "t.safetensors")
    assert loaded.importance == "random" and "importance random" in loaded.summary()
    assert LotteryTicketPruner(0.5, 1).find_ticket(numpy_model()).importance == "magnitude"
