"""Whether this machine can be timed: load average, other busy processes, and rounds repeated
until their spread is small.

A timing taken while another process competes for the cores measures the competition. So the
benchmarks record the load average, the CPU model and the thread counts beside every table,
mark every row "noisy" when the machine was not idle, and repeat each row until the spread of
its recent rounds is below `SPREAD_LIMIT` (saying so when a row's budget ran out first).

A ratio taken from two rows timed minutes apart also measures how the machine changed in
between: two idle runs of the same build put the read floor at 31 ms and 22 ms, and on a host
whose cores are shared with other tenants one call's time moved by half within one process.
A row with a target relative to another row is therefore timed *paired*: each round times the
references (the read floor, the peer), then the row, and the row's ratio to each reference is
the median of the per-round ratios. In a paired round each timed call comes right after
untimed ones of itself: a call should find the caches as its own previous call left them (as in
an unpaired row's back-to-back rounds), not as the other row left them. A peer's temporaries
or freed pages evicting a small model's weights slowed our next call by half or more. The
untimed calls last at least `WARM_S` together: threads that slept through another row's
single-threaded work can share one CPU until the scheduler has seen them busy for a while (on
the Firecracker guests these benchmarks run on, a selection at ResNet-50 size ran on ~1.05 CPUs
after 300 ms asleep and ~1.8 in a loop, at nearly twice the time).
"""

from __future__ import annotations

import importlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ... import _core

LOAD_LIMIT = 0.5  # 1-minute load average above which a machine is not idle
BUSY_SHARE = 0.1  # another process using this share of one CPU makes the machine busy
SPREAD_LIMIT = 0.05  # (max - min) / median of a row's recent rounds
WINDOW = 5  # recent rounds the spread is taken over
MIN_ROUNDS, MAX_ROUNDS = 3, 30
ROUND_BUDGET_S = 4.0  # timed seconds per row, beyond which it stops repeating
WARM_S = 0.05  # untimed work of its own before each timed call of a paired round


@dataclass(frozen=True)
class Machine:
    """What a table's numbers were measured on, and whether it was idle."""

    load_average: float
    busy: tuple[str, ...]  # other processes using the CPU: "name (pid) 35%"
    cpu_model: str
    logical_cpus: int
    rayon_threads: int
    torch_threads: int | None
    # Read right after our own run: the load average still counts its threads, so only the
    # other processes' CPU use says whether the machine was shared.
    load_is_ours: bool = False
    scanner: str = "?"  # the selection's block scanner: avx512, avx2 or portable (`_core.scanner`)
    # When the run began (UTC) and what was measured: a table in the docs names its run.
    started: str = ""
    build: str = ""  # e.g. the commit `make bench` built from; empty where unknown

    @property
    def idle(self) -> bool:
        return (self.load_is_ours or self.load_average <= LOAD_LIMIT) and not self.busy

    def why_not_idle(self) -> str:
        reasons = []
        if self.load_average > LOAD_LIMIT and not self.load_is_ours:
            reasons.append(f"load average {self.load_average:.2f} > {LOAD_LIMIT}")
        if self.busy:
            reasons.append("busy: " + ", ".join(self.busy[:5]))
        return "; ".join(reasons)

    def summary(self) -> str:
        state = "idle" if self.idle else f"NOT idle ({self.why_not_idle()}): every row is noisy"
        torch_threads = "—" if self.torch_threads is None else str(self.torch_threads)
        when = "".join(
            f" · {label} {value}" for label, value in (("started", self.started), ("build", self.build)) if value
        )
        return (
            f"{self.cpu_model} · {self.logical_cpus} logical CPUs · ours on {self.rayon_threads} threads "
            f"({self.scanner} scanner) · "
            f"torch on {torch_threads} threads · load average {self.load_average:.2f} · {state}{when}"
        )


def rayon_threads() -> int:
    # rayon's default pool: RAYON_NUM_THREADS if set, else one thread per logical CPU.
    configured = os.environ.get("RAYON_NUM_THREADS", "")
    return int(configured) if configured.isdigit() and int(configured) > 0 else os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numpy_simd() -> str:
    """The widest SIMD target NumPy dispatches to on this CPU (its partition's speed follows it).

    NumPy's partition sorts with AVX-512 where the CPU has it and with AVX2 or less elsewhere, a
    severalfold difference on the same machine class, so a ratio against NumPy means little
    without it. The names come from NumPy's private module (what ``numpy.show_runtime`` prints);
    another NumPy may lack them, and the header then says nothing rather than guess.
    """
    try:
        umath = importlib.import_module("numpy._core._multiarray_umath")
    except ImportError:
        return ""
    dispatch, features = getattr(umath, "__cpu_dispatch__", None), getattr(umath, "__cpu_features__", None)
    if not isinstance(dispatch, list) or not isinstance(features, dict):
        return ""
    found = [name for name in dispatch if features.get(name)]
    return found[-1] if found else "baseline"


