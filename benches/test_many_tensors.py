"""`make bench`: one selection over 20,000 tensors of 1,000 weights beside one tensor of the same
20 M weights (the per-tensor set-up), and torch's concatenate-and-sort beside both.

A mixture-of-experts checkpoint holds tens of thousands of expert tensors: the call's cost must
follow the weights, not the square of the tensors. Results are asserted, timed (medians) and
written to ``.benchmarks/many_tensors.md``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lottery_ticket import global_magnitude_masks

TENSORS = int(float(os.environ.get("LT_BENCH_SCALE", "1")) * 20_000)
WEIGHTS = 1_000
AMOUNT = 0.5
ROUNDS = 3
OUT = Path(os.environ.get("LT_BENCH_MANY_OUT", ".benchmarks/many_tensors.md"))


def median_seconds(run: Callable[[], Any]) -> float:
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def torch_sort(weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """What ``torch.nn.utils.prune.global_unstructured`` does: one vector, one topk."""
    flat = torch.cat([w.reshape(-1) for w in weights]).abs()
    k = round(AMOUNT * flat.numel())
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[torch.topk(flat, k, largest=False).indices] = False
    return list(keep.split([w.numel() for w in weights]))


def test_many_small_tensors_cost_what_their_weights_cost() -> None:
    gen = torch.Generator().manual_seed(0)
    many = [t.clone() for t in torch.randn(TENSORS, WEIGHTS, generator=gen).unbind()]  # separate storages
    one = [torch.cat(many)]
    kept = TENSORS * WEIGHTS - round(AMOUNT * TENSORS * WEIGHTS)
    assert sum(int(m.sum()) for m in global_magnitude_masks(many, AMOUNT)) == kept
    assert all(torch.equal(a, b) for a, b in zip(global_magnitude_masks(many, AMOUNT), torch_sort(many)))
    results = {
        f"ours, {TENSORS:,} tensors": median_seconds(lambda: global_magnitude_masks(many, AMOUNT)),
        "ours, 1 tensor": median_seconds(lambda: global_magnitude_masks(one, AMOUNT)),
        f"torch cat + topk, {TENSORS:,} tensors": median_seconds(lambda: torch_sort(many)),
    }
    lines = [f"| {TENSORS * WEIGHTS / 1e6:.0f} M f32 weights, prune 50% | median |", "|---|---|"]
    lines += [f"| {k} | {v * 1e3:.0f} ms |" for k, v in results.items()]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
