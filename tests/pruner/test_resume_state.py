"""`pruner_state` / `load_pruner_state` (what the trainer callbacks checkpoint): a pruner restored
mid-run continues exactly like the original."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

import torch
from lottery_ticket import LotteryTicketPruner, RewindStrategy, Ticket
from lottery_ticket.pruner.trainer_state import load_pruner_state, pruner_state, read_state_file, write_state_file
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
        write_state_file(tmp_path / "state.safetensors", pruner, {"note": 1})
        state, extra = read_state_file(tmp_path / "state.safetensors")
        assert extra == {"note": 1}
        assert Ticket.load(tmp_path / "state.safetensors").masks.keys() == pruner.masks.keys()
    else:
        state = pruner_state(pruner)
    finish(pruner, model, opt, sched)

    other = mlp()
    restored, opt2, sched2 = setup(other)
    other.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    load_pruner_state(restored, state)
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
    state = pruner_state(pruner)
    fresh = LotteryTicketPruner(0.8, 3, RewindStrategy.early(iteration=2))
    fresh.start(mlp())
    before = {n: m.clone() for n, m in fresh.masks.items()}
    other_config = LotteryTicketPruner(0.5, 3, RewindStrategy.early(iteration=2))
    other_config.start(mlp())
    with pytest.raises(ValueError, match="state: written by a different configuration"):
        load_pruner_state(other_config, state)
    with pytest.raises(ValueError, match=r"state\['masks'\]: prunes other tensors"):
        load_pruner_state(fresh, {**state, "masks": {"0.weight": state["masks"]["0.weight"]}})
    with pytest.raises(ValueError, match=r"state\['masks'\]\['2.weight'\]: shape"):
        load_pruner_state(fresh, {**state, "masks": {**state["masks"], "2.weight": np.ones((2, 2), bool)}})
    with pytest.raises(ValueError, match=r"state\['round'\]"):
        load_pruner_state(fresh, {**state, "round": 7})
    with pytest.raises(ValueError, match="state: not a pruner state"):
        load_pruner_state(fresh, {"round": 1})
    with pytest.raises(TypeError, match="state: expected a mapping"):
        load_pruner_state(fresh, [1, 2])  # type: ignore[arg-type]
    assert fresh.round == 0
    for name, mask in fresh.masks.items():
        assert torch.equal(mask, before[name])
