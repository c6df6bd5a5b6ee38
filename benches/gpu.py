"""GPU benchmark: exact global magnitude selection on CUDA tensors, ours beside the peers.

Run ``python benches/gpu.py`` on a machine with CUDA (``pytest benches/gpu.py`` also works; it
skips without CUDA). Workloads: the 110 M BERT-base layer mix in f32 and bf16, and a 4 B f32 mix
(BERT-style layers scaled up) where the peers' concatenated copies run out of memory or past
2^31 elements. Columns: ours (``backend="auto"``: torch ops on the device) fresh, in a later
round (in place) and through the drop-in ``lottery_ticket.torch.global_unstructured``, the first
two again with the fused Triton passes (``LOTTERY_TICKET_FUSED=1``), ``torch.sum``
over the same tensors (the read floor), concatenate + ``topk`` and + ``kthvalue``, and
``torch.nn.utils.prune.global_unstructured``; peak extra GPU memory from
``torch.cuda.max_memory_allocated`` above the weights. Every method prunes 20%.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import torch
from lottery_ticket import global_magnitude_masks
from lottery_ticket.cli.bench.workloads import mix_shapes

AMOUNT = 0.2
WORKLOADS = [
    ("110M bert f32", 110_000_000, torch.float32),
    ("110M bert bf16", 110_000_000, torch.bfloat16),
    ("4B f32", 4_000_000_000, torch.float32),
]


def _weights(size: int, dtype: torch.dtype) -> list[torch.Tensor]:
    return [torch.randn(s, device="cuda", dtype=dtype) for s in mix_shapes("bert", size)]


def _ours(ws: list[torch.Tensor]) -> Any:
    return global_magnitude_masks(ws, AMOUNT)


_SURVIVORS: dict[int, list[torch.Tensor]] = {}


def _ours_later_round(ws: list[torch.Tensor]) -> Any:
    """A later IMP round: 20% of the survivors, written into their masks in place (each timed
    call prunes further; every call reads every weight, so the work stays the same)."""
    if id(ws) not in _SURVIVORS:  # the first round's masks, made once per workload
        _SURVIVORS[id(ws)] = global_magnitude_masks(ws, AMOUNT)
    masks = _SURVIVORS[id(ws)]
    return global_magnitude_masks(ws, AMOUNT, masks, out=masks)


@contextlib.contextmanager
def _fused() -> Iterator[None]:
    os.environ["LOTTERY_TICKET_FUSED"] = "1"
    try:
        yield
    finally:
        del os.environ["LOTTERY_TICKET_FUSED"]


def _ours_fused(ws: list[torch.Tensor]) -> Any:
    with _fused():
        return _ours(ws)


def _ours_fused_later_round(ws: list[torch.Tensor]) -> Any:
    with _fused():
        return _ours_later_round(ws)


def _read_floor(ws: list[torch.Tensor]) -> Any:
    return [w.sum() for w in ws]


def _concat_topk(ws: list[torch.Tensor]) -> Any:
    flat = torch.cat([w.reshape(-1).abs() for w in ws])
    return torch.topk(flat, round(AMOUNT * flat.numel()), largest=False)


def _concat_kthvalue(ws: list[torch.Tensor]) -> Any:
    flat = torch.cat([w.reshape(-1).abs() for w in ws])
    return torch.kthvalue(flat, round(AMOUNT * flat.numel()))


def _torch_prune(ws: list[torch.Tensor]) -> Any:
    from torch.nn.utils import prune

    holders = _holders(ws)
    prune.global_unstructured([(h, "weight") for h in holders], prune.L1Unstructured, amount=AMOUNT)
    return holders


def _drop_in(ws: list[torch.Tensor]) -> Any:
    """``lottery_ticket.torch.global_unstructured``: torch's signature and module state, our selection."""
    from torch.nn.utils import prune

    from lottery_ticket.torch import global_unstructured

    holders = _holders(ws)
    global_unstructured([(h, "weight") for h in holders], prune.L1Unstructured, amount=AMOUNT)
    return holders


def _holders(ws: list[torch.Tensor]) -> list[torch.nn.Module]:
    holders = []
    for w in ws:
        holder = torch.nn.Module()
        holder.weight = torch.nn.Parameter(w, requires_grad=False)
        holders.append(holder)
    return holders


METHODS: dict[str, Callable[[list[torch.Tensor]], Any]] = {
    "ours": _ours,
    "ours, a later round in place": _ours_later_round,
    "ours, drop-in global_unstructured": _drop_in,
    "ours, fused Triton passes": _ours_fused,
    "ours, fused, a later round in place": _ours_fused_later_round,
    "torch.sum (read floor)": _read_floor,
    "cat+topk": _concat_topk,
    "cat+kthvalue": _concat_kthvalue,
    "prune.global_unstructured": _torch_prune,
}


def _measure(run: Callable[[], Any], rounds: int = 5) -> tuple[float | None, int | None, str]:
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    try:
        result = run()  # warm-up and the peak-memory call
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del result
        times = []
        for _ in range(rounds):
            torch.cuda.synchronize()
            start = time.perf_counter()
            result = run()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            del result
        return sorted(times)[rounds // 2], peak, ""
    except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
        torch.cuda.empty_cache()
        return None, None, type(err).__name__ + ": " + str(err).splitlines()[0][:80]


def main() -> str:
    lines = [
        f"GPU: {torch.cuda.get_device_name()}",
        "",
        "| workload | method | median | peak extra GPU memory | note |",
        "|---|---|---|---|---|",
    ]
    for label, size, dtype in WORKLOADS:
        ws = _weights(size, dtype)
        weight_bytes = sum(w.numel() * w.element_size() for w in ws)
        for name, method in METHODS.items():
            median, peak, note = _measure(functools.partial(method, ws), rounds=3 if size > 10**9 else 5)
            shown = "failed" if median is None else f"{median * 1e3:.1f} ms"
            memory = "" if peak is None else f"{peak / 2**20:.0f} MiB ({100 * peak / weight_bytes:.1f}% of weights)"
            lines.append(f"| {label} | {name} | {shown} | {memory} | {note} |")
            print(lines[-1], flush=True)
        _SURVIVORS.clear()
        del ws
        torch.cuda.empty_cache()
    return "\n".join(lines)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: the GPU benchmark needs one (none lent to this task)"
)
def test_gpu_benchmark() -> None:
    ws = _weights(1_000_000, torch.float32)
    cpu = [w.cpu() for w in ws]
    expected = global_magnitude_masks(cpu, AMOUNT)
    for ours in (_ours, _ours_fused):
        assert all(torch.equal(a.cpu(), b) for a, b in zip(ours(ws), expected))
    print(main())


if __name__ == "__main__":
    if not torch.cuda.is_available():
        print("no CUDA device: skipped")
        sys.exit(0)
    print(main())
