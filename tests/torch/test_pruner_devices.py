"""The pruner with its snapshot on another device, and on CUDA models where a GPU is present."""

from __future__ import annotations

import numpy as np
import pytest

import torch
from lottery_ticket import LotteryTicketPruner, RewindStrategy
from torch import nn

CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device: no GPU is lent to this task; the torch-op path is tested on CPU",
)


def _model(device: str = "cpu") -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.BatchNorm1d(16), nn.Linear(16, 3)).to(device)


def _train(model: nn.Module, round_index: int) -> dict[str, float]:
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(round_index)
    x, y = torch.randn(32, 12, generator=gen).to(device), torch.randint(0, 3, (32,), generator=gen).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(4):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return {"loss": float(loss.detach())}


def _run(device: str, **options: object) -> tuple[dict[str, np.ndarray], nn.Module]:
    model = _model(device)
    pruner = LotteryTicketPruner(0.75, 2, RewindStrategy.early(iteration=2), **options)  # type: ignore[arg-type]
    ticket = pruner.run(model, _train, progress=False)
    for name, mask in pruner.masks.items():
        assert mask.device == dict(model.named_parameters())[name].device
    return dict(ticket.masks), model


def test_snapshot_on_another_device_gives_the_same_ticket() -> None:
    want, model = _run("cpu")
    got, twin = _run("cpu", snapshot_device="cpu")
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        assert torch.equal(a, b)


def test_numpy_models_refuse_a_snapshot_device() -> None:
    pruner = LotteryTicketPruner(0.5, 1, snapshot_device="cuda")
    with pytest.raises(ValueError, match="snapshot_device: NumPy models keep their snapshot in host memory"):
        pruner.start({"w": np.ones((3, 3), dtype=np.float32)})


@CUDA
def test_cuda_model_prunes_on_the_device_like_the_cpu() -> None:
    want, _ = _run("cpu")
    for options in ({}, {"snapshot_device": "cpu"}):
        got, model = _run("cuda", **options)
        assert next(model.parameters()).is_cuda
        # Training on two devices differs in rounding, so the masks may too; their sizes are exact.
        assert sum(int(m.sum()) for m in got.values()) == sum(int(m.sum()) for m in want.values())


@CUDA
def test_drop_in_global_unstructured_on_cuda() -> None:
    from torch.nn.utils import prune

    import lottery_ticket.torch as ltt

    net = nn.Sequential(nn.Linear(10, 4), nn.Linear(4, 1)).cuda()
    ltt.global_unstructured([(net[0], "weight"), (net[1], "weight")], prune.L1Unstructured, amount=10)
    assert net[0].weight_mask.is_cuda
    assert int((net[0].weight_mask == 0).sum() + (net[1].weight_mask == 0).sum()) == 10
