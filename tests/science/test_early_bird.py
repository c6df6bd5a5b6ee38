"""Early-bird rounds: the pruner ends a round once the next mask settles; sparsity stays exact."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

import torch
from lottery_ticket import EarlyBird, LotteryTicketConfig, LotteryTicketPruner
from lottery_ticket.pruner import RunState
from lottery_ticket.pruner.early_bird import EarlyBirdWatch
from lottery_ticket.pruner.resume import candidates_from_arrays
from torch import nn

STEPS = 200
X = torch.randn(256, 16, generator=torch.Generator().manual_seed(0))
Y = (X[:, :4].sum(1) > 0).long()


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))


def _trainer(pruner: LotteryTicketPruner, noise: float = 0.0) -> Any:
    """SGD that polls ``pruner.should_stop``; ``noise`` shakes every weight after each step."""

    def train(model: nn.Module, round_index: int) -> dict[str, float]:
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        generator = torch.Generator().manual_seed(round_index)
        steps = 0
        for _ in range(STEPS):
            if pruner.should_stop:
                break
            opt.zero_grad()
            nn.functional.cross_entropy(model(X), Y).backward()
            opt.step()
            if noise:
                with torch.no_grad():
                    for p in model.parameters():
                        p.add_(noise * torch.randn(p.shape, generator=generator))
            steps += 1
        return {"trained_steps": float(steps)}

    return train


def test_rounds_end_early_the_last_trains_in_full_and_sparsity_is_exact() -> None:
    pruner = LotteryTicketPruner(0.8, 3, early_bird=EarlyBird(every_steps=5, window=3, tolerance=0.05))
    ticket = pruner.run(_net(), _trainer(pruner), progress=False)
    rows = ticket.metrics
    for row in rows[:-1]:
        assert row["early_bird_stopped"] == 1.0
        assert row["early_bird_step"] == row["trained_steps"] < STEPS
        assert row["early_bird_step"] % 5 == 0 and row["early_bird_step"] >= 5 * 4  # window + 1 candidates
    assert rows[-1]["early_bird_stopped"] == 0.0 and rows[-1]["trained_steps"] == rows[-1]["early_bird_step"] == STEPS
    total = 16 * 32 + 32 * 2
    assert ticket.remaining_parameters == round(total * 0.2)
    assert [round(total * (1 - s)) for s in ticket.sparsity_history] == [
        round(total * 0.2 ** (k / 3)) for k in (1, 2, 3)
    ]


def test_a_mask_that_keeps_changing_never_ends_a_round() -> None:
    pruner = LotteryTicketPruner(0.5, 2, early_bird=EarlyBird(every_steps=10, window=2, tolerance=0.001))
    ticket = pruner.run(_net(), _trainer(pruner, noise=0.5), progress=False)
    assert [r["early_bird_stopped"] for r in ticket.metrics] == [0.0, 0.0, 0.0]
    assert [r["trained_steps"] for r in ticket.metrics] == [STEPS] * 3


def test_early_rewinding_waits_for_its_snapshot() -> None:
    pruner = LotteryTicketPruner(0.5, 1, "early:60", early_bird=EarlyBird(every_steps=5, window=1, tolerance=0.5))
    ticket = pruner.run(_net(), _trainer(pruner), progress=False)
    assert ticket.metrics[0]["early_bird_stopped"] == 1.0 and ticket.metrics[0]["early_bird_step"] >= 60
    assert ticket.rewind_iteration == 60


def test_without_the_option_nothing_stops_and_no_columns_are_added() -> None:
    pruner = LotteryTicketPruner(0.5, 1)
    ticket = pruner.run(_net(), _trainer(pruner), progress=False)
    assert not pruner.should_stop and all("early_bird_step" not in r for r in ticket.metrics)


def _masks(bits: str) -> dict[str, np.ndarray]:
    return {"w": np.array([b == "1" for b in bits])}


def test_the_watch_stops_when_the_newest_is_close_to_each_of_the_window() -> None:
    watch = EarlyBirdWatch(EarlyBird(every_steps=2, window=2, tolerance=0.3), total=4)
    sequence = iter(["1100", "0011", "0011", "0011"])
    assert watch.distance(_masks("1100"), _masks("1001")) == 0.5
    # Steps 1, 3 take no candidate; 2, 4 fill the window; 6 compares 0011 with 1100: far.
    assert [watch.on_step(s, lambda: _masks(next(sequence))) for s in range(1, 7)] == [False] * 6
    assert watch.distances == [1.0] and watch.stopped_at is None
    assert watch.on_step(7, lambda: _masks("0000")) is False
    assert watch.on_step(8, lambda: _masks(next(sequence))) is True
    assert watch.stopped_at == 8 and watch.distances == [1.0, 0.0]
    assert watch.on_step(9, lambda: _masks("1111")) is True  # stays stopped until reset
    watch.reset()
    assert watch.stopped_at is None and not watch.masks


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"every_steps": 0}, ValueError, "every_steps: expected an int >= 1"),
        ({"every_steps": 1.5}, TypeError, "every_steps: expected an int"),
        ({"every_steps": 5, "window": 0}, ValueError, "window: expected an int >= 1"),
        ({"every_steps": 5, "tolerance": 0.0}, ValueError, r"tolerance: must lie in \(0, 1\]"),
        ({"every_steps": 5, "tolerance": float("nan")}, ValueError, "tolerance: got NaN"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        EarlyBird(**kwargs)


def test_config_refuses_something_else_as_early_bird() -> None:
    with pytest.raises(TypeError, match="early_bird: expected an EarlyBird"):
        LotteryTicketConfig(0.5, 2, early_bird=5)  # type: ignore[arg-type]


def test_a_step_reported_twice_is_checked_once() -> None:
    watch = EarlyBirdWatch(EarlyBird(every_steps=2, window=1, tolerance=0.3), total=4)
    calls = []

    def candidate() -> dict[str, np.ndarray]:
        calls.append(1)
        return _masks("1100")

    for step in (1, 2, 2, 3, 3):  # a trainer callback reports its count before and after each step
        watch.on_step(step, candidate)
    assert len(calls) == 1 and len(watch.masks) == 1 and watch.checked == 2


def _stepped(pruner: LotteryTicketPruner, model: nn.Module, steps: range) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    pruner.attach(opt)
    for _ in steps:
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), Y).backward()
        opt.step()


def test_the_run_state_carries_the_rounds_candidates() -> None:
    bird = EarlyBird(every_steps=5, window=3, tolerance=0.05)
    model = _net()
    pruner = LotteryTicketPruner(0.8, 3, early_bird=bird)
    pruner.start(model)
    _stepped(pruner, model, range(12))  # candidates after steps 5 and 10
    state = pruner.run_state()
    assert state.early_bird is not None and len(state.early_bird["candidates"]) == 2
    restored = RunState.from_dict(state.to_dict(), "state")
    other = LotteryTicketPruner(0.8, 3, early_bird=bird)
    other.start(model)
    other.restore(restored)
    again = other.run_state().early_bird
    assert again is not None and again["checked"] == 10 and again["distances"] == state.early_bird["distances"]
    assert len(again["candidates"]) == 2
    for a, b in zip(state.early_bird["candidates"], again["candidates"]):
        assert all(torch.equal(a[n], b[n]) for n in a)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"candidates": "masks"}, r"state\['early_bird'\]\['candidates'\]: expected a list of masks"),
        ({"distances": ["far"]}, r"\['distances'\]: expected a list of numbers"),
        ({"stopped_at": 0}, r"\['stopped_at'\]: expected an int >= 1, got 0"),
        ({"checked": 2.5}, r"\['checked'\]: expected an int >= 1, got float"),
        ({"masks": []}, r"state\['early_bird'\]: expected the early-bird state"),
    ],
)
def test_a_damaged_early_bird_state_is_refused(change: dict[str, Any], match: str) -> None:
    pruner = LotteryTicketPruner(0.8, 3, early_bird=EarlyBird(every_steps=5))
    pruner.start(_net())
    values = pruner.run_state().to_dict()
    with pytest.raises(ValueError, match=match):
        RunState.from_dict({**values, "early_bird": {**values["early_bird"], **change}}, "state")


def test_candidates_of_another_shape_are_refused() -> None:
    pruner = LotteryTicketPruner(0.8, 3, early_bird=EarlyBird(every_steps=5))
    model = _net()
    pruner.start(model)
    state = pruner.run_state()
    wrong = {n: torch.ones(3, dtype=torch.bool) for n in state.masks}
    damaged = dataclasses.replace(state, early_bird={**state.early_bird, "candidates": [wrong]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="state: early-bird candidate: mask '0.weight' is not a bool array"):
        pruner.restore(damaged)


def test_a_state_file_missing_a_candidate_is_refused() -> None:
    with pytest.raises(ValueError, match="f: early-bird candidate 'early_bird/1/w' is missing"):
        candidates_from_arrays(2, ["w"], {"early_bird/0/w": np.ones(2, bool)}, "f")
    with pytest.raises(ValueError, match="f: the early-bird record counts -1 candidates"):
        candidates_from_arrays(-1, ["w"], None, "f")
