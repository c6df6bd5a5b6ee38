"""`lottery_ticket.torch.instability`: barriers of toy paths whose error is known in closed form."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import torch
from lottery_ticket import LotteryTicketPruner
from lottery_ticket.torch import Instability, instability
from lottery_ticket.torch.stability import interpolate_state, recompute_batchnorm
from torch import nn


class Point(nn.Module):
    """Two weights and a float buffer: the whole state is the point on the path."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.3, 0.7]))
        self.register_buffer("level", torch.tensor(0.0))
        self.register_buffer("count", torch.tensor(5, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w.sum()


def _set(values: dict[int, list[float]]) -> Any:
    def train(model: Point, seed: int) -> None:
        with torch.no_grad():
            model.w.copy_(torch.tensor(values[seed]))
            model.level.fill_(float(seed))

    return train


def test_a_hump_between_two_minima_has_its_height_as_barrier() -> None:
    # w0 goes from +1 to -1; error = (1 - w0^2) / 2 is 0 at both ends and 0.5 in the middle.
    result = instability(
        Point(), _set({0: [1.0, 0.0], 1: [-1.0, 0.0]}), lambda m: (1 - m.w[0].item() ** 2) / 2, points=11
    )
    assert isinstance(result, Instability)
    assert result.alphas == pytest.approx(tuple(np.linspace(0, 1, 11)))
    assert result.errors[0] == pytest.approx(0.0) and result.errors[-1] == pytest.approx(0.0)
    assert result.errors[5] == pytest.approx(0.5)
    assert result.barrier == pytest.approx(0.5) and not result.stable
    assert result.to_dict()["barrier"] == pytest.approx(0.5)


def test_a_linear_error_has_no_barrier_and_unequal_ends_count_by_their_mean() -> None:
    # error = w0 / 2 on w0 from 0.2 to 1.0: monotone, so the maximum is an endpoint.
    result = instability(Point(), _set({3: [0.2, 0.0], 4: [1.0, 0.0]}), lambda m: m.w[0].item() / 2, seeds=(3, 4))
    assert result.seeds == (3, 4)
    assert result.errors[0] == pytest.approx(0.1) and result.errors[-1] == pytest.approx(0.5)
    assert result.barrier == pytest.approx(0.5 - 0.3) and max(result.errors) == result.errors[-1]


def test_identical_copies_are_stable() -> None:
    result = instability(Point(), _set({0: [0.5, 0.5], 1: [0.5, 0.5]}), lambda m: 0.25, points=3)
    assert result.errors == (0.25, 0.25, 0.25) and result.barrier == 0.0 and result.stable


def test_the_model_is_never_trained_and_each_seed_trains_one_copy() -> None:
    model = Point()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[tuple[int, int]] = []

    def train(net: nn.Module, seed: int) -> None:
        seen.append((id(net), seed))
        _set({0: [1.0, 1.0], 1: [2.0, 2.0]})(net, seed)

    instability(model, train, lambda m: 0.0)
    assert [s for _, s in seen] == [0, 1] and seen[0][0] != seen[1][0] and id(model) not in {i for i, _ in seen}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_buffers_are_interpolated_and_integer_buffers_kept() -> None:
    levels: list[float] = []

    def evaluate(m: nn.Module) -> float:
        levels.append(float(m.level))
        assert int(m.count) == 5
        return 0.0

    instability(Point(), _set({0: [0.0, 0.0], 1: [1.0, 1.0]}), evaluate, points=5)
    assert levels == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


def test_masks_hold_while_training_and_along_the_path() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    mask = torch.tensor([[True, False, True, False]] * 3)
    x, y = torch.randn(16, 4, generator=torch.Generator().manual_seed(0)), torch.randint(0, 2, (16,))
    during: list[bool] = []

    def train(net: nn.Module, seed: int) -> None:
        torch.manual_seed(seed)
        opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
        for _ in range(5):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x + torch.randn_like(x)), y).backward()
            opt.step()
            during.append(bool((net[0].weight[~mask] == 0).all()))

    along: list[bool] = []

    def evaluate(net: nn.Module) -> float:
        along.append(bool((net[0].weight[~mask] == 0).all()) and bool((net[0].weight[mask] != 0).all()))
        return 0.5

    instability(model, train, evaluate, masks={"0.weight": mask.numpy()}, points=4)
    assert during == [True] * 10 and along == [True] * 4
    assert bool((model[0].weight[~mask] != 0).all()), "the model itself stays unmasked"


