"""`make bench`: every (workload, method) side by side, then one table (printed and saved).

Environment knobs (the code that measures is shared with `lottery-ticket bench`):

* ``LT_BENCH_BIG``: ``1`` adds the 440M f32 scaling point, ``0`` leaves it out; unset (auto), it
  runs when at least ``BIG_NEEDS_GIB`` of memory is available.
* ``LT_BENCH_SCALE``: multiplies every workload's size (e.g. ``0.02`` for a quick dry run).
* ``LT_BENCH_MEMORY``: ``0`` skips the peak-memory subprocesses (faster, no memory column).
* ``LT_BENCH_OUT``: where the Markdown table is written (default ``.benchmarks/table.md``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lottery_ticket.cli.bench.measure import Timer, available_memory, time_rounds
from lottery_ticket.cli.bench.table import Report, write_text
from lottery_ticket.cli.bench.workloads import Workload, materialize, suite

BIG_NEEDS_GIB = 14  # 440M f32: 1.8 GB of weights here, again in each measuring subprocess, + peers


def _big() -> bool:
    setting = os.environ.get("LT_BENCH_BIG", "auto")
    if setting == "auto":
        return available_memory() >= BIG_NEEDS_GIB * 2**30
    return setting == "1"


SCALE = float(os.environ.get("LT_BENCH_SCALE", "1"))
SPECS = suite(SCALE, big=_big())
MEASURE_MEMORY = os.environ.get("LT_BENCH_MEMORY", "1") != "0"
REPORT = Report()


@pytest.fixture(scope="session", params=SPECS, ids=[s.label.replace(" ", "-") for s in SPECS])
def workload(request: pytest.FixtureRequest) -> Iterator[Workload]:
    # Session-scoped and parametrized: pytest runs every test of one workload, then frees it.
    yield materialize(request.param)


@pytest.fixture(scope="session")
def report() -> Report:
    return REPORT


@pytest.fixture(scope="session")
def measure_memory() -> bool:
    return MEASURE_MEMORY


@pytest.fixture
def timer(benchmark: Any) -> Timer:
    """Rounds through pytest-benchmark (its own table and `--benchmark-*` options apply)."""

    def run_rounds(run: Any, setup: Any, rounds: int) -> float:
        if benchmark.disabled:  # plain `pytest benches`: timed by our own loop, run through the fixture
            median_s: float = benchmark.pedantic(time_rounds, args=(run, setup, rounds))
            return median_s
        benchmark.pedantic(run, setup=lambda: ((setup(),), {}), rounds=rounds, iterations=1)
        median: float = benchmark.stats.stats.median
        return median

    return run_rounds


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT.empty():
        return
    table = REPORT.render()
    if not _big():
        table += "\n(440M point not run: LT_BENCH_BIG=1 forces it)\n"
    out = Path(os.environ.get("LT_BENCH_OUT", ".benchmarks/table.md"))
    write_text(out, table)
    terminalreporter.write_sep("=", "lottery-ticket: side by side")
    terminalreporter.write_line(table)
    terminalreporter.write_line(f"(also written to {out})")