def _cpu_seconds() -> dict[int, tuple[str, float]]:
    """CPU time (user + system) of every process we may read, by pid."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # gone, or not ours to read
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        found[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return found


def busy_processes(interval_s: float = 0.5) -> tuple[str, ...]:
    """Other processes that used more than `BUSY_SHARE` of a CPU over ``interval_s``."""
    if not Path("/proc/self/stat").exists():
        return ()
    mine = os.getpid()
    before = _cpu_seconds()
    time.sleep(interval_s)
    after = _cpu_seconds()
    busy = []
    for pid, (name, spent) in after.items():
        if pid == mine or pid not in before:
            continue
        share = (spent - before[pid][1]) / interval_s
        if share > BUSY_SHARE:
            busy.append((share, f"{name} ({pid}) {share:.0%}"))
    return tuple(text for _, text in sorted(busy, reverse=True))


def read_machine(
    load: Callable[[], float] = lambda: os.getloadavg()[0],
    busy: Callable[[], tuple[str, ...]] = busy_processes,
    *,
    after_own_run: bool = False,
    build: str = "",
) -> Machine:
    """The machine now (``load`` and ``busy`` are the readers, replaced in tests). With
    ``after_own_run`` the load average, which still counts the run just ended, is recorded but
    not judged: other processes' CPU use is. ``build`` names what is measured (a commit)."""
    try:
        import torch

        torch_threads: int | None = torch.get_num_threads()
    except ImportError:  # pragma: no cover - the benchmarks need torch; the summary does not
        torch_threads = None
    return Machine(
        load(),
        busy(),
        cpu_model(),
        os.cpu_count() or 1,
        rayon_threads(),
        torch_threads,
        after_own_run,
        scanner=_core.scanner(),
        started=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        build=build,
    )


WAIT_POLL_S = 5.0  # how often a wait for an idle machine reads it again
WAIT_SAY_EVERY = 6  # polls between progress lines


def wait_until_idle(
    limit_s: float,
    read: Callable[[], Machine] = read_machine,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> Machine:
    """The machine once it is idle, or as it is after ``limit_s`` seconds of waiting (its rows are
    then marked noisy). A build or test run that just ended keeps the 1-minute load average above
    `LOAD_LIMIT` for a minute or more, and a run started meanwhile times the competition."""
    deadline = clock() + limit_s
    machine = read()
    polls = 0
    while not machine.idle and clock() < deadline:
        if polls % WAIT_SAY_EVERY == 0:
            say(f"waiting for an idle machine ({machine.why_not_idle()}), {deadline - clock():.0f} s at most")
        sleep(max(0.0, min(WAIT_POLL_S, deadline - clock())))
        polls += 1
        machine = read()
    if not machine.idle and limit_s > 0:
        say(f"the machine is still not idle ({machine.why_not_idle()}): every row will be marked noisy")
    return machine


@dataclass
class Rounds:
    """Timed rounds of one row: their median, and the spread of the last `WINDOW`; paired
    rounds also hold each reference's time of each round (timed just before it, each timed
    call after untimed ones of itself: `_timed`)."""

    times: list[float] = field(default_factory=list)
    references: dict[str, list[float]] = field(default_factory=dict)

    def ratio_to(self, key: str) -> float | None:
        """Median over the last `WINDOW` rounds of time / reference ``key``'s time (None: not
        paired with it)."""
        reference = self.references.get(key)
        if not reference:
            return None
        pairs = list(zip(self.times, reference))[-WINDOW:]
        return statistics.median(t / max(r, 1e-12) for t, r in pairs)

    @property
    def ratios(self) -> dict[str, float]:
        """The paired ratio to each reference that was timed."""
        return {key: ratio for key in self.references if (ratio := self.ratio_to(key)) is not None}

    @property
    def median_s(self) -> float:
        return statistics.median(self.times[-WINDOW:])

    @property
    def spread(self) -> float | None:
        recent = self.times[-WINDOW:]
        if len(recent) < MIN_ROUNDS:
            return None
        return (max(recent) - min(recent)) / max(statistics.median(recent), 1e-12)

    @property
    def min_rounds(self) -> int:
        """Rounds before this row may stop: a paired ratio is a median over `WINDOW` pairs (three
        rounds once settled a ratio that the same run's medians contradicted)."""
        return WINDOW if self.references else MIN_ROUNDS

    @property
    def stable(self) -> bool:
        spread = self.spread
        return len(self.times) >= self.min_rounds and spread is not None and spread < SPREAD_LIMIT


Call = tuple[Callable[[Any], Any], Callable[[], Any]]  # (run, setup): one round is run(setup())


def repeat_until_stable(
    run: Callable[[Any], Any],
    setup: Callable[[], Any],
    *,
    references: Mapping[str, Call] | None = None,
    budget_s: float = ROUND_BUDGET_S,
    clock: Callable[[], float] = time.perf_counter,
) -> Rounds:
    """Time ``run(setup())`` (``setup`` untimed) until the recent rounds agree within
    `SPREAD_LIMIT`, or `MAX_ROUNDS`, or ``budget_s`` of timed work; at least one round, and
    `MIN_ROUNDS` unless a single round overruns the budget. With ``references`` each round first
    times one call of each reference the same way (`Rounds.ratio_to`), every timed call after
    untimed ones of itself (`_timed`), and at least `WINDOW` rounds run (`Rounds.min_rounds`)."""
    references = dict(references or {})
    warm = bool(references)
    rounds = Rounds(references={key: [] for key in references})
    spent = 0.0
    while len(rounds.times) < MAX_ROUNDS:
        for key, reference in references.items():
            rounds.references[key].append(_timed(*reference, clock, warm))
            spent += rounds.references[key][-1]
        elapsed = _timed(run, setup, clock, warm)
        rounds.times.append(elapsed)
        spent += elapsed
        if rounds.stable or (spent >= budget_s and (len(rounds.times) >= rounds.min_rounds or elapsed >= budget_s)):
            break
    return rounds


def _timed(
    run: Callable[[Any], Any], setup: Callable[[], Any], clock: Callable[[], float], warm: bool = False
) -> float:
    """Seconds of one ``run(setup())``, ``setup`` untimed; its argument is freed after. With
    ``warm``, after untimed ``run(setup())`` calls, at least one and until `WARM_S` has passed."""
    if warm:
        start = clock()
        run(setup())
        while clock() - start < WARM_S:
            run(setup())
    arg = setup()
    start = clock()
    run(arg)
    elapsed = clock() - start
    del arg
    return elapsed
