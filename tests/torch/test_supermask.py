"""Supermask training: frozen weights, sampled masks with a straight-through gradient, export."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

import torch
from lottery_ticket import LotteryTicketPruner
from lottery_ticket.torch import supermask
from torch import nn


def net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 128), nn.ReLU(), nn.Linear(128, 4))


def task() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # Four Gaussian clusters in 16 dimensions; 400 train and 400 test points.
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=gen) * 1.2
    y = torch.randint(0, 4, (800,), generator=gen)
    x = centres[y] + torch.randn(800, 16, generator=gen)
    return x[:400], y[:400], x[400:], y[400:]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.fixture
def one_thread() -> Iterator[None]:
    # Tiny matrices: a second intra-op thread only adds synchronisation on a shared machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_supermask_on_a_frozen_random_network_learns_the_task() -> None:
    model = supermask.to_supermask(net(), seed=0)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("scores")}
    x, y, test_x, test_y = task()
    chance = accuracy(model, test_x, test_y)
    torch.manual_seed(1)  # the Bernoulli samples
    opt = torch.optim.Adam(supermask.scores(model), lr=0.05)
    for _ in range(300):
        model.train()
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    learned = accuracy(model, test_x, test_y)
    assert learned > 0.8 and learned > chance + 0.3, (chance, learned)
    state = model.state_dict()
    assert all(torch.equal(frozen[k], state[k]) for k in frozen)  # weights and biases never moved
    density = supermask.describe(model)["density"]
    assert 0.05 < density < 0.95


def test_eval_mask_is_the_threshold_and_training_samples() -> None:
    model = supermask.to_supermask(net(), seed=3, init_std=2.0)
    layer = model[0]
    assert isinstance(layer, supermask.SupermaskLayer)
    layer.eval()
    assert torch.equal(layer.mask(), (torch.sigmoid(layer.scores) > 0.5).float())
    x = torch.randn(5, 16)
    expected = nn.functional.linear(x, layer.layer.weight * layer.mask(), layer.layer.bias)
    torch.testing.assert_close(layer(x), expected)
    layer.train()
    torch.manual_seed(0)
    first, second = layer.mask(), layer.mask()
    assert set(first.detach().unique().tolist()) <= {0.0, 1.0} and not torch.equal(first, second)


def test_straight_through_gradient_reaches_the_scores() -> None:
    model = supermask.to_supermask(net(), seed=0)
    layer = model[2]
    layer.train()
    torch.manual_seed(0)
    mask = layer.mask()
    (mask * 3.0).sum().backward()
    probs = torch.sigmoid(layer.scores.detach())
    # d(sum 3 m)/ds = 3 * sigmoid'(s) through the estimator, whatever was sampled.
    torch.testing.assert_close(layer.scores.grad, 3.0 * probs * (1 - probs))


def test_ticket_export_and_conversion_back() -> None:
    original = net(2)
    w0 = {k: v.clone() for k, v in original.state_dict().items()}
    model = supermask.to_supermask(original, seed=0, init_std=1.0)
    masks = supermask.masks(model)
    ticket = supermask.to_ticket(model)
    assert ticket.importance == "supermask" and list(ticket.masks) == ["0.weight", "2.weight"]
    assert all(np.array_equal(ticket.masks[n], masks[n].numpy()) for n in masks)
    assert set(ticket.snapshot) == set(w0) and all(torch.equal(ticket.snapshot[k], w0[k]) for k in w0)
    model.eval()
    x = torch.randn(7, 16)
    supermask_out = model(x)
    restored = supermask.from_supermask(model)
    assert isinstance(restored[0], nn.Linear) and all(p.requires_grad for p in restored.parameters())
    assert all(torch.equal(v, w0[k]) for k, v in restored.state_dict().items())
    LotteryTicketPruner(0.5, 1).apply_ticket(restored, ticket)
    torch.testing.assert_close(restored(x), supermask_out)


def test_include_exclude_and_bad_inputs() -> None:
    model = supermask.to_supermask(net(), exclude="2.*")
    assert isinstance(model[0], supermask.SupermaskLayer) and isinstance(model[2], nn.Linear)
    with pytest.raises(ValueError, match="already has supermask layers"):
        supermask.to_supermask(model)
    with pytest.raises(ValueError, match="no supermask layers"):
        supermask.scores(net())
    with pytest.raises(ValueError, match="include: '0.bias' is not the weight"):
        supermask.to_supermask(net(), include="0.bias")
    with pytest.raises(ValueError, match="init_std"):
        supermask.to_supermask(net(), init_std=-1.0)
    with pytest.raises(TypeError, match="model"):
        supermask.to_supermask("net")  # type: ignore[arg-type]
    untouched = net()
    with pytest.raises(ValueError, match="bare Linear"):
        supermask.to_supermask(untouched[0])
