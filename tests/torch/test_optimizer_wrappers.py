"""Optimizer wrappers from trainers (accelerate, Lightning, DeepSpeed-shaped) work wherever the pruner
takes an optimizer: `attach`, `start(optimizer=)` and `rewind(optimizer=)`."""

from __future__ import annotations

from typing import Any

import pytest

import torch
from lottery_ticket import LotteryTicketPruner, RewindStrategy
from lottery_ticket.torch._optim import unwrap_optimizer
from torch import nn


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))


def train_step(model: nn.Module, opt: Any) -> None:
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(24, 6, generator=gen), torch.randn(24, 4, generator=gen)
    opt.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    opt.step()


def accelerated(opt: torch.optim.Optimizer) -> Any:
    import accelerate

    return accelerate.Accelerator(cpu=True).prepare(opt)


def lightning_wrapped(opt: torch.optim.Optimizer) -> Any:
    from lightning.pytorch.core.optimizer import LightningOptimizer

    return LightningOptimizer(opt)


class DeepSpeedShaped:
    """Shaped like DeepSpeed's optimizers (a plain object forwarding to ``.optimizer``); DeepSpeed
    itself is not installed in the test environment."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    @property
    def param_groups(self) -> Any:
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:
        return self.optimizer.state

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def step(self) -> None:
        self.optimizer.step()


WRAPPERS = {"accelerate": accelerated, "lightning": lightning_wrapped, "deepspeed-shaped": DeepSpeedShaped}


@pytest.mark.parametrize("wrap", list(WRAPPERS))
def test_unwrap_finds_the_torch_optimizer(wrap: str) -> None:
    opt = torch.optim.SGD(mlp().parameters(), lr=0.1)
    assert unwrap_optimizer(WRAPPERS[wrap](opt)) is opt
    assert unwrap_optimizer(opt) is opt


def test_attach_on_accelerated_optimizer_keeps_masks_and_counts_each_step_once() -> None:
    # Before the unwrapping this raised AttributeError: ... '_optimizer_step_post_hooks'.
    model = mlp()
    pruner = LotteryTicketPruner(0.75, 1, RewindStrategy.early(iteration=3))
    opt = accelerated(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    pruner.start(model, optimizer=opt)
    handle = pruner.attach(opt)
    weights_at = []
    for _ in range(5):
        train_step(model, opt)
        weights_at.append(model[0].weight.detach().clone())
    pruner.prune()
    pruner.rewind(optimizer=opt)
    # The snapshot was taken at step 3, so steps were counted once each.
    kept = pruner.masks["0.weight"]
    assert torch.equal(model[0].weight.detach()[kept], weights_at[2][kept])
    assert len(opt.state) == 0
    for _ in range(3):
        train_step(model, opt)
        for name, param in model.named_parameters():
            if name in pruner.masks:
                assert torch.count_nonzero(param.detach()[~pruner.masks[name]]) == 0
    handle.remove()


@pytest.mark.parametrize("wrap", ["lightning", "deepspeed-shaped"])
def test_wrapped_optimizer_inside_run_counts_steps_once(wrap: str) -> None:
    # The global hook sees the inner optimizer: attaching the wrapper must still mark it attached.
    model = mlp()
    pruner = LotteryTicketPruner(0.5, 1, RewindStrategy.early(iteration=4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    wrapper = WRAPPERS[wrap](opt)
    seen: list[torch.Tensor] = []

    def train(net: nn.Module, round_index: int) -> None:
        if round_index == 0:
            handle = pruner.attach(wrapper)
            for _ in range(6):
                train_step(net, opt)
                seen.append(net[0].weight.detach().clone())
            handle.remove()

    ticket = pruner.run(model, train, progress=False)
    assert ticket.iterations_per_round == 6
    assert torch.equal(ticket.snapshot["0.weight"], seen[3])


def test_lr_rewinds_through_a_wrapped_optimizer() -> None:
    model = mlp()
    pruner = LotteryTicketPruner(0.5, 1, RewindStrategy.learning_rate())
    inner = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(inner, step_size=1, gamma=0.5)
    opt = accelerated(inner)
    pruner.start(model, optimizer=opt, scheduler=sched)
    pruner.attach(opt)
    for _ in range(3):
        train_step(model, opt)
        sched.step()
    pruner.prune()
    pruner.rewind()
    assert inner.param_groups[0]["lr"] == pytest.approx(0.1)


def test_non_optimizers_are_refused_naming_the_argument_and_nothing_changes() -> None:
    model = mlp()
    pruner = LotteryTicketPruner(0.5, 1)
    with pytest.raises(TypeError, match="optimizer: expected a torch.optim.Optimizer or a wrapper"):
        pruner.start(model, optimizer="sgd")
    with pytest.raises(RuntimeError, match="start"):
        pruner.masks  # noqa: B018 - the failed start left the pruner unstarted
    pruner.start(model)
    with pytest.raises(TypeError, match="optimizer: expected a torch.optim.Optimizer or a wrapper"):
        pruner.attach(object())
    with pytest.raises(TypeError, match="optimizer"):
        pruner.rewind(optimizer=DeepSpeedShaped(None))  # type: ignore[arg-type]
