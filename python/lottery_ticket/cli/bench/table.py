"""The side-by-side table: one row per (workload, method), measurements and comparisons only.

Rendered as Markdown (readable in a terminal, pasteable into the docs). Shared by
``benches/conftest.py`` (printed at the end of ``make bench``, followed there by the targets and
their verdicts) and ``lottery-ticket bench``. A row is "noisy" when its rounds spread by more
than `hygiene.SPREAD_LIMIT` or the machine was not idle (`hygiene.Machine`).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

from ..._files import write_atomic
from .hygiene import SPREAD_LIMIT, Machine, Rounds, cpu_model, numpy_simd
from .methods import BASELINE, FLOOR, ROW_ORDER
from .workloads import AMOUNT, WorkloadSpec

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
    spread: float | None = None  # (max - min) / median of the recent rounds (None: too few)
    # This row's time over each reference's, paired round by round (`hygiene`): the read floor
    # ("floor") for our rows with a floor target, and a peer where a target compares with one.
    ratios: dict[str, float] = field(default_factory=dict)

    def record(self, rounds: Rounds) -> None:
        self.median_s, self.rounds, self.spread = rounds.median_s, len(rounds.times), rounds.spread
        self.ratios = rounds.ratios

    @property
    def floor_ratio(self) -> float | None:
        return self.ratios.get("floor")

    @property
    def stable(self) -> bool:
        return self.spread is not None and self.spread < SPREAD_LIMIT


class Report:
    """Measurements collected in any order; rendered in the suite's order."""

    def __init__(self, machine: Machine | None = None) -> None:
        self._rows: dict[tuple[WorkloadSpec, str], Measurement] = {}
        self._specs: list[WorkloadSpec] = []
        self.machine = machine  # read before the first row; None: not recorded

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

    def ratio(self, spec: WorkloadSpec, top: str, bottom: str) -> float | None:
        """Row ``top``'s time over row ``bottom``'s: paired round by round where one was timed
        beside the other, else the ratio of the two rows' medians."""
        paired = self.paired_ratio(spec, top, bottom)
        if paired is not None:
            return paired
        t_top, t_bottom = self.seconds(spec, top), self.seconds(spec, bottom)
        return None if t_top is None or t_bottom is None or t_bottom <= 0 else t_top / t_bottom

    def paired_ratio(self, spec: WorkloadSpec, top: str, bottom: str) -> float | None:
        """Row ``top``'s time over row ``bottom``'s from rounds timed in pairs, or None."""
        upper, lower = self.get(spec, top), self.get(spec, bottom)
        if upper is not None and bottom in upper.ratios:
            return upper.ratios[bottom]
        if lower is not None and lower.ratios.get(top):
            return 1.0 / lower.ratios[top]
        return None

    def floor_ratio(self, spec: WorkloadSpec, key: str) -> float | None:
        """``key``'s time over the read floor's (`ratio`)."""
        return self.ratio(spec, key, "floor")

    @property
    def idle(self) -> bool:
        return self.machine is not None and self.machine.idle

    def render(self) -> str:
        return "\n\n".join([machine_summary(self.machine), self.results_table()]) + "\n"

    def results_table(self) -> str:
        header = ["workload", "method", "median", "× ours", "× read floor", "peak extra MiB", "rounds", "spread"]
        rows = []
        for spec in self._specs:
            for key in ROW_ORDER:
                m = self.get(spec, key)
                if m is None:
                    continue
                timed = m.median_s is not None
                rows.append(
                    [
                        spec.label,
                        m.label,
                        self._median_cell(spec, key, m),
                        self._ratio_cell(spec, key, BASELINE.get(m.task, "ours")) if timed else "—",
                        self._ratio_cell(spec, key, "floor") if timed else "—",
                        "—" if m.peak_extra_bytes is None else f"{m.peak_extra_bytes / MIB:,.0f}",
                        str(m.rounds) if m.rounds else "—",
                        self._spread(m),
                    ]
                )
        return markdown(header, rows)

    @staticmethod
    def _median_cell(spec: WorkloadSpec, key: str, m: Measurement) -> str:
        if m.median_s is None:
            return m.note or "—"
        if key != FLOOR:
            return _duration(m.median_s)
        # The rate the floor read memory at: a shared host's runs differ in it, and every ratio
        # to the floor moves with it.
        rate = spec.numel * spec.bytes_per_weight / m.median_s / 1e9
        return f"{_duration(m.median_s)} ({rate:.0f} GB/s)"

    def _ratio_cell(self, spec: WorkloadSpec, top: str, bottom: str) -> str:
        paired = self.paired_ratio(spec, top, bottom) is not None
        return _ratio(self.ratio(spec, top, bottom), 1.0) + (" ‡" if paired else "")

    def _spread(self, m: Measurement) -> str:
        if m.median_s is None:
            return "—"
        text = "?" if m.spread is None else f"{m.spread:.1%}"
        return text if m.stable and self.idle else f"{text} noisy"

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


def machine_summary(machine: Machine | None = None) -> str:
    import numpy as np

    try:
        import torch

        torch_version = f"torch {torch.__version__}"
    except ImportError:  # pragma: no cover - the benchmarks need torch; the summary does not
        torch_version = "torch not installed"
    from ... import __version__

    simd = numpy_simd()
    numpy_version = f"numpy {np.__version__}" + (f" (SIMD {simd})" if simd else "")
    where = (
        machine.summary() if machine is not None else f"{cpu_model()} · machine load not recorded: every row is noisy"
    )
    return (
        f"lottery-ticket {__version__} · {where} · {torch_version} · {numpy_version} · "
        f"Python {platform.python_version()} · one step prunes {AMOUNT:.0%} (x where a workload says @x) · "
        "× = time relative to that row (ours: the same task's row) · ‡ = paired: the median of "
        "per-round ratios, that row timed right before each round · GB/s = the weights' bytes over the "
        "read floor's median · peak extra = peak RSS growth "
        "during one call in a fresh process, minus the masks it returns"
    )


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write the table atomically (``_files.write_atomic``), creating the folder if needed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text.encode("utf-8"))
