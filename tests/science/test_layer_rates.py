"""Per-layer pruning rates: exact kept counts per tensor, the schedule for the rest, round trips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import torch
from lottery_ticket import EarlyBird, LotteryTicketConfig, LotteryTicketPruner, Ticket
from torch import nn


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 25), nn.ReLU(), nn.Linear(25, 10))


def _shake(model: Any, round_index: int) -> None:
    """A stand-in for training: moves every weight, so each round ranks anew."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(round_index)))


def _kept(masks: dict[str, Any]) -> dict[str, int]:
    return {n: int(m.sum()) for n, m in masks.items()}


SIZES = {"0.weight": 600, "2.weight": 750, "4.weight": 250}


def test_each_matched_tensor_keeps_its_own_exact_count() -> None:
    rates = {"4.weight": 0.1, "*.weight": 0.2}  # first match wins: the output layer 10%, the rest 20%
    pruner = LotteryTicketPruner(0.9, 6, "init", global_pruning=False, layer_rates=rates)
    model = _net()
    pruner.start(model)
    for k in range(1, 7):
        _shake(model, k)
        pruner.prune()
        pruner.rewind()
        expected = {n: round(size * (0.9 if n == "4.weight" else 0.8) ** k) for n, size in SIZES.items()}
        assert _kept(pruner.masks) == expected
        params = dict(model.named_parameters())
        assert all(int((params[n] != 0).sum()) <= expected[n] for n in SIZES)


def test_unmatched_tensors_follow_the_schedule_globally_or_alone() -> None:
    for global_pruning in (True, False):
        model = _net(1)
        pruner = LotteryTicketPruner(0.75, 3, global_pruning=global_pruning, layer_rates={"4.weight": 0.5})
        ticket = pruner.run(model, _shake, progress=False)
        kept = {n: int(m.sum()) for n, m in ticket.masks.items()}
        assert kept["4.weight"] == round(250 * 0.5**3)
        if global_pruning:
            assert kept["0.weight"] + kept["2.weight"] == round(1350 * 0.25)
        else:
            assert (kept["0.weight"], kept["2.weight"]) == (round(600 * 0.25), round(750 * 0.25))


def test_numpy_models_and_find_ticket_use_the_rates() -> None:
    rng = np.random.default_rng(0)
    model = {"a": rng.standard_normal((10, 10)).astype(np.float32), "b": rng.standard_normal(50).astype(np.float32)}
    ticket = LotteryTicketPruner(0.5, 2, layer_rates={"a": 0.3}).find_ticket(model)
    assert int(ticket.masks["a"].sum()) == round(100 * 0.7**2) and int(ticket.masks["b"].sum()) == 25


def test_config_reads_a_dict_first_match_wins_and_round_trips() -> None:
    config = LotteryTicketConfig(0.9, 5, global_pruning=False, layer_rates={"fc3.*": 0.1, "fc*": 0.2})
    assert config.layer_rates == (("fc3.*", 0.1), ("fc*", 0.2))
    assert config.layer_rate("fc3.weight") == 0.1 and config.layer_rate("fc1.weight") == 0.2
    assert config.layer_rate("conv.weight") is None
    assert config.remaining_after(3, 1000, "fc1.weight") == 512 and config.remaining_after(5, 1000) == 100
    assert hash(config) == hash(LotteryTicketConfig.from_dict(config.to_dict()))
    assert LotteryTicketConfig.from_dict(config.to_dict()) == config
    plain = LotteryTicketConfig(0.5, 2)
    assert set(plain.to_dict()) == {"target_sparsity", "pruning_rounds", "rewind_strategy", "global_pruning"}
    assert LotteryTicketConfig.from_dict(plain.to_dict()) == plain


def test_a_saved_ticket_keeps_layer_rates_and_early_bird(tmp_path: Path) -> None:
    bird = EarlyBird(every_steps=3, window=2, tolerance=0.05)
    pruner = LotteryTicketPruner(0.5, 2, layer_rates={"0.weight": 0.3}, early_bird=bird)
    pruner.run(_net(), _shake, progress=False).save(tmp_path / "t.safetensors")
    loaded = Ticket.load(tmp_path / "t.safetensors")
    assert loaded.config.layer_rates == (("0.weight", 0.3),) and loaded.config.early_bird == bird
    assert int(loaded.masks["0.weight"].sum()) == round(600 * 0.7**2)


def test_the_builder_sets_both() -> None:
    bird = EarlyBird(every_steps=10)
    pruner = LotteryTicketPruner.builder().target_sparsity(0.5).pruning_rounds(2).layer_rates({"x": 0.1})
    config = pruner.early_bird(bird).build().config
    assert config.layer_rates == (("x", 0.1),) and config.early_bird == bird


@pytest.mark.parametrize(
    ("rates", "error", "match"),
    [
        ({"a": 1.0}, ValueError, r"layer_rates\['a'\]: .*\[0, 1\)"),
        ({"a": -0.1}, ValueError, r"layer_rates\['a'\]"),
        ({"a": "0.2"}, TypeError, r"layer_rates\['a'\]: expected a real"),
        ({"": 0.2}, TypeError, "layer_rates: a pattern"),
        ({3: 0.2}, TypeError, "layer_rates: a pattern"),
        ("fc*", TypeError, "layer_rates: expected"),
        ([("a",)], TypeError, "layer_rates: expected"),
    ],
)
def test_bad_rates_are_refused(rates: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        LotteryTicketConfig(0.5, 2, layer_rates=rates)


def test_a_pattern_matching_nothing_is_refused_before_anything_changes() -> None:
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls: list[int] = []
    with pytest.raises(ValueError, match="layer_rates: 'fc9' matches none of the pruned tensors"):
        LotteryTicketPruner(0.5, 2, layer_rates={"fc9": 0.1}).run(model, lambda m, r: calls.append(r), progress=False)
    assert calls == [] and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(TypeError, match="layer_rates, early_bird: pass them inside config="):
        LotteryTicketPruner(config=LotteryTicketConfig(0.5, 2), layer_rates={"a": 0.1})
