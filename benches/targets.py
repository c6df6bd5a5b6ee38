"""The speed targets of `make bench`, each with a verdict, given only for an idle machine.

`lottery-ticket bench` prints measurements and comparisons; what they must reach lives here. A
target reads rows of the `Report`; on a machine that was not idle (load average above
`hygiene.LOAD_LIMIT`, or another process using the CPU, before or after the run) every verdict
is withheld, since its numbers measured the competition too.
"""

from __future__ import annotations

from collections.abc import Callable

from lottery_ticket.cli.bench.hygiene import Machine
from lottery_ticket.cli.bench.table import MIB, Report, markdown
from lottery_ticket.cli.bench.workloads import human

Passes = Callable[[float], bool]
Target = tuple[str, str, float | None, str, Passes]


def at_most(limit: float) -> Passes:
    return lambda value: value <= limit


def at_least(limit: float) -> Passes:
    return lambda value: value >= limit


def targets(report: Report) -> list[Target]:
    """Each target: (name, workload, value, measured text, pass test); n/a where not measured."""

    def ratio(
        name: str, mix: str, dtype: str, top: str, bottom: str, unit: str, passes: Passes, beside: str | None = None
    ) -> Target:
        """``top`` over ``bottom``; ``beside``: a row whose own ratio to ``bottom`` is shown too
        (what the memory alone takes of the target), not judged."""
        spec = report.find(mix, dtype)
        if spec is None:
            return name, "—", None, "not measured", passes
        value = report.ratio(spec, top, bottom)  # paired round by round where it was timed so
        if value is None:
            return name, spec.label, None, "not measured", passes
        paired = " ‡" if report.paired_ratio(spec, top, bottom) is not None else ""
        text = f"{value:,.2f}x {unit}" if value < 100 else f"{value:,.0f}x {unit}"
        alone = None if beside is None else report.ratio(spec, beside, bottom)
        note = "" if alone is None else f" (its bytes alone: {alone:,.2f}x)"
        return name, spec.label, value, text + paired + note, passes

    def per_weight(name: str, dtype: str, passes: Passes) -> Target:
        pair = report.sizes("slabs", dtype)
        if pair is None:
            return name, "—", None, "n/a: needs two slab sizes ≥ 4x apart", passes
        small, big = pair
        where = f"{human(small.numel)} → {human(big.numel)}"
        paired = [report.paired_ratio(s, "ours", "floor") for s in pair]
        if paired[0] and paired[1]:
            # Each size timed beside its own read floor (one read of the same weights): the growth
            # of that ratio is our time per weight's growth beyond the memory's own, and a change
            # in the machine between the two rows cannot move it.
            growth = paired[1] / paired[0]
            return name, where, growth, f"time per weight ×{growth:.2f} ‡ (over the floor's)", passes
        times = [(report.seconds(s, "ours") or 0.0) / s.numel for s in pair]
        growth = times[1] / times[0]
        return name, where, growth, f"time per weight ×{growth:.2f}", passes

    def extra_memory(name: str, passes: Passes) -> Target:
        spec = report.find("bert", "f32")
        m = None if spec is None else report.get(spec, "ours")
        if spec is None or m is None or m.peak_extra_bytes is None:
            return name, "—" if spec is None else spec.label, None, "not measured", passes
        mib = m.peak_extra_bytes / MIB
        return name, spec.label, mib, f"{mib:,.1f} MiB", passes

    floor = "the floor"
    return [
        ratio("110M f32, fresh masks ≤ 2x read floor", "bert", "f32", "ours", "floor", floor, at_most(2)),
        ratio("110M f32, a later round in place ≤ 1.5x floor", "bert", "f32", "ours_in_place", "floor", floor, at_most(1.5), "mask_bytes"),
        ratio("110M bf16 ≤ 3x its read floor", "bert", "bf16", "ours", "floor", floor, at_most(3)),
        ratio("ResNet-50 conv weights ≥ 20x NumPy partition", "conv", "f32", "numpy", "ours", "faster", at_least(20)),
        ratio("ResNet-50 conv weights ~1.6x the floor", "conv", "f32", "ours", "floor", floor, at_most(1.6), "mask_bytes"),
        ratio("LeNet-300-100 size ≥ 10x NumPy", "lenet", "f32", "numpy", "ours", "faster", at_least(10)),
        ratio("MaskApplier at LeNet size ≤ 0.3x torch mul_ loop", "lenet", "f32", "applier", "torch_mul", "torch", at_most(0.3)),
        ratio("torch-op backend on host tensors ≤ 20x floor", "bert", "f32", "ours_torch", "floor", floor, at_most(20)),
        ratio("drop-in global_unstructured ≥ 150x torch.prune", "bert", "f32", "torch_prune", "drop_in", "faster", at_least(150)),
        per_weight("no cliff: f32 slabs @0.5, time per weight ≤ 1.2x", "f32", at_most(1.2)),
        per_weight("no cliff to ~2.2B bf16 (≤ 1.2x per weight)", "bf16", at_most(1.2)),
        extra_memory("extra memory ≤ 64 MiB beyond the masks", at_most(64)),
    ]  # fmt: skip


def verdict(value: float | None, passes: Passes, idle: bool) -> str:
    if value is None:
        return "n/a"
    if not idle:
        return "withheld (noisy)"
    return "pass" if passes(value) else "FAIL"


def targets_table(report: Report, after: Machine | None = None) -> str:
    """The targets with verdicts; ``after``: the machine read again when the run ended."""
    idle = report.idle and (after is None or after.idle)
    rows = [[name, where, text, verdict(value, passes, idle)] for name, where, value, text, passes in targets(report)]
    table = markdown(["target (idle machine)", "workload", "measured", "verdict"], rows)
    if not idle:
        why = [m.why_not_idle() for m in (report.machine, after) if m is not None and not m.idle]
        table += "\n\nverdicts withheld: the machine was not idle (" + ("; ".join(why) or "load not recorded") + ")"
    return table
