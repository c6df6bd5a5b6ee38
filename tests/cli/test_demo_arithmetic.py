"""The studies' arithmetic: `BufferedAdam` (the Greydanus study's Adam) computes exactly what
``torch.optim.Adam`` does, and flushing denormals (`study_arithmetic`) changes no trained weight."""

from __future__ import annotations

import pytest
from torch.optim.optimizer import register_optimizer_step_post_hook

import torch
from lottery_ticket.cli.demo.buffered_adam import BufferedAdam
from lottery_ticket.cli.demo.parallel import study_arithmetic
from lottery_ticket.cli.demo.science import greydanus_mlp


def _trained(
    optimizer_class: type[torch.optim.Optimizer], steps: int = 40
) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    model = greydanus_mlp(0)
    optimizer = optimizer_class(model.parameters(), lr=1e-2)  # type: ignore[call-arg]
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(1000, 40, generator=generator), torch.randint(0, 10, (1000,), generator=generator)
    for step in range(steps):
        batch = slice(step % 10 * 100, step % 10 * 100 + 100)
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()  # type: ignore[no-untyped-call, unused-ignore]
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()], optimizer


def test_the_same_bits_as_torchs_adam() -> None:
    restore = study_arithmetic()
    try:
        (ours, _), (theirs, _) = _trained(BufferedAdam), _trained(torch.optim.Adam)
    finally:
        restore()
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_flushing_denormals_changes_no_trained_weight() -> None:
    restore = study_arithmetic()
    try:
        flushed, _ = _trained(BufferedAdam, 1000)
        torch.set_flush_denormal(False)
        kept, optimizer = _trained(BufferedAdam, 1000)
    finally:
        restore()
    # Dead units' first moments sit in the denormals by now: the flush had something to flush.
    tiny = torch.finfo(torch.float32).tiny
    moments = [state["exp_avg"] for state in optimizer.state.values()]
    assert sum(int(((m != 0) & (m.abs() < tiny)).sum()) for m in moments) > 10_000
    assert all(torch.equal(a, b) for a, b in zip(flushed, kept))


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
