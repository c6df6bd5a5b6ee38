"""Selection, scopes, exact counts, NumPy dict models, find_ticket/apply_ticket and bad inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import torch
from lottery_ticket import LotteryTicketPruner, RewindStrategy, Ticket
from torch import nn


def convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 10), nn.LayerNorm(10)
    )


def names(pruner: LotteryTicketPruner, model: Any) -> list[str]:
    pruner.start(model)
    return list(pruner.masks)


def test_default_selection_is_linear_and_conv_weights() -> None:
    model = nn.ModuleDict({"emb": nn.Embedding(5, 3), "net": convnet(), "up": nn.ConvTranspose1d(2, 2, 3)})
    assert names(LotteryTicketPruner(0.5, 1), model) == ["net.0.weight", "net.4.weight", "up.weight"]
    assert names(LotteryTicketPruner(0.5, 1), nn.Linear(3, 2)) == ["weight"]


def test_include_and_exclude_by_pattern_or_predicate() -> None:
    model = convnet()
    assert names(LotteryTicketPruner(0.5, 1, exclude="0.*"), model) == ["4.weight"]
    assert names(LotteryTicketPruner(0.5, 1, include=["*.bias"], exclude=["1.*"]), model) == [
        "0.bias",
        "4.bias",
        "5.bias",
    ]
    by_rank = LotteryTicketPruner(0.5, 1, include=lambda name, p: p.dim() > 1)
    assert names(by_rank, model) == ["0.weight", "4.weight"]
    with pytest.raises(ValueError, match="no parameters selected"):
        names(LotteryTicketPruner(0.5, 1, include="nothing*"), model)
    with pytest.raises(ValueError, match="no parameters selected"):
        names(LotteryTicketPruner(0.5, 1), nn.Sequential(nn.Embedding(3, 2), nn.LayerNorm(2)))
    with pytest.raises(TypeError, match="include"):
        names(LotteryTicketPruner(0.5, 1, include=[3]), model)  # type: ignore[list-item]


def test_global_vs_layerwise_exact_counts_per_round() -> None:
    rounds, sparsity = 4, 0.9
    for global_pruning in (True, False):
        model = convnet()
        pruner = LotteryTicketPruner(sparsity, rounds, global_pruning=global_pruning)
        pruner.start(model)
        sizes = {n: m.numel() for n, m in pruner.masks.items()}
        for k in range(1, rounds + 1):
            pruner.prune()
            counts = {n: int(m.sum()) for n, m in pruner.masks.items()}
            if global_pruning:
                assert sum(counts.values()) == round(sum(sizes.values()) * (1 - sparsity) ** (k / rounds))
            else:
                assert counts == {n: round(s * (1 - sparsity) ** (k / rounds)) for n, s in sizes.items()}
        assert pruner.ticket().sparsity_history[-1] == pytest.approx(1 - pruner.density)


def test_global_scope_ranks_across_tensors() -> None:
    model = {"small": np.full((4,), 0.1, dtype=np.float32), "big": np.arange(1, 5, dtype=np.float32)}
    ticket = LotteryTicketPruner(0.5, 1).find_ticket(model)
    assert ticket.masks["small"].sum() == 0 and ticket.masks["big"].all()
    layerwise = LotteryTicketPruner(0.5, 1, global_pruning=False).find_ticket(model)
    assert layerwise.masks["small"].sum() == 2 and layerwise.masks["big"].tolist() == [False, False, True, True]


def test_numpy_dict_model_runs_every_round_and_reapplies_masks() -> None:
    rng = np.random.default_rng(0)
    model = {"w1": rng.normal(size=(6, 5)).astype(np.float32), "b1": np.zeros(5), "w2": rng.normal(size=(5, 2))}
    w0 = {k: v.copy() for k, v in model.items()}
    pruner = LotteryTicketPruner(0.75, 2, RewindStrategy.early(iteration=2), include="w*")
    seen: list[dict[str, np.ndarray]] = []
    captured = {}

    def train(weights: dict[str, np.ndarray], round_index: int) -> dict[str, float]:
        assert weights is model
        seen.append({k: v.copy() for k, v in weights.items()})
        for it in range(1, 5):
            for v in weights.values():
                v += 0.5  # moves pruned weights too: the pruner zeroes them when train returns
            pruner.on_step()
            if round_index == 0 and it == 2:
                captured.update({k: v.copy() for k, v in weights.items()})
        return {"norm": float(sum(np.abs(v).sum() for v in weights.values()))}

    ticket = pruner.run(model, train, progress=False)
    assert list(ticket.masks) == ["w1", "w2"]
    assert all(np.array_equal(seen[0][k], w0[k]) for k in w0)
    # Round 2 starts from W_2 (captured at the 2nd on_step of round 0), with the final masks.
    for k in model:
        want = np.where(ticket.masks[k], captured[k], 0) if k in ticket.masks else captured[k]
        assert np.array_equal(seen[2][k], want)
    assert all(np.all(model[k][~ticket.masks[k]] == 0) for k in ticket.masks)
    assert ticket.remaining_parameters == round(40 * 0.25)
    assert isinstance(ticket.snapshot["b1"], np.ndarray)


def test_find_ticket_is_one_shot_and_leaves_the_model_alone() -> None:
    model = convnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = LotteryTicketPruner(0.9, 10)
    ticket = pruner.find_ticket(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    total = ticket.total_parameters
    assert ticket.sparsity_history == pytest.approx([1 - round(total * 0.1 ** (k / 10)) / total for k in range(1, 11)])
    assert ticket.sparsity_history[0] == pytest.approx(0.206, abs=2e-3)
    # The same as pruning once: the weights never changed between rounds.
    w = torch.cat([before["0.weight"].abs().ravel(), before["4.weight"].abs().ravel()])
    threshold = w.sort().values[-ticket.remaining_parameters]
    kept = np.concatenate([ticket.masks["0.weight"].ravel(), ticket.masks["4.weight"].ravel()])
    assert np.array_equal(kept, (w >= threshold).numpy())
    assert ticket.compression_ratio() == pytest.approx(1 / ticket.density)


def test_apply_ticket_loads_snapshot_and_masks() -> None:
    source = convnet()
    ticket = LotteryTicketPruner(0.8, 2).find_ticket(source)
    target = nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 10), nn.LayerNorm(10)
    )
    pruner = LotteryTicketPruner(0.8, 2)
    pruner.apply_ticket(target, ticket)
    for k, v in target.state_dict().items():
        want = source.state_dict()[k].clone()
        if k in ticket.masks:
            want[~torch.from_numpy(ticket.masks[k])] = 0
        assert torch.equal(v, want), k
    assert pruner.density == pytest.approx(ticket.density)
    opt = torch.optim.SGD(target.parameters(), lr=0.5, momentum=0.9)
    pruner.attach(opt)
    x = torch.randn(3, 2, 6, 6)
    for _ in range(3):
        opt.zero_grad()
        target(x).square().sum().backward()
        opt.step()
    assert all((target.state_dict()[k][~torch.from_numpy(m)] == 0).all() for k, m in ticket.masks.items())


@pytest.mark.parametrize(
    ("damage", "error", "match"),
    [
        (lambda t: t.masks.update({"4.weight": np.ones((10, 65), dtype=bool)}), ValueError, "shape"),
        (lambda t: t.masks.update({"9.weight": np.ones((2,), dtype=bool)}), ValueError, "9.weight"),
        (lambda t: t.snapshot.update({"4.bias": t.snapshot["4.bias"].double()}), TypeError, "dtype"),
        (lambda t: t.snapshot.update({"4.bias": torch.zeros(11)}), ValueError, "shape"),
        (lambda t: t.snapshot.pop("1.running_var"), ValueError, "running_var"),
    ],
)
def test_apply_ticket_validates_everything_before_modifying(damage: Any, error: type[Exception], match: str) -> None:
    ticket = LotteryTicketPruner(0.8, 2).find_ticket(convnet())
    damage(ticket)
    torch.manual_seed(5)
    target = convnet()
    with torch.no_grad():
        for p in target.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(error, match=match):
        LotteryTicketPruner(0.8, 2).apply_ticket(target, ticket)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


@pytest.mark.parametrize(
    ("damage", "error", "match"),
    [
        (lambda s: s.pop("b"), ValueError, r"ticket.snapshot: names differ from the model's \(first: 'b'\)"),
        (lambda s: s.update({"extra": np.ones(2)}), ValueError, "first: 'extra'"),
        (lambda s: s.update({"b": [0.0, 0.0]}), TypeError, r"ticket.snapshot\['b'\]: expected a NumPy array, got list"),
        (lambda s: s.update({"w": np.ones((2, 3))}), ValueError, r"shape \(2, 3\) differs from the model's \(3, 2\)"),
        (
            lambda s: s.update({"b": np.ones(2, np.float32)}),
            TypeError,
            "dtype float32 differs from the model's float64",
        ),
    ],
)
def test_numpy_apply_ticket_checks_the_snapshot_before_modifying(
    damage: Any, error: type[Exception], match: str
) -> None:
    ticket = LotteryTicketPruner(0.5, 1).find_ticket({"w": np.arange(6.0).reshape(3, 2), "b": np.ones(2)})
    damage(ticket.snapshot)
    target = {"w": np.full((3, 2), 7.0), "b": np.full(2, 7.0)}
    with pytest.raises(error, match=match):
        LotteryTicketPruner(0.5, 1).apply_ticket(target, ticket)
    assert all((v == 7.0).all() for v in target.values())


def test_bad_models_train_fns_and_metrics() -> None:
    pruner = LotteryTicketPruner(0.5, 1)
    with pytest.raises(TypeError, match="model"):
        pruner.run([np.ones(3)], lambda m, r: None, progress=False)
    with pytest.raises(TypeError, match="model"):
        pruner.start({"w": [1.0, 2.0]})
    with pytest.raises(TypeError, match="train_fn"):
        pruner.run({"w": np.ones(3)}, "train", progress=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="train_fn"):
        pruner.run({"w": np.ones(3)}, lambda m, r: [1.0], progress=False)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="reserved"):
        pruner.run({"w": np.ones(3)}, lambda m, r: {"round": 1.0}, progress=False)
    with pytest.raises(TypeError, match="metric 'acc'"):
        pruner.run({"w": np.ones(3)}, lambda m, r: {"acc": "high"}, progress=False)  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="ticket"):
        pruner.apply_ticket({"w": np.ones(3)}, "ticket.safetensors")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        pruner.find_ticket({"w": np.array([1.0, np.nan])})
    assert isinstance(pruner.find_ticket({"w": np.array([1.0, 2.0])}), Ticket)


def test_rewind_iteration_before_start() -> None:
    assert LotteryTicketPruner(0.5, 2, RewindStrategy.init()).rewind_iteration == 0
    assert LotteryTicketPruner(0.5, 2, RewindStrategy.learning_rate()).rewind_iteration == 0
    assert LotteryTicketPruner(0.5, 2, RewindStrategy.none()).rewind_iteration is None
    for strategy in (RewindStrategy.early(iteration=3), RewindStrategy.late(fraction=0.5)):
        with pytest.raises(RuntimeError, match=r"call start\(model\)"):
            _ = LotteryTicketPruner(0.5, 2, strategy, iterations_per_round=10).rewind_iteration


def test_apply_ticket_adopts_the_tickets_configuration() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Linear(8, 2))
    x = torch.randn(16, 6)

    def train(m: nn.Module, r: int) -> None:
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        for _ in range(4):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()

    ticket = LotteryTicketPruner(0.75, 2, RewindStrategy.early(iteration=3)).run(model, train, progress=False)
    assert ticket.rewind_iteration == 3
    other = LotteryTicketPruner(0.9, 5, RewindStrategy.late(fraction=0.5), iterations_per_round=40)
    other.apply_ticket(model, ticket)
    assert other.rewind_iteration == 3 and other.strategy == ticket.strategy
    assert other.round == 2 and other.ticket().config == ticket.config
    with pytest.raises(RuntimeError, match="all 2 pruning rounds are done"):
        other.prune()
