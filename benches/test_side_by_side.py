"""Each method on each workload, checked then timed beside the others (see `conftest.py`)."""

from __future__ import annotations

import pytest

from lottery_ticket.cli.bench.measure import Timer, measure_method, measure_one_thread
from lottery_ticket.cli.bench.methods import METHODS, Method
from lottery_ticket.cli.bench.table import Measurement, Report
from lottery_ticket.cli.bench.workloads import Workload


def _record(report: Report, m: Measurement) -> None:
    report.record(m)
    if m.median_s is None:
        # Only a method that cannot run here is skipped (torch.prune at 440 M needs ~28 GiB, more
        # than a 24 GiB machine has); the note says why and the table shows the gap.
        pytest.skip(m.note)


@pytest.mark.parametrize("method", METHODS, ids=[m.key for m in METHODS])
def test_method(method: Method, workload: Workload, timer: Timer, report: Report, measure_memory: bool) -> None:
    """Times ``method`` (its first result asserted correct) and its peak extra memory."""
    _record(report, measure_method(method, workload, timer, memory=measure_memory))


def test_ours_one_thread(workload: Workload, report: Report) -> None:
    """``global_magnitude_masks`` with a 1-thread rayon pool (a subprocess; result asserted there)."""
    _record(report, measure_one_thread(workload.spec))
