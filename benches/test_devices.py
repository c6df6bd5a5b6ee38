"""`make bench`: the torch-op backend on CPU tensors beside the Rust kernels, and one selection
over 2 gloo ranks beside one process, on the 110 M BERT-base layer mix (f32, 20% pruned).

Results are asserted, timed (medians) and written to ``.benchmarks/devices.md``. The GPU
benchmark is ``benches/gpu.py`` (it needs CUDA).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import torch
from lottery_ticket import global_magnitude_masks
from lottery_ticket.cli.bench.workloads import mix_shapes

SIZE = int(float(os.environ.get("LT_BENCH_SCALE", "1")) * 110_000_000)
AMOUNT = 0.2
ROUNDS = 3
OUT = Path(os.environ.get("LT_BENCH_DEVICES_OUT", ".benchmarks/devices.md"))
RESULTS: dict[str, float] = {}


def weights_of(indices: list[int] | None = None) -> list[torch.Tensor]:
    """The BERT-base mix at SIZE, each tensor seeded by its index (ranks rebuild their share)."""
    shapes = mix_shapes("bert", SIZE)
    chosen = range(len(shapes)) if indices is None else indices
    return [torch.randn(shapes[i], generator=torch.Generator().manual_seed(i)) for i in chosen]


def median_seconds(run: Callable[[], Any]) -> float:
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _write() -> None:
    lines = ["| 110 M BERT-base f32, prune 20% | median |", "|---|---|"]
    lines += [f"| {k} | {v * 1e3:.0f} ms |" for k, v in RESULTS.items()]
    if "rust" in RESULTS and "torch ops (CPU)" in RESULTS:
        lines.append(f"| torch ops / Rust | {RESULTS['torch ops (CPU)'] / RESULTS['rust']:.1f}x |")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))


def test_torch_ops_on_cpu_beside_the_rust_kernels(benchmark: Any) -> None:
    weights = weights_of()
    rust = global_magnitude_masks(weights, AMOUNT)
    ours = global_magnitude_masks(weights, AMOUNT, backend="torch")
    assert all(torch.equal(a, b) for a, b in zip(rust, ours))
    del rust, ours
    RESULTS["rust"] = median_seconds(lambda: global_magnitude_masks(weights, AMOUNT))
    RESULTS["torch ops (CPU)"] = median_seconds(lambda: global_magnitude_masks(weights, AMOUNT, backend="torch"))
    benchmark.pedantic(
        global_magnitude_masks, args=(weights, AMOUNT), kwargs={"backend": "torch"}, rounds=1, iterations=1
    )
    _write()


_RANK = """
import json, sys, time, torch, torch.distributed as dist
sys.path.insert(0, {here!r})
from test_devices import AMOUNT, ROUNDS, weights_of
from lottery_ticket import global_magnitude_masks
rank, world, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(1)  # two ranks share the cores one process uses
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + port, rank=rank, world_size=world)
indices = json.loads(sys.argv[4])[rank]
weights = weights_of(indices)
times = []
for _ in range(ROUNDS):
    dist.barrier()
    start = time.perf_counter()
    masks = global_magnitude_masks(weights, AMOUNT, process_group=True)
    dist.barrier()
    times.append(time.perf_counter() - start)
pruned = sum(m.numel() - int(m.sum()) for m in masks)
print(json.dumps({{"median": sorted(times)[len(times) // 2], "pruned": pruned, "total": sum(w.numel() for w in weights)}}))
dist.destroy_process_group()
"""


def test_two_gloo_ranks_beside_one_process(benchmark: Any) -> None:
    shapes = mix_shapes("bert", SIZE)
    halves: list[list[int]] = [[], []]
    sizes = [0, 0]
    for i, shape in sorted(enumerate(shapes), key=lambda s: -torch.Size(s[1]).numel()):
        r = sizes.index(min(sizes))  # balance the elements between the ranks
        halves[r].append(i)
        sizes[r] += torch.Size(shape).numel()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    code = _RANK.format(here=str(Path(__file__).parent))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(r), "2", port, json.dumps([sorted(h) for h in halves])],
            stdout=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    outs = [json.loads(p.communicate(timeout=1200)[0].strip().splitlines()[-1]) for p in procs]
    total = sum(o["total"] for o in outs)
    assert sum(o["pruned"] for o in outs) == round(AMOUNT * total)
    RESULTS["process_group, 2 gloo ranks (each half)"] = max(o["median"] for o in outs)
    weights = weights_of()
    RESULTS["torch ops, 1 process (all)"] = median_seconds(
        lambda: global_magnitude_masks(weights, AMOUNT, backend="torch")
    )
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    _write()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q", "-s"]))
