"""How the benchmarks measure: time in this process, peak memory and 1 thread in a fresh one.

* Time: one untimed call whose result is checked (also the warm-up), then timed rounds, each
  after the method's untimed ``setup``, until their spread is small (`hygiene.repeat_until_stable`);
  the median and the spread of the recent rounds are reported. Rows with a target relative to
  the read floor or a peer (`methods.paired_with`) also time those before each round, for
  paired ratios. ``benches/`` passes a timer that runs them inside pytest-benchmark. Each
  round drops the previous result, so the kernels reuse its buffer (`kernels.buffer_cache`) as
  an IMP loop does; the buffers are released after each row, and the "fresh pages" row turns
  the cache off.
* Peak extra memory: Rust allocations are invisible to tracemalloc, so a fresh subprocess
  rebuilds the workload, resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), makes one
  call and reads ``VmHWM``; extra = peak - RSS before the call - bytes of the returned masks.
* 1 thread: rayon sizes its global pool once per process, so ``ours`` is re-timed in a
  subprocess started with ``RAYON_NUM_THREADS=1``.

Run as ``python -m lottery_ticket.cli.bench.measure --workload TOKEN --method KEY [--time]``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ... import kernels
from .hygiene import Call, Rounds, repeat_until_stable
from .methods import BY_KEY, ONE_THREAD, ONE_THREAD_LABEL, Method, paired_with
from .table import Measurement
from .workloads import Workload, WorkloadSpec, materialize

# (run one round, make that round's argument, the references timed before each round) -> rounds
Timer = Callable[[Callable[[Any], Any], Callable[[], Any], Mapping[str, Call] | None], Rounds]


def time_rounds(
    run: Callable[[Any], Any], setup: Callable[[], Any], references: Mapping[str, Call] | None = None
) -> Rounds:
    """Rounds of ``run(setup())`` (``setup`` untimed) until their spread is small, each after
    one timed call of every reference (none: unpaired)."""
    return repeat_until_stable(run, setup, references=references)


def available_memory() -> int:
    """Bytes the kernel could hand out now without swapping (``MemAvailable``)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    # Elsewhere: free pages only (an underestimate; page cache is not counted).
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def skip_reason(method: Method, spec: WorkloadSpec, memory: bool = True) -> str | None:
    """Why ``method`` should not run on ``spec`` here (too little free memory), or None."""
    # With `memory`, the workload lives twice while a subprocess measures memory beside this one.
    need = spec.numel * ((2 if memory else 1) * spec.bytes_per_weight + method.bytes_per_weight)
    free = available_memory()
    if need > 0.8 * free:
        return f"skipped: needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"
    return None


def memory_measured(spec: WorkloadSpec, key: str) -> bool:
    """Peak memory is measured for ``ours`` on the BERT-like f32 mix: each
    measurement rebuilds the workload in a fresh process, minutes at the suite's larger sizes."""
    return key == "ours" and spec.mix == "bert" and spec.dtype == "f32"


def checked_first_call(method: Method, workload: Workload, state: Any) -> float:
    """Run once untimed-for-stats, assert the result, return its duration (the warm-up)."""
    arg = method.setup(state)
    start = time.perf_counter()
    result = method.run(arg)
    elapsed = time.perf_counter() - start
    method.check(workload, state, result)
    return elapsed


def measure_method(method: Method, workload: Workload, timer: Timer = time_rounds, memory: bool = True) -> Measurement:
    """Time ``method`` here on ``workload`` (checked), then its peak extra memory in a subprocess."""
    spec = workload.spec
    m = Measurement(spec, method.key, method.label, method.task)
    reason = skip_reason(method, spec, memory)
    if reason is not None:
        m.note = reason
        return m
    state = method.prepare(workload)
    checked_first_call(method, workload, state)
    references: dict[str, Call] = {}
    for key in paired_with(method.key, spec):
        peer = BY_KEY[key]
        if skip_reason(peer, spec, memory=False) is None:
            references[key] = (peer.run, functools.partial(peer.setup, peer.prepare(workload)))
    m.record(timer(method.run, functools.partial(method.setup, state), references))
    del state, references
    gc.collect()
    # The next row starts as a first call does, and this row's buffers leave room for its workload.
    kernels.release_buffers()
    if memory:
        m.peak_extra_bytes = in_subprocess(method.key, spec)["peak_extra_bytes"]
    return m


def measure_one_thread(spec: WorkloadSpec) -> Measurement:
    """``ours`` timed (and its memory measured) in a subprocess with a 1-thread rayon pool."""
    method = BY_KEY["ours"]
    m = Measurement(spec, ONE_THREAD, ONE_THREAD_LABEL, method.task)
    reason = skip_reason(method, spec)
    if reason is not None:
        m.note = reason
        return m
    out = in_subprocess(method.key, spec, timed=True, threads=1)
    m.median_s, m.rounds, m.spread = out["median_s"], out["rounds"], out["spread"]
    m.peak_extra_bytes = out["peak_extra_bytes"]
    return m


def in_subprocess(key: str, spec: WorkloadSpec, *, timed: bool = False, threads: int | None = None) -> Any:
    """Run this module's ``main`` in a fresh interpreter; returns its JSON answer."""
    env = dict(os.environ)
    if threads is not None:
        env["RAYON_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", __name__, "--workload", spec.token, "--method", key]
    done = subprocess.run(command + (["--time"] if timed else []), env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {key} on {spec.label} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the subprocess side --------------------------------------------------------------------


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def _release_free_heap() -> None:
    """Return glibc's free heap pages to the OS, so the call cannot reuse memory already counted."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: the measurement may only read low
        ctypes.CDLL(None).malloc_trim(0)


def peak_extra_bytes(method: Method, workload: Workload, state: Any) -> tuple[int | None, float]:
    """(peak RSS growth of one call minus its result, seconds); None off Linux."""
    arg = method.setup(state)
    gc.collect()
    _release_free_heap()
    try:
        before = _status_bytes("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        before = -1
    start = time.perf_counter()
    result = method.run(arg)
    elapsed = time.perf_counter() - start
    extra = None if before < 0 else _status_bytes("VmHWM") - before - method.result_bytes(result)
    method.check(workload, state, result)
    return extra, elapsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="measure one benchmark method in this process")
    parser.add_argument("--workload", required=True, help="WorkloadSpec token mix:params:dtype:seed")
    parser.add_argument("--method", required=True, choices=sorted(BY_KEY))
    parser.add_argument("--time", action="store_true", help="also time rounds after the memory call")
    args = parser.parse_args(argv)
    method = BY_KEY[args.method]
    workload = materialize(WorkloadSpec.parse(args.workload))
    state = method.prepare(workload)
    extra, _ = peak_extra_bytes(method, workload, state)
    answer: dict[str, Any] = {"peak_extra_bytes": extra, "median_s": None, "rounds": 0, "spread": None}
    if args.time:
        rounds = time_rounds(method.run, lambda: method.setup(state))
        answer.update(median_s=rounds.median_s, rounds=len(rounds.times), spread=rounds.spread)
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
