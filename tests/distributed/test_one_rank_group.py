"""The distributed code paths in this process (a one-rank gloo group): argument checks and DTensor oddities."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta

import pytest
import torch.distributed as dist

import torch
from lottery_ticket import LotteryTicketPruner, alive_counts, global_magnitude_masks

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo"
)


@pytest.fixture(scope="module")
def group() -> Iterator[None]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1, timeout=timedelta(seconds=30)
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_one_rank_group_equals_one_process(group: None) -> None:
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(6, 5, generator=gen), torch.randn(9, generator=gen).to(torch.float16)]
    masks = [torch.rand(6, 5, generator=gen) > 0.3, torch.ones(9, dtype=torch.bool)]
    for amount in [0.5, 7, 1.0]:
        for scope in ("global", "layer"):
            want = global_magnitude_masks(weights, amount, masks, scope)  # type: ignore[arg-type]
            got = global_magnitude_masks(weights, amount, masks, scope, process_group=True)  # type: ignore[arg-type]
            got_default = global_magnitude_masks(weights, amount, masks, scope, process_group=dist.group.WORLD)  # type: ignore[arg-type]
            for w, g, d in zip(want, got, got_default):
                assert torch.equal(w, g) and torch.equal(w, d)
    assert alive_counts(masks, process_group=True) == alive_counts(masks)


def test_dtensor_oddities_raise_naming_the_argument(group: None) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Partial, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (1,))
    w = torch.randn(4, 3)
    sharded = distribute_tensor(w, mesh, [Shard(0)])
    columns = global_magnitude_masks([distribute_tensor(w, mesh, [Shard(1)])], 0.5)[0]
    assert torch.equal(columns.full_tensor(), global_magnitude_masks([w], 0.5)[0])
    partial = torch.distributed.tensor.DTensor.from_local(w, mesh, [Partial()])
    with pytest.raises(ValueError, match=r"weights\[0\]: DTensor placement .*Partial"):
        global_magnitude_masks([partial], 0.5)
    with pytest.raises(ValueError, match=r"weights\[1\]: a plain tensor among DTensors"):
        global_magnitude_masks([sharded, torch.randn(3)], 0.5)
    with pytest.raises(ValueError, match="process_group: DTensor weights are reduced over their device mesh"):
        global_magnitude_masks([sharded], 0.5, process_group=dist.new_group([0]))
    with pytest.raises(ValueError, match=r"masks\[0\]: shape \(2, 3\) differs"):
        global_magnitude_masks([sharded], 0.5, [torch.ones(2, 3, dtype=torch.bool)])
    got = global_magnitude_masks([sharded], 0.5)[0]
    assert got.placements == sharded.placements and torch.equal(got.full_tensor(), global_magnitude_masks([w], 0.5)[0])
    assert torch.equal(w, sharded.full_tensor())


def test_pruner_process_group_counts_over_ranks(group: None) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Linear(6, 2))
    twin = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Linear(6, 2))
    twin.load_state_dict(model.state_dict())
    grouped = LotteryTicketPruner(0.7, 2, process_group=True).find_ticket(model)
    alone = LotteryTicketPruner(0.7, 2).find_ticket(twin)
    assert grouped.sparsity_history == alone.sparsity_history
    for name in alone.masks:
        assert (grouped.masks[name] == alone.masks[name]).all()
