"""A study's independent runs (seeds, rewind points, strategies), each in a worker process or
all in this one, with the same results either way.

Every run seeds its own generators and trains under `study_arithmetic`, so where it runs does
not change a bit of its result; the matrices are small enough that two processes on two cores
beat two intra-op threads in one. Workers are started with "spawn" (no forked torch or rayon
threads) and get their arguments pickled: module-level functions only.

`study_arithmetic` also flushes denormal floats to zero. Adam's first moment of a weight whose
gradient stays zero (a dead ReLU unit) decays into the denormals and sticks at a few multiples
of 2**-149 (a tenth of it rounds to nothing), and arithmetic on denormals is many times slower
on x86: most of the Greydanus MLP's second layer ends up there. Such a moment moves its weight
by far less than a float32 ulp, so flushing it changes no result: the studies' JSON and the
trained weights are bit-identical with and without it (a test checks this on the MLP).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

Call = tuple[Callable[..., Any], tuple[Any, ...]]


def study_arithmetic() -> Callable[[], None]:
    """One thread, deterministic algorithms, denormals flushed to zero; returns what undoes it
    (back to the thread count and algorithms before, and to torch's default of keeping denormals)."""
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)  # bit-identical runs need a fixed thread count
    torch.use_deterministic_algorithms(True)
    torch.set_flush_denormal(True)

    def restore() -> None:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.set_flush_denormal(False)

    return restore


def _set_up_worker() -> None:
    study_arithmetic()


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
