"""SNIP scores against autograd by hand, the model left untouched, and SNIP through the pruner."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import torch
from lottery_ticket import LotteryTicketPruner, global_magnitude_masks
from lottery_ticket.torch import Snip, snip_scores
from torch import nn


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(10, 6, generator=gen), torch.randint(0, 3, (10,), generator=gen)) for _ in range(3)]


def loss_fn(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return nn.functional.cross_entropy(net(x), y)


def test_scores_equal_weight_times_summed_gradients_by_hand() -> None:
    net, data = model(), batches()
    reference = model()
    w1, w2 = reference[0].weight, reference[3].weight
    grads = [torch.zeros_like(w1), torch.zeros_like(w2)]
    for batch in data:
        g1, g2 = torch.autograd.grad(loss_fn(reference, batch), [w1, w2])
        grads[0] += g1
        grads[1] += g2
    scores = snip_scores(net, loss_fn, data)
    assert list(scores) == ["0.weight", "3.weight"]
    torch.testing.assert_close(scores["0.weight"], (w1 * grads[0]).abs().detach(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(scores["3.weight"], (w2 * grads[1]).abs().detach(), rtol=1e-6, atol=1e-7)
    # Summing over batches is not one batch's score: the extra batches count.
    assert not torch.allclose(snip_scores(model(), loss_fn, data[:1])["0.weight"], scores["0.weight"])


def test_model_is_left_exactly_as_it_was() -> None:
    net = model()
    net[3].weight.grad = torch.full_like(net[3].weight, 7.0)
    net[0].bias.requires_grad_(False)
    net[3].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    scores = snip_scores(net, loss_fn, batches(), names=["0.weight", "3.weight", "0.bias"])
    assert set(scores) == {"0.weight", "3.weight", "0.bias"} and bool(scores["3.weight"].abs().sum() > 0)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm running stats too
    assert net[0].weight.grad is None and torch.equal(net[3].weight.grad, torch.full((3, 8), 7.0))
    assert not net[0].bias.requires_grad and not net[3].weight.requires_grad and net[0].weight.requires_grad


def test_pruner_with_snip_is_one_global_selection_of_the_scores() -> None:
    net, data = model(), batches()
    scores = snip_scores(model(), loss_fn, data)
    ticket = LotteryTicketPruner(0.8, 1, importance=Snip(loss_fn, data)).find_ticket(net)
    total = sum(s.numel() for s in scores.values())
    expected = global_magnitude_masks(scores, total - round(0.2 * total))
    assert ticket.importance == "snip" and ticket.remaining_parameters == round(0.2 * total)
    assert all(np.array_equal(ticket.masks[n], expected[n].numpy()) for n in scores)
    # Unlike magnitude pruning of the same init.
    magnitude = LotteryTicketPruner(0.8, 1).find_ticket(model())
    assert any(not np.array_equal(ticket.masks[n], magnitude.masks[n]) for n in scores)


def test_snip_scorer_in_a_stepwise_prune_yields_torch_masks() -> None:
    net = model()
    pruner = LotteryTicketPruner(0.5, 1, importance=Snip(loss_fn, iter(batches())))
    pruner.start(net)
    pruner.prune()
    assert all(m.dtype == torch.bool for m in pruner.masks.values()) and pruner.density == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: snip_scores("net", loss_fn, batches()), TypeError, "model"),  # type: ignore[arg-type]
        (lambda: snip_scores(model(), 3, batches()), TypeError, "loss_fn"),  # type: ignore[arg-type]
        (lambda: snip_scores(model(), loss_fn, 5), TypeError, "batches"),  # type: ignore[arg-type]
        (lambda: snip_scores(model(), loss_fn, []), ValueError, "batches: expected at least one"),
        (lambda: snip_scores(model(), loss_fn, batches(), names=["9.weight"]), ValueError, "names: '9.weight'"),
        (
            lambda: snip_scores(model(), lambda m, b: m(b[0]), batches()),
            TypeError,
            r"loss_fn: must return a scalar.*batches\[0\]",
        ),
        (lambda: snip_scores(model(), lambda m, b: torch.tensor(1.0), batches()), ValueError, "does not depend"),
        (lambda: Snip(loss_fn, []), ValueError, "batches"),
        (lambda: Snip("loss", batches()), TypeError, "loss_fn"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_are_named(call: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def test_a_failing_loss_leaves_the_model_untouched() -> None:
    net = model()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    calls = []

    def flaky(m: nn.Module, batch: Any) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return loss_fn(m, batch)

    with pytest.raises(RuntimeError, match="boom"):
        snip_scores(net, flaky, batches())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
