"""Each (workload, method) of the issue's table, checked then timed beside its peers (see `conftest.py`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lottery_ticket.cli.bench.measure import Timer, measure_method, measure_one_thread, memory_measured
from lottery_ticket.cli.bench.methods import BY_KEY
from lottery_ticket.cli.bench.table import Measurement, Report
from lottery_ticket.cli.bench.workloads import Workload, WorkloadSpec


def _record(report: Report, m: Measurement) -> None:
    report.record(m)
    if m.median_s is None:
        # Only a method that cannot run here is skipped (too little free memory); the note says
        # why and the table shows the gap.
        pytest.skip(m.note)


def test_case(
    case: tuple[WorkloadSpec, str],
    workload_of: Callable[[WorkloadSpec], Workload],
    timer: Timer,
    report: Report,
    measure_memory: bool,
) -> None:
    """Times one method on one workload (its first result asserted correct); ``ours`` also gets
    its peak extra memory in a fresh subprocess (the cases: conftest)."""
    spec, key = case
    memory = measure_memory and memory_measured(spec, key)
    _record(report, measure_method(BY_KEY[key], workload_of(spec), timer, memory=memory))


def test_one_thread(one_thread_spec: WorkloadSpec, report: Report) -> None:
    """``global_magnitude_masks`` with a 1-thread rayon pool (a subprocess; result asserted there)."""
    _record(report, measure_one_thread(one_thread_spec))
