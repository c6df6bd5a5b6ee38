"""`make bench`: one selection over 20,000 tensors of 1,000 weights beside one tensor of the same
20 M weights (the per-tensor set-up), and torch's concatenate-and-sort beside both; then each
entry point at 10x the tensors (100 weights each), which must cost about 10x, not 100x.

A mixture-of-experts checkpoint holds tens of thousands of expert tensors: the call's cost must
follow the weights, not the square of the tensors. Results are asserted, timed (medians) and
written to ``.benchmarks/many_tensors.md`` (and ``many_tensors_scaling.md``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import torch
from lottery_ticket import _core, global_magnitude_masks, prune_checkpoint

TENSORS = int(float(os.environ.get("LT_BENCH_SCALE", "1")) * 20_000)
WEIGHTS = 1_000
AMOUNT = 0.5
ROUNDS = 3
OUT = Path(os.environ.get("LT_BENCH_MANY_OUT", ".benchmarks/many_tensors.md"))
SCALING_OUT = OUT.with_name(OUT.stem + "_scaling.md")
SMALL, LARGE = 5_000, 50_000
# Linear is 10x, plus what grows with the heap (the collector, caches); the quadratic borrow
# checks this guards against made it 50-100x. The bound is between the two, nearer linear.
MAX_GROWTH = 30


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


def setups(count: int, tmp: Path) -> dict[str, Callable[[], Any]]:
    """Each entry point over ``count`` tensors of 100 weights, made the ways users make them."""
    matrix = np.random.default_rng(0).standard_normal((count, 100)).astype(np.float32)
    rows = list(matrix)  # views of one buffer, as a flat parameter vector's slices are
    tensors = [torch.from_numpy(r.copy()) for r in rows]
    masks = global_magnitude_masks(rows, 0.5)
    tensor_masks = global_magnitude_masks(tensors, 0.5)
    bits = [r.copy().view(np.uint32) for r in rows]
    out = np.empty(count * 100, dtype=np.uint8)
    header = {
        f"layers.{i}.weight": {"dtype": "F32", "shape": [10, 10], "data_offsets": [i * 400, i * 400 + 400]}
        for i in range(count)
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    checkpoint = tmp / f"many-{count}.safetensors"
    checkpoint.write_bytes(len(raw).to_bytes(8, "little") + raw + matrix.tobytes())
    return {
        "NumPy rows of one matrix": lambda: global_magnitude_masks(rows, 0.5),
        "NumPy, masks= the last call's": lambda: global_magnitude_masks(rows, 0.5, masks=masks),
        "torch tensors": lambda: global_magnitude_masks(tensors, 0.5),
        "torch, masks= the last call's": lambda: global_magnitude_masks(tensors, 0.5, masks=tensor_masks),
        "the extension alone": lambda: _core.select_masks(bits, ["float32"] * count, None, out, 0.5, "global", []),
        "prune --dry-run of a checkpoint": lambda: prune_checkpoint(
            checkpoint, None, 0.5, dry_run=True, progress=False
        ),
    }


def test_each_entry_point_costs_linear_in_the_tensor_count(tmp_path: Path) -> None:
    small, large = setups(SMALL, tmp_path), setups(LARGE, tmp_path)
    lines = [f"| 100 weights per tensor | {SMALL:,} tensors | {LARGE:,} tensors | growth |", "|---|---|---|---|"]
    growths = {}
    for name in small:
        small[name]()  # warm-up: imports, thread pool, view caches
        before, after = median_seconds(small[name]), median_seconds(large[name])
        growths[name] = after / before
        lines.append(f"| {name} | {before * 1e3:.1f} ms | {after * 1e3:.1f} ms | {growths[name]:.1f}x |")
    SCALING_OUT.parent.mkdir(parents=True, exist_ok=True)
    SCALING_OUT.write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    slow = {k: round(v, 1) for k, v in growths.items() if v > MAX_GROWTH}
    assert not slow, f"10x the tensors cost more than {MAX_GROWTH}x: {slow}"
