"""A study's independent runs (seeds, rewind points, strategies), each in a worker process or
all in this one, with the same results either way.

Every run seeds its own generators and trains on one thread with deterministic algorithms, so
where it runs does not change a bit of its result; the matrices are small enough that two
processes on two cores beat two intra-op threads in one. Workers are started with "spawn" (no
forked torch or rayon threads) and get their arguments pickled: module-level functions only.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

Call = tuple[Callable[..., Any], tuple[Any, ...]]


def _set_up_worker() -> None:
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def run_calls(calls: Sequence[Call], jobs: int, tick: Callable[[], None]) -> list[Any]:
    """``[fn(*args) for fn, args in calls]``, in that order, on up to ``jobs`` worker processes
    (in this process when ``jobs`` is 1); ``tick()`` after each run finishes."""
    if jobs <= 1 or len(calls) <= 1:
        results = []
        for fn, args in calls:
            results.append(fn(*args))
            tick()
        return results
    context = multiprocessing.get_context("spawn")
    workers = min(jobs, len(calls))
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_set_up_worker) as pool:
        futures = [pool.submit(fn, *args) for fn, args in calls]
        for _ in concurrent.futures.as_completed(futures):
            tick()
        return [future.result() for future in futures]
