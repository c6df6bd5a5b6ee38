"""The kernels release the GIL during Rust work and are safe to call from several threads."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from lottery_ticket import apply_masks, global_magnitude_masks, rewind


@contextmanager
def short_switch_interval() -> Iterator[None]:
    """Hand the GIL over often, so a thread that holds it can't hide behind long time slices."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def main_thread_ticks_during(work: Callable[[], object], calls: int = 3) -> int:
    """Run `work` `calls` times in a thread while this thread spins; return how many spins fell
    in the middle half of a call, which is all Rust work (Python set-up takes microseconds).

    A call that held the GIL throughout would allow none (checked by hand with `sum(big_list)`
    and `bytes * n`, which hold it: 0 ticks; the kernels: tens of thousands).
    """
    spans: list[tuple[float, float]] = []
    ticks: list[float] = []

    def worker() -> None:
        for _ in range(calls):
            start = time.perf_counter()
            work()
            spans.append((start, time.perf_counter()))

    with short_switch_interval():
        thread = threading.Thread(target=worker)
        thread.start()
        while thread.is_alive():
            ticks.append(time.perf_counter())
        thread.join()
    assert len(spans) == calls, "the worker failed"
    t = np.array(ticks)
    return sum(int(((t > s + (e - s) / 4) & (t < e - (e - s) / 4)).sum()) for s, e in spans)


def test_selection_releases_the_gil() -> None:
    weights = [np.random.default_rng(0).standard_normal(6_000_000, dtype=np.float32)]
    global_magnitude_masks(weights, 0.5)  # warm up the thread pool outside the measurement
    assert main_thread_ticks_during(lambda: global_magnitude_masks(weights, 0.5)) > 0


def test_apply_and_rewind_release_the_gil() -> None:
    rng = np.random.default_rng(1)
    weights = [rng.standard_normal(6_000_000, dtype=np.float32)]
    snapshots = [weights[0].copy()]
    masks = [rng.random(weights[0].shape) < 0.5]
    assert main_thread_ticks_during(lambda: apply_masks(weights, masks)) > 0
    assert main_thread_ticks_during(lambda: rewind(weights, snapshots, masks)) > 0


def make_model(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv.weight": rng.choice(np.array([0.0, 0.25, -0.5, 1.0], np.float32), (64, 32, 3, 3)),
        "fc1.weight": rng.standard_normal((1000, 700)).astype(np.float16),
        "fc2.weight": rng.standard_normal((700, 300)),
    }


def prune_rounds(model: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[Any]]:
    """Three rounds of select + apply, then a rewind to the initial weights."""
    init = {k: v.copy() for k, v in model.items()}
    masks: Any = None
    history = []
    for amount in [0.2, 0.2, 0.36]:
        masks = global_magnitude_masks(model, amount, masks=masks)
        apply_masks(model, masks)
        history.append(masks)
        for v in model.values():
            v *= 1.5  # "training": survivors change, pruned ones stay zero
    rewind(model, init, masks)
    return model, history


def test_concurrent_pruning_matches_sequential() -> None:
    expected = [prune_rounds(make_model(seed)) for seed in (10, 11)]
    results: list[Any] = [None, None]
    barrier = threading.Barrier(2)

    def run(i: int) -> None:
        model = make_model(10 + i)
        barrier.wait()
        results[i] = prune_rounds(model)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (model, history), (want_model, want_history) in zip(results, expected):
        for name in want_model:
            assert model[name].tobytes() == want_model[name].tobytes()
            for masks, want in zip(history, want_history):
                np.testing.assert_array_equal(masks[name], want[name])
