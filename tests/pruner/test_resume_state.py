"""`run_state` / `restore` (what the trainer callbacks checkpoint, as a dict or a ticket file): a
pruner restored mid-run continues exactly like the original."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest

import torch
from lottery_ticket import LotteryTicketPruner, RewindStrategy, Ticket
from lottery_ticket.pruner import RunState
from lottery_ticket.pruner.resume import read_state_file, write_state_file
from torch import nn


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))


def steps(model: nn.Module, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler, n: int) -> None:
    gen = torch.Generator().manual_seed(3)
    for _ in range(n):
        x, y = torch.randn(24, 6, generator=gen), torch.randn(24, 4, generator=gen)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        sched.step()


def setup(model: nn.Module) -> tuple[LotteryTicketPruner, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    pruner = LotteryTicketPruner(0.8, 3, RewindStrategy.early(iteration=2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    pruner.start(model, optimizer=opt, scheduler=sched)
    pruner.attach(opt)
    return pruner, opt, sched


def finish(
    pruner: LotteryTicketPruner,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    while pruner.round < 3:
        pruner.prune()
        pruner.rewind()
        steps(model, opt, sched, 4)


@pytest.mark.parametrize("via_file", [False, True])
def test_restored_pruner_finishes_like_the_original(tmp_path: Path, via_file: bool) -> None:
    model = mlp()
    pruner, opt, sched = setup(model)
    steps(model, opt, sched, 5)
    pruner.prune()
    pruner.rewind()
    steps(model, opt, sched, 3)
    # A "checkpoint": model, optimizer and scheduler as a trainer saves them, plus the pruner state.
    saved_model, saved_opt, saved_sched = (
        copy.deepcopy(model.state_dict()),
        copy.deepcopy(opt.state_dict()),
        sched.state_dict(),
    )
    if via_file:
        write_state_file(tmp_path / "state.safetensors", pruner.ticket(), pruner.run_state(), {"note": 1})
        found = read_state_file(tmp_path / "state.safetensors")
        state = found.state
        assert found.extra == {"note": 1}
        assert Ticket.load(tmp_path / "state.safetensors").masks.keys() == pruner.masks.keys()
    else:
        state = RunState.from_dict(pruner.run_state().to_dict(), "state")
    finish(pruner, model, opt, sched)

    other = mlp()
    restored, opt2, sched2 = setup(other)
    other.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    restored.restore(state)
    assert restored.round == 1
    finish(restored, other, opt2, sched2)
    for name, mask in pruner.masks.items():
        assert torch.equal(mask, restored.masks[name])
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    assert restored.ticket().sparsity_history == pruner.ticket().sparsity_history


def test_bad_states_are_refused_and_nothing_changes() -> None:
    model = mlp()
    pruner, opt, sched = setup(model)
    steps(model, opt, sched, 3)
    pruner.prune()
    state = pruner.run_state()
    fresh = LotteryTicketPruner(0.8, 3, RewindStrategy.early(iteration=2))
    fresh.start(mlp())
    before = {n: m.clone() for n, m in fresh.masks.items()}
    other_config = LotteryTicketPruner(0.5, 3, RewindStrategy.early(iteration=2))
    other_config.start(mlp())
    with pytest.raises(ValueError, match="state: written by a different configuration"):
        other_config.restore(state)
    with pytest.raises(ValueError, match="state: prunes other tensors"):
        fresh.restore(dataclasses.replace(state, masks={"0.weight": state.masks["0.weight"]}))
    with pytest.raises(ValueError, match="state: mask '2.weight' is not a bool array of the weight's shape"):
        fresh.restore(dataclasses.replace(state, masks={**state.masks, "2.weight": np.ones((2, 2), bool)}))
    with pytest.raises(ValueError, match="state: round 7 exceeds"):
        fresh.restore(dataclasses.replace(state, round=7))
    with pytest.raises(ValueError, match=r"state\['step'\]"):
        RunState.from_dict({**state.to_dict(), "step": -1}, "state")
    with pytest.raises(ValueError, match="state: not a run state"):
        RunState.from_dict({"round": 1}, "state")
    with pytest.raises(TypeError, match="state: expected a mapping"):
        RunState.from_dict([1, 2], "state")
    with pytest.raises(TypeError, match="state: expected a RunState"):
        fresh.restore(state.to_dict())  # type: ignore[arg-type]
    assert fresh.round == 0
    for name, mask in fresh.masks.items():
        assert torch.equal(mask, before[name])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"importance": "random"}, "importance='magnitude', this run has importance='random'"),
        ({"seed": 3}, "seed=0, this run has seed=3"),
    ],
)
def test_a_state_of_another_method_is_refused(options: dict[str, object], message: str) -> None:
    model = mlp()
    pruner, opt, sched = setup(model)
    steps(model, opt, sched, 3)
    pruner.prune()
    other = LotteryTicketPruner(0.8, 3, RewindStrategy.early(iteration=2), **options)  # type: ignore[arg-type]
    other.start(mlp())
    with pytest.raises(ValueError, match=message):
        other.restore(pruner.run_state())
    assert other.round == 0


def test_states_written_before_importance_and_seed_were_recorded_still_load() -> None:
    model = mlp()
    pruner, opt, sched = setup(model)
    steps(model, opt, sched, 3)
    pruner.prune()
    old = {k: v for k, v in pruner.run_state().to_dict().items() if k not in ("importance", "seed")}
    state = RunState.from_dict(old, "state")
    assert state.importance is None and state.seed is None
    other = LotteryTicketPruner(0.8, 3, RewindStrategy.early(iteration=2), importance="random")
    other.start(mlp())
    other.restore(state)  # nothing recorded to compare: accepted
    assert other.round == 1
