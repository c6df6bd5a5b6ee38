"""A thread writing the weights while a kernel runs (GIL released) never gets a panic or a wrong
count: each call keeps exactly the promised count or raises RuntimeError (issue #14 row 3).

The rule for users stays: weights must not change during a call. These tests only check that
breaking it is reported cleanly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from lottery_ticket import apply_masks, global_magnitude_masks, rewind

SIZE = 1 << 21  # large enough that the kernels release the GIL and take several passes
CALLS = 60


@contextmanager
def writer(target: np.ndarray, sources: list[np.ndarray]) -> Iterator[list[int]]:
    """A thread copying ``sources`` into ``target`` in turn (np.copyto releases the GIL)."""
    stop = threading.Event()
    writes = [0]

    def run() -> None:
        while not stop.is_set():
            np.copyto(target, sources[writes[0] % len(sources)])
            writes[0] += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield writes
    finally:
        stop.set()
        thread.join()


def distributions() -> list[np.ndarray]:
    """Very different magnitudes, so a bracket sampled from one misses the other (exact
    fallback, several reads) and candidates re-read mid-call leave the bracket (fix-up)."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=SIZE).astype(np.float32)
    return [base, base * 1000 + 5, np.round(base * 4) / 4, -base[::-1].copy()]


@pytest.mark.parametrize("amount", [0.3, 0.5, 12_345], ids=["fraction", "half", "count"])
def test_selection_under_a_racing_writer_keeps_the_count_or_raises(amount: float) -> None:
    sources = distributions()
    w = sources[0].copy()
    outcomes: dict[str, int] = {"exact": 0, "changed": 0}
    pruned = amount if isinstance(amount, int) else round(amount * SIZE)
    with writer(w, sources):
        for _ in range(CALLS):
            try:
                mask = global_magnitude_masks([w], amount)[0]
            except RuntimeError as err:  # never PanicException (a BaseException) or another error
                assert "weights: changed during the call" in str(err)
                outcomes["changed"] += 1
                continue
            assert int(np.count_nonzero(mask)) == SIZE - pruned
            outcomes["exact"] += 1
    assert sum(outcomes.values()) == CALLS


def test_layer_scope_and_masks_under_a_racing_writer() -> None:
    sources = distributions()
    w = sources[1].copy()
    alive = np.ones(SIZE, bool)
    alive[::3] = False
    with writer(w, sources):
        for _ in range(CALLS // 2):
            try:
                mask = global_magnitude_masks(
                    [w, np.ones(10, np.float32)], 0.5, masks=[alive, np.ones(10, bool)], scope="layer"
                )[0]
            except RuntimeError as err:
                assert "changed during the call" in str(err)
                continue
            assert int(mask.sum()) == int(alive.sum()) - round(0.5 * int(alive.sum()))
            assert not mask[::3].any()


def in_place_race(call: Callable[[], None], calls: int) -> list[str]:
    """``call`` from two threads at once; returns the errors they raised."""
    errors: list[str] = []

    def run() -> None:
        for _ in range(calls):
            try:
                call()
            except RuntimeError as err:
                errors.append(str(err))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_two_threads_writing_the_same_arrays_get_a_clear_error_or_succeed() -> None:
    w = np.random.default_rng(1).normal(size=SIZE).astype(np.float32)
    masks = [np.random.default_rng(2).random(SIZE) < 0.5]
    snapshot = [w.copy()]
    errors = in_place_race(lambda: apply_masks([w], masks), 40)
    errors += in_place_race(lambda: rewind([w], snapshot, masks), 40)
    assert all("weights[0]: in use by another call that writes it" in e for e in errors), errors[:1]
    assert np.array_equal(w, np.where(masks[0], snapshot[0], 0))


def test_reading_an_array_another_thread_writes_in_place_is_refused_or_exact() -> None:
    w = np.random.default_rng(3).normal(size=SIZE).astype(np.float32)
    masks = [np.ones(SIZE, bool)]
    stop = threading.Event()

    def keep_applying() -> None:
        while not stop.is_set():
            apply_masks([w], masks)

    thread = threading.Thread(target=keep_applying)
    thread.start()
    try:
        for _ in range(CALLS // 2):
            try:
                assert int(global_magnitude_masks([w], 0.5)[0].sum()) == SIZE // 2
            except RuntimeError as err:
                assert "weights[0]: in use by another call" in str(err)
    finally:
        stop.set()
        thread.join()
