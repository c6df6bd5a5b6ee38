"""One rank of the fault tests (run as a script: RANK WORLD PORT OUT_DIR).

Each case makes the ranks' calls differ, or fail on one rank only; the rank records what it
raised and how long that took. A short gloo timeout bounds every collective, so a case that
hangs ends in a timeout error instead of stalling the test.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist

import torch
from lottery_ticket import LotteryTicketPruner, alive_counts, global_magnitude_masks

TIMEOUT_S = 20


def weights(rank: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(rank)
    return [torch.randn(4, 3, generator=gen), torch.randn(5, generator=gen, dtype=torch.float64)]


def cases(rank: int) -> dict[str, Callable[[], Any]]:
    w = weights(rank)
    masks = [torch.ones(4, 3, dtype=torch.bool), torch.ones(5, dtype=torch.bool)]
    layers = [torch.nn.Linear(3, 3) for _ in range(2 + rank)]  # pipeline-style: ranks hold different layers

    def select(*args: Any, **kwargs: Any) -> Callable[[], Any]:
        return lambda: global_magnitude_masks(*args, process_group=True, **kwargs)

    return {
        "fractions_differ": select(w, 0.7 if rank == 0 else 0.3),
        "count_and_fraction": select(w, 1000 if rank == 0 else 0.5),
        "scopes_differ": select(w, 0.5, scope="global" if rank == 0 else "layer"),
        "bad_amount_on_one_rank": select(w, 1.5 if rank == 1 else 0.5),
        "empty_list_on_one_rank": select([] if rank == 1 else w, 0.5),
        "rust_backend_on_one_rank": select(w, 0.5, backend="rust" if rank == 1 else "auto"),
        "numpy_on_one_rank": select([x.numpy() for x in w] if rank == 1 else w, 0.5),
        "bad_mask_on_one_rank": select(w, 0.5, [masks[0].to(torch.uint8), masks[1]] if rank == 0 else masks),
        "layer_counts_differ": select(w[: 1 + rank], 0.5, scope="layer"),
        "count_above_alive": select(w, 10**6),
        "alive_counts_lengths": lambda: alive_counts(masks[: 1 + rank], process_group=True),
        "alive_counts_bad_mask": lambda: alive_counts(
            [masks[0], masks[1].to(torch.float32)] if rank == 1 else masks, process_group=True
        ),
        "pruner_pipeline_split": lambda: LotteryTicketPruner(0.5, 2, process_group=True).find_ticket(
            torch.nn.Sequential(*layers)
        ),
    }


def main() -> None:
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=TIMEOUT_S),
    )
    raised: dict[str, Any] = {}
    global_magnitude_masks(weights(rank), 0.5, process_group=True)  # imports and connects before timing
    for name, call in cases(rank).items():
        dist.barrier()  # time each case from the moment every rank has reached it
        start = time.monotonic()
        try:
            call()
            raised[name] = {"type": None, "message": "", "seconds": time.monotonic() - start}
        except Exception as err:  # every outcome is recorded; the test judges it
            raised[name] = {"type": type(err).__name__, "message": str(err), "seconds": time.monotonic() - start}
    # The group is still in step after the faults: a good call on every rank selects as usual.
    w = weights(rank)
    uneven = w if rank == 0 else w[:1]  # global scope: ranks may pass different numbers of tensors
    saved = {f"after/{i}": m.numpy() for i, m in enumerate(global_magnitude_masks(uneven, 0.5, process_group=True))}
    np.savez(out / f"rank{rank}.npz", **saved)
    (out / f"rank{rank}.json").write_text(json.dumps(raised))
    # No rank tears gloo down while another still talks to it (once seen: an abort at exit).
    dist.barrier()
    dist.destroy_process_group()
    # Every output is written and the group is gone: skip the interpreter's teardown, where gloo's
    # threads have (rarely) aborted the process there with std::terminate.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
