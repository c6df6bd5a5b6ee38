"""Training with a pruner: masks hold under any optimizer, optimizer state and LR schedules rewind."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import torch
from lottery_ticket import LotteryTicketPruner, RewindStrategy
from torch import nn

OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]
OPTIMIZERS: dict[str, OptimizerFactory] = {
    "sgd-momentum-wd": lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01),
    "adam": lambda m: torch.optim.Adam(m.parameters(), lr=0.01),
    "adamw": lambda m: torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1),
}


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return torch.randn(24, 6, generator=gen), torch.randn(24, 4, generator=gen)


def step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    x, y = batch()
    opt.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    opt.step()


def pruned_values(model: nn.Module, masks: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    params = dict(model.named_parameters())
    return [params[n].detach()[~m] for n, m in masks.items()]


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_pruned_weights_stay_exactly_zero_during_run(name: str) -> None:
    model = mlp()
    pruner = LotteryTicketPruner(0.9, 3)
    checked = []

    def train(net: nn.Module, round_index: int) -> None:
        opt = OPTIMIZERS[name](net)
        for _ in range(8):
            step(net, opt)
            for values in pruned_values(net, pruner.masks):
                assert torch.count_nonzero(values) == 0
        checked.append(round_index)

    pruner.run(model, train, progress=False)
    assert checked == [0, 1, 2, 3]
    # The hook is gone after run(): the same optimizer now moves pruned weights (momentum, decay).
    opt = OPTIMIZERS[name](model)
    step(model, opt)
    step(model, opt)
    assert any(torch.count_nonzero(v) > 0 for v in pruned_values(model, pruner.masks))


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_attach_keeps_masks_and_remove_detaches(name: str) -> None:
    model = mlp()
    pruner = LotteryTicketPruner(0.75, 1)
    pruner.start(model)
    opt = OPTIMIZERS[name](model)
    handle = pruner.attach(opt)
    step(model, opt)
    pruner.prune()
    pruner.rewind(optimizer=opt)
    for _ in range(5):
        step(model, opt)
        assert all(torch.count_nonzero(v) == 0 for v in pruned_values(model, pruner.masks))
    handle.remove()
    handle.remove()  # idempotent
    step(model, opt)
    step(model, opt)
    assert any(torch.count_nonzero(v) > 0 for v in pruned_values(model, pruner.masks))


def test_attach_counts_steps_once_even_inside_run() -> None:
    model = mlp()
    pruner = LotteryTicketPruner(0.5, 1, RewindStrategy.early(iteration=3))
    states = []

    def train(net: nn.Module, round_index: int) -> None:
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        pruner.attach(opt)  # also watched by run()'s global hook: each step must count once
        for _ in range(6):
            step(net, opt)
            if round_index == 0:
                states.append({k: v.clone() for k, v in net.state_dict().items()})

    ticket = pruner.run(model, train, progress=False)
    assert all(torch.equal(ticket.snapshot[k], states[2][k]) for k in states[2])


def test_attach_rejects_foreign_optimizers_and_numpy_models() -> None:
    pruner = LotteryTicketPruner(0.5, 1)
    pruner.start(mlp())
    other = mlp(1)
    with pytest.raises(ValueError, match="optimizer"):
        pruner.attach(torch.optim.SGD(other.parameters(), lr=0.1))
    with pytest.raises(TypeError, match="optimizer"):
        pruner.attach(object())
    numpy_pruner = LotteryTicketPruner(0.5, 1)
    import numpy as np

    numpy_pruner.start({"w": np.ones((2, 2), dtype=np.float32)})
    with pytest.raises(TypeError, match="optimizer"):
        numpy_pruner.attach(torch.optim.SGD(mlp().parameters(), lr=0.1))


def test_foreign_optimizers_are_left_alone_during_run() -> None:
    other = mlp(1)
    other_opt = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    pruner = LotteryTicketPruner(0.5, 2)

    def train(net: nn.Module, round_index: int) -> None:
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        step(net, opt)
        step(other, other_opt)

    pruner.run(mlp(), train, progress=False)
    assert len(other_opt.state) == 2 * 2  # momentum buffers of the other model survive rewinds
    assert all(torch.count_nonzero(p) == p.numel() for p in other.parameters() if p.dim() > 1)


def test_optimizer_reused_across_rounds_has_its_state_reset_at_each_rewind() -> None:
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    pruner = LotteryTicketPruner(0.8, 2)
    sizes = []

    def train(net: nn.Module, round_index: int) -> None:
        sizes.append(len(opt.state))
        for _ in range(3):
            step(net, opt)

    pruner.run(model, train, progress=False)
    assert sizes == [0, 0, 0]
    assert len(opt.state) == 4


def test_rewind_clears_momentum_of_pruned_and_surviving_weights() -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pruner = LotteryTicketPruner(0.5, 2)
    pruner.start(model, optimizer=opt)
    for _ in range(3):
        step(model, opt)
    assert all("momentum_buffer" in opt.state[p] for p in model.parameters())
    pruner.prune()
    pruner.rewind()
    assert len(opt.state) == 0


def lr_after_rewind(strategy: RewindStrategy, steps: int = 10) -> tuple[float, int]:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5**i)
    pruner = LotteryTicketPruner(0.5, 1, strategy, iterations_per_round=steps)
    pruner.start(model, optimizer=opt, scheduler=sched)
    pruner.attach(opt)
    for _ in range(steps):
        step(model, opt)
        sched.step()
    pruner.prune()
    pruner.rewind(optimizer=opt, scheduler=sched)
    return opt.param_groups[0]["lr"], sched.last_epoch


def test_scheduler_rewinds_as_the_strategy_requires() -> None:
    # After k steps, the next step (k + 1) runs at 0.5**k; that is where training resumes from W_k.
    assert lr_after_rewind(RewindStrategy.init()) == (1.0, 0)
    assert lr_after_rewind(RewindStrategy.learning_rate()) == (1.0, 0)
    assert lr_after_rewind(RewindStrategy.early(iteration=4)) == (0.5**4, 4)
    assert lr_after_rewind(RewindStrategy.late(fraction=0.3)) == (0.5**3, 3)
    assert lr_after_rewind(RewindStrategy.early(iteration=10)) == (0.5**10, 10)  # the last step
    assert lr_after_rewind(RewindStrategy.none()) == (0.5**10, 10)  # untouched


def test_scheduler_rewind_needs_the_scheduler_at_start() -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2)
    pruner = LotteryTicketPruner(0.5, 1)
    pruner.start(model)
    pruner.prune()
    with pytest.raises(ValueError, match="scheduler"):
        pruner.rewind(optimizer=opt, scheduler=sched)


def test_step_wise_api_requires_start_and_stops_after_the_last_round() -> None:
    pruner = LotteryTicketPruner(0.5, 1)
    with pytest.raises(RuntimeError, match="start"):
        pruner.prune()
    with pytest.raises(RuntimeError, match="start"):
        _ = pruner.masks
    pruner.start(mlp())
    with pytest.raises(ValueError, match="iteration"):
        pruner.on_step(-1)
    pruner.prune()
    with pytest.raises(RuntimeError, match="rounds are done"):
        pruner.prune()
