"""``lottery-ticket bench --device cuda``: one global pruning step on CUDA tensors, ours beside
the peers (``benches/gpu.py`` runs the same from a checkout).

Workloads: the 110 M BERT-base layer mix in f32 and bf16 (``--big`` adds a 4 B f32 mix, BERT
layers scaled up, where the peers' concatenated copies run out of memory or past 2^31
elements); ``--params``/``--mix``/``--dtype`` pick one instead, ``--scale`` shrinks the suite.
Methods: ours (``backend="auto"``: torch ops on the device) fresh, a later round in place
(``out=masks``) and the drop-in ``lottery_ticket.torch.global_unstructured``; ours with the fused
Triton passes (``LOTTERY_TICKET_FUSED=1``) fresh and in place; ``torch.sum`` over each tensor (the
read floor, itself launch-bound with many tensors) and ``torch._foreach_norm`` (one launch per
few tensors); concatenate + ``topk`` and + ``kthvalue``; ``torch.nn.utils.prune.global_unstructured``.
Every method prunes 20%. Each row: the median of timed calls after a warm-up, repeated until the
recent calls agree within 5% (else marked noisy), their spread, and the peak GPU memory above
the weights (``torch.cuda.max_memory_allocated``). Before timing, ours and the fused passes are
checked bit for bit against the Rust kernels on host copies. At 110 M the host issuing the ops sets much of the time, so the table also gives the
host's load (`hygiene`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch

from ... import global_magnitude_masks
from .hygiene import ROUND_BUDGET_S, repeat_until_stable
from .workloads import Mix, mix_shapes

AMOUNT = 0.2


class Case(NamedTuple):
    label: str
    mix: Mix
    params: int
    dtype: torch.dtype


def suite(scale: float = 1.0, *, big: bool = False) -> list[Case]:
    n = max(1000, round(110e6 * scale))
    cases = [Case(f"{n / 1e6:.4g}M bert f32", "bert", n, torch.float32)]
    cases.append(Case(f"{n / 1e6:.4g}M bert bf16", "bert", n, torch.bfloat16))
    if big:
        cases.append(Case(f"{4e9 * scale / 1e9:.4g}B f32", "bert", max(1000, round(4e9 * scale)), torch.float32))
    return cases


def weights(case: Case, device: torch.device, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator(device=device).manual_seed(seed)
    return [torch.randn(s, generator=gen, device=device, dtype=case.dtype) for s in mix_shapes(case.mix, case.params)]


@contextlib.contextmanager
def fused_passes() -> Iterator[None]:
    saved = os.environ.get("LOTTERY_TICKET_FUSED")
    os.environ["LOTTERY_TICKET_FUSED"] = "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["LOTTERY_TICKET_FUSED"]
        else:
            os.environ["LOTTERY_TICKET_FUSED"] = saved


def _ours(ws: list[torch.Tensor]) -> Any:
    return global_magnitude_masks(ws, AMOUNT)


class _LaterRound:
    """A later IMP round: 20% of the survivors, written into their masks in place (each timed
    call prunes further; every call reads every weight, so the work stays the same)."""

    def __init__(self) -> None:
        self.masks: dict[int, list[torch.Tensor]] = {}

    def __call__(self, ws: list[torch.Tensor]) -> Any:
        if id(ws) not in self.masks:  # the first round's masks, made once per workload
            self.masks[id(ws)] = global_magnitude_masks(ws, AMOUNT)
        masks = self.masks[id(ws)]
        return global_magnitude_masks(ws, AMOUNT, masks, out=masks)


def _fused(method: Callable[[list[torch.Tensor]], Any]) -> Callable[[list[torch.Tensor]], Any]:
    def run(ws: list[torch.Tensor]) -> Any:
        with fused_passes():
            return method(ws)

    return run


def _holders(ws: list[torch.Tensor]) -> list[torch.nn.Module]:
    holders = []
    for w in ws:
        holder = torch.nn.Module()
        holder.weight = torch.nn.Parameter(w, requires_grad=False)
        holders.append(holder)
    return holders


def _torch_prune(ws: list[torch.Tensor]) -> Any:
    from torch.nn.utils import prune

    holders = _holders(ws)
    prune.global_unstructured([(h, "weight") for h in holders], prune.L1Unstructured, amount=AMOUNT)
    return holders


def _drop_in(ws: list[torch.Tensor]) -> Any:
    from torch.nn.utils import prune

    from ...torch import global_unstructured

    holders = _holders(ws)
    global_unstructured([(h, "weight") for h in holders], prune.L1Unstructured, amount=AMOUNT)
    return holders


def _concat_topk(ws: list[torch.Tensor]) -> Any:
    flat = torch.cat([w.reshape(-1).abs() for w in ws])
    return torch.topk(flat, round(AMOUNT * flat.numel()), largest=False)


def _concat_kthvalue(ws: list[torch.Tensor]) -> Any:
    flat = torch.cat([w.reshape(-1).abs() for w in ws])
    return torch.kthvalue(flat, round(AMOUNT * flat.numel()))


def methods() -> dict[str, Callable[[list[torch.Tensor]], Any]]:
    """Row label → method, in table order (fresh state per call of this function)."""
    return {
        "ours": _ours,
        "ours, a later round in place": _LaterRound(),
        "ours, drop-in global_unstructured": _drop_in,
        "ours, fused Triton passes": _fused(_ours),
        "ours, fused, a later round in place": _fused(_LaterRound()),
        "torch.sum of each tensor (read floor)": lambda ws: [w.sum() for w in ws],
        "torch._foreach_norm (read floor, few launches)": torch._foreach_norm,
        "cat+topk": _concat_topk,
        "cat+kthvalue": _concat_kthvalue,
        "prune.global_unstructured": _torch_prune,
    }


class Row(NamedTuple):
    median_s: float | None  # of the recent timed calls
    spread: float | None  # (slowest - fastest) / median of the recent timed calls
    peak_bytes: int | None
    note: str  # an error, or that the row is noisy


def _no_sync() -> None:
    """The host runs each op to its end before it returns."""


def measure(
    run: Callable[[], Any],
    device: torch.device,
    budget_s: float = ROUND_BUDGET_S,
    clock: Callable[[], float] = time.perf_counter,
) -> Row:
    """One warm-up call, which also gives the peak memory (CUDA only), then timed calls (each
    to the device's end) repeated as the CPU rows are (`hygiene.repeat_until_stable`): until the
    recent ones agree within 5%, or the row's budget runs out and it is marked noisy. A method
    that fails (out of memory, past 2^31 elements, no Triton for the fused rows) is a row with its
    error."""
    cuda = device.type == "cuda"
    sync: Callable[[], None] = torch.cuda.synchronize if cuda else _no_sync

    def call(_: None) -> None:
        run()  # the result is freed before the next call
        sync()

    base = torch.cuda.memory_allocated(device) if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    try:
        result = run()
        sync()
        peak = torch.cuda.max_memory_allocated(device) - base if cuda else None
        del result
        rounds = repeat_until_stable(call, lambda: None, budget_s=budget_s, clock=clock)
    except (torch.cuda.OutOfMemoryError, RuntimeError, ImportError) as err:  # ImportError: no Triton
        if cuda:
            torch.cuda.empty_cache()
        return Row(None, None, None, type(err).__name__ + ": " + str(err).splitlines()[0][:80])
    note = "" if rounds.stable else f"noisy ({len(rounds.times)} rounds)"
    return Row(rounds.median_s, rounds.spread, peak, note)


# The fused rows beside the torch-op rows they would replace: what decides the default.
FUSED_PAIRS = {
    "fresh": ("ours, fused Triton passes", "ours"),
    "in place": ("ours, fused, a later round in place", "ours, a later round in place"),
}


def fused_ratios(rows: dict[str, Row]) -> str:
    """The fused passes' median over the torch ops' per pair (below 1: the fused passes are
    faster), marked ``?`` where either row is noisy and ``—`` where either failed."""
    parts = []
    for name, (fused, ops) in FUSED_PAIRS.items():
        a, b = rows[fused], rows[ops]
        if a.median_s is None or b.median_s is None:
            parts.append(f"{name} —")
            continue
        mark = "?" if a.note or b.note else ""
        parts.append(f"{name} {a.median_s / b.median_s:.2f}x{mark}")
    return ", ".join(parts)


def check(device: torch.device) -> None:
    """Ours and the fused passes (where Triton is installed) against the Rust kernels on host
    copies (fresh and in place), before anything is timed: a mismatch is an error, not a row."""
    ws = weights(Case("check", "bert", 1_000_000, torch.float32), device, seed=1)
    host = [w.cpu() for w in ws]
    expected = global_magnitude_masks(host, AMOUNT)
    later = global_magnitude_masks(host, AMOUNT, expected)
    for name, method in (("ours", _ours), ("ours, fused", _fused(_ours))):
        try:
            masks = method(ws)
        except ImportError:  # no Triton here: the fused rows say so, and there is nothing to check
            continue
        again = [m.clone() for m in masks]
        with fused_passes() if "fused" in name else contextlib.nullcontext():
            global_magnitude_masks(ws, AMOUNT, again, out=again)
        for got, want in ((masks, expected), (again, later)):
            if not all(torch.equal(g.cpu(), w) for g, w in zip(got, want)):
                raise AssertionError(f"{name}: masks on {device} differ from the Rust kernels'")


def table(
    cases: list[Case], device: torch.device, machine: str, seed: int = 0, budget_s: float = ROUND_BUDGET_S
) -> Iterator[str]:
    """The table's lines, each as soon as it is measured (``budget_s``: timed seconds per row)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    yield f"{name} · torch {torch.__version__} · CUDA {torch.version.cuda} · host: {machine}"
    yield ""
    yield "| workload | method | median | spread | peak extra memory | note |"
    yield "|---|---|---|---|---|---|"
    for case in cases:
        ws = weights(case, device, seed)
        weight_bytes = sum(w.numel() * w.element_size() for w in ws)
        rows: dict[str, Row] = {}
        for label, method in methods().items():
            row = rows[label] = measure(functools.partial(method, ws), device, budget_s)
            median = "failed" if row.median_s is None else f"{row.median_s * 1e3:.2f} ms"
            spread = "" if row.spread is None else f"{100 * row.spread:.0f}%"
            memory = "" if row.peak_bytes is None else f"{row.peak_bytes / 2**20:.0f} MiB"
            if row.peak_bytes is not None:
                memory += f" ({100 * row.peak_bytes / weight_bytes:.0f}% of weights)"
            yield f"| {case.label} | {label} | {median} | {spread} | {memory} | {row.note} |"
        yield f"| {case.label} | fused ÷ torch ops | {fused_ratios(rows)} | | | |"
        del ws
        if device.type == "cuda":
            torch.cuda.empty_cache()
