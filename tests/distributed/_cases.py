"""Cases the ranks and the single-process reference build alike (seeded, no randomness shared)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import torch

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
# Few distinct magnitudes: ties within tensors and across rank boundaries.
POOL = torch.tensor([0.0, -0.0, 0.25, -0.25, 1.0, -1.0, float("inf"), 1e-40], dtype=torch.float64)


def _tensor(gen: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype, tied: bool) -> torch.Tensor:
    if tied:
        return POOL[torch.randint(len(POOL), shape, generator=gen)].to(dtype)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)


def plain_cases(world: int) -> dict[str, dict[str, Any]]:
    """Per case: each rank's local tensors (the i-th tensor of every rank: shards of tensor i)."""
    cases: dict[str, dict[str, Any]] = {}
    specs = [
        ("tied_float", 0.37, "global", True, False),
        ("tied_int", 13, "global", True, True),
        ("random_masks", 0.6, "global", False, True),
        ("layer_float", 0.5, "layer", True, True),
        ("layer_int", 3, "layer", True, False),
        ("all", 1.0, "global", True, False),
        ("none", 0, "global", True, True),
    ]
    for seed, (name, amount, scope, tied, with_masks) in enumerate(specs):
        gen = torch.Generator().manual_seed(seed)
        weights, masks = [], []
        for rank in range(world):
            count = 3 if scope == "layer" else 2 + rank % 2  # global scope: ranks may differ
            dtypes = [DTYPES[(rank + i + seed) % 4] for i in range(count)]
            rows = [1 + (rank + i + seed) % 4 for i in range(count)]
            weights.append([_tensor(gen, (r, 3), d, tied) for r, d in zip(rows, dtypes)])
            masks.append([torch.rand((r, 3), generator=gen) > 0.25 for r in rows])
        cases[name] = {"weights": weights, "masks": masks if with_masks else None, "amount": amount, "scope": scope}
    return cases


def dtensor_cases(world: int) -> dict[str, dict[str, Any]]:
    """Whole tensors, their placements and a mesh factory (DTensor weights)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard

    def one_d() -> Any:
        return init_device_mesh("cpu", (world,))

    def two_d() -> Any:
        return init_device_mesh("cpu", (2, 2))

    # Shard(1): row-wise tensor parallel on a Linear weight; its shards interleave in flat order.
    layouts: dict[str, tuple[Callable[[], Any], list[Any]]] = {
        "1d": (one_d, [Shard(0)]),
        "cols": (one_d, [Shard(1)]),
    }
    if world == 4:  # HSDP-like (replicated along the first mesh dim), and 2-D tensor parallel
        layouts = {
            "2d": (two_d, [Replicate(), Shard(0)]),
            "2d_rows_cols": (two_d, [Shard(0), Shard(1)]),
            "2d_rep_cols": (two_d, [Replicate(), Shard(1)]),
        }
    cases: dict[str, dict[str, Any]] = {}
    for layout, (mesh, placements) in layouts.items():
        # 1-D tensors take Shard(0) where the layout shards a later dim.
        vector = [Shard(0) if type(p) is Shard else p for p in placements]
        for seed, (amount, scope, with_masks) in enumerate(
            [(0.45, "global", False), (17, "global", True), (0.5, "layer", True)]
        ):
            gen = torch.Generator().manual_seed(100 + seed)
            # Uneven shards (one rank's may be empty) and few magnitudes, so ties cross shard
            # boundaries; a replicated bias.
            weights = [
                _tensor(gen, (5, 4), torch.float32, True),
                _tensor(gen, (7,), torch.bfloat16, True),
                _tensor(gen, (3, 7), torch.float16, True),
                _tensor(gen, (3,), torch.float64, True),
            ]
            place = [placements, vector, placements, [Replicate()] * len(placements)]
            masks = [torch.rand(w.shape, generator=gen) > 0.2 for w in weights] if with_masks else None
            cases[f"{layout}_{seed}"] = {
                "weights": weights,
                "masks": masks,
                "placements": place,
                "mesh": mesh,
                "amount": amount,
                "scope": scope,
            }
    return cases


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 9), torch.nn.ReLU(), torch.nn.Linear(9, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2)
    )


def _train(model: torch.nn.Module, round_index: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(round_index)
    x, y = torch.randn(16, 6, generator=gen), torch.randn(16, 2, generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    return {"loss": float(loss.detach())}


def fsdp_run(world: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Final masks of an IMP run on an FSDP2-sharded model, and of the same run in one process."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from lottery_ticket import LotteryTicketPruner, RewindStrategy

    def prune(model: torch.nn.Module) -> dict[str, np.ndarray]:
        pruner = LotteryTicketPruner(0.8, 3, RewindStrategy.early(iteration=2), include="*weight")
        ticket = pruner.run(model, _train, progress=False)
        return dict(ticket.masks)

    sharded = _model()
    fully_shard(sharded, mesh=init_device_mesh("cpu", (world,)))
    return prune(sharded), prune(_model())
