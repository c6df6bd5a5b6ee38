"""`BufferedAdam` (the Greydanus study's Adam) computes exactly what ``torch.optim.Adam`` does."""

from __future__ import annotations

import pytest
from torch.optim.optimizer import register_optimizer_step_post_hook

import torch
from lottery_ticket.cli.demo.buffered_adam import BufferedAdam
from lottery_ticket.cli.demo.science import greydanus_mlp


def _trained(optimizer_class: type[torch.optim.Optimizer], steps: int = 40) -> list[torch.Tensor]:
    model = greydanus_mlp(0)
    optimizer = optimizer_class(model.parameters(), lr=1e-2)  # type: ignore[call-arg]
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(300, 40, generator=generator), torch.randint(0, 10, (300,), generator=generator)
    for step in range(steps):
        batch = slice(step % 3 * 100, step % 3 * 100 + 100)
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()  # type: ignore[no-untyped-call, unused-ignore]
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def test_the_same_bits_as_torchs_adam() -> None:
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        ours, theirs = _trained(BufferedAdam), _trained(torch.optim.Adam)
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_step_hooks_see_it_and_a_closure_is_refused() -> None:
    seen: list[object] = []
    handle = register_optimizer_step_post_hook(lambda opt, args, kwargs: seen.append(opt))
    try:
        model = torch.nn.Linear(2, 1)
        optimizer = BufferedAdam(model.parameters(), lr=0.1)
        model(torch.ones(1, 2)).sum().backward()
        optimizer.step()
    finally:
        handle.remove()
    assert seen == [optimizer]  # the pruner keeps its masks through this hook
    with pytest.raises(ValueError, match="closure: BufferedAdam takes none"):
        optimizer.step(lambda: 0.0)
