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

from ..._files import write_atomic
from .methods import BASELINE, ONE_THREAD, ROW_ORDER
from .workloads import AMOUNT, WorkloadSpec, human

MIB = 1 << 20


@dataclass
class Measurement:
    spec: WorkloadSpec
    key: str  # method key (`methods.METHODS`), or ONE_THREAD
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
                rows.append(
                    [
                        spec.label,
                        m.label,
                        _duration(m.median_s) if m.median_s is not None else m.note or "—",
                        _ratio(m.median_s, base),
                        _ratio(m.median_s, floor),
                        "—" if m.peak_extra_bytes is None else f"{m.peak_extra_bytes / MIB:,.0f}",
                        str(m.rounds) if m.rounds else "—",
                    ]
                )
        return markdown(header, rows)

    def targets_table(self) -> str:
        rows = [[name, where, text, _verdict(value, passes)] for name, where, value, text, passes in _targets(self)]
        return markdown(["target (issue 12; issue 5's below; 2 cores)", "workload", "measured", "verdict"], rows)

    def find(self, mix: str, dtype: str) -> WorkloadSpec | None:
        """The largest measured workload of this mix and dtype (the suite has one of each but slabs)."""
        found = [s for s in self._specs if s.mix == mix and s.dtype == dtype]
        return max(found, key=lambda s: s.numel) if found else None

    def sizes(self, mix: str, dtype: str) -> tuple[WorkloadSpec, WorkloadSpec] | None:
        """(smallest, largest) timed workloads of this mix and dtype, if at least 4x apart."""
        timed = [s for s in self._specs if s.mix == mix and s.dtype == dtype and self.seconds(s, "ours")]
        if not timed:
            return None
        small, big = min(timed, key=lambda s: s.numel), max(timed, key=lambda s: s.numel)
        return (small, big) if big.numel >= 4 * small.numel else None


Passes = Callable[[float], bool] | None
Target = tuple[str, str, float | None, str, Passes]


def _targets(report: Report) -> list[Target]:
    """Each target: (name, workload, value, measured text, pass test); n/a where not measured."""

    def ratio(name: str, mix: str, dtype: str, top: str, bottom: str, unit: str, passes: Passes) -> Target:
        spec = report.find(mix, dtype)
        if spec is None:
            return name, "—", None, "not measured", passes
        t_top, t_bottom = report.seconds(spec, top), report.seconds(spec, bottom)
        if t_top is None or t_bottom is None:
            return name, spec.label, None, "not measured", passes
        value = t_top / t_bottom
        return name, spec.label, value, f"{value:,.2f}x {unit}" if value < 100 else f"{value:,.0f}x {unit}", passes

    def per_weight(name: str, dtype: str, passes: Passes) -> Target:
        pair = report.sizes("slabs", dtype)
        if pair is None:
            return name, "—", None, "n/a: needs two slab sizes ≥ 4x apart", passes
        small, big = pair
        times = [(report.seconds(s, "ours") or 0.0) / s.numel for s in pair]
        growth = times[1] / times[0]
        text = f"time per weight ×{growth:.2f} ({_duration(times[1] * big.numel)}; checked exact)"
        return name, f"{human(small.numel)} → {human(big.numel)}", growth, text, passes

    def extra_memory(name: str, passes: Passes) -> Target:
        spec = report.find("bert", "f32")
        m = None if spec is None else report.get(spec, "ours")
        if spec is None or m is None or m.peak_extra_bytes is None:
            return name, "—" if spec is None else spec.label, None, "not measured", passes
        mib = m.peak_extra_bytes / MIB
        return name, spec.label, mib, f"{mib:,.1f} MiB", passes

    at_most, at_least = _at_most, _at_least
    return [
        ratio("110M f32, fresh masks ≤ 2x read floor", "bert", "f32", "ours", "floor", "the floor", at_most(2)),
        ratio(
            "110M f32, a later round (existing masks) ≤ 2.5x floor",
            "bert",
            "f32",
            "ours_masked",
            "floor",
            "the floor",
            at_most(2.5),
        ),
        ratio("110M bf16 ≤ 3x its read floor", "bert", "bf16", "ours", "floor", "the floor", at_most(3)),
        ratio("ResNet-50 conv mix (54 tensors) ≥ 20x NumPy", "conv", "f32", "numpy", "ours", "faster", at_least(20)),
        ratio("LeNet-300-100 size ≥ 10x NumPy", "lenet", "f32", "numpy", "ours", "faster", at_least(10)),
        ratio(
            "MaskApplier call at LeNet size ≤ 0.3x torch mul_ loop",
            "lenet",
            "f32",
            "applier",
            "torch_mul",
            "torch",
            at_most(0.3),
        ),
        ratio(
            "drop-in global_unstructured ≥ 150x torch.prune",
            "bert",
            "f32",
            "torch_prune",
            "drop_in",
            "faster",
            at_least(150),
        ),
        per_weight("no cliff: f32 slabs @0.5, time per weight ≤ 1.2x", "f32", at_most(1.2)),
        per_weight("~2.2B bf16 in memory: exact, no cliff (≤ 1.2x)", "bf16", at_most(1.2)),
        ratio("(issue 5) mask step ≥ 100x torch.prune", "bert", "f32", "torch_prune", "ours", "faster", at_least(100)),
        ratio("(issue 5) mask step ≥ 5x numpy partition", "bert", "f32", "numpy", "ours", "faster", at_least(5)),
        extra_memory("(issue 5) extra memory ≤ 64 MiB beyond the masks", at_most(64)),
        ratio(
            "(issue 5) apply_masks ≤ 1.5x torch mul_", "bert", "f32", "ours_apply", "torch_mul", "torch", at_most(1.5)
        ),
        ratio(
            "(issue 5) rewind ≤ 1.5x torch where", "bert", "f32", "ours_rewind", "torch_where", "torch", at_most(1.5)
        ),
        ratio(
            f"(issue 5) ≥ 1.6x from 1 to {_threads()} threads",
            "bert",
            "f32",
            ONE_THREAD,
            "ours",
            "faster",
            at_least(1.6),
        ),
    ]


def _at_most(limit: float) -> Callable[[float], bool]:
    return lambda value: value <= limit


def _at_least(limit: float) -> Callable[[float], bool]:
    return lambda value: value >= limit


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
        f"Python {platform.python_version()} · one step prunes {AMOUNT:.0%} (x where a workload says @x) · "
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
