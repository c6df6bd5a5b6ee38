"""One rank of the distributed tests (run as a script: RANK WORLD PORT OUT_DIR [device-paths]).

Every rank builds the same cases from seeds, runs its part on gloo over 127.0.0.1 and saves its
masks; the test process then compares them with one process's selection (see
test_distributed.py). Self-terminating: the gloo timeout bounds every collective. With
``device-paths`` the torch-op selection takes the branches a GPU would (`_device.is_host` says
no), so ranks of CUDA tensors are checked here too: NCCL and gloo run the same collectives.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _cases import dtensor_cases, fsdp_run, plain_cases

from lottery_ticket import global_magnitude_masks


def main() -> None:
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    device_paths = sys.argv[5:] == ["device-paths"]
    if device_paths:
        from lottery_ticket.torch import _device

        _device.is_host = lambda device: False
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    saved: dict[str, Any] = {}
    for name, case in plain_cases(world).items():
        weights, masks = case["weights"][rank], case["masks"][rank] if case["masks"] is not None else None
        got = global_magnitude_masks(weights, case["amount"], masks, case["scope"], process_group=True)
        for i, m in enumerate(got):
            saved[f"{name}/{i}"] = m.numpy()
    from torch.distributed.tensor import DTensor, distribute_tensor

    for name, case in dtensor_cases(world).items():
        mesh = case["mesh"]()
        weights = [
            distribute_tensor(w, mesh, p, src_data_rank=None) for w, p in zip(case["weights"], case["placements"])
        ]
        masks = None
        if case["masks"] is not None:
            masks = [
                distribute_tensor(m, mesh, p, src_data_rank=None) for m, p in zip(case["masks"], case["placements"])
            ]
        got = global_magnitude_masks(weights, case["amount"], masks, case["scope"])
        assert all(isinstance(m, DTensor) and m.placements == w.placements for m, w in zip(got, weights))
        for i, m in enumerate(got):
            whole = m.full_tensor()
            if rank == 0:
                saved[f"{name}/{i}"] = whole.numpy()
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Partial

    partial = DTensor.from_local(torch.ones(2, 3), init_device_mesh("cpu", (world,)), [Partial()])
    try:
        global_magnitude_masks([partial], 0.5)
    except ValueError as err:
        saved["partial_refused"] = np.array(str(err))
    if world == 2 and not device_paths:  # FSDP2 once: its selection is the plain cases'
        sharded, single = fsdp_run(world)
        if rank == 0:
            for key in sharded:
                saved[f"fsdp/{key}"], saved[f"fsdp_single/{key}"] = sharded[key], single[key]
    np.savez(out / f"rank{rank}.npz", **saved)
    dist.destroy_process_group()
    # Every output is written and the group is gone: skip the interpreter's teardown, where gloo's
    # threads have (rarely) aborted the process there with std::terminate.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
