"""`make bench`: the suite's workloads, each method beside its peers, then one table (printed and
saved) with the load average, CPU model and thread counts, and the targets (`targets`), whose
verdicts are given only when the machine was idle before and after the run.

Environment knobs (the code that measures is shared with `lottery-ticket bench`):

* ``LT_BENCH_BIG``: ``1`` adds the ~2.2 B bf16 point (> 2^31 weights in one call), ``0`` leaves
  it out; unset (auto), it runs when at least ``BIG_NEEDS_GIB`` of memory is available.
* ``LT_BENCH_SCALE``: multiplies every workload's size (e.g. ``0.02`` for a quick dry run).
* ``LT_BENCH_MEMORY``: ``0`` skips the peak-memory subprocesses (measured for ``ours`` only).
* ``LT_BENCH_OUT``: where the Markdown table is written (default ``.benchmarks/table.md``).
* ``LT_BENCH_WAIT_IDLE``: seconds to wait at the start for an idle machine (default 300; ``0``
  starts at once, and a busy machine's rows are marked noisy either way).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lottery_ticket.cli.bench.hygiene import Rounds, busy_processes, read_machine, wait_until_idle
from lottery_ticket.cli.bench.measure import Timer, available_memory, time_rounds
from lottery_ticket.cli.bench.methods import ONE_THREAD
from lottery_ticket.cli.bench.table import Report, write_text
from lottery_ticket.cli.bench.workloads import Workload, WorkloadSpec, materialize, suite, suite_keys

# The targets module sits beside this file (pytest's importlib mode puts no test folder on the path).
sys.path.insert(0, str(Path(__file__).parent))
from targets import targets_table

BIG_NEEDS_GIB = 12  # 2.2 B bf16: 4.4 GB of weights, 2.2 GB of masks, headroom for the reference


def _big() -> bool:
    setting = os.environ.get("LT_BENCH_BIG", "auto")
    if setting == "auto":
        return available_memory() >= BIG_NEEDS_GIB * 2**30
    return setting == "1"


def _build() -> str:
    """What this run measures, for the table's header: the commit the extension was built from
    (``+dirty`` with uncommitted changes) and the workloads' scale when it is not full size
    (`publish.py` refuses such tables)."""
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty=+dirty"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=30,
        )
        commit = described.stdout.strip() if described.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):  # no git, or not a clone
        commit = ""
    scale = "" if SCALE == 1 else f"workloads at {SCALE:g} of full size (LT_BENCH_SCALE)"
    return ", ".join(part for part in (commit or "commit unknown", scale) if part)


SCALE = float(os.environ.get("LT_BENCH_SCALE", "1"))
SPECS = suite(SCALE, big=_big())
MEASURE_MEMORY = os.environ.get("LT_BENCH_MEMORY", "1") != "0"
REPORT = Report()  # its machine is read once the wait for an idle one is over (below)


def pytest_sessionstart(session: pytest.Session) -> None:
    build = _build()
    capture = session.config.pluginmanager.getplugin("capturemanager")

    def say(line: str) -> None:
        with capture.global_and_fixture_disabled():  # shown while pytest captures output
            print(line, file=sys.stderr, flush=True)

    wait_s = float(os.environ.get("LT_BENCH_WAIT_IDLE", "300"))
    REPORT.machine = wait_until_idle(wait_s, lambda: read_machine(build=build), say=say)


CASES = [(spec, key) for spec in SPECS for key in suite_keys(spec)]
_CURRENT: dict[WorkloadSpec, Workload] = {}


def _workload_of(spec: WorkloadSpec) -> Workload:
    """The materialised workload of ``spec``; the previous one is freed first (cases come in order)."""
    if spec not in _CURRENT:
        _CURRENT.clear()
        _CURRENT[spec] = materialize(spec)
    return _CURRENT[spec]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # The 1-thread row is its own test: it runs in a subprocess, without pytest-benchmark.
    if "case" in metafunc.fixturenames:
        cases = [(spec, key) for spec, key in CASES if key != ONE_THREAD]
        metafunc.parametrize("case", cases, ids=[f"{s.label}-{k}".replace(" ", "-") for s, k in cases])
    if "one_thread_spec" in metafunc.fixturenames:
        specs = [spec for spec, key in CASES if key == ONE_THREAD]
        metafunc.parametrize("one_thread_spec", specs, ids=[s.label.replace(" ", "-") for s in specs])


@pytest.fixture(scope="session")
def workload_of() -> Callable[[WorkloadSpec], Workload]:
    return _workload_of


@pytest.fixture(scope="session")
def report() -> Report:
    return REPORT


@pytest.fixture(scope="session")
def measure_memory() -> bool:
    return MEASURE_MEMORY


@pytest.fixture
def timer(benchmark: Any) -> Timer:
    """Our spread-driven rounds (`hygiene.repeat_until_stable`), run inside pytest-benchmark's
    fixture so `--benchmark-*` options still select and report the cases."""

    def run_rounds(run: Any, setup: Any, references: Any) -> Rounds:
        rounds: Rounds = benchmark.pedantic(time_rounds, args=(run, setup, references), rounds=1, iterations=1)
        return rounds

    return run_rounds


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT.empty():
        return
    table = (
        REPORT.render()
        + "\n"
        + targets_table(REPORT, read_machine(busy=lambda: busy_processes(2.0), after_own_run=True))
        + "\n"
    )
    if not _big():
        table += "\n(~2.2B bf16 point not run: LT_BENCH_BIG=1 forces it)\n"
    out = Path(os.environ.get("LT_BENCH_OUT", ".benchmarks/table.md"))
    write_text(out, table)
    terminalreporter.write_sep("=", "lottery-ticket: side by side")
    terminalreporter.write_line(table)
    terminalreporter.write_line(f"(also written to {out})")