def test_a_pruner_passes_its_masks_at_the_rewind_point() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    x, y = torch.randn(32, 8), torch.randint(0, 2, (32,))
    barriers: list[float] = []

    def fit(net: nn.Module, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        opt = torch.optim.SGD(net.parameters(), lr=0.2)
        for _ in range(6):
            batch = torch.randint(0, 32, (8,), generator=generator)
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
            opt.step()

    def error(net: nn.Module) -> float:
        with torch.no_grad():
            return float((net(x).argmax(1) != y).float().mean())

    pruner = LotteryTicketPruner(0.5, 1, "early:8")

    def train_round(net: nn.Module, r: int) -> None:
        fit(net, 7)
        # Round 1: net is the sparse network rewound to W_8; round 0: the dense one at step 6.
        barriers.append(instability(net, fit, error, masks=pruner if r else None).barrier)
        fit(net, 8)

    ticket = pruner.run(model, train_round, progress=False)
    assert len(barriers) == 2 and all(-1.0 <= b <= 1.0 for b in barriers)
    # The copies' optimizer steps are not the pruner's: round 0 counted its own 12 steps.
    assert ticket.iterations_per_round == 12 and ticket.rewind_iteration == 8
    assert pruner.density == pytest.approx(0.5, abs=0.01)


def test_batchnorm_statistics_are_recomputed_from_data() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    data = [torch.randn(10, 3) * 3 + 1 for _ in range(4)]
    recompute_batchnorm(net, [(d, None) for d in data])
    with torch.no_grad():
        features = net[0](torch.cat(data))
    torch.testing.assert_close(net[1].running_mean, features.mean(0))
    assert net[1].momentum == 0.1 and net.training
    captured: list[torch.Tensor] = []

    def evaluate(m: nn.Module) -> float:
        captured.append(m[1].running_mean.clone())
        return 0.0

    def scramble(m: nn.Module, seed: int) -> None:
        m[1].running_mean.fill_(100.0 * (seed + 1))

    instability(net, scramble, evaluate, batchnorm_data=data, points=3)
    assert all(bool((c.abs() < 50).all()) for c in captured)
    instability(net, scramble, evaluate, points=3)
    assert float(captured[-2][0]) == pytest.approx(150.0)


def test_interpolate_state_refuses_different_names() -> None:
    with pytest.raises(ValueError, match="b: "):
        interpolate_state({"a": torch.zeros(1)}, {"b": torch.zeros(1)}, 0.5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"seeds": (1, 1)}, ValueError, "seeds: .*different"),
        ({"seeds": (0, 1, 2)}, ValueError, "seeds: expected two"),
        ({"seeds": (0, 1.5)}, TypeError, "seeds: expected ints"),
        ({"points": 1}, ValueError, "points: "),
        ({"masks": {"w": torch.ones(3, dtype=torch.bool)}}, ValueError, r"masks\['w'\]: shape"),
        ({"masks": {"nope": torch.ones(2, dtype=torch.bool)}}, ValueError, "masks: .*'nope'"),
        ({"masks": {"w": torch.ones(2)}}, TypeError, r"masks\['w'\]: expected a bool"),
        ({"masks": 3}, TypeError, "masks: "),
    ],
)
def test_bad_arguments_are_refused_before_training(kwargs: dict[str, Any], error: type, match: str) -> None:
    calls: list[int] = []
    with pytest.raises(error, match=match):
        instability(Point(), lambda m, s: calls.append(s), lambda m: 0.0, **kwargs)
    assert calls == []


def test_an_error_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"evaluate: expected an error in \[0, 1\], got 1.5"):
        instability(Point(), _set({0: [0, 0], 1: [1, 1]}), lambda m: 1.5)
    with pytest.raises(TypeError, match="model: "):
        instability("model", _set({}), lambda m: 0.0)  # type: ignore[arg-type]
