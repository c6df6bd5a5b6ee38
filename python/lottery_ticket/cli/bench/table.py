"""The side-by-side table: one row per (workload, method), then each issue target with a verdict.

Rendered as Markdown (readable in a terminal, pasteable into the README). Shared by
``benches/conftest.py`` (printed at the end of ``make bench``) and ``lottery-ticket bench``.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .methods import BASELINE, ONE_THREAD, ROW_ORDER
from .workloads import AMOUNT, WorkloadSpec, human
from ..._files import write_atomic

MIB = 1 << 20


@dataclass
class Measurement:
    spec: WorkloadSpec
    key: str  # method key (`_bench_methods`), or ONE_THREAD
    label: str
    task: str
    median_s: float | None = None
    rounds: int = 0
    peak_extra_bytes: int | None = None  # peak RSS growth during one call, minus the result
    note: str = ""  # why a number is missing


class Report:
    """Measurements collected in any order; rendered in the suite's order."""

    def __init__(self) -> None:
        self._rows: dict[tuple[WorkloadSpec, str], Measurement] = {}
        self._specs: list[WorkloadSpec] = []

    def record(self, m: Measurement) -> None:
        if m.spec not in self._specs:
            self._specs.append(m.spec)
        self._rows[(m.spec, m.key)] = m

    def empty(self) -> bool:
        return not self._rows

    def get(self, spec: WorkloadSpec, key: str) -> Measurement | None:
        return self._rows.get((spec, key))

    def seconds(self, spec: WorkloadSpec, key: str) -> float | None:
        m = self.get(spec, key)
        return None if m is None else m.median_s

    def render(self) -> str:
        return "\n\n".join([machine_summary(), self.results_table(), self.targets_table()]) + "\n"

    def results_table(self) -> str:
        header = ["workload", "method", "median", "× ours", "× read floor", "peak extra MiB", "rounds"]
        rows = []
        for spec in self._specs:
            floor = self.seconds(spec, "floor")
            for key in ROW_ORDER:
                m = self.get(spec, key)
                if m is None:
                    continue
                base = self.seconds(spec, BASELINE.get(m.task, "ours"))
                rows.append([
                    spec.label,
                    m.label,
                    _duration(m.median_s) if m.median_s is not None else m.note or "—",
                    _ratio(m.median_s, base),
                    _ratio(m.median_s, floor),
                    "—" if m.peak_extra_bytes is None else f"{m.peak_extra_bytes / MIB:,.0f}",
                    str(m.rounds) if m.rounds else "—",
                ])
        return markdown(header, rows)

    def targets_table(self) -> str:
        rows = []
        for spec in self._specs:
            for name, measure, passes in _per_workload_targets(self, spec):
                value = measure()
                rows.append([name, spec.label, value[1], _verdict(value[0], passes)])
        rows.append(["time linear in size, 25M → 440M (±30%)", *self._linearity()])
        return markdown(["target (issue 5; stated for 110M f32, 2 cores)", "workload", "measured", "verdict"], rows)

    def _linearity(self) -> list[str]:
        timed = [s for s in self._specs if s.dtype == "f32" and self.seconds(s, "ours") is not None]
        if len(timed) < 2:
            return ["—", "n/a: needs two f32 sizes", "n/a"]
        small, big = min(timed, key=lambda s: s.numel), max(timed, key=lambda s: s.numel)
        if big.numel < 4 * small.numel:
            return ["—", "n/a: needs a point ≥ 4x larger (the 440M point: LT_BENCH_BIG=1)", "n/a"]
        per_weight = [self.seconds(s, "ours") or 0.0 for s in (small, big)]
        growth = (per_weight[1] / big.numel) / (per_weight[0] / small.numel)
        where = f"{human(small.numel)} → {human(big.numel)}"
        return [where, f"time per weight ×{growth:.2f}", _verdict(growth, lambda g: 0.7 <= g <= 1.3)]


Value = tuple[float | None, str]


def _per_workload_targets(
    report: Report, spec: WorkloadSpec
) -> list[tuple[str, Callable[[], Value], Callable[[float], bool] | None]]:
    def ratio(top: str, bottom: str, text: Callable[[float], str]) -> Callable[[], Value]:
        def value() -> Value:
            t_top, t_bottom = report.seconds(spec, top), report.seconds(spec, bottom)
            if t_top is None or t_bottom is None:
                return None, "not measured"
            return t_top / t_bottom, text(t_top / t_bottom)

        return value

    def speedup(peer: str, ours: str = "ours") -> Callable[[], Value]:
        return ratio(peer, ours, lambda r: f"{r:,.1f}x faster")

    def slowdown(ours: str, peer: str, what: str) -> Callable[[], Value]:
        return ratio(ours, peer, lambda r: f"{r:.2f}x {what}")

    def extra_memory() -> Value:
        m = report.get(spec, "ours")
        if m is None or m.peak_extra_bytes is None:
            return None, "not measured"
        return m.peak_extra_bytes / MIB, f"{m.peak_extra_bytes / MIB:,.1f} MiB"

    return [
        ("mask step ≥ 100x faster than torch.prune", speedup("torch_prune"), lambda r: r >= 100),
        ("mask step ≥ 5x faster than numpy partition", speedup("numpy"), lambda r: r >= 5),
        ("mask step ≤ 5x the read floor", slowdown("ours", "floor", "the floor"), lambda r: r <= 5),
        ("extra memory ≤ 64 MiB beyond the masks", extra_memory, lambda mib: mib <= 64),
        ("apply_masks ≤ 1.5x torch mul_", slowdown("ours_apply", "torch_mul", "torch"), lambda r: r <= 1.5),
        ("rewind ≤ 1.5x torch where", slowdown("ours_rewind", "torch_where", "torch"), lambda r: r <= 1.5),
        (f"≥ 1.6x from 1 to {_threads()} threads", speedup(ONE_THREAD), lambda r: r >= 1.6),
        ("(info) drop-in vs torch.prune", speedup("torch_prune", "drop_in"), None),
    ]


def _threads() -> int:
    # rayon's default pool: RAYON_NUM_THREADS if set, else one thread per logical CPU.
    configured = os.environ.get("RAYON_NUM_THREADS", "")
    return int(configured) if configured.isdigit() and int(configured) > 0 else os.cpu_count() or 1


def _verdict(value: float | None, passes: Callable[[float], bool] | None) -> str:
    if value is None:
        return "n/a"
    if passes is None:
        return "info"
    return "pass" if passes(value) else "FAIL"


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def _ratio(t: float | None, base: float | None) -> str:
    if t is None or base is None or base <= 0:
        return "—"
    r = t / base
    return f"{r:,.0f}x" if r >= 100 else f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table padded to aligned columns, so it also reads well in a terminal."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def machine_summary() -> str:
    import numpy as np

    try:
        import torch

        torch_version = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:  # pragma: no cover - the benchmarks need torch; the summary does not
        torch_version = "torch not installed"
    from ... import __version__

    return (
        f"lottery-ticket {__version__} · {_cpu_model()} · {os.cpu_count()} logical CPUs · "
        f"ours on {_threads()} threads · {torch_version} · numpy {np.__version__} · "
        f"Python {platform.python_version()} · one step prunes {AMOUNT:.0%} · "
        "× = time relative to that row (ours: the same task's row) · peak extra = peak RSS growth "
        "during one call in a fresh process, minus the masks it returns"
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write the table atomically (``_files.write_atomic``), creating the folder if needed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text.encode("utf-8"))
