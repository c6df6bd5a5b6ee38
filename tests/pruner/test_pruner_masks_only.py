"""`apply_ticket` with a masks-only ticket (no snapshot, as ``lottery-ticket prune --ticket``
writes): the masks are applied and kept, every other value stays, tied names resolve."""

from __future__ import annotations

import numpy as np
import pytest

import torch
from lottery_ticket import LotteryTicketConfig, LotteryTicketPruner, RewindStrategy, Ticket
from torch import nn


class Tied(nn.Module):
    """An embedding whose matrix is also the output head (``head.weight`` is ``emb.weight``)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, 6)
        self.fc = nn.Linear(6, 6)
        self.head = nn.Linear(6, 10, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(self.emb(ids))))


def masks_only(masks: dict[str, np.ndarray]) -> Ticket:
    return Ticket(masks, {}, LotteryTicketConfig(0.5, 1, RewindStrategy.none()), [0.5], [], None, None)


def test_masks_only_ticket_applies_masks_keeps_other_values_and_resolves_tied_names() -> None:
    model = Tied()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    masks = {"head.weight": rng.random((10, 6)) < 0.5, "fc.weight": rng.random((6, 6)) < 0.5}
    pruner = LotteryTicketPruner(0.9, 3)
    pruner.apply_ticket(model, masks_only(masks))

    assert list(pruner.masks) == ["emb.weight", "fc.weight"]  # the tied name resolved to its tensor
    for name, module_name in (("head.weight", "emb.weight"), ("fc.weight", "fc.weight")):
        live, mask = model.state_dict()[module_name], torch.from_numpy(masks[name])
        assert torch.count_nonzero(live[~mask]) == 0
        assert torch.equal(live[mask], before[module_name][mask])
    for name in ("fc.bias",):
        assert torch.equal(model.state_dict()[name], before[name])
    assert pruner.round == 1 and pruner.strategy == RewindStrategy.none()

    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    pruner.attach(opt)
    for _ in range(3):
        opt.zero_grad()
        model(torch.arange(10)).square().sum().backward()
        opt.step()
    assert torch.count_nonzero(model.fc.weight.detach()[~torch.from_numpy(masks["fc.weight"])]) == 0
    assert torch.count_nonzero(model.emb.weight.detach()[~torch.from_numpy(masks["head.weight"])]) == 0
    assert not torch.equal(model.fc.bias, before["fc.bias"])  # it did train


@pytest.mark.parametrize(
    ("masks", "error", "message"),
    [
        ({"fc.weight": np.ones((6, 5), bool)}, ValueError, r"ticket.masks\['fc.weight'\]: shape \(6, 5\)"),
        ({"head.weight": np.ones((10, 5), bool)}, ValueError, r"ticket.masks\['head.weight'\]: shape"),
        (
            {"emb.weight": np.ones((10, 6), bool), "head.weight": np.zeros((10, 6), bool)},
            ValueError,
            "a tied name of 'emb.weight' with a different mask",
        ),
        ({"nope.weight": np.ones((6, 6), bool)}, ValueError, "'nope.weight' is not a parameter"),
    ],
)
def test_bad_masks_only_tickets_change_nothing(masks: dict[str, np.ndarray], error: type, message: str) -> None:
    model = Tied()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=message):
        LotteryTicketPruner(0.5, 1).apply_ticket(model, masks_only(masks))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_masks_only_ticket_on_a_numpy_model() -> None:
    model = {"w": np.arange(1.0, 7.0).reshape(2, 3), "b": np.ones(3)}
    pruner = LotteryTicketPruner(0.5, 1)
    pruner.apply_ticket(model, masks_only({"w": np.array([[True, False, True], [False, True, False]])}))
    assert model["w"].tolist() == [[1.0, 0.0, 3.0], [0.0, 5.0, 0.0]] and model["b"].tolist() == [1.0, 1.0, 1.0]
    assert pruner.ticket().masks["w"].sum() == 3
